//! The messages between the functions, versioned so a deploy that changes them can tell old from new.
//!
//! - [`WebhookEnvelope`]: ingest → `webhooks.fifo` → reconcile (and, after `maxReceiveCount`, → the DLQ → notify).
//! - [`NotificationEvent`]: reconcile → `notifications.fifo` → notify (and notify builds the same event
//!   itself for a dead-lettered envelope).
//! - [`BodyRef`]: a claim check: ingest → `webhooks.fifo` → reconcile in place of an envelope too large for one
//!   SQS message, pointing at the envelope stored in the bucket ([`body_key`]).
//! - [`KeptWebhook`]: where every acknowledged webhook body is kept in the bucket ([`kept_key`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod claim_check;
mod envelope;
mod kept;
mod notification;

pub use claim_check::{BodyRef, body_key};
pub use envelope::WebhookEnvelope;
pub use kept::{KeptWebhook, WEBHOOK_ARCHIVE_PREFIX, kept_key, kept_prefix};
pub use notification::{
    DestinationAnswer, INVOICE_LINK_LIFETIME_HOURS, InvoiceLink, NotificationDetail, NotificationEvent,
    NotificationKind, Omitted, OperatorCancellation, PoIdentity, WebhookFacts,
};

/// The envelope version this build writes and reads.
pub const ENVELOPE_SCHEMA_VERSION: u32 = 1;
/// The notification event version this build writes and reads (2: a header plus a per-kind detail).
pub const NOTIFICATION_SCHEMA_VERSION: u32 = 2;

/// The claim check version this build writes and reads.
pub const BODY_REF_SCHEMA_VERSION: u32 = 1;

/// Tells the message types apart when they share a queue (notify reads all three).
pub const ENVELOPE_TYPE: &str = "komet.po_reconciliation";
pub const NOTIFICATION_TYPE: &str = "po_sync.notification";
pub const BODY_REF_TYPE: &str = "komet.po_reconciliation.ref";

/// Where ingest stores the envelopes too large for one SQS message (the bucket's lifecycle rule expires them).
pub const BODY_KEY_PREFIX: &str = "bodies/";

/// The `type` of a [`WebhookEnvelope`]. A one-value type, so reading any other message as an envelope fails at
/// its first member (po-sync always writes `type` first) instead of after the whole body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EnvelopeType {
    #[default]
    #[serde(rename = "komet.po_reconciliation")]
    PoReconciliation,
}

/// The `type` of a [`BodyRef`]; see [`EnvelopeType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BodyRefType {
    #[default]
    #[serde(rename = "komet.po_reconciliation.ref")]
    PoReconciliationRef,
}

/// The `type` of a [`NotificationEvent`]; see [`EnvelopeType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NotificationType {
    #[default]
    #[serde(rename = "po_sync.notification")]
    Notification,
}

/// Lowercase hex SHA-256, as used for the body digest and deduplication ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An id as one segment of an S3 key: characters other than ASCII letters, digits, `.` and `-` are written
/// `_XX` (hex), so two ids never share a key (API Gateway's request ids are base64, with `/`, `+` and `=`); an
/// id too long for a key, empty or only dots is replaced by its digest.
pub(crate) fn key_segment(id: &str) -> String {
    let mut segment = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            segment.push(byte as char);
        } else {
            segment.push_str(&format!("_{byte:02X}"));
        }
    }
    if segment.len() > 200 || segment.is_empty() || segment.chars().all(|c| c == '.') {
        segment = sha256_hex(id.as_bytes());
    }
    segment
}

/// The JSON of a po-sync message. Every message is plain data (text, whole numbers, timestamps, and amounts as
/// their own digits), which serde_json always writes: its error is for maps with non-text keys and for
/// `Serialize` impls that refuse, and no po-sync type has either. So this cannot fail, and says so in its type.
///
/// The JSON is also a valid SQS message body: SQS accepts only #x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD and
/// #x10000–#x10FFFF. serde_json escapes every control character; U+FFFE and U+FFFF, valid in JSON text, are
/// escaped here (`\ufffe`, `\uffff`), so they read back as themselves and a PO carrying them is queued like any
/// other.
pub fn to_json<T: Serialize>(message: &T) -> String {
    to_json_with_capacity(message, 128)
}

/// [`to_json`] into a buffer of `capacity` bytes to begin with: a large document (AppZen's body of a 1 MB PO is
/// about 5 MB) is then not copied at every doubling of its buffer.
pub fn to_json_with_capacity<T: Serialize>(message: &T, capacity: usize) -> String {
    let mut buffer = Vec::with_capacity(capacity);
    let written = serde_json::to_writer(&mut buffer, message)
        // serde_json writes only UTF-8.
        .and_then(|()| String::from_utf8(buffer).map_err(serde::ser::Error::custom));
    // Substring searches, not a `char` pattern: these scan the bytes with SIMD instead of decoding every char.
    match written {
        Ok(json) if json.contains("\u{FFFE}") || json.contains("\u{FFFF}") => {
            json.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
        }
        Ok(json) => json,
        // Unreachable (see above); a panic is reported by the runtime and the record comes back unharmed.
        Err(error) => panic!("a po-sync message could not be written as JSON: {error}"),
    }
}

