//! The handler on realistic Lambda events (API Gateway HTTP API v2 and a Function URL, plain and base64
//! bodies, mixed-case headers), deserialised by lambda_http exactly as in Lambda, with an in-memory queue
//! (and an in-memory bucket for the claim checks of POs too large for one SQS message).

use ingest::{FifoMessage, FifoQueue, Ingest, MemoryFifoQueue, MemoryObjectStore, ObjectStore};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use po_sync::config::ingest::Credentials;
use po_sync::message::{BodyRef, WebhookEnvelope, sha256_hex};
use po_sync_aws::port::Failure;
use serde_json::Value;

use po_sync_test_support::DOC_SAMPLE;

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

async fn call(
    ingest: &Ingest<impl FifoQueue, impl ObjectStore>,
    request: Request,
) -> (StatusCode, Value, Response<Body>) {
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

/// A valid PO, within the reader's limits, whose queue message as ingest writes it is `offset` bytes from SQS's
/// 1 MiB (8: just over; -8: just under; a few bytes of slack, since `receivedAt` prints no fraction in the rare
/// millisecond that is a whole second): 1,000 one-item invoices with long links, the last link sized to the byte.
fn po_sized_around_the_sqs_limit(offset: isize) -> Vec<u8> {
    let body = |link: usize, last_link: usize| {
        let invoice = |link: usize| {
            let file = format!("https://files.kometsales.com/{}", "x".repeat(link));
            format!(
                r#"{{"invoiceNumber": "I", "invoiceAmount": 1, "file": "{file}", "purchaseOrderItems": [{{"totalCost": 1}}]}}"#
            )
        };
        let mut invoices: Vec<String> = (1..1_000).map(|_| invoice(link)).collect();
        invoices.push(invoice(last_link));
        format!(r#"{{"id": 7, "poNumber": "P7", "total": 1000, "vendorInvoices": [{}]}}"#, invoices.join(","))
            .into_bytes()
    };
    let message_size = |body: &[u8]| {
        let po = po_sync::komet::parse_webhook(body).unwrap();
        // Milliseconds, as ingest stamps it.
        let at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        let envelope = WebhookEnvelope::new(po, body, at).with_send_id("req-big");
        let json = envelope.to_json();
        FifoMessage::webhook(&envelope, json).size()
    };
    let target = ingest::admission::SQS_MAX_MESSAGE_BYTES.checked_add_signed(offset).unwrap();
    // The longest links that leave the last one room to reach the target: each character is one byte, so 999
    // links of `link` characters add 999 bytes per character.
    let link = (target - message_size(&body(0, 0))) / 999;
    let last_link = target - message_size(&body(link, 0));
    assert!(last_link <= 990, "{last_link}");
    let sized = body(link, last_link);
    assert!(message_size(&sized).abs_diff(target) <= 4, "{} for {target}", message_size(&sized));
    sized
}

/// A POST with the Bearer token of the fixtures, as API Gateway hands it over with request id `req-big`.
fn post(body: Vec<u8>) -> Request {
    let request = event("function-url-bearer-base64.json", |e| {
        e["requestContext"]["requestId"] = "req-big".into();
    });
    let (parts, _) = request.into_parts();
    Request::from_parts(parts, Body::from(body))
}

/// The in-memory bucket of an ingest built with one.
fn bucket<Q>(ingest: &Ingest<Q, MemoryObjectStore>) -> &MemoryObjectStore {
    ingest.bucket.as_ref().unwrap()
}

const SQS_LIMIT: usize = 1_048_576;

#[tokio::test]
async fn a_po_just_over_the_sqs_limit_is_stored_then_queued_as_a_claim_check() {
    let ingest =
        Ingest::new(&bearer(), 6_000_000, MemoryFifoQueue::default()).with_bucket(MemoryObjectStore::default());
    let body = po_sized_around_the_sqs_limit(8);
    let (status, reply, _) = call(&ingest, post(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, serde_json::json!({"status": "1", "message": "purchase order P7 (id 7) received"}));

    let messages = ingest.queue.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    let pointer = BodyRef::from_json(&message.body).expect("the queued message is a claim check");
    assert_eq!((message.group_id.as_str(), message.deduplication_id.as_str()), ("7", "req-big"));
    assert_eq!(message.attributes[0], ("poNumber", "P7".to_owned()));
    assert_eq!((pointer.bucket.as_str(), pointer.key.as_str()), ("memory-bucket", "bodies/7/req-big.json"));

    let stored = bucket(&ingest).object(&pointer.key).expect("the envelope is stored at the key");
    let json = String::from_utf8(stored.bytes).unwrap();
    assert!(json.len().abs_diff(SQS_LIMIT) < 100, "just over SQS's limit with the attributes: {}", json.len());
    let envelope = WebhookEnvelope::from_json(&json).unwrap();
    assert!(pointer.names(&envelope));
    assert_eq!(envelope.body_sha256, sha256_hex(&body));
    assert_eq!((envelope.received_at, envelope.send_id.as_deref()), (pointer.received_at, Some("req-big")));
    assert_eq!(envelope.po.vendor_invoices.len(), 1_000);
    assert_eq!(stored.content_type, "application/json");
    let metadata: Vec<(&str, &str)> = stored.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(metadata, [("po-id", "7"), ("po-number", "P7"), ("send-id", "req-big")]);

    // The body as Komet sent it is kept beside it, under its version.
    let kept = format!("webhooks/7/{:013}-req-big.json", pointer.version());
    assert_eq!(bucket(&ingest).keys(), ["bodies/7/req-big.json".to_owned(), kept.clone()]);
    assert_eq!(bucket(&ingest).object(&kept).unwrap().bytes, body);

    // One invoice fewer fits in one message: queued as it is, only the body kept.
    let ingest =
        Ingest::new(&bearer(), 6_000_000, MemoryFifoQueue::default()).with_bucket(MemoryObjectStore::default());
    let (status, _, _) = call(&ingest, post(po_sized_around_the_sqs_limit(-8))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(WebhookEnvelope::from_json(&ingest.queue.messages()[0].body).is_ok());
    assert_eq!(bucket(&ingest).puts(), 1);
    assert!(bucket(&ingest).keys()[0].starts_with("webhooks/7/"), "{:?}", bucket(&ingest).keys());
}

#[tokio::test]
async fn every_acknowledged_webhook_is_kept_before_it_is_queued() {
    let ingest =
        Ingest::new(&bearer(), 6_000_000, MemoryFifoQueue::default()).with_bucket(MemoryObjectStore::default());
    let body = po_sync_test_support::CLEAN_PO.to_vec();
    let (status, _, _) = call(&ingest, post(body.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let envelope = WebhookEnvelope::from_json(&ingest.queue.messages()[0].body).unwrap();
    let key = format!("webhooks/{}/{:013}-req-big.json", envelope.po.id, envelope.version());
    assert_eq!(bucket(&ingest).keys(), std::slice::from_ref(&key));
    let kept = bucket(&ingest).object(&key).unwrap();
    assert_eq!(sha256_hex(&kept.bytes), envelope.body_sha256, "the body exactly as Komet sent it");
    let metadata: Vec<(&str, &str)> = kept.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(metadata[..3], [("po-id", "48213"), ("po-number", "P004410"), ("send-id", "req-big")]);

    // A body the bucket cannot keep is not acknowledged: 503, nothing queued, and Komet's retry goes through.
    let ingest =
        Ingest::new(&bearer(), 6_000_000, MemoryFifoQueue::default()).with_bucket(MemoryObjectStore::default());
    bucket(&ingest).fail_next(1, Failure::Transient);
    assert_eq!(call(&ingest, post(body.clone())).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ingest.queue.messages().is_empty());
    assert_eq!(call(&ingest, post(body)).await.0, StatusCode::OK);
    assert_eq!((ingest.queue.messages().len(), bucket(&ingest).puts()), (1, 1));
}

#[tokio::test]
async fn a_body_that_cannot_be_stored_is_503_and_nothing_is_queued() {
    let ingest =
        Ingest::new(&bearer(), 6_000_000, MemoryFifoQueue::default()).with_bucket(MemoryObjectStore::default());
    bucket(&ingest).fail_next(1, Failure::Transient);
    let (status, reply, _) = call(&ingest, post(po_sized_around_the_sqs_limit(8))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply,
        serde_json::json!({"status": "0", "error": "the webhook could not be queued: please retry later"})
    );
    assert!(ingest.queue.messages().is_empty(), "no claim check without its body");
    assert!(bucket(&ingest).keys().is_empty());
    // Komet's retry goes through.
    assert_eq!(call(&ingest, post(po_sized_around_the_sqs_limit(8))).await.0, StatusCode::OK);
    assert_eq!(ingest.queue.messages().len(), 1);
}

#[tokio::test]
async fn a_claim_check_the_queue_refuses_is_503_and_its_body_is_left_to_expire() {
    let queue = MemoryFifoQueue::default();
    queue.fail_next(1, Failure::Transient);
    let ingest = Ingest::new(&bearer(), 6_000_000, queue).with_bucket(MemoryObjectStore::default());
    let (status, _, _) = call(&ingest, post(po_sized_around_the_sqs_limit(8))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ingest.queue.messages().is_empty());
    let keys = bucket(&ingest).keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], "bodies/7/req-big.json", "stored first; the lifecycle rule removes it");
    assert!(keys[1].starts_with("webhooks/7/"), "kept, as an answer Komet sends again: {keys:?}");
}

#[tokio::test]
async fn without_a_bucket_a_po_over_the_sqs_limit_is_413() {
    let ingest = Ingest::new(&bearer(), 6_000_000, MemoryFifoQueue::default());
    let (status, reply, _) = call(&ingest, post(po_sized_around_the_sqs_limit(8))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply["error"], "payload too large: the limit is 1048576 bytes");
    assert!(ingest.queue.messages().is_empty());
}

#[tokio::test]
async fn above_max_body_bytes_it_is_413_bucket_or_not() {
    let body = po_sized_around_the_sqs_limit(8);
    let limit = body.len() - 1;
    let ingest = Ingest::new(&bearer(), limit, MemoryFifoQueue::default()).with_bucket(MemoryObjectStore::default());
    let (status, reply, _) = call(&ingest, post(body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply["error"], format!("payload too large: the limit is {limit} bytes"));
    assert!(ingest.queue.messages().is_empty());
    assert_eq!(bucket(&ingest).puts(), 0);
}
