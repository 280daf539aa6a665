//! notify: turns notification events (from reconcile) and dead-lettered webhooks (from the webhook DLQ)
//! into e-mails sent through Amazon SES to the people Komet would tell about an error.
//!
//! Per SQS record, in order: [`plan_for`] decides what happened and whether the record is a dead-lettered
//! webhook to keep (pure); [`park`] puts such a webhook, unchanged, on the parked queue (I/O, only when
//! `PARKED_QUEUE_URL` is set); [`po_sync::email::render`] writes the e-mail (pure), [`mime_message`] builds the
//! MIME message (pure) and [`send`] hands it to SES (I/O). At the first record that could not be parked or
//! mailed, that record and every later one are reported as batch failures: the queues are FIFO, so a later
//! record must not overtake an earlier one.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_ses::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ses::primitives::Blob;
use aws_sdk_ses::types::RawMessage;
use lambda_runtime::{Error, LambdaEvent};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MimeAddress;
use po_sync::config::notify::NotifyConfig;
use po_sync::decision::fifo_failures;
use po_sync::email::{Email, dead_lettered, one_line, render};
use po_sync::message::{ENVELOPE_TYPE, NOTIFICATION_TYPE, NotificationEvent, WebhookEnvelope, message_type};

/// What notify needs, built once per cold start and shared by every invocation.
pub struct Notifier {
    pub ses: aws_sdk_ses::Client,
    /// Sends dead-lettered webhooks to the parked queue (`config.parked_queue_url`).
    pub sqs: aws_sdk_sqs::Client,
    pub config: NotifyConfig,
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

/// A dead-lettered webhook as it goes to the parked queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parcel {
    /// The DLQ record's body, byte for byte: a redrive puts on `webhooks.fifo` exactly what ingest put there.
    pub body: String,
    /// The record's own group (the PO id, as ingest set it), so a redrive keeps each PO's order.
    pub group_id: String,
    /// The envelope's `body_sha256`, as ingest used it: a second parking of the same webhook within SQS's
    /// five-minute window (an e-mail that failed after the parking, retried) is dropped by SQS.
    pub deduplication_id: String,
}

/// What notify does with one SQS record: always mail `event`; first park `parcel`, when there is one.
#[derive(Debug, Clone)]
pub struct Plan {
    pub event: NotificationEvent,
    /// `Some` for a readable dead-lettered webhook. An unreadable one is mailed as poison and not parked:
    /// redriving it would only fail reconcile again.
    pub parcel: Option<Parcel>,
}

/// Reads one SQS record into the event to mail. Pure and total: whatever the body, there is an event.
pub fn event_for(record: &SqsMessage) -> NotificationEvent {
    plan_for(record).event
}

/// Reads one SQS record into what to do with it. Pure and total.
pub fn plan_for(record: &SqsMessage) -> Plan {
    let message_id = record.message_id.clone().unwrap_or_else(|| "(no message id)".to_owned());
    let body = record.body.as_deref().unwrap_or_default();
    let mail = |event: NotificationEvent| Plan { event, parcel: None };
    match message_type(body).as_deref() {
        Some(NOTIFICATION_TYPE) => match NotificationEvent::from_json(body) {
            Ok(event) => mail(event),
            Err(e) => {
                mail(NotificationEvent::poison(format!("a notification event that cannot be read: {e}"), message_id))
            }
        },
        Some(ENVELOPE_TYPE) => match WebhookEnvelope::from_json(body) {
            Ok(envelope) => {
                let attempts = delivery_attempts(record.attributes.get(RECEIVE_COUNT_ATTRIBUTE).map(String::as_str));
                let group_id = record
                    .attributes
                    .get(MESSAGE_GROUP_ATTRIBUTE)
                    .filter(|group| !group.trim().is_empty())
                    .cloned()
                    .unwrap_or_else(|| envelope.po.id.to_string());
                let parcel = Parcel { body: body.to_owned(), group_id, deduplication_id: envelope.body_sha256.clone() };
                Plan { event: dead_lettered(&envelope, attempts, &message_id), parcel: Some(parcel) }
            }
            Err(e) => {
                mail(NotificationEvent::poison(format!("a dead-lettered webhook that cannot be read: {e}"), message_id))
            }
        },
        Some(other) => mail(NotificationEvent::poison(
            format!(
                "a message of unknown type {:?}; po-sync reads {NOTIFICATION_TYPE:?} and {ENVELOPE_TYPE:?}",
                one_line(other, 80)
            ),
            message_id,
        )),
        None => mail(NotificationEvent::poison(
            format!("a message that is not a po-sync message ({} bytes, not JSON with a \"type\")", body.len()),
            message_id,
        )),
    }
}

