//! The Komet webhook payload: every shape Komet documents or shows is accepted, every bad input is refused
//! with a path-naming error, and nothing panics.

use po_sync::Decimal;
use po_sync::komet::{PayloadError, parse_webhook};
use po_sync::reconcile::{Rule, Tolerance, reconcile};
use proptest::prelude::*;
use std::str::FromStr;

const DOC_SAMPLE: &str = include_str!("fixtures/komet-doc-sample.json");
const CLEAN_PO: &str = include_str!("fixtures/komet-clean-po.json");
const OPTIONAL_ABSENT: &str = include_str!("fixtures/komet-optional-fields-absent.json");

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn refused(body: &str) -> PayloadError {
    match parse_webhook(body.as_bytes()) {
        Ok(po) => panic!("should be refused: {body}\nparsed as {po:?}"),
        Err(e) => e,
    }
}

/// Replaces the first occurrence of `from` in the doc sample: small, readable bad-payload variants.
fn sample_with(from: &str, to: &str) -> String {
    assert!(DOC_SAMPLE.contains(from), "the doc sample has no {from:?}");
    DOC_SAMPLE.replacen(from, to, 1)
}

#[test]
fn the_verbatim_doc_sample_parses_despite_its_trailing_commas_and_lowercase_subtotal() {
    // Komet's documented sample: `"type": "Fresh Cut", }` three times, `subtotal` not `subTotal`,
    // `location`/`vendor` as objects, `"code": "02"` as a string, `vendorAccountingCode: null`, scheme-less file.
    assert!(DOC_SAMPLE.contains("\"type\": \"Fresh Cut\", }"));
    let po = parse_webhook(DOC_SAMPLE.as_bytes()).unwrap();
    assert_eq!(po.id, 12345);
    assert_eq!(po.po_number, "P002271");
    assert_eq!(po.ship_date.unwrap().to_string(), "2020-03-27");
    assert_eq!(po.sub_total, Some(d("60.0")));
    assert_eq!(po.total, d("60.0"));
    let location = po.location.as_ref().unwrap();
    assert_eq!(
        (location.id, location.code.as_deref(), location.name.as_deref()),
        (Some(3), Some("02"), Some("Chicago"))
    );
    assert_eq!(po.vendor_invoices.len(), 3);
    let second = &po.vendor_invoices[1];
    assert_eq!(second.invoice_number, "01-P002272");
    assert_eq!(second.file.as_deref(), Some("https://www.kometsales.com/url"));
    let vendor = second.vendor.as_ref().unwrap();
    assert_eq!(vendor.vendor_accounting_code, None);
    assert_eq!(vendor.vendor_type.as_deref(), Some("Fresh Cut"));
    assert_eq!(second.purchase_order_items[1].total_cost, d("30.0"));
}

#[test]
fn the_doc_sample_yields_exactly_the_two_documented_discrepancies() {
    let po = parse_webhook(DOC_SAMPLE.as_bytes()).unwrap();
    let report = reconcile(&po, Tolerance::CENT);
    let found: Vec<_> = report
        .discrepancies
        .iter()
        .map(|x| (x.rule, x.invoice_number.as_deref(), x.expected, x.actual, x.difference))
        .collect();
    assert_eq!(
        found,
        vec![
            (Rule::InvoiceItems, Some("01-P002272"), d("30.00"), d("40.00"), d("10.00")),
            (Rule::ItemsSubtotal, None, d("60.00"), d("70.00"), d("10.00")),
        ]
    );
}

#[test]
fn the_field_lists_shapes_parse_too() {
    // `subTotal`, location/vendor as one-element arrays, location code as an integer.
    let po = parse_webhook(CLEAN_PO.as_bytes()).unwrap();
    assert_eq!(po.sub_total, Some(d("1234.56")));
    assert_eq!(po.location.as_ref().unwrap().code.as_deref(), Some("2"));
    let vendor = po.vendor_invoices[0].vendor.as_ref().unwrap();
    assert_eq!(vendor.vendor_accounting_code.as_deref(), Some("V-0042"));
    assert_eq!(po.vendor_invoices[0].purchase_order_items[0].total_cost.to_string(), "500.10");
    assert!(reconcile(&po, Tolerance::CENT).is_clean());
}

#[test]
fn missing_optional_fields_take_their_documented_meaning() {
    // No subTotal, no vendorAccountingCode key, no totalAdditionalCharges (zero), scheme-less file.
    let po = parse_webhook(OPTIONAL_ABSENT.as_bytes()).unwrap();
    assert_eq!(po.sub_total, None);
    let invoice = &po.vendor_invoices[0];
    assert_eq!(invoice.total_additional_charges, Decimal::ZERO);
    assert_eq!(invoice.vendor.as_ref().unwrap().vendor_accounting_code, None);
    assert_eq!(invoice.vendor.as_ref().unwrap().name.as_deref(), Some("Rosas del Ecuador Ñandú"));
    assert_eq!(invoice.file.as_deref(), Some("https://www.kometsales.com/url"));
    assert!(reconcile(&po, Tolerance::CENT).is_clean());
}

