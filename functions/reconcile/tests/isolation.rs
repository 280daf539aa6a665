//! One PO's trouble stays with that PO, and an outage waits instead of dropping work: batches handed back per
//! message group, the retry schedule, and AppZen answers that are not a verdict on the PO (credentials,
//! endpoint, throttling, unavailability). AppZen is a wiremock; the ports are in memory, except Secrets Manager
//! (moto), which the credential renewal reads again.

use po_sync::appzen::UPSERT_PATH;
use po_sync::message::{NotificationDetail, NotificationEvent, NotificationKind};
use po_sync::outage::OutageCause;
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::objects::MemoryObjectStore;
use po_sync_aws::queue::{MemoryFifoQueue, MemoryRedelivery};
use po_sync_test_support::{CLEAN_PO, appzen_client, envelope, reconcile_config};
use reconcile::{Outcome, Reconciler};
use serde_json::json;
use std::time::{Duration, SystemTime};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::{batch, failures, later, notifications};

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger, MemoryObjectStore, MemoryRedelivery>;

/// reconcile against `appzen` with in-memory ports, a retry schedule of `7s,30s,2m` and `extra` on top.
fn reconciler(appzen: &MockServer, extra: &[(&str, &str)]) -> MemoryReconciler {
    let base = [("RETRY_SCHEDULE", "7s,30s,2m"), ("APPZEN_MAX_ATTEMPTS", "2")];
    let env: Vec<_> = base.iter().chain(extra).copied().collect();
    let config = reconcile_config(&appzen.uri(), &env);
    let client = appzen_client(&config);
    Reconciler::new(config, client, MemoryFifoQueue::default(), MemoryLedger::default())
        .with_redelivery(MemoryRedelivery::default())
}

/// The clean PO as PO `id`, numbered `P-<id>`, queued in its own message group.
fn po(id: u64) -> String {
    let text = String::from_utf8(CLEAN_PO.to_vec()).unwrap();
    let body = text.replacen("\"id\": 48213,", &format!("\"id\": {id},"), 1).replacen(
        "\"poNumber\": \"P004410\"",
        &format!("\"poNumber\": \"P-{id}\""),
        1,
    );
    envelope(body.as_bytes()).to_json()
}

/// An SQS record as Lambda delivers it from `webhooks.fifo`: group = PO id, its receive count.
fn record(message_id: &str, group: &str, receive_count: u32, body: &str) -> serde_json::Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("receipt-{message_id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": receive_count.to_string(),
            "MessageGroupId": group,
            "SentTimestamp": "1795280400050",
        },
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:po-sync-webhooks.fifo",
        "awsRegion": "us-east-1"
    })
}

/// (message id, seconds) of every record postponed so far.
fn postponed(reconciler: &MemoryReconciler) -> Vec<(String, u64)> {
    let redelivery = reconciler.redelivery().unwrap();
    redelivery.postponed().into_iter().map(|p| (p.message_id, p.delay.as_secs())).collect()
}

fn for_po(id: u64) -> wiremock::matchers::BodyContainsMatcher {
    body_string_contains(format!(r#""purchase_order_number":"P-{id}""#))
}

fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({ "uuid": "uuid-1", "status": "CREATED" }))
}

#[tokio::test]
async fn a_po_appzen_keeps_failing_hands_back_only_itself_and_its_own_later_versions() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).and(for_po(1)).respond_with(ResponseTemplate::new(500)).mount(&appzen).await;
    Mock::given(method("POST")).and(for_po(2)).respond_with(created()).expect(1).mount(&appzen).await;
    let reconciler = reconciler(&appzen, &[]);

    // X (PO 1), Y (PO 2), then X's next version: X fails, so its next version waits behind it; Y goes through.
    let response = reconciler
        .handle_batch(
            batch(vec![record("x1", "1", 1, &po(1)), record("y", "2", 1, &po(2)), record("x2", "1", 1, &po(1))]),
            later(),
        )
        .await;
    assert_eq!(failures(&response), ["x1", "x2"]);
    appzen.verify().await;
    let tried: Vec<String> = appzen
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(
        tried.iter().filter(|b| b.contains("\"P-1\"")).count(),
        2,
        "X tried twice (APPZEN_MAX_ATTEMPTS), its later version never"
    );
    // X waits its first step; its later version is released at once: SQS keeps it behind X, in order.
    assert_eq!(postponed(&reconciler), [("x1".to_owned(), 7), ("x2".to_owned(), 0)]);
    assert!(notifications(&reconciler).is_empty(), "a 500 is not a verdict on the PO: nobody is mailed about it");
    assert_eq!(reconciler.ledger().entry(2).unwrap().holds.unwrap().http_status, 201);
}