/// Whether SQS accepts `c` in a message body.
pub fn sqs_accepts(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not a po-sync message: {0}")]
    Malformed(String),
    #[error("message type {found:?} where {expected:?} was expected")]
    WrongType { expected: &'static str, found: String },
    #[error("schema version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error(
        "a message of unknown type {0:?}; po-sync reads {NOTIFICATION_TYPE:?}, {ENVELOPE_TYPE:?} and {BODY_REF_TYPE:?}"
    )]
    UnknownType(String),
}

/// Just enough of a message to route it before reading it whole.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(rename = "type")]
    message_type: Option<String>,
    schema_version: Option<u32>,
}

pub(crate) fn check_header(json: &str, expected: &'static str, supported: u32) -> Result<(), MessageError> {
    let header: Header = serde_json::from_str(json).map_err(|e| MessageError::Malformed(e.to_string()))?;
    match (header.message_type, header.schema_version) {
        (Some(found), _) if found != expected => Err(MessageError::WrongType { expected, found }),
        (None, _) => Err(MessageError::Malformed("no \"type\"".to_owned())),
        (_, Some(found)) if found != supported => Err(MessageError::UnsupportedVersion { found, supported }),
        (_, None) => Err(MessageError::Malformed("no \"schemaVersion\"".to_owned())),
        _ => Ok(()),
    }
}

/// The type a message on a po-sync queue says it is, if any.
pub fn message_type(json: &str) -> Option<String> {
    serde_json::from_str::<Header>(json).ok().and_then(|h| h.message_type)
}

/// A message on a po-sync queue: a notification event, a webhook, or a webhook's claim check.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueMessage {
    Notification(NotificationEvent),
    Webhook(WebhookEnvelope),
    /// A webhook too large for one SQS message, stored in the bucket.
    WebhookRef(BodyRef),
}

impl QueueMessage {
    /// Reads a queue body once. Each candidate type fails at the first member (`type`) when it is another
    /// one, so the body is read whole only once; only an unreadable body is looked at again, to say why.
    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        if let Ok(event) = serde_json::from_str::<NotificationEvent>(json)
            && event.schema_version == NOTIFICATION_SCHEMA_VERSION
        {
            return Ok(QueueMessage::Notification(event));
        }
        if let Ok(envelope) = serde_json::from_str::<WebhookEnvelope>(json)
            && envelope.schema_version == ENVELOPE_SCHEMA_VERSION
        {
            return Ok(QueueMessage::Webhook(envelope));
        }
        if let Ok(pointer) = serde_json::from_str::<BodyRef>(json)
            && pointer.schema_version == BODY_REF_SCHEMA_VERSION
        {
            return Ok(QueueMessage::WebhookRef(pointer));
        }
        match message_type(json).as_deref() {
            Some(NOTIFICATION_TYPE) => NotificationEvent::from_json(json).map(QueueMessage::Notification),
            Some(ENVELOPE_TYPE) => WebhookEnvelope::from_json(json).map(QueueMessage::Webhook),
            Some(BODY_REF_TYPE) => BodyRef::from_json(json).map(QueueMessage::WebhookRef),
            Some(other) => Err(MessageError::UnknownType(other.to_owned())),
            None => Err(MessageError::Malformed("not JSON with a \"type\"".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text at all, from the whole Unicode range, leaves as a body SQS accepts and reads back as itself.
        #[test]
        fn any_text_leaves_as_a_body_sqs_accepts(text in proptest::collection::vec(proptest::char::any(), 0..64)) {
            let text: String = text.into_iter().collect();
            let event = NotificationEvent::poison(text.clone(), text.clone());
            let json = event.to_json();
            proptest::prop_assert!(json.chars().all(sqs_accepts), "{json:?}");
            proptest::prop_assert_eq!(NotificationEvent::from_json(&json).unwrap(), event);
        }
    }

    #[test]
    fn the_characters_sqs_refuses_are_escaped() {
        for c in ['\u{0}', '\u{8}', '\u{b}', '\u{1f}', '\u{fffe}', '\u{ffff}'] {
            assert!(!sqs_accepts(c), "{c:?}");
            let event = NotificationEvent::poison(format!("P{c}1"), "m");
            let json = event.to_json();
            assert!(json.chars().all(sqs_accepts), "{json:?}");
            assert_eq!(NotificationEvent::from_json(&json).unwrap(), event);
        }
        for c in ['\t', '\n', '\r', ' ', '\u{d7ff}', '\u{e000}', '\u{fffd}', '\u{10000}', '\u{10ffff}'] {
            assert!(sqs_accepts(c), "{c:?}");
        }
    }

    #[test]
    fn the_digest_is_lowercase_hex_sha256() {
        // FIPS 180-2's test vectors.
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
