//! The messages between the functions, versioned so a deploy that changes them can tell old from new.
//!
//! - [`WebhookEnvelope`]: ingest → `webhooks.fifo` → reconcile (and, after `maxReceiveCount`, → the DLQ → notify).
//! - [`NotificationEvent`]: reconcile → `notifications.fifo` → notify (and notify builds the same event
//!   itself for a dead-lettered envelope).
//! - [`BodyRef`]: a claim check: ingest → `webhooks.fifo` → reconcile in place of an envelope too large for one
//!   SQS message, pointing at the envelope stored in the bucket ([`body_key`]).

use crate::archive::{ArchivedPdf, InvoiceArchive};
use crate::komet::PurchaseOrder;
use crate::outage::OutageCause;
use crate::reconcile::Discrepancy;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};


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

/// The JSON of a po-sync message. Every message is plain data (text, whole numbers, timestamps, and amounts as
/// their own digits), which serde_json always writes: its error is for maps with non-text keys and for
/// `Serialize` impls that refuse, and no po-sync type has either. So this cannot fail, and says so in its type.
pub fn to_json<T: Serialize>(message: &T) -> String {
    match serde_json::to_string(message) {
        Ok(json) => json,
        // Unreachable (see above); a panic is reported by the runtime and the record comes back unharmed.
        Err(error) => panic!("a po-sync message could not be written as JSON: {error}"),
    }
}

/// A webhook as accepted by ingest: the normalised PO plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEnvelope {
    #[serde(rename = "type")]
    pub message_type: EnvelopeType,
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
            message_type: EnvelopeType::PoReconciliation,
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

    /// The SQS message body (`type` first: readers tell the message types apart by it, see [`EnvelopeType`]).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads an envelope from an SQS body; a wrong type or version is refused, not guessed at.
    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<WebhookEnvelope>(json) {
            Ok(envelope) if envelope.schema_version == ENVELOPE_SCHEMA_VERSION => Ok(envelope),
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
/// digest). Characters other than ASCII letters, digits, `.` and `-` are written `_XX` (hex), so two ids never
/// share a key (API Gateway's request ids are base64, with `/`, `+` and `=`); an id too long for a key is
/// replaced by its digest.
pub fn body_key(po_id: u64, deduplication_id: &str) -> String {
    let mut segment = String::with_capacity(deduplication_id.len());
    for byte in deduplication_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' {
            segment.push(byte as char);
        } else {
            segment.push_str(&format!("_{byte:02X}"));
        }
    }
    if segment.len() > 200 || segment.is_empty() || segment.chars().all(|c| c == '.') {
        segment = sha256_hex(deduplication_id.as_bytes());
    }
    format!("{BODY_KEY_PREFIX}{po_id}/{segment}.json")
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
    /// AppZen gives no verdict on any PO for a while (one e-mail per outage).
    AppzenOutage,
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
            (Some(name), None) => Some(name.as_str().to_owned()),
            (None, Some(code)) => Some(code.as_str().to_owned()),
            (None, None) => l.id.map(|id| format!("location {id}")),
        });
        let mut vendors: Vec<String> = Vec::new();
        for vendor in po.vendor_invoices.iter().filter_map(|i| i.vendor.as_ref()) {
            let label = match (&vendor.name, &vendor.code) {
                (Some(name), Some(code)) => format!("{name} ({code})"),
                (Some(name), None) => name.as_str().to_owned(),
                (None, Some(code)) => code.as_str().to_owned(),
                (None, None) => vendor.id.map_or_else(|| "unnamed vendor".to_owned(), |id| format!("vendor {id}")),
            };
            if !vendors.contains(&label) {
                vendors.push(label);
            }
        }
        PoIdentity {
            id: po.id,
            po_number: po.po_number.as_str().to_owned(),
            ship_date: po.ship_date,
            arrival_date: po.arrival_date,
            location,
            vendors,
        }
    }
}

/// An invoice PDF link; Komet's links expire six hours after the webhook was sent, so reconcile keeps a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceLink {
    pub invoice_number: String,
    pub url: String,
    /// The copy in the archive bucket, when reconcile could make one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<ArchivedPdf>,
    /// Why there is no copy (`archive_incomplete`), when reconcile tried and could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_archived: Option<String>,
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
///
/// A header (which webhook it is about) and a per-kind [`NotificationDetail`] holding exactly what that kind
/// needs. The detail is externally tagged (`"detail": {"reconciliationMismatch": {…}}`), which serde reads
/// without buffering, so the exact-decimal amounts of a discrepancy read back digit for digit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEvent {
    #[serde(rename = "type")]
    pub message_type: NotificationType,
    pub schema_version: u32,
    /// The webhook the event is about; `None` for a poison message, whose webhook could not be read, and for
    /// an AppZen outage, which is about every waiting PO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookFacts>,
    pub detail: NotificationDetail,
}

