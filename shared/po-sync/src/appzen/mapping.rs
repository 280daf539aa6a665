//! The pure mapping from a Komet purchase order to AppZen's body (the table is in docs/payload.md).

use super::{APPZEN_STATUS_ISSUED, EntityIdSource, MappingSettings, SupplierIdSource};
use super::{HeaderCustomJson, InvoiceCustomJson, LineCustomJson, LineDescription, Money, PurchaseOrderBody};
use super::{PurchaseOrderLine, Text};
use crate::komet::{PurchaseOrder, Vendor};
use rust_decimal::Decimal;

/// Why a Komet PO cannot become one AppZen PO. A person must fix it in Komet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the invoices name {} different vendors ({}); one AppZen purchase order has one supplier", .0.len(), listed(.0))]
    SeveralVendors(Vec<String>),
    #[error("{0} is missing; AppZen requires it")]
    Missing(String),
    #[error("invoice number {0} appears more than once; its lines would share po_line_ids")]
    DuplicateInvoice(String),
    #[error("the purchase order has no items; AppZen requires at least one line")]
    NoLines,
    /// Another destination's problem, in its own words.
    #[error("{0}")]
    Unmapped(String),
}

/// Maps a Komet PO to AppZen's upsert body. Pure: the same PO and settings always give the same body, which
/// borrows its text from both.
pub fn map_purchase_order<'a>(
    po: &'a PurchaseOrder,
    settings: &'a MappingSettings,
) -> Result<PurchaseOrderBody<'a>, MappingError> {
    let currency = settings.currency.as_str();
    let money = |amount: Decimal| Money { amount, currency };
    let status = Text::from(settings.purchase_order_status.as_str());

    let location = po.location.as_ref();
    let entity_id = match settings.entity_id_source {
        EntityIdSource::LocationCode => location.and_then(|l| l.code.as_deref()).map(Text::from).ok_or("location.code"),
        EntityIdSource::LocationId => {
            location.and_then(|l| l.id).map(|id| Text::from(id.to_string())).ok_or("location.id")
        }
    }
    .map_err(|field| MappingError::Missing(field.to_owned()))?;

    let vendor = single_vendor(po)?;
    let supplier_id = supplier_id(vendor, settings.supplier_id_source)?;

    let invoices = &po.vendor_invoices;
    let mut lines = Vec::with_capacity(po.items().count() + invoices.len());
    let mut seen_invoices = std::collections::HashSet::with_capacity(invoices.len());
    for (i, invoice) in invoices.iter().enumerate() {
        let number = invoice.invoice_number.as_str();
        if !seen_invoices.insert(number) {
            return Err(MappingError::DuplicateInvoice(number.to_owned()));
        }
        for (j, item) in invoice.purchase_order_items.iter().enumerate() {
            let position = j as u32 + 1;
            let gl_code = item.category_procurement_accounting_code.as_deref().ok_or_else(|| {
                MappingError::Missing(format!(
                    "vendorInvoices[{i}].purchaseOrderItems[{j}].categoryProcurementAccountingCode"
                ))
            })?;
            lines.push(PurchaseOrderLine {
                po_line_id: line_id(number, Some(position)),
                line_number: lines.len() as u32 + 1,
                gl_code: Text::from(gl_code),
                line_description: LineDescription { invoice_number: number, item_position: Some(position) },
                // Komet sends a cost per item line, not units: one unit at the line's cost (AppZen: "1 if missing").
                quantity: 1,
                unit_price: money(item.total_cost),
                amount: money(item.total_cost),
                // The PO is built from its invoices, so nothing on it is left to invoice.
                uninvoiced_amount: money(Decimal::ZERO),
                purchase_order_line_status: status.clone(),
                appzen_purchase_order_line_status: Text::from(APPZEN_STATUS_ISSUED),
                cancel_flag: None,
                cancel_date: None,
                cancel_reason: None,
                custom_json: LineCustomJson {
                    komet_invoice_number: Text::from(number),
                    komet_item_position: Some(position),
                },
            });
        }
        if !invoice.total_additional_charges.is_zero() {
            lines.push(PurchaseOrderLine {
                po_line_id: line_id(number, None),
                line_number: lines.len() as u32 + 1,
                gl_code: Text::from(settings.additional_charges_gl_code.as_str()),
                line_description: LineDescription { invoice_number: number, item_position: None },
                quantity: 1,
                unit_price: money(invoice.total_additional_charges),
                amount: money(invoice.total_additional_charges),
                uninvoiced_amount: money(Decimal::ZERO),
                purchase_order_line_status: status.clone(),
                appzen_purchase_order_line_status: Text::from(APPZEN_STATUS_ISSUED),
                cancel_flag: None,
                cancel_date: None,
                cancel_reason: None,
                custom_json: LineCustomJson { komet_invoice_number: Text::from(number), komet_item_position: None },
            });
        }
    }
    if lines.is_empty() {
        return Err(MappingError::NoLines);
    }

    Ok(PurchaseOrderBody {
        purchase_order_number: po.po_number.clone(),
        entity_id,
        supplier_id,
        start_date: po.ship_date,
        end_date: po.arrival_date,
        purchase_order_date: po.ship_date,
        total_amount: money(po.total),
        purchase_order_status: status.clone(),
        appzen_purchase_order_status: Text::from(APPZEN_STATUS_ISSUED),
        ship_to_location: location.and_then(|l| l.name.as_deref()).map(Text::from),
        ship_to_location_id: location.and_then(|l| match (&l.code, l.id) {
            (Some(code), _) => Some(Text::from(code.as_str())),
            (None, Some(id)) => Some(Text::from(id.to_string())),
            (None, None) => None,
        }),
        custom_json: HeaderCustomJson {
            komet_po_id: po.id,
            komet_location_id: location.and_then(|l| l.id),
            komet_vendor_id: vendor.id,
            komet_vendor_name: vendor.name.as_deref().map(Text::from),
            komet_sub_total: po.sub_total,
            komet_invoices: invoices
                .iter()
                .map(|invoice| InvoiceCustomJson {
                    invoice_number: Text::from(invoice.invoice_number.as_str()),
                    invoice_amount: invoice.invoice_amount,
                    total_additional_charges: invoice.total_additional_charges,
                    file: invoice.file.as_deref().map(Text::from),
                    archived_file: None,
                    archive_incomplete: None,
                })
                .collect(),
        },
        purchase_order_lines: lines,
    })
}

