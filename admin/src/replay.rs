//! `replay <file>`: queues a saved Komet webhook body again, as ingest would have, as a NEW send: a new
//! version (received now) with its own deduplication id, so reconcile treats it as the PO's latest version.

use crate::Clients;
use crate::error::Error;
use crate::resources::{Resource, Resources};
use chrono::{DateTime, SecondsFormat, Utc};
use po_sync::komet::{PurchaseOrder, parse_webhook};
use po_sync::message::WebhookEnvelope;
use po_sync_aws::queue::{FifoMessage, FifoQueue, SqsFifoQueue};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// A webhook body read from disk and validated.
#[derive(Debug, Clone)]
pub struct SavedWebhook {
    pub bytes: Vec<u8>,
    pub po: PurchaseOrder,
}

/// Reads and validates a saved body; the error names the file and every field at fault. Nothing is sent.
pub fn read_webhook(path: &Path) -> Result<SavedWebhook, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    validate(&bytes, &path.display().to_string())
}

/// Validates a body as ingest does (`parse_webhook`); `source` names it in the error.
pub fn validate(bytes: &[u8], source: &str) -> Result<SavedWebhook, Error> {
    match parse_webhook(bytes) {
        Ok(po) => Ok(SavedWebhook { bytes: bytes.to_vec(), po }),
        Err(e) => Err(Error::Usage(format!("{source} is not a valid Komet webhook body, nothing was queued: {e}"))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub po_id: u64,
    pub po_number: String,
    /// The new version: `receivedAt` in milliseconds.
    pub version: i64,
    pub received_at: DateTime<Utc>,
    /// The envelope's `sendId`, also the SQS deduplication id: `replay-` and 32 random hex digits.
    pub send_id: String,
    pub sqs_message_id: String,
}

/// Queues `webhook` on the webhook queue as a new version received at `now` (truncated to milliseconds).
pub async fn replay(
    clients: &Clients,
    resources: &Resources,
    webhook: &SavedWebhook,
    now: DateTime<Utc>,
) -> Result<ReplayReport, Error> {
    let queue_url = resources.require(Resource::WebhookQueue)?;
    let received_at = DateTime::<Utc>::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let send_id = format!("replay-{:032x}", fastrand::u128(..));
    let envelope = WebhookEnvelope::new(webhook.po.clone(), &webhook.bytes, received_at).with_send_id(send_id.clone());
    let json = envelope.to_json();
    let message = FifoMessage::webhook(&envelope, json);
    let sqs_message_id = SqsFifoQueue::new(clients.sqs.clone(), queue_url).send(&message).await?;
    Ok(ReplayReport {
        po_id: envelope.po.id,
        po_number: envelope.po.po_number.as_str().to_owned(),
        version: envelope.version(),
        received_at,
        send_id,
        sqs_message_id,
    })
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "queued PO {} (id {}) as a new version", self.po_number, self.po_id)?;
        writeln!(
            f,
            "  version      {} (received {})",
            self.version,
            self.received_at.to_rfc3339_opts(SecondsFormat::Millis, true)
        )?;
        writeln!(f, "  send id      {}", self.send_id)?;
        writeln!(f, "  SQS message  {}", self.sqs_message_id)
    }
}
