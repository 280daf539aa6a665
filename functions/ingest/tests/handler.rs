//! The handler on realistic Lambda events (API Gateway HTTP API v2 and a Function URL, plain and base64
//! bodies, mixed-case headers), deserialised by lambda_http exactly as in Lambda, with an in-memory queue.

use ingest::{FifoMessage, FifoQueue, Ingest, MemoryFifoQueue};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use po_sync::config::ingest::Credentials;
use po_sync::message::{WebhookEnvelope, sha256_hex};
use po_sync_aws::port::Failure;
use serde_json::Value;

const DOC_SAMPLE: &[u8] = include_bytes!("../../../shared/tests/fixtures/komet-doc-sample.json");

/// The credentials in the fixtures: Basic `komet:s3cret` (API Gateway) and a Bearer token (Function URL).
fn basic() -> Credentials {
    Credentials::Basic { username: "komet".into(), password: "s3cret".into() }
}
fn bearer() -> Credentials {
    Credentials::Bearer { token: "kmt_7Qm2xV9pL4sR8tY1wZ3nB6cD".into() }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fixture event, edited, turned into a request by lambda_http as the runtime does.
fn event(name: &str, edit: impl FnOnce(&mut Value)) -> Request {
    let mut event = fixture(name);
    edit(&mut event);
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

async fn call(ingest: &Ingest<impl FifoQueue>, request: Request) -> (StatusCode, Value, Response<Body>) {
    let response = ingest.handle(request).await;
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    (response.status(), body, response)
}

fn envelope_of(message: &FifoMessage) -> WebhookEnvelope {
    WebhookEnvelope::from_json(&message.body).unwrap()
}

#[tokio::test]
async fn api_gateway_v2_with_basic_auth_and_mixed_case_headers_is_queued() {
    let ingest = Ingest::new(&basic(), 1 << 20, MemoryFifoQueue::default());
    let request = event("apigw-http-v2-basic.json", |_| {});
    // The stage is in the path; the handler must not care.
    assert_eq!(request.uri().path(), "/prod/webhooks/komet");
    let (status, body, _) = call(&ingest, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"status": "1", "message": "purchase order P002271 (id 12345) received"}));

    let messages = ingest.queue.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].group_id, "12345");
    // The send is identified by API Gateway's request id; the body's digest is its content identity.
    assert_eq!(messages[0].deduplication_id, "UqZ6tjK4oAMEJ3w=");
    assert_eq!(messages[0].attributes[0], ("poNumber", "P002271".to_owned()));
    let envelope = envelope_of(&messages[0]);
    assert_eq!(envelope.send_id.as_deref(), Some("UqZ6tjK4oAMEJ3w="));
    assert_eq!(envelope.body_sha256, sha256_hex(DOC_SAMPLE));
    assert_eq!(envelope.po.vendor_invoices.len(), 3);
    assert_eq!(
        messages[0].attributes[1],
        ("receivedAt", envelope.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    );
}