/// What a person needs to know of the webhook an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookFacts {
    pub po: PoIdentity,
    pub received_at: DateTime<Utc>,
    pub body_sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invoice_links: Vec<InvoiceLink>,
}

/// What happened, with what the e-mail needs for that kind and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum NotificationDetail {
    /// The PO does not add up against its invoices.
    ReconciliationMismatch {
        discrepancies: Vec<Discrepancy>,
        /// Whether the PO was still sent to AppZen (the `forward` policy).
        forwarded_to_appzen: bool,
    },
    /// The PO cannot be expressed as one AppZen PO; `problem` says why, in words.
    MappingError { problem: String },
    /// AppZen refused the PO.
    AppzenRejected { appzen: AppZenAnswer },
    /// The webhook kept failing transiently and SQS moved it to the dead-letter queue.
    DeadLettered {
        /// How many times delivery was tried, when SQS said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts: Option<u32>,
        /// The dead-lettered SQS message.
        sqs_message_id: String,
        /// notify kept the webhook in the parked queue (`PARKED_QUEUE_URL`), so it can be redriven.
        #[serde(default)]
        parked: bool,
    },
    /// A queue message that is not a po-sync message at all; `problem` says why, in words.
    PoisonMessage { problem: String, sqs_message_id: String },
    /// AppZen gives no verdict on any PO (credentials refused, wrong address, down): one event per outage,
    /// not per PO; every PO waits and goes through once it ends.
    AppzenOutage {
        cause: OutageCause,
        /// When po-sync first saw it.
        since: DateTime<Utc>,
        /// The last failure in words (`HTTP 401`, `timeout`).
        last_failure: String,
        /// AppZen's answer, when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        appzen: Option<AppZenAnswer>,
    },
}

impl NotificationDetail {
    pub fn kind(&self) -> NotificationKind {
        match self {
            NotificationDetail::ReconciliationMismatch { .. } => NotificationKind::ReconciliationMismatch,
            NotificationDetail::MappingError { .. } => NotificationKind::MappingError,
            NotificationDetail::AppzenRejected { .. } => NotificationKind::AppzenRejected,
            NotificationDetail::DeadLettered { .. } => NotificationKind::DeadLettered,
            NotificationDetail::PoisonMessage { .. } => NotificationKind::PoisonMessage,
            NotificationDetail::AppzenOutage { .. } => NotificationKind::AppzenOutage,
        }
    }
}

impl WebhookFacts {
    /// Notes, link by link, what the archive made of each invoice.
    pub fn note_archive(&mut self, archives: &[InvoiceArchive]) {
        for link in &mut self.invoice_links {
            if let Some(archive) = archives.iter().find(|a| a.invoice_number == link.invoice_number) {
                match &archive.outcome {
                    Ok(pdf) => link.archived = Some(pdf.clone()),
                    Err(why) => link.not_archived = Some(why.to_string()),
                }
            }
        }
    }

    /// What a claim check says of its webhook, without fetching it: the PO's id and number, when it arrived and
    /// the body's digest (no vendors, location or invoice links).
    pub fn of_ref(pointer: &BodyRef) -> Self {
        WebhookFacts {
            po: PoIdentity {
                id: pointer.po_id,
                po_number: pointer.po_number.clone(),
                ship_date: None,
                arrival_date: None,
                location: None,
                vendors: Vec::new(),
            },
            received_at: pointer.received_at,
            body_sha256: pointer.body_sha256.clone(),
            invoice_links: Vec::new(),
        }
    }

    pub fn of(envelope: &WebhookEnvelope) -> Self {
        WebhookFacts {
            po: PoIdentity::of(&envelope.po),
            received_at: envelope.received_at,
            body_sha256: envelope.body_sha256.clone(),
            invoice_links: envelope
                .po
                .vendor_invoices
                .iter()
                .filter_map(|i| {
                    i.file.as_ref().map(|url| InvoiceLink {
                        invoice_number: i.invoice_number.as_str().to_owned(),
                        url: url.as_str().to_owned(),
                        archived: None,
                        not_archived: None,
                    })
                })
                .collect(),
        }
    }
}

impl NotificationEvent {
    /// An event about an accepted webhook.
    pub fn about(envelope: &WebhookEnvelope, detail: NotificationDetail) -> Self {
        NotificationEvent::about_facts(WebhookFacts::of(envelope), detail)
    }

