//! Exsited's delivery and the invocation's time (DESTINATION=exsited, Exsited a wiremock, the ports in memory):
//! a record handed back after Exsited's `Retry-After` waits at least that long, a delivery never starts a request
//! that cannot finish before the invocation's deadline less its margin, and a slow answer is cut there.

use aws_lambda_events::event::sqs::SqsEvent;
use po_sync::outage::OutageCause;
use po_sync_aws::exsited::{ExsitedError, OUT_OF_TIME};
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::objects::MemoryObjectStore;
use po_sync_aws::queue::{MemoryFifoQueue, MemoryRedelivery};
use po_sync_test_support::{CLEAN_PO, envelope};
use reconcile::{Fate, Outcome, Reconciler};
use serde_json::json;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger, MemoryObjectStore, MemoryRedelivery>;

mod common;
use common::{
    EXSITED_ORDERS_PATH as ORDERS_PATH, EXSITED_TOKEN_PATH as TOKEN_PATH, exsited_accepts, exsited_config,
    exsited_reconciler, exsited_token as token, failures,
};

/// What reconcile keeps back from the invocation's deadline for Exsited.
const MARGIN: Duration = Duration::from_secs(2);

/// reconcile for Exsited at `exsited`: a 10 s request timeout, a retry schedule of `7s,30s,2m`.
async fn reconciler(exsited: &MockServer) -> MemoryReconciler {
    let env = [("EXSITED_TIMEOUT_MS", "10000"), ("RETRY_SCHEDULE", "7s,30s,2m")];
    let config = exsited_config(exsited, &env);
    assert_eq!(config.deadline_margin(), MARGIN);
    exsited_reconciler(config).await.with_redelivery(MemoryRedelivery::default())
}

/// An SQS record of the clean PO as Lambda delivers it: group = PO id, received once.
fn record(message_id: &str) -> serde_json::Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("receipt-{message_id}"),
        "body": envelope(CLEAN_PO).to_json(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "MessageGroupId": "48213",
            "SentTimestamp": "1795280400050",
        },
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:po-sync-exsited-webhooks.fifo",
        "awsRegion": "us-east-1"
    })
}

fn batch(message_id: &str) -> SqsEvent {
    serde_json::from_value(json!({ "Records": [record(message_id)] })).unwrap()
}

/// How long each handed-back record waits, by message id.
fn waits(reconciler: &MemoryReconciler) -> Vec<(String, u64)> {
    let postponed = reconciler.redelivery().unwrap().postponed();
    postponed.into_iter().map(|p| (p.message_id, p.delay.as_secs())).collect()
}

#[tokio::test]
async fn a_record_handed_back_after_exsited_s_retry_after_waits_at_least_that_long_within_sqs_s_limit() {
    // The schedule's first step is 7 s; 12 h is the longest SQS can hold a record.
    for (status, asked, waited) in [(429, "120", 120), (503, "300", 300), (429, "3", 7), (429, "100000", 43_200)] {
        let exsited = MockServer::start().await;
        token(&exsited).await;
        Mock::given(method("GET"))
            .and(path(ORDERS_PATH))
            .respond_with(ResponseTemplate::new(status).insert_header("retry-after", asked))
            .mount(&exsited)
            .await;
        let reconciler = reconciler(&exsited).await;
        let response = reconciler.handle_batch(batch("a"), Some(SystemTime::now() + Duration::from_secs(120))).await;
        assert_eq!(failures(&response), ["a"], "{status} {asked}");
        assert_eq!(waits(&reconciler), [("a".to_owned(), waited)], "{status} Retry-After: {asked}");
    }

    // Without a Retry-After, the schedule alone.
    let exsited = MockServer::start().await;
    token(&exsited).await;
    Mock::given(method("GET")).and(path(ORDERS_PATH)).respond_with(ResponseTemplate::new(429)).mount(&exsited).await;
    let reconciler = reconciler(&exsited).await;
    reconciler.handle_batch(batch("a"), Some(SystemTime::now() + Duration::from_secs(120))).await;
    assert_eq!(waits(&reconciler), [("a".to_owned(), 7)]);
}

