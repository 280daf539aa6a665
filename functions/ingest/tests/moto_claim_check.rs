//! A PO too large for one SQS message, end to end on the real adapters (moto S3 and SQS on 127.0.0.1, a
//! wiremock AppZen): ingest (built by `Ingest::start`, as in Lambda) stores its envelope under `bodies/` and
//! queues a claim check; reconcile (the S3 store on the same bucket) resolves it and upserts every line.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use ingest::{Ingest, S3ObjectStore, SqsFifoQueue};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use po_sync::appzen::UPSERT_PATH;
use po_sync::config::ingest::IngestConfig;
use po_sync::config::reconcile::ReconcileConfig;
use po_sync::message::{BodyRef, WebhookEnvelope, sha256_hex};
use po_sync_aws::ledger::MemoryLedger;
use po_sync_test_support::moto::{MotoServer, create_fifo_queue};
use reconcile::{Outcome, Reconciler};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BUCKET: &str = "po-sync-archive";
// At the reader's limits (po_sync::limits): 1,000 invoices, 10,000 items in all.
const INVOICES: u64 = 1_000;
const ITEMS_PER_INVOICE: u64 = 10;

/// Cents as Komet writes amounts: `123.45`, `60.0`.
fn amount(cents: u64) -> String {
    match cents % 100 {
        0 => format!("{}.0", cents / 100),
        rest => format!("{}.{rest:02}", cents / 100),
    }
}

/// A Komet webhook of 1,000 invoices x 10 items with long signed links (about 1.6 MB, in Komet's spaced style,
/// so its envelope is over SQS's 1 MiB) that reconciles to the
/// cent, one invoice in three with additional charges; and how many AppZen lines it makes (items + charges).
fn large_po() -> (Vec<u8>, usize) {
    const CATEGORIES: [&str; 5] = ["CGEN", "PGEN", "ROSE", "CARN", "GREENS"];
    let vendor = r#"{ "id": 29697, "code": "AV", "name": "Miami L Vendor", "vendorAccountingCode": "2000-AV", "type": "Fresh Cut" }"#;
    let (mut subtotal, mut total, mut lines) = (0u64, 0u64, 0usize);
    let mut invoices = String::with_capacity(3 << 20);
    for i in 0..INVOICES {
        let mut items = String::new();
        let mut item_cents = 0;
        for j in 0..ITEMS_PER_INVOICE {
            // $5.00 to $649.99, some whole dollars.
            let cents = 500 + (i * 7_919 + j * 104_729) % 64_500;
            let cents = if j % 4 == 0 { cents - cents % 100 } else { cents };
            item_cents += cents;
            lines += 1;
            let separator = if j == 0 { "" } else { ", " };
            let category = CATEGORIES[((i + j) % 5) as usize];
            let _ = write!(
                items,
                r#"{separator}{{ "categoryProcurementAccountingCode": "{category}", "totalCost": {} }}"#,
                amount(cents)
            );
        }
        let charges = if i % 3 == 0 { 1_000 + (i * 37) % 8_000 } else { 0 };
        lines += usize::from(charges > 0);
        subtotal += item_cents;
        total += item_cents + charges;
        let separator = if i == 0 { "" } else { ", " };
        let number = format!("01-P777001-{:04}", i + 1);
        let _ = write!(
            invoices,
            r#"{separator}{{ "invoiceNumber": "{number}", "invoiceAmount": {}, "totalAdditionalCharges": {}, "file": "https://files.kometsales.com/invoices/777001/{number}.pdf?expires=1700000000&sig={}&token={}", "vendor": {vendor}, "purchaseOrderItems": [ {items} ] }}"#,
            amount(item_cents + charges),
            amount(charges),
            sha256_hex(number.as_bytes()),
            "t".repeat(600),
        );
    }
    let body = format!(
        r#"{{ "id": 777001, "poNumber": "P777001", "shipDate": "2026-11-20", "arrivalDate": "2026-11-23", "subTotal": {}, "total": {}, "location": {{ "id": 3, "code": "02", "name": "Chicago" }}, "vendorInvoices": [ {invoices} ] }}"#,
        amount(subtotal),
        amount(total)
    );
    (body.into_bytes(), lines)
}

fn post(body: Vec<u8>, request_id: &str) -> Request {
    use lambda_http::RequestExt;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
    let authorization = po_sync_test_support::basic_authorization("komet", "s3cret");
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://abc123.execute-api.us-east-1.amazonaws.com/webhooks/komet/po-reconciliation")
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .body(Body::from(body))
        .unwrap();
    let context: ApiGatewayV2httpRequestContext =
        serde_json::from_value(json!({ "requestId": request_id, "http": { "method": "POST" } })).unwrap();
    request.with_request_context(lambda_http::request::RequestContext::ApiGatewayV2(context))
}

struct Setup {
    _moto: MotoServer,
    aws: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    webhooks: String,
    notifications: String,
}

async fn setup() -> Setup {
    let moto = MotoServer::start();
    let aws = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    // moto's S3 is addressed path-style, as S3ObjectStore does with an endpoint URL.
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&aws).force_path_style(true).build());
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let webhooks = create_fifo_queue(&sqs, "webhooks.fifo", None, None).await.unwrap();
    let notifications = create_fifo_queue(&sqs, "notifications.fifo", None, None).await.unwrap();
    Setup { _moto: moto, aws, sqs, s3, webhooks, notifications }
}