    /// An event about a webhook known by `facts` (for a claim check: [`WebhookFacts::of_ref`]).
    pub fn about_facts(facts: WebhookFacts, detail: NotificationDetail) -> Self {
        NotificationEvent {
            message_type: NotificationType::Notification,
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            webhook: Some(facts),
            detail,
        }
    }

    /// An event about a queue message that could not be read at all.
    pub fn poison(problem: impl Into<String>, sqs_message_id: impl Into<String>) -> Self {
        NotificationEvent {
            message_type: NotificationType::Notification,
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            webhook: None,
            detail: NotificationDetail::PoisonMessage {
                problem: problem.into(),
                sqs_message_id: sqs_message_id.into(),
            },
        }
    }

    /// The one event of an AppZen outage (no webhook: it is about every PO waiting).
    pub fn outage(
        cause: OutageCause,
        since: DateTime<Utc>,
        last_failure: impl Into<String>,
        appzen: Option<AppZenAnswer>,
    ) -> Self {
        NotificationEvent {
            message_type: NotificationType::Notification,
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            webhook: None,
            detail: NotificationDetail::AppzenOutage { cause, since, last_failure: last_failure.into(), appzen },
        }
    }

    pub fn kind(&self) -> NotificationKind {
        self.detail.kind()
    }

    /// The PO the event is about; `None` for a poison message.
    pub fn po(&self) -> Option<&PoIdentity> {
        self.webhook.as_ref().map(|w| &w.po)
    }

    /// When the invoice links stop working: six hours after Komet sent the webhook (we know when it arrived).
    pub fn links_expire_at(&self) -> Option<DateTime<Utc>> {
        self.webhook.as_ref().map(|w| w.received_at + chrono::Duration::hours(INVOICE_LINK_LIFETIME_HOURS))
    }

    /// For a dead letter: notify kept the webhook in the parked queue.
    pub fn mark_parked(&mut self) {
        if let NotificationDetail::DeadLettered { parked, .. } = &mut self.detail {
            *parked = true;
        }
    }