#[tokio::test]
async fn a_delivery_with_too_little_time_left_sends_nothing_and_hands_the_record_back() {
    let exsited = MockServer::start().await;
    exsited_accepts(&exsited).await;
    let reconciler = reconciler(&exsited).await;

    // Past the batch's own check (more than the margin left), but less than a request needs (a second) after it.
    let report =
        reconciler.process(&batch("a").records[0], Some(Instant::now() + MARGIN + Duration::from_millis(500))).await;
    let Outcome::ExsitedUnavailable(error) = &report.outcome else { panic!("{report:?}") };
    assert_eq!(error, &ExsitedError::Unreachable(OUT_OF_TIME.to_owned()));
    assert_eq!(error.outage_cause(), Some(OutageCause::Unavailable), "handed back as AppZen's out-of-time is");
    assert_eq!((report.attempts, report.outcome.fate()), (0, Fate::Retry));

    let deadline = SystemTime::now() + MARGIN + Duration::from_millis(500);
    let response = reconciler.handle_batch(batch("b"), Some(deadline)).await;
    assert_eq!(failures(&response), ["b"]);
    assert_eq!(waits(&reconciler), [("b".to_owned(), 7)], "by the schedule, as AppZen's out-of-time record");
    let asked = exsited.received_requests().await.unwrap();
    assert!(asked.is_empty(), "not even a token was asked for: {asked:?}");
    assert_eq!(reconciler.ledger().entry(48213).and_then(|e| e.latest), None, "no final outcome");

    // With time enough, the same record goes through.
    let response = reconciler.handle_batch(batch("c"), Some(SystemTime::now() + Duration::from_secs(120))).await;
    assert!(failures(&response).is_empty());
    let held = reconciler.ledger().entry(48213).unwrap().holds.and_then(|held| held.uuid);
    assert_eq!(held.as_deref(), Some("PO-1"));
}

#[tokio::test]
async fn a_slow_exsited_answer_is_cut_at_the_invocation_s_deadline_not_at_the_request_timeout() {
    let exsited = MockServer::start().await;
    token(&exsited).await;
    // Slower than the time left, faster than EXSITED_TIMEOUT_MS (10 s).
    Mock::given(method("GET"))
        .and(path(ORDERS_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "purchase_orders": [] }))
                .set_delay(Duration::from_secs(8)),
        )
        .mount(&exsited)
        .await;
    let reconciler = reconciler(&exsited).await;

    let left = Duration::from_millis(1500);
    let started = Instant::now();
    let report = reconciler.process(&batch("a").records[0], Some(started + MARGIN + left)).await;
    let took = started.elapsed();
    let Outcome::ExsitedUnavailable(error) = &report.outcome else { panic!("{report:?}") };
    assert_eq!(error, &ExsitedError::Unreachable("timeout".to_owned()));
    assert_eq!((report.attempts, report.outcome.fate()), (1, Fate::Retry), "the list was asked for, and cut");
    assert!(took >= left - Duration::from_millis(300), "the request had the time left: {took:?}");
    assert!(took < MARGIN + left, "cut before the deadline less its margin, not at 10 s: {took:?}");
    let asked: Vec<String> =
        exsited.received_requests().await.unwrap().iter().map(|r| r.url.path().to_owned()).collect();
    assert_eq!(asked, [TOKEN_PATH, ORDERS_PATH], "no create was started after the cut");

    let started = std::time::Instant::now();
    let response = reconciler.handle_batch(batch("b"), Some(SystemTime::now() + MARGIN + left)).await;
    assert!(started.elapsed() < MARGIN + left, "{:?}", started.elapsed());
    assert_eq!(failures(&response), ["b"], "handed back");
}
