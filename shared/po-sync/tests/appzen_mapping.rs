//! Komet PO → AppZen purchase-order body: every field AppZen marks required, exact numbers, and the
//! reviewed golden body for the clean fixture.

use po_sync::appzen::{EntityIdSource, MappingError, MappingSettings, SupplierIdSource, map_purchase_order};
use po_sync::json::{self, Value};
use po_sync::komet::parse_webhook;

const CLEAN_PO: &str = include_str!("fixtures/komet-clean-po.json");
const DOC_SAMPLE: &str = include_str!("fixtures/komet-doc-sample.json");
const SEVERAL_VENDORS: &str = include_str!("fixtures/komet-several-vendors.json");
const GOLDEN_BODY: &str = include_str!("golden/appzen-clean-po.json");

fn clean_body() -> String {
    let po = parse_webhook(CLEAN_PO.as_bytes()).unwrap();
    map_purchase_order(&po, &MappingSettings::default()).unwrap().to_json()
}

/// Reads JSON keeping number text, so `500.10` and `500.1` differ here as they do on the wire.
fn exact(json: &str) -> Value<'_> {
    json::parse(json.as_bytes()).unwrap()
}

#[test]
fn the_clean_po_maps_to_the_reviewed_golden_body() {
    let body = clean_body();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // Review the diff before committing: `scripts/pretty-json` re-indents without touching number text.
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/appzen-clean-po.json"), &body).unwrap();
    }
    // Same members in the same order with the same number text; whitespace aside.
    assert_eq!(exact(&body), exact(GOLDEN_BODY));
}

/// AppZen's "Required: Yes" rows, with the JSON type AppZen documents (its sample for the object ones).
#[test]
fn every_field_appzen_requires_is_present_with_its_type() {
    let body = clean_body();
    let body = exact(&body);
    type Check = fn(&Value) -> bool;

    for (field, ok) in [
        ("purchase_order_number", is_text as Check),
        ("entity_id", is_text),
        ("supplier_id", is_text),
        ("purchase_order_status", is_text),
        ("appzen_purchase_order_status", is_text),
        ("purchase_order_lines", |v: &Value| matches!(v, Value::Array(lines) if !lines.is_empty())),
        // Not required by AppZen, but everything an auditor matches on.
        ("total_amount", is_money),
        ("start_date", is_text),
        ("end_date", is_text),
        ("purchase_order_date", is_text),
    ] {
        let value = body.get(field).unwrap_or_else(|| panic!("{field} is missing"));
        assert!(ok(value), "{field} has the wrong type: {value:?}");
    }
    let Some(Value::Array(lines)) = body.get("purchase_order_lines") else { unreachable!() };
    for (i, line) in lines.iter().enumerate() {
        for (field, ok) in [
            ("gl_code", is_text as Check),
            ("quantity", is_number),
            ("unit_price", is_money),
            ("amount", is_money),
            ("uninvoiced_amount", is_money),
            ("purchase_order_line_status", is_text),
            ("appzen_purchase_order_line_status", is_text),
            ("po_line_id", is_text),
            ("line_number", is_number),
        ] {
            let value = line.get(field).unwrap_or_else(|| panic!("line {i}: {field} is missing"));
            assert!(ok(value), "line {i}: {field} has the wrong type: {value:?}");
        }
    }
    assert_eq!(body.get("appzen_purchase_order_status"), Some(&Value::String("PO_ISSUED".into())));
}

fn is_text(v: &Value) -> bool {
    matches!(v, Value::String(s) if !s.is_empty())
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Number(_))
}

fn is_money(v: &Value) -> bool {
    matches!(v.get("amount"), Some(Value::Number(_))) && matches!(v.get("currency"), Some(Value::String(_)))
}

