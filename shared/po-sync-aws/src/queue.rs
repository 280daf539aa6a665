//! The FIFO queue port: every message po-sync sends (ingest's webhooks, reconcile's notifications, notify's
//! parked dead letters) is a [`FifoMessage`] sent through a [`FifoQueue`]: SQS in Lambda, memory in tests.

use crate::port::{Failure, PortError};
use aws_sdk_sqs::types::MessageAttributeValue;
use po_sync::message::{BodyRef, NotificationEvent, WebhookEnvelope, sqs_accepts};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// One SQS FIFO message, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoMessage {
    pub body: String,
    /// Messages of one group are delivered in order, one at a time (po-sync: the Komet PO id).
    pub group_id: String,
    /// A second message with the same id within SQS's five-minute window is dropped.
    pub deduplication_id: String,
    /// String message attributes, so a queue can be inspected without reading bodies.
    pub attributes: Vec<(&'static str, String)>,
}

impl FifoMessage {
    pub fn new(body: String, group_id: impl Into<String>, deduplication_id: impl Into<String>) -> Self {
        FifoMessage {
            body,
            group_id: group_id.into(),
            deduplication_id: deduplication_id.into(),
            attributes: Vec::new(),
        }
    }

    pub fn with_attribute(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }

    /// A webhook for `webhooks.fifo` (ingest, and the operator's replay): grouped by PO so each PO's versions
    /// are processed in order, deduplicated by the send (never by the body: a resend is a new version), and
    /// labelled with the PO number and arrival time for anyone inspecting the queue.
    pub fn webhook(envelope: &WebhookEnvelope, envelope_json: String) -> Self {
        FifoMessage::new(envelope_json, envelope.po.id.to_string(), envelope.deduplication_id())
            .with_attribute(PO_NUMBER_ATTRIBUTE, sqs_text(&envelope.po.po_number))
            .with_attribute(
                RECEIVED_AT_ATTRIBUTE,
                envelope.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
    }

    /// A webhook's claim check for `webhooks.fifo` (a PO too large for one SQS message, stored in the bucket):
    /// the same group, deduplication id and attributes as [`FifoMessage::webhook`] would give its envelope.
    pub fn webhook_ref(pointer: &BodyRef, pointer_json: String) -> Self {
        FifoMessage::new(pointer_json, pointer.po_id.to_string(), pointer.deduplication_id())
            .with_attribute(PO_NUMBER_ATTRIBUTE, sqs_text(&pointer.po_number))
            .with_attribute(
                RECEIVED_AT_ATTRIBUTE,
                pointer.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
    }

    /// A notification event for `notifications.fifo`: serialised once, grouped per PO, and deduplicated by
    /// its own digest, so a redelivered record that raises the same event again is not mailed twice within
    /// SQS's five-minute window.
    pub fn notification(event: &NotificationEvent) -> Self {
        FifoMessage::new(event.to_json(), event.group_id(), event.deduplication_id())
    }

    /// The bytes SQS counts against its 1 MiB limit: body, attribute names and values, and their types.
    pub fn size(&self) -> usize {
        self.body.len()
            + self.attributes.iter().map(|(name, value)| name.len() + value.len() + "String".len()).sum::<usize>()
    }
}

/// The largest SQS message (body and attributes); SQS refuses anything larger.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

pub const PO_NUMBER_ATTRIBUTE: &str = "poNumber";
pub const RECEIVED_AT_ATTRIBUTE: &str = "receivedAt";

/// SQS message attributes allow only XML characters; anything else becomes U+FFFD so one odd PO number cannot
/// make SQS refuse the message forever.
pub fn sqs_text(text: &str) -> String {
    text.chars().map(|c| if sqs_accepts(c) { c } else { '\u{FFFD}' }).collect()
}

/// Sends a message to one FIFO queue and returns its message id.
pub trait FifoQueue: Send + Sync {
    fn send(&self, message: &FifoMessage) -> impl Future<Output = Result<String, PortError>> + Send;
}

impl<Q: FifoQueue> FifoQueue for &Q {
    fn send(&self, message: &FifoMessage) -> impl Future<Output = Result<String, PortError>> + Send {
        (**self).send(message)
    }
}

/// The same message on several queues, one per destination (ingest, with `DESTINATIONS` naming more than one):
/// sent to each in order, accepted only once every queue has it, so no destination misses a webhook Komet was
/// told is safe. When a later queue fails, the earlier ones keep their copy; Komet's retry carries the same
/// deduplication id, so SQS drops it there within five minutes, and the ledger's duplicate rule after that.
#[derive(Debug, Clone)]
pub struct FanOutQueue<Q> {
    queues: Vec<Q>,
}

impl<Q: FifoQueue> FanOutQueue<Q> {
    /// `queues` in the order `DESTINATIONS` names them; at least one.
    pub fn new(queues: Vec<Q>) -> Self {
        FanOutQueue { queues }
    }

    pub fn queues(&self) -> &[Q] {
        &self.queues
    }
}

impl<Q: FifoQueue> FifoQueue for FanOutQueue<Q> {
    /// The first queue's message id (the one ingest logs).
    async fn send(&self, message: &FifoMessage) -> Result<String, PortError> {
        let mut first_id = None;
        for queue in &self.queues {
            let id = queue.send(message).await?;
            first_id.get_or_insert(id);
        }
        first_id.ok_or_else(|| PortError::new(SEND_MESSAGE, Failure::Permanent, "no queue is configured"))
    }
}

/// One SQS FIFO queue.
#[derive(Debug, Clone)]
pub struct SqsFifoQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsFifoQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsFifoQueue { client, queue_url: queue_url.into() }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

const SEND_MESSAGE: &str = "sqs:SendMessage";

impl FifoQueue for SqsFifoQueue {
    async fn send(&self, message: &FifoMessage) -> Result<String, PortError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&message.body)
            .message_group_id(&message.group_id)
            .message_deduplication_id(&message.deduplication_id);
        for (name, value) in &message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| PortError::new(SEND_MESSAGE, Failure::Permanent, format!("attribute {name}: {e}")))?;
            request = request.message_attributes(*name, value);
        }
        let output = request.send().await.map_err(|e| PortError::from_sdk(SEND_MESSAGE, e))?;
        Ok(output.message_id().unwrap_or_default().to_owned())
    }
}

