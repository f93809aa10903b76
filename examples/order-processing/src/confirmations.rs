//! The status updater: consumes the reply topic and records how each order ended.
//!
//! Replies may come twice (a redelivered order is answered again) and in any order
//! relative to the API's own updates; [`OrderStore::advance`] only moves an order
//! forward, so neither matters. A second reply for a settled order is counted as a
//! duplicate and acked.

use std::sync::Arc;

use tracing::trace;
use wharf::{Handler, HandlerError, Received};

use crate::fulfilment::Counters;
use crate::order::Confirmation;
use crate::orders::OrderStore;

/// Records the outcome each reply carries.
#[derive(Debug, Clone)]
pub struct StatusUpdater {
    /// The order statuses.
    pub orders: OrderStore,
    /// Shared counters.
    pub counters: Arc<Counters>,
}

impl Handler for StatusUpdater {
    async fn handle(&self, delivery: Received) -> Result<(), HandlerError> {
        let reply: Confirmation = delivery.json()?;
        if !reply.status.is_settled() {
            return Err(HandlerError::permanent(format!(
                "a reply must settle its order, but this one says `{}`",
                reply.status
            )));
        }

        let changed = self
            .orders
            .advance(reply.order_id, reply.status, reply.reason.as_deref())
            .await?;
        if !changed {
            Counters::bump(&self.counters.duplicate_replies);
        }
        trace!(order.id = %reply.order_id, status = %reply.status, changed, "reply recorded");
        Ok(())
    }
}
