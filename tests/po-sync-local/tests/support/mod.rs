//! What the end-to-end tests share: Komet bodies (the clean PO under another id, a dearer version of it), the
//! exact total an AppZen body carries, what the Exsited sandbox holds, posting and settling, and po-sync-admin
//! run against the local stack.
// Each end-to-end test binary uses a part of it.
#![allow(dead_code)]

use clap::Parser as _;
use po_sync::Decimal;
use po_sync_local::appzen_sandbox::RecordedRequest;
use po_sync_local::exsited_sandbox::RunningSandbox;
use po_sync_local::local::LocalStack;
use po_sync_test_support::fixture;
use serde_json::Value;
use std::time::Duration;

/// The clean PO with another Komet id and PO number, so it is a different webhook.
pub fn clean_po_numbered(id: u64, po_number: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture("komet-clean-po.json")).unwrap();
    assert!(text.contains("\"id\": 48213,") && text.contains("\"poNumber\": \"P004410\""), "fixture changed");
    text.replacen("\"id\": 48213,", &format!("\"id\": {id},"), 1)
        .replacen("\"poNumber\": \"P004410\"", &format!("\"poNumber\": \"{po_number}\""), 1)
        .into_bytes()
}

/// The exact text of `total_amount.amount` in an AppZen body.
pub fn total_of(request: &RecordedRequest) -> String {
    let body = po_sync::json::parse(request.body.as_bytes()).unwrap();
    match body.get("total_amount").and_then(|t| t.get("amount")) {
        Some(po_sync::json::Value::Number(n)) => (*n).to_owned(),
        other => panic!("total_amount.amount is not a number: {other:?}"),
    }
}

/// The clean PO under `id` with one item 10.00 dearer (and its invoice, subtotal and total): version B.
pub fn dearer(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let changed = text
        .replacen("\"totalCost\": 400.20", "\"totalCost\": 410.20", 1)
        .replacen("\"invoiceAmount\": 400.50", "\"invoiceAmount\": 410.50", 1)
        .replacen("\"subTotal\": 1234.56", "\"subTotal\": 1244.56", 1)
        .replacen("\"total\": 1284.81", "\"total\": 1294.81", 1);
    assert_ne!(changed.as_bytes(), body, "fixture changed");
    changed.into_bytes()
}

/// The stack's Exsited sandbox (a stack deployed with Exsited among its destinations).
pub fn exsited(stack: &LocalStack) -> &RunningSandbox {
    stack.exsited.as_ref().expect("the stack has Exsited")
}

/// The Exsited POs whose note names Komet's `po_number` (po-sync keeps Komet's numbers in the note).
pub fn exsited_orders(stack: &LocalStack, po_number: &str) -> Vec<Value> {
    exsited(stack)
        .purchase_orders()
        .into_iter()
        .filter(|order| order["purchase_order_note"].as_str().is_some_and(|note| note.contains(po_number)))
        .collect()
}

/// An Exsited amount (a decimal string), exactly.
pub fn decimal(value: &Value) -> Decimal {
    value.as_str().and_then(|text| text.parse().ok()).unwrap_or_else(|| panic!("not a decimal string: {value}"))
}

/// POSTs a webhook as Komet does; it must be accepted.
pub async fn post_accepted(stack: &LocalStack, body: &[u8]) {
    let (status, answer) = stack.post_webhook(body).await.unwrap();
    assert_eq!(status, 200, "ingest refused a valid webhook: {answer}");
}

/// Waits, at most `within`, until every queue is empty: the end of processing.
pub async fn settle(stack: &LocalStack, within: Duration) {
    stack.wait_until_idle(within).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Runs `po-sync-admin --json ARGS` against the local stack (resources by flag); returns its JSON report.
pub async fn admin(stack: &LocalStack, args: &[&str]) -> serde_json::Value {
    admin_with(stack, &[], args).await
}

/// [`admin`] with some of the stack's flags given other values (`--webhook-queue-url` Exsited's queue, to
/// replay to Exsited).
pub async fn admin_with(stack: &LocalStack, overrides: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let (done, json) = admin_run(stack, overrides, args).await;
    assert!(done, "po-sync-admin {args:?} did not succeed: {json:#}");
    json
}

/// Runs po-sync-admin as an operator would against the local pipeline: whether it succeeded (exit code 0),
/// and what it printed with `--json`.
pub async fn admin_run(stack: &LocalStack, overrides: &[(&str, &str)], args: &[&str]) -> (bool, serde_json::Value) {
    // The flags `make serve` prints.
    let mut flags = stack.admin_flags();
    for (flag, value) in overrides {
        let at = flags.iter().position(|f| f == flag).unwrap_or_else(|| panic!("no {flag} among {flags:?}"));
        flags[at + 1] = (*value).to_owned();
    }
    let mut argv = vec!["po-sync-admin", "--json"];
    argv.extend(flags.iter().map(String::as_str));
    argv.extend_from_slice(args);
    let cli = po_sync_admin::Cli::parse_from(argv);
    let aws = stack.moto.sdk_config().await;
    let mut clients = po_sync_admin::Clients::new(&aws);
    // Lambda's event-source-mapping and function-configuration API is the local pipeline's own (it plays the
    // mappings and runs the functions), as AWS_ENDPOINT_URL_LAMBDA would point an operator's shell at it.
    let control = stack.lambda_control_url().expect("the local pipeline serves the mappings' API");
    clients.lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::Config::from(&aws).to_builder().endpoint_url(control).build(),
    );
    let mut out = Vec::new();
    let done = po_sync_admin::execute(&cli, &clients, None, &mut out, &mut |line| eprintln!("  admin: {line}"))
        .await
        .unwrap_or_else(|e| panic!("po-sync-admin {args:?}: {e}"));
    let json = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("po-sync-admin {args:?} printed no JSON: {e}"));
    (done, json)
}
