//! The claim check: what ingest queues in place of an envelope too large for one SQS message.

use super::{
    BODY_KEY_PREFIX, BODY_REF_SCHEMA_VERSION, BODY_REF_TYPE, BodyRefType, MessageError, WebhookEnvelope, check_header,
    key_segment, to_json,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A claim check: the message ingest queues instead of a [`WebhookEnvelope`] too large for one SQS message.
/// The envelope itself (its JSON, exactly what the message body would have been) is stored at `key` in `bucket`
/// before this is sent. It carries the envelope's identity, so the queue's group, deduplication and version
/// ordering, notify's e-mail and the redrive report work without fetching the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BodyRef {
    #[serde(rename = "type")]
    pub message_type: BodyRefType,
    pub schema_version: u32,
    pub po_id: u64,
    pub po_number: String,
    /// The envelope's `receivedAt`: the PO version's order.
    pub received_at: DateTime<Utc>,
    pub body_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_id: Option<String>,
    pub bucket: String,
    pub key: String,
}

impl BodyRef {
    /// The claim check for `envelope`, stored at `key` in `bucket`.
    pub fn of(envelope: &WebhookEnvelope, bucket: impl Into<String>, key: impl Into<String>) -> Self {
        BodyRef {
            message_type: BodyRefType::PoReconciliationRef,
            schema_version: BODY_REF_SCHEMA_VERSION,
            po_id: envelope.po.id,
            po_number: envelope.po.po_number.as_str().to_owned(),
            received_at: envelope.received_at,
            body_sha256: envelope.body_sha256.clone(),
            send_id: envelope.send_id.clone(),
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// The version the stored envelope carries: `receivedAt` in milliseconds.
    pub fn version(&self) -> i64 {
        self.received_at.timestamp_millis()
    }

    /// The SQS FIFO deduplication id, the same as the envelope's: the send, else the body.
    pub fn deduplication_id(&self) -> &str {
        self.send_id.as_deref().unwrap_or(&self.body_sha256)
    }

    /// `s3://bucket/key`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads a claim check from an SQS body; a wrong type or version is refused, not guessed at.
    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<BodyRef>(json) {
            Ok(pointer) if pointer.schema_version == BODY_REF_SCHEMA_VERSION => Ok(pointer),
            Ok(_) => {
                check_header(json, BODY_REF_TYPE, BODY_REF_SCHEMA_VERSION)?;
                Err(MessageError::Malformed("unexpected header".to_owned()))
            }
            Err(e) => {
                check_header(json, BODY_REF_TYPE, BODY_REF_SCHEMA_VERSION)?;
                Err(MessageError::Malformed(e.to_string()))
            }
        }
    }

    /// Whether `envelope` is the one this claim check names: the same PO and the same body. (`receivedAt` is
    /// not compared: a retry of the same request inside AWS stores the same body again under the same key,
    /// with its own arrival time, while SQS keeps the first claim check; the claim check's time is the version.)
    pub fn names(&self, envelope: &WebhookEnvelope) -> bool {
        envelope.po.id == self.po_id && envelope.body_sha256 == self.body_sha256
    }
}

/// The key of a stored envelope: `bodies/<PO id>/<deduplication id>.json` (the send's id, else the body's
/// digest, written as [`key_segment`] writes it).
pub fn body_key(po_id: u64, deduplication_id: &str) -> String {
    format!("{BODY_KEY_PREFIX}{po_id}/{}.json", key_segment(deduplication_id))
}
