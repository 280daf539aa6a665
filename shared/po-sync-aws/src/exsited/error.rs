//! What can go wrong with a request to Exsited, and which outage (if any) each failure is.

use po_sync::outage::OutageCause;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One of Exsited's errors: `{"errors":[{"code","message"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExsitedErrorItem {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) errors: Vec<ExsitedErrorItem>,
}

/// Why a request to Exsited came to nothing; `is_transient` says whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExsitedError {
    #[error("Exsited did not answer: {0}")]
    Unreachable(String),
    #[error("Exsited answered HTTP {status}: {}", describe(.errors))]
    Refused { status: u16, errors: Vec<ExsitedErrorItem>, retry_after: Option<Duration> },
    #[error("Exsited's answer (HTTP {status}) is not what its API documents: {reason}")]
    Unreadable { status: u16, reason: String },
    /// The token endpoint refused the client credentials. OAuth servers answer a wrong client secret with 400
    /// `invalid_client` as often as with 401: either way no PO can be sent until a person fixes the secret.
    #[error("Exsited's token endpoint refused the client credentials (HTTP {status}): {}", describe(.errors))]
    CredentialsRefused { status: u16, errors: Vec<ExsitedErrorItem> },
}

impl ExsitedError {
    /// A timeout, a refused connection, 408, 429 or a 5xx: the request may succeed later. Anything else needs a
    /// fix.
    pub fn is_transient(&self) -> bool {
        matches!(self.outage_cause(), Some(OutageCause::Throttled | OutageCause::Unavailable))
    }

    /// The outage this failure is (Exsited gave no verdict on the PO), or `None` for Exsited's verdict on the PO
    /// (another 4xx, or an answer that is not what its API documents):
    /// - credentials: 401 (the client already fetched a new token once) or 403, also from the token endpoint;
    /// - endpoint: a redirect, 404, 405, 407;
    /// - throttled: 429;
    /// - unavailable: 408, 5xx, a timeout or a connection error, and a token the shared store cannot give
    ///   (the store failed, or another client is renewing it): all [`ExsitedError::Unreachable`].
    pub fn outage_cause(&self) -> Option<OutageCause> {
        match self {
            ExsitedError::Unreachable(_) => Some(OutageCause::Unavailable),
            ExsitedError::Refused { status, .. } => po_sync::outage::classify_exsited_status(*status),
            ExsitedError::CredentialsRefused { .. } => Some(OutageCause::Credentials),
            ExsitedError::Unreadable { .. } => None,
        }
    }

    /// Exsited's HTTP status, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ExsitedError::Refused { status, .. }
            | ExsitedError::Unreadable { status, .. }
            | ExsitedError::CredentialsRefused { status, .. } => Some(*status),
            ExsitedError::Unreachable(_) => None,
        }
    }

    /// The failure in a few words, as an outage e-mail names the last one: `HTTP 401`, `timeout`.
    pub fn failure(&self) -> String {
        match self {
            ExsitedError::Unreachable(reason) => reason.clone(),
            ExsitedError::Refused { status, .. } | ExsitedError::Unreadable { status, .. } => format!("HTTP {status}"),
            ExsitedError::CredentialsRefused { status, .. } => format!("HTTP {status} from the token endpoint"),
        }
    }
}

fn describe(errors: &[ExsitedErrorItem]) -> String {
    if errors.is_empty() {
        return "no error detail".to_owned();
    }
    let each = errors.iter().map(|e| match (&e.code, &e.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.clone(),
        (Some(code), None) => code.clone(),
        (None, None) => "(empty error)".to_owned(),
    });
    po_sync::text::log_field(&each.collect::<Vec<_>>().join("; ")).into_owned()
}