    pub fn is_parked(&self) -> bool {
        matches!(self.detail, NotificationDetail::DeadLettered { parked: true, .. })
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }

    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<NotificationEvent>(json) {
            Ok(event) if event.schema_version == NOTIFICATION_SCHEMA_VERSION => Ok(event),
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

    /// The FIFO deduplication id: one per webhook version and kind, so a redelivered envelope that raises the
    /// same event again is not mailed twice within SQS's five-minute window, even when the event quotes an
    /// answer that differs from one request to the next (AppZen's per-request error code in a rejection: a
    /// digest of the whole event let a second e-mail through; found by the soak). A poison message, which has
    /// no webhook, is identified by a digest of the event.
    pub fn deduplication_id(&self) -> String {
        match &self.webhook {
            Some(webhook) => sha256_hex(
                format!(
                    "{}:{}:{}:{}",
                    self.kind().as_str(),
                    webhook.po.id,
                    webhook.received_at.timestamp_millis(),
                    webhook.body_sha256
                )
                .as_bytes(),
            ),
            None => sha256_hex(self.to_json().as_bytes()),
        }
    }

    /// The FIFO message group: per PO, so one PO's events stay in order without holding up others.
    pub fn group_id(&self) -> String {
        match (self.po(), &self.detail) {
            (Some(po), _) => po.id.to_string(),
            (None, NotificationDetail::AppzenOutage { .. }) => "appzen-outage".to_owned(),
            (None, _) => "unreadable".to_owned(),
        }
    }
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
    use crate::komet::{Location, PurchaseOrderItem, Vendor, VendorInvoice, parse_webhook};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    const FIXTURES: [&[u8]; 4] = [
        include_bytes!("../tests/fixtures/komet-clean-po.json"),
        include_bytes!("../tests/fixtures/komet-doc-sample.json"),
        include_bytes!("../tests/fixtures/komet-optional-fields-absent.json"),
        include_bytes!("../tests/fixtures/komet-several-vendors.json"),
    ];

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 6, 14, 30, 0).unwrap()
    }

    /// The envelopes the tests write and read: every fixture, with and without a send id and fractions of a
    /// second, and awkward POs: every option absent, empty objects, text needing every kind of escape, amounts
    /// at their limits.
    fn envelopes() -> Vec<WebhookEnvelope> {
        let mut envelopes = Vec::new();
        for fixture in FIXTURES {
            let po = parse_webhook(fixture).unwrap();
            envelopes.push(WebhookEnvelope::new(po.clone(), fixture, at()));
            let later = at() + chrono::Duration::nanoseconds(123_000_000);
            envelopes.push(WebhookEnvelope::new(po, fixture, later).with_send_id("abc/+=\"req\\1"));
        }
        let awkward = "q\"b\\s/ \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f} é 🌹 \u{2028}";
        let text = |s: &str| Some(s.to_owned());
        let amounts = [Decimal::ZERO, Decimal::new(1, 28), Decimal::MAX, Decimal::new(6000, 2), Decimal::new(-5, 1)];
        let bare = PurchaseOrder {
            id: u64::MAX,
            po_number: awkward.into(),
            ship_date: None,
            arrival_date: None,
            sub_total: None,
            total: Decimal::MIN,
            location: None,
            vendor_invoices: Vec::new(),
        };
        envelopes.push(WebhookEnvelope::new(bare.clone(), b"", at()));
        let full = PurchaseOrder {
            id: 0,
            ship_date: chrono::NaiveDate::from_ymd_opt(1, 1, 1),
            arrival_date: chrono::NaiveDate::from_ymd_opt(9999, 12, 31),
            sub_total: Some(Decimal::new(1, 28)),
            location: Some(Location { id: Some(7), code: text(awkward), name: text("") }),
            vendor_invoices: amounts
                .iter()
                .enumerate()
                .map(|(i, amount)| VendorInvoice {
                    invoice_number: format!("{awkward}{i}").into(),
                    invoice_amount: *amount,
                    total_additional_charges: -*amount,
                    file: (i % 2 == 0).then(|| format!("https://x/{awkward}").into()),
                    vendor: match i {
                        0 => None,
                        1 => Some(Vendor {
                            id: None,
                            code: None,
                            name: None,
                            vendor_accounting_code: None,
                            vendor_type: None,
                        }),
                        _ => Some(Vendor {
                            id: Some(i as u64),
                            code: text("AV"),
                            name: text(awkward),
                            vendor_accounting_code: (i > 2).then(|| "2000".into()),
                            vendor_type: text("Fresh Cut"),
                        }),
                    },
                    purchase_order_items: (0..i)
                        .map(|j| PurchaseOrderItem {
                            category_procurement_accounting_code: (j % 2 == 1).then(|| awkward.into()),
                            total_cost: amounts[j],
                        })
                        .collect(),
                })
                .collect(),
            ..bare
        };
        for location in [None, Some(Location { id: None, code: None, name: None })] {
            envelopes.push(WebhookEnvelope::new(PurchaseOrder { location, ..full.clone() }, b"x", at()));
        }
        envelopes.push(WebhookEnvelope::new(full, b"y", at()).with_send_id(""));
        envelopes
    }

    #[test]
    fn the_digest_is_lowercase_hex() {
        for body in [&b""[..], b"abc", include_bytes!("../tests/fixtures/komet-doc-sample.json")] {
            assert_eq!(sha256_hex(body), hex::encode(Sha256::digest(body)));
        }
    }

    #[test]
    fn every_envelope_reads_back_as_it_was_written() {
        for envelope in envelopes() {
            let json = envelope.to_json();
            assert!(json.starts_with("{\"type\":\"komet.po_reconciliation\","), "type first: {json}");
            assert_eq!(WebhookEnvelope::from_json(&json).unwrap(), envelope);
        }
    }

    proptest! {
        #[test]
        fn any_text_and_amount_reads_back_exactly(
            text in "\\PC{0,12}|[\"\\\\\\x00-\\x1f]{0,4}",
            lo in any::<u32>(), mid in any::<u32>(), negative in any::<bool>(), scale in 0u32..=28,
            millis in 0i64..4_102_444_800_000,
        ) {
            let amount = Decimal::from_parts(lo, mid, 0, negative, scale);
            let received_at = DateTime::from_timestamp_millis(millis).unwrap();
            let po = PurchaseOrder {
                id: lo.into(),
                po_number: text.as_str().into(),
                ship_date: received_at.date_naive().into(),
                arrival_date: None,
                sub_total: Some(amount),
                total: amount,
                location: Some(Location { id: None, code: None, name: Some(text.as_str().into()) }),
                vendor_invoices: vec![VendorInvoice {
                    invoice_number: text.as_str().into(),
                    invoice_amount: amount,
                    total_additional_charges: amount,
                    file: Some(text.as_str().into()),
                    vendor: None,
                    purchase_order_items: vec![PurchaseOrderItem {
                        category_procurement_accounting_code: Some(text.as_str().into()),
                        total_cost: amount,
                    }],
                }],
            };
            let envelope = WebhookEnvelope::new(po, text.as_bytes(), received_at).with_send_id(text);
            let json = envelope.to_json();
            prop_assert_eq!(WebhookEnvelope::from_json(&json).unwrap(), envelope);
        }
    }
}
