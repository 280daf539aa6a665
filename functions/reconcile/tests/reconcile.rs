//! reconcile end to end: input messages and the notification queue on moto SQS through the real SDK,
//! AppZen through wiremock. Retry delays are tiny through configuration, never slept away here.

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use po_sync::appzen::UPSERT_PATH;
use po_sync::config::reconcile::ReconcileConfig;
use po_sync::komet::{PurchaseOrder, parse_webhook};
use po_sync::message::{NotificationDetail, NotificationEvent, NotificationKind, WebhookEnvelope, sha256_hex};
use po_sync::reconcile::Rule;
use po_sync::retry::{Backoff, GiveUpReason};
use po_sync_aws::appzen::{AppZenFailure, UpsertOutcome};
use po_sync_aws::ledger::DynamoLedger;
use po_sync_aws::queue::SqsFifoQueue;
use po_sync_test_support::fixture;
use po_sync_test_support::moto::MotoServer;
use po_sync_test_support::{appzen_client, env_map, received_at};
use reconcile::{Fate, Outcome, Reconciler};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GOLDEN_BODY: &[u8] = include_bytes!("../../../shared/po-sync/tests/golden/appzen-clean-po.json");
const RECORD_TEMPLATE: &str = include_str!("fixtures/sqs-record.json");

// ---------------------------------------------------------------------------------------------- helpers

fn envelope_of(po: PurchaseOrder, body: &[u8]) -> WebhookEnvelope {
    WebhookEnvelope::new(po, body, received_at())
}

fn envelope(fixture_name: &str) -> WebhookEnvelope {
    let body = fixture(fixture_name);
    envelope_of(parse_webhook(&body).unwrap(), &body)
}

/// The clean PO under another id and number, so a batch can hold several distinct POs.
fn clean_po_numbered(id: u64, po_number: &str) -> WebhookEnvelope {
    let body = fixture("komet-clean-po.json");
    let mut po = parse_webhook(&body).unwrap();
    po.id = id;
    po.po_number = po_number.into();
    envelope_of(po, &body)
}

fn record(message_id: &str, body: &str) -> Value {
    let mut record: Value = serde_json::from_str(RECORD_TEMPLATE).unwrap();
    record["messageId"] = json!(message_id);
    record["body"] = json!(body);
    record["attributes"]["MessageDeduplicationId"] = json!(sha256_hex(body.as_bytes()));
    record
}

