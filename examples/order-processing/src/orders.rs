//! The order-status table behind `GET /orders/{id}`.
//!
//! Every update names the status it moves to and only applies if that status is further
//! along than the stored one, so updates may arrive late, twice, or out of order (a
//! confirmation before the API has marked the order accepted) without moving an order
//! backwards.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::inventory::now_millis;
use crate::order::{OrderRequest, Status};

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    /// The order id.
    pub id: Uuid,
    /// Where it stands.
    pub status: Status,
    /// Why it was rejected or dead-lettered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The product ordered.
    pub sku: String,
    /// Units ordered.
    pub quantity: u32,
}

/// How many orders are in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts(HashMap<Status, u64>);

impl StatusCounts {
    /// Orders in `status`.
    pub fn get(&self, status: Status) -> u64 {
        self.0.get(&status).copied().unwrap_or(0)
    }

    /// Orders confirmed, rejected or dead-lettered.
    pub fn settled(&self) -> u64 {
        Status::ALL
            .into_iter()
            .filter(|s| s.is_settled())
            .map(|s| self.get(s))
            .sum()
    }
}

/// The orders table.
#[derive(Debug, Clone)]
pub struct OrderStore {
    pool: SqlitePool,
}

impl OrderStore {
    /// The store in `pool`'s database.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Records a new order as [`Status::Pending`], before it is published.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn record(&self, id: Uuid, request: &OrderRequest) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO orders (id, sku, quantity, customer, status, stage, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(&request.sku)
        .bind(i64::from(request.quantity))
        .bind(&request.customer)
        .bind(Status::Pending.as_str())
        .bind(Status::Pending.stage())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes an order the queue refused, so it is not reported as accepted.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn forget(&self, id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM orders WHERE id = ? AND stage = ?")
            .bind(id.to_string())
            .bind(Status::Pending.stage())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves the order to `status` if that is further along than where it is.
    ///
    /// Returns whether anything changed; `false` for an unknown order or one already
    /// at that stage or beyond.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn advance(
        &self,
        id: Uuid,
        status: Status,
        reason: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE orders SET status = ?, stage = ?, reason = ?, updated_at = ? \
             WHERE id = ? AND stage < ?",
        )
        .bind(status.as_str())
        .bind(status.stage())
        .bind(reason)
        .bind(now_millis())
        .bind(id.to_string())
        .bind(status.stage())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The order `id`, if there is one.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn get(&self, id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
        let row: Option<(String, Option<String>, String, i64)> =
            sqlx::query_as("SELECT status, reason, sku, quantity FROM orders WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;

        Ok(row.map(|(status, reason, sku, quantity)| OrderView {
            id,
            status: Status::parse(&status).unwrap_or(Status::Pending),
            reason,
            sku,
            quantity: u32::try_from(quantity).unwrap_or(0),
        }))
    }

    /// How many orders from `first` on are in each status.
    ///
    /// Order ids are UUIDv7, which sort by creation time, so `first` (an id made when a
    /// run began) separates a run's orders from older ones in a reused database.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn counts_since(&self, first: Uuid) -> Result<StatusCounts, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM orders WHERE id >= ? GROUP BY status")
                .bind(first.to_string())
                .fetch_all(&self.pool)
                .await?;

        let counts = rows
            .into_iter()
            .filter_map(|(name, n)| Some((Status::parse(&name)?, u64::try_from(n).ok()?)))
            .collect();
        Ok(StatusCounts(counts))
    }

    /// The status of every order from `first` on (see [`counts_since`]), for checking
    /// a run order by order.
    ///
    /// [`counts_since`]: Self::counts_since
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn statuses_since(&self, first: Uuid) -> Result<HashMap<Uuid, Status>, sqlx::Error> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, status FROM orders WHERE id >= ?")
                .bind(first.to_string())
                .fetch_all(&self.pool)
                .await?;

        Ok(rows
            .into_iter()
            .filter_map(|(id, status)| Some((id.parse().ok()?, Status::parse(&status)?)))
            .collect())
    }
}
