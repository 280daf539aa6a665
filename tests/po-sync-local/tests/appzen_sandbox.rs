//! The AppZen sandbox keeps AppZen's documented contract, over real HTTP on 127.0.0.1.

use po_sync_local::appzen_sandbox::{Credentials, Failure, Sandbox, UPSERT_PATH};
use serde_json::{Value, json};

fn golden_body() -> String {
    std::fs::read_to_string(
        po_sync_test_support::workspace_root().join("shared/po-sync/tests/golden/appzen-clean-po.json"),
    )
    .unwrap()
}

async fn post(base: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().post(format!("{base}{UPSERT_PATH}")).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, serde_json::from_str(&response.text().await.unwrap()).unwrap())
}

const AUTH: [(&str, &str); 4] = [
    ("x-api-key", "local-api-key"),
    ("customer-id", "local-customer"),
    ("customer-key", "local-customer-key"),
    ("content-type", "application/json"),
];

#[tokio::test]
async fn creates_then_updates_by_purchase_order_number() {
    let sandbox = Sandbox::new(Credentials::default()).spawn(0).await.unwrap();
    let base = sandbox.base_url();
    let (status, _, created) = post(&base, &golden_body(), &AUTH).await;
    assert_eq!((status, created["status"].as_str()), (201, Some("CREATED")), "{created}");
    let (status, _, updated) = post(&base, &golden_body(), &AUTH).await;
    assert_eq!((status, updated["status"].as_str()), (200, Some("UPDATED")), "{updated}");
    assert_eq!(created["uuid"], updated["uuid"], "an update answers the PO's uuid");

    let recorded = sandbox.upserts();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].body, golden_body(), "the body is recorded byte for byte");
    assert_eq!(recorded[0].response_status, Some(201));
    assert!(!recorded[0].headers.contains_key("x-api-key") && !recorded[0].headers.contains_key("customer-key"));
    assert_eq!(recorded[0].headers.get("customer-id").map(String::as_str), Some("local-customer"));

    // The same record over the control endpoint.
    let listed: Value =
        serde_json::from_str(&reqwest::get(format!("{base}/_sandbox/requests")).await.unwrap().text().await.unwrap())
            .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["response_status"], 200);
}

#[tokio::test]
async fn refuses_missing_or_wrong_credentials() {
    let sandbox = Sandbox::new(Credentials::default()).spawn(0).await.unwrap();
    let base = sandbox.base_url();
    let (status, _, body) = post(&base, &golden_body(), &AUTH[1..]).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("x-api-key"), "{body}");
    let wrong_key = [("x-api-key", "nope"), AUTH[1], AUTH[2], AUTH[3]];
    assert_eq!(post(&base, &golden_body(), &wrong_key).await.0, 403);
    let wrong_customer = [AUTH[0], ("customer-id", "someone-else"), AUTH[2], AUTH[3]];
    assert_eq!(post(&base, &golden_body(), &wrong_customer).await.0, 401);
    assert!(sandbox.upserts().iter().all(|r| !r.accepted()));
}

#[tokio::test]
async fn answers_400_in_appzens_error_shape_naming_the_problem() {
    let sandbox = Sandbox::new(Credentials::default()).spawn(0).await.unwrap();
    let mut body: Value = serde_json::from_str(&golden_body()).unwrap();
    body["total_amount"]["amount"] = json!("1284.81");
    body.as_object_mut().unwrap().remove("supplier_id");
    let (status, _, error) = post(&sandbox.base_url(), &body.to_string(), &AUTH).await;
    assert_eq!(status, 400);
    assert_eq!(error["status"], 400);
    assert_eq!(error["error"], "Bad Request");
    assert!(error["timestamp"].as_str().is_some_and(|t| t.ends_with("+0000")), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("Error code : "), "{message}");
    assert!(message.contains("supplier_id: is required"), "{message}");
    assert!(message.contains("total_amount.amount: expected a number, found string \"1284.81\""), "{message}");
}