#[tokio::test]
async fn a_function_url_base64_body_is_decoded_before_anything_else() {
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    let request = event("function-url-bearer-base64.json", |_| {});
    assert_eq!(request.body().as_ref(), DOC_SAMPLE, "lambda_http decodes isBase64Encoded bodies");
    let (status, body, _) = call(&ingest, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The digest is of the bytes Komet sent, not of their base64 form.
    let messages = ingest.queue.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(envelope_of(&messages[0]).body_sha256, sha256_hex(DOC_SAMPLE));
}

#[tokio::test]
async fn the_same_request_retried_is_one_message() {
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    for _ in 0..2 {
        // The same request id both times: a retry of one request inside AWS.
        let (status, _, _) = call(&ingest, event("function-url-bearer-base64.json", |_| {})).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(ingest.queue.messages().len(), 1);
}

#[tokio::test]
async fn two_requests_with_the_same_body_are_two_versions() {
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    for request_id in ["req-a", "req-b"] {
        let edit = |e: &mut Value| e["requestContext"]["requestId"] = request_id.into();
        let (status, _, _) = call(&ingest, event("function-url-bearer-base64.json", edit)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let envelopes: Vec<_> = ingest.queue.messages().iter().map(envelope_of).collect();
    let send_ids: Vec<_> = envelopes.iter().map(|e| e.send_id.as_deref().unwrap()).collect();
    assert_eq!(send_ids, ["req-a", "req-b"]);
    assert_eq!(envelopes[0].body_sha256, envelopes[1].body_sha256, "same content, two sends");
}

#[tokio::test]
async fn a_request_without_a_request_id_still_gets_its_own_identity() {
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    for _ in 0..2 {
        let edit = |e: &mut Value| {
            e["requestContext"].as_object_mut().unwrap().remove("requestId");
        };
        let (status, _, _) = call(&ingest, event("function-url-bearer-base64.json", edit)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let messages = ingest.queue.messages();
    assert_eq!(messages.len(), 2);
    assert_ne!(messages[0].deduplication_id, messages[1].deduplication_id);
}

#[tokio::test]
async fn a_browser_get_is_405_with_allow_post() {
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    let (status, body, response) = call(&ingest, event("function-url-browser-get.json", |_| {})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["status"], "0");
    assert_eq!(body["error"], "method not allowed: send the webhook with POST");
    assert_eq!(response.headers()["allow"], "POST");
    assert!(ingest.queue.messages().is_empty());
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_challenge_and_nothing_queued() {
    let ingest = Ingest::new(&basic(), 1 << 20, MemoryFifoQueue::default());
    let wrong_password = |e: &mut Value| e["headers"]["Authorization"] = "Basic a29tZXQ6d3Jvbmc=".into(); // komet:wrong
    let bearer_instead = |e: &mut Value| e["headers"]["Authorization"] = "Bearer s3cret".into();
    let missing = |e: &mut Value| {
        e["headers"].as_object_mut().unwrap().remove("Authorization");
    };
    for (edit, error) in [
        (&wrong_password as &dyn Fn(&mut Value), "invalid credentials"),
        (&bearer_instead, "wrong authentication type for this endpoint (check Basic or Bearer in the webhook setup)"),
        (&missing, "authentication required"),
    ] {
        let (status, body, response) = call(&ingest, event("apigw-http-v2-basic.json", edit)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, serde_json::json!({"status": "0", "error": error}));
        assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"po-sync\", charset=\"UTF-8\"");
    }
    assert!(ingest.queue.messages().is_empty());
}

#[tokio::test]
async fn a_wrong_token_is_401() {
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    let edit = |e: &mut Value| e["headers"]["authorization"] = "Bearer kmt_7Qm2xV9pL4sR8tY1wZ3nB6cE".into();
    let (status, body, response) = call(&ingest, event("function-url-bearer-base64.json", edit)).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid credentials")));
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"po-sync\"");
    assert!(ingest.queue.messages().is_empty());
}

#[tokio::test]
async fn content_type_must_be_json_in_any_case_or_charset() {
    let ingest = Ingest::new(&basic(), 1 << 20, MemoryFifoQueue::default());
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let edit = |e: &mut Value| e["headers"]["Content-Type"] = content_type.into();
        let (status, body, _) = call(&ingest, event("apigw-http-v2-basic.json", edit)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert_eq!(body["error"], "unsupported content type: send application/json");
    }
    assert!(ingest.queue.messages().is_empty());
    let edit = |e: &mut Value| e["headers"]["Content-Type"] = "APPLICATION/json;charset=utf-8".into();
    assert_eq!(call(&ingest, event("apigw-http-v2-basic.json", edit)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let ingest = Ingest::new(&bearer(), 100, MemoryFifoQueue::default());
    let (status, body, _) = call(&ingest, event("function-url-bearer-base64.json", |_| {})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, serde_json::json!({"status": "0", "error": "payload too large: the limit is 100 bytes"}));
    assert!(ingest.queue.messages().is_empty());
}

#[tokio::test]
async fn an_invalid_base64_payload_is_400_naming_the_field() {
    use base64::Engine;
    let ingest = Ingest::new(&bearer(), 1 << 20, MemoryFifoQueue::default());
    let bad = String::from_utf8(DOC_SAMPLE.to_vec()).unwrap().replacen(
        "\"invoiceAmount\": 30.0",
        "\"invoiceAmount\": -30.0",
        1,
    );
    let edit = |e: &mut Value| e["body"] = base64::engine::general_purpose::STANDARD.encode(&bad).into();
    let (status, body, _) = call(&ingest, event("function-url-bearer-base64.json", edit)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], "0");
    assert_eq!(body["error"], "invalid payload: vendorInvoices[1].invoiceAmount: must not be negative, found -30.0");
    assert!(ingest.queue.messages().is_empty());
}

#[tokio::test]
async fn a_queue_that_cannot_take_the_message_is_503_for_komet_to_retry() {
    let queue = MemoryFifoQueue::default();
    queue.fail_next(1, Failure::Transient);
    let ingest = Ingest::new(&basic(), 1 << 20, queue);
    let (status, body, _) = call(&ingest, event("apigw-http-v2-basic.json", |_| {})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        serde_json::json!({"status": "0", "error": "the webhook could not be queued: please retry later"})
    );
    assert!(ingest.queue.messages().is_empty());
}
