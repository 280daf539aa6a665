//! notify: turns notification events (from reconcile) and dead-lettered webhooks (from the webhook DLQ)
//! into e-mails sent through Amazon SES to the people Komet would tell about an error.
//!
//! Per SQS record, in order: [`plan_for`] decides what happened and whether the record is a dead-lettered
//! webhook to keep (pure); [`park`] puts such a webhook, unchanged, on the parked queue (I/O, only when
//! `PARKED_QUEUE_URL` is set); the archived invoice PDFs it should carry are read (I/O, within a size budget);
//! [`po_sync::email::render_with_attachments`] writes the e-mail (pure), [`mime_message`] builds the
//! MIME message (pure) and the [`EmailSender`] port hands it to SES (I/O). At the first record of a message
//! group that could not be parked or mailed, that record and the group's later ones are reported as batch
//! failures: the queues are FIFO, so a later record of a PO must not overtake an earlier one of that PO.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MimeAddress;
use po_sync::batch::{self, Handled};
use po_sync::config::notify::NotifyConfig;
use po_sync::email::{Email, dead_lettered};
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::message::{
    MessageError, NOTIFICATION_TYPE, NotificationDetail, NotificationEvent, QueueMessage, WebhookFacts, message_type,
    sha256_hex,
};
use po_sync::text::one_line;
use po_sync_aws::ledger::DynamoHistory;
use po_sync_aws::mail::{EmailSender, SesEmailSender};
use po_sync_aws::objects::{ObjectStore, S3ObjectStore};
use po_sync_aws::port::{Failure, PortError};
use po_sync_aws::queue::{FifoMessage, FifoQueue, SqsFifoQueue};

/// What notify needs, built once per cold start and shared by every invocation: the e-mail sender, the parked
/// queue for dead-lettered webhooks (`PARKED_QUEUE_URL`), and the invoice archive whose PDFs the e-mails
/// attach (`ARCHIVE_BUCKET`).
pub struct Notifier<E, Q, S = S3ObjectStore> {
    pub email: E,
    pub parked: Option<Q>,
    pub archive: Option<S>,
    /// Where each parking is recorded in the PO's history (`HISTORY_TABLE_NAME`).
    pub history: Option<DynamoHistory>,
    pub config: NotifyConfig,
}

/// The most PDF bytes attached to one e-mail. SES takes raw messages up to 10 MB after MIME encoding, and
/// base64 makes attachments a third larger (with line breaks, ×1.37): 6 MiB of PDFs is ~8.6 MB encoded,
/// leaving room for the text and HTML parts. Invoices beyond it are named by their archived location.
pub const ATTACHMENT_BUDGET_BYTES: u64 = 6 * 1024 * 1024;

impl Notifier<SesEmailSender, SqsFifoQueue, S3ObjectStore> {
    /// The cold start: the SES client, and the SQS and S3 clients for what is configured.
    pub fn start(config: NotifyConfig, aws: &aws_config::SdkConfig) -> Self {
        let parked = config.parked_queue_url.as_ref().map(|url| SqsFifoQueue::new(aws_sdk_sqs::Client::new(aws), url));
        let archive = config.archive_bucket.as_ref().map(|bucket| S3ObjectStore::new(aws, bucket));
        let history = config.history.as_ref().map(|h| DynamoHistory::from_config(aws, h));
        Notifier { email: SesEmailSender::new(aws_sdk_ses::Client::new(aws)), parked, archive, history, config }
    }
}

/// The SQS attribute naming a FIFO record's message group (the PO id, as ingest sends it).
pub const MESSAGE_GROUP_ATTRIBUTE: &str = "MessageGroupId";

/// The SQS attribute that counts receives of a message, including the one that delivered this record.
pub const RECEIVE_COUNT_ATTRIBUTE: &str = "ApproximateReceiveCount";

/// How a dead-lettered webhook's delivery attempts are counted from the DLQ record's `ApproximateReceiveCount`.
///
/// SQS moves a message to the DLQ on the receive that would exceed `maxReceiveCount`, keeping the message (id,
/// body, receive count) as it was; receiving it from the DLQ then counts one more. So the first time notify
/// sees a dead letter the count is `maxReceiveCount + 1` (AWS and moto agree; `dead_letter_count_*` in
/// `tests/moto_ses.rs` pins moto's behaviour), and `count − 1` is the number of times reconcile received it.
/// If notify itself failed to send and the DLQ redelivered the record, the count includes those receives too,
/// so N may overstate reconcile's attempts by notify's own retries, never understate them.
pub fn delivery_attempts(receive_count: Option<&str>) -> Option<u32> {
    receive_count.and_then(|count| count.trim().parse::<u32>().ok()).map(|count| count.saturating_sub(1).max(1))
}

