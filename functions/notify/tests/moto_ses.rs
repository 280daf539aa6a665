//! notify against moto server with the real aws-sdk-ses (and aws-sdk-sqs for the dead-letter count): the
//! e-mail is read back from moto as sent (`SendRawEmail` keeps the whole MIME message) and parsed, so the
//! subject, both bodies and the headers are checked as recipients would get them.
//!
//! `UPDATE_FIXTURES=1 cargo test -p notify --test moto_ses` rewrites `tests/fixtures/*.json` from the shared
//! fixtures (the same envelope and event reconcile and ingest write).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use mail_parser::{Address, MessageParser, MimeHeaders};
use notify::{Notifier, NotifyError};
use po_sync::config::notify::NotifyConfig;
use po_sync::email::{EmailSettings, render};
use po_sync::message::{NotificationDetail, NotificationEvent, WebhookEnvelope};
use po_sync::reconcile::{Tolerance, reconcile};
use po_sync_aws::mail::{EmailSender, SesEmailSender};
use po_sync_aws::port::Failure;
use po_sync_aws::queue::SqsFifoQueue;
use po_sync_test_support::moto::MotoServer;
use po_sync_test_support::{DOC_SAMPLE, env_map, envelope, sqs_event, sqs_record as record};
use serde_json::Value;
use std::path::PathBuf;

const FROM: &str = "po-sync <alerts@flowers.example.com>";
const TO: &str = "ap@flowers.example.com, buyer@flowers.example.com, AP@flowers.example.com";

fn config(extra: &[(&'static str, &'static str)]) -> NotifyConfig {
    let mut env = env_map(&[("NOTIFY_FROM", FROM), ("NOTIFY_TO", TO), ("NOTIFY_REPLY_TO", "it@flowers.example.com")]);
    env.extend(env_map(extra));
    env.retain(|_, v| !v.is_empty());
    NotifyConfig::from_env(&env).unwrap()
}

type MotoNotifier = Notifier<SesEmailSender, SqsFifoQueue>;

async fn notifier(moto: &MotoServer, verify_sender: bool) -> MotoNotifier {
    notifier_with(moto, verify_sender, &[]).await
}

async fn notifier_with(moto: &MotoServer, verify_sender: bool, extra: &[(&'static str, &'static str)]) -> MotoNotifier {
    let aws = moto.sdk_config().await;
    let ses = aws_sdk_ses::Client::new(&aws);
    if verify_sender {
        ses.verify_email_identity().email_address("alerts@flowers.example.com").send().await.unwrap();
    }
    Notifier::start(config(extra), &aws)
}

/// A FIFO queue on moto, as the stack creates the parked queue; returns its URL.
async fn fifo_queue(moto: &MotoServer, name: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    po_sync_test_support::moto::create_fifo_queue(&sqs, name, None, None).await.unwrap()
}

/// Every message on a queue (one receive of up to 10 suffices for these tests), with all system attributes.
async fn messages_on(moto: &MotoServer, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let got = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    got.messages().to_vec()
}

/// `PARKED_QUEUE_URL` must be `'static` in `config`; the URL is known only once moto runs.
fn leak(url: String) -> &'static str {
    Box::leak(url.into_boxed_str())
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn doc_sample_envelope() -> WebhookEnvelope {
    envelope(DOC_SAMPLE)
}

fn mismatch_event() -> NotificationEvent {
    let envelope = doc_sample_envelope();
    let discrepancies = reconcile(&envelope.po, Tolerance::CENT).discrepancies;
    NotificationEvent::about(
        &envelope,
        NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen: false },
    )
}

fn failures(response: &SqsBatchResponse) -> Vec<&str> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
}

/// A fixture event file; checked against what the code writes today, so it cannot drift from the formats.
fn fixture_event(name: &str, expected_body: &str) -> SqsEvent {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut event: SqsEvent = serde_json::from_str(&text).unwrap();
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        event.records[0].body = Some(expected_body.to_owned());
        let mut json: Value = serde_json::from_str(&text).unwrap();
        json["Records"][0]["body"] = Value::String(expected_body.to_owned());
        std::fs::write(&path, format!("{}\n", serde_json::to_string_pretty(&json).unwrap())).unwrap();
    }
    assert_eq!(event.records[0].body.as_deref(), Some(expected_body), "{name} is stale: UPDATE_FIXTURES=1");
    event
}

