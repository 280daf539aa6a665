//! A seeded, deterministic Komet webhook generator for benchmarks: the same (invoices, items, seed) always
//! gives the same bytes. One vendor, realistic field values, and amounts that reconcile to the cent, so the
//! reconcile path does its whole work (map + serialise the AppZen body) rather than stopping at a mismatch.
//!
//! Part of the bench crate, never of a Lambda function, so no test data is linked into one.

use std::fmt::Write as _;

/// The sizes the performance figures use: ~280 KB and ~1 MB (975,627 bytes: 1,000 invoices of 10 items, at the
/// reader's limits (`po_sync::limits`), and a queue message that fits SQS's 1 MiB).
pub const MEDIUM: Shape = Shape { invoices: 300, items_per_invoice: 10 };
pub const SQS_LARGEST: Shape = Shape { invoices: 1_000, items_per_invoice: 10 };
pub const DEFAULT_SEED: u64 = 0x6b6f_6d65_7420_706f; // "komet po"

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub invoices: usize,
    pub items_per_invoice: usize,
}

/// SplitMix64: tiny, fast, and fully determined by its seed (no dependency, no platform variance).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.next() as usize % choices.len()]
    }
}

/// Cents as Komet writes amounts: `123.45`, `60.0` for whole amounts (as in its documented sample).
fn amount(out: &mut String, cents: u64) {
    let (units, rest) = (cents / 100, cents % 100);
    if rest == 0 {
        let _ = write!(out, "{units}.0");
    } else {
        let _ = write!(out, "{units}.{rest:02}");
    }
}

const CATEGORIES: &[&str] = &["CGEN", "PGEN", "ROSE", "CARN", "MUMS", "ALST", "GREENS", "HYDR", "TULP", "SUPPL"];

/// A Komet "PO Reconciliation Invoices" webhook body of `shape`, as compact JSON (Komet's documented sample,
/// with its spaces and trailing commas, is benchmarked as it is).
pub fn generate(shape: Shape, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let po_id = rng.between(100_000, 999_999);
    let po_number = format!("P{:06}", rng.between(1, 999_999));
    let vendor =
        r#"{"id":29697,"code":"AV","name":"Miami L Vendor","vendorAccountingCode":"2000-AV","type":"Fresh Cut"}"#;

    let mut invoices = String::with_capacity(shape.invoices * (300 + 70 * shape.items_per_invoice));
    let (mut all_items, mut all_invoices) = (0u64, 0u64);
    for i in 0..shape.invoices {
        if i > 0 {
            invoices.push(',');
        }
        let mut items = String::with_capacity(70 * shape.items_per_invoice);
        let mut item_cents = 0u64;
        for j in 0..shape.items_per_invoice {
            if j > 0 {
                items.push(',');
            }
            // Boxes of flowers: $5.00 to $650.00, a quarter of them whole-dollar.
            let mut cents = rng.between(500, 65_000);
            if rng.between(0, 3) == 0 {
                cents -= cents % 100;
            }
            item_cents += cents;
            let _ = write!(items, r#"{{"categoryProcurementAccountingCode":"{}","totalCost":"#, rng.pick(CATEGORIES));
            amount(&mut items, cents);
            items.push('}');
        }
        // One invoice in three carries freight or handling.
        let charges = if rng.between(0, 2) == 0 { rng.between(1_000, 9_000) } else { 0 };
        let invoice_cents = item_cents + charges;
        all_items += item_cents;
        all_invoices += invoice_cents;
        let number = format!("{:02}-{}-{:04}", rng.between(1, 12), po_number, i + 1);
        let _ = write!(invoices, r#"{{"invoiceNumber":"{number}","invoiceAmount":"#);
        amount(&mut invoices, invoice_cents);
        invoices.push_str(r#","totalAdditionalCharges":"#);
        amount(&mut invoices, charges);
        let _ = write!(
            invoices,
            r#","file":"https://files.kometsales.com/invoices/{po_id}/{number}.pdf?expires={}&sig={:016x}","vendor":{vendor},"purchaseOrderItems":[{items}]}}"#,
            1_700_000_000 + rng.between(0, 86_400),
            rng.next(),
        );
    }

    let mut body = String::with_capacity(invoices.len() + 400);
    let _ = write!(
        body,
        r#"{{"id":{po_id},"poNumber":"{po_number}","shipDate":"2024-05-06","arrivalDate":"2024-05-08","subTotal":"#
    );
    amount(&mut body, all_items);
    body.push_str(r#","total":"#);
    amount(&mut body, all_invoices);
    let _ = write!(body, r#","location":{{"id":3,"code":"02","name":"Chicago"}},"vendorInvoices":[{invoices}]}}"#);
    body.into_bytes()
}
