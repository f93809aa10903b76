//! The one place where librdkafka errors become wharf errors.
//!
//! Each error keeps the rdkafka error as its `source`, except configuration errors:
//! rdkafka's text for those repeats the offending value, which may be a password.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaConfRes;
use wharf_core::{Error, ErrorKind};

/// Wraps an rdkafka error that happened while doing `what`.
pub(crate) fn from_kafka(error: KafkaError, what: &str) -> Error {
    if let KafkaError::ClientConfig(result, _, key, _) = &error {
        return config_error(*result, key);
    }

    let kind = kind_of(&error);
    Error::new(kind, format!("{what} failed: {kind}")).with_source(error)
}

/// An admin request's per-item error code, for `what` on `name`.
pub(crate) fn from_code(code: RDKafkaErrorCode, what: &str, name: &str) -> Error {
    let kind = code_kind(code);
    Error::new(kind, format!("{what} `{name}` failed: {code}"))
}

fn config_error(result: RDKafkaConfRes, key: &str) -> Error {
    let problem = match result {
        RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => "is not a librdkafka property",
        _ => "has a value librdkafka does not accept",
    };
    Error::new(ErrorKind::Config, format!("property `{key}` {problem}"))
}

fn kind_of(error: &KafkaError) -> ErrorKind {
    match error {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorKind::Config,
        KafkaError::Canceled => ErrorKind::Closed,
        KafkaError::Nul(_) => ErrorKind::InvalidArgument,
        KafkaError::AdminOp(code) => code_kind(*code),
        other => other
            .rdkafka_error_code()
            .map_or(ErrorKind::Internal, code_kind),
    }
}

/// The wharf kind of a Kafka or librdkafka error code.
pub(crate) fn code_kind(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;

    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            ErrorKind::PayloadTooLarge
        }
        C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::GroupIdNotFound
        | C::UnknownTopicId => ErrorKind::NotFound,
        C::TopicAlreadyExists => ErrorKind::AlreadyExists,
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::SSL => ErrorKind::PermissionDenied,
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue => {
            ErrorKind::Timeout
        }
        C::QueueFull | C::ThrottlingQuotaExceeded => ErrorKind::Throttled,
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::NetworkException
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::CoordinatorLoadInProgress
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::NotController
        | C::KafkaStorageError
        | C::RebalanceInProgress
        | C::WaitingForCoordinator
        // wharf purges a producer only when it replaces one that lost every broker.
        | C::PurgeQueue
        | C::PurgeInflight => ErrorKind::Unavailable,
        C::InvalidTopic
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidReplicaAssignment
        | C::InvalidConfig
        | C::PolicyViolation
        | C::InvalidArgument
        | C::InvalidGroupId
        | C::InvalidSessionTimeout => ErrorKind::InvalidArgument,
        C::UnsupportedVersion | C::UnsupportedFeature | C::NotImplemented => ErrorKind::Unsupported,
        C::Fenced | C::Fatal | C::BrokerDestroy => ErrorKind::Closed,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_records_map_to_payload_too_large() {
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);

        assert_eq!(
            from_kafka(error, "publish").kind(),
            ErrorKind::PayloadTooLarge
        );
    }

    #[test]
    fn broker_outages_are_retryable_and_auth_failures_are_not() {
        let down = from_kafka(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "x");
        let denied = from_code(RDKafkaErrorCode::TopicAuthorizationFailed, "create", "t");

        assert!(down.is_retryable());
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        assert!(!denied.is_retryable());
    }

    #[test]
    fn records_purged_with_a_replaced_producer_are_retryable() {
        for code in [
            RDKafkaErrorCode::PurgeQueue,
            RDKafkaErrorCode::PurgeInflight,
        ] {
            let purged = from_kafka(KafkaError::MessageProduction(code), "producing a record");

            assert_eq!(purged.kind(), ErrorKind::Unavailable);
            assert!(purged.is_retryable());
        }
    }

    #[test]
    fn config_errors_name_the_key_but_never_the_value() {
        let error = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );

        let mapped = from_kafka(error, "connect");

        assert_eq!(mapped.kind(), ErrorKind::Config);
        assert!(mapped.to_string().contains("sasl.password"), "{mapped}");
        assert!(!format!("{mapped:?}").contains("hunter2"), "{mapped:?}");
    }
}