fn event(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn failures(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

fn created(uuid: &str, correlation_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .insert_header("x-correlation-id", correlation_id)
        .set_body_json(json!({ "uuid": uuid, "status": "CREATED" }))
}

fn later() -> Option<SystemTime> {
    Some(SystemTime::now() + Duration::from_secs(120))
}

type MotoReconciler = Reconciler<SqsFifoQueue, DynamoLedger>;

/// A moto SQS with `notifications.fifo`, a moto DynamoDB ledger table, a wiremock AppZen, and a reconciler
/// wired to them through the real SDK adapters.
struct Harness {
    moto: MotoServer,
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    notify_url: String,
    appzen: MockServer,
    reconciler: MotoReconciler,
}

impl Harness {
    async fn start(extra: &[(&str, &str)]) -> Harness {
        let moto = MotoServer::start();
        let aws = moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let notify_url = fifo_queue(&sqs, "po-sync-notifications.fifo").await;
        po_sync_test_support::moto::create_ledger_table(&dynamodb, "po-sync-ledger").await.unwrap();
        po_sync_test_support::moto::create_history_table(&dynamodb, "po-sync-history").await.unwrap();
        let appzen = MockServer::start().await;
        let reconciler = reconciler(&sqs, &dynamodb, &notify_url, &appzen.uri(), extra);
        Harness { moto, sqs, dynamodb, notify_url, appzen, reconciler }
    }

    /// Every notification queued so far, oldest first, with its FIFO group id (read and deleted).
    async fn notifications(&self) -> Vec<(NotificationEvent, String)> {
        let mut found = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.notify_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            if received.messages().is_empty() {
                return found;
            }
            for message in received.messages() {
                let event = NotificationEvent::from_json(message.body().unwrap()).unwrap();
                let group = message.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone();
                found.push((event, group));
                self.sqs
                    .delete_message()
                    .queue_url(&self.notify_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn appzen_bodies(&self) -> Vec<String> {
        self.appzen
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| String::from_utf8(r.body.clone()).unwrap())
            .collect()
    }
}

fn reconciler(
    sqs: &aws_sdk_sqs::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    notify_url: &str,
    appzen_url: &str,
    extra: &[(&str, &str)],
) -> MotoReconciler {
    let config = config(notify_url, appzen_url, extra);
    let client = appzen_client(&config);
    let notifications = SqsFifoQueue::new(sqs.clone(), notify_url);
    let ledger = reconcile::dynamo_ledger(&config, dynamodb.clone());
    Reconciler::new(config, client, notifications, ledger)
}

async fn fifo_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    po_sync_test_support::moto::create_fifo_queue(sqs, name, None, None).await.unwrap()
}

/// Configuration as a deployment would give it, with tiny retry delays.
fn config(notify_url: &str, appzen_url: &str, extra: &[(&str, &str)]) -> ReconcileConfig {
    let mut env = env_map(&[
        ("NOTIFY_QUEUE_URL", notify_url),
        ("LEDGER_TABLE_NAME", "po-sync-ledger"),
        ("HISTORY_TABLE_NAME", "po-sync-history"),
        ("APPZEN_BASE_URL", appzen_url),
        ("APPZEN_API_KEY", "test-api-key"),
        ("APPZEN_CUSTOMER_ID", "test-customer-id"),
        ("APPZEN_CUSTOMER_KEY", "test-customer-key"),
        ("APPZEN_MAX_ATTEMPTS", "3"),
        ("APPZEN_TIMEOUT_MS", "2000"),
    ]);
    env.extend(env_map(extra));
    let mut config = ReconcileConfig::from_env(&env).unwrap();
    config.appzen_mut().expect("an AppZen function").backoff =
        Backoff { base: Duration::from_millis(1), max: Duration::from_millis(5) };
    config.appzen_mut().expect("an AppZen function").deadline_margin = Duration::from_millis(100);
    config
}

fn upsert_path() -> wiremock::matchers::PathExactMatcher {
    path(UPSERT_PATH)
}

// ---------------------------------------------------------------------------------------------- AppZen

#[tokio::test]
async fn each_attempt_is_recorded_in_the_history_table_and_expires_with_the_retention() {
    use po_sync::history::AttemptOutcome;
    use po_sync_aws::ledger::Ledger;
    let h = Harness::start(&[]).await;
    Mock::given(method("POST")).respond_with(created("uuid-1", "corr-1")).expect(1).mount(&h.appzen).await;
    let body = envelope("komet-clean-po.json").to_json();
    for message_id in ["m-1", "m-1-again"] {
        h.reconciler.process(&event(vec![record(message_id, &body)]).records[0], None).await;
    }

    let history = h.reconciler.ledger().history(48213, 10).await.unwrap();
    let told: Vec<_> = history.iter().map(|a| (a.sqs_message_id.as_deref().unwrap(), a.outcome)).collect();
    assert_eq!(told, [("m-1-again", AttemptOutcome::Duplicate), ("m-1", AttemptOutcome::Upserted)]);
    assert_eq!(
        (history[1].http_status, history[1].correlation_id.as_deref(), history[1].detail.as_deref()),
        (Some(201), Some("corr-1"), Some("AppZen: CREATED"))
    );
    // The item as stored: the table's keys, and DynamoDB's TTL 90 days (the default retention) after the attempt.
    let items = h.dynamodb.scan().table_name("po-sync-history").send().await.unwrap().items.unwrap();
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(item["poId"].as_s().unwrap(), "48213");
        let attempt = history.iter().find(|a| a.sort_key() == *item["attemptKey"].as_s().unwrap()).unwrap();
        let expires: i64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
        assert_eq!(expires, (attempt.at + chrono::Duration::days(90)).timestamp());
    }
    assert!(h.reconciler.ledger().history(1, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_clean_po_is_upserted_with_the_golden_body_and_the_three_headers() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .and(header("x-api-key", "test-api-key"))
        .and(header("customer-id", "test-customer-id"))
        .and(header("customer-key", "test-customer-key"))
        .and(header("content-type", "application/json"))
        .respond_with(created("5fc03087-d265-11e7-b8c6-83e29cd24f4c", "corr-1"))
        .expect(1)
        .mount(&h.appzen)
        .await;

    let body = envelope("komet-clean-po.json").to_json();
    let report = h.reconciler.process(&event(vec![record("m-1", &body)]).records[0], None).await;

    let Outcome::Upserted(accepted) = &report.outcome else { panic!("{report:?}") };
    assert_eq!(accepted.http_status, 201);
    assert_eq!(accepted.uuid.as_deref(), Some("5fc03087-d265-11e7-b8c6-83e29cd24f4c"));
    assert_eq!(accepted.status.as_deref(), Some("CREATED"));
    assert_eq!(accepted.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!((report.attempts, report.discrepancy_count), (1, 0));

    let sent = h.appzen_bodies().await;
    assert_eq!(sent.len(), 1);
    // Same members, same order, same number text (500.10 stays 500.10) as the reviewed golden body.
    assert_eq!(po_sync::json::parse(sent[0].as_bytes()).unwrap(), po_sync::json::parse(GOLDEN_BODY).unwrap());
    assert!(h.notifications().await.is_empty());
}

#[tokio::test]
async fn the_same_po_is_created_then_updated() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(created("uuid-1", "corr-1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&h.appzen)
        .await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "uuid": "uuid-1", "status": "UPDATED" })))
        .expect(1)
        .mount(&h.appzen)
        .await;

    // Two versions of the PO: Komet moved the arrival date (the same body again would be a duplicate).
    let first = envelope("komet-clean-po.json");
    let mut second = first.clone();
    second.received_at += chrono::Duration::minutes(5);
    second.po.arrival_date = second.po.arrival_date.map(|d| d + chrono::Days::new(1));
    second.body_sha256 = sha256_hex(b"the body with the new arrival date");
    let mut answers = Vec::new();
    for (message_id, version) in [("m-1", &first), ("m-2", &second)] {
        let body = version.to_json();
        let report = h.reconciler.process(&event(vec![record(message_id, &body)]).records[0], None).await;
        assert_eq!(report.outcome.fate(), Fate::Consumed, "{report:?}");
        let Outcome::Upserted(accepted) = report.outcome else { panic!("{report:?}") };
        answers.push((accepted.http_status, accepted.status, accepted.uuid));
    }
    assert_eq!(
        answers,
        vec![
            (201, Some("CREATED".into()), Some("uuid-1".into())),
            (200, Some("UPDATED".into()), Some("uuid-1".into()))
        ]
    );
    let sent = h.appzen_bodies().await;
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0], sent[1], "the second version carries the new arrival date");
}

