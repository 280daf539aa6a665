//! The messages between the functions, versioned so a deploy that changes them can tell old from new.
//!
//! - [`WebhookEnvelope`]: ingest → `webhooks.fifo` → reconcile (and, after `maxReceiveCount`, → the DLQ → notify).
//! - [`NotificationEvent`]: reconcile → `notifications.fifo` → notify (and notify builds the same event
//!   itself for a dead-lettered envelope).

use crate::komet::PurchaseOrder;
use crate::reconcile::Discrepancy;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The envelope version this build writes and reads.
pub const ENVELOPE_SCHEMA_VERSION: u32 = 1;
/// The notification event version this build writes and reads.
pub const NOTIFICATION_SCHEMA_VERSION: u32 = 1;

/// Tells the two message types apart when they share a queue (notify reads both).
pub const ENVELOPE_TYPE: &str = "komet.po_reconciliation";
pub const NOTIFICATION_TYPE: &str = "po_sync.notification";

/// Lowercase hex SHA-256, as used for the body digest and deduplication ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A webhook as accepted by ingest: the normalised PO plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEnvelope {
    #[serde(rename = "type")]
    pub message_type: String,
    pub schema_version: u32,
    /// When ingest received the webhook, in milliseconds: the PO version's order (see [`crate::ledger`]).
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the body exactly as Komet sent it: the content's identity (duplicates are found by it).
    pub body_sha256: String,
    /// The identity of the send: API Gateway's / the Function URL's request id, which a Lambda retry of the same
    /// request keeps (so SQS drops the retry), and two different requests never share. Also the SQS
    /// deduplication id. Absent in messages written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_id: Option<String>,
    pub po: PurchaseOrder,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not a po-sync message: {0}")]
    Malformed(String),
    #[error("message type {found:?} where {expected:?} was expected")]
    WrongType { expected: &'static str, found: String },
    #[error("schema version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
}

/// Just enough of a message to route it before reading it whole.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(rename = "type")]
    message_type: Option<String>,
    schema_version: Option<u32>,
}

fn check_header(json: &str, expected: &'static str, supported: u32) -> Result<(), MessageError> {
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

impl WebhookEnvelope {
    pub fn new(po: PurchaseOrder, body: &[u8], received_at: DateTime<Utc>) -> Self {
        WebhookEnvelope {
            message_type: ENVELOPE_TYPE.to_owned(),
            schema_version: ENVELOPE_SCHEMA_VERSION,
            received_at,
            body_sha256: sha256_hex(body),
            send_id: None,
            po,
        }
    }

    pub fn with_send_id(mut self, send_id: impl Into<String>) -> Self {
        self.send_id = Some(send_id.into());
        self
    }

    /// The version this envelope carries: `receivedAt` in milliseconds.
    pub fn version(&self) -> i64 {
        self.received_at.timestamp_millis()
    }

    /// The SQS FIFO deduplication id: the send's identity, else (an envelope from before `sendId`) the body's.
    pub fn deduplication_id(&self) -> &str {
        self.send_id.as_deref().unwrap_or(&self.body_sha256)
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        // About the Komet body's size (~80 bytes per item): reserved up front instead of ~20 doublings and
        // their copies on a large PO. Untouched capacity costs nothing.
        let items: usize = self.po.vendor_invoices.iter().map(|i| i.purchase_order_items.len()).sum();
        let mut json = Vec::with_capacity(512 + 96 * items + 512 * self.po.vendor_invoices.len());
        serde_json::to_writer(&mut json, self)?;
        String::from_utf8(json).map_err(serde::ser::Error::custom)
    }

    /// Reads an envelope from an SQS body; a wrong type or version is refused, not guessed at.
    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<WebhookEnvelope>(json) {
            Ok(envelope)
                if envelope.message_type == ENVELOPE_TYPE && envelope.schema_version == ENVELOPE_SCHEMA_VERSION =>
            {
                Ok(envelope)
            }
            // Only on failure is the header read again, to say precisely why.
            Ok(_) => {
                check_header(json, ENVELOPE_TYPE, ENVELOPE_SCHEMA_VERSION)?;
                Err(MessageError::Malformed("unexpected header".to_owned()))
            }
            Err(e) => {
                check_header(json, ENVELOPE_TYPE, ENVELOPE_SCHEMA_VERSION)?;
                Err(MessageError::Malformed(e.to_string()))
            }
        }
    }
}

/// What went wrong, which decides the e-mail's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum NotificationKind {
    /// The PO does not add up against its invoices.
    ReconciliationMismatch,
    /// The PO cannot be expressed as one AppZen PO (several vendors, a missing code…).
    MappingError,
    /// AppZen refused the PO with a 4xx other than 408/429.
    AppzenRejected,
    /// The webhook kept failing transiently and SQS moved it to the dead-letter queue.
    DeadLettered,
    /// A queue message that is not a po-sync message at all.
    PoisonMessage,
}

impl NotificationKind {
    /// The name in the JSON and the logs (serde's and strum's snake_case agree; a test pins it).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Who the PO is, as the people fixing it know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoIdentity {
    pub id: u64,
    pub po_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The vendor(s) named by the invoices, one label each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vendors: Vec<String>,
}

