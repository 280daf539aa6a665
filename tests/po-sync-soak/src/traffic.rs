//! The soak's traffic: a busy Komet account, generated from a seed. Many POs, each a script of webhooks sent in
//! order: a first clean version, then amount changes, an exact resend, a revert to an earlier body, a version that
//! does not add up, a multi-vendor version, now and then an invalid body or a wrong password. Some POs are ones
//! AppZen refuses (the sandbox answers 400 for their PO numbers). Every body is Komet's JSON, built to the cent.

use std::sync::Arc;

use serde::Serialize;

/// What a step sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The PO's first version (clean).
    First,
    /// New amounts, still adding up.
    Amounts,
    /// The previous body again, byte for byte.
    Resend,
    /// An earlier (not the previous) body again, byte for byte.
    Revert,
    /// An item's cost changed without its invoice: does not add up.
    Mismatch,
    /// A second vendor on one invoice: cannot be one AppZen PO.
    MultiVendor,
    /// Not a valid Komet payload: refused with 400.
    Invalid,
    /// The right body with a wrong password: refused with 401.
    WrongPassword,
}

/// What the body is, whatever step produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Adds up, one vendor, every code: AppZen gets it (unless AppZen refuses the PO).
    Clean,
    Mismatch,
    MultiVendor,
    /// Refused by ingest (400 or 401).
    Refused,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub change: Change,
    pub shape: Shape,
    pub body: Arc<Vec<u8>>,
    /// SHA-256 of `body` (what ingest puts in the envelope).
    pub sha256: String,
    /// 1: sent before the redrive; 2: after.
    pub phase: u8,
}

#[derive(Debug, Clone)]
pub struct PoScript {
    pub po_id: u64,
    pub po_number: String,
    /// AppZen answers 400 for this PO number.
    pub appzen_refuses: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Traffic {
    pub pos: Vec<PoScript>,
}

impl Traffic {
    /// Webhooks to offer in all (every step is one webhook).
    pub fn webhooks(&self) -> usize {
        self.pos.iter().map(|p| p.steps.len()).sum()
    }

    pub fn in_phase(&self, phase: u8) -> usize {
        self.pos.iter().flat_map(|p| &p.steps).filter(|s| s.phase == phase).count()
    }

    pub fn po(&self, po_id: u64) -> Option<&PoScript> {
        self.pos.iter().find(|p| p.po_id == po_id)
    }

    /// The PO whose upserts AppZen fails for a stretch, chosen by `seed` among the first `within` POs (those the
    /// sender starts with): one AppZen does not refuse, with the most clean versions before the redrive (up to
    /// three: later versions wait behind the failing one) and, preferably, one after it (so a parked version
    /// meets a newer one).
    pub fn failing_po(&self, seed: u64, within: usize) -> Option<&PoScript> {
        let clean_in =
            |po: &PoScript, phase: u8| po.steps.iter().filter(|s| s.phase == phase && s.shape == Shape::Clean).count();
        let score = |po: &PoScript| (clean_in(po, 1).min(3), clean_in(po, 2).min(1));
        let candidates: Vec<&PoScript> =
            self.pos.iter().take(within.max(1)).filter(|po| !po.appzen_refuses && clean_in(po, 1) >= 1).collect();
        let best = candidates.iter().map(|po| score(po)).max()?;
        let best: Vec<&PoScript> = candidates.into_iter().filter(|po| score(po) == best).collect();
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xFA11);
        best.get(rng.usize(..best.len())).copied()
    }
}

