//! What a command's failure says, and the exit code it maps to.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use po_sync_aws::port::PortError;
use std::error::Error as StdError;

/// A command's failure. Every variant reads as one sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the operator gave (a PO id, a file, a missing resource) is wrong: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// An AWS call failed: exit code 1.
    #[error(transparent)]
    Aws(#[from] PortError),
    /// The command could not do its job (a move task failed, a copy stopped): exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// 2 for what the operator must correct, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Aws(_) | Error::Failed(_) => 1,
        }
    }
}

/// Maps an AWS SDK error to [`Error::Aws`], naming the operation (`sqs:SendMessage`).
pub(crate) fn aws<E>(operation: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    move |error| Error::Aws(port_error(operation, error))
}

/// [`PortError::from_sdk`], with a short summary for an answer that is not an AWS error at all (an emulator's
/// HTML error page): the status and content type, not the whole response.
pub(crate) fn port_error<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let content_type = error.raw_response().and_then(|r| r.headers().get("content-type")).map(str::to_owned);
    let named = error.code().is_some();
    let service = matches!(error, SdkError::ServiceError(_));
    let chain = causes(&error);
    let mut port = PortError::from_sdk(operation, error);
    if !service {
        // A timeout, a refused connection, no region: the causes in words, without the SDK's debug dump.
        port.summary = chain;
        if port.summary.contains("region") {
            port.summary.push_str(" (set AWS_REGION)");
        }
    } else if let (false, Some(status)) = (named, status) {
        let body = content_type.map(|c| format!(", a {c} body")).unwrap_or_default();
        port.summary = format!("HTTP {status} without an AWS error code{body}");
    }
    port
}

/// An error and its sources, `: `-separated, each said once.
fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