/// What notify does with one SQS record: always mail `event`; first park `parcel`, when there is one.
#[derive(Debug, Clone)]
pub struct Plan {
    pub event: NotificationEvent,
    /// `Some` for a readable dead-lettered webhook (or its claim check): its body byte for byte (a redrive puts on `webhooks.fifo`
    /// exactly what ingest put there), in its own group (the PO id, so a redrive keeps each PO's order), and
    /// deduplicated by the DLQ record's message id (a second parking of the same dead letter, when the e-mail
    /// failed after the parking and the record came back, is dropped by SQS; two sends of one body are two
    /// dead letters). An unreadable one is mailed as poison and not parked: redriving it would only fail
    /// reconcile again.
    pub parcel: Option<FifoMessage>,
}

/// Reads one SQS record into the event to mail. Pure and total: whatever the body, there is an event.
pub fn event_for(record: &SqsMessage) -> NotificationEvent {
    plan_for(record).event
}

/// Reads one SQS record into what to do with it. Pure and total. The body is read once.
pub fn plan_for(record: &SqsMessage) -> Plan {
    let message_id = record.message_id.clone().unwrap_or_else(|| "(no message id)".to_owned());
    let body = record.body.as_deref().unwrap_or_default();
    let mail = |event: NotificationEvent| Plan { event, parcel: None };
    let attempts = || delivery_attempts(record.attributes.get(RECEIVE_COUNT_ATTRIBUTE).map(String::as_str));
    let parcel = |po_id: u64| {
        let group_id = record
            .attributes
            .get(MESSAGE_GROUP_ATTRIBUTE)
            .filter(|group| !group.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| po_id.to_string());
        Some(FifoMessage::new(body.to_owned(), group_id, message_id.clone()))
    };
    match QueueMessage::from_json(body) {
        Ok(QueueMessage::Notification(event)) => mail(event),
        Ok(QueueMessage::Webhook(envelope)) => {
            Plan { event: dead_lettered(&envelope, attempts(), &message_id), parcel: parcel(envelope.po.id) }
        }
        // A claim check (a PO too large for one SQS message, stored in the bucket) is parked the same way, byte
        // for byte: its stored body outlives the parked queue's retention. The e-mail names the PO as the claim
        // check does (no vendors, location or links: notify does not fetch the body).
        Ok(QueueMessage::WebhookRef(pointer)) => {
            let detail = NotificationDetail::DeadLettered {
                attempts: attempts(),
                sqs_message_id: message_id.clone(),
                parked: false,
            };
            Plan {
                event: NotificationEvent::about_facts(WebhookFacts::of_ref(&pointer), detail),
                parcel: parcel(pointer.po_id),
            }
        }
        // Unreadable: said in the words a person needs (rare, so the body may be looked at again).
        Err(error) => {
            let problem = match (&error, message_type(body).as_deref()) {
                (MessageError::UnknownType(found), _) => MessageError::UnknownType(one_line(found, 80)).to_string(),
                (_, None) => {
                    format!("a message that is not a po-sync message ({} bytes, not JSON with a \"type\")", body.len())
                }
                (_, Some(NOTIFICATION_TYPE)) => format!("a notification event that cannot be read: {error}"),
                (_, Some(_)) => format!("a dead-lettered webhook that cannot be read: {error}"),
            };
            mail(NotificationEvent::poison(problem, message_id))
        }
    }
}