#[tokio::test]
async fn a_handed_back_record_waits_longer_each_time_and_never_less_than_retry_after() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).and(for_po(1)).respond_with(ResponseTemplate::new(503)).mount(&appzen).await;
    Mock::given(method("POST"))
        .and(for_po(2))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "600"))
        .mount(&appzen)
        .await;
    let reconciler = reconciler(&appzen, &[]);
    for receive_count in [1, 2, 3, 9] {
        reconciler.handle_batch(batch(vec![record("x", "1", receive_count, &po(1))]), later()).await;
    }
    reconciler.handle_batch(batch(vec![record("y", "2", 1, &po(2))]), later()).await;
    let delays: Vec<u64> = postponed(&reconciler).into_iter().map(|(_, seconds)| seconds).collect();
    assert_eq!(
        delays,
        [7, 30, 120, 120, 600],
        "the schedule by receive count, its last step repeated; AppZen's Retry-After"
    );
}

#[tokio::test]
async fn refused_credentials_hand_every_record_back_and_are_mailed_once_per_outage() {
    let appzen = MockServer::start().await;
    let refused = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "timestamp": "2026-12-04T09:00:00.000+0000", "status": 401, "error": "Unauthorized",
            "message": "Error code : 9a1b - customer key invalid"
        })))
        .mount_as_scoped(&appzen)
        .await;
    let reconciler = reconciler(&appzen, &[]);

    let first = batch(vec![record("a", "1", 1, &po(1)), record("b", "2", 1, &po(2)), record("c", "3", 1, &po(3))]);
    let response = reconciler.handle_batch(first, later()).await;
    assert_eq!(failures(&response), ["a", "b", "c"], "nothing is consumed: the POs are not at fault");
    assert_eq!(appzen.received_requests().await.unwrap().len(), 3, "one request each: retrying now cannot help");
    let second = batch(vec![record("a", "1", 2, &po(1)), record("d", "4", 1, &po(4))]);
    assert_eq!(failures(&reconciler.handle_batch(second, later()).await), ["a", "d"]);

    let events = notifications(&reconciler);
    assert_eq!(events.len(), 1, "one e-mail for the outage, not one per PO: {events:#?}");
    let NotificationDetail::AppzenOutage { cause, last_failure, appzen: answer, .. } = &events[0].detail else {
        panic!("{events:#?}")
    };
    assert_eq!((*cause, last_failure.as_str()), (OutageCause::Credentials, "HTTP 401"));
    assert_eq!(answer.as_ref().and_then(|a| a.message.as_deref()), Some("Error code : 9a1b - customer key invalid"));
    assert_eq!(events[0].group_id(), "appzen-outage");
    let outage = reconciler.ledger().outage(OutageCause::Credentials).unwrap();
    assert!(outage.mailed_at.is_some() && outage.ended_at.is_none(), "{outage:?}");
    for id in 1..=4 {
        assert_eq!(reconciler.ledger().entry(id).and_then(|e| e.latest), None, "PO {id} has no final outcome");
    }

    // The key is fixed: the waiting POs go through as they come back, and the outage is over.
    drop(refused);
    Mock::given(method("POST")).respond_with(created()).mount(&appzen).await;
    let back = batch(vec![record("a", "1", 3, &po(1)), record("b", "2", 2, &po(2))]);
    assert!(failures(&reconciler.handle_batch(back, later()).await).is_empty());
    assert!(reconciler.ledger().outage(OutageCause::Credentials).unwrap().ended_at.is_some());
    assert_eq!(notifications(&reconciler).len(), 1, "no e-mail about the POs either");
}

