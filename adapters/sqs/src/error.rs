//! The one place where SQS failures become wharf [`Error`]s.
//!
//! SQS reports failures two ways: a whole call fails with an `SdkError`, or one entry of
//! a batch call fails with an error code. Both go through [`kind_of_code`], so a code
//! means the same wherever it appears. The SDK's own error stays reachable as the
//! wharf error's `source`. Nothing here retries: the SDK already retried what it
//! considers transient before the error reached us.

use std::error::Error as StdError;
use std::sync::Arc;

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use wharf_core::{Error, ErrorKind};

/// The provider-neutral kind of an SQS error code, with the HTTP status as a fallback
/// for codes SQS may add later.
///
/// Codes arrive in two spellings: the JSON protocol's short names (`QueueDoesNotExist`)
/// and the query protocol's long ones (`AWS.SimpleQueueService.NonExistentQueue`),
/// which AWS keeps sending for compatibility; both are listed.
pub(crate) fn kind_of_code(code: &str, status: Option<u16>) -> ErrorKind {
    let short = code.rsplit('.').next().unwrap_or(code);
    match short {
        "QueueDoesNotExist" | "NonExistentQueue" => ErrorKind::NotFound,
        "QueueAlreadyExists" | "QueueNameExists" => ErrorKind::AlreadyExists,
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSecurity"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "RequestExpired"
        | "KmsAccessDenied"
        | "KmsDisabled"
        | "KmsNotFound"
        | "KmsInvalidState"
        | "KmsInvalidKeyUsage" => ErrorKind::PermissionDenied,
        "ThrottlingException"
        | "RequestThrottled"
        | "Throttling"
        | "OverLimit"
        | "KmsThrottled"
        | "PurgeQueueInProgress" => ErrorKind::Throttled,
        "ServiceUnavailable"
        | "InternalError"
        | "InternalFailure"
        | "KmsOptInRequired"
        | "QueueDeletedRecently" => ErrorKind::Unavailable,
        "ReceiptHandleIsInvalid" | "MessageNotInflight" => ErrorKind::LeaseExpired,
        "TooManyEntriesInBatchRequest" => ErrorKind::LimitExceeded,
        "BatchRequestTooLong" | "MessageTooLong" | "RequestEntityTooLarge" => {
            ErrorKind::PayloadTooLarge
        }
        "InvalidParameterValue"
        | "InvalidParameterValueException"
        | "InvalidAttributeName"
        | "InvalidAttributeValue"
        | "InvalidMessageContents"
        | "MissingParameter"
        | "ValidationError"
        | "InvalidAddress"
        | "UnsupportedOperation"
        | "InvalidBatchEntryId"
        | "BatchEntryIdsNotDistinct"
        | "EmptyBatchRequest"
        | "InvalidIdFormat" => ErrorKind::InvalidArgument,
        _ => kind_of_status(status),
    }
}

fn kind_of_status(status: Option<u16>) -> ErrorKind {
    match status {
        Some(429) => ErrorKind::Throttled,
        Some(401 | 403) => ErrorKind::PermissionDenied,
        Some(500..=599) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// A failed SQS call as a wharf error, `what` saying what was attempted (for example
/// "sending to queue orders").
pub(crate) fn from_sdk<E>(error: SdkError<E, HttpResponse>, what: &str) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let kind = kind_of_sdk(&error);
    let detail = detail_of(&error);

    Error::new(kind, format!("{what} failed: {detail}")).with_source(error)
}

/// Like [`from_sdk`], for a failure shared by several messages: each gets its own wharf
/// error pointing at the one SDK error.
pub(crate) fn from_shared_sdk<E>(error: &Arc<SdkError<E, HttpResponse>>, what: &str) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let kind = kind_of_sdk(error);
    let detail = detail_of(error);

    Error::new(kind, format!("{what} failed: {detail}")).with_source(error.clone())
}

/// A failed entry of a batch call.
pub(crate) fn from_entry(code: &str, message: Option<&str>, what: &str) -> Error {
    let detail = message.unwrap_or("no detail given");

    Error::new(
        kind_of_code(code, None),
        format!("{what} failed: {code}: {detail}"),
    )
}

/// Settling with a receipt handle whose lease ran out: SQS says so with
/// `ReceiptHandleIsInvalid` or `MessageNotInflight`, and some implementations (LocalStack)
/// with `InvalidParameterValue` naming the receipt handle. Only in a settlement is the
/// receipt handle the one value that can be wrong, so there the latter means the same.
pub(crate) fn in_settlement(error: Error, delivery: &str) -> Error {
    let stale_handle = error.kind() == ErrorKind::InvalidArgument
        && error
            .message()
            .to_ascii_lowercase()
            .contains("receipthandle");
    if error.kind() != ErrorKind::LeaseExpired && !stale_handle {
        return error;
    }

    Error::lease_expired(delivery).with_source(error)
}