/// Why a record was not handled; every kind is reported as a batch failure (nothing is dropped). They differ
/// in what a person must do: wait (a transient failure: SQS retries) or fix the setup (a permanent one: the
/// record ends in its queue's DLQ).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Throttling, a missing queue, no permission: the record stays on the webhook DLQ and nothing is mailed
    /// as kept.
    #[error("the dead-lettered webhook could not be parked: {0}")]
    NotParked(#[source] PortError),
    #[error("the e-mail could not be written: {0}")]
    Unwritable(String),
    #[error("the e-mail was not sent: {0}")]
    NotSent(#[source] PortError),
}

impl NotifyError {
    pub fn failure(&self) -> Failure {
        match self {
            NotifyError::NotParked(e) | NotifyError::NotSent(e) => e.failure,
            NotifyError::Unwritable(_) => Failure::Permanent,
        }
    }
}

/// Puts a dead-lettered webhook on the parked queue; returns the parked message's SQS id.
pub async fn park(parked: &impl FifoQueue, parcel: &FifoMessage) -> Result<String, NotifyError> {
    parked.send(parcel).await.map_err(NotifyError::NotParked)
}

/// Builds the MIME message handed to SES.
///
/// Why `SendRawEmail` with a MIME multipart/alternative message rather than `SendEmail`: the message is then
/// exactly what recipients get, text and HTML parts both, and the same bytes are what moto records, so the
/// integration tests check both bodies as sent (moto's `SendEmail` keeps only the HTML one). mail-builder also
/// encodes a non-ASCII subject and display name per RFC 2047 and folds long headers, which `SendEmail` leaves
/// to SES. The subject is already one line (`po_sync::email::subject`), so no payload text can become a header.
pub fn mime_message(
    config: &NotifyConfig,
    email: &Email,
    attachments: &[Attachment],
    message_id: &str,
) -> Result<Vec<u8>, std::io::Error> {
    let from = match &config.from.name {
        Some(name) => MimeAddress::new_address(Some(name.as_str()), config.from.address.as_str()),
        None => MimeAddress::new_address(None::<&str>, config.from.address.as_str()),
    };
    let to: Vec<MimeAddress> =
        config.to.as_slice().iter().map(|a| MimeAddress::new_address(None::<&str>, a.as_str())).collect();
    let mut builder = MessageBuilder::new()
        .from(from)
        .to(MimeAddress::new_list(to))
        .message_id(message_id.to_owned())
        .subject(email.subject.as_str())
        .text_body(email.text.as_str())
        .html_body(email.html.as_str());
    if let Some(reply_to) = &config.reply_to {
        builder = builder.reply_to(MimeAddress::new_address(None::<&str>, reply_to.as_str()));
    }
    for attachment in attachments {
        builder = builder.attachment("application/pdf", attachment.file_name(), attachment.bytes.as_slice());
    }
    builder.write_to_vec()
}

/// An invoice PDF attached to an e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub invoice_number: String,
    pub bytes: Vec<u8>,
}

impl Attachment {
    /// `invoice-<number>.pdf`, with only safe characters (the number comes from the payload).
    pub fn file_name(&self) -> String {
        let number: String = self
            .invoice_number
            .chars()
            .take(80)
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        format!("invoice-{number}.pdf")
    }
}

/// A Message-ID derived from the record's body digest (for reconcile's events, the event's own deduplication
/// id) and the kind, so a redelivered record that is mailed again threads with (and is recognisable as) the
/// first copy.
pub fn message_id_for(body_sha256: &str, event: &NotificationEvent, config: &NotifyConfig) -> String {
    let digest = body_sha256.get(..32).unwrap_or(body_sha256);
    format!("po-sync.{digest}.{}@{}", event.kind().as_str(), config.from.address.domain())
}

