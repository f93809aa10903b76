//! The fulfilment handler the order workers run for each order.
//!
//! For one order: mark it processing, check the product exists (an unknown one is
//! poison: a permanent failure, dead-lettered at once), authorise payment (which fails
//! transiently now and then: retried with backoff), reserve the stock (idempotent per
//! order id), and send the outcome on the reply topic. Out of stock is an outcome, sent
//! as a rejection, not a failure.
//!
//! A redelivered order whose stock decision is already stored only has its reply sent
//! again; the status updater ignores the second copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{trace, warn};
use uuid::Uuid;
use wharf::{Handler, HandlerError, Message, PublishError, Publisher, Received};

use crate::inventory::{Inventory, InventoryError, Outcome};
use crate::order::{Confirmation, ORDER_ID_ATTRIBUTE, OrderPlaced, OrderRequest, Status};
use crate::orders::OrderStore;
use crate::payment::{PaymentUnavailable, Payments};

/// Counters the demo reports, shared by the handlers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Orders delivered again after their stock decision was stored.
    pub duplicate_orders: AtomicU64,
    /// Replies for orders already settled.
    pub duplicate_replies: AtomicU64,
    /// Payment authorisations that failed transiently.
    pub payment_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Why an order could not be fulfilled on this attempt.
#[derive(Debug, thiserror::Error)]
pub enum FulfilError {
    /// The order itself is wrong; retrying cannot help.
    #[error("invalid order: {0}")]
    Invalid(String),
    /// The inventory refused or failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The payment provider failed transiently.
    #[error(transparent)]
    Payment(#[from] PaymentUnavailable),
    /// The order status could not be updated.
    #[error("could not update the order status")]
    Status(#[source] sqlx::Error),
    /// The reply could not be built.
    #[error("could not encode the reply")]
    Encode(#[source] wharf::Error),
    /// The reply topic refused the reply.
    #[error("could not send the reply")]
    Reply(#[source] PublishError),
}

impl FulfilError {
    /// Whether no later attempt can succeed, so the order goes straight to the
    /// dead-letter queue.
    pub fn is_permanent(&self) -> bool {
        match self {
            FulfilError::Invalid(_) => true,
            FulfilError::Inventory(error) => !matches!(error, InventoryError::Database(_)),
            FulfilError::Encode(error) => !error.is_retryable(),
            FulfilError::Reply(error) => !error.is_retryable(),
            FulfilError::Payment(_) | FulfilError::Status(_) => false,
        }
    }
}

/// Runs one order through payment and stock reservation.
#[derive(Debug, Clone)]
pub struct Fulfilment {
    /// The stock.
    pub inventory: Inventory,
    /// The order statuses.
    pub orders: OrderStore,
    /// The flaky payment provider.
    pub payments: Payments,
    /// The reply topic.
    pub replies: Publisher,
    /// Attempts the worker's retry policy allows, to know when a failure is the last.
    pub max_attempts: u32,
    /// Shared counters.
    pub counters: Arc<Counters>,
}

impl Handler for Fulfilment {
    async fn handle(&self, delivery: Received) -> Result<(), HandlerError> {
        // An undecodable payload is a wharf `Decode` error, which `?` makes permanent.
        let order: OrderPlaced = delivery.json()?;
        let attempt = delivery.attempt();

        match self.fulfil(&order, attempt).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.failed(&order, attempt, error).await),
        }
    }
}

impl Fulfilment {
    async fn fulfil(&self, order: &OrderPlaced, attempt: u32) -> Result<(), FulfilError> {
        if let Some(outcome) = self.inventory.decided(order.id).await? {
            Counters::bump(&self.counters.duplicate_orders);
            return self.reply(order.id, outcome).await;
        }
        self.orders
            .advance(order.id, Status::Processing, None)
            .await
            .map_err(FulfilError::Status)?;

        check(order)?;
        if !self.inventory.knows(&order.sku).await? {
            return Err(InventoryError::UnknownProduct {
                sku: order.sku.clone(),
            }
            .into());
        }
        self.authorise(order.id, attempt)?;

        let reservation = self.inventory.reserve(order).await?;
        if reservation.duplicate {
            Counters::bump(&self.counters.duplicate_orders);
        }
        trace!(order.id = %order.id, sku = %order.sku, outcome = ?reservation.outcome, "decided");
        self.reply(order.id, reservation.outcome).await
    }

    fn authorise(&self, order_id: Uuid, attempt: u32) -> Result<(), FulfilError> {
        self.payments.authorise(order_id, attempt).map_err(|error| {
            Counters::bump(&self.counters.payment_failures);
            FulfilError::from(error)
        })
    }

    async fn reply(&self, order_id: Uuid, outcome: Outcome) -> Result<(), FulfilError> {
        let confirmation = match outcome {
            Outcome::Reserved => Confirmation {
                order_id,
                status: Status::Confirmed,
                reason: None,
            },
            Outcome::OutOfStock => Confirmation {
                order_id,
                status: Status::Rejected,
                reason: Some("out of stock".to_owned()),
            },
        };
        self.send(&confirmation).await
    }

    async fn send(&self, confirmation: &Confirmation) -> Result<(), FulfilError> {
        let message = Message::json(confirmation)
            .map_err(FulfilError::Encode)?
            .with_attribute(ORDER_ID_ATTRIBUTE, confirmation.order_id.to_string());

        self.replies
            .publish(message)
            .await
            .map_err(FulfilError::Reply)
    }

    /// Turns a failure into the worker's verdict. When this failure is the order's last
    /// (permanent, or the final attempt), the worker dead-letters it next, so the reply
    /// topic hears of it first and the order's status can say so.
    async fn failed(&self, order: &OrderPlaced, attempt: u32, error: FulfilError) -> HandlerError {
        let permanent = error.is_permanent();
        if permanent || attempt >= self.max_attempts {
            let notice = Confirmation {
                order_id: order.id,
                status: Status::DeadLettered,
                reason: Some(error.to_string()),
            };
            if let Err(send) = self.send(&notice).await {
                // Retrying keeps the order out of the dead-letter queue until its status
                // can follow it there.
                warn!(order.id = %order.id, error = %send, "could not announce dead letter");
                return HandlerError::transient(send);
            }
        }

        if permanent {
            HandlerError::permanent(error)
        } else {
            HandlerError::transient(error)
        }
    }
}

/// Checks what the API checks, for orders published by other producers.
fn check(order: &OrderPlaced) -> Result<(), FulfilError> {
    let request = OrderRequest {
        sku: order.sku.clone(),
        quantity: order.quantity,
        customer: order.customer.clone(),
    };
    request.validate().map_err(FulfilError::Invalid)
}