/// An in-memory FIFO queue for tests and benchmarks. It deduplicates like SQS (by deduplication id), and
/// can be told to fail the next sends, transiently or permanently.
#[derive(Debug, Default)]
pub struct MemoryFifoQueue {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    messages: Vec<FifoMessage>,
    ids: HashMap<String, String>,
    failures: Vec<Failure>,
}

impl MemoryFifoQueue {
    /// The messages accepted so far, oldest first (a deduplicated send is not repeated).
    pub fn messages(&self) -> Vec<FifoMessage> {
        self.state.lock().map(|s| s.messages.clone()).unwrap_or_default()
    }

    /// The next `count` sends fail with `failure`.
    pub fn fail_next(&self, count: usize, failure: Failure) {
        if let Ok(mut state) = self.state.lock() {
            state.failures.extend(std::iter::repeat_n(failure, count));
        }
    }
}

impl FifoQueue for MemoryFifoQueue {
    async fn send(&self, message: &FifoMessage) -> Result<String, PortError> {
        let mut state =
            self.state.lock().map_err(|_| PortError::new(SEND_MESSAGE, Failure::Permanent, "memory queue poisoned"))?;
        if !state.failures.is_empty() {
            let failure = state.failures.remove(0);
            return Err(PortError::new(SEND_MESSAGE, failure, "injected failure"));
        }
        if let Some(id) = state.ids.get(&message.deduplication_id) {
            return Ok(id.clone());
        }
        let id = format!("memory-{}", state.messages.len() + 1);
        state.messages.push(message.clone());
        state.ids.insert(message.deduplication_id.clone(), id.clone());
        Ok(id)
    }
}

/// A record reconcile hands back, and how long SQS should wait before delivering it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postponed {
    pub message_id: String,
    pub receipt_handle: String,
    pub delay: Duration,
}

