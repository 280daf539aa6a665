//! Whatever a PO holds within the reader's limits, what po-sync queues about it stays far below SQS's 1 MiB,
//! and the e-mail says what it leaves out.

use chrono::{TimeZone, Utc};
use po_sync::appzen::MappingSettings;
use po_sync::decision::{Policy, plan};
use po_sync::email::{EmailSettings, render};
use po_sync::komet::parse_webhook;
use po_sync::limits;
use po_sync::message::{NotificationKind, WebhookEnvelope};
use po_sync::reconcile::Tolerance;

/// The largest PO the reader takes: every invoice at its limits (longest number, link, vendor name, a vendor
/// of its own), none adding up.
fn largest_mismatched_po() -> Vec<u8> {
    let per_invoice = limits::ITEMS / limits::INVOICES;
    let item = r#"{ "categoryProcurementAccountingCode": "CGEN", "totalCost": 1.0 }"#;
    let items = vec![item; per_invoice].join(",");
    let invoice = |n: usize| {
        let number = format!("{n:0width$}", width = limits::INVOICE_NUMBER_CHARS);
        let link = format!("https://files.kometsales.com/{}", "l".repeat(limits::LINK_CHARS - 29));
        let name = format!("{n}{}", "v".repeat(limits::NAME_CHARS - 4));
        format!(
            r#"{{ "invoiceNumber": "{number}", "invoiceAmount": 999.0, "file": "{link}", "vendor": {{ "id": {n}, "code": "V{n}", "name": "{name}" }}, "purchaseOrderItems": [{items}] }}"#
        )
    };
    let invoices: Vec<String> = (0..limits::INVOICES).map(invoice).collect();
    let po_number = "P".repeat(limits::PO_NUMBER_CHARS);
    format!(r#"{{ "id": 7, "poNumber": "{po_number}", "total": 1.0, "vendorInvoices": [{}] }}"#, invoices.join(","))
        .into_bytes()
}

#[test]
fn a_mismatch_with_thousands_of_discrepancies_stays_small_and_says_what_it_leaves_out() {
    let body = largest_mismatched_po();
    let envelope =
        WebhookEnvelope::new(parse_webhook(&body).unwrap(), &body, Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap());
    let settings = MappingSettings::default();
    let plan = plan(&envelope, Policy::Block, Tolerance::CENT, &settings);
    assert!(plan.discrepancy_count > limits::INVOICES, "{}", plan.discrepancy_count);
    for event in &plan.notifications {
        let json = event.to_json();
        // SQS takes 1 MiB; a notification stays under an eighth of it.
        assert!(json.len() < 128 * 1024, "{:?}: {} bytes", event.kind(), json.len());
        let email = render(event, &EmailSettings::default()).unwrap();
        if event.kind() == NotificationKind::ReconciliationMismatch {
            assert!(
                email.subject.contains(&format!("({} discrepancies)", plan.discrepancy_count)),
                "{}",
                email.subject
            );
            let more = plan.discrepancy_count - limits::LISTED_DISCREPANCIES;
            assert!(email.text.contains(&format!("… and {more} more discrepancies")), "{}", email.text);
            let links = limits::INVOICES - limits::LISTED_LINKS;
            assert!(email.text.contains(&format!("… and {links} more invoice links")), "{}", email.text);
            assert_eq!(event.webhook.as_ref().unwrap().invoice_links.len(), limits::LISTED_LINKS);
        }
    }
    let kinds: Vec<_> = plan.notifications.iter().map(|e| e.kind()).collect();
    assert!(kinds.contains(&NotificationKind::ReconciliationMismatch), "{kinds:?}");
    // The mapping error names the vendors, a bounded few of them.
    let mapping = plan.notifications.iter().find(|e| e.kind() == NotificationKind::MappingError).unwrap();
    let vendors = &mapping.webhook.as_ref().unwrap().po.vendors;
    assert_eq!(
        (vendors.len(), mapping.omitted.vendors),
        (limits::LISTED_VENDORS, limits::INVOICES - limits::LISTED_VENDORS)
    );
}
