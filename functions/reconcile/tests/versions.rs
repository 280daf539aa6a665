//! The version rule, on reconcile's decision logic with in-memory ports (queue and ledger) and a wiremock
//! AppZen: AppZen ends on the latest version Komet sent, never goes back, and sees each body once.
//! (The DynamoDB adapter is exercised against moto in `tests/tests/moto_adapters.rs` and end to end.)

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Duration as Minutes, TimeZone, Utc};
use po_sync::komet::parse_webhook;
use po_sync::ledger::LedgerOutcome;
use po_sync::message::{WebhookEnvelope, sha256_hex};
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::port::Failure;
use po_sync_aws::queue::MemoryFifoQueue;
use po_sync_test_support::fixture;
use po_sync_test_support::{appzen_client, reconcile_config, sqs_record};
use reconcile::{Fate, Outcome, Reconciler};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::accept_everything;

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger>;

fn reconciler_for(appzen: &MockServer) -> MemoryReconciler {
    let config = reconcile_config(&appzen.uri(), &[("APPZEN_MAX_ATTEMPTS", "2"), ("APPZEN_TIMEOUT_MS", "2000")]);
    let client = appzen_client(&config);
    Reconciler::new(config, client, MemoryFifoQueue::default(), MemoryLedger::default())
}

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap() + Minutes::minutes(minute)
}

/// A send of the clean PO received at `minute`; `arrival_day` changes the body (version B has another date).
fn send(minute: i64, arrival_day: u32) -> WebhookEnvelope {
    let text = String::from_utf8(fixture("komet-clean-po.json")).unwrap();
    assert!(text.contains("\"arrivalDate\": \"2026-02-11\""));
    let body =
        text.replace("\"arrivalDate\": \"2026-02-11\"", &format!("\"arrivalDate\": \"2026-02-{arrival_day:02}\""));
    let po = parse_webhook(body.as_bytes()).unwrap();
    WebhookEnvelope::new(po, body.as_bytes(), at(minute)).with_send_id(format!("req-{minute}"))
}

fn record(message_id: &str, envelope: &WebhookEnvelope) -> SqsMessage {
    let mut record = sqs_record(message_id, envelope.to_json());
    record.attributes.insert("MessageGroupId".to_owned(), envelope.po.id.to_string());
    record
}

/// The arrival dates (AppZen's `end_date`) AppZen was sent, in order.
async fn arrival_dates_sent(appzen: &MockServer) -> Vec<String> {
    let requests = appzen.received_requests().await.unwrap();
    requests
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["end_date"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_b_a_ends_with_appzen_on_a() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    let (a, b, a_again) = (send(0, 24), send(1, 25), send(2, 24));
    for (id, envelope) in [("m-1", &a), ("m-2", &b), ("m-3", &a_again)] {
        let report = reconciler.process(&record(id, envelope), None).await;
        assert!(matches!(report.outcome, Outcome::Upserted(_)), "{id}: {report:?}");
    }
    assert_eq!(arrival_dates_sent(&appzen).await, ["2026-02-24", "2026-02-25", "2026-02-24"]);
    let entry = reconciler.ledger().entry(48213).unwrap();
    let holds = entry.holds.unwrap();
    assert_eq!((holds.version, holds.body_sha256), (a_again.version(), a.body_sha256.clone()));
    assert_eq!(entry.latest.unwrap().outcome, LedgerOutcome::Upserted);
}

#[tokio::test]
async fn an_older_version_redriven_after_a_newer_one_is_superseded_and_appzen_keeps_the_newer() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    let (parked, newer) = (send(0, 24), send(5, 25));
    // The newer version went through while the older one sat on the parked queue...
    assert!(matches!(reconciler.process(&record("m-2", &newer), None).await.outcome, Outcome::Upserted(_)));
    // ...then the operator redrives the parked one: same envelope, new SQS message.
    let report = reconciler.process(&record("m-redriven", &parked), None).await;
    assert!(
        matches!(report.outcome, Outcome::Superseded { newer_version } if newer_version == newer.version()),
        "{report:?}"
    );
    assert_eq!(report.outcome.fate(), Fate::Consumed);
    assert_eq!(arrival_dates_sent(&appzen).await, ["2026-02-25"], "the older version never reached AppZen");
    assert_eq!(reconciler.ledger().entry(48213).unwrap().holds.unwrap().version, newer.version());
}