#[tokio::test]
async fn a_400_notifies_with_appzen_s_message_and_is_not_retried() {
    let h = Harness::start(&[("APPZEN_MAX_ATTEMPTS", "4")]).await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(ResponseTemplate::new(400).insert_header("x-correlation-id", "corr-400").set_body_json(json!({
            "timestamp": "2019-01-17T16:12:45.977+0000",
            "status": 400,
            "error": "Bad Request",
            "message": "Error code : 17e3338d - entity_id 2 is unknown"
        })))
        .expect(1)
        .mount(&h.appzen)
        .await;

    let body = envelope("komet-clean-po.json").to_json();
    let response = h.reconciler.handle_batch(event(vec![record("m-1", &body)]), later()).await;
    assert!(failures(&response).is_empty(), "consumed: retrying cannot fix a 400");

    let notifications = h.notifications().await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let (event, group) = &notifications[0];
    assert_eq!(event.kind(), NotificationKind::AppzenRejected);
    assert_eq!(group, "48213", "grouped per PO");
    let NotificationDetail::AppzenRejected { appzen: answer } = &event.detail else { panic!("{event:?}") };
    assert_eq!(answer.http_status, 400);
    assert_eq!(answer.message.as_deref(), Some("Error code : 17e3338d - entity_id 2 is unknown"));
    assert_eq!(answer.correlation_id.as_deref(), Some("corr-400"));
    assert_eq!(event.po().unwrap().po_number, "P004410");
}