/// Sets when handed-back records come back (`ChangeMessageVisibility` on the queue the batch came from), so a
/// record that keeps failing waits longer each time instead of the queue's fixed visibility timeout.
pub trait Redelivery: Send + Sync {
    fn postpone(&self, records: &[Postponed]) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The SQS queue a function's event source reads.
#[derive(Debug, Clone)]
pub struct SqsRedelivery {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRedelivery {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsRedelivery { client, queue_url: queue_url.into() }
    }
}

const CHANGE_VISIBILITY: &str = "sqs:ChangeMessageVisibilityBatch";

impl Redelivery for SqsRedelivery {
    async fn postpone(&self, records: &[Postponed]) -> Result<(), PortError> {
        // A batch holds at most 10 records, as many as one ChangeMessageVisibilityBatch call takes.
        for chunk in records.chunks(10) {
            let mut request = self.client.change_message_visibility_batch().queue_url(&self.queue_url);
            for (index, record) in chunk.iter().enumerate() {
                let entry = aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(&record.receipt_handle)
                    .visibility_timeout(record.delay.as_secs().min(i32::MAX as u64) as i32)
                    .build()
                    .map_err(|e| PortError::new(CHANGE_VISIBILITY, Failure::Permanent, e.to_string()))?;
                request = request.entries(entry);
            }
            let output = request.send().await.map_err(|e| PortError::from_sdk(CHANGE_VISIBILITY, e))?;
            if let Some(failed) = output.failed().first() {
                return Err(PortError::new(
                    CHANGE_VISIBILITY,
                    Failure::Transient,
                    format!("{} of {} entries failed, first: {}", output.failed().len(), chunk.len(), failed.code()),
                ));
            }
        }
        Ok(())
    }
}

/// Records what would be postponed (tests); can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryRedelivery {
    state: Mutex<(Vec<Postponed>, Vec<Failure>)>,
}

impl MemoryRedelivery {
    /// Every record postponed so far, in order.
    pub fn postponed(&self) -> Vec<Postponed> {
        self.state.lock().map(|s| s.0.clone()).unwrap_or_default()
    }

    pub fn fail_next(&self, count: usize, failure: Failure) {
        if let Ok(mut state) = self.state.lock() {
            state.1.extend(std::iter::repeat_n(failure, count));
        }
    }
}

impl Redelivery for MemoryRedelivery {
    async fn postpone(&self, records: &[Postponed]) -> Result<(), PortError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| PortError::new(CHANGE_VISIBILITY, Failure::Permanent, "memory redelivery poisoned"))?;
        if !state.1.is_empty() {
            let failure = state.1.remove(0);
            return Err(PortError::new(CHANGE_VISIBILITY, failure, "injected failure"));
        }
        state.0.extend_from_slice(records);
        Ok(())
    }
}

impl<R: Redelivery> Redelivery for &R {
    fn postpone(&self, records: &[Postponed]) -> impl Future<Output = Result<(), PortError>> + Send {
        (**self).postpone(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_queue_deduplicates_like_sqs_and_fails_on_demand() {
        let queue = MemoryFifoQueue::default();
        let a = FifoMessage::new("a".into(), "g", "d1");
        let first = queue.send(&a).await.unwrap();
        assert_eq!(queue.send(&a).await.unwrap(), first, "same deduplication id, same message");
        queue.send(&FifoMessage::new("a".into(), "g", "d2")).await.unwrap();
        assert_eq!(queue.messages().len(), 2);
        queue.fail_next(1, Failure::Transient);
        assert!(queue.send(&a).await.unwrap_err().is_transient());
        assert_eq!(queue.send(&a).await.unwrap(), first);
    }

    #[tokio::test]
    async fn a_fan_out_is_accepted_only_once_every_queue_has_the_message() {
        let (appzen, exsited) = (MemoryFifoQueue::default(), MemoryFifoQueue::default());
        let both = FanOutQueue::new(vec![&appzen, &exsited]);
        let message = FifoMessage::new("po".into(), "g", "d1");
        let first = both.send(&message).await.unwrap();
        assert_eq!(appzen.messages().len(), 1);
        assert_eq!(exsited.messages().len(), 1);
        assert_eq!(appzen.send(&message).await.unwrap(), first, "the first queue's id is the one answered");

        exsited.fail_next(1, Failure::Transient);
        let second = FifoMessage::new("po v2".into(), "g", "d2");
        assert!(both.send(&second).await.unwrap_err().is_transient(), "one queue failing fails the send");
        assert_eq!(appzen.messages().len(), 2, "the earlier queue keeps its copy");
        both.send(&second).await.unwrap();
        assert_eq!(appzen.messages().len(), 2, "the retry is deduplicated where it already arrived");
        assert_eq!(exsited.messages().len(), 2);

        let none = FanOutQueue::<MemoryFifoQueue>::new(Vec::new());
        assert!(!none.send(&message).await.unwrap_err().is_transient());
    }
}
