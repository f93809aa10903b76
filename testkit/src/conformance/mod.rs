//! The conformance suite: one public `async fn(&dyn Backend)` per behaviour of the wharf
//! contract.
//!
//! Each function panics with a message saying what was expected and what happened when
//! the backend breaks the contract, and returns normally when it holds (or when the
//! backend's [`Capabilities`](wharf_core::Capabilities) declare that it lacks the feature
//! under test). [`conformance_suite!`](crate::conformance_suite) turns them into one test
//! each; [`support`] holds the fixture and helpers they share, which adapters may reuse
//! in their own tests.

pub mod consumers;
pub mod dead_letter;
pub mod features;
pub mod lease;
pub mod limits;
pub mod operations;
pub mod publish;
pub mod reply;
pub mod settle;
pub mod support;
pub mod telemetry;
pub mod worker;
