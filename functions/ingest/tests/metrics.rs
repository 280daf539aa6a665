//! ingest's metrics: what each answer records (captured on the test's own thread, so these tests run in
//! parallel with any other), and the EMF lines the production collector writes for them, read back and checked
//! against the EMF specification and the metrics catalogue.

use ingest::{Ingest, MemoryFifoQueue};
use lambda_http::{Body, Request};
use po_sync::config::ingest::Credentials;
use po_sync_aws::metrics::{Metrics, Service};
use po_sync_aws::port::Failure;
use po_sync_test_support::{capture::Capture, emf};

use po_sync_test_support::DOC_SAMPLE;
/// `komet:s3cret`
const BASIC: &str = "Basic a29tZXQ6czNjcmV0";

fn ingest() -> Ingest<MemoryFifoQueue> {
    let credentials = Credentials::Basic { username: "komet".into(), password: "s3cret".into() };
    Ingest::new(&credentials, 4096, MemoryFifoQueue::default())
}

fn request(method: &str, authorization: Option<&str>, content_type: &str, body: &[u8]) -> Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri("https://api.example.com/webhooks/komet/po-reconciliation")
        .header("content-type", content_type);
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

fn webhook() -> Request {
    request("POST", Some(BASIC), "application/json", DOC_SAMPLE)
}

/// One kind of answer, and the counter it must record.
struct Case {
    name: &'static str,
    request: Request,
    /// SQS refuses the message.
    queue_fails: bool,
    metric: &'static str,
    reason: Option<&'static str>,
}

fn case(name: &'static str, request: Request, metric: &'static str, reason: Option<&'static str>) -> Case {
    Case { name, request, queue_fails: false, metric, reason }
}

/// Every kind of answer.
fn cases() -> Vec<Case> {
    let json = "application/json";
    vec![
        case("queued", webhook(), "WebhooksAccepted", None),
        case("GET", request("GET", Some(BASIC), json, b""), "WebhooksRefused", Some("method_not_allowed")),
        case("no credentials", request("POST", None, json, DOC_SAMPLE), "WebhooksRefused", Some("unauthorized")),
        case(
            "text/plain",
            request("POST", Some(BASIC), "text/plain", DOC_SAMPLE),
            "WebhooksRefused",
            Some("unsupported_media_type"),
        ),
        case(
            "too large",
            request("POST", Some(BASIC), json, &[b' '; 5000]),
            "WebhooksRefused",
            Some("payload_too_large"),
        ),
        case(
            "invalid",
            request("POST", Some(BASIC), json, br#"{"id": 1}"#),
            "WebhooksRefused",
            Some("invalid_payload"),
        ),
        Case { queue_fails: true, ..case("SQS down", webhook(), "WebhooksRefused", Some("queue_unavailable")) },
    ]
}

#[tokio::test]
async fn each_answer_records_exactly_one_counter_with_its_reason() {
    for case in cases() {
        let ingest = ingest();
        if case.queue_fails {
            ingest.queue.fail_next(1, Failure::Transient);
        }
        let capture = Capture::default();
        let _scope = capture.enter();
        ingest.handle(case.request).await;
        let labels: Vec<(String, String)> =
            case.reason.iter().map(|r| ("reason".to_owned(), (*r).to_owned())).collect();
        assert_eq!(capture.counters(), [((case.metric.to_owned(), labels), 1)], "{}", case.name);
    }
}

/// The one test in this binary that installs the production collector (once per process). Every other test
/// here captures on its own thread, so nothing they record reaches it.
#[tokio::test]
async fn the_collector_writes_valid_emf_once_per_invocation() {
    let metrics = Metrics::install(Service::Ingest, &[("METRICS_NAMESPACE", "po-sync-test")]).unwrap();
    let mut flushes = Vec::new();
    for (index, case) in cases().into_iter().enumerate() {
        let ingest = ingest();
        if case.queue_fails {
            ingest.queue.fail_next(1, Failure::Transient);
        }
        metrics.begin(&format!("request-{index}"));
        ingest.handle(case.request).await;
        let mut out = Vec::new();
        metrics.flush_to(&mut out).unwrap();
        flushes.push(String::from_utf8(out).unwrap());
    }
    let mut nothing = Vec::new();
    metrics.flush_to(&mut nothing).unwrap();
    assert!(nothing.is_empty(), "nothing recorded, nothing written");

    let mut summary = emf::Summary::default();
    for (index, flush) in flushes.iter().enumerate() {
        let lines: Vec<&str> = flush.lines().collect();
        // One document per set of dimension values: the first holds ColdStart and WebhooksAccepted (both
        // `service` only), each later one a WebhooksRefused with its reason.
        assert_eq!(lines.len(), 1, "{flush}");
        for line in lines {
            let document = emf::parse(line).unwrap_or_else(|p| panic!("{p:?}\n{line}"));
            emf::check(&document, "po-sync-test").unwrap_or_else(|p| panic!("{p:?}\n{line}"));
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["requestId"], format!("request-{index}"), "{line}");
            summary.add(&document);
        }
    }
    assert_eq!(summary.documents, 7);
    assert_eq!(summary.total("ingest", "ColdStart", &[]), 1.0, "counted once, with the first invocation");
    assert!(flushes[0].contains("\"ColdStart\":1") && !flushes[1].contains("ColdStart"));
    assert_eq!(summary.total("ingest", "WebhooksAccepted", &[]), 1.0);
    for reason in [
        "method_not_allowed",
        "unauthorized",
        "unsupported_media_type",
        "payload_too_large",
        "invalid_payload",
        "queue_unavailable",
    ] {
        assert_eq!(summary.total("ingest", "WebhooksRefused", &[&format!("reason={reason}")]), 1.0, "{reason}");
    }
}
