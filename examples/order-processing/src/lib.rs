//! Order processing on wharf: the system the project's seed describes, runnable with no
//! broker at all (the in-memory backend) and on any other backend by changing one URL.
//!
//! - [`api`]: `POST /orders` answers `202 Accepted` once the orders topic has the order;
//!   `GET /orders/{id}` shows its status.
//! - [`fulfilment`]: the worker handler: payment (flaky, retried with backoff), stock
//!   reservation in SQLite ([`inventory`], idempotent per order), a reply on the reply
//!   topic. Orders for unknown products are poison and go to the dead-letter queue.
//! - [`confirmations`]: consumes the replies and records each order's outcome
//!   ([`orders`]).
//! - [`app`]: wires it together on any [`wharf::Backend`]; [`serve`] runs it until
//!   Ctrl-C; [`demo`] fires orders at it over HTTP and checks nothing was lost.
//! - [`config`]: settings from defaults, `order-processing.toml`, `ORDERS_*` variables
//!   and flags.

pub mod api;
pub mod app;
pub mod config;
pub mod confirmations;
pub mod database;
pub mod demo;
pub mod fulfilment;
pub mod inventory;
pub mod load;
pub mod order;
pub mod orders;
pub mod payment;
pub mod progress;
pub mod serve;
pub mod summary;
