//! The three hot paths exactly as the functions run them, minus I/O; shared by the criterion benches,
//! `po-bench` and `po-allocs`, so all measure the same work.

use chrono::{DateTime, TimeZone, Utc};
use po_sync::appzen::{MappingSettings, map_purchase_order};
use po_sync::komet::parse_webhook;
use po_sync::message::{NotificationDetail, NotificationEvent, WebhookEnvelope};
use po_sync::reconcile::{Tolerance, reconcile};

/// A fixed arrival time, so every run serialises the same bytes.
pub fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 14, 30, 0).single().unwrap_or_default()
}

/// ingest: parse + validate the body, build the queue message. Returns the SQS message body.
pub fn ingest(body: &[u8], received_at: DateTime<Utc>) -> String {
    let po = parse_webhook(body).unwrap_or_else(|e| panic!("benchmark input must be a valid Komet body: {e}"));
    WebhookEnvelope::new(po, body, received_at).to_json()
}

/// reconcile: read the queue message, reconcile, map and serialise AppZen's body. Maps even when the PO
/// does not add up (the `forward` policy), so every input exercises the whole path.
pub fn reconcile_path(queue_message: &str, settings: &MappingSettings) -> (usize, String) {
    let envelope = WebhookEnvelope::from_json(queue_message).expect("the envelope ingest wrote");
    let report = reconcile(&envelope.po, Tolerance::CENT);
    let body = map_purchase_order(&envelope.po, settings).expect("benchmark input maps to one AppZen PO");
    (report.discrepancies.len(), body.to_json())
}

/// The notification event notify receives for this PO: a mismatch with the PO's real discrepancies, or for
/// a PO that adds up, its first invoice a cent off. It carries every invoice link (2,000 on the 3 MB PO).
pub fn mismatch_event(queue_message: &str) -> NotificationEvent {
    let envelope = WebhookEnvelope::from_json(queue_message).expect("the envelope ingest wrote");
    let report = reconcile(&envelope.po, Tolerance::CENT);
    let discrepancies = match envelope.po.vendor_invoices.first() {
        Some(invoice) if report.is_clean() => vec![po_sync::reconcile::Discrepancy {
            rule: po_sync::reconcile::Rule::InvoiceItems,
            invoice_number: Some(invoice.invoice_number.as_str().to_owned()),
            expected: invoice.invoice_amount,
            actual: invoice.invoice_amount + po_sync::Decimal::new(1, 2),
            difference: po_sync::Decimal::new(1, 2),
        }],
        _ => report.discrepancies,
    };
    let detail = NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen: false };
    NotificationEvent::about(&envelope, detail)
}

/// notify: render the e-mail (subject, text and HTML parts) for one event.
pub fn notify(event: &NotificationEvent, settings: &po_sync::email::EmailSettings) -> po_sync::email::Email {
    po_sync::email::render(event, settings).expect("the notification e-mail renders")
}
