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