/// One e-mail as moto recorded it, parsed.
struct Sent {
    source: String,
    destinations: Vec<String>,
    raw: String,
}

impl Sent {
    fn all(moto: &MotoServer) -> Vec<Sent> {
        moto.sent_emails()
            .iter()
            .map(|m| Sent {
                source: m["source"].as_str().unwrap_or_default().to_owned(),
                destinations: m["destinations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_owned())
                    .collect(),
                raw: m["raw_data"].as_str().expect("SendRawEmail keeps raw_data").to_owned(),
            })
            .collect()
    }
}

fn addresses(address: Option<&Address>) -> Vec<String> {
    address.map(|a| a.iter().filter_map(|a| a.address.as_deref().map(str::to_owned)).collect()).unwrap_or_default()
}

fn lf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[tokio::test]
async fn a_notification_event_is_mailed_with_subject_text_and_html_as_rendered() {
    let moto = MotoServer::start();
    let notifier = notifier(&moto, true).await;
    let event = mismatch_event();
    let sqs = fixture_event("notification-queue-event.json", &event.to_json());

    let response = notifier.handle(sqs).await;
    assert_eq!(failures(&response), Vec::<&str>::new());

    let sent = Sent::all(&moto);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].source, "alerts@flowers.example.com");
    // Duplicates in NOTIFY_TO were removed; SES took the destinations from the To header.
    assert_eq!(sent[0].destinations, ["ap@flowers.example.com", "buyer@flowers.example.com"]);

    let expected = render(&event, &EmailSettings::default()).unwrap();
    let message = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some("[po-sync] PO P002271 does not reconcile (2 discrepancies)"));
    assert_eq!(message.subject(), Some(expected.subject.as_str()));
    assert_eq!(addresses(message.from()), ["alerts@flowers.example.com"]);
    assert_eq!(message.from().and_then(|a| a.first()).and_then(|a| a.name.as_deref()), Some("po-sync"));
    assert_eq!(addresses(message.to()), ["ap@flowers.example.com", "buyer@flowers.example.com"]);
    assert_eq!(addresses(message.reply_to()), ["it@flowers.example.com"]);
    assert_eq!(message.text_body_count(), 1);
    assert_eq!(message.html_body_count(), 1);
    assert_eq!(lf(&message.body_text(0).unwrap()), expected.text);
    assert_eq!(lf(&message.body_html(0).unwrap()), expected.html);
    assert!(expected.text.contains("expected 30.00, actual 40.00, difference +10.00"));
    let content_type = message.content_type().unwrap();
    assert_eq!((content_type.ctype(), content_type.subtype()), ("multipart", Some("alternative")));
}

#[tokio::test]
async fn a_dead_lettered_webhook_is_mailed_with_the_number_of_attempts() {
    let moto = MotoServer::start();
    let notifier = notifier(&moto, true).await;
    let sqs = fixture_event("webhook-dlq-event.json", &doc_sample_envelope().to_json());
    assert_eq!(sqs.records[0].attributes["ApproximateReceiveCount"], "6");

    let response = notifier.handle(sqs).await;
    assert_eq!(failures(&response), Vec::<&str>::new());
    let sent = Sent::all(&moto);
    assert_eq!(sent.len(), 1);
    let message = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some("[po-sync] PO P002271 not delivered to AppZen after 5 attempts"));
    let text = lf(&message.body_text(0).unwrap());
    assert!(text.starts_with("Purchase order P002271 could not be delivered to AppZen after 5 attempts"), "{text}");
    assert!(text.contains("Komet PO id:   12345"), "{text}");
    assert!(message.body_html(0).unwrap().contains("after 5 attempts"));
    // No PARKED_QUEUE_URL here: the e-mail must not promise what was not done.
    assert!(!text.contains("parked queue") && text.contains("po-sync did not keep the webhook"), "{text}");
}

