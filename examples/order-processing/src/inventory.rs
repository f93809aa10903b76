//! The warehouse's stock, kept in SQLite, and the reservations made against it.
//!
//! A reservation is decided in one `BEGIN IMMEDIATE` transaction keyed by the order id:
//! the first decision for an order is stored, and a redelivered order gets that same
//! decision back without touching the stock again. That is what makes the at-least-once
//! delivery of the queue safe here.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::order::OrderPlaced;

/// The SKU put on sale in the flash-sale spike, with little stock.
pub const FLASH_SALE_SKU: &str = "FLASH-TV-55";

/// One product and the stock it starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Stock-keeping unit.
    pub sku: String,
    /// Name for people.
    pub name: String,
    /// Units in stock when the catalogue is first loaded.
    pub stock: u32,
}

/// The products the warehouse sells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalogue {
    /// Every product.
    pub products: Vec<Product>,
}

/// Names of the everyday products.
const REGULAR: [(&str, &str); 8] = [
    ("KB-101", "Mechanical keyboard"),
    ("MS-202", "Wireless mouse"),
    ("HD-303", "Headphones"),
    ("CB-404", "USB-C cable"),
    ("MN-505", "27-inch monitor"),
    ("WC-606", "Webcam"),
    ("DK-707", "Docking station"),
    ("SD-808", "Portable SSD"),
];

impl Catalogue {
    /// A catalogue sized for about `orders` orders: plenty of every everyday product, and
    /// one flash-sale product with stock for about one order in twenty, so the spike runs
    /// it out of stock.
    pub fn sized_for(orders: usize) -> Self {
        let orders = u32::try_from(orders).unwrap_or(u32::MAX);
        let mut products: Vec<Product> = REGULAR
            .iter()
            .map(|(sku, name)| Product {
                sku: (*sku).to_owned(),
                name: (*name).to_owned(),
                stock: orders.max(10),
            })
            .collect();

        products.push(Product {
            sku: FLASH_SALE_SKU.to_owned(),
            name: "55-inch TV, flash sale".to_owned(),
            stock: (orders / 20).max(5),
        });
        Self { products }
    }

    /// The everyday products' SKUs.
    pub fn regular_skus(&self) -> Vec<&str> {
        self.products
            .iter()
            .map(|p| p.sku.as_str())
            .filter(|sku| *sku != FLASH_SALE_SKU)
            .collect()
    }
}

/// What a reservation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The units are set aside for the order.
    Reserved,
    /// Not enough units were left.
    OutOfStock,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Reserved => "reserved",
            Outcome::OutOfStock => "out_of_stock",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "reserved" => Some(Outcome::Reserved),
            "out_of_stock" => Some(Outcome::OutOfStock),
            _ => None,
        }
    }
}

/// The decision for one order, and whether it had been made before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// What was decided.
    pub outcome: Outcome,
    /// The order had been decided on before: this is a redelivery.
    pub duplicate: bool,
}

/// Stock of one product now, against what it started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    /// Stock-keeping unit.
    pub sku: String,
    /// Units when the catalogue was loaded.
    pub initial: i64,
    /// Units left.
    pub available: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

impl StockLevel {
    /// Never negative, and initial stock = available + reserved.
    pub fn adds_up(&self) -> bool {
        self.available >= 0 && self.initial == self.available + self.reserved
    }
}

/// Why the inventory could not decide.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The catalogue has no such product: no retry can help.
    #[error("unknown product `{sku}`")]
    UnknownProduct {
        /// The SKU ordered.
        sku: String,
    },
    /// The database failed; trying again later may work.
    #[error("inventory database error")]
    Database(#[from] sqlx::Error),
    /// A stored reservation has an outcome this code does not know.
    #[error("reservation of order {order_id} has an unknown outcome `{outcome}`")]
    Corrupt {
        /// The order.
        order_id: Uuid,
        /// The stored text.
        outcome: String,
    },
}

/// The stock and reservations tables.
#[derive(Debug, Clone)]
pub struct Inventory {
    pool: SqlitePool,
}