/// `01-P002271-2` for an item, `01-P002271-charges` for the additional charges: the one text a line does not
/// borrow.
fn line_id(invoice_number: &str, item_position: Option<u32>) -> Text<'static> {
    match item_position {
        Some(position) => Text::Owned(format!("{invoice_number}-{position}")),
        None => Text::Owned(format!("{invoice_number}-charges")),
    }
}

/// The one vendor all invoices name (by id, else by code). Several vendors cannot be one AppZen PO.
pub(crate) fn single_vendor(po: &PurchaseOrder) -> Result<&Vendor, MappingError> {
    let mut named = po.vendor_invoices.iter().filter_map(|invoice| invoice.vendor.as_ref());
    let Some(first) = named.next() else {
        return Err(MappingError::Missing("vendorInvoices[].vendor".to_owned()));
    };
    if named.clone().all(|vendor| same_vendor(first, vendor)) {
        return Ok(first);
    }
    // Only for the error: each different vendor once, in the order the invoices name them.
    let mut vendors: Vec<&Vendor> = vec![first];
    for vendor in named {
        if !vendors.iter().any(|known| same_vendor(known, vendor)) {
            vendors.push(vendor);
        }
    }
    Err(MappingError::SeveralVendors(vendors.iter().map(|v| vendor_label(v)).collect()))
}

