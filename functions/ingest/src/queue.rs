//! Where accepted webhooks go: SQS FIFO in Lambda, memory in tests and benchmarks.

use aws_sdk_sqs::types::MessageAttributeValue;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// One SQS FIFO message, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The `WebhookEnvelope` as JSON.
    pub body: String,
    /// Komet's PO id: one PO's updates are processed in order.
    pub group_id: String,
    /// SHA-256 of the body as Komet sent it: a resend within SQS's 5-minute window is dropped.
    pub deduplication_id: String,
    /// Message attributes, so the queue can be inspected without reading bodies.
    pub po_number: String,
    pub received_at: String,
}

/// The queue could not take the message; Komet should try again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

/// Sends a message and returns its message id.
pub trait Queue: Send + Sync {
    fn send(&self, message: &OutgoingMessage) -> impl Future<Output = Result<String, QueueError>> + Send;
}

/// The SQS FIFO queue at `QUEUE_URL`.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsQueue { client, queue_url: queue_url.into() }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError(format!("message attribute: {e}")))
}

impl Queue for SqsQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        let output = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&message.body)
            .message_group_id(&message.group_id)
            .message_deduplication_id(&message.deduplication_id)
            .message_attributes("poNumber", string_attribute(&message.po_number)?)
            .message_attributes("receivedAt", string_attribute(&message.received_at)?)
            .send()
            .await
            // The SDK error's Display names only the operation; the context says why.
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(output.message_id().unwrap_or_default().to_owned())
    }
}

/// An in-memory FIFO queue for tests and benchmarks: it deduplicates like SQS (by deduplication id), so
/// it stays small however often the same webhook is sent.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    messages: Mutex<Vec<OutgoingMessage>>,
    ids: Mutex<HashMap<String, String>>,
}

impl MemoryQueue {
    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<OutgoingMessage> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Queue for MemoryQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        let mut ids = self.ids.lock().map_err(|_| QueueError("memory queue poisoned".to_owned()))?;
        if let Some(id) = ids.get(&message.deduplication_id) {
            return Ok(id.clone());
        }
        let mut messages = self.messages.lock().map_err(|_| QueueError("memory queue poisoned".to_owned()))?;
        let id = format!("memory-{}", messages.len() + 1);
        messages.push(message.clone());
        ids.insert(message.deduplication_id.clone(), id.clone());
        Ok(id)
    }
}
