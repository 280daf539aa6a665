//! Runs the shared crate on a Komet webhook body and prints the reconciliation report and AppZen's body.
//!
//! `cargo run -p po-sync --example doc-sample [FILE]` (default: Komet's documented sample).

use po_sync::appzen::{MappingSettings, map_purchase_order};
use po_sync::komet::parse_webhook;
use po_sync::reconcile::{Tolerance, reconcile};
use std::process::ExitCode;

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/komet-doc-sample.json").to_owned());
    let body = match std::fs::read(&path) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let po = match parse_webhook(&body) {
        Ok(po) => po,
        Err(e) => {
            println!("Refused (ingest would answer 400): {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("PO {} (Komet id {}): {} invoice(s), total {}", po.po_number, po.id, po.vendor_invoices.len(), po.total);
    let report = reconcile(&po, Tolerance::CENT);
    if report.is_clean() {
        println!("Reconciliation: clean");
    } else {
        println!("Reconciliation: {} discrepancy(ies)", report.discrepancies.len());
        for d in &report.discrepancies {
            println!(
                "  - {}{}: expected {}, actual {}, difference {}",
                d.rule.description(),
                d.invoice_number.as_ref().map(|n| format!(" (invoice {n})")).unwrap_or_default(),
                d.expected,
                d.actual,
                d.difference
            );
        }
    }
    match map_purchase_order(&po, &MappingSettings::default()).map(|b| b.to_json()) {
        Ok(json) => println!("AppZen body (POST /dictionary-data-services/purchase-order):\n{json}"),
        Err(e) => println!("Mapping error: {e}"),
    }
    ExitCode::SUCCESS
}