impl<E: EmailSender, Q: FifoQueue, S: ObjectStore> Notifier<E, Q, S> {
    /// One e-mail per record, partial batch failures per message group: at a group's first record that could
    /// not be parked or mailed, that record and the group's later records are handed back (the later ones
    /// unstarted); other groups go on. One record at a time: SES's sending rate is per account, and a
    /// notification is not urgent to the second.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let records = &event.records;
        let grouped = records
            .iter()
            .map(|r| (batch::group_key(r.attributes.get(MESSAGE_GROUP_ATTRIBUTE).map(String::as_str)).to_owned(), r))
            .collect();
        let handled = batch::by_group(grouped, 1, |record| self.notify_one(record), Result::is_err).await;
        let failures = records
            .iter()
            .zip(&handled)
            .filter(|(_, handled)| !matches!(handled, Handled::Processed(Ok(()))))
            .map(|(record, _)| record.message_id.as_deref().unwrap_or_default());
        let mut response = SqsBatchResponse::default();
        response.set_failures(failures.collect::<Vec<_>>());
        response
    }

    /// Records the parking in the PO's history; a failure is logged and changes nothing (it is observability).
    async fn record_parking(&self, event: &NotificationEvent, parked_message_id: &str) {
        let (Some(history), Some(webhook)) = (&self.history, &event.webhook) else { return };
        let attempt = Attempt {
            sqs_message_id: Some(parked_message_id.to_owned()),
            destination: self.config.dead_letters_of.as_str().to_owned(),
            ..Attempt::new(
                webhook.po.id,
                &webhook.po.po_number,
                webhook.received_at.timestamp_millis(),
                std::time::SystemTime::now().into(),
                AttemptOutcome::Parked,
            )
        }
        .with_detail(Some("dead-lettered after its retries; parked for po-sync-admin redrive"));
        if let Err(error) = history.record(&attempt).await {
            tracing::warn!(po_id = webhook.po.id, error = %error, "the parking was not recorded in the PO's history");
        }
    }

    /// Parks a dead-lettered webhook first (when a parked queue is configured), then mails the record; logs
    /// one line for the parking and one for the e-mail.
    async fn notify_one(&self, record: &SqsMessage) -> Result<(), NotifyError> {
        let Plan { mut event, parcel } = plan_for(record);
        if parcel.is_some() {
            // A dead-lettered webhook: it failed at the destination whose queue this function drains.
            event.destination = self.config.dead_letters_of;
        }
        let po_id = event.po().map(|po| po.id);
        let po_number = event.po().map(|po| one_line(&po.po_number, 60));
        let kind = event.kind().as_str();
        let recipients = self.config.to.len();
        let sqs_message_id = record.message_id.as_deref().unwrap_or_default();
        // Without PARKED_QUEUE_URL the webhook is only mailed (main warned at cold start).
        if let (Some(parcel), Some(parked)) = (&parcel, &self.parked) {
            match park(parked, parcel).await {
                Ok(parked_message_id) => {
                    event.mark_parked();
                    po_sync_aws::metrics::webhook_parked();
                    tracing::info!(
                        po_id,
                        po_number,
                        sqs_message_id,
                        parked_message_id,
                        "dead-lettered webhook parked for a redrive"
                    );
                    self.record_parking(&event, &parked_message_id).await;
                }
                Err(error) => {
                    tracing::error!(
                        po_id,
                        po_number,
                        sqs_message_id,
                        error = %error,
                        failure = %error.failure(),
                        "dead-lettered webhook NOT parked, so not e-mailed yet; the record stays on the webhook DLQ and is retried (check PARKED_QUEUE_URL and notify's sqs:SendMessage permission)"
                    );
                    return Err(error);
                }
            }
        }
        let parked = event.is_parked();
        // The Message-ID comes from the record's body, so a redelivered record threads with its first e-mail
        // without writing the event again.
        let thread = sha256_hex(record.body.as_deref().unwrap_or_default().as_bytes());
        let outcome = self.mail(&event, &thread).await;
        if outcome.is_ok() {
            po_sync_aws::metrics::email_sent(kind);
        }
        match &outcome {
            Ok(ses_message_id) => tracing::info!(
                po_id,
                po_number,
                kind,
                parked,
                recipients,
                ses_message_id,
                sqs_message_id,
                "notification e-mail sent"
            ),
            Err(error) if error.failure() == Failure::Transient => tracing::warn!(
                po_id,
                po_number,
                kind,
                parked,
                recipients,
                sqs_message_id,
                error = %error,
                "notification e-mail not sent yet; SQS will retry"
            ),
            Err(error) => tracing::error!(
                po_id,
                po_number,
                kind,
                parked,
                recipients,
                sqs_message_id,
                error = %error,
                "notification e-mail REFUSED; fix the SES setup (verified sender, sending quota); the record goes to its queue's DLQ"
            ),
        }
        outcome.map(|_| ())
    }

    /// The archived PDFs this e-mail carries, within [`ATTACHMENT_BUDGET_BYTES`]. One that cannot be read is
    /// left out (the e-mail still names where it is kept): an attachment never holds an e-mail back.
    async fn attachments(&self, event: &NotificationEvent) -> Vec<Attachment> {
        let Some(archive) = &self.archive else { return Vec::new() };
        let mut attached = Vec::new();
        let mut total = 0;
        for link in po_sync::email::attachment_candidates(event) {
            let Some(pdf) = link.archived.as_ref().filter(|pdf| pdf.bucket == archive.bucket()) else { continue };
            if total + pdf.bytes > ATTACHMENT_BUDGET_BYTES {
                continue;
            }
            match archive.get(&pdf.key).await {
                Ok(Some(bytes)) => {
                    total += bytes.len() as u64;
                    attached.push(Attachment { invoice_number: link.invoice_number.clone(), bytes });
                }
                Ok(None) => tracing::warn!(key = %pdf.key, "an archived invoice PDF is missing; the e-mail names it"),
                Err(error) => {
                    tracing::warn!(key = %pdf.key, error = %error, "an archived invoice PDF could not be read; the e-mail names it")
                }
            }
        }
        attached
    }

    /// Renders the event, builds the MIME message and hands it to the sender; returns the provider's id.
    async fn mail(&self, event: &NotificationEvent, thread: &str) -> Result<String, NotifyError> {
        let attachments = self.attachments(event).await;
        let attached: Vec<&str> = attachments.iter().map(|a| a.invoice_number.as_str()).collect();
        let email = po_sync::email::render_with_attachments(event, &self.config.email, &attached)
            .map_err(|e| NotifyError::Unwritable(e.to_string()))?;
        let raw = mime_message(&self.config, &email, &attachments, &message_id_for(thread, event, &self.config))
            .map_err(|e| NotifyError::Unwritable(format!("the MIME message could not be built: {e}")))?;
        self.email.send_raw(self.config.from.address.as_str(), raw).await.map_err(NotifyError::NotSent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use po_sync::message::{NotificationDetail, NotificationKind, WebhookEnvelope};
    use po_sync_aws::mail::MemoryEmailSender;
    use po_sync_aws::objects::MemoryObjectStore;
    use po_sync_aws::queue::MemoryFifoQueue;

    #[test]
    fn attempts_are_the_receives_before_this_one() {
        assert_eq!(delivery_attempts(Some("6")), Some(5));
        assert_eq!(delivery_attempts(Some(" 2 ")), Some(1));
        // A count of 1 (a message put straight on the DLQ by hand) is still "1 attempt", not 0.
        assert_eq!(delivery_attempts(Some("1")), Some(1));
        assert_eq!(delivery_attempts(Some("many")), None);
        assert_eq!(delivery_attempts(None), None);
    }

    fn dlq_record(body: &str, group: Option<&str>) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some("m-dead".into());
        record.body = Some(body.into());
        record.attributes.insert(RECEIVE_COUNT_ATTRIBUTE.to_owned(), "6".to_owned());
        if let Some(group) = group {
            record.attributes.insert(MESSAGE_GROUP_ATTRIBUTE.to_owned(), group.to_owned());
        }
        record
    }

    #[test]
    fn a_dead_lettered_webhook_is_parked_byte_for_byte_in_its_own_group() {
        // Odd spacing on purpose: the parcel is the body as received, not a re-serialisation of the envelope.
        let body = po_sync_test_support::fixture("komet-clean-po.json");
        let envelope = WebhookEnvelope::new(po_sync::komet::parse_webhook(&body).unwrap(), &body, chrono::Utc::now());
        let json = envelope.to_json().replacen(',', " ,\n ", 1);
        assert_ne!(json, envelope.to_json());

        let plan = plan_for(&dlq_record(&json, Some("group-from-sqs")));
        assert_eq!(plan.event.kind(), NotificationKind::DeadLettered);
        assert!(!plan.event.is_parked(), "parked is set only once the parking succeeded");
        let parcel = plan.parcel.unwrap();
        assert_eq!(parcel.body, json);
        assert_eq!(parcel.group_id, "group-from-sqs");
        assert_eq!(parcel.deduplication_id, "m-dead", "the dead letter's own message id");

        // Without the attribute (or with an empty one) the group is the PO id, as ingest sets it.
        for group in [None, Some(" ")] {
            assert_eq!(plan_for(&dlq_record(&json, group)).parcel.unwrap().group_id, "48213");
        }
    }

    #[test]
    fn a_dead_lettered_claim_check_is_parked_byte_for_byte_and_mailed_with_its_po() {
        let body = po_sync_test_support::fixture("komet-clean-po.json");
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T09:00:00.123Z").unwrap().to_utc();
        let envelope =
            WebhookEnvelope::new(po_sync::komet::parse_webhook(&body).unwrap(), &body, at).with_send_id("req-big");
        let pointer = po_sync::message::BodyRef::of(&envelope, "archive", "bodies/48213/req-big.json");
        let json = pointer.to_json().replacen(',', " , ", 1);

        let plan = plan_for(&dlq_record(&json, Some("48213")));
        let parcel = plan.parcel.expect("a claim check is parked");
        assert_eq!(parcel.body, json, "byte for byte");
        assert_eq!((parcel.group_id.as_str(), parcel.deduplication_id.as_str()), ("48213", "m-dead"));
        assert_eq!(plan_for(&dlq_record(&json, None)).parcel.unwrap().group_id, "48213");

        let event = plan.event;
        assert_eq!(event.kind(), NotificationKind::DeadLettered);
        let NotificationDetail::DeadLettered { attempts, sqs_message_id, parked } = &event.detail else { panic!() };
        assert_eq!((*attempts, sqs_message_id.as_str(), *parked), (Some(5), "m-dead", false));
        let webhook = event.webhook.as_ref().unwrap();
        assert_eq!((webhook.po.id, webhook.po.po_number.as_str()), (48213, "P004410"));
        assert_eq!((webhook.received_at, webhook.body_sha256.as_str()), (at, envelope.body_sha256.as_str()));
        assert!(webhook.invoice_links.is_empty());
        let email = po_sync::email::render_with_attachments(&event, &memory_notifier(true).config.email, &[]).unwrap();
        assert!(email.subject.contains("P004410"), "{}", email.subject);
    }

    #[test]
    fn only_readable_dead_letters_are_parked() {
        let envelope_type_but_broken = r#"{"type":"komet.po_reconciliation","schemaVersion":1,"po":{}}"#;
        for body in ["not json", envelope_type_but_broken, r#"{"type":"po_sync.notification","schemaVersion":9}"#] {
            let plan = plan_for(&dlq_record(body, Some("1")));
            assert_eq!(plan.event.kind(), NotificationKind::PoisonMessage, "{body}");
            assert!(plan.parcel.is_none(), "{body}");
        }
        let event = NotificationEvent::poison("x", "m-1");
        assert!(plan_for(&dlq_record(&event.to_json(), None)).parcel.is_none());
        // `parked` belongs to the dead letter's detail only, and survives the queue.
        assert!(!event.to_json().contains("parked"));
        let mut dead = plan_for(&dlq_record(&dead_letter_json(), None)).event;
        dead.mark_parked();
        assert!(NotificationEvent::from_json(&dead.to_json()).unwrap().is_parked());
    }

    #[test]
    fn unreadable_bodies_become_poison_events_naming_the_sqs_message() {
        for body in
            ["", "not json", r#"{"type":"something.else"}"#, r#"{"type":"po_sync.notification","schemaVersion":9}"#]
        {
            let mut record = SqsMessage::default();
            record.message_id = Some("m-1".into());
            record.body = Some(body.into());
            let event = event_for(&record);
            let NotificationDetail::PoisonMessage { problem, sqs_message_id } = &event.detail else {
                panic!("{body}: {event:?}")
            };
            assert_eq!(sqs_message_id, "m-1");
            assert!(!problem.is_empty());
        }
    }

    fn memory_notifier(parked: bool) -> Notifier<MemoryEmailSender, MemoryFifoQueue, MemoryObjectStore> {
        let mut env = vec![("NOTIFY_FROM", "alerts@flowers.example.com"), ("NOTIFY_TO", "ap@flowers.example.com")];
        if parked {
            env.push(("PARKED_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/po-sync-webhooks-parked.fifo"));
        }
        let env: std::collections::HashMap<String, String> =
            env.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let config = NotifyConfig::from_env(&env).unwrap();
        Notifier {
            email: MemoryEmailSender::default(),
            parked: parked.then(MemoryFifoQueue::default),
            archive: Some(MemoryObjectStore::default()),
            history: None,
            config,
        }
    }

    fn dead_letter_json() -> String {
        let body = po_sync_test_support::fixture("komet-clean-po.json");
        let po = po_sync::komet::parse_webhook(&body).unwrap();
        WebhookEnvelope::new(po, &body, chrono::Utc::now()).with_send_id("req-1").to_json()
    }

    fn batch(records: Vec<SqsMessage>) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    #[tokio::test]
    async fn a_dead_letter_is_parked_before_it_is_mailed_as_kept() {
        let notifier = memory_notifier(true);
        let response = notifier.handle(batch(vec![dlq_record(&dead_letter_json(), Some("48213"))])).await;
        assert!(failed(&response).is_empty());
        let parked = notifier.parked.as_ref().unwrap().messages();
        assert_eq!(parked.len(), 1);
        assert_eq!((parked[0].group_id.as_str(), parked[0].deduplication_id.as_str()), ("48213", "m-dead"));
        let sent = notifier.email.sent();
        assert_eq!(sent.len(), 1);
        let text = String::from_utf8_lossy(&sent[0].mime);
        assert!(text.contains("parked queue"), "the e-mail says the webhook was kept");
    }

    #[tokio::test]
    async fn notify_exsited_mails_its_dead_letters_as_exsited_s() {
        let mut notifier = memory_notifier(true);
        notifier.config.dead_letters_of = po_sync::destination::Destination::Exsited;
        let response = notifier.handle(batch(vec![dlq_record(&dead_letter_json(), Some("48213"))])).await;
        assert!(failed(&response).is_empty());
        let sent = notifier.email.sent();
        let text = String::from_utf8_lossy(&sent[0].mime);
        assert!(text.contains("Exsited or the network kept failing"), "{text}");
        assert!(!text.contains("AppZen"), "an Exsited dead letter never names AppZen: {text}");
    }

    #[tokio::test]
    async fn a_dead_letter_that_cannot_be_parked_is_not_mailed_and_holds_back_the_rest() {
        let notifier = memory_notifier(true);
        notifier.parked.as_ref().unwrap().fail_next(1, Failure::Transient);
        let event = NotificationEvent::poison("x", "m-0").to_json();
        let mut later = SqsMessage::default();
        later.message_id = Some("m-later".into());
        later.body = Some(event);
        let response = notifier.handle(batch(vec![dlq_record(&dead_letter_json(), None), later])).await;
        assert_eq!(failed(&response), ["m-dead", "m-later"]);
        assert!(notifier.email.sent().is_empty());
    }

    #[tokio::test]
    async fn a_refused_e_mail_is_a_batch_failure_for_it_and_every_later_record() {
        let notifier = memory_notifier(false);
        notifier.email.fail_next(1, Failure::Permanent);
        let first = dlq_record(&NotificationEvent::poison("x", "m-0").to_json(), None);
        let mut second = first.clone();
        second.message_id = Some("m-second".into());
        let response = notifier.handle(batch(vec![first, second])).await;
        assert_eq!(failed(&response), ["m-dead", "m-second"]);
        assert!(notifier.email.sent().is_empty(), "the later record was not started");
        // The next delivery goes through.
        let response = notifier.handle(batch(vec![dlq_record(&dead_letter_json(), None)])).await;
        assert!(failed(&response).is_empty());
        let sent = notifier.email.sent();
        assert_eq!((sent.len(), sent[0].source.as_str()), (1, "alerts@flowers.example.com"));
        assert!(!String::from_utf8_lossy(&sent[0].mime).contains("parked queue"), "nothing was parked");
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_mailed_holds_back_only_its_own_group() {
        let notifier = memory_notifier(false);
        notifier.email.fail_next(1, Failure::Transient);
        let event = |id: &str| NotificationEvent::poison("x", id).to_json();
        let in_group = |id: &str, group: &str| {
            let mut record = dlq_record(&event(id), Some(group));
            record.message_id = Some(id.into());
            record
        };
        let records = vec![in_group("a1", "a"), in_group("b1", "b"), in_group("a2", "a"), in_group("c1", "c")];
        let response = notifier.handle(batch(records)).await;
        assert_eq!(failed(&response), ["a1", "a2"], "a2 waits behind a1; b and c are mailed");
        assert_eq!(notifier.email.sent().len(), 2);
    }

    #[test]
    fn kinds_are_named_as_serde_names_them() {
        for kind in [
            NotificationKind::ReconciliationMismatch,
            NotificationKind::MappingError,
            NotificationKind::AppzenRejected,
            NotificationKind::ExsitedRejected,
            NotificationKind::CancelledAtDestination,
            NotificationKind::DeadLettered,
            NotificationKind::PoisonMessage,
            NotificationKind::AppzenOutage,
            NotificationKind::ExsitedOutage,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert!(po_sync_aws::metrics::EMAIL_KINDS.contains(&kind.as_str()), "{kind:?} is on the dashboard");
        }
    }

    /// A mismatch about the clean PO, with its two invoice links archived (sizes as given) and the first one
    /// discrepant; the bucket holds both PDFs.
    fn archived_mismatch(
        notifier: &Notifier<MemoryEmailSender, MemoryFifoQueue, MemoryObjectStore>,
        sizes: [usize; 2],
    ) -> String {
        use po_sync::archive::ArchivedPdf;
        use po_sync::reconcile::{Discrepancy, Rule};
        let body = po_sync_test_support::fixture("komet-clean-po.json");
        let envelope = WebhookEnvelope::new(po_sync::komet::parse_webhook(&body).unwrap(), &body, chrono::Utc::now());
        let discrepancy = Discrepancy {
            rule: Rule::InvoiceItems,
            invoice_number: Some("01-P004410".into()),
            expected: po_sync::Decimal::new(100, 2),
            actual: po_sync::Decimal::new(200, 2),
            difference: po_sync::Decimal::new(100, 2),
        };
        let mut event = NotificationEvent::about(
            &envelope,
            NotificationDetail::ReconciliationMismatch {
                discrepancies: vec![
                    discrepancy.clone(),
                    Discrepancy { invoice_number: Some("01-P004411".into()), ..discrepancy },
                ],
                forwarded_to_appzen: false,
            },
        );
        let store = notifier.archive.as_ref().unwrap();
        for (link, size) in event.webhook.as_mut().unwrap().invoice_links.iter_mut().zip(sizes) {
            let mut pdf = b"%PDF-1.7\n".to_vec();
            pdf.resize(size, b'x');
            let key = format!("invoices/48213/{}/k.pdf", link.invoice_number);
            let metadata = [];
            let object = po_sync_aws::objects::NewObject {
                key: &key,
                bytes: pdf.into(),
                content_type: "application/pdf",
                metadata: &metadata,
            };
            futures_executor_block_on(store.put(&object)).unwrap();
            link.archived =
                Some(ArchivedPdf { bucket: store.bucket().into(), key, sha256: "k".into(), bytes: size as u64 });
        }
        event.to_json()
    }

    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    fn attachments_of(mime: &[u8]) -> Vec<(String, usize)> {
        use mail_parser::MimeHeaders;
        let message = mail_parser::MessageParser::default().parse(mime).unwrap();
        message
            .attachments()
            .map(|a| (a.attachment_name().unwrap_or_default().to_owned(), a.contents().len()))
            .collect()
    }

    #[test]
    fn the_archived_pdfs_of_the_e_mail_are_attached_within_the_budget() {
        let notifier = memory_notifier(false);
        let event = archived_mismatch(&notifier, [2_000, 3_000]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let response = runtime.block_on(notifier.handle(batch(vec![dlq_record(&event, None)])));
        assert!(failed(&response).is_empty());
        let sent = notifier.email.sent();
        assert_eq!(
            attachments_of(&sent[0].mime),
            [("invoice-01-P004410.pdf".to_owned(), 2_000), ("invoice-01-P004411.pdf".to_owned(), 3_000)]
        );
        let text = String::from_utf8_lossy(&sent[0].mime).into_owned();
        assert!(text.contains("(attached)"), "the e-mail says which PDFs it carries");
    }

    #[test]
    fn pdfs_beyond_the_budget_are_named_by_their_archived_location_instead() {
        let notifier = memory_notifier(false);
        let big = (ATTACHMENT_BUDGET_BYTES - 1_000) as usize;
        let event = archived_mismatch(&notifier, [big, 5_000]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(notifier.handle(batch(vec![dlq_record(&event, None)])));
        let sent = notifier.email.sent();
        assert_eq!(attachments_of(&sent[0].mime), [("invoice-01-P004410.pdf".to_owned(), big)]);
        let message = mail_parser::MessageParser::default().parse(&sent[0].mime).unwrap();
        let text = message.body_text(0).unwrap().into_owned();
        let named = "kept by po-sync as s3://memory-bucket/invoices/48213/01-P004411/k.pdf";
        assert!(text.lines().any(|line| line.trim() == named), "named, not attached: {text}");
        assert!(text.contains("invoices/48213/01-P004410/k.pdf (attached)"), "{text}");
    }
}
