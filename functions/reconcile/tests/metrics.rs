//! reconcile's metrics: what each kind of record records (captured on the test's own thread, so these tests
//! run in parallel with any other), with in-memory ports and a wiremock AppZen; and the EMF lines the
//! production collector writes for a mixed batch, read back and checked against the EMF specification and the
//! metrics catalogue.

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{TimeZone, Utc};
use po_sync::appzen::UPSERT_PATH;
use po_sync::archive::{FetchPolicy, HostRule};
use po_sync::komet::parse_webhook;
use po_sync::message::WebhookEnvelope;
use po_sync_aws::invoices::{InvoiceArchiver, InvoiceFetcher};
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::metrics::{Metrics, Service};
use po_sync_aws::objects::MemoryObjectStore;
use po_sync_aws::port::Failure;
use po_sync_aws::queue::MemoryFifoQueue;
use po_sync_test_support::fixture;
use po_sync_test_support::{appzen_client, reconcile_config, sqs_event, sqs_record};
use po_sync_test_support::{capture::Capture, emf};
use reconcile::Reconciler;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger, MemoryObjectStore>;

fn reconciler_for(appzen: &MockServer) -> MemoryReconciler {
    let config = reconcile_config(&appzen.uri(), &[("APPZEN_MAX_ATTEMPTS", "2"), ("APPZEN_TIMEOUT_MS", "2000")]);
    let client = appzen_client(&config);
    Reconciler::new(config, client, MemoryFifoQueue::default(), MemoryLedger::default())
}

async fn appzen_answering(status: u16) -> MockServer {
    let appzen = MockServer::start().await;
    let answer = match status {
        200 | 201 => ResponseTemplate::new(status).set_body_json(json!({ "uuid": "uuid-1", "status": "CREATED" })),
        _ => ResponseTemplate::new(status).set_body_json(json!({ "message": "entity_id 2 is not an entity" })),
    };
    Mock::given(method("POST")).and(path(UPSERT_PATH)).respond_with(answer).mount(&appzen).await;
    appzen
}

/// A send of `fixture_name` under Komet PO `id`, received at `minute` past 9:00.
fn send(fixture_name: &str, id: u64, minute: u32) -> WebhookEnvelope {
    let body = fixture(fixture_name);
    let mut po = parse_webhook(&body).unwrap();
    po.id = id;
    let received = Utc.with_ymd_and_hms(2026, 11, 22, 9, minute, 0).unwrap();
    WebhookEnvelope::new(po, &body, received).with_send_id(format!("req-{id}-{minute}"))
}

fn batch(envelopes: &[&WebhookEnvelope]) -> SqsEvent {
    sqs_event(envelopes.iter().enumerate().map(|(i, e)| sqs_record(&format!("m-{i}"), e.to_json())).collect())
}

fn outcomes(capture: &Capture) -> Vec<(String, u64)> {
    capture
        .counters()
        .into_iter()
        .filter(|((name, _), _)| name == "Records")
        .map(|((_, labels), n)| (labels[0].1.clone(), n))
        .collect()
}

#[tokio::test]
async fn an_upserted_po_counts_its_outcome_one_attempt_and_its_latency() {
    let appzen = appzen_answering(201).await;
    let reconciler = reconciler_for(&appzen);
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&send("komet-clean-po.json", 1, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("upserted".to_owned(), 1)]);
    assert_eq!(capture.histogram("AppZenAttempts", &[]), [1.0]);
    let latency = capture.histogram("AppZenLatency", &[]);
    assert!(latency.len() == 1 && latency[0] > 0.0 && latency[0] < 2000.0, "{latency:?}");
    assert_eq!(capture.counter("Discrepancies", &[]), 0);
}

#[tokio::test]
async fn a_po_that_does_not_add_up_is_held_with_its_discrepancies() {
    let appzen = appzen_answering(201).await;
    let reconciler = reconciler_for(&appzen);
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&send("komet-doc-sample.json", 2, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("held".to_owned(), 1)]);
    assert_eq!(capture.counter("Discrepancies", &[]), 2, "Komet's sample has two");
    assert!(capture.histogram("AppZenLatency", &[]).is_empty(), "not sent");
}

#[tokio::test]
async fn a_po_that_cannot_be_mapped_is_unmappable_not_held() {
    let appzen = appzen_answering(201).await;
    let reconciler = reconciler_for(&appzen);
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&send("komet-several-vendors.json", 3, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("unmappable".to_owned(), 1)]);
}

