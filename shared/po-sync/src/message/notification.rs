//! The notification event: reconcile → `notifications.fifo` → notify (which also builds it for a dead letter).

use super::{
    BodyRef, MessageError, NOTIFICATION_SCHEMA_VERSION, NOTIFICATION_TYPE, NotificationType, WebhookEnvelope,
    check_header, sha256_hex, to_json,
};
use crate::archive::{ArchivedPdf, InvoiceArchive};
use crate::destination::Destination;
use crate::komet::PurchaseOrder;
use crate::limits;
use crate::outage::OutageCause;
use crate::reconcile::Discrepancy;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

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
    /// Exsited refused the PO (a 4xx other than 401/403/404/408/429).
    ExsitedRejected,
    /// A new version of a PO that is cancelled at the destination: not sent (po-sync never reactivates by itself).
    CancelledAtDestination,
    /// The webhook kept failing transiently and SQS moved it to the dead-letter queue.
    DeadLettered,
    /// A queue message that is not a po-sync message at all.
    PoisonMessage,
    /// AppZen gives no verdict on any PO for a while (one e-mail per outage).
    AppzenOutage,
    /// Exsited gives no verdict on any PO for a while (one e-mail per outage).
    ExsitedOutage,
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

/// A destination's answer to a refused PO (AppZen's `error`/`message`; Exsited's error codes and messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationAnswer {
    pub http_status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl DestinationAnswer {
    /// AppZen's answer as an event carries it: each text at most [`limits::APPZEN_TEXT_CHARS`] characters on one
    /// line (an answer comes from outside, and may be a proxy's whole error page).
    pub fn of(http_status: u16, error: &crate::appzen::ErrorResponse, correlation_id: Option<&str>) -> Self {
        let bounded = |text: &str| crate::text::one_line(text, limits::APPZEN_TEXT_CHARS);
        DestinationAnswer {
            http_status,
            error: error.error.as_deref().map(bounded),
            message: error.message.as_deref().map(bounded),
            correlation_id: correlation_id.map(bounded),
        }
    }
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
    /// a destination's outage, which is about every waiting PO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookFacts>,
    pub detail: NotificationDetail,
    /// The destination the event is about (a mapping error, a refusal, a dead letter): absent for AppZen, as
    /// every event was before there was a second destination.
    #[serde(default, skip_serializing_if = "Destination::is_appzen")]
    pub destination: Destination,
    /// What the event leaves out so that it stays far below SQS's 1 MiB whatever the PO: the e-mail says so.
    #[serde(default, skip_serializing_if = "Omitted::is_nothing")]
    pub omitted: Omitted,
}

/// How many discrepancies, invoice links and vendors an event does not list (see [`crate::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Omitted {
    #[serde(default)]
    pub discrepancies: usize,
    #[serde(default)]
    pub invoice_links: usize,
    #[serde(default)]
    pub vendors: usize,
}

impl Omitted {
    pub fn is_nothing(&self) -> bool {
        *self == Omitted::default()
    }
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
    AppzenRejected { appzen: DestinationAnswer },
    /// Exsited refused the PO.
    ExsitedRejected { exsited: DestinationAnswer },
    /// The destination holds the PO as cancelled (its id there: `id`), or an operator cancelled it for the
    /// destination (`operator`), so the new version was not sent.
    CancelledAtDestination {
        /// The destination's id of the PO, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Set when the cancellation is po-sync's (`po-sync-admin cancel`), not one made in the destination.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator: Option<OperatorCancellation>,
    },
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
        appzen: Option<DestinationAnswer>,
    },
    /// Exsited gives no verdict on any PO (credentials refused, wrong address, down), as `AppzenOutage` for
    /// AppZen: one event per outage; the event's `destination` is Exsited.
    ExsitedOutage {
        cause: OutageCause,
        /// When po-sync first saw it.
        since: DateTime<Utc>,
        /// The last failure in words (`HTTP 401`, `timeout`).
        last_failure: String,
        /// Exsited's answer, when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exsited: Option<DestinationAnswer>,
    },
}