#[test]
fn amounts_are_exact_decimals_from_the_json_text() {
    let po = parse_webhook(CLEAN_PO.as_bytes()).unwrap();
    let items = &po.vendor_invoices[1].purchase_order_items;
    assert_eq!(items[0].total_cost + items[1].total_cost, d("0.3"));
}

#[test]
fn both_subtotal_spellings_must_agree_when_both_are_sent() {
    let same = sample_with("\"subtotal\": 60.0,", "\"subtotal\": 60.0, \"subTotal\": 60.0,");
    assert!(parse_webhook(same.as_bytes()).is_ok());
    let differ = sample_with("\"subtotal\": 60.0,", "\"subtotal\": 60.0, \"subTotal\": 61.0,");
    assert_eq!(refused(&differ).to_string(), "subtotal: given twice (as subtotal and subTotal) with different values");
}

#[test]
fn a_wrong_type_is_named_with_its_full_path() {
    let body = DOC_SAMPLE.replacen("\"totalCost\": 30.0", "\"totalCost\": \"ten\"", 1);
    let e = refused(&body);
    assert_eq!(e.to_string(), "vendorInvoices[1].purchaseOrderItems[1].totalCost: expected a number, found \"ten\"");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let body = sample_with("\"poNumber\": \"P002271\",", "")
        .replacen("\"shipDate\": \"2020-03-27\"", "\"shipDate\": \"2020-02-30\"", 1)
        .replacen("\"invoiceAmount\": 30.0", "\"invoiceAmount\": -30.0", 1)
        .replacen("\"totalCost\": 3.0", "\"totalCost\": 1e400", 1);
    let paths: Vec<_> = refused(&body).problems.into_iter().map(|p| p.to_string()).collect();
    assert_eq!(
        paths,
        vec![
            "poNumber: is required",
            "shipDate: expected a date (YYYY-MM-DD), found \"2020-02-30\"",
            "vendorInvoices[1].invoiceAmount: must not be negative, found -30.0",
            "vendorInvoices[2].purchaseOrderItems[0].totalCost: expected a finite amount up to 1000000000000, found 1e400",
        ]
    );
}