#[tokio::test]
async fn the_same_body_sent_twice_is_upserted_once() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    let (first, resend) = (send(0, 24), send(1, 24));
    assert_eq!(first.body_sha256, resend.body_sha256, "same body, two requests");
    assert!(matches!(reconciler.process(&record("m-1", &first), None).await.outcome, Outcome::Upserted(_)));
    let report = reconciler.process(&record("m-2", &resend), None).await;
    assert!(matches!(report.outcome, Outcome::Duplicate), "{report:?}");
    assert_eq!((report.outcome.fate(), report.attempts), (Fate::Consumed, 0));
    assert_eq!(appzen.received_requests().await.unwrap().len(), 1);
    let latest = reconciler.ledger().entry(48213).unwrap().latest.unwrap();
    assert_eq!((latest.version, latest.outcome), (resend.version(), LedgerOutcome::Duplicate));
    // The same SQS record delivered again (the invocation died before deleting it) is a duplicate too.
    let report = reconciler.process(&record("m-2", &resend), None).await;
    assert!(matches!(report.outcome, Outcome::Duplicate), "{report:?}");
    assert_eq!(appzen.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_transient_failure_leaves_the_ledger_as_it_was_and_the_success_records_it_once() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).up_to_n_times(2).mount(&appzen).await;
    accept_everything(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    let a = send(0, 24);
    let report = reconciler.process(&record("m-1", &a), None).await;
    assert!(matches!(report.outcome, Outcome::AppZenUnavailable { .. }), "{report:?}");
    let after_failure = reconciler.ledger().entry(48213).unwrap();
    assert_eq!((&after_failure.latest, &after_failure.holds, &after_failure.claim), (&None, &None, &None));

    // The redelivery (same message) is processed normally.
    let report = reconciler.process(&record("m-1", &a), None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{report:?}");
    let entry = reconciler.ledger().entry(48213).unwrap();
    let latest = entry.latest.unwrap();
    assert_eq!(
        (latest.version, latest.outcome, latest.sqs_message_id.as_str()),
        (a.version(), LedgerOutcome::Upserted, "m-1")
    );
    // claim, release (the failure), claim, settle: one settled outcome, written once.
    assert_eq!(entry.revision, 4);
}

#[tokio::test]
async fn two_invocations_racing_on_one_po_leave_the_newest_version() {
    // The older version is slow at AppZen; the newer one arrives meanwhile in another invocation.
    let appzen = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "uuid": "uuid-1", "status": "UPDATED" }))
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&appzen)
        .await;
    let reconciler = reconciler_for(&appzen);
    let (older, newer) = (send(0, 24), send(1, 25));
    let older_record = record("m-old", &older);
    let slow = reconciler.process(&older_record, None);
    let racing = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reconciler.process(&record("m-new", &newer), None).await
    };
    let (slow, racing) = tokio::join!(slow, racing);
    assert!(matches!(slow.outcome, Outcome::Upserted(_)), "{slow:?}");
    assert!(matches!(racing.outcome, Outcome::LedgerBusy { ref claimed_by } if claimed_by == "m-old"), "{racing:?}");
    assert_eq!(racing.outcome.fate(), Fate::Retry, "the newer one comes back rather than racing the older one");
    // SQS redelivers the newer version once the older one is done.
    let redelivered = reconciler.process(&record("m-new", &newer), None).await;
    assert!(matches!(redelivered.outcome, Outcome::Upserted(_)), "{redelivered:?}");
    assert_eq!(arrival_dates_sent(&appzen).await, ["2026-02-24", "2026-02-25"]);

    // The other way round: the newer one holds the claim, and the older one is superseded at once.
    let appzen = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "uuid": "u" })).set_delay(Duration::from_millis(400)),
        )
        .mount(&appzen)
        .await;
    let second = reconciler_for(&appzen);
    let newer_record = record("m-new", &newer);
    let slow = second.process(&newer_record, None);
    let racing = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        second.process(&record("m-old", &older), None).await
    };
    let (slow, racing) = tokio::join!(slow, racing);
    assert!(matches!(slow.outcome, Outcome::Upserted(_)), "{slow:?}");
    assert!(matches!(racing.outcome, Outcome::Superseded { .. }), "{racing:?}");
    assert_eq!(arrival_dates_sent(&appzen).await, ["2026-02-25"]);
    assert_eq!(second.ledger().entry(48213).unwrap().holds.unwrap().version, newer.version());
}

#[tokio::test]
async fn without_the_ledger_nothing_is_upserted_and_the_record_comes_back() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    reconciler.ledger().fail_next(1, Failure::Transient);
    let report = reconciler.process(&record("m-1", &send(0, 24)), None).await;
    assert!(matches!(&report.outcome, Outcome::LedgerUnavailable(e) if e.is_transient()), "{report:?}");
    assert_eq!(report.outcome.fate(), Fate::Retry);
    assert!(reconciler.notifications().messages().is_empty());
}