#[tokio::test]
async fn a_wrong_address_is_an_endpoint_outage_not_a_rejected_po() {
    for status in [404, 302, 405] {
        let appzen = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).insert_header("location", "https://elsewhere.example.com/"))
            .mount(&appzen)
            .await;
        let reconciler = reconciler(&appzen, &[]);
        let report = reconciler.process(&batch(vec![record("m", "1", 1, &po(1))]).records[0], None).await;
        let Outcome::AppZenUnavailable { last, .. } = &report.outcome else { panic!("{status}: {report:?}") };
        assert_eq!((last.cause, report.attempts), (OutageCause::Endpoint, 1), "{status}");
        let kinds: Vec<_> = notifications(&reconciler).iter().map(NotificationEvent::kind).collect();
        assert_eq!(kinds, [NotificationKind::AppzenOutage], "{status}");
    }
}

#[tokio::test]
async fn only_400_409_413_and_422_are_verdicts_that_consume_the_po() {
    for status in [400, 409, 413, 422] {
        let appzen = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(status)).mount(&appzen).await;
        let reconciler = reconciler(&appzen, &[]);
        let response = reconciler.handle_batch(batch(vec![record("m", "1", 1, &po(1))]), later()).await;
        assert!(failures(&response).is_empty(), "{status}");
        let kinds: Vec<_> = notifications(&reconciler).iter().map(NotificationEvent::kind).collect();
        assert_eq!(kinds, [NotificationKind::AppzenRejected], "{status}");
    }
}

#[tokio::test]
async fn an_unavailability_is_mailed_only_once_it_has_lasted_and_a_verdict_ends_it() {
    let appzen = MockServer::start().await;
    let down = Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount_as_scoped(&appzen).await;
    let patient = reconciler(&appzen, &[]);
    patient.handle_batch(batch(vec![record("m", "1", 1, &po(1))]), later()).await;
    assert!(notifications(&patient).is_empty(), "a blip is not mailed (OUTAGE_EMAIL_AFTER 15m)");
    let opened = patient.ledger().outage(OutageCause::Unavailable).unwrap();
    assert_eq!((opened.mailed_at, opened.ended_at), (None, None));

    let eager = reconciler(&appzen, &[("OUTAGE_EMAIL_AFTER", "0s")]);
    eager.handle_batch(batch(vec![record("m", "1", 1, &po(1))]), later()).await;
    eager.handle_batch(batch(vec![record("m", "1", 2, &po(1))]), later()).await;
    let kinds: Vec<_> = notifications(&eager).iter().map(NotificationEvent::kind).collect();
    assert_eq!(kinds, [NotificationKind::AppzenOutage]);

    drop(down);
    Mock::given(method("POST")).respond_with(created()).mount(&appzen).await;
    eager.handle_batch(batch(vec![record("m", "1", 3, &po(1))]), later()).await;
    assert!(eager.ledger().outage(OutageCause::Unavailable).unwrap().ended_at.is_some());
}

#[tokio::test]
async fn a_record_with_no_time_left_comes_back_at_once() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(created()).expect(0).mount(&appzen).await;
    let reconciler = reconciler(&appzen, &[]);
    let response = reconciler
        .handle_batch(batch(vec![record("a", "1", 4, &po(1)), record("b", "1", 4, &po(1))]), Some(SystemTime::now()))
        .await;
    assert_eq!(failures(&response), ["a", "b"]);
    assert_eq!(postponed(&reconciler), [("a".to_owned(), 0), ("b".to_owned(), 0)], "not tried, so no wait");
}