#[tokio::test]
async fn a_dead_lettered_webhook_is_parked_unchanged_in_its_group_and_then_mailed_as_parked() {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let moto = MotoServer::start();
    let parked_url = fifo_queue(&moto, "po-sync-webhooks-parked.fifo").await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    po_sync_test_support::moto::create_history_table(&dynamodb, "po-sync-history").await.unwrap();
    let notifier = notifier_with(
        &moto,
        true,
        &[("PARKED_QUEUE_URL", leak(parked_url.clone())), ("HISTORY_TABLE_NAME", "po-sync-history")],
    )
    .await;
    let envelope = doc_sample_envelope();
    let sqs = fixture_event("webhook-dlq-event.json", &envelope.to_json());
    let original_body = sqs.records[0].body.clone().unwrap();
    let dlq_message_id = sqs.records[0].message_id.clone().unwrap();
    // A group different from the PO id, to see that the record's own group is kept.
    let mut sqs = sqs;
    sqs.records[0].attributes.insert("MessageGroupId".to_owned(), "12345-group".to_owned());

    let response = notifier.handle(sqs).await;
    assert_eq!(failures(&response), Vec::<&str>::new());

    let parked = messages_on(&moto, &parked_url).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].body(), Some(original_body.as_str()), "the body is parked byte for byte");
    let attributes = parked[0].attributes().unwrap();
    assert_eq!(attributes[&MessageSystemAttributeName::MessageGroupId], "12345-group");
    // Deduplicated by the dead letter's own message id: one parking per dead letter, even if mailed twice.
    assert_eq!(attributes[&MessageSystemAttributeName::MessageDeduplicationId], dlq_message_id);
    // What a redrive puts back on webhooks.fifo is what reconcile reads.
    assert_eq!(WebhookEnvelope::from_json(parked[0].body().unwrap()).unwrap(), envelope);
    // The PO's history says the version was parked, under the parked message's id.
    let history = po_sync_aws::ledger::DynamoHistory::reader(dynamodb, "po-sync-history");
    let attempts = history.list(envelope.po.id, 10).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].outcome, po_sync::history::AttemptOutcome::Parked);
    assert_eq!(attempts[0].version, envelope.version());
    assert_eq!(attempts[0].sqs_message_id.as_deref(), parked[0].message_id());

    let sent = Sent::all(&moto);
    assert_eq!(sent.len(), 1);
    let message = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some("[po-sync] PO P002271 not delivered to AppZen after 5 attempts"));
    let text = lf(&message.body_text(0).unwrap());
    assert!(
        text.contains(
            "The webhook is kept for 14 days in po-sync's parked queue and can be redriven after the cause is fixed"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_dead_letter_without_a_group_attribute_is_parked_in_the_po_group_and_a_notification_is_not_parked() {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let moto = MotoServer::start();
    let parked_url = fifo_queue(&moto, "po-sync-webhooks-parked.fifo").await;
    let notifier = notifier_with(&moto, true, &[("PARKED_QUEUE_URL", leak(parked_url.clone()))]).await;
    let dead = record("m-dead", doc_sample_envelope().to_json());
    let notification = record("m-event", mismatch_event().to_json());

    let response = notifier.handle(sqs_event(vec![dead, notification])).await;
    assert_eq!(failures(&response), Vec::<&str>::new());
    let parked = messages_on(&moto, &parked_url).await;
    assert_eq!(parked.len(), 1, "only the dead letter is parked");
    assert_eq!(parked[0].attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId], "12345");
    assert_eq!(Sent::all(&moto).len(), 2);
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_parked_is_a_batch_failure_and_is_not_mailed() {
    let moto = MotoServer::start();
    // A queue URL of the right shape on moto's endpoint, for a queue that does not exist.
    let missing = format!("{}/123456789012/po-sync-webhooks-parked.fifo", moto.endpoint_url().trim_end_matches('/'));
    let notifier = notifier_with(&moto, true, &[("PARKED_QUEUE_URL", leak(missing))]).await;
    let dead = record("m-dead", doc_sample_envelope().to_json());
    let later = record("m-later", mismatch_event().to_json());

    let response = notifier.handle(sqs_event(vec![dead, later])).await;
    assert_eq!(failures(&response), ["m-dead", "m-later"], "the record stays on the DLQ; FIFO order kept");
    assert!(Sent::all(&moto).is_empty(), "nothing is mailed before the webhook is kept");

    // The SQS error is what the log line carries (moto answers with the query protocol's code).
    let parcel = notify::plan_for(&record("m", doc_sample_envelope().to_json())).parcel.unwrap();
    let error = notify::park(notifier.parked.as_ref().unwrap(), &parcel).await.unwrap_err();
    assert_eq!(error.failure(), Failure::Permanent, "a missing queue needs a person, not a retry");
    let error = error.to_string();
    assert!(error.starts_with("the dead-lettered webhook could not be parked: "), "{error}");
    assert!(error.contains("The specified queue does not exist"), "{error}");
}

/// Pins what SQS puts in `ApproximateReceiveCount` for a dead letter (moto, like AWS, keeps the count when it
/// moves the message and counts the DLQ receive too), and that notify turns it into reconcile's attempts.
#[tokio::test]
async fn dead_letter_count_is_the_source_receives_plus_one_and_notify_reports_the_source_receives() {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    use po_sync_test_support::moto::create_fifo_queue;
    let moto = MotoServer::start();
    let notifier = notifier(&moto, true).await;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let dlq_url = create_fifo_queue(&sqs, "webhooks-dlq.fifo", None, None).await.unwrap();
    let source_url = create_fifo_queue(&sqs, "webhooks.fifo", Some((&dlq_url, 2)), None).await.unwrap();
    let envelope = doc_sample_envelope();
    sqs.send_message()
        .queue_url(&source_url)
        .message_body(envelope.to_json())
        .message_group_id("12345")
        .message_deduplication_id(&envelope.body_sha256)
        .send()
        .await
        .unwrap();
    // Two failed deliveries (received, never deleted, visible again at once); the third receive moves it.
    for attempt in 1..=3 {
        let got = sqs.receive_message().queue_url(&source_url).visibility_timeout(0).send().await.unwrap();
        assert_eq!(got.messages().len(), usize::from(attempt <= 2), "receive {attempt}");
    }
    let dead = sqs
        .receive_message()
        .queue_url(&dlq_url)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let message = &dead.messages()[0];
    let count = message.attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount].clone();
    assert_eq!(count, "3", "maxReceiveCount (2) + the DLQ receive");

    let mut dlq_record = record(message.message_id().unwrap(), message.body().unwrap());
    dlq_record.attributes.insert("ApproximateReceiveCount".to_owned(), count);
    let response = notifier.handle(sqs_event(vec![dlq_record])).await;
    assert_eq!(failures(&response), Vec::<&str>::new());
    let sent = Sent::all(&moto);
    let parsed = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert_eq!(parsed.subject(), Some("[po-sync] PO P002271 not delivered to AppZen after 2 attempts"));
}

#[tokio::test]
async fn an_unverified_sender_is_a_permanent_failure_reported_for_the_record_and_every_later_one() {
    let moto = MotoServer::start();
    let notifier = notifier(&moto, false).await;
    let event = mismatch_event().to_json();
    let response = notifier.handle(sqs_event(vec![record("m-1", &event), record("m-2", "not json")])).await;
    assert_eq!(failures(&response), ["m-1", "m-2"], "nothing dropped; FIFO order kept");
    assert!(Sent::all(&moto).is_empty());

    let raw = b"From: alerts@flowers.example.com\r\nTo: ap@flowers.example.com\r\nSubject: x\r\n\r\nx\r\n".to_vec();
    match notifier.email.send_raw("alerts@flowers.example.com", raw).await {
        Err(error) => {
            assert_eq!(error.failure, Failure::Permanent, "{error}");
            assert!(error.summary.contains("MessageRejected"), "{error}");
            assert!(matches!(NotifyError::NotSent(error).failure(), Failure::Permanent));
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreadable_message_is_mailed_as_poison_and_consumed() {
    let moto = MotoServer::start();
    let notifier = notifier(&moto, true).await;
    let response = notifier.handle(sqs_event(vec![record("m-poison", "{\"hello\":")])).await;
    assert_eq!(failures(&response), Vec::<&str>::new(), "a poison message is not retried forever");
    let sent = Sent::all(&moto);
    assert_eq!(sent.len(), 1);
    let message = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some("[po-sync] Queue message could not be read and was set aside"));
    assert!(message.body_text(0).unwrap().contains("SQS message id:    m-poison"));
}

#[tokio::test]
async fn crlf_and_bcc_in_the_po_number_add_no_recipient_and_no_header_and_unicode_survives() {
    let moto = MotoServer::start();
    let notifier = notifier(&moto, true).await;
    let mut event = mismatch_event();
    let po = &mut event.webhook.as_mut().unwrap().po;
    po.po_number = "P002271\r\nBcc: attacker@evil.example\r\nX-Injected: yes".to_owned();
    po.vendors = vec!["Flores Bogotá 花店 <b>\"Ñ\"</b>".to_owned()];
    let response = notifier.handle(sqs_event(vec![record("m-1", event.to_json())])).await;
    assert_eq!(failures(&response), Vec::<&str>::new());

    let sent = Sent::all(&moto);
    // moto adds every To/Cc/Bcc header address to the destinations: an injected Bcc would show here.
    assert_eq!(sent[0].destinations, ["ap@flowers.example.com", "buyer@flowers.example.com"]);
    let message = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert!(message.header("Bcc").is_none());
    assert!(message.header("X-Injected").is_none());
    assert_eq!(
        message.subject(),
        Some("[po-sync] PO P002271 Bcc: attacker@evil.example X-Injected: yes does not reconcile (2 discrepancies)")
    );
    let header_block = sent[0].raw.split("\r\n\r\n").next().unwrap();
    assert!(!header_block.lines().any(|l| l.starts_with("Bcc:") || l.starts_with("X-Injected:")), "{header_block}");
    let html = message.body_html(0).unwrap();
    assert!(html.contains("Flores Bogotá 花店 &#60;b&#62;&#34;Ñ&#34;&#60;/b&#62;"), "{html}");
    assert!(lf(&message.body_text(0).unwrap()).contains("Vendor:        Flores Bogotá 花店 <b>\"Ñ\"</b>"));
}

#[tokio::test]
async fn a_unicode_subject_is_rfc_2047_encoded_and_decodes_intact() {
    let moto = MotoServer::start();
    let notifier = notifier(&moto, true).await;
    let mut event = mismatch_event();
    event.webhook.as_mut().unwrap().po.po_number = "P-Ω7 Ñandú".to_owned();
    notifier.handle(sqs_event(vec![record("m-1", event.to_json())])).await;
    let sent = Sent::all(&moto);
    let header_block = sent[0].raw.split("\r\n\r\n").next().unwrap();
    assert!(header_block.is_ascii(), "headers are 7-bit: {header_block}");
    let message = MessageParser::default().parse(sent[0].raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some("[po-sync] PO P-Ω7 Ñandú does not reconcile (2 discrepancies)"));
}

/// The real cold start: the notify binary refuses to start, naming the variable, before touching AWS.
#[test]
fn more_than_five_or_an_invalid_recipient_fails_the_cold_start() {
    for (to, needle) in [
        ("a@x.com,b@x.com,c@x.com,d@x.com,e@x.com,f@x.com", "lists 6 different addresses; at most 5 are allowed"),
        ("ap@flowers.example.com, not-an-address", "\\\"not-an-address\\\" is not a valid e-mail address"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_notify"))
            .env_clear()
            .env("NOTIFY_FROM", "alerts@flowers.example.com")
            .env("NOTIFY_TO", to)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("NOTIFY_TO") && stderr.contains(needle), "{stderr}");
    }
}