/// An operator's cancellation of the PO for a destination (`po-sync-admin cancel`), as the e-mail tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorCancellation {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl NotificationDetail {
    pub fn kind(&self) -> NotificationKind {
        match self {
            NotificationDetail::ReconciliationMismatch { .. } => NotificationKind::ReconciliationMismatch,
            NotificationDetail::MappingError { .. } => NotificationKind::MappingError,
            NotificationDetail::AppzenRejected { .. } => NotificationKind::AppzenRejected,
            NotificationDetail::ExsitedRejected { .. } => NotificationKind::ExsitedRejected,
            NotificationDetail::CancelledAtDestination { .. } => NotificationKind::CancelledAtDestination,
            NotificationDetail::DeadLettered { .. } => NotificationKind::DeadLettered,
            NotificationDetail::PoisonMessage { .. } => NotificationKind::PoisonMessage,
            NotificationDetail::AppzenOutage { .. } => NotificationKind::AppzenOutage,
            NotificationDetail::ExsitedOutage { .. } => NotificationKind::ExsitedOutage,
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
    /// The same event, about `destination`.
    pub fn at(mut self, destination: Destination) -> Self {
        self.destination = destination;
        self
    }

    /// An event about an accepted webhook.
    pub fn about(envelope: &WebhookEnvelope, detail: NotificationDetail) -> Self {
        NotificationEvent::about_facts(WebhookFacts::of(envelope), detail)
    }

    /// An event about a webhook known by `facts` (for a claim check: [`WebhookFacts::of_ref`]). It lists at
    /// most [`limits::LISTED_DISCREPANCIES`] discrepancies, [`limits::LISTED_LINKS`] invoice links (those of the
    /// discrepant invoices first) and [`limits::LISTED_VENDORS`] vendors, and counts the rest.
    pub fn about_facts(mut facts: WebhookFacts, mut detail: NotificationDetail) -> Self {
        let mut omitted = Omitted::default();
        let mut discrepant: Vec<&str> = Vec::new();
        if let NotificationDetail::ReconciliationMismatch { discrepancies, .. } = &mut detail {
            omitted.discrepancies = discrepancies.len().saturating_sub(limits::LISTED_DISCREPANCIES);
            discrepancies.truncate(limits::LISTED_DISCREPANCIES);
            discrepant = discrepancies.iter().filter_map(|d| d.invoice_number.as_deref()).collect();
        }
        let links = &mut facts.invoice_links;
        omitted.invoice_links = links.len().saturating_sub(limits::LISTED_LINKS);
        if omitted.invoice_links > 0 {
            // The discrepant invoices' links first, then the others, in the PO's order.
            let is_discrepant = |link: &InvoiceLink| discrepant.contains(&link.invoice_number.as_str());
            let room = limits::LISTED_LINKS.saturating_sub(links.iter().filter(|l| is_discrepant(l)).count());
            let mut others = 0;
            links.retain(|link| {
                is_discrepant(link)
                    || (others < room && {
                        others += 1;
                        true
                    })
            });
            links.truncate(limits::LISTED_LINKS);
        }
        omitted.vendors = facts.po.vendors.len().saturating_sub(limits::LISTED_VENDORS);
        facts.po.vendors.truncate(limits::LISTED_VENDORS);
        NotificationEvent {
            message_type: NotificationType::Notification,
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            webhook: Some(facts),
            detail,
            destination: Destination::Appzen,
            omitted,
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
            destination: Destination::Appzen,
            omitted: Omitted::default(),
        }
    }

    /// The one event of an AppZen outage (no webhook: it is about every PO waiting).
    pub fn outage(
        cause: OutageCause,
        since: DateTime<Utc>,
        last_failure: impl Into<String>,
        appzen: Option<DestinationAnswer>,
    ) -> Self {
        NotificationEvent::outage_at(Destination::Appzen, cause, since, last_failure, appzen)
    }

    /// The one event of `destination`'s outage (`appzen_outage`, `exsited_outage`), with the destination's
    /// `answer` when it gave one.
    pub fn outage_at(
        destination: Destination,
        cause: OutageCause,
        since: DateTime<Utc>,
        last_failure: impl Into<String>,
        answer: Option<DestinationAnswer>,
    ) -> Self {
        let last_failure = last_failure.into();
        let detail = match destination {
            Destination::Appzen => NotificationDetail::AppzenOutage { cause, since, last_failure, appzen: answer },
            Destination::Exsited => NotificationDetail::ExsitedOutage { cause, since, last_failure, exsited: answer },
        };
        NotificationEvent {
            message_type: NotificationType::Notification,
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            webhook: None,
            detail,
            destination,
            omitted: Omitted::default(),
        }
    }

    pub fn kind(&self) -> NotificationKind {
        self.detail.kind()
    }

    /// The destination the event speaks of: an outage's own (its kind says whose), else [`Self::destination`].
    pub fn about_destination(&self) -> Destination {
        match self.detail {
            NotificationDetail::AppzenOutage { .. } => Destination::Appzen,
            NotificationDetail::ExsitedOutage { .. } => Destination::Exsited,
            _ => self.destination,
        }
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
    /// Events about another destination than AppZen carry it too, so each destination's e-mail about one
    /// version (its mapping error, its cancellation) is its own message (AppZen's ids are as they always were).
    pub fn deduplication_id(&self) -> String {
        let destination = match self.about_destination() {
            Destination::Appzen => String::new(),
            other => format!(":{}", other.as_str()),
        };
        match &self.webhook {
            Some(webhook) => sha256_hex(
                format!(
                    "{}:{}:{}:{}{destination}",
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
            (None, NotificationDetail::ExsitedOutage { .. }) => "exsited-outage".to_owned(),
            (None, _) => "unreadable".to_owned(),
        }
    }
}