#[tokio::test]
async fn a_failed_postponement_still_hands_the_records_back() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&appzen).await;
    let reconciler = reconciler(&appzen, &[]);
    reconciler.redelivery().unwrap().fail_next(1, po_sync_aws::port::Failure::Transient);
    let response = reconciler.handle_batch(batch(vec![record("a", "1", 1, &po(1))]), later()).await;
    assert_eq!(failures(&response), ["a"], "they come back after the queue's visibility timeout instead");
}

#[tokio::test]
async fn a_corrected_secret_is_read_again_and_the_waiting_po_goes_through_without_a_deploy() {
    let moto = po_sync_test_support::moto::MotoServer::start();
    let aws = moto.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let secret = |key: &str| format!(r#"{{"api_key":"{key}","customer_id":"cid","customer_key":"ckey"}}"#);
    let arn = secrets
        .create_secret()
        .name("po-sync/appzen")
        .secret_string(secret("expired"))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let appzen = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UPSERT_PATH))
        .and(header("x-api-key", "rotated"))
        .respond_with(created())
        .expect(1)
        .mount(&appzen)
        .await;
    Mock::given(method("POST")).and(path(UPSERT_PATH)).respond_with(ResponseTemplate::new(403)).mount(&appzen).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    po_sync_test_support::moto::create_ledger_table(&dynamodb, "po-sync-ledger").await.unwrap();
    let env = po_sync_test_support::env_map(&[
        ("NOTIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/notifications.fifo"),
        ("LEDGER_TABLE_NAME", "po-sync-ledger"),
        ("APPZEN_BASE_URL", &appzen.uri()),
        ("APPZEN_SECRET_ARN", &arn),
    ]);
    let mut config = po_sync::config::reconcile::ReconcileConfig::from_env(&env).unwrap();
    config.appzen_mut().expect("an AppZen function").credential_renewal_interval = Duration::ZERO;
    let reconciler = Reconciler::start(config, &aws).await.unwrap();
    let one = || batch(vec![record("m", "1", 1, &po(1))]);

    let report = reconciler.process(&one().records[0], None).await;
    assert!(matches!(report.outcome, Outcome::AppZenUnavailable { .. }), "{report:?}");
    assert_eq!(report.attempts, 1, "the secret still held the refused key, so no second request");

    // Someone puts the rotated key in the secret; the next delivery reads it again after AppZen's 403.
    secrets.put_secret_value().secret_id(&arn).secret_string(secret("rotated")).send().await.unwrap();
    let report = reconciler.process(&one().records[0], None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{report:?}");
    assert_eq!(report.attempts, 2, "refused once with the old key, then taken with the new one");
    appzen.verify().await;
}

#[tokio::test]
async fn a_version_stamped_hours_ahead_does_not_silence_the_next_real_send() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(created()).expect(2).mount(&appzen).await;
    let reconciler = reconciler(&appzen, &[]);
    let sent = po_sync_test_support::received_at();
    // Each send its own body (a trailing space is enough): the same body again would be a duplicate.
    let at = |offset: chrono::Duration| {
        let body = format!("{}{}", String::from_utf8_lossy(CLEAN_PO), " ".repeat(offset.num_minutes() as usize));
        po_sync_test_support::envelope_at(body.as_bytes(), sent + offset).to_json()
    };
    let delivered = |message_id: &str, body: &str, sent_at: chrono::DateTime<chrono::Utc>| {
        let mut record = record(message_id, "48213", 1, body);
        record["attributes"]["SentTimestamp"] = json!(sent_at.timestamp_millis().to_string());
        record
    };
    // A replay from a clock two hours fast: SQS got it at `sent`, so that is its version.
    let ahead = delivered("m-ahead", &at(chrono::Duration::hours(2)), sent);
    assert!(failures(&reconciler.handle_batch(batch(vec![ahead]), later()).await).is_empty());
    let holds = reconciler.ledger().entry(48213).unwrap().holds.unwrap();
    assert_eq!(holds.version, sent.timestamp_millis(), "the trusted version, not the stamped one");

    // Komet's next real send, a minute later, still reaches AppZen.
    let minute = chrono::Duration::minutes(1);
    let next = delivered("m-next", &at(minute), sent + minute);
    let response = reconciler.handle_batch(batch(vec![next]), later()).await;
    assert!(failures(&response).is_empty());
    appzen.verify().await;
    let latest = reconciler.ledger().entry(48213).unwrap().latest.unwrap();
    assert_eq!(
        (latest.version, latest.outcome),
        ((sent + minute).timestamp_millis(), po_sync::ledger::LedgerOutcome::Upserted)
    );
}

