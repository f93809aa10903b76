//! Opens the SQLite database that holds the inventory and the order statuses, and
//! brings its schema up to date.
//!
//! `sqlite::memory:` gives one in-memory database shared by every connection of the
//! pool (SQLite's shared cache), kept alive for as long as the pool is. A file URL such
//! as `sqlite://orders.db` is opened in WAL mode so readers never wait for writers.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a database file: SQLite has one writer at a time, so more buys little.
const FILE_CONNECTIONS: u32 = 8;
/// Connections to an in-memory database, which locks whole tables in shared-cache mode.
const MEMORY_CONNECTIONS: u32 = 4;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL is not a SQLite URL sqlx understands.
    #[error(
        "database URL `{url}` is not a valid SQLite URL (try `sqlite::memory:` or `sqlite://orders.db`)"
    )]
    Url {
        /// The URL given.
        url: String,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },
    /// The database could not be opened.
    #[error("cannot open database `{url}`")]
    Open {
        /// The URL given.
        url: String,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be created or updated.
    #[error("cannot bring the database schema up to date")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens the database at `url` (creating a file if needed) and applies the schema.
///
/// # Errors
///
/// [`DatabaseError`] naming the URL if it is malformed or cannot be opened.
pub async fn open(url: &str) -> Result<SqlitePool, DatabaseError> {
    let in_memory = is_in_memory(url);
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| DatabaseError::Url {
            url: url.to_owned(),
            source,
        })?
        .create_if_missing(true)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let options = if in_memory {
        options
    } else {
        options.journal_mode(SqliteJournalMode::Wal)
    };

    let pool = pool_options(in_memory)
        .connect_with(options)
        .await
        .map_err(|source| DatabaseError::Open {
            url: url.to_owned(),
            source,
        })?;

    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

fn pool_options(in_memory: bool) -> SqlitePoolOptions {
    let size = if in_memory {
        MEMORY_CONNECTIONS
    } else {
        FILE_CONNECTIONS
    };

    // An in-memory database disappears with its last connection, so one connection
    // must stay open for the pool's whole life.
    SqlitePoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}
