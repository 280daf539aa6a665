//! AppZen's answers to an upsert.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// AppZen's success answer: `{"uuid": "...", "status": "CREATED" | "UPDATED"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertResponse {
    pub uuid: String,
    pub status: String,
}

/// AppZen's error answer (`timestamp`, `status`, `error`, `message`); every field optional because an
/// error can also come from a proxy in front of AppZen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default, deserialize_with = "lenient_status")]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

fn lenient_status<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let raw = <Option<&RawValue>>::deserialize(deserializer)?;
    Ok(raw.and_then(|raw| raw.get().trim_matches('"').parse().ok()))
}

impl ErrorResponse {
    /// Reads whatever AppZen (or a proxy) answered; a body that is not AppZen's JSON becomes its message.
    pub fn from_body(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|_| ErrorResponse {
            message: Some(String::from_utf8_lossy(&body[..body.len().min(500)]).trim().to_owned())
                .filter(|m| !m.is_empty()),
            ..ErrorResponse::default()
        })
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.message) {
            (Some(error), Some(message)) => write!(f, "{error}: {message}"),
            (None, Some(message)) => f.write_str(message),
            (Some(error), None) => f.write_str(error),
            (None, None) => f.write_str("no message"),
        }
    }
}