#[tokio::test]
async fn a_500_is_retried_and_then_succeeds() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&h.appzen)
        .await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(created("uuid-2", "corr-2"))
        .expect(1)
        .mount(&h.appzen)
        .await;

    let body = envelope("komet-clean-po.json").to_json();
    let report = h
        .reconciler
        .process(
            &event(vec![record("m-1", &body)]).records[0],
            Some(tokio::time::Instant::now() + Duration::from_secs(60)),
        )
        .await;
    assert!(matches!(&report.outcome, Outcome::Upserted(a) if a.http_status == 201), "{report:?}");
    assert_eq!(report.attempts, 2);
    let sent = h.appzen_bodies().await;
    assert_eq!(sent[0], sent[1], "the retry sends the same body");
    assert!(h.notifications().await.is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_wait_past_the_deadline_gives_up() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&appzen)
        .await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(created("uuid-3", "corr-3"))
        .expect(1)
        .mount(&appzen)
        .await;
    let settings = config("unused", &appzen.uri(), &[]);
    let client = appzen_client(&settings);

    // Backoff alone would wait at most 1 ms; AppZen asked for a second, so the client waits a second.
    let upsert = client.upsert("{}", None).await;
    assert!(matches!(upsert.outcome, UpsertOutcome::Accepted(_)), "{upsert:?}");
    assert_eq!((upsert.attempts, upsert.waits), (2, vec![Duration::from_secs(1)]));

    // Asked to wait two minutes with ten seconds left: give up now, SQS redelivers later.
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .expect(1)
        .mount(&slow)
        .await;
    let settings = config("unused", &slow.uri(), &[]);
    let client = appzen_client(&settings);
    let upsert = client.upsert("{}", Some(tokio::time::Instant::now() + Duration::from_secs(10))).await;
    let UpsertOutcome::GaveUp { last, reason } = &upsert.outcome else { panic!("{upsert:?}") };
    assert_eq!(
        (reason, &last.failure, last.retry_after),
        (&GiveUpReason::OutOfTime, &AppZenFailure::Status(429), Some(Duration::from_secs(120)))
    );
    assert_eq!((upsert.attempts, upsert.waits.len()), (1, 0));
}

#[tokio::test]
async fn a_timeout_that_persists_is_a_batch_failure() {
    let h = Harness::start(&[("APPZEN_TIMEOUT_MS", "200"), ("APPZEN_MAX_ATTEMPTS", "2")]).await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .respond_with(created("never", "never").set_delay(Duration::from_secs(5)))
        .expect(4) // two attempts, twice
        .mount(&h.appzen)
        .await;

    let body = envelope("komet-clean-po.json").to_json();
    let batch = event(vec![record("m-1", &body)]);
    let report = h.reconciler.process(&batch.records[0], None).await;
    assert!(
        matches!(
            &report.outcome,
            Outcome::AppZenUnavailable {
                last: po_sync_aws::appzen::Outage {
                    failure: AppZenFailure::Timeout,
                    retry_after: None,
                    correlation_id: None,
                    ..
                },
                reason: GiveUpReason::AttemptsExhausted
            }
        ),
        "{report:?}"
    );
    assert_eq!((report.attempts, report.outcome.fate()), (2, Fate::Retry));

    let response = h.reconciler.handle_batch(batch, later()).await;
    assert_eq!(failures(&response), vec!["m-1"]);
    assert!(
        h.notifications().await.is_empty(),
        "nobody is mailed for a retry; the DLQ path reports it if it never gets through"
    );
}