#[tokio::test]
async fn a_notification_that_cannot_be_queued_releases_the_claim_so_the_redelivery_notifies() {
    let appzen = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    // Komet's sample does not reconcile: held under `block`, and a person is told.
    let body = fixture("komet-doc-sample.json");
    let held = WebhookEnvelope::new(parse_webhook(&body).unwrap(), &body, at(0)).with_send_id("req-doc");
    reconciler.notifications().fail_next(1, Failure::Transient);
    let report = reconciler.process(&record("m-1", &held), None).await;
    assert!(matches!(report.outcome, Outcome::NotifyFailed(_)), "{report:?}");
    assert_eq!(reconciler.ledger().entry(12345).unwrap().latest, None, "not final, not recorded");

    let report = reconciler.process(&record("m-1", &held), None).await;
    assert!(matches!(report.outcome, Outcome::Held), "{report:?}");
    assert_eq!(reconciler.notifications().messages().len(), 1);
    let latest = reconciler.ledger().entry(12345).unwrap().latest.unwrap();
    assert_eq!((latest.outcome, latest.body_sha256), (LedgerOutcome::Held, sha256_hex(&body)));
}

#[tokio::test]
async fn an_operators_replay_sends_a_rejected_version_again_and_a_redelivery_does_not() {
    let appzen = MockServer::start().await;
    // AppZen refuses the PO at first (its setup was wrong), then, once fixed, accepts it.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": "unknown supplier"})))
        .up_to_n_times(1)
        .mount(&appzen)
        .await;
    accept_everything(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    let version = send(0, 24);
    let refused = reconciler.process(&record("m-1", &version), None).await;
    assert!(matches!(refused.outcome, Outcome::Rejected(_)), "{refused:?}");

    // The same version delivered again (SQS, a redrive) is done with: AppZen is not asked again.
    let again = reconciler.process(&record("m-2", &version), None).await;
    assert!(matches!(again.outcome, Outcome::Duplicate), "{again:?}");
    assert_eq!(appzen.received_requests().await.unwrap().len(), 1);

    // `po-sync-admin replay --po` sends the kept body with its version, marked: it is tried again.
    let mut replay = version.clone();
    replay.replay = true;
    replay.send_id = Some("replay-1".into());
    let report = reconciler.process(&record("m-3", &replay), None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{report:?}");
    let entry = reconciler.ledger().entry(48213).unwrap();
    assert_eq!(entry.holds.unwrap().version, version.version(), "AppZen holds that version, not a new one");
    assert_eq!(entry.latest.unwrap().outcome, LedgerOutcome::Upserted);
}

#[tokio::test]
async fn every_attempt_is_in_the_pos_history_newest_first() {
    use po_sync::history::AttemptOutcome::{Duplicate, Retried, Superseded, Upserted};
    let appzen = MockServer::start().await;
    // AppZen is down for the first delivery only, then takes everything.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("x-correlation-id", "corr-503"))
        .up_to_n_times(2)
        .mount(&appzen)
        .await;
    accept_everything(&appzen).await;
    let reconciler = reconciler_for(&appzen);
    let (a, b, a_again) = (send(0, 24), send(1, 25), send(2, 24));
    let deliveries = [("m-1", &a), ("m-1", &a), ("m-2", &b), ("m-3", &a_again), ("m-3", &a_again), ("m-old", &b)];
    for (id, envelope) in deliveries {
        reconciler.process(&record(id, envelope), None).await;
    }

    let history = po_sync_aws::ledger::Ledger::history(reconciler.ledger(), 48213, 100).await.unwrap();
    let told: Vec<_> = history.iter().map(|h| (h.sqs_message_id.as_deref().unwrap(), h.version, h.outcome)).collect();
    assert_eq!(
        told,
        [
            ("m-old", b.version(), Superseded),
            ("m-3", a_again.version(), Duplicate),
            ("m-3", a_again.version(), Upserted),
            ("m-2", b.version(), Upserted),
            ("m-1", a.version(), Upserted),
            ("m-1", a.version(), Retried),
        ]
    );
    let retried = &history[5];
    assert_eq!((retried.http_status, retried.requests, retried.destination.as_str()), (Some(503), 2, "appzen"));
    assert_eq!(retried.correlation_id.as_deref(), Some("corr-503"));
    assert!(retried.detail.as_deref().unwrap().contains("retried later"), "{retried:?}");
    assert_eq!((history[4].http_status, history[4].requests), (Some(200), 1));
    assert!(history.iter().all(|h| h.po_number == a.po.po_number && h.latency_ms.is_some()));
    assert_eq!(po_sync_aws::ledger::Ledger::history(reconciler.ledger(), 48213, 2).await.unwrap(), history[..2]);
    assert!(po_sync_aws::ledger::Ledger::history(reconciler.ledger(), 1, 100).await.unwrap().is_empty());
}
