//! [`conformance_suite!`](crate::conformance_suite): one test per behaviour of the
//! conformance suite, for an adapter's `tests/conformance.rs`.

/// Expands to a module `conformance` with one `#[tokio::test]` per conformance behaviour,
/// each calling the given `async fn` for a fresh backend.
///
/// The argument is the path of an `async fn() -> B` where `B: wharf_core::Backend`. See
/// the [crate documentation](crate) for a full example and the list of behaviours.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:path) => {
        /// The wharf conformance suite, one test per behaviour.
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__conformance_cases! {
                $backend;
                publish::binary_payload_round_trips,
                publish::empty_payload_round_trips,
                publish::unicode_payload_and_attributes_round_trip,
                publish::json_message_round_trips,
                publish::published_at_is_the_publish_time,
                publish::batch_of_a_thousand_arrives_once_each,
                publish::batch_split_by_count_reports_each_message,
                publish::batch_split_by_bytes_delivers_every_message,
                publish::publish_to_missing_topic_is_not_found,
                publish::failed_publish_hands_the_message_back,
                limits::oversized_payload_is_refused_before_sending,
                limits::too_many_attributes_is_a_limit_error,
                limits::publish_delay_beyond_maximum_is_invalid,
                limits::nack_delay_beyond_maximum_is_refused_and_handed_back,
                limits::lease_beyond_maximum_is_invalid,
                limits::receive_of_zero_is_invalid,
                limits::receive_returns_within_its_timeout_when_empty,
                limits::receive_never_returns_more_than_max,
                settle::ack_stops_redelivery,
                settle::ack_all_stops_redelivery_of_a_batch,
                settle::nack_redelivers_with_the_next_attempt,
                settle::nack_delay_is_honoured,
                settle::dropped_delivery_is_redelivered,
                settle::attempt_count_survives_a_consumer_restart,
                lease::unacked_message_returns_after_its_lease,
                lease::lease_extension_keeps_a_message_hidden,
                lease::settling_after_lease_expiry_is_lease_expired,
                dead_letter::dead_letter_keeps_payload_attributes_and_reason,
                dead_letter::dead_letter_counts_earlier_attempts,
                worker::worker_acks_what_its_handler_accepts,
                worker::worker_dead_letters_after_exactly_max_attempts,
                worker::permanent_failure_dead_letters_at_once,
                worker::undecodable_json_dead_letters_at_once,
                worker::handler_panic_is_retried,
                worker::handler_timeout_is_retried,
                worker::worker_never_exceeds_its_concurrency,
                worker::worker_keeps_the_lease_while_a_handler_runs,
                worker::graceful_shutdown_loses_nothing,
                consumers::competing_consumers_see_each_message_once,
                consumers::concurrent_publishers_and_consumers_lose_nothing,
                features::fan_out_delivers_every_message_to_every_subscription,
                features::ordering_key_keeps_order,
                features::duplicate_publish_is_delivered_once,
                features::delayed_publish_is_not_delivered_early,
                operations::stats_follow_a_growing_then_draining_backlog,
                operations::peek_leaves_dead_letters_in_place,
                operations::redrive_returns_dead_letters_intact,
                operations::filtered_redrive_leaves_the_rest,
                operations::large_filtered_redrive_never_ends_silently,
                operations::purge_empties_the_dead_letters,
                operations::doctor_accepts_what_wharf_created,
                operations::doctor_reports_a_missing_subscription,
                operations::doctor_reports_a_delivery_limit_below_the_retries,
                telemetry::metrics_count_each_outcome,
            }
            $crate::__conformance_current_thread_cases! {
                $backend;
                telemetry::trace_context_reaches_the_handler,
            }
            $crate::__conformance_owned_cases! {
                $backend;
                reply::requests_get_their_own_replies,
                reply::unanswered_request_times_out_and_close_cleans_up,
            }
        }
    };
}

/// One test per `module::case`; used by [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($backend:path; $($module:ident :: $case:ident),+ $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "::wharf_testkit::__private::tokio"
            )]
            async fn $case() {
                let backend = $backend().await;
                $crate::conformance::$module::$case(&backend).await;
            }
        )+
    };
}

/// One test per `module::case` for cases that take the backend as `Arc<dyn Backend>`;
/// used by [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_owned_cases {
    ($backend:path; $($module:ident :: $case:ident),+ $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "::wharf_testkit::__private::tokio"
            )]
            async fn $case() {
                let backend: ::std::sync::Arc<dyn $crate::__private::Backend> =
                    ::std::sync::Arc::new($backend().await);
                $crate::conformance::$module::$case(backend).await;
            }
        )+
    };
}

/// One test per `module::case` on a current-thread runtime, for cases that install a
/// tracing subscriber for their thread; used by
/// [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_current_thread_cases {
    ($backend:path; $($module:ident :: $case:ident),+ $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "current_thread",
                crate = "::wharf_testkit::__private::tokio"
            )]
            async fn $case() {
                let backend = $backend().await;
                $crate::conformance::$module::$case(&backend).await;
            }
        )+
    };
}