#[tokio::test]
async fn an_appzen_refusal_is_rejected_after_one_attempt() {
    let appzen = appzen_answering(400).await;
    let reconciler = reconciler_for(&appzen);
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&send("komet-clean-po.json", 4, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("rejected".to_owned(), 1)]);
    assert_eq!(capture.histogram("AppZenAttempts", &[]), [1.0]);
}

#[tokio::test]
async fn appzen_down_retries_the_record_and_every_later_one_of_the_batch() {
    let appzen = appzen_answering(503).await;
    let reconciler = reconciler_for(&appzen);
    let capture = Capture::default();
    let _scope = capture.enter();
    let (first, second) = (send("komet-clean-po.json", 5, 0), send("komet-clean-po.json", 6, 0));
    let response = reconciler.handle_batch(batch(&[&first, &second]), None).await;
    assert_eq!(response.batch_item_failures.len(), 2);
    assert_eq!(outcomes(&capture), [("retried".to_owned(), 2)], "the failed record and the one behind it");
    assert_eq!(capture.histogram("AppZenAttempts", &[]), [2.0], "APPZEN_MAX_ATTEMPTS, for the one started");
    assert_eq!(capture.histogram("AppZenLatency", &[]).len(), 2, "one value per request");
}

#[tokio::test]
async fn a_notification_that_cannot_be_queued_retries_the_record() {
    let appzen = appzen_answering(201).await;
    let reconciler = reconciler_for(&appzen);
    reconciler.notifications().fail_next(1, Failure::Transient);
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&send("komet-doc-sample.json", 7, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("retried".to_owned(), 1)]);
    assert_eq!(capture.counter("Discrepancies", &[]), 0, "counted once, when the record is done with");
}

#[tokio::test]
async fn poison_duplicate_and_superseded_records_are_told_apart() {
    let appzen = appzen_answering(201).await;
    let reconciler = reconciler_for(&appzen);
    let capture = Capture::default();
    let _scope = capture.enter();
    let (older, newer) = (send("komet-clean-po.json", 8, 0), send("komet-clean-po.json", 8, 5));
    let mut event = batch(&[&newer, &older]);
    event.records.push(sqs_record("m-poison", "not a po-sync message"));
    reconciler.handle_batch(event, None).await;
    // The same body again, in a send of its own: AppZen already holds it.
    let again = send("komet-clean-po.json", 8, 5).with_send_id("req-8-again");
    reconciler.handle_batch(batch(&[&again]), None).await;
    let mut seen = outcomes(&capture);
    seen.sort();
    let expected: Vec<(String, u64)> =
        [("duplicate", 1), ("poison", 1), ("superseded", 1), ("upserted", 1)].map(|(o, n)| (o.to_owned(), n)).into();
    assert_eq!(seen, expected);
    assert_eq!(capture.histogram("AppZenAttempts", &[]), [1.0], "only the upsert called AppZen");
}

#[tokio::test]
async fn invoice_pdfs_are_counted_archived_or_not_once_the_record_is_done() {
    let server = appzen_answering(201).await;
    let pdf: &[u8] = b"%PDF-1.4\n%%EOF\n";
    Mock::given(method("GET"))
        .and(path("/i/1.pdf"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(pdf))
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/i/2.pdf")).respond_with(ResponseTemplate::new(410)).mount(&server).await;
    let policy = FetchPolicy { hosts: vec![HostRule::Address("127.0.0.1".parse().unwrap())], max_bytes: 1 << 20 };
    let fetcher = InvoiceFetcher::new(policy, Duration::from_secs(2)).unwrap();
    let reconciler =
        reconciler_for(&server).with_archiver(InvoiceArchiver::new(fetcher, MemoryObjectStore::default(), 2));
    let body = String::from_utf8(fixture("komet-clean-po.json"))
        .unwrap()
        .replacen("https://files.kometsales.com/invoices/01-P004410.pdf", &format!("{}/i/1.pdf", server.uri()), 1)
        .replacen("https://files.kometsales.com/invoices/01-P004411.pdf", &format!("{}/i/2.pdf", server.uri()), 1);
    let received = Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap();
    let envelope = WebhookEnvelope::new(parse_webhook(body.as_bytes()).unwrap(), body.as_bytes(), received);
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&envelope]), None).await;
    assert_eq!(outcomes(&capture), [("upserted".to_owned(), 1)]);
    assert_eq!((capture.counter("InvoicesArchived", &[]), capture.counter("InvoicesNotArchived", &[])), (1, 1));
}