impl Setup {
    async fn ingest(&self, bucket: &str) -> Ingest<ingest::SqsQueues> {
        let vars: HashMap<String, String> = [
            ("WEBHOOK_AUTH", "basic"),
            ("WEBHOOK_USERNAME", "komet"),
            ("WEBHOOK_PASSWORD", "s3cret"),
            ("QUEUE_URL", &self.webhooks),
            ("ARCHIVE_BUCKET", bucket),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = IngestConfig::from_env(&vars).unwrap();
        assert_eq!(config.max_body_bytes, 6_000_000, "the default");
        Ingest::start(config, &self.aws).await.unwrap()
    }

    fn reconciler(&self, appzen: &MockServer) -> Reconciler<SqsFifoQueue, MemoryLedger, S3ObjectStore> {
        let env: HashMap<String, String> = [
            ("NOTIFY_QUEUE_URL", self.notifications.as_str()),
            ("LEDGER_TABLE_NAME", "ledger"),
            ("APPZEN_BASE_URL", &appzen.uri()),
            ("APPZEN_API_KEY", "k"),
            ("APPZEN_CUSTOMER_ID", "c"),
            ("APPZEN_CUSTOMER_KEY", "ck"),
            ("APPZEN_TIMEOUT_MS", "30000"),
            ("ARCHIVE_BUCKET", BUCKET),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = ReconcileConfig::from_env(&env).unwrap();
        let client = po_sync_test_support::appzen_client(&config);
        let notifications = SqsFifoQueue::new(self.sqs.clone(), &self.notifications);
        Reconciler::new(config, client, notifications, MemoryLedger::default())
            .with_bodies(S3ObjectStore::new(&self.aws, BUCKET))
    }

    async fn queued(&self, queue: &str) -> Vec<Message> {
        self.sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap()
            .messages()
            .to_vec()
    }
}

/// The SQS record Lambda would hand reconcile for `message`.
fn record(message: &Message) -> SqsMessage {
    let event: SqsEvent = serde_json::from_value(json!({ "Records": [{
        "messageId": message.message_id().unwrap(),
        "body": message.body().unwrap(),
        "attributes": { "MessageGroupId": "777001" },
        "eventSource": "aws:sqs"
    }]}))
    .unwrap();
    event.records.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_po_at_the_limits_is_accepted_stored_queued_as_a_claim_check_and_upserted_with_all_its_lines() {
    let setup = setup().await;
    let (body, expected_lines) = large_po();
    assert!((1_500_000..1_800_000).contains(&body.len()), "about 1.6 MB: {}", body.len());
    assert_eq!(expected_lines, 10_000 + 334, "every item, and the charges of one invoice in three");

    // ingest: 200 once the body is stored and the claim check queued.
    let ingest = setup.ingest(BUCKET).await;
    let response = ingest.handle(post(body.clone(), "req-large")).await;
    let reply: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{reply}");
    assert_eq!(reply["message"], "purchase order P777001 (id 777001) received");

    let messages = setup.queued(&setup.webhooks).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert!(message.body().unwrap().len() < 1_024, "a claim check, not the PO");
    let pointer = BodyRef::from_json(message.body().unwrap()).unwrap();
    assert_eq!((pointer.bucket.as_str(), pointer.key.as_str()), (BUCKET, "bodies/777001/req-large.json"));
    let system = message.attributes().unwrap();
    assert_eq!(system[&MessageSystemAttributeName::MessageGroupId], "777001");
    assert_eq!(system[&MessageSystemAttributeName::MessageDeduplicationId], "req-large");
    assert_eq!(message.message_attributes().unwrap()["poNumber"].string_value(), Some("P777001"));

    let object = setup.s3.get_object().bucket(BUCKET).key(&pointer.key).send().await.unwrap();
    assert_eq!(object.content_type(), Some("application/json"));
    let metadata = object.metadata().unwrap();
    assert_eq!((metadata["po-id"].as_str(), metadata["send-id"].as_str()), ("777001", "req-large"));
    let stored = object.body.collect().await.unwrap().into_bytes();
    let envelope = WebhookEnvelope::from_json(std::str::from_utf8(&stored).unwrap()).unwrap();
    assert!(pointer.names(&envelope));
    assert_eq!(envelope.body_sha256, sha256_hex(&body));

    // The body exactly as Komet sent it, kept under its PO and version.
    let kept_key = format!("webhooks/777001/{:013}-req-large.json", pointer.version());
    let kept = setup.s3.get_object().bucket(BUCKET).key(&kept_key).send().await.unwrap();
    assert_eq!(kept.metadata().unwrap()["body-sha256"], envelope.body_sha256);
    assert_eq!(kept.body.collect().await.unwrap().into_bytes(), body);

    // reconcile: resolves the claim check through S3 and upserts every line.
    let appzen = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "uuid": "u-3mb", "status": "CREATED" })))
        .expect(1)
        .mount(&appzen)
        .await;
    let reconciler = setup.reconciler(&appzen);
    let report = reconciler.process(&record(message), None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{:?}", report.outcome);
    assert_eq!(report.discrepancy_count, 0);
    let requests = appzen.received_requests().await.unwrap();
    let upserted: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(upserted["purchase_order_lines"].as_array().unwrap().len(), expected_lines);
    assert!(setup.queued(&setup.notifications).await.is_empty(), "nothing for a person to do");
}

#[tokio::test]
async fn a_body_the_bucket_refuses_is_503_and_no_claim_check_is_queued() {
    let setup = setup().await;
    let ingest = setup.ingest("no-such-bucket").await;
    let (body, _) = large_po();
    let response = ingest.handle(post(body, "req-nobucket")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(setup.queued(&setup.webhooks).await.is_empty());
}