/// One invoice of a PO, in cents.
#[derive(Debug, Clone, PartialEq)]
struct Invoice {
    charges: i64,
    /// (GL code, cost in cents)
    items: Vec<(&'static str, i64)>,
    /// A second vendor (the multi-vendor version).
    other_vendor: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Content {
    ship_day: u32,
    invoices: Vec<Invoice>,
    /// (invoice, item, cents added to the item's cost only): the PO does not add up.
    tamper: Option<(usize, usize, i64)>,
}

const GL_CODES: [&str; 4] = ["CGEN", "PGEN", "RGEN", "FGEN"];

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

fn random_invoice(rng: &mut fastrand::Rng) -> Invoice {
    let items = (0..rng.usize(1..=4)).map(|_| (GL_CODES[rng.usize(..GL_CODES.len())], rng.i64(1..=250_000))).collect();
    let charges = if rng.bool() { rng.i64(0..=10_000) } else { 0 };
    Invoice { charges, items, other_vendor: false }
}

/// Komet's JSON for a PO (as Komet's sample writes it, with objects in one-element arrays).
fn render(po_id: u64, po_number: &str, content: &Content) -> Vec<u8> {
    let mut invoices = Vec::new();
    let (mut total, mut subtotal) = (0i64, 0i64);
    for (i, invoice) in content.invoices.iter().enumerate() {
        let items_sum: i64 = invoice.items.iter().map(|(_, c)| c).sum();
        let amount = items_sum + invoice.charges;
        total += amount;
        subtotal += items_sum;
        let items: Vec<String> = invoice
            .items
            .iter()
            .enumerate()
            .map(|(j, (gl, cost))| {
                let cost = match content.tamper {
                    Some((ti, tj, delta)) if ti == i && tj == j => cost + delta,
                    _ => *cost,
                };
                format!(r#"{{ "categoryProcurementAccountingCode": "{gl}", "totalCost": {} }}"#, money(cost))
            })
            .collect();
        let vendor = if invoice.other_vendor {
            r#"{ "id": 31877, "code": "BV", "name": "Bogota Flowers", "vendorAccountingCode": "V-0077", "type": "Fresh Cut" }"#
        } else {
            r#"{ "id": 29697, "code": "AV", "name": "Miami L Vendor", "vendorAccountingCode": "V-0042", "type": "Fresh Cut" }"#
        };
        invoices.push(format!(
            r#"    {{
      "invoiceNumber": "{po_number}-{n}",
      "invoiceAmount": {amount},
      "totalAdditionalCharges": {charges},
      "vendor": [{vendor}],
      "purchaseOrderItems": [
        {items}
      ]
    }}"#,
            n = i + 1,
            amount = money(amount),
            charges = money(invoice.charges),
            items = items.join(",\n        "),
        ));
    }
    format!(
        r#"{{
  "id": {po_id},
  "poNumber": "{po_number}",
  "shipDate": "2026-03-{day:02}",
  "arrivalDate": "2026-03-{arrival:02}",
  "subTotal": {subtotal},
  "total": {total},
  "location": [{{ "id": 3, "code": 2, "name": "Chicago" }}],
  "vendorInvoices": [
{invoices}
  ]
}}
"#,
        day = content.ship_day,
        arrival = content.ship_day + 2,
        subtotal = money(subtotal),
        total = money(total),
        invoices = invoices.join(",\n"),
    )
    .into_bytes()
}

