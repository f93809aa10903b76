//! Serve mode: the API and both worker pools until Ctrl-C (or SIGTERM), then a graceful
//! shutdown: the API stops taking orders first, then the workers finish what they hold.

use tokio::net::TcpListener;
use tracing::info;

use crate::app::{App, AppError};
use crate::config::Settings;
use crate::database::{self, DatabaseError};
use crate::inventory::{Catalogue, InventoryError};

/// Stock the catalogue is sized for when serving.
const SERVE_CATALOGUE_ORDERS: usize = 10_000;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The backend could not be opened.
    #[error("message backend: {0}")]
    Backend(#[from] wharf::Error),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The inventory could not be loaded.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The system failed to start or stop.
    #[error(transparent)]
    App(#[from] AppError),
    /// The HTTP listener failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Serves until a shutdown signal, then shuts down gracefully.
///
/// # Errors
///
/// [`ServeError`] if anything fails to start, or the workers fail to stop cleanly.
pub async fn serve(settings: &Settings) -> Result<(), ServeError> {
    let backend = wharf::connect(&settings.backend).await?;
    let pool = database::open(&settings.database).await?;
    let app = App::start(settings, backend, pool).await?;
    app.inventory()
        .load(&Catalogue::sized_for(SERVE_CATALOGUE_ORDERS))
        .await?;

    let http = |source| ServeError::Http {
        addr: settings.listen,
        source,
    };
    let listener = TcpListener::bind(settings.listen).await.map_err(http)?;
    info!(addr = %settings.listen, "listening; POST /orders, GET /orders/{{id}}");
    axum::serve(listener, app.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(http)?;

    info!("stopping workers");
    let report = app.stop().await?;
    info!(
        acked = report.fulfilment.acked,
        retried = report.fulfilment.retried,
        dead_lettered = report.fulfilment.dead_lettered,
        released = report.fulfilment.released,
        "stopped"
    );
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, only SIGTERM (or a kill) stops us.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => info!("Ctrl-C received"),
        () = term => info!("SIGTERM received"),
    }
}
