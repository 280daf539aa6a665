//! Time per PO spent by reconcile outside HTTP: reconcile + map + serialise AppZen's body (`plan` +
//! `to_json`), and the same after reading the queue envelope. On Komet's doc sample and on a generated PO
//! of 300 invoices × 3 items.
//!
//! `cargo bench -p reconcile --bench reconcile_map`

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use po_sync::appzen::MappingSettings;
use po_sync::decision::{Policy, plan};
use po_sync::komet::parse_webhook;
use po_sync::message::WebhookEnvelope;
use po_sync::reconcile::Tolerance;
use std::hint::black_box;

use po_sync_test_support::DOC_SAMPLE;

/// A clean Komet PO with `invoices` invoices of three items each (items 10.10 + 20.20 + 30.30, charges 1.25).
fn generated_po(invoices: usize) -> Vec<u8> {
    let invoice = |n: usize| {
        format!(
            r#"{{"invoiceNumber":"INV-{n:05}","invoiceAmount":61.85,"totalAdditionalCharges":1.25,"file":"https://files.kometsales.com/invoices/INV-{n:05}.pdf",
"vendor":{{"id":29697,"code":"AV","name":"Miami L Vendor","vendorAccountingCode":"V-0042","type":"Fresh Cut"}},
"purchaseOrderItems":[{{"categoryProcurementAccountingCode":"CGEN","totalCost":10.10}},{{"categoryProcurementAccountingCode":"PGEN","totalCost":20.20}},{{"categoryProcurementAccountingCode":"RGEN","totalCost":30.30}}]}}"#
        )
    };
    let body: Vec<String> = (0..invoices).map(invoice).collect();
    let n = po_sync::Decimal::from(invoices as u64);
    let sub_total = n * po_sync::Decimal::new(6060, 2);
    let total = n * po_sync::Decimal::new(6185, 2);
    format!(
        r#"{{"id":99001,"poNumber":"P-BENCH","shipDate":"2026-02-09","arrivalDate":"2026-02-11","subTotal":{sub_total},"total":{total},
"location":{{"id":3,"code":"02","name":"Chicago"}},"vendorInvoices":[{}]}}"#,
        body.join(",")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let settings = MappingSettings::default();
    let received_at = Utc.with_ymd_and_hms(2026, 11, 21, 17, 0, 0).unwrap();
    let big = generated_po(300);
    for (name, body, policy) in
        [("doc_sample", DOC_SAMPLE, Policy::Forward), ("300_invoices", big.as_slice(), Policy::Block)]
    {
        let envelope = WebhookEnvelope::new(parse_webhook(body).unwrap(), body, received_at);
        let queued = envelope.to_json();
        // Forward for the doc sample so its (mismatched) body is still built and serialised.
        let check = plan(&envelope, policy, Tolerance::CENT, &settings);
        assert!(check.upsert.is_some(), "{name}: the bench must measure the mapping too");
        eprintln!(
            "{name}: {} invoices, {} discrepancies, envelope {} bytes, AppZen body {} bytes",
            envelope.po.vendor_invoices.len(),
            check.discrepancy_count,
            queued.len(),
            check.upsert.as_ref().unwrap().to_json().len()
        );

        c.bench_function(&format!("reconcile+map+serialise/{name}"), |b| {
            b.iter(|| {
                let plan = plan(black_box(&envelope), policy, Tolerance::CENT, &settings);
                plan.upsert.map(|body| body.to_json())
            })
        });
        c.bench_function(&format!("read_envelope+reconcile+map+serialise/{name}"), |b| {
            b.iter(|| {
                let envelope = WebhookEnvelope::from_json(black_box(&queued)).unwrap();
                let plan = plan(&envelope, policy, Tolerance::CENT, &settings);
                plan.upsert.map(|body| body.to_json())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
