//! Tests every wharf backend runs: the conformance suite, and a fault-injecting backend
//! for testing your own handlers.
//!
//! # Running the conformance suite in an adapter
//!
//! Every backend proves the contract with the same suite, against its real broker. An
//! adapter's `tests/conformance.rs` holds one `async fn` that connects to the service
//! and one macro call:
//!
//! ```no_run
//! // adapters/memory/tests/conformance.rs
//! use wharf_memory::MemoryBackend;
//!
//! /// A fresh backend for each test. Real adapters read their endpoint from the
//! /// environment here (for example `WHARF_RABBITMQ_URL`), falling back to the default.
//! async fn backend() -> MemoryBackend {
//!     MemoryBackend::new()
//! }
//!
//! wharf_testkit::conformance_suite!(backend);
//! # fn main() {}
//! ```
//!
//! The argument is the path of an `async fn` taking no arguments and returning a value of
//! a type that implements [`Backend`](wharf_core::Backend) (a concrete type such as
//! `MemoryBackend`, or `impl Backend`; not `Arc<dyn Backend>`). The macro expands to a
//! module `conformance` holding one `#[tokio::test]` (multi-threaded, two workers) per
//! behaviour, so `cargo test -p wharf-memory --test conformance` lists each behaviour by
//! name and `cargo test conformance::nack` runs a few. The test crate needs no
//! dependency besides `wharf-testkit`: the macro brings its own tokio.
//!
//! Each behaviour is also a public `async fn(&dyn Backend)` in [`conformance`], for an
//! adapter that wants to call one by hand.
//!
//! Each test creates its own topic and subscriptions, named `wharf-<case>-<random>`
//! (letters, digits and hyphens, starting with a letter, valid on SQS, Pub/Sub, Kafka and
//! RabbitMQ), picks its lease from the backend's [`Capabilities`](wharf_core::Capabilities)
//! and deletes what it created, also when it fails. A test skips only when the backend's
//! capabilities declare that it lacks the feature under test; it then prints
//! `skipped: <backend> lacks <capability>` and passes. Nothing is `#[ignore]`d.
//!
//! # The behaviours
//!
//! Publishing ([`conformance::publish`]):
//! `binary_payload_round_trips`, `empty_payload_round_trips`,
//! `unicode_payload_and_attributes_round_trip`, `json_message_round_trips`,
//! `published_at_is_the_publish_time`, `batch_of_a_thousand_arrives_once_each`,
//! `batch_split_by_count_reports_each_message`,
//! `batch_split_by_bytes_delivers_every_message`, `publish_to_missing_topic_is_not_found`,
//! `failed_publish_hands_the_message_back`.
//!
//! Limits and bad input ([`conformance::limits`]):
//! `oversized_payload_is_refused_before_sending`, `too_many_attributes_is_a_limit_error`,
//! `publish_delay_beyond_maximum_is_invalid`,
//! `nack_delay_beyond_maximum_is_refused_and_handed_back`,
//! `lease_beyond_maximum_is_invalid`, `receive_of_zero_is_invalid`,
//! `receive_returns_within_its_timeout_when_empty`, `receive_never_returns_more_than_max`.
//!
//! Settling ([`conformance::settle`]):
//! `ack_stops_redelivery`, `ack_all_stops_redelivery_of_a_batch`,
//! `nack_redelivers_with_the_next_attempt`,
//! `nack_delay_is_honoured`, `dropped_delivery_is_redelivered`,
//! `attempt_count_survives_a_consumer_restart`.
//!
//! Leases ([`conformance::lease`]):
//! `unacked_message_returns_after_its_lease`, `lease_extension_keeps_a_message_hidden`,
//! `settling_after_lease_expiry_is_lease_expired`.
//!
//! Dead letters ([`conformance::dead_letter`]):
//! `dead_letter_keeps_payload_attributes_and_reason`,
//! `dead_letter_counts_earlier_attempts`.
//!
//! The worker runtime ([`conformance::worker`]):
//! `worker_acks_what_its_handler_accepts`, `worker_dead_letters_after_exactly_max_attempts`,
//! `permanent_failure_dead_letters_at_once`, `undecodable_json_dead_letters_at_once`,
//! `handler_panic_is_retried`, `handler_timeout_is_retried`,
//! `worker_never_exceeds_its_concurrency`, `worker_keeps_the_lease_while_a_handler_runs`,
//! `graceful_shutdown_loses_nothing`.
//!
//! Request / reply ([`conformance::reply`]; these cases take the backend as
//! `Arc<dyn Backend>`): `requests_get_their_own_replies`,
//! `unanswered_request_times_out_and_close_cleans_up`.
//!
//! Consumers and optional features ([`conformance::consumers`],
//! [`conformance::features`]):
//! `competing_consumers_see_each_message_once`,
//! `concurrent_publishers_and_consumers_lose_nothing`,
//! `fan_out_delivers_every_message_to_every_subscription`, `ordering_key_keeps_order`,
//! `duplicate_publish_is_delivered_once`, `delayed_publish_is_not_delivered_early`.
//!
//! Operating queues ([`conformance::operations`]):
//! `stats_follow_a_growing_then_draining_backlog`, `peek_leaves_dead_letters_in_place`,
//! `redrive_returns_dead_letters_intact`, `filtered_redrive_leaves_the_rest`,
//! `large_filtered_redrive_never_ends_silently`,
//! `purge_empties_the_dead_letters`, `doctor_accepts_what_wharf_created`,
//! `doctor_reports_a_missing_subscription`,
//! `doctor_reports_a_delivery_limit_below_the_retries`.
//!
//! Telemetry ([`conformance::telemetry`]): `trace_context_reaches_the_handler` (on a
//! current-thread runtime, since it installs a tracing subscriber for its thread),
//! `metrics_count_each_outcome` (installs a global meter provider exporting to memory).
//!
//! # Fault injection
//!
//! [`FaultyBackend`] wraps any backend and makes it misbehave on purpose: failed
//! publishes and receives, lost or failed acks, duplicated and late deliveries. Use it to
//! check that your handlers and publishing code survive what real brokers do.

// Lets the conformance macro name this crate by a fixed path, in this crate's own tests too.
extern crate self as wharf_testkit;

pub mod conformance;
pub mod fault;
mod macros;

pub use fault::{FaultReport, FaultyBackend, Times};

/// What the exported macros need, re-exported so that adapters need not depend on it.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
    pub use wharf_core::Backend;
}