#[test]
fn each_required_field_is_required() {
    for (field, path) in
        [("\"id\" : 12345,", "id"), ("\"poNumber\": \"P002271\",", "poNumber"), ("\"total\": 60.0,", "total")]
    {
        let e = refused(&sample_with(field, ""));
        assert_eq!(e.to_string(), format!("{path}: is required"));
    }
    let e = refused(r#"{"id": 1, "poNumber": "P1", "total": 1}"#);
    assert_eq!(e.to_string(), "vendorInvoices: is required");
    let e = refused(&sample_with("\"id\" : 12345", "\"id\" : null"));
    assert_eq!(e.to_string(), "id: expected a number, found null");
}

#[test]
fn bad_values_are_refused_with_what_was_expected() {
    let cases = [
        (sample_with("\"id\" : 12345", "\"id\" : -5"), "id: expected a non-negative whole number, found -5"),
        (sample_with("\"id\" : 12345", "\"id\" : 12.5"), "id: expected a non-negative whole number, found 12.5"),
        (sample_with("\"poNumber\": \"P002271\"", "\"poNumber\": 2271"), "poNumber: expected a string, found 2271"),
        (sample_with("\"poNumber\": \"P002271\"", "\"poNumber\": \"  \""), "poNumber: must not be empty"),
        (
            sample_with("\"shipDate\": \"2020-03-27\"", "\"shipDate\": \"03/27/2020\""),
            "shipDate: expected a date (YYYY-MM-DD), found \"03/27/2020\"",
        ),
        (
            sample_with("\"shipDate\": \"2020-03-27\"", "\"shipDate\": \"2020-3-27\""),
            "shipDate: expected a date (YYYY-MM-DD), found \"2020-3-27\"",
        ),
        (
            sample_with("\"total\": 60.0", "\"total\": 1e13"),
            "total: expected an amount up to 1000000000000, found 1e13",
        ),
        (
            sample_with("\"total\": 60.0", "\"total\": 0.12345678901234567890123456789"),
            "total: expected a finite amount up to 1000000000000, found 0.12345678901234567890123456789",
        ),
        (sample_with("\"total\": 60.0", "\"total\": \"60.0\""), "total: expected a number, found \"60.0\""),
        (sample_with("\"location\":{", "\"location\": [1], \"x\":{"), "location[0]: expected an object, found 1"),
        (
            sample_with("\"vendorInvoices\": [", "\"vendorInvoices\": {\"a\": 1}, \"ignored\": ["),
            "vendorInvoices: expected an array, found an object",
        ),
        (
            sample_with("\"file\": \"www.kometsales.com/url\"", "\"file\": \"javascript:alert(1)\""),
            "vendorInvoices[0].file: expected an http or https URL, found scheme \"javascript\"",
        ),
        (
            sample_with("\"code\": \"02\"", "\"code\": true"),
            "location.code: expected a string or a whole number, found true",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(refused(&body).to_string(), expected);
    }
    let vendor = r#""vendor": { "id": 29697, "code": "AV", "name": "Miami L Vendor", "vendorAccountingCode": null, "type": "Fresh Cut", }"#;
    let two_vendors = sample_with(vendor, r#""vendor": [{"id": 1}, {"id": 2}]"#);
    assert_eq!(refused(&two_vendors).to_string(), "vendorInvoices[0].vendor: expected one object, found an array of 2");
}

#[test]
fn non_documents_are_refused() {
    for (body, expected) in [
        ("", "body: invalid JSON at line 1, column 1: the body is empty"),
        ("  \n ", "body: invalid JSON at line 2, column 2: the body is empty"),
        ("[]", "body: expected a JSON object, found an array"),
        ("[{\"id\": 1}]", "body: expected a JSON object, found an array"),
        ("\"PO\"", "body: expected a JSON object, found \"PO\""),
        ("null", "body: expected a JSON object, found null"),
    ] {
        assert_eq!(refused(body).to_string(), expected);
    }
    // Arbitrary non-JSON is not tolerated: only trailing commas are.
    let comment = sample_with("\"poNumber\"", "/* c */ \"poNumber\"");
    assert_eq!(
        refused(&comment).to_string(),
        "body: invalid JSON at line 1, column 17: expected a quoted member name, found '/'"
    );
    let nan = sample_with("\"total\": 60.0", "\"total\": NaN");
    assert!(refused(&nan).to_string().starts_with("body: invalid JSON"));
    let deep = format!("{{\"id\": 1, \"extra\": {}{}}}", "[".repeat(100), "]".repeat(100));
    assert!(refused(&deep).to_string().contains("nesting deeper than 8 levels"));
}

#[test]
fn the_error_list_is_bounded() {
    let many_items = (0..500).map(|_| "{\"totalCost\": \"x\"}").collect::<Vec<_>>().join(",");
    let body = format!(
        "{{\"id\": 1, \"poNumber\": \"P\", \"total\": 1, \"vendorInvoices\": [{{\"invoiceNumber\": \"A\", \"invoiceAmount\": 1, \"purchaseOrderItems\": [{many_items}]}}]}}"
    );
    let e = refused(&body);
    assert_eq!(e.problems.len(), po_sync::komet::MAX_REPORTED_PROBLEMS);
    assert_eq!(e.unreported, 500 - po_sync::komet::MAX_REPORTED_PROBLEMS);
    assert!(e.to_string().ends_with("and 480 more problem(s)"));
}

#[test]
fn a_large_hostile_body_is_handled_in_linear_time() {
    // Tens of thousands of repeated keys and elements: each must be looked at a bounded number of times.
    let keys = (0..50_000).map(|i| format!("\"k{i}\": {i}")).collect::<Vec<_>>().join(",");
    let body = format!("{{{keys}, \"id\": 1, \"poNumber\": \"P\", \"total\": 1, \"vendorInvoices\": []}}");
    let po = parse_webhook(body.as_bytes()).unwrap();
    assert_eq!(po.vendor_invoices.len(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse_webhook(&bytes) {
            prop_assert!(!e.problems.is_empty());
            prop_assert!(e.problems.iter().all(|p| !p.path.is_empty() && !p.message.is_empty()));
        }
    }

    #[test]
    fn mutated_samples_never_panic_and_always_explain(position in 0usize..1417, byte in any::<u8>(), cut in 0usize..1417) {
        let mut bytes = DOC_SAMPLE.as_bytes().to_vec();
        let at = position % bytes.len();
        bytes[at] = byte;
        bytes.truncate(cut.max(1));
        if let Err(e) = parse_webhook(&bytes) {
            prop_assert!(!e.problems.is_empty());
            prop_assert!(e.problems.iter().all(|p| !p.path.is_empty() && !p.message.is_empty()));
        }
    }

    #[test]
    fn amounts_round_trip_exactly(units in 0u64..1_000_000_000, cents in 0u32..100) {
        let text = format!("{units}.{cents:02}");
        let body = DOC_SAMPLE.replacen("\"total\": 60.0", &format!("\"total\": {text}"), 1);
        let po = parse_webhook(body.as_bytes()).unwrap();
        prop_assert_eq!(po.total.to_string(), text);
    }
}

// ---------------------------------------------------------------------------------------------- limits

fn problems(error: &PayloadError) -> Vec<String> {
    error.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn a_field_longer_than_its_limit_is_refused_naming_the_field_its_length_and_the_limit() {
    use po_sync::limits::*;
    let long = |n: usize| "x".repeat(n);
    for (from, to, expected) in [
        (
            "\"poNumber\": \"P002271\"",
            format!("\"poNumber\": \"{}\"", long(300_000)),
            "poNumber: is 300000 characters long, more than the 100 allowed".to_owned(),
        ),
        (
            "\"invoiceNumber\": \"01-P002271\"",
            format!("\"invoiceNumber\": \"{}\"", long(5_000)),
            "vendorInvoices[0].invoiceNumber: is 5000 characters long, more than the 100 allowed".to_owned(),
        ),
        (
            "\"code\": \"02\"",
            format!("\"code\": \"{}\"", long(CODE_CHARS + 1)),
            format!("location.code: is {} characters long, more than the {CODE_CHARS} allowed", CODE_CHARS + 1),
        ),
        (
            "\"name\": \"Chicago\"",
            format!("\"name\": \"{}\"", "é".repeat(NAME_CHARS + 1)),
            format!("location.name: is {} characters long, more than the {NAME_CHARS} allowed", NAME_CHARS + 1),
        ),
        (
            "\"file\": \"www.kometsales.com/url\"",
            format!("\"file\": \"https://files.kometsales.com/{}\"", long(LINK_CHARS)),
            format!(
                "vendorInvoices[0].file: is {} characters long, more than the {LINK_CHARS} allowed",
                LINK_CHARS + "https://files.kometsales.com/".len()
            ),
        ),
        (
            "\"categoryProcurementAccountingCode\": \"CGEN\"",
            format!("\"categoryProcurementAccountingCode\": \"{}\"", long(CODE_CHARS + 1)),
            format!(
                "vendorInvoices[0].purchaseOrderItems[0].categoryProcurementAccountingCode: is {} characters long, more than the {CODE_CHARS} allowed",
                CODE_CHARS + 1
            ),
        ),
    ] {
        let error = refused(&sample_with(from, &to));
        assert_eq!(problems(&error), [expected]);
    }
    // At the limit, in characters (not bytes): taken.
    let at_limit =
        sample_with("\"poNumber\": \"P002271\"", &format!("\"poNumber\": \"{}\"", "ñ".repeat(PO_NUMBER_CHARS)));
    assert_eq!(parse_webhook(at_limit.as_bytes()).unwrap().po_number.chars().count(), PO_NUMBER_CHARS);
}

/// The clean PO with `invoices` copies of its first invoice (numbered apart), each with `items` items.
fn clean_po_with(invoices: usize, items: usize) -> String {
    let item = r#"{ "categoryProcurementAccountingCode": "CGEN", "totalCost": 1.0 }"#;
    let items = vec![item; items].join(",");
    let invoice = |n: usize| {
        format!(
            r#"{{ "invoiceNumber": "INV-{n}", "invoiceAmount": 1.0, "vendor": {{ "id": 1, "code": "AV" }}, "purchaseOrderItems": [{items}] }}"#
        )
    };
    let list: Vec<String> = (0..invoices).map(invoice).collect();
    format!(r#"{{ "id": 7, "poNumber": "P7", "total": 1.0, "vendorInvoices": [{}] }}"#, list.join(","))
}

#[test]
fn too_many_invoices_or_items_are_refused_unread() {
    use po_sync::limits::*;
    assert!(parse_webhook(clean_po_with(INVOICES, 1).as_bytes()).is_ok());
    assert_eq!(
        problems(&refused(&clean_po_with(INVOICES + 1, 1))),
        [format!("vendorInvoices: holds {} elements, more than the {INVOICES} allowed", INVOICES + 1)]
    );
    assert!(parse_webhook(clean_po_with(1, ITEMS_PER_INVOICE).as_bytes()).is_ok());
    assert_eq!(
        problems(&refused(&clean_po_with(1, ITEMS_PER_INVOICE + 1))),
        [format!(
            "vendorInvoices[0].purchaseOrderItems: holds {} elements, more than the {ITEMS_PER_INVOICE} allowed",
            ITEMS_PER_INVOICE + 1
        )]
    );
    let per_invoice = ITEMS / 20;
    assert!(parse_webhook(clean_po_with(20, per_invoice).as_bytes()).is_ok());
    assert_eq!(
        problems(&refused(&clean_po_with(21, per_invoice))),
        [format!("vendorInvoices: holds {} items in all, more than the {ITEMS} allowed", 21 * per_invoice)]
    );
}