/// A memory ledger whose `fail_write`-th write fails, transiently.
struct FlakyLedger {
    inner: MemoryLedger,
    writes: std::sync::atomic::AtomicUsize,
    fail_write: usize,
}

impl po_sync_aws::ledger::Ledger for FlakyLedger {
    async fn read(&self, po_id: u64) -> Result<Option<po_sync::ledger::LedgerEntry>, po_sync_aws::port::PortError> {
        self.inner.read(po_id).await
    }

    async fn write(
        &self,
        entry: &po_sync::ledger::LedgerEntry,
    ) -> Result<po_sync_aws::ledger::Written, po_sync_aws::port::PortError> {
        let n = self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.fail_write {
            let failure = po_sync_aws::port::Failure::Transient;
            return Err(po_sync_aws::port::PortError::new("dynamodb:PutItem", failure, "injected"));
        }
        self.inner.write(entry).await
    }

    async fn read_outage(
        &self,
        destination: po_sync::destination::Destination,
        cause: OutageCause,
    ) -> Result<Option<po_sync::outage::OutageRecord>, po_sync_aws::port::PortError> {
        self.inner.read_outage(destination, cause).await
    }

    async fn write_outage(
        &self,
        record: &po_sync::outage::OutageRecord,
    ) -> Result<po_sync_aws::ledger::Written, po_sync_aws::port::PortError> {
        self.inner.write_outage(record).await
    }

    async fn record(&self, attempt: &po_sync::history::Attempt) -> Result<(), po_sync_aws::port::PortError> {
        self.inner.record(attempt).await
    }

    async fn history(
        &self,
        po_id: u64,
        limit: usize,
    ) -> Result<Vec<po_sync::history::Attempt>, po_sync_aws::port::PortError> {
        self.inner.history(po_id, limit).await
    }
}

#[tokio::test]
async fn a_redelivery_after_a_failed_settle_does_not_queue_the_same_notification_again() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(created()).expect(0).mount(&appzen).await;
    let config = reconcile_config(&appzen.uri(), &[]);
    let client = appzen_client(&config);
    // Writes: the claim, the note of the mismatch e-mail, then the settle, which fails.
    let ledger = FlakyLedger { inner: MemoryLedger::default(), writes: Default::default(), fail_write: 3 };
    let reconciler: Reconciler<MemoryFifoQueue, FlakyLedger, MemoryObjectStore> =
        Reconciler::new(config, client, MemoryFifoQueue::default(), ledger);
    let mismatch = envelope(po_sync_test_support::DOC_SAMPLE).to_json();
    let delivery = batch(vec![record("m-1", "12345", 1, &mismatch)]);

    let first = reconciler.process(&delivery.records[0], None).await;
    assert!(matches!(first.outcome, Outcome::LedgerUnavailable(_)), "{first:?}");
    assert_eq!(first.notified, [NotificationKind::ReconciliationMismatch]);

    // SQS delivers it again (by then its five-minute deduplication window may be over).
    let second = reconciler.process(&delivery.records[0], None).await;
    assert!(matches!(second.outcome, Outcome::Held), "{second:?}");
    assert!(second.notified.is_empty(), "the mismatch e-mail was queued by the first delivery: {second:?}");
    let entry = reconciler.ledger().inner.entry(12345).unwrap();
    assert_eq!(entry.latest.unwrap().outcome, po_sync::ledger::LedgerOutcome::Held);
}