impl PoIdentity {
    pub fn of(po: &PurchaseOrder) -> Self {
        let location = po.location.as_ref().and_then(|l| match (&l.name, &l.code) {
            (Some(name), Some(code)) => Some(format!("{name} ({code})")),
            (Some(name), None) => Some(name.clone()),
            (None, Some(code)) => Some(code.clone()),
            (None, None) => l.id.map(|id| format!("location {id}")),
        });
        let mut vendors: Vec<String> = Vec::new();
        for vendor in po.vendor_invoices.iter().filter_map(|i| i.vendor.as_ref()) {
            let label = match (&vendor.name, &vendor.code) {
                (Some(name), Some(code)) => format!("{name} ({code})"),
                (Some(name), None) => name.clone(),
                (None, Some(code)) => code.clone(),
                (None, None) => vendor.id.map_or_else(|| "unnamed vendor".to_owned(), |id| format!("vendor {id}")),
            };
            if !vendors.contains(&label) {
                vendors.push(label);
            }
        }
        PoIdentity {
            id: po.id,
            po_number: po.po_number.clone(),
            ship_date: po.ship_date,
            arrival_date: po.arrival_date,
            location,
            vendors,
        }
    }
}

/// An invoice PDF link; Komet's links expire six hours after the webhook was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceLink {
    pub invoice_number: String,
    pub url: String,
}

/// How long Komet keeps an invoice link alive after sending the webhook.
pub const INVOICE_LINK_LIFETIME_HOURS: i64 = 6;

/// AppZen's answer to a refused upsert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppZenAnswer {
    pub http_status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// Something a person must act on. One event is one e-mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEvent {
    #[serde(rename = "type")]
    pub message_type: String,
    pub schema_version: u32,
    pub kind: NotificationKind,
    /// `None` only for a poison message, whose PO could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub po: Option<PoIdentity>,
    /// For a mismatch: what did not add up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discrepancies: Vec<Discrepancy>,
    /// For a mapping error, a dead letter or a poison message: what went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appzen: Option<AppZenAnswer>,
    /// For a dead letter: how many times delivery was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Whether the PO was still sent to AppZen (the `forward` policy).
    #[serde(default)]
    pub forwarded_to_appzen: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// The SQS message the event is about, for a poison message that has no PO to name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invoice_links: Vec<InvoiceLink>,
    /// For a dead letter: notify kept the webhook in the parked queue (`PARKED_QUEUE_URL`), so it can be
    /// redriven. Set by notify only; left out of the JSON when false, so reconcile's events are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

impl NotificationEvent {
    /// An event about an accepted webhook; the caller fills in the kind-specific fields.
    pub fn about(kind: NotificationKind, envelope: &WebhookEnvelope) -> Self {
        NotificationEvent {
            message_type: NOTIFICATION_TYPE.to_owned(),
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            kind,
            po: Some(PoIdentity::of(&envelope.po)),
            discrepancies: Vec::new(),
            detail: None,
            appzen: None,
            attempts: None,
            forwarded_to_appzen: false,
            received_at: Some(envelope.received_at),
            body_sha256: Some(envelope.body_sha256.clone()),
            sqs_message_id: None,
            parked: false,
            invoice_links: envelope
                .po
                .vendor_invoices
                .iter()
                .filter_map(|i| {
                    i.file
                        .as_ref()
                        .map(|url| InvoiceLink { invoice_number: i.invoice_number.clone(), url: url.clone() })
                })
                .collect(),
        }
    }

    /// An event about a queue message that could not be read at all.
    pub fn poison(detail: impl Into<String>, sqs_message_id: impl Into<String>) -> Self {
        NotificationEvent {
            message_type: NOTIFICATION_TYPE.to_owned(),
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            kind: NotificationKind::PoisonMessage,
            po: None,
            discrepancies: Vec::new(),
            detail: Some(detail.into()),
            appzen: None,
            attempts: None,
            forwarded_to_appzen: false,
            received_at: None,
            body_sha256: None,
            sqs_message_id: Some(sqs_message_id.into()),
            invoice_links: Vec::new(),
            parked: false,
        }
    }

    /// When the invoice links stop working: six hours after Komet sent the webhook (we know when it arrived).
    pub fn links_expire_at(&self) -> Option<DateTime<Utc>> {
        self.received_at.map(|at| at + chrono::Duration::hours(INVOICE_LINK_LIFETIME_HOURS))
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<NotificationEvent>(json) {
            Ok(event)
                if event.message_type == NOTIFICATION_TYPE && event.schema_version == NOTIFICATION_SCHEMA_VERSION =>
            {
                Ok(event)
            }
            Ok(_) => {
                check_header(json, NOTIFICATION_TYPE, NOTIFICATION_SCHEMA_VERSION)?;
                Err(MessageError::Malformed("unexpected header".to_owned()))
            }
            Err(e) => {
                check_header(json, NOTIFICATION_TYPE, NOTIFICATION_SCHEMA_VERSION)?;
                Err(MessageError::Malformed(e.to_string()))
            }
        }
    }

    /// The FIFO deduplication id: a digest of the event itself, so a redelivered envelope that raises the
    /// same event again is not mailed twice within SQS's five-minute window.
    pub fn deduplication_id(&self) -> String {
        sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// The FIFO message group: per PO, so one PO's events stay in order without holding up others.
    pub fn group_id(&self) -> String {
        match &self.po {
            Some(po) => po.id.to_string(),
            None => "unreadable".to_owned(),
        }
    }
}