/// Why a dead-lettered webhook was not parked (throttling, a missing queue, no permission): whatever the
/// cause, the record is a batch failure, so it stays on the webhook DLQ and nothing is mailed as kept.
#[derive(Debug, thiserror::Error)]
#[error("the dead-lettered webhook could not be parked: {0}")]
pub struct ParkError(String);

/// Puts a dead-lettered webhook on the parked queue; returns the parked message's SQS id.
pub async fn park(sqs: &aws_sdk_sqs::Client, queue_url: &str, parcel: &Parcel) -> Result<String, ParkError> {
    let result = sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(parcel.body.as_str())
        .message_group_id(parcel.group_id.as_str())
        .message_deduplication_id(parcel.deduplication_id.as_str())
        .send()
        .await;
    match result {
        Ok(output) => Ok(output.message_id().unwrap_or_default().to_owned()),
        Err(e) => Err(ParkError(match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
        })),
    }
}

/// Why a record was not handled; both are reported as batch failures.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    NotParked(#[from] ParkError),
    #[error(transparent)]
    NotSent(#[from] SendError),
}

/// Why an e-mail was not sent. Both kinds are reported as batch failures (nothing is dropped); they differ in
/// what a person must do: wait (SQS retries) or fix the setup (the record ends in the notification DLQ).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Throttling, a timeout, a 5xx: retrying later will likely work.
    #[error("SES is unavailable for now: {0}")]
    Transient(String),
    /// Unverified sender, paused account, a message SES refuses: retrying will not help.
    #[error("SES refused the e-mail: {0}")]
    Permanent(String),
}

/// Builds the MIME message handed to SES.
///
/// Why `SendRawEmail` with a MIME multipart/alternative message rather than `SendEmail`: the message is then
/// exactly what recipients get, text and HTML parts both, and the same bytes are what moto records, so the
/// integration tests check both bodies as sent (moto's `SendEmail` keeps only the HTML one). mail-builder also
/// encodes a non-ASCII subject and display name per RFC 2047 and folds long headers, which `SendEmail` leaves
/// to SES. The subject is already one line (`po_sync::email::subject`), so no payload text can become a header.
pub fn mime_message(config: &NotifyConfig, email: &Email, message_id: &str) -> Result<Vec<u8>, std::io::Error> {
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
    builder.write_to_vec()
}

/// A Message-ID derived from the event, so a redelivered event that is mailed again threads with (and is
/// recognisable as) the first copy.
pub fn message_id_for(event: &NotificationEvent, config: &NotifyConfig) -> String {
    format!("po-sync.{}@{}", &event.deduplication_id()[..32], config.from.address.domain())
}

/// Hands the message to SES; returns SES's message id.
pub async fn send(ses: &aws_sdk_ses::Client, config: &NotifyConfig, raw: Vec<u8>) -> Result<String, SendError> {
    // Destinations come from the To header (SES reads them when the parameter is absent), so the envelope and
    // what recipients see cannot differ.
    let result = ses
        .send_raw_email()
        .source(config.from.address.as_str())
        .raw_message(
            RawMessage::builder().data(Blob::new(raw)).build().map_err(|e| SendError::Permanent(e.to_string()))?,
        )
        .send()
        .await;
    match result {
        Ok(output) => Ok(output.message_id().to_owned()),
        Err(e) => Err(classify(e)),
    }
}