#[tokio::test]
async fn fails_on_demand_then_recovers() {
    let sandbox = Sandbox::new(Credentials::default()).spawn(0).await.unwrap();
    let base = sandbox.base_url();
    let control = reqwest::Client::new();
    let queued =
        control.post(format!("{base}/_sandbox/fail")).body(r#"{"times":2,"status":500}"#).send().await.unwrap();
    assert_eq!(queued.status(), 200);
    sandbox.fail_next(Failure { times: Some(1), status: Some(429), retry_after: Some(1), ..Failure::default() });

    let mut answers = Vec::new();
    for _ in 0..4 {
        let (status, retry_after, _) = post(&base, &golden_body(), &AUTH).await;
        answers.push((status, retry_after));
    }
    assert_eq!(answers, vec![(500, None), (500, None), (429, Some("1".to_owned())), (201, None)]);

    // Slow: answered normally, late (the client's timeout is what a test would exercise).
    sandbox.fail_next(Failure { times: Some(1), delay_ms: Some(300), ..Failure::default() });
    let started = std::time::Instant::now();
    assert_eq!(post(&base, &golden_body(), &AUTH).await.0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    control.post(format!("{base}/_sandbox/reset")).send().await.unwrap();
    assert!(sandbox.requests().is_empty());
    assert_eq!(post(&base, &golden_body(), &AUTH).await.0, 201, "reset forgets known purchase orders");
}

#[tokio::test]
async fn unknown_paths_are_404_like_appzen() {
    let sandbox = Sandbox::new(Credentials::default()).spawn(0).await.unwrap();
    let response = reqwest::get(format!("{}/dictionary-data-services/nothing", sandbox.base_url())).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "Not Found");
}

/// The read-back, through po-sync's own client: what was upserted comes back (with AppZen's own fields),
/// a number never upserted is 404, and the credentials are checked as for the upsert.
#[tokio::test]
async fn reads_back_what_was_upserted_by_purchase_order_number() {
    use po_sync::appzen::{MappingSettings, differences, map_purchase_order};
    use po_sync::config::reconcile::{AppZenConfig, AppZenCredentials, CredentialsSource};
    use po_sync_aws::appzen::{AppZenClient, ReadError};
    use std::time::Duration;

    let sandbox = Sandbox::new(Credentials::default()).spawn(0).await.unwrap();
    let credentials = |api_key: &str| AppZenCredentials {
        api_key: api_key.to_owned().into(),
        customer_id: "local-customer".to_owned().into(),
        customer_key: "local-customer-key".to_owned().into(),
    };
    let client = |api_key: &str| {
        let config = AppZenConfig {
            base_url: sandbox.base_url(),
            credentials: CredentialsSource::Inline(credentials(api_key)),
            request_timeout: Duration::from_secs(5),
            max_attempts: 1,
            backoff: Default::default(),
            deadline_margin: Duration::ZERO,
            credential_renewal_interval: Duration::ZERO,
        };
        AppZenClient::new(&config, &credentials(api_key)).unwrap()
    };
    let appzen = client("local-api-key");
    let golden: Value = serde_json::from_str(&golden_body()).unwrap();
    let number = golden["purchase_order_number"].as_str().unwrap().to_owned();
    assert_eq!(appzen.read(&number, Duration::from_secs(5)).await, Ok(None), "nothing upserted yet");

    assert_eq!(post(&sandbox.base_url(), &golden_body(), &AUTH).await.0, 201);
    let held = appzen.read(&number, Duration::from_secs(5)).await.unwrap().expect("AppZen holds it now");
    let clean_po =
        std::fs::read(po_sync_test_support::workspace_root().join("shared/po-sync/tests/fixtures/komet-clean-po.json"))
            .unwrap();
    let po = po_sync::komet::parse_webhook(&clean_po).unwrap();
    let settings = MappingSettings::default();
    let sent = map_purchase_order(&po, &settings).unwrap();
    assert_eq!(differences(&sent, &held), [], "the golden body is what po-sync sends for the clean PO");

    let read = sandbox.requests().last().unwrap().clone();
    assert_eq!((read.method.as_str(), read.response_status), ("GET", Some(200)));
    let answer = read.response_body.unwrap();
    assert!(answer.starts_with(r#"{"entity_name":"Sandbox entity","uuid":""#), "AppZen's own fields: {answer}");
    assert_eq!(sandbox.upserts().len(), 1, "a read is not an upsert");

    let refused = client("wrong-key").read(&number, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(&refused, ReadError::Refused { .. }) && refused.to_string().contains("HTTP 403"), "{refused}");
}
