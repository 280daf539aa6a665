//! Step 1: what the parked queue holds, read without taking it.

use super::*;

/// Receives every parked message (hidden for `visibility` seconds), reads it, and makes it visible again.
pub async fn snapshot(sqs: &aws_sdk_sqs::Client, parked_url: &str, visibility: i32) -> Result<Snapshot, Error> {
    let (visible, _in_flight) = counts(sqs, parked_url).await?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut receipts: Vec<String> = Vec::new();
    let mut snapshot = Snapshot::default();
    // SQS allows at most 20,000 in-flight messages on a FIFO queue.
    while seen.len() < 20_000 {
        let messages = receive(sqs, parked_url, visibility).await?;
        let mut new = 0;
        for message in &messages {
            let id = message.message_id().unwrap_or_default().to_owned();
            if !seen.insert(id.clone()) {
                continue;
            }
            new += 1;
            if let Some(receipt) = message.receipt_handle() {
                receipts.push(receipt.to_owned());
            }
            match read(message) {
                Ok(webhook) => snapshot.webhooks.push(webhook),
                Err(reason) => snapshot.unreadable.push(Unreadable { message_id: id, reason }),
            }
        }
        if new == 0 {
            break;
        }
    }
    release(sqs, parked_url, &receipts).await?;
    snapshot.not_seen = visible.saturating_sub(seen.len() as u64);
    Ok(snapshot)
}

pub(super) async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    visibility: i32,
) -> Result<Vec<Message>, Error> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        // A short long-poll: short polling samples only some SQS hosts and can answer "empty" too early.
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(aws("sqs:ReceiveMessage"))?;
    Ok(output.messages.unwrap_or_default())
}

/// Makes the received messages visible again (ChangeMessageVisibility 0, ten at a time).
pub(super) async fn release(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipts: &[String]) -> Result<(), Error> {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .map_err(|e| Error::Failed(format!("ChangeMessageVisibilityBatch entry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(aws("sqs:ChangeMessageVisibilityBatch"))?;
        if let Some(failed) = output.failed().first() {
            return Err(Error::Failed(format!(
                "could not make {} parked message(s) visible again after reading them ({}: {}); they come back \
                 by themselves within the visibility timeout, then run redrive again",
                output.failed().len(),
                failed.code(),
                failed.message().unwrap_or_default()
            )));
        }
    }
    Ok(())
}

pub(super) fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    message.attributes().and_then(|a| a.get(&name)).map(String::as_str).filter(|v| !v.is_empty())
}

/// What a parked webhook says of itself: an envelope, or the claim check of one stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedIdentity {
    pub po_id: u64,
    pub po_number: String,
    /// `receivedAt` in milliseconds.
    pub version: i64,
    /// The webhook's own deduplication id (its `sendId`, else its body digest).
    pub deduplication_id: String,
}

impl ParkedIdentity {
    pub fn of_envelope(envelope: &WebhookEnvelope) -> Self {
        ParkedIdentity {
            po_id: envelope.po.id,
            po_number: envelope.po.po_number.as_str().to_owned(),
            version: envelope.version(),
            deduplication_id: envelope.deduplication_id().to_owned(),
        }
    }

    pub fn of_ref(pointer: &BodyRef) -> Self {
        ParkedIdentity {
            po_id: pointer.po_id,
            po_number: pointer.po_number.clone(),
            version: pointer.version(),
            deduplication_id: pointer.deduplication_id().to_owned(),
        }
    }
}

/// Reads a parked body: a webhook envelope or its claim check; anything else (a notification event included)
/// is unreadable here.
pub fn parked_identity(body: &str) -> Result<ParkedIdentity, String> {
    match QueueMessage::from_json(body).map_err(|e| e.to_string())? {
        QueueMessage::Webhook(envelope) => Ok(ParkedIdentity::of_envelope(&envelope)),
        QueueMessage::WebhookRef(pointer) => Ok(ParkedIdentity::of_ref(&pointer)),
        QueueMessage::Notification(_) => Err("a notification event, not a webhook".to_owned()),
    }
}

pub(super) fn read(message: &Message) -> Result<ParkedWebhook, String> {
    let identity = parked_identity(message.body().unwrap_or_default())?;
    Ok(ParkedWebhook {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        group_id: system_attribute(message, MessageSystemAttributeName::MessageGroupId)
            .map_or_else(|| identity.po_id.to_string(), str::to_owned),
        po_id: identity.po_id,
        po_number: identity.po_number,
        version: identity.version,
    })
}
