//! Komet bodies the end-to-end tests share: the clean PO under another id, a dearer version of it, and the
//! exact total an AppZen body carries.

use po_sync_local::appzen_sandbox::RecordedRequest;
use po_sync_test_support::fixture;

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