/// Transient or permanent, from the error's kind, code and HTTP status. Throttling and 5xx are transient even
/// after the SDK's own retries: SQS retries the record later. Anything else SES said (MessageRejected for an
/// unverified sender, AccountSendingPaused, an invalid parameter) needs a person.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    error: SdkError<E, aws_sdk_ses::config::http::HttpResponse>,
) -> SendError {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let message = match (&code, error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => aws_sdk_ses::error::DisplayErrorContext(&error).to_string(),
    };
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SendError::Transient(message)
        }
        _ if matches!(
            code.as_deref(),
            Some("Throttling" | "ThrottlingException" | "ServiceUnavailable" | "RequestTimeout")
        ) =>
        {
            SendError::Transient(message)
        }
        _ if matches!(status, Some(500..=599)) => SendError::Transient(message),
        _ => SendError::Permanent(message),
    }
}

/// Parks a dead-lettered webhook first (when a parked queue is configured), then mails the record; logs one
/// line for the parking and one for the e-mail.
async fn notify_one(notifier: &Notifier, record: &SqsMessage) -> Result<(), NotifyError> {
    let Plan { mut event, parcel } = plan_for(record);
    let po_id = event.po.as_ref().map(|po| po.id);
    let po_number = event.po.as_ref().map(|po| one_line(&po.po_number, 60));
    let kind = event.kind.as_str();
    let recipients = notifier.config.to.len();
    let sqs_message_id = record.message_id.as_deref().unwrap_or_default();
    // Without PARKED_QUEUE_URL the webhook is only mailed (main warned at cold start).
    if let (Some(parcel), Some(queue_url)) = (&parcel, &notifier.config.parked_queue_url) {
        match park(&notifier.sqs, queue_url, parcel).await {
            Ok(parked_message_id) => {
                event.parked = true;
                tracing::info!(
                    po_id,
                    po_number,
                    sqs_message_id,
                    parked_message_id,
                    "dead-lettered webhook parked for a redrive"
                );
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!(
                    po_id,
                    po_number,
                    sqs_message_id,
                    error,
                    "dead-lettered webhook NOT parked, so not e-mailed yet; the record stays on the webhook DLQ and is retried (check PARKED_QUEUE_URL and notify's sqs:SendMessage permission)"
                );
                return Err(e.into());
            }
        }
    }
    let parked = event.parked;
    let outcome = async {
        let email = render(&event, &notifier.config.email).map_err(|e| SendError::Permanent(e.to_string()))?;
        let raw = mime_message(&notifier.config, &email, &message_id_for(&event, &notifier.config))
            .map_err(|e| SendError::Permanent(format!("the MIME message could not be built: {e}")))?;
        send(&notifier.ses, &notifier.config, raw).await
    }
    .await;
    match &outcome {
        Ok(ses_message_id) => {
            tracing::info!(
                po_id,
                po_number,
                kind,
                parked,
                recipients,
                ses_message_id,
                sqs_message_id,
                "notification e-mail sent"
            )
        }
        Err(SendError::Transient(error)) => tracing::warn!(
            po_id,
            po_number,
            kind,
            parked,
            recipients,
            sqs_message_id,
            error,
            "notification e-mail not sent yet; SQS will retry"
        ),
        Err(SendError::Permanent(error)) => tracing::error!(
            po_id,
            po_number,
            kind,
            parked,
            recipients,
            sqs_message_id,
            error,
            "notification e-mail REFUSED by SES; fix the SES setup (verified sender, sending quota); the record goes to its queue's DLQ"
        ),
    }
    outcome.map(|_| ()).map_err(NotifyError::from)
}

