//! ingest against real SQS FIFO and Secrets Manager APIs (moto server on 127.0.0.1), through the same
//! cold-start code as Lambda (`Ingest::start`), checked with the real aws-sdk clients.

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use ingest::Ingest;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use po_sync::config::ingest::IngestConfig;
use po_sync::message::{WebhookEnvelope, sha256_hex};
use po_sync_test_support::basic_authorization;
use po_sync_test_support::moto::MotoServer;
use serde_json::Value;

fn doc_sample() -> Vec<u8> {
    po_sync_test_support::fixture("komet-doc-sample.json")
}

fn post(authorization: Option<&str>, body: impl Into<Vec<u8>>) -> Request {
    let mut request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://w5xgd3qhfpyc6mxunr4wwvgf6a0fttkm.lambda-url.us-east-1.on.aws/")
        .header("content-type", "application/json");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.body(Body::from(body.into())).unwrap()
}

/// The request as API Gateway / a Function URL hands it over, with its `requestContext.requestId`.
fn with_request_id(request: Request, request_id: &str) -> Request {
    use lambda_http::RequestExt;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
    // aws_lambda_events structs are non-exhaustive: built from JSON, as the runtime does.
    let context: ApiGatewayV2httpRequestContext =
        serde_json::from_value(serde_json::json!({ "requestId": request_id, "http": { "method": "POST" } })).unwrap();
    request.with_request_context(lambda_http::request::RequestContext::ApiGatewayV2(context))
}

struct Setup {
    moto: MotoServer,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    aws: aws_config::SdkConfig,
}

async fn setup() -> Setup {
    let moto = MotoServer::start();
    let aws = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = po_sync_test_support::moto::create_fifo_queue(&sqs, "webhooks.fifo", None, None).await.unwrap();
    Setup { moto, sqs, queue_url, aws }
}

impl Setup {
    /// The function as Lambda would build it, from these variables plus `QUEUE_URL`.
    async fn ingest(&self, env: &[(&str, &str)]) -> Ingest<ingest::SqsQueues> {
        let mut vars: std::collections::HashMap<String, String> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        vars.entry("QUEUE_URL".to_owned()).or_insert_with(|| self.queue_url.clone());
        Ingest::start(IngestConfig::from_env(&vars).unwrap(), &self.aws).await.unwrap()
    }

    /// Everything on the queue (a single receive: moto returns all visible messages up to 10).
    async fn queued(&self) -> Vec<Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::MessageDeduplicationId)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap()
            .messages()
            .to_vec()
    }
}

const BASIC_ENV: [(&str, &str); 3] =
    [("WEBHOOK_AUTH", "basic"), ("WEBHOOK_USERNAME", "komet"), ("WEBHOOK_PASSWORD", "s3cret")];

async fn call(ingest: &Ingest<ingest::SqsQueues>, request: Request) -> (StatusCode, Value) {
    let response = ingest.handle(request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap())
}

#[tokio::test]
async fn the_doc_sample_is_queued_once_in_group_12345_when_the_same_request_is_retried() {
    let setup = setup().await;
    let ingest = setup.ingest(&BASIC_ENV).await;
    let body = doc_sample();
    let request = || with_request_id(post(Some(&basic_authorization("komet", "s3cret")), body.clone()), "req-7Qm2");
    let (status, reply) = call(&ingest, request()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "1");

    let (status, _) = call(&ingest, request()).await;
    assert_eq!(status, StatusCode::OK, "a retry is answered 200 too: SQS took it (and dropped it as a duplicate)");

    let messages = setup.queued().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    let system = message.attributes().unwrap();
    assert_eq!(system[&MessageSystemAttributeName::MessageGroupId], "12345");
    assert_eq!(system[&MessageSystemAttributeName::MessageDeduplicationId], "req-7Qm2");
    let attributes = message.message_attributes().unwrap();
    assert_eq!(attributes["poNumber"].string_value(), Some("P002271"));
    let received_at = attributes["receivedAt"].string_value().unwrap();

    let envelope = WebhookEnvelope::from_json(message.body().unwrap()).unwrap();
    assert_eq!(envelope.body_sha256, sha256_hex(&body));
    assert_eq!(envelope.po.id, 12345);
    assert_eq!(envelope.po.po_number, "P002271");
    assert_eq!(envelope.received_at, chrono::DateTime::parse_from_rfc3339(received_at).unwrap());
    assert_eq!(envelope.send_id.as_deref(), Some("req-7Qm2"));
}

