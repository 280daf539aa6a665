//! What every port's error says: which operation failed, whether trying again later may help, and why
//! (the original error is kept as the `source`, never flattened into a string).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::error::Error as StdError;

/// Whether a failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Failure {
    /// Throttling, a timeout, a 5xx, a connection error: SQS redelivers the record later.
    Transient,
    /// The request itself is wrong (no permission, a missing queue or table, an unverified sender): a person
    /// must fix the setup; retrying only moves the record to its dead-letter queue.
    Permanent,
}

/// A port's failure.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({failure}): {summary}")]
pub struct PortError {
    /// The SDK operation, such as `sqs:SendMessage`.
    pub operation: &'static str,
    pub failure: Failure,
    /// The service's error code and message (`ThrottlingException: Rate exceeded`), or the error's text.
    pub summary: String,
    #[source]
    pub source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl PortError {
    pub fn new(operation: &'static str, failure: Failure, summary: impl Into<String>) -> Self {
        PortError { operation, failure, summary: summary.into(), source: None }
    }

    pub fn is_transient(&self) -> bool {
        self.failure == Failure::Transient
    }

    /// Classifies an AWS SDK error: the kind of error first (a timeout or a dropped connection is transient),
    /// then the service's error code, then the HTTP status (5xx is transient).
    pub fn from_sdk<E>(operation: &'static str, error: SdkError<E, Response>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code = error.code().map(str::to_owned);
        let summary = match (&code, error.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            // The SDK error's Display names only the operation; the chain says why.
            _ => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
        };
        let failure = match &error {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Failure::Transient,
            _ if code.as_deref().is_some_and(is_transient_code) => Failure::Transient,
            _ if matches!(status, Some(500..=599)) => Failure::Transient,
            _ => Failure::Permanent,
        };
        PortError { operation, failure, summary, source: Some(Box::new(error)) }
    }
}

/// Error codes AWS services use for "not now".
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalFailure"
            | "InternalServerError"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "KMS.ThrottlingException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    #[derive(Debug, thiserror::Error)]
    #[error("service error")]
    struct ServiceError(ErrorMetadata);

    impl ProvideErrorMetadata for ServiceError {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn service(code: &str, status: u16) -> SdkError<ServiceError, Response> {
        SdkError::service_error(
            ServiceError(ErrorMetadata::builder().code(code).message("m").build()),
            Response::new(status.try_into().unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn throttling_timeouts_and_5xx_are_transient_and_refusals_permanent() {
        let classify = |code, status| PortError::from_sdk("ses:SendRawEmail", service(code, status));
        let throttled = classify("Throttling", 400);
        assert_eq!((throttled.failure, throttled.summary.as_str()), (Failure::Transient, "Throttling: m"));
        assert_eq!(throttled.to_string(), "ses:SendRawEmail failed (transient): Throttling: m");
        assert!(throttled.source.is_some(), "the SDK error is kept as the source");
        for (code, status) in [("InternalFailure", 500), ("ServiceUnavailable", 503), ("Whatever", 502)] {
            assert_eq!(classify(code, status).failure, Failure::Transient, "{code}");
        }
        for (code, status) in [("MessageRejected", 400), ("AccessDenied", 403), ("QueueDoesNotExist", 400)] {
            assert_eq!(classify(code, status).failure, Failure::Permanent, "{code}");
        }
        let timeout: SdkError<ServiceError, Response> = SdkError::timeout_error("operation timed out");
        assert!(PortError::from_sdk("sqs:SendMessage", timeout).is_transient());
    }
}