#[tokio::test]
async fn exsited_s_requests_latency_and_failures_are_counted_under_exsited_s_names() {
    let exsited = MockServer::start().await;
    common::exsited_accepts(&exsited).await;
    let reconciler: MemoryReconciler = common::exsited_reconciler(common::exsited_config(&exsited, &[])).await;
    let capture = Capture::default();
    let _scope = capture.enter();
    reconciler.handle_batch(batch(&[&send("komet-clean-po.json", 1, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("upserted".to_owned(), 1)]);
    assert_eq!(capture.histogram("ExsitedRequests", &[]), [2.0], "find by its note, then create");
    let latency = capture.histogram("ExsitedLatency", &[]);
    assert!(latency.len() == 2 && latency.iter().all(|ms| *ms > 0.0 && *ms < 2000.0), "{latency:?}");
    assert!(capture.histogram("AppZenAttempts", &[]).is_empty() && capture.histogram("AppZenLatency", &[]).is_empty());

    // Exsited down: one failure counted per request, by cause; the 401 a new token cures is none.
    let down = MockServer::start().await;
    common::exsited_token(&down).await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(503)).mount(&down).await;
    let reconciler: MemoryReconciler = common::exsited_reconciler(common::exsited_config(&down, &[])).await;
    reconciler.handle_batch(batch(&[&send("komet-clean-po.json", 2, 0)]), None).await;
    assert_eq!(capture.counter("ExsitedFailures", &[("cause", "unavailable")]), 1);
    assert_eq!(capture.counter("ExsitedFailures", &[("cause", "credentials")]), 0);
    assert_eq!(capture.counter("AppZenFailures", &[("cause", "unavailable")]), 0);

    // A token Exsited has ended: its 401 gets a new token, and the request goes through. No failure.
    let ended = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&ended)
        .await;
    common::exsited_accepts(&ended).await;
    let reconciler: MemoryReconciler = common::exsited_reconciler(common::exsited_config(&ended, &[])).await;
    reconciler.handle_batch(batch(&[&send("komet-clean-po.json", 3, 0)]), None).await;
    assert_eq!(outcomes(&capture), [("retried".to_owned(), 1), ("upserted".to_owned(), 2)]);
    assert_eq!(capture.histogram("ExsitedRequests", &[]).last(), Some(&2.0));
    assert_eq!(capture.counter("ExsitedFailures", &[("cause", "credentials")]), 0);
}

/// The one test in this binary that installs the production collector (once per process). Every other test
/// here captures on its own thread, so nothing they record reaches it.
#[tokio::test]
async fn the_collector_writes_valid_emf_for_a_mixed_batch() {
    let metrics = Metrics::install(Service::Reconcile, &[]).unwrap();
    let appzen = appzen_answering(201).await;
    let reconciler = reconciler_for(&appzen);
    let mut event = batch(&[&send("komet-clean-po.json", 20, 0), &send("komet-doc-sample.json", 21, 0)]);
    event.records.push(sqs_record("m-poison", "{}"));
    metrics.begin("invocation-1");
    reconciler.handle_batch(event, None).await;
    let mut out = Vec::new();
    metrics.flush_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();

    let summary = emf::read_log(&text, "po-sync").unwrap_or_else(|p| panic!("{p:#?}\n{text}"));
    // `service` only (ColdStart, Discrepancies, AppZenLatency, AppZenAttempts), and one per outcome.
    assert_eq!(summary.documents, 4, "{text}");
    assert_eq!(text.lines().count(), 4);
    assert_eq!(summary.total("reconcile", "ColdStart", &[]), 1.0);
    for outcome in ["upserted", "held", "poison"] {
        assert_eq!(summary.total("reconcile", "Records", &[&format!("outcome={outcome}")]), 1.0, "{outcome}");
    }
    assert_eq!(summary.total("reconcile", "Discrepancies", &[]), 2.0);
    assert_eq!(summary.values("reconcile", "AppZenAttempts", &[]), [1.0]);
    assert_eq!(summary.values("reconcile", "AppZenLatency", &[]).len(), 1);
    assert!(text.lines().all(|line| line.contains("\"requestId\":\"invocation-1\"")), "{text}");
    // Never a PO id or number: not as a dimension, not anywhere in the document.
    assert!(!text.contains("P004410") && !text.contains("P002271"), "{text}");
}