impl Inventory {
    /// The inventory in `pool`'s database.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Adds the catalogue's products that are not stocked yet; existing stock is kept.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn load(&self, catalogue: &Catalogue) -> Result<(), InventoryError> {
        let mut tx = self.pool.begin().await?;
        for product in &catalogue.products {
            sqlx::query(
                "INSERT OR IGNORE INTO products (sku, name, initial, available) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(&product.sku)
            .bind(&product.name)
            .bind(i64::from(product.stock))
            .bind(i64::from(product.stock))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the catalogue has `sku`.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn knows(&self, sku: &str) -> Result<bool, InventoryError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM products WHERE sku = ?")
            .bind(sku)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The decision already made for `order_id`, if any.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn decided(&self, order_id: Uuid) -> Result<Option<Outcome>, InventoryError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT outcome FROM reservations WHERE order_id = ?")
                .bind(order_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        stored.map(|text| parse_outcome(order_id, text)).transpose()
    }

    /// Reserves the order's units if enough are left, once per order id.
    ///
    /// # Errors
    ///
    /// [`InventoryError::UnknownProduct`] if the SKU is not in the catalogue; the
    /// database's error otherwise, after which nothing has changed.
    pub async fn reserve(&self, order: &OrderPlaced) -> Result<Reservation, InventoryError> {
        // IMMEDIATE takes the write lock up front: a transaction that read first and
        // wrote later could deadlock against another doing the same.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id = order.id.to_string();

        let earlier: Option<String> =
            sqlx::query_scalar("SELECT outcome FROM reservations WHERE order_id = ?")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(text) = earlier {
            let outcome = parse_outcome(order.id, text)?;
            return Ok(Reservation {
                outcome,
                duplicate: true,
            });
        }

        let outcome = take_stock(&mut tx, order).await?;
        record(&mut tx, order, outcome).await?;
        tx.commit().await?;

        Ok(Reservation {
            outcome,
            duplicate: false,
        })
    }

    /// Every product's stock now, with the units its reservations hold.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn levels(&self) -> Result<Vec<StockLevel>, InventoryError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.sku, p.initial, p.available, COALESCE(SUM(r.quantity), 0) \
             FROM products p LEFT JOIN reservations r \
               ON r.sku = p.sku AND r.outcome = 'reserved' \
             GROUP BY p.sku ORDER BY p.sku",
        )
        .fetch_all(&self.pool)
        .await?;

        Ok(rows
            .into_iter()
            .map(|(sku, initial, available, reserved)| StockLevel {
                sku,
                initial,
                available,
                reserved,
            })
            .collect())
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Takes the units if enough are left. The `available >= ?` guard and the table's
/// CHECK both keep stock from going negative.
async fn take_stock(tx: &mut Tx, order: &OrderPlaced) -> Result<Outcome, InventoryError> {
    let available: Option<i64> = sqlx::query_scalar("SELECT available FROM products WHERE sku = ?")
        .bind(&order.sku)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(available) = available else {
        return Err(InventoryError::UnknownProduct {
            sku: order.sku.clone(),
        });
    };

    let wanted = i64::from(order.quantity);
    if available < wanted {
        return Ok(Outcome::OutOfStock);
    }
    sqlx::query("UPDATE products SET available = available - ? WHERE sku = ? AND available >= ?")
        .bind(wanted)
        .bind(&order.sku)
        .bind(wanted)
        .execute(&mut **tx)
        .await?;
    Ok(Outcome::Reserved)
}

async fn record(tx: &mut Tx, order: &OrderPlaced, outcome: Outcome) -> Result<(), InventoryError> {
    sqlx::query(
        "INSERT INTO reservations (order_id, sku, quantity, outcome, decided_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(order.id.to_string())
    .bind(&order.sku)
    .bind(i64::from(order.quantity))
    .bind(outcome.as_str())
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn parse_outcome(order_id: Uuid, text: String) -> Result<Outcome, InventoryError> {
    Outcome::parse(&text).ok_or(InventoryError::Corrupt {
        order_id,
        outcome: text,
    })
}

/// Milliseconds since the Unix epoch, for the `*_at` columns.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