/// The Lambda handler: one e-mail per record, partial batch failures in FIFO order.
pub async fn handle(notifier: &Notifier, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let mut first_failure = None;
    for (index, record) in records.iter().enumerate() {
        if notify_one(notifier, record).await.is_err() {
            // Keep FIFO order: nothing after a failure is processed in this invocation.
            first_failure = Some(index);
            break;
        }
    }
    let ids: Vec<&str> = records.iter().map(|r| r.message_id.as_deref().unwrap_or_default()).collect();
    let mut response = SqsBatchResponse::default();
    response.set_failures(fifo_failures(&ids, first_failure));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use po_sync::message::NotificationKind;

    #[test]
    fn throttling_timeouts_and_5xx_are_transient_and_refusals_permanent() {
        use aws_sdk_ses::config::http::HttpResponse;
        use aws_sdk_ses::error::ErrorMetadata;
        use aws_sdk_ses::operation::send_raw_email::SendRawEmailError;
        use aws_smithy_types::body::SdkBody;
        let service = |code: &str, status: u16| {
            SdkError::service_error(
                SendRawEmailError::generic(ErrorMetadata::builder().code(code).message("m").build()),
                HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
            )
        };
        assert!(matches!(classify(service("Throttling", 400)), SendError::Transient(m) if m == "Throttling: m"));
        assert!(matches!(classify(service("InternalFailure", 500)), SendError::Transient(_)));
        assert!(matches!(classify(service("ServiceUnavailable", 503)), SendError::Transient(_)));
        assert!(
            matches!(classify(service("MessageRejected", 400)), SendError::Permanent(m) if m == "MessageRejected: m")
        );
        assert!(matches!(classify(service("AccountSendingPausedException", 400)), SendError::Permanent(_)));
        let timeout: SdkError<SendRawEmailError, HttpResponse> = SdkError::timeout_error("operation timed out");
        assert!(matches!(classify(timeout), SendError::Transient(_)));
    }

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
        let body = po_sync_tests::fixture("komet-clean-po.json");
        let envelope = WebhookEnvelope::new(po_sync::komet::parse_webhook(&body).unwrap(), &body, chrono::Utc::now());
        let json = envelope.to_json().unwrap().replacen(',', " ,\n ", 1);
        assert_ne!(json, envelope.to_json().unwrap());

        let plan = plan_for(&dlq_record(&json, Some("group-from-sqs")));
        assert_eq!(plan.event.kind, NotificationKind::DeadLettered);
        assert!(!plan.event.parked, "parked is set only once the parking succeeded");
        let parcel = plan.parcel.unwrap();
        assert_eq!(parcel.body, json);
        assert_eq!(parcel.group_id, "group-from-sqs");
        assert_eq!(parcel.deduplication_id, envelope.body_sha256);

        // Without the attribute (or with an empty one) the group is the PO id, as ingest sets it.
        for group in [None, Some(" ")] {
            assert_eq!(plan_for(&dlq_record(&json, group)).parcel.unwrap().group_id, "48213");
        }
    }

    #[test]
    fn only_readable_dead_letters_are_parked() {
        let envelope_type_but_broken = r#"{"type":"komet.po_reconciliation","schemaVersion":1,"po":{}}"#;
        for body in ["not json", envelope_type_but_broken, r#"{"type":"po_sync.notification","schemaVersion":9}"#] {
            let plan = plan_for(&dlq_record(body, Some("1")));
            assert_eq!(plan.event.kind, NotificationKind::PoisonMessage, "{body}");
            assert!(plan.parcel.is_none(), "{body}");
        }
        let mut event = NotificationEvent::poison("x", "m-1");
        assert!(plan_for(&dlq_record(&event.to_json().unwrap(), None)).parcel.is_none());
        // `parked` is left out of the JSON when false, so the events reconcile writes are unchanged.
        assert!(!event.to_json().unwrap().contains("parked"));
        event.parked = true;
        assert!(NotificationEvent::from_json(&event.to_json().unwrap()).unwrap().parked);
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
            assert_eq!(event.kind, NotificationKind::PoisonMessage, "{body}");
            assert_eq!(event.sqs_message_id.as_deref(), Some("m-1"));
            assert!(event.detail.is_some());
        }
    }
}