/// The first vendors' labels, and how many more (a PO can name a thousand).
fn listed(vendors: &[String]) -> String {
    let shown = vendors.iter().take(crate::limits::LISTED_VENDORS).map(String::as_str).collect::<Vec<_>>().join(", ");
    match vendors.len().saturating_sub(crate::limits::LISTED_VENDORS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn same_vendor(a: &Vendor, b: &Vendor) -> bool {
    match (a.id, b.id) {
        (Some(x), Some(y)) => x == y,
        _ => a.code == b.code && a.vendor_accounting_code == b.vendor_accounting_code,
    }
}

fn vendor_label(vendor: &Vendor) -> String {
    let name = vendor.name.as_deref().or(vendor.code.as_deref()).unwrap_or("unnamed vendor");
    match vendor.id {
        Some(id) => format!("{name} (id {id})"),
        None => name.to_owned(),
    }
}

fn supplier_id(vendor: &Vendor, source: SupplierIdSource) -> Result<Text<'_>, MappingError> {
    fn non_empty(value: &Option<String>) -> Option<Text<'_>> {
        value.as_deref().filter(|s| !s.trim().is_empty()).map(Text::from)
    }
    let found = match source {
        SupplierIdSource::AccountingCodeOrCode => {
            non_empty(&vendor.vendor_accounting_code).or_else(|| non_empty(&vendor.code))
        }
        SupplierIdSource::AccountingCode => non_empty(&vendor.vendor_accounting_code),
        SupplierIdSource::Code => non_empty(&vendor.code),
        SupplierIdSource::Id => vendor.id.map(|id| Text::from(id.to_string())),
    };
    found.ok_or_else(|| {
        MappingError::Missing(
            match source {
                SupplierIdSource::AccountingCodeOrCode => "vendor.vendorAccountingCode and vendor.code",
                SupplierIdSource::AccountingCode => "vendor.vendorAccountingCode",
                SupplierIdSource::Code => "vendor.code",
                SupplierIdSource::Id => "vendor.id",
            }
            .to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appzen::Currency;
    use crate::komet::parse_webhook;
    use crate::money;
    use chrono::NaiveDate;

    const FIXTURES: [&[u8]; 3] = [
        include_bytes!("../../tests/fixtures/komet-clean-po.json"),
        include_bytes!("../../tests/fixtures/komet-doc-sample.json"),
        include_bytes!("../../tests/fixtures/komet-optional-fields-absent.json"),
    ];

    fn decimal(text: &str) -> Decimal {
        money::decimal(text).unwrap()
    }

    /// The body as JSON, read back: a document, with each amount's exact text where `at` points.
    fn amount_text(json: &str, at: &[&str]) -> String {
        let document = crate::json::parse(json.as_bytes()).unwrap();
        let mut value = &document;
        for key in at {
            value = match (key.parse::<usize>(), value) {
                (Ok(index), crate::json::Value::Array(items)) => &items[index],
                _ => value.get(key).unwrap(),
            };
        }
        match value {
            crate::json::Value::Number(text) => (*text).to_owned(),
            other => panic!("{at:?} is not a number: {other:?}"),
        }
    }

    #[test]
    fn every_fixture_and_setting_writes_a_body_whose_amounts_are_komet_s_digits() {
        let settings = [
            MappingSettings::default(),
            MappingSettings {
                currency: Currency::parse("EUR").unwrap(),
                entity_id_source: EntityIdSource::LocationId,
                supplier_id_source: SupplierIdSource::Id,
                additional_charges_gl_code: "61\"00\\".to_owned(),
                purchase_order_status: "Issued\n(open)".to_owned(),
            },
        ];
        for fixture in FIXTURES {
            let po = parse_webhook(fixture).unwrap();
            for settings in &settings {
                let Ok(body) = map_purchase_order(&po, settings) else { continue };
                let json = body.to_json();
                assert_eq!(amount_text(&json, &["total_amount", "amount"]), po.total.to_string());
                let value: serde_json::Value = serde_json::from_str(&json).unwrap();
                assert_eq!(value["purchase_order_status"], settings.purchase_order_status.as_str());
                assert!(value["purchase_order_lines"][0]["gl_code"].as_str().is_some());
            }
        }
    }

    /// Every field, every option present and absent, text that needs every kind of escape, amounts and dates
    /// at their limits.
    #[test]
    fn awkward_bodies_read_back_with_every_text_and_amount_exact() {
        let awkward = "q\"b\\s/ \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f} é 🌹 \u{2028}";
        let amounts = [
            Decimal::ZERO,
            decimal("0.00"),
            decimal("60.0"),
            decimal("0.05"),
            decimal("1234.5678"),
            Decimal::new(1, 28),
            Decimal::new(-1, 28),
            Decimal::from_parts(0, 0, 0, true, 2),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_parts(u32::MAX, u32::MAX, 0, false, 5),
            Decimal::from_parts(0, 0, 1, false, 0),
        ];
        let dates = [
            NaiveDate::from_ymd_opt(2026, 2, 9),
            NaiveDate::from_ymd_opt(0, 1, 1),
            NaiveDate::from_ymd_opt(9999, 12, 31),
            NaiveDate::from_ymd_opt(10_000, 1, 1),
            NaiveDate::from_ymd_opt(-44, 3, 15),
            None,
        ];
        for (i, &amount) in amounts.iter().enumerate() {
            let text = |s: &'static str| Text::from(if i % 2 == 0 { s } else { awkward });
            let money = |amount| Money { amount, currency: if i % 2 == 0 { "USD" } else { awkward } };
            let line = |position: Option<u32>| PurchaseOrderLine {
                po_line_id: Text::from(format!("{awkward}-{i}")),
                line_number: if i == 3 { u32::MAX } else { i as u32 },
                gl_code: text("CGEN"),
                line_description: LineDescription {
                    invoice_number: if i % 3 == 0 { "" } else { awkward },
                    item_position: position,
                },
                quantity: i as u32,
                unit_price: money(amount),
                amount: money(-amount),
                uninvoiced_amount: money(Decimal::ZERO),
                purchase_order_line_status: text("Issued"),
                appzen_purchase_order_line_status: text(APPZEN_STATUS_ISSUED),
                cancel_flag: None,
                cancel_date: None,
                cancel_reason: None,
                custom_json: LineCustomJson { komet_invoice_number: text("01-P1"), komet_item_position: position },
            };
            let date = dates[i % dates.len()];
            let present = i % 2 == 1;
            let body = PurchaseOrderBody {
                purchase_order_number: awkward.to_owned(),
                entity_id: text(""),
                supplier_id: text("V-0042"),
                start_date: date,
                end_date: dates[(i + 1) % dates.len()],
                purchase_order_date: date,
                total_amount: money(amount),
                purchase_order_status: text("Issued"),
                appzen_purchase_order_status: text(APPZEN_STATUS_ISSUED),
                ship_to_location: present.then(|| text("Chicago")),
                ship_to_location_id: present.then(|| Text::from(i.to_string())),
                custom_json: HeaderCustomJson {
                    komet_po_id: if i == 0 { u64::MAX } else { i as u64 },
                    komet_location_id: present.then_some(0),
                    komet_vendor_id: present.then_some(u64::MAX),
                    komet_vendor_name: present.then(|| text("Miami L Vendor")),
                    komet_sub_total: present.then_some(amount),
                    komet_invoices: (0..i % 5)
                        .map(|n| InvoiceCustomJson {
                            invoice_number: text("01-P1"),
                            invoice_amount: amount,
                            total_additional_charges: Decimal::new(n as i64, 1),
                            file: (n == 1).then(|| text("https://files.kometsales.com/x.pdf?a=1&b=\"2\"")),
                            archived_file: (n == 2).then(|| "s3://b/invoices/1/01-P1/ab.pdf".to_owned()),
                            archive_incomplete: (n == 3).then(|| "the link has expired (HTTP 403)".to_owned()),
                        })
                        .collect(),
                },
                purchase_order_lines: (0..i % 4).map(|n| line((n % 2 == 0).then_some(n as u32 + 1))).collect(),
            };
            let json = body.to_json();
            assert_eq!(amount_text(&json, &["total_amount", "amount"]), amount.to_string(), "case {i}");
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["purchase_order_number"], awkward, "case {i}");
            assert_eq!(value["total_amount"]["currency"], money(amount).currency, "case {i}");
            for (n, line) in body.purchase_order_lines.iter().enumerate() {
                let at =
                    |field: &'static str| ["purchase_order_lines", &n.to_string(), field, "amount"].map(str::to_owned);
                let path = at("amount");
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                assert_eq!(amount_text(&json, &path), line.amount.amount.to_string(), "case {i} line {n}");
                assert_eq!(value["purchase_order_lines"][n]["line_description"], line.line_description.to_string());
            }
        }
    }

    #[test]
    fn line_ids_name_the_invoice_and_the_item() {
        let long = "01-P002271-an-unusually-long-invoice-number";
        for (number, position, expected) in [
            ("01-P002271", Some(2), "01-P002271-2".to_owned()),
            ("05-P123456-0001", None, "05-P123456-0001-charges".to_owned()),
            (long, Some(4_000_000_000), format!("{long}-4000000000")),
            (long, None, format!("{long}-charges")),
            ("", Some(0), "-0".to_owned()),
        ] {
            assert_eq!(line_id(number, position), expected);
        }
    }

    #[test]
    fn the_line_description_reads_as_before() {
        let item = LineDescription { invoice_number: "01-P002271", item_position: Some(2) };
        assert_eq!(item.to_string(), "Invoice 01-P002271 item 2");
        let charges = LineDescription { invoice_number: "01-P002271", item_position: None };
        assert_eq!(charges.to_string(), "Invoice 01-P002271 additional charges");
    }
}