#[test]
fn mapping_follows_the_documented_table() {
    let po = parse_webhook(CLEAN_PO.as_bytes()).unwrap();
    let settings = MappingSettings::default();
    let body = map_purchase_order(&po, &settings).unwrap();
    assert_eq!(body.purchase_order_number, "P004410");
    assert_eq!(body.entity_id, "2", "location code by default");
    assert_eq!(body.supplier_id, "V-0042", "vendorAccountingCode first");
    assert_eq!(body.start_date.unwrap().to_string(), "2026-02-09");
    assert_eq!(body.end_date.unwrap().to_string(), "2026-02-11");
    assert_eq!(body.total_amount.amount.to_string(), "1284.81");
    assert_eq!(body.ship_to_location.as_deref(), Some("Chicago"));
    // Two items, one charges line, three items: six lines, numbered in order, ids stable per invoice position.
    let ids: Vec<_> = body.purchase_order_lines.iter().map(|l| (l.line_number, &*l.po_line_id, &*l.gl_code)).collect();
    assert_eq!(
        ids,
        vec![
            (1, "01-P004410-1", "CGEN"),
            (2, "01-P004410-2", "PGEN"),
            (3, "01-P004410-charges", "ADDITIONAL_CHARGES"),
            (4, "01-P004411-1", "CGEN"),
            (5, "01-P004411-2", "CGEN"),
            (6, "01-P004411-3", "RGEN"),
        ]
    );
    // The lines add up to the PO total, to the cent.
    let sum: po_sync::Decimal = body.purchase_order_lines.iter().map(|l| l.amount.amount).sum();
    assert_eq!(sum, body.total_amount.amount);
}

#[test]
fn mapping_settings_change_the_sources_and_currency() {
    let po = parse_webhook(CLEAN_PO.as_bytes()).unwrap();
    let settings = MappingSettings {
        currency: po_sync::appzen::Currency::parse("EUR").unwrap(),
        entity_id_source: EntityIdSource::LocationId,
        supplier_id_source: SupplierIdSource::Code,
        additional_charges_gl_code: "6100".to_owned(),
        ..MappingSettings::default()
    };
    let body = map_purchase_order(&po, &settings).unwrap();
    assert_eq!((&*body.entity_id, &*body.supplier_id), ("3", "AV"));
    assert_eq!(body.total_amount.currency, "EUR");
    assert_eq!(body.purchase_order_lines[2].gl_code, "6100");
    assert!(po_sync::appzen::Currency::parse("usd").is_err());
}

#[test]
fn without_an_accounting_code_the_vendor_code_is_the_supplier() {
    let po = parse_webhook(DOC_SAMPLE.as_bytes()).unwrap();
    let settings = MappingSettings::default();
    let body = map_purchase_order(&po, &settings).unwrap();
    assert_eq!((&*body.supplier_id, &*body.entity_id), ("AV", "02"));
    let json = body.to_json();
    assert!(json.contains(r#""total_amount":{"amount":60.0,"currency":"USD"}"#), "{json}");
}

#[test]
fn several_vendors_cannot_become_one_appzen_po() {
    let po = parse_webhook(SEVERAL_VENDORS.as_bytes()).unwrap();
    let error = map_purchase_order(&po, &MappingSettings::default()).unwrap_err();
    assert_eq!(
        error,
        MappingError::SeveralVendors(vec![
            "Miami L Vendor (id 29697)".to_owned(),
            "Bogotá Farms (id 31000)".to_owned()
        ])
    );
    assert_eq!(
        error.to_string(),
        "the invoices name 2 different vendors (Miami L Vendor (id 29697), Bogotá Farms (id 31000)); one AppZen purchase order has one supplier"
    );
}

#[test]
fn a_missing_gl_code_is_named_by_its_path() {
    let body = DOC_SAMPLE.replacen("\"categoryProcurementAccountingCode\": \"PGEN\", ", "", 1);
    let po = parse_webhook(body.as_bytes()).unwrap();
    let error = map_purchase_order(&po, &MappingSettings::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "vendorInvoices[0].purchaseOrderItems[1].categoryProcurementAccountingCode is missing; AppZen requires it"
    );
}

#[test]
fn amounts_leave_as_exact_json_numbers() {
    let body = clean_body();
    assert!(body.contains(r#""unit_price":{"amount":500.10,"currency":"USD"}"#), "{body}");
    assert!(body.contains(r#""amount":{"amount":0.1,"currency":"USD"}"#), "{body}");
    assert!(!body.contains("\"amount\":\""), "amounts must be numbers, not strings: {body}");
}