fn invalid_body(rng: &mut fastrand::Rng, po_id: u64, po_number: &str) -> Vec<u8> {
    match rng.u8(0..3) {
        0 => format!(r#"{{"id": {po_id}, "poNumber": "{po_number}", "total": "ten", "vendorInvoices": []}}"#),
        1 => format!(r#"{{"id": {po_id}, "poNumber": "{po_number}", "total": 10.00}}"#),
        _ => format!(
            r#"{{"id": {po_id}, "poNumber": "{po_number}", "total": -5.00, "vendorInvoices": [{{"invoiceNumber": "X", "invoiceAmount": -5.00, "purchaseOrderItems": [{{"totalCost": -5.00}}]}}]}}"#
        ),
    }
    .into_bytes()
}

/// How the traffic is drawn.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    pub seed: u64,
    /// Webhooks to offer (every step of every PO), at least this many.
    pub webhooks: usize,
    /// Share of POs AppZen refuses.
    pub appzen_refuses: f64,
    /// First Komet PO id (ids are consecutive).
    pub first_po_id: u64,
}

/// Draws the traffic. Same options, same bytes.
pub fn generate(options: &TrafficOptions) -> Traffic {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut pos = Vec::new();
    let mut total = 0;
    let mut index = 0u64;
    while total < options.webhooks {
        let po_id = options.first_po_id + index;
        let po_number = format!("S{}-{:05}", options.seed, index + 1);
        index += 1;
        let appzen_refuses = rng.f64() < options.appzen_refuses;
        let mut content = Content {
            ship_day: rng.u32(1..=26),
            invoices: (0..rng.usize(1..=3)).map(|_| random_invoice(&mut rng)).collect(),
            tamper: None,
        };
        let length = 1 + rng.usize(0..=3) + rng.usize(0..=3);
        let mut steps: Vec<Step> = Vec::with_capacity(length);
        let step = |change: Change, shape: Shape, body: Vec<u8>| Step {
            change,
            shape,
            sha256: po_sync::message::sha256_hex(&body),
            body: Arc::new(body),
            phase: 1,
        };
        steps.push(step(Change::First, Shape::Clean, render(po_id, &po_number, &content)));
        // (body, shape) of the versions sent so far (not the refused ones), for resends and reverts.
        let mut sent: Vec<(Arc<Vec<u8>>, Shape)> = vec![(steps[0].body.clone(), Shape::Clean)];
        while steps.len() < length {
            let roll = rng.f64();
            let next = if roll < 0.36 {
                // New amounts (also what fixes a version that did not add up, or had two vendors).
                let invoice = rng.usize(..content.invoices.len());
                let item = rng.usize(..content.invoices[invoice].items.len());
                let cost = &mut content.invoices[invoice].items[item].1;
                *cost = (*cost + rng.i64(-20_000..=20_000)).max(1);
                content.tamper = None;
                content.invoices.iter_mut().for_each(|i| i.other_vendor = false);
                step(Change::Amounts, Shape::Clean, render(po_id, &po_number, &content))
            } else if roll < 0.50 {
                let (body, shape) = sent.last().cloned().unwrap_or_else(|| (steps[0].body.clone(), Shape::Clean));
                Step { change: Change::Resend, shape, sha256: po_sync::message::sha256_hex(&body), body, phase: 1 }
            } else if roll < 0.62 && sent.len() >= 2 {
                let (body, shape) = sent[rng.usize(..sent.len() - 1)].clone();
                Step { change: Change::Revert, shape, sha256: po_sync::message::sha256_hex(&body), body, phase: 1 }
            } else if roll < 0.76 {
                let invoice = rng.usize(..content.invoices.len());
                let item = rng.usize(..content.invoices[invoice].items.len());
                let mut tampered = content.clone();
                tampered.tamper = Some((invoice, item, rng.i64(1..=5_000)));
                step(Change::Mismatch, Shape::Mismatch, render(po_id, &po_number, &tampered))
            } else if roll < 0.84 {
                let mut other = content.clone();
                other.tamper = None;
                if other.invoices.len() < 2 {
                    other.invoices.push(random_invoice(&mut rng));
                }
                let last = other.invoices.len() - 1;
                other.invoices[last].other_vendor = true;
                step(Change::MultiVendor, Shape::MultiVendor, render(po_id, &po_number, &other))
            } else if roll < 0.93 {
                step(Change::Invalid, Shape::Refused, invalid_body(&mut rng, po_id, &po_number))
            } else {
                step(Change::WrongPassword, Shape::Refused, render(po_id, &po_number, &content))
            };
            if next.shape != Shape::Refused {
                sent.push((next.body.clone(), next.shape));
            }
            steps.push(next);
        }
        total += steps.len();
        pos.push(PoScript { po_id, po_number, appzen_refuses, steps });
    }
    assign_phases(&mut pos, &mut rng);
    Traffic { pos }
}

/// About half the webhooks before the redrive and half after: whole POs alternate between the phases, and a
/// third of the first phase's POs with several steps send their later steps after the redrive (so a version
/// parked in the first phase meets newer ones of its PO).
fn assign_phases(pos: &mut [PoScript], rng: &mut fastrand::Rng) {
    let total: usize = pos.iter().map(|p| p.steps.len()).sum();
    let mut first = 0;
    for po in pos.iter_mut() {
        if first * 2 < total {
            let split =
                if po.steps.len() >= 2 && rng.f64() < 0.34 { rng.usize(1..po.steps.len()) } else { po.steps.len() };
            for (i, step) in po.steps.iter_mut().enumerate() {
                step.phase = if i < split { 1 } else { 2 };
            }
            first += split;
        } else {
            po.steps.iter_mut().for_each(|s| s.phase = 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64) -> TrafficOptions {
        TrafficOptions { seed, webhooks: 400, appzen_refuses: 0.05, first_po_id: 700_000 }
    }

    #[test]
    fn the_same_seed_draws_the_same_bytes() {
        let (a, b) = (generate(&options(7)), generate(&options(7)));
        let bodies =
            |t: &Traffic| t.pos.iter().flat_map(|p| p.steps.iter().map(|s| s.sha256.clone())).collect::<Vec<_>>();
        assert_eq!(bodies(&a), bodies(&b));
        assert_ne!(bodies(&a), bodies(&generate(&options(8))));
        assert!(a.webhooks() >= 400);
        let first = a.in_phase(1) as f64 / a.webhooks() as f64;
        assert!((0.4..=0.6).contains(&first), "{first}");
    }

    #[test]
    fn the_failing_po_is_one_of_the_first_with_clean_versions_before_the_redrive() {
        for seed in [7, 11, 12] {
            let traffic = generate(&options(seed));
            let po = traffic.failing_po(seed, 8).expect("a failing PO");
            assert!(traffic.pos.iter().take(8).any(|p| p.po_id == po.po_id));
            assert!(!po.appzen_refuses);
            assert!(po.steps.iter().any(|s| s.phase == 1 && s.shape == Shape::Clean));
            assert_eq!(traffic.failing_po(seed, 8).map(|p| p.po_id), Some(po.po_id), "the same seed, the same PO");
        }
    }

    #[test]
    fn every_shape_parses_and_reconciles_as_intended() {
        let traffic = generate(&options(11));
        let mut seen = std::collections::HashSet::new();
        for po in &traffic.pos {
            for step in &po.steps {
                seen.insert(step.change);
                let parsed = po_sync::komet::parse_webhook(&step.body);
                match (step.change, step.shape) {
                    (Change::Invalid, _) => assert!(parsed.is_err(), "{}", String::from_utf8_lossy(&step.body)),
                    (_, shape) => {
                        let po = parsed.unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&step.body)));
                        let report = po_sync::reconcile::reconcile(&po, po_sync::reconcile::Tolerance::CENT);
                        let adds_up = report.discrepancies.is_empty();
                        assert_eq!(
                            adds_up,
                            shape != Shape::Mismatch,
                            "{:?}: {}",
                            step.change,
                            String::from_utf8_lossy(&step.body)
                        );
                    }
                }
            }
        }
        for change in [
            Change::First,
            Change::Amounts,
            Change::Resend,
            Change::Revert,
            Change::Mismatch,
            Change::MultiVendor,
            Change::Invalid,
            Change::WrongPassword,
        ] {
            assert!(seen.contains(&change), "{change:?} never drawn");
        }
    }
}
