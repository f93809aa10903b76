//! Operating queues: how far behind a subscription is, what failed and how to replay it,
//! and whether the broker is set up the way the application expects.
//!
//! Each backend answers these questions from what its broker exposes, through the
//! [`Backend`](crate::Backend) methods [`stats`](crate::Backend::stats),
//! [`peek_dead_letters`](crate::Backend::peek_dead_letters),
//! [`purge_dead_letters`](crate::Backend::purge_dead_letters),
//! [`redrive_publisher`](crate::Backend::redrive_publisher) and
//! [`doctor`](crate::Backend::doctor). What is the same everywhere lives here:
//!
//! - [`stats`]: the [`SubscriptionStats`] snapshot, whose figures are each a [`Figure`]
//!   that is either known or says why the broker cannot report it. No made-up zeros.
//! - [`dead_letters`]: [`redrive`] moves dead letters back to
//!   their subscription, all or filtered, at a bounded rate, keeping payload and
//!   attributes and counting redrives in [`REDRIVE_COUNT`](dead_letters::REDRIVE_COUNT);
//!   plus the receive-based peek that queue-like backends share.
//! - [`doctor`]: [`Expectations`] built from the application's
//!   retry policy and worker options, the [`Finding`]s a backend
//!   reports, and the comparisons every backend makes the same way.
//!
//! ```no_run
//! # async fn example(backend: &dyn wharf_core::Backend) -> Result<(), wharf_core::Error> {
//! use std::num::NonZeroU32;
//! use wharf_core::operations::{Expectations, RedriveOptions, redrive};
//! use wharf_core::{SubscriptionSpec, WorkerOptions};
//!
//! let stats = backend.stats("fulfilment").await?;
//! println!("backlog {}, dead-lettered {}", stats.backlog(), stats.dead_lettered);
//!
//! // Put failed orders of one tenant back, 50 a second, with payload and attributes intact.
//! let per_second = NonZeroU32::new(50).expect("not zero");
//! let options = RedriveOptions::default().with_attribute("tenant", "acme").rate(per_second);
//! let report = redrive(backend, "fulfilment", &options, |progress| {
//!     eprintln!("{} redriven", progress.redriven);
//! })
//! .await?;
//! println!("{} redriven, {} left in place", report.redriven, report.skipped);
//!
//! // Does the broker's setup fit the retry policy and handler timeout the workers use?
//! let workers = WorkerOptions::default();
//! let expected = Expectations::new(SubscriptionSpec::new("orders", "fulfilment"), &workers);
//! for finding in backend.doctor(&expected).await? {
//!     eprintln!("{finding}");
//! }
//! # Ok(()) }
//! ```

pub mod dead_letters;
pub mod doctor;
pub mod stats;

pub use dead_letters::{RedriveOptions, RedriveReport, redrive};
pub use doctor::{Expectations, Finding, Severity};
pub use stats::{Figure, SubscriptionStats};