#[tokio::test]
async fn two_requests_with_the_same_body_are_both_queued_in_order() {
    let setup = setup().await;
    let ingest = setup.ingest(&BASIC_ENV).await;
    for request_id in ["req-1", "req-2"] {
        let request = with_request_id(post(Some(&basic_authorization("komet", "s3cret")), doc_sample()), request_id);
        let (status, reply) = call(&ingest, request).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let envelopes: Vec<WebhookEnvelope> =
        setup.queued().await.iter().map(|m| WebhookEnvelope::from_json(m.body().unwrap()).unwrap()).collect();
    let sends: Vec<_> = envelopes.iter().map(|e| e.send_id.as_deref().unwrap()).collect();
    assert_eq!(sends, ["req-1", "req-2"], "a resend is a new version, never dropped as a duplicate");
    assert!(envelopes[0].version() <= envelopes[1].version());
}

#[tokio::test]
async fn wrong_password_wrong_token_and_missing_header_are_401_and_nothing_is_queued() {
    let setup = setup().await;
    let basic_ingest = setup.ingest(&BASIC_ENV).await;
    let bearer_ingest = setup.ingest(&[("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_TOKEN", "kmt_token")]).await;
    for (ingest, authorization) in [
        (&basic_ingest, Some(basic_authorization("komet", "S3cret"))),
        (&basic_ingest, None),
        (&bearer_ingest, Some("Bearer kmt_tokeN".to_owned())),
        (&bearer_ingest, None),
    ] {
        let (status, reply) = call(ingest, post(authorization.as_deref(), doc_sample())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(reply["status"], "0");
    }
    assert!(setup.queued().await.is_empty());
    // The same function does accept the right token: the 401s above were about the credentials.
    let (status, _) = call(&bearer_ingest, post(Some("Bearer kmt_token"), doc_sample())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_bad_payload_class_is_400_naming_the_field_and_nothing_is_queued() {
    let setup = setup().await;
    let ingest = setup.ingest(&BASIC_ENV).await;
    let sample = String::from_utf8(doc_sample()).unwrap();
    let with = |from: &str, to: &str| {
        assert!(sample.contains(from), "{from}");
        sample.replacen(from, to, 1)
    };
    let too_deep = format!("{{\"id\": 1, \"extra\": {}{}}}", "[".repeat(20), "]".repeat(20));
    // (body, the path the error must name, what it must say about it)
    let cases = [
        (String::new(), "body", "the body is empty"),
        ("[{\"id\": 12345}]".to_owned(), "body", "expected a JSON object, found an array"),
        (with("\"poNumber\": \"P002271\"", "\"poNumber\": 2271"), "poNumber", "expected a string, found 2271"),
        (with("\"id\" : 12345,", ""), "id", "is required"),
        (with("\"poNumber\": \"P002271\",", ""), "poNumber", "is required"),
        (with("\"total\": 60.0,", ""), "total", "is required"),
        (r#"{"id": 1, "poNumber": "P1", "total": 1}"#.to_owned(), "vendorInvoices", "is required"),
        (
            with("\"invoiceAmount\": 30.0", "\"invoiceAmount\": -30.0"),
            "vendorInvoices[1].invoiceAmount",
            "must not be negative",
        ),
        (
            with("\"totalCost\": 3.0", "\"totalCost\": 1e400"),
            "vendorInvoices[2].purchaseOrderItems[0].totalCost",
            "expected a finite amount",
        ),
        (too_deep, "body", "nesting deeper than 8 levels"),
        (
            with("\"shipDate\": \"2020-03-27\"", "\"shipDate\": \"2020-02-30\""),
            "shipDate",
            "expected a date (YYYY-MM-DD)",
        ),
        ("id=12345&poNumber=P002271".to_owned(), "body", "invalid JSON at line 1, column 1"),
    ];
    for (body, path, problem) in cases {
        let (status, reply) = call(&ingest, post(Some(&basic_authorization("komet", "s3cret")), body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply["status"], "0");
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("invalid payload: {path}: ")) && error.contains(problem),
            "{error:?} should name {path} ({problem})"
        );
    }
    assert!(setup.queued().await.is_empty());
}

#[tokio::test]
async fn a_queue_that_does_not_exist_is_503_for_komet_to_retry() {
    let setup = setup().await;
    let missing = format!("{}/123456789012/no-such-queue.fifo", setup.moto.endpoint_url());
    let ingest = setup.ingest(&[BASIC_ENV[0], BASIC_ENV[1], BASIC_ENV[2], ("QUEUE_URL", &missing)]).await;
    let (status, reply) = call(&ingest, post(Some(&basic_authorization("komet", "s3cret")), doc_sample())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply,
        serde_json::json!({"status": "0", "error": "the webhook could not be queued: please retry later"})
    );
    assert!(setup.queued().await.is_empty());
}

#[tokio::test]
async fn with_both_destinations_each_queue_gets_the_webhook_and_a_missing_one_is_503_with_a_safe_retry() {
    let setup = setup().await;
    let exsited =
        po_sync_test_support::moto::create_fifo_queue(&setup.sqs, "webhooks-exsited.fifo", None, None).await.unwrap();
    let both = [BASIC_ENV[0], BASIC_ENV[1], BASIC_ENV[2], ("DESTINATIONS", "appzen,exsited")];
    let ingest = setup.ingest(&[&both[..], &[("EXSITED_QUEUE_URL", exsited.as_str())]].concat()).await;
    let request = || with_request_id(post(Some(&basic_authorization("komet", "s3cret")), doc_sample()), "req-both");
    let (status, reply) = call(&ingest, request()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let on_exsited = setup.sqs.receive_message().queue_url(&exsited).send().await.unwrap();
    let bodies: Vec<_> = on_exsited.messages().iter().map(|m| m.body().unwrap()).collect();
    assert_eq!(bodies.len(), 1);

    // Exsited's queue gone: Komet is told to retry; AppZen's copy stays, and the retry is deduplicated there.
    let missing = format!("{}/123456789012/no-such-queue.fifo", setup.moto.endpoint_url());
    let broken = setup.ingest(&[&both[..], &[("EXSITED_QUEUE_URL", missing.as_str())]].concat()).await;
    let request = || with_request_id(post(Some(&basic_authorization("komet", "s3cret")), doc_sample()), "req-2");
    let (status, _) = call(&broken, request()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(&ingest, request()).await;
    assert_eq!(status, StatusCode::OK);
    let queued = setup.queued().await;
    assert_eq!(queued[0].body().unwrap(), bodies[0], "the same envelope on both queues");
    let sends: Vec<_> =
        queued.iter().map(|m| WebhookEnvelope::from_json(m.body().unwrap()).unwrap().send_id.unwrap()).collect();
    assert_eq!(sends, ["req-both", "req-2"], "AppZen's queue holds req-2 once");
}

#[tokio::test]
async fn credentials_from_secrets_manager_are_read_at_start_and_used() {
    let setup = setup().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&setup.aws);
    let basic_secret = secrets
        .create_secret()
        .name("po-sync/komet-basic")
        .secret_string(r#"{"username": "komet", "password": "fr0m-the-secret"}"#)
        .send()
        .await
        .unwrap();
    let token_secret = secrets
        .create_secret()
        .name("po-sync/komet-bearer")
        .secret_string(r#"{"token": "kmt_fr0m_the_secret"}"#)
        .send()
        .await
        .unwrap();

    let ingest = setup.ingest(&[("WEBHOOK_AUTH", "basic"), ("WEBHOOK_SECRET_ARN", basic_secret.arn().unwrap())]).await;
    assert_eq!(
        call(&ingest, post(Some(&basic_authorization("komet", "s3cret")), doc_sample())).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, reply) =
        call(&ingest, post(Some(&basic_authorization("komet", "fr0m-the-secret")), doc_sample())).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    let ingest = setup.ingest(&[("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_SECRET_ARN", token_secret.arn().unwrap())]).await;
    let other_body = po_sync_test_support::fixture("komet-clean-po.json");
    let (status, reply) = call(&ingest, post(Some("Bearer kmt_fr0m_the_secret"), other_body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(setup.queued().await.len(), 2);
}

#[tokio::test]
async fn a_secret_without_the_needed_key_or_an_unknown_secret_fails_the_cold_start() {
    let setup = setup().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&setup.aws);
    let secret =
        secrets.create_secret().name("po-sync/half").secret_string(r#"{"username": "komet"}"#).send().await.unwrap();
    let start = |arn: String| {
        let vars: std::collections::HashMap<String, String> =
            [("WEBHOOK_AUTH", "basic".to_owned()), ("WEBHOOK_SECRET_ARN", arn), ("QUEUE_URL", setup.queue_url.clone())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        Ingest::start(IngestConfig::from_env(&vars).unwrap(), &setup.aws)
    };
    let error = start(secret.arn().unwrap().to_owned()).await.unwrap_err().to_string();
    assert_eq!(error, "configuration WEBHOOK_SECRET_ARN: the secret has no \"password\" (WEBHOOK_AUTH is Basic)");
    let unknown = "arn:aws:secretsmanager:us-east-1:123456789012:secret:po-sync/none-AbCdEf";
    let error = start(unknown.to_owned()).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("configuration WEBHOOK_SECRET_ARN: could not read secret {unknown}")),
        "{error}"
    );
}

#[tokio::test]
async fn hostile_text_is_queued_as_sqs_accepts_it_or_refused_naming_the_field_never_503() {
    let setup = setup().await;
    let ingest = setup.ingest(&BASIC_ENV).await;
    let sample = String::from_utf8(doc_sample()).unwrap();
    let with_po_number = |po_number: &str| {
        let as_json = serde_json::to_string(po_number).unwrap();
        sample.replacen("\"P002271\"", &as_json, 1)
    };
    let authorization = basic_authorization("komet", "s3cret");
    // Characters SQS refuses in a message (moto does not check: the queued body is checked here, against SQS's
    // own list), written raw or as JSON escapes.
    for po_number in ["P-\u{FFFE}", "P-\u{FFFF}", "P-\u{0}", "P-\u{202E}evil"] {
        let (status, reply) = call(&ingest, post(Some(&authorization), with_po_number(po_number))).await;
        assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{po_number:?}: {status} {reply}");
        if status == StatusCode::BAD_REQUEST {
            assert!(reply["error"].as_str().unwrap().starts_with("invalid payload: poNumber: "), "{reply}");
        }
    }
    let queued = setup.queued().await;
    let mut numbers = Vec::new();
    for message in &queued {
        let body = message.body().unwrap();
        assert!(body.chars().all(po_sync::message::sqs_accepts), "SQS would refuse {body:?}");
        numbers.push(WebhookEnvelope::from_json(body).unwrap().po.po_number.to_string());
        for value in message.message_attributes().unwrap().values() {
            let text = value.string_value().unwrap_or_default();
            assert!(text.chars().all(po_sync::message::sqs_accepts), "SQS would refuse the attribute {text:?}");
        }
    }

    // Today all four are read as they are and queued: the escapes read back to the very text Komet sent.
    assert_eq!(numbers, ["P-\u{FFFE}", "P-\u{FFFF}", "P-\u{0}", "P-\u{202E}evil"]);

    // Text longer than the reader's limits: 400 naming the field, nothing queued.
    let long_number = with_po_number(&"9".repeat(300_000));
    let long_invoice =
        sample.replacen("\"invoiceNumber\": \"", &format!("\"invoiceNumber\": \"{}", "7".repeat(5_000)), 1);
    for (body, field) in [(long_number, "poNumber"), (long_invoice, "vendorInvoices[0].invoiceNumber")] {
        let (status, reply) = call(&ingest, post(Some(&authorization), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("invalid payload: {field}: ")), "{error}");
    }
    assert!(setup.queued().await.is_empty(), "nothing more was queued");
}
