//! The e-mail port: a finished MIME message handed to Amazon SES (`SendRawEmail`) in Lambda, kept in memory
//! in tests.

use crate::port::{Failure, PortError};
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::RawMessage;
use std::future::Future;
use std::sync::Mutex;

/// Sends one MIME message from `source`; the recipients are the message's own `To` header. Returns the
/// provider's message id.
pub trait EmailSender: Send + Sync {
    fn send_raw(&self, source: &str, mime: Vec<u8>) -> impl Future<Output = Result<String, PortError>> + Send;
}

const SEND_RAW_EMAIL: &str = "ses:SendRawEmail";

#[derive(Debug, Clone)]
pub struct SesEmailSender {
    client: aws_sdk_ses::Client,
}

impl SesEmailSender {
    pub fn new(client: aws_sdk_ses::Client) -> Self {
        SesEmailSender { client }
    }
}

impl EmailSender for SesEmailSender {
    async fn send_raw(&self, source: &str, mime: Vec<u8>) -> Result<String, PortError> {
        let raw = RawMessage::builder()
            .data(Blob::new(mime))
            .build()
            .map_err(|e| PortError::new(SEND_RAW_EMAIL, Failure::Permanent, e.to_string()))?;
        // Destinations come from the To header (SES reads them when the parameter is absent), so the envelope
        // and what recipients see cannot differ.
        let output = self
            .client
            .send_raw_email()
            .source(source)
            .raw_message(raw)
            .send()
            .await
            .map_err(|e| PortError::from_sdk(SEND_RAW_EMAIL, e))?;
        Ok(output.message_id().to_owned())
    }
}

/// Keeps every message "sent"; can be told to fail the next sends.
#[derive(Debug, Default)]
pub struct MemoryEmailSender {
    state: Mutex<(Vec<SentEmail>, Vec<Failure>)>,
}

/// One message handed to [`MemoryEmailSender`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub source: String,
    pub mime: Vec<u8>,
}

impl MemoryEmailSender {
    pub fn sent(&self) -> Vec<SentEmail> {
        self.state.lock().map(|s| s.0.clone()).unwrap_or_default()
    }

    pub fn fail_next(&self, count: usize, failure: Failure) {
        if let Ok(mut state) = self.state.lock() {
            state.1.extend(std::iter::repeat_n(failure, count));
        }
    }
}

impl EmailSender for MemoryEmailSender {
    async fn send_raw(&self, source: &str, mime: Vec<u8>) -> Result<String, PortError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| PortError::new(SEND_RAW_EMAIL, Failure::Permanent, "memory sender poisoned"))?;
        if !state.1.is_empty() {
            let failure = state.1.remove(0);
            return Err(PortError::new(SEND_RAW_EMAIL, failure, "injected failure"));
        }
        state.0.push(SentEmail { source: source.to_owned(), mime });
        Ok(format!("memory-{}", state.0.len()))
    }
}