fn kind_of_sdk<E>(error: &SdkError<E, HttpResponse>) -> ErrorKind
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    if is_missing_credentials(error) {
        return ErrorKind::Config;
    }
    match error {
        SdkError::TimeoutError(_) => ErrorKind::Timeout,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorKind::Unavailable,
        SdkError::ConstructionFailure(_) => ErrorKind::Config,
        SdkError::ServiceError(service) => {
            let status = Some(service.raw().status().as_u16());
            match service.err().code() {
                Some(code) => kind_of_code(code, status),
                None => kind_of_status(status),
            }
        }
        _ => ErrorKind::Internal,
    }
}

/// Where the SDK's default chain looks for credentials, named when it found none.
const CREDENTIAL_SOURCES: &str = "the sqs:// URL (sqs://KEY:SECRET@HOST), the variables \
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the profile (AWS_PROFILE, else `default`) \
    in ~/.aws/credentials and ~/.aws/config, web identity (AWS_WEB_IDENTITY_TOKEN_FILE), the \
    ECS container endpoint and EC2 instance metadata";

/// Whether the SDK could not sign the request for want of credentials. It says so only
/// in the text of a nested source (a dispatch or construction failure), so the chain
/// is searched.
fn is_missing_credentials<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: StdError + 'static,
{
    if !matches!(
        error,
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
    ) {
        return false;
    }
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(failure) = current {
        if failure
            .to_string()
            .to_ascii_lowercase()
            .contains("credential")
        {
            return true;
        }
        current = failure.source();
    }
    false
}

fn detail_of<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    if is_missing_credentials(error) {
        return format!("no AWS credentials were found; looked in {CREDENTIAL_SOURCES}");
    }
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("unknown error");
            format!("{code}: {}", err.message().unwrap_or("no detail given"))
        }
        SdkError::DispatchFailure(_) => {
            "SQS could not be reached; check the endpoint and the network".to_owned()
        }
        SdkError::TimeoutError(_) => "SQS did not answer in time".to_owned(),
        SdkError::ConstructionFailure(_) => {
            "the request could not be built; check the region and credentials".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_a_missing_queue_are_not_found() {
        assert_eq!(
            kind_of_code("QueueDoesNotExist", Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of_code("AWS.SimpleQueueService.NonExistentQueue", Some(400)),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn throttling_and_service_failures_are_retryable() {
        assert_eq!(
            kind_of_code("ThrottlingException", Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(
            kind_of_code("AWS.SimpleQueueService.ServiceUnavailable", None),
            ErrorKind::Unavailable
        );
        assert!(kind_of_code("InternalFailure", Some(500)).is_retryable());
    }

    #[test]
    fn credential_failures_are_permission_denied() {
        assert_eq!(
            kind_of_code("InvalidClientTokenId", Some(403)),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind_of_code("AccessDenied", Some(403)),
            ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn missing_credentials_say_where_they_were_looked_for() {
        use aws_sdk_sqs::operation::send_message::SendMessageError;
        let sdk: SdkError<SendMessageError, HttpResponse> =
            SdkError::construction_failure("an error occurred while loading credentials");

        let error = from_sdk(sdk, "sending to queue orders");

        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(!error.is_retryable());
        for place in [
            "sqs://KEY:SECRET@",
            "AWS_ACCESS_KEY_ID",
            "~/.aws/credentials",
        ] {
            assert!(error.to_string().contains(place), "{error} lacks {place}");
        }
    }

    #[test]
    fn other_construction_failures_keep_their_own_detail() {
        use aws_sdk_sqs::operation::send_message::SendMessageError;
        let sdk: SdkError<SendMessageError, HttpResponse> =
            SdkError::construction_failure("the queue URL is not a URL");

        let error = from_sdk(sdk, "sending to queue orders");

        assert!(error.to_string().contains("check the region"), "{error}");
    }

    #[test]
    fn stale_receipt_handles_are_expired_leases() {
        assert_eq!(
            kind_of_code("ReceiptHandleIsInvalid", Some(400)),
            ErrorKind::LeaseExpired
        );
        assert_eq!(
            kind_of_code("AWS.SimpleQueueService.MessageNotInflight", Some(400)),
            ErrorKind::LeaseExpired
        );
    }

    #[test]
    fn unknown_codes_fall_back_to_the_http_status() {
        assert_eq!(
            kind_of_code("SomethingNew", Some(503)),
            ErrorKind::Unavailable
        );
        assert_eq!(kind_of_code("SomethingNew", Some(400)), ErrorKind::Internal);
    }

    #[test]
    fn an_invalid_receipt_handle_in_a_settlement_is_an_expired_lease() {
        let error = from_entry(
            "InvalidParameterValue",
            Some("Value abc for parameter ReceiptHandle is invalid."),
            "changing visibility",
        );

        let mapped = in_settlement(error, "m-1");

        assert_eq!(mapped.kind(), ErrorKind::LeaseExpired);
        assert!(mapped.to_string().contains("m-1"), "{mapped}");
    }

    #[test]
    fn other_invalid_parameters_in_a_settlement_stay_invalid() {
        let error = from_entry(
            "InvalidParameterValue",
            Some("VisibilityTimeout is out of range"),
            "nack",
        );

        assert_eq!(
            in_settlement(error, "m-1").kind(),
            ErrorKind::InvalidArgument
        );
    }
}