#[tokio::test]
async fn credentials_can_come_from_secrets_manager() {
    let moto = MotoServer::start();
    let aws = moto.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let secret = secrets
        .create_secret()
        .name("po-sync/appzen")
        .secret_string(r#"{"api_key":"sm-key","customer_id":"sm-cid","customer_key":"sm-ckey"}"#)
        .send()
        .await
        .unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    po_sync_test_support::moto::create_ledger_table(&dynamodb, "po-sync-ledger").await.unwrap();
    po_sync_test_support::moto::create_history_table(&dynamodb, "po-sync-history").await.unwrap();
    let appzen = MockServer::start().await;
    Mock::given(method("POST"))
        .and(upsert_path())
        .and(header("x-api-key", "sm-key"))
        .and(header("customer-id", "sm-cid"))
        .and(header("customer-key", "sm-ckey"))
        .respond_with(created("uuid-sm", "corr-sm"))
        .expect(1)
        .mount(&appzen)
        .await;
    let env = env_map(&[
        ("NOTIFY_QUEUE_URL", "unused"),
        ("LEDGER_TABLE_NAME", "po-sync-ledger"),
        ("APPZEN_BASE_URL", &appzen.uri()),
        ("APPZEN_SECRET_ARN", secret.arn().unwrap()),
    ]);
    let reconciler = Reconciler::start(ReconcileConfig::from_env(&env).unwrap(), &aws).await.unwrap();
    let body = envelope("komet-clean-po.json").to_json();
    let report = reconciler.process(&event(vec![record("m-1", &body)]).records[0], None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{report:?}");
}

// ---------------------------------------------------------------------------------------------- batches

/// Sends envelopes to a moto `webhooks.fifo` the way ingest does and receives them back as Lambda's
/// event source mapping would, so the event holds real SQS message ids and bodies.
async fn through_the_webhook_queue(h: &Harness, envelopes: &[WebhookEnvelope]) -> SqsEvent {
    let url = fifo_queue(&h.sqs, "po-sync-webhooks.fifo").await;
    for envelope in envelopes {
        let body = envelope.to_json();
        h.sqs
            .send_message()
            .queue_url(&url)
            .message_body(&body)
            .message_group_id(envelope.po.id.to_string())
            .message_deduplication_id(sha256_hex(body.as_bytes()))
            .send()
            .await
            .unwrap();
    }
    let received = h.sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
    let records = received
        .messages()
        .iter()
        .map(|m| {
            let mut r = record(m.message_id().unwrap(), m.body().unwrap());
            r["receiptHandle"] = json!(m.receipt_handle().unwrap());
            r
        })
        .collect::<Vec<_>>();
    assert_eq!(records.len(), envelopes.len(), "moto returned every message");
    event(records)
}

#[tokio::test]
async fn a_fifo_batch_hands_back_the_transient_failure_and_everything_after_it() {
    let h = Harness::start(&[("APPZEN_MAX_ATTEMPTS", "2")]).await;
    let number = |n: &str| body_string_contains(format!(r#""purchase_order_number":"{n}""#));
    Mock::given(method("POST"))
        .and(number("P-ONE"))
        .respond_with(created("uuid-1", "c1"))
        .expect(1)
        .mount(&h.appzen)
        .await;
    Mock::given(method("POST"))
        .and(number("P-TWO"))
        .respond_with(ResponseTemplate::new(503))
        .expect(2)
        .mount(&h.appzen)
        .await;
    Mock::given(method("POST"))
        .and(number("P-THREE"))
        .respond_with(created("uuid-3", "c3"))
        .expect(0)
        .mount(&h.appzen)
        .await;

    let envelopes = [clean_po_numbered(1, "P-ONE"), clean_po_numbered(2, "P-TWO"), clean_po_numbered(3, "P-THREE")];
    let batch = through_the_webhook_queue(&h, &envelopes).await;
    let bodies: Vec<_> = batch
        .records
        .iter()
        .map(|r| WebhookEnvelope::from_json(r.body.as_deref().unwrap()).unwrap().po.po_number)
        .collect();
    assert_eq!(bodies, ["P-ONE", "P-TWO", "P-THREE"], "moto kept the order");
    let ids: Vec<String> = batch.records.iter().map(|r| r.message_id.clone().unwrap()).collect();

    let response = h.reconciler.handle_batch(batch, later()).await;
    assert_eq!(failures(&response), vec![ids[1].clone(), ids[2].clone()]);
    h.appzen.verify().await;
    assert!(h.notifications().await.is_empty());
}

#[tokio::test]
async fn komet_s_doc_sample_under_block_is_held_and_a_person_is_told_what_does_not_add_up() {
    let h = Harness::start(&[("RECONCILE_POLICY", "block")]).await;
    Mock::given(method("POST")).respond_with(created("never", "never")).expect(0).mount(&h.appzen).await;

    // Komet's sample verbatim (trailing commas and all), as ingest would have queued it.
    let batch = through_the_webhook_queue(&h, &[envelope("komet-doc-sample.json")]).await;
    let response = h.reconciler.handle_batch(batch, later()).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    h.appzen.verify().await;

    let notifications = h.notifications().await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let (event, group) = &notifications[0];
    let NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen } = &event.detail else {
        panic!("{event:?}")
    };
    assert_eq!(
        (event.kind(), group.as_str(), *forwarded_to_appzen),
        (NotificationKind::ReconciliationMismatch, "12345", false)
    );
    let found: Vec<_> = discrepancies
        .iter()
        .map(|d| (d.rule, d.invoice_number.as_deref(), d.expected.to_string(), d.actual.to_string()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Rule::InvoiceItems, Some("01-P002272"), "30.0".to_owned(), "40.0".to_owned()),
            (Rule::ItemsSubtotal, None, "60.0".to_owned(), "70.0".to_owned()),
        ]
    );
    assert_eq!(event.po().unwrap().po_number, "P002271");
    assert_eq!(event.webhook.as_ref().unwrap().invoice_links.len(), 3, "the e-mail can link the invoices");
}

#[tokio::test]
async fn under_forward_the_doc_sample_is_sent_and_a_person_is_still_told() {
    let h = Harness::start(&[("RECONCILE_POLICY", "forward")]).await;
    Mock::given(method("POST")).respond_with(created("uuid-f", "corr-f")).expect(1).mount(&h.appzen).await;
    let body = envelope("komet-doc-sample.json").to_json();
    let response = h.reconciler.handle_batch(event(vec![record("m-1", &body)]), later()).await;
    assert!(failures(&response).is_empty());
    let sent = h.appzen_bodies().await;
    assert!(sent[0].contains(r#""purchase_order_number":"P002271""#), "{}", sent[0]);
    let kinds: Vec<_> = h
        .notifications()
        .await
        .into_iter()
        .map(|(e, _)| match e.detail {
            NotificationDetail::ReconciliationMismatch { forwarded_to_appzen, .. } => {
                (NotificationKind::ReconciliationMismatch, forwarded_to_appzen)
            }
            other => (other.kind(), false),
        })
        .collect();
    assert_eq!(kinds, vec![(NotificationKind::ReconciliationMismatch, true)]);
}

#[tokio::test]
async fn an_unmappable_po_is_held_with_a_mapping_error() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST")).respond_with(created("never", "never")).expect(0).mount(&h.appzen).await;
    let body = envelope("komet-several-vendors.json").to_json();
    let response = h.reconciler.handle_batch(event(vec![record("m-1", &body)]), later()).await;
    assert!(failures(&response).is_empty());
    let notifications = h.notifications().await;
    let problem = notifications
        .iter()
        .find_map(|(e, _)| match &e.detail {
            NotificationDetail::MappingError { problem } => Some(problem),
            _ => None,
        })
        .expect("a mapping_error event");
    assert!(problem.contains("vendors"), "{problem}");
}

#[tokio::test]
async fn a_poison_record_is_reported_and_consumed_without_holding_up_the_next() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST")).respond_with(created("uuid-p", "corr-p")).expect(1).mount(&h.appzen).await;
    let clean = envelope("komet-clean-po.json").to_json();
    let batch = event(vec![record("m-poison", r#"{"hello":"world"}"#), record("m-clean", &clean)]);
    let response = h.reconciler.handle_batch(batch, later()).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    let notifications = h.notifications().await;
    assert_eq!(notifications.len(), 1);
    let (event, group) = &notifications[0];
    let NotificationDetail::PoisonMessage { problem, sqs_message_id } = &event.detail else { panic!("{event:?}") };
    assert_eq!(
        (event.kind(), group.as_str(), Some(sqs_message_id.as_str())),
        (NotificationKind::PoisonMessage, "unreadable", Some("m-poison"))
    );
    assert!(problem.contains("type"), "{event:?}");
}

#[tokio::test]
async fn when_the_notification_cannot_be_queued_the_record_comes_back() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST")).respond_with(created("never", "never")).expect(0).mount(&h.appzen).await;
    let missing_queue = format!("{}/123456789012/no-such-queue.fifo", h.moto.endpoint_url());
    let reconciler = reconciler(&h.sqs, &h.dynamodb, &missing_queue, &h.appzen.uri(), &[]);

    let mismatch = envelope("komet-doc-sample.json").to_json();
    let batch = event(vec![record("m-1", &mismatch), record("m-2", "not json")]);
    let report = reconciler.process(&batch.records[0], None).await;
    assert!(matches!(report.outcome, Outcome::NotifyFailed(_)), "{report:?}");
    let response = reconciler.handle_batch(batch, later()).await;
    assert_eq!(failures(&response), vec!["m-1", "m-2"]);
}

#[tokio::test]
async fn out_of_time_records_are_handed_back_unstarted() {
    let h = Harness::start(&[]).await;
    Mock::given(method("POST")).respond_with(created("never", "never")).expect(0).mount(&h.appzen).await;
    let clean = envelope("komet-clean-po.json").to_json();
    let response = h.reconciler.handle_batch(event(vec![record("m-1", &clean)]), Some(SystemTime::now())).await;
    assert_eq!(failures(&response), vec!["m-1"]);
}

// ---------------------------------------------------------------------------------------------- fixtures

/// The events for `cargo lambda invoke --data-file` stay valid envelopes of the shared fixtures.
/// `UPDATE_FIXTURES=1` rewrites them.
#[test]
fn the_invoke_fixtures_hold_current_envelopes() {
    for (file, fixture_name) in
        [("sqs-event-clean-po.json", "komet-clean-po.json"), ("sqs-event-doc-sample.json", "komet-doc-sample.json")]
    {
        let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
        let expected = envelope(fixture_name);
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            let event = json!({ "Records": [record(&format!("invoke-{fixture_name}"), &expected.to_json())] });
            std::fs::write(&path, serde_json::to_string_pretty(&event).unwrap() + "\n").unwrap();
        }
        let event: SqsEvent = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let found = WebhookEnvelope::from_json(event.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(found, expected, "{file}");
    }
}
