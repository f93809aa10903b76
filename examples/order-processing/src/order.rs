//! The messages and states of an order, shared by the API, the workers and the demo.
//!
//! An order enters as an [`OrderRequest`] over HTTP, travels the orders topic as an
//! [`OrderPlaced`] message, and comes back on the reply topic as a [`Confirmation`].
//! Its [`Status`] only ever moves forward.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most units one order may ask for.
pub const MAX_QUANTITY: u32 = 100;
/// Longest accepted product SKU, in bytes.
pub const MAX_SKU_BYTES: usize = 64;
/// Longest accepted customer reference, in bytes.
pub const MAX_CUSTOMER_BYTES: usize = 128;

/// The body of `POST /orders`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The product's stock-keeping unit.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
    /// Who ordered.
    pub customer: String,
}

impl OrderRequest {
    /// Checks the fields the API can judge without the inventory.
    ///
    /// An unknown SKU is not caught here: only the inventory knows the catalogue, so
    /// such an order is accepted and ends in the dead-letter queue.
    ///
    /// # Errors
    ///
    /// A sentence naming the field, its value and the accepted range.
    pub fn validate(&self) -> Result<(), String> {
        if self.sku.trim().is_empty() || self.sku.len() > MAX_SKU_BYTES {
            return Err(format!(
                "sku must be 1 to {MAX_SKU_BYTES} bytes of text; got {} bytes",
                self.sku.len()
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&self.quantity) {
            return Err(format!(
                "quantity must be between 1 and {MAX_QUANTITY}; got {}",
                self.quantity
            ));
        }
        if self.customer.trim().is_empty() || self.customer.len() > MAX_CUSTOMER_BYTES {
            return Err(format!(
                "customer must be 1 to {MAX_CUSTOMER_BYTES} bytes of text; got {} bytes",
                self.customer.len()
            ));
        }
        Ok(())
    }
}

/// Hand-written so customer references never reach a log.
impl fmt::Debug for OrderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderRequest")
            .field("sku", &self.sku)
            .field("quantity", &self.quantity)
            .finish_non_exhaustive()
    }
}

/// The message on the orders topic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The id the API gave the order.
    pub id: Uuid,
    /// The product's stock-keeping unit.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
    /// Who ordered.
    pub customer: String,
}

impl OrderPlaced {
    /// The order `request` under `id`.
    pub fn new(id: Uuid, request: OrderRequest) -> Self {
        Self {
            id,
            sku: request.sku,
            quantity: request.quantity,
            customer: request.customer,
        }
    }
}

/// Hand-written so customer references never reach a log.
impl fmt::Debug for OrderPlaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderPlaced")
            .field("id", &self.id)
            .field("sku", &self.sku)
            .field("quantity", &self.quantity)
            .finish_non_exhaustive()
    }
}

/// Where an order stands, as `GET /orders/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Recorded, but the queue has not yet accepted it; never shown to the client
    /// that placed it, who only learns the id once the order is accepted.
    Pending,
    /// The queue has durably accepted the order.
    Accepted,
    /// A worker has started on it.
    Processing,
    /// Stock is reserved and payment authorised.
    Confirmed,
    /// Not enough stock: a business outcome, not a failure.
    Rejected,
    /// The order could not be processed and waits in the dead-letter queue.
    DeadLettered,
}

impl Status {
    /// Every status, in the order an order passes through them.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Accepted,
        Status::Processing,
        Status::Confirmed,
        Status::Rejected,
        Status::DeadLettered,
    ];

    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Accepted => "accepted",
            Status::Processing => "processing",
            Status::Confirmed => "confirmed",
            Status::Rejected => "rejected",
            Status::DeadLettered => "dead_lettered",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// How far along an order is; a status only replaces one of a lower stage.
    pub fn stage(self) -> i64 {
        match self {
            Status::Pending => 0,
            Status::Accepted => 1,
            Status::Processing => 2,
            Status::Confirmed | Status::Rejected | Status::DeadLettered => 3,
        }
    }

    /// Whether the order is done with: confirmed, rejected or dead-lettered.
    pub fn is_settled(self) -> bool {
        self.stage() == Status::Confirmed.stage()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message on the reply topic: how an order ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The order.
    pub order_id: Uuid,
    /// `confirmed`, `rejected` or `dead_lettered`.
    pub status: Status,
    /// Why, for anything but a confirmation.
    pub reason: Option<String>,
}

/// The attribute carrying the order id on both topics, so a dead letter can be matched
/// to its order without decoding the payload.
pub const ORDER_ID_ATTRIBUTE: &str = "order-id";

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sku: &str, quantity: u32, customer: &str) -> OrderRequest {
        OrderRequest {
            sku: sku.to_owned(),
            quantity,
            customer: customer.to_owned(),
        }
    }

    #[test]
    fn a_zero_quantity_is_refused_with_the_range() {
        let error = request("TV-1", 0, "c-1").validate().unwrap_err();

        assert!(error.contains("between 1 and 100"), "{error}");
        assert!(error.contains("got 0"), "{error}");
    }

    #[test]
    fn blank_sku_and_customer_are_refused() {
        assert!(request(" ", 1, "c-1").validate().is_err());
        assert!(request("TV-1", 1, "").validate().is_err());
        assert!(request("TV-1", 1, "c-1").validate().is_ok());
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("shipped"), None);
    }

    #[test]
    fn debug_hides_the_customer() {
        let shown = format!("{:?}", request("TV-1", 1, "alice@example.com"));

        assert!(!shown.contains("alice"), "{shown}");
    }
}
