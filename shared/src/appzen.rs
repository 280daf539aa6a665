//! AppZen's purchase-order upsert (`POST /dictionary-data-services/purchase-order`): the request body, the
//! answers, and the pure mapping from a Komet purchase order to that body.
//!
//! The mapping table lives in the README ("Komet → AppZen mapping"); keep the two in step.

use crate::komet::{CompactString, PurchaseOrder, Vendor};
use crate::money;
use arrayvec::ArrayString;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// AppZen's path for the upsert, appended to the configured base URL.
pub const UPSERT_PATH: &str = "/dictionary-data-services/purchase-order";

/// AppZen's own status vocabulary for an open purchase order (header and lines).
pub const APPZEN_STATUS_ISSUED: &str = "PO_ISSUED";

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency(String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, String> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(code.to_owned()))
        } else {
            Err(format!("expected a three-letter upper-case ISO 4217 code such as USD, found {code:?}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Currency {
    fn default() -> Self {
        Currency("USD".to_owned())
    }
}

/// Which Komet location field becomes AppZen's `entity_id` (`APPZEN_ENTITY_ID_FROM`, by its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum EntityIdSource {
    #[default]
    LocationCode,
    LocationId,
}

/// Which Komet vendor field becomes AppZen's `supplier_id` (`APPZEN_SUPPLIER_ID_FROM`, by its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum SupplierIdSource {
    /// `vendorAccountingCode`, falling back to the vendor `code` when Komet has none.
    #[default]
    AccountingCodeOrCode,
    AccountingCode,
    Code,
    Id,
}

/// How a Komet purchase order is turned into AppZen's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingSettings {
    pub currency: Currency,
    pub entity_id_source: EntityIdSource,
    pub supplier_id_source: SupplierIdSource,
    /// GL code of the extra line carrying an invoice's additional charges.
    pub additional_charges_gl_code: String,
    /// `purchase_order_status` / `purchase_order_line_status`, "as shown in your system".
    pub purchase_order_status: String,
}

impl Default for MappingSettings {
    fn default() -> Self {
        MappingSettings {
            currency: Currency::default(),
            entity_id_source: EntityIdSource::default(),
            supplier_id_source: SupplierIdSource::default(),
            additional_charges_gl_code: "ADDITIONAL_CHARGES".to_owned(),
            purchase_order_status: "Issued".to_owned(),
        }
    }
}

/// Text in AppZen's body: borrowed from the Komet PO or the settings (nearly all of it), or, when po-sync
/// computes it, held in place if short (a line id) or owned (an id written as text). Reads like a `&str`:
/// `as_str()`, `Deref`, `==`.
#[derive(Clone)]
pub struct Text<'a>(Repr<'a>);

#[derive(Clone)]
enum Repr<'a> {
    Borrowed(&'a str),
    /// Up to [`INLINE_TEXT`] bytes, in place: no allocation, and read back without a UTF-8 check.
    Inline(ArrayString<INLINE_TEXT>),
    Owned(String),
}

/// Room for a line id such as `05-P123456-0001-charges` without an allocation.
const INLINE_TEXT: usize = 23;

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Borrowed(text) => text,
            Repr::Inline(text) => text,
            Repr::Owned(text) => text,
        }
    }

    /// `parts` one after the other: in place when they fit, else in one allocation of the final size.
    fn concat(parts: &[&str]) -> Text<'static> {
        let mut inline = ArrayString::new();
        if parts.iter().try_for_each(|part| inline.try_push_str(part)).is_ok() {
            Text(Repr::Inline(inline))
        } else {
            Text(Repr::Owned(parts.concat()))
        }
    }
}

impl Default for Text<'_> {
    fn default() -> Self {
        Text(Repr::Borrowed(""))
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Text(Repr::Borrowed(text))
    }
}

impl From<String> for Text<'_> {
    fn from(text: String) -> Self {
        Text(Repr::Owned(text))
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text<'_> {}

impl std::hash::Hash for Text<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Text<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text<'_> {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

/// `{ "amount": 12.5, "currency": "USD" }`, AppZen's shape for every money field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Money<'a> {
    #[serde(with = "money::json_number")]
    pub amount: Decimal,
    pub currency: Text<'a>,
}

/// AppZen's upsert body. It borrows its text from the Komet PO and the [`MappingSettings`] it was mapped from,
/// so mapping copies no string but the PO number and the line ids; [`PurchaseOrderBody::to_json`] writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurchaseOrderBody<'a> {
    pub purchase_order_number: String,
    pub entity_id: Text<'a>,
    pub supplier_id: Text<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_order_date: Option<NaiveDate>,
    pub total_amount: Money<'a>,
    pub purchase_order_status: Text<'a>,
    pub appzen_purchase_order_status: Text<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_to_location: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_to_location_id: Option<Text<'a>>,
    pub custom_json: HeaderCustomJson<'a>,
    pub purchase_order_lines: Vec<PurchaseOrderLine<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurchaseOrderLine<'a> {
    pub po_line_id: Text<'a>,
    pub line_number: u32,
    pub gl_code: Text<'a>,
    pub line_description: LineDescription<'a>,
    pub quantity: u32,
    pub unit_price: Money<'a>,
    pub amount: Money<'a>,
    pub uninvoiced_amount: Money<'a>,
    pub purchase_order_line_status: Text<'a>,
    pub appzen_purchase_order_line_status: Text<'a>,
    pub custom_json: LineCustomJson<'a>,
}

/// A line's description, `Invoice 01-P002271 item 2` or `Invoice 01-P002271 additional charges`: kept as its
/// parts and written out where it is needed (`Display`, the JSON), never allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineDescription<'a> {
    pub invoice_number: &'a str,
    /// 1-based position of the item within its invoice; `None` for the additional-charges line.
    pub item_position: Option<u32>,
}

impl fmt::Display for LineDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item_position {
            Some(position) => write!(f, "Invoice {} item {position}", self.invoice_number),
            None => write!(f, "Invoice {} additional charges", self.invoice_number),
        }
    }
}

impl Serialize for LineDescription<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Komet's identities and figures kept alongside the PO in AppZen, for auditors to trace back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderCustomJson<'a> {
    pub komet_po_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_location_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_vendor_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_vendor_name: Option<Text<'a>>,
    #[serde(with = "money::json_number::option", skip_serializing_if = "Option::is_none")]
    pub komet_sub_total: Option<Decimal>,
    pub komet_invoices: Vec<InvoiceCustomJson<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceCustomJson<'a> {
    pub invoice_number: Text<'a>,
    #[serde(with = "money::json_number")]
    pub invoice_amount: Decimal,
    #[serde(with = "money::json_number")]
    pub total_additional_charges: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Text<'a>>,
    /// Where po-sync keeps the PDF (`s3://bucket/key`), next to Komet's link, which dies after six hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_file: Option<String>,
    /// Why po-sync could not keep the PDF (an expired link, not a PDF, a host off the allow-list…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_incomplete: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineCustomJson<'a> {
    pub komet_invoice_number: Text<'a>,
    /// 1-based position of the item within its invoice; absent on an additional-charges line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_item_position: Option<u32>,
}

/// Why a Komet PO cannot become one AppZen PO. A person must fix it in Komet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the invoices name {} different vendors ({}); one AppZen purchase order has one supplier", .0.len(), .0.join(", "))]
    SeveralVendors(Vec<String>),
    #[error("{0} is missing; AppZen requires it")]
    Missing(String),
    #[error("invoice number {0} appears more than once; its lines would share po_line_ids")]
    DuplicateInvoice(String),
    #[error("the purchase order has no items; AppZen requires at least one line")]
    NoLines,
}

/// Up to this many invoices, duplicates are found by comparing each with those before it (no allocation);
/// beyond, with a hash set.
const LINEAR_DUPLICATE_SCAN: usize = 32;

/// Maps a Komet PO to AppZen's upsert body. Pure: the same PO and settings always give the same body, which
/// borrows its text from both.
pub fn map_purchase_order<'a>(
    po: &'a PurchaseOrder,
    settings: &'a MappingSettings,
) -> Result<PurchaseOrderBody<'a>, MappingError> {
    let currency = Text::from(settings.currency.as_str());
    let money = |amount: Decimal| Money { amount, currency: currency.clone() };
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
    let mut seen_invoices = std::collections::HashSet::with_capacity(match invoices.len() {
        few if few <= LINEAR_DUPLICATE_SCAN => 0,
        many => many,
    });
    for (i, invoice) in invoices.iter().enumerate() {
        let number = invoice.invoice_number.as_str();
        let duplicate = if invoices.len() <= LINEAR_DUPLICATE_SCAN {
            invoices[..i].iter().any(|earlier| earlier.invoice_number == number)
        } else {
            !seen_invoices.insert(number)
        };
        if duplicate {
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
                custom_json: LineCustomJson { komet_invoice_number: Text::from(number), komet_item_position: None },
            });
        }
    }
    if lines.is_empty() {
        return Err(MappingError::NoLines);
    }

    Ok(PurchaseOrderBody {
        purchase_order_number: po.po_number.as_str().to_owned(),
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
/// borrow, held in place (no allocation) unless the invoice number is unusually long.
fn line_id(invoice_number: &str, item_position: Option<u32>) -> Text<'static> {
    match item_position {
        Some(position) => Text::concat(&[invoice_number, "-", itoa::Buffer::new().format(position)]),
        None => Text::concat(&[invoice_number, "-charges"]),
    }
}

/// The one vendor all invoices name (by id, else by code). Several vendors cannot be one AppZen PO.
fn single_vendor(po: &PurchaseOrder) -> Result<&Vendor, MappingError> {
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
    fn non_empty(value: &Option<CompactString>) -> Option<Text<'_>> {
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

impl PurchaseOrderBody<'_> {
    /// Notes, invoice by invoice, where po-sync keeps each PDF or why it could not.
    pub fn note_archive(&mut self, archives: &[crate::archive::InvoiceArchive]) {
        for invoice in &mut self.custom_json.komet_invoices {
            if let Some(archive) = archives.iter().find(|a| a.invoice_number == *invoice.invoice_number) {
                match &archive.outcome {
                    Ok(pdf) => invoice.archived_file = Some(pdf.location()),
                    Err(why) => invoice.archive_incomplete = Some(why.to_string()),
                }
            }
        }
    }

    /// The exact JSON sent to AppZen; amounts are JSON numbers with the digits Komet sent.
    ///
    /// Written straight into the one buffer that becomes the request body: the same bytes as
    /// `serde_json::to_string(self)` (the derived `Serialize`; a test holds the two together), without its
    /// per-key escaping and with amounts printed from their digits. It never fails; the `Result` is the
    /// serde_json-shaped signature callers already handle.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        // The body is ~6x its Komet input (~460 bytes per line): reserving it up front saves ~20 doublings
        // and their copies on a large PO. Over-reserving is free: untouched capacity is never paged in.
        let estimate = 1024 + 512 * self.purchase_order_lines.len() + 256 * self.custom_json.komet_invoices.len();
        let mut out = String::with_capacity(estimate);
        self.write_json(&mut out);
        Ok(out)
    }

    /// Appends the body's JSON (see [`PurchaseOrderBody::to_json`]) to `out`.
    pub fn write_json(&self, out: &mut String) {
        use json_out::{push_date, push_money, push_str, push_u64};
        out.push_str("{\"purchase_order_number\":");
        push_str(out, &self.purchase_order_number);
        out.push_str(",\"entity_id\":");
        push_str(out, &self.entity_id);
        out.push_str(",\"supplier_id\":");
        push_str(out, &self.supplier_id);
        for (key, date) in [
            (",\"start_date\":", self.start_date),
            (",\"end_date\":", self.end_date),
            (",\"purchase_order_date\":", self.purchase_order_date),
        ] {
            if let Some(date) = date {
                out.push_str(key);
                push_date(out, date);
            }
        }
        out.push_str(",\"total_amount\":");
        push_money(out, &self.total_amount);
        out.push_str(",\"purchase_order_status\":");
        push_str(out, &self.purchase_order_status);
        out.push_str(",\"appzen_purchase_order_status\":");
        push_str(out, &self.appzen_purchase_order_status);
        if let Some(location) = &self.ship_to_location {
            out.push_str(",\"ship_to_location\":");
            push_str(out, location);
        }
        if let Some(location_id) = &self.ship_to_location_id {
            out.push_str(",\"ship_to_location_id\":");
            push_str(out, location_id);
        }

        let custom = &self.custom_json;
        out.push_str(",\"custom_json\":{\"komet_po_id\":");
        push_u64(out, custom.komet_po_id);
        if let Some(id) = custom.komet_location_id {
            out.push_str(",\"komet_location_id\":");
            push_u64(out, id);
        }
        if let Some(id) = custom.komet_vendor_id {
            out.push_str(",\"komet_vendor_id\":");
            push_u64(out, id);
        }
        if let Some(name) = &custom.komet_vendor_name {
            out.push_str(",\"komet_vendor_name\":");
            push_str(out, name);
        }
        if let Some(sub_total) = &custom.komet_sub_total {
            out.push_str(",\"komet_sub_total\":");
            json_out::push_decimal(out, sub_total);
        }
        out.push_str(",\"komet_invoices\":[");
        for (i, invoice) in custom.komet_invoices.iter().enumerate() {
            out.push_str(if i == 0 { "{\"invoice_number\":" } else { ",{\"invoice_number\":" });
            push_str(out, &invoice.invoice_number);
            out.push_str(",\"invoice_amount\":");
            json_out::push_decimal(out, &invoice.invoice_amount);
            out.push_str(",\"total_additional_charges\":");
            json_out::push_decimal(out, &invoice.total_additional_charges);
            if let Some(file) = &invoice.file {
                out.push_str(",\"file\":");
                push_str(out, file);
            }
            if let Some(archived) = &invoice.archived_file {
                out.push_str(",\"archived_file\":");
                push_str(out, archived);
            }
            if let Some(why) = &invoice.archive_incomplete {
                out.push_str(",\"archive_incomplete\":");
                push_str(out, why);
            }
            out.push('}');
        }
        out.push_str("]}");

        out.push_str(",\"purchase_order_lines\":[");
        // Every line repeats the same few texts (its invoice's number, the currency, the statuses): the
        // invoice number is checked for escapes once per invoice, and the JSON around the currency and around
        // the statuses is written once per body and copied for each line.
        let mut invoice = json_out::Repeated::default();
        let mut currency = json_out::Piece::default();
        let mut statuses = json_out::Piece::default();
        for (i, line) in self.purchase_order_lines.iter().enumerate() {
            out.push_str(if i == 0 { "{\"po_line_id\":" } else { ",{\"po_line_id\":" });
            push_str(out, &line.po_line_id);
            out.push_str(",\"line_number\":");
            push_u64(out, u64::from(line.line_number));
            out.push_str(",\"gl_code\":");
            push_str(out, &line.gl_code);
            out.push_str(",\"line_description\":\"Invoice ");
            invoice.push_escaped(out, line.line_description.invoice_number);
            match line.line_description.item_position {
                Some(position) => {
                    out.push_str(" item ");
                    push_u64(out, u64::from(position));
                }
                None => out.push_str(" additional charges"),
            }
            out.push_str("\",\"quantity\":");
            push_u64(out, u64::from(line.quantity));
            for (name, money) in [
                (",\"unit_price\":{\"amount\":", &line.unit_price),
                (",\"amount\":{\"amount\":", &line.amount),
                (",\"uninvoiced_amount\":{\"amount\":", &line.uninvoiced_amount),
            ] {
                out.push_str(name);
                json_out::push_decimal(out, &money.amount);
                currency.push(out, [&money.currency, ""], |piece| {
                    piece.push_str(",\"currency\":");
                    push_str(piece, &money.currency);
                    piece.push('}');
                });
            }
            let (status, appzen_status) = (&line.purchase_order_line_status, &line.appzen_purchase_order_line_status);
            statuses.push(out, [status, appzen_status], |piece| {
                piece.push_str(",\"purchase_order_line_status\":");
                push_str(piece, status);
                piece.push_str(",\"appzen_purchase_order_line_status\":");
                push_str(piece, appzen_status);
                piece.push_str(",\"custom_json\":{\"komet_invoice_number\":");
            });
            invoice.push_str(out, &line.custom_json.komet_invoice_number);
            if let Some(position) = line.custom_json.komet_item_position {
                out.push_str(",\"komet_item_position\":");
                push_u64(out, u64::from(position));
            }
            out.push_str("}}");
        }
        out.push_str("]}");
    }
}

/// The pieces of JSON [`PurchaseOrderBody::write_json`] writes, each exactly as serde_json writes it.
mod json_out {
    use super::Money;
    pub use crate::json_out::*;

    pub fn push_money(out: &mut String, money: &Money<'_>) {
        out.push_str("{\"amount\":");
        push_decimal(out, &money.amount);
        out.push_str(",\"currency\":");
        push_str(out, &money.currency);
        out.push('}');
    }

    /// JSON that depends only on texts every line repeats (the currency, the statuses): rendered when they
    /// change, which is once per body, and copied in one piece for every line. While the body is borrowed for
    /// writing, nothing it refers to can change, so texts at the same addresses with the same lengths are the
    /// same texts.
    #[derive(Default)]
    pub struct Piece {
        texts: Option<[(usize, usize); 2]>,
        json: String,
    }

    impl Piece {
        pub fn push(&mut self, out: &mut String, texts: [&str; 2], render: impl FnOnce(&mut String)) {
            let key = texts.map(|text| (text.as_ptr() as usize, text.len()));
            if self.texts != Some(key) {
                self.json.clear();
                // Room for the statuses' piece, so rendering it allocates once.
                self.json.reserve(160);
                render(&mut self.json);
                self.texts = Some(key);
            }
            out.push_str(&self.json);
        }
    }

    /// One field's text as the last line had it, when it needed no escape: the lines repeat it (a status, the
    /// currency, their invoice's number), so it is checked once, not once per line. While the body is borrowed
    /// for writing, nothing it refers to can change, so a text at the same address with the same length is the
    /// same text.
    #[derive(Default)]
    pub struct Repeated {
        plain: Option<(usize, usize)>,
    }

    impl Repeated {
        pub fn push_escaped(&mut self, out: &mut String, text: &str) {
            let key = (text.as_ptr() as usize, text.len());
            if self.plain == Some(key) {
                out.push_str(text);
                return;
            }
            let before = out.len();
            crate::json_out::push_escaped(out, text);
            self.plain = (out.len() - before == text.len()).then_some(key);
        }

        pub fn push_str(&mut self, out: &mut String, text: &str) {
            out.push('"');
            self.push_escaped(out, text);
            out.push('"');
        }
    }
}

/// AppZen's success answer: `{"uuid": "...", "status": "CREATED" | "UPDATED"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertResponse {
    pub uuid: String,
    pub status: String,
}

/// AppZen's error answer (`timestamp`, `status`, `error`, `message`); every field optional because an
/// error can also come from a proxy in front of AppZen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default, deserialize_with = "lenient_status")]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

fn lenient_status<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let raw = <Option<&RawValue>>::deserialize(deserializer)?;
    Ok(raw.and_then(|raw| raw.get().trim_matches('"').parse().ok()))
}

impl ErrorResponse {
    /// Reads whatever AppZen (or a proxy) answered; a body that is not AppZen's JSON becomes its message.
    pub fn from_body(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|_| ErrorResponse {
            message: Some(String::from_utf8_lossy(&body[..body.len().min(500)]).trim().to_owned())
                .filter(|m| !m.is_empty()),
            ..ErrorResponse::default()
        })
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.message) {
            (Some(error), Some(message)) => write!(f, "{error}: {message}"),
            (None, Some(message)) => f.write_str(message),
            (Some(error), None) => f.write_str(error),
            (None, None) => f.write_str("no message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::komet::parse_webhook;
    use proptest::prelude::*;

    const FIXTURES: [&[u8]; 3] = [
        include_bytes!("../tests/fixtures/komet-clean-po.json"),
        include_bytes!("../tests/fixtures/komet-doc-sample.json"),
        include_bytes!("../tests/fixtures/komet-optional-fields-absent.json"),
    ];

    fn decimal(text: &str) -> Decimal {
        money::decimal(text).unwrap()
    }

    fn serde_json_of(body: &PurchaseOrderBody<'_>) -> String {
        serde_json::to_string(body).unwrap()
    }

    #[test]
    fn to_json_writes_exactly_what_the_derived_serialize_writes_for_every_fixture_and_setting() {
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
                assert_eq!(body.to_json().unwrap(), serde_json_of(&body));
            }
        }
    }

    /// Every field, every option present and absent, text that needs every kind of escape, amounts and dates
    /// at their limits.
    #[test]
    fn to_json_matches_serde_json_on_awkward_bodies() {
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
            let money = |amount| Money { amount, currency: text("USD") };
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
            assert_eq!(body.to_json().unwrap(), serde_json_of(&body), "case {i}");
        }
    }

    /// The currency and the statuses are rendered once and copied while they stay the same texts; lines that
    /// change them (to other text, to the same text stored elsewhere, and back) must still read as serde's.
    #[test]
    fn to_json_matches_serde_json_when_lines_change_currency_or_status() {
        let (po, settings) = (parse_webhook(FIXTURES[0]).unwrap(), MappingSettings::default());
        let mut body = map_purchase_order(&po, &settings).unwrap();
        let owned = |text: &str| Text::from(text.to_owned());
        let texts: [fn(&str) -> Text<'static>; 3] =
            [|_| Text::from("USD"), |_| Text::from("E\"UR"), |_| Text::concat(&["US", "D"])];
        let lines = body.purchase_order_lines.clone();
        body.purchase_order_lines = (0..9)
            .map(|n| {
                let mut line = lines[n % lines.len()].clone();
                line.unit_price.currency = texts[n % 3]("");
                line.amount.currency = if n % 2 == 0 { owned("USD") } else { texts[(n + 1) % 3]("") };
                line.purchase_order_line_status = if n % 4 == 0 { owned("Issued") } else { Text::from("Is\nsued") };
                line.appzen_purchase_order_line_status = texts[n % 2]("");
                line
            })
            .collect();
        assert_eq!(body.to_json().unwrap(), serde_json_of(&body));
    }

    #[test]
    fn line_ids_read_the_same_held_in_place_or_allocated() {
        let long = "01-P002271-an-unusually-long-invoice-number";
        for (number, position, expected) in [
            ("01-P002271", Some(2), "01-P002271-2".to_owned()),
            ("05-P123456-0001", None, "05-P123456-0001-charges".to_owned()),
            (long, Some(4_000_000_000), format!("{long}-4000000000")),
            (long, None, format!("{long}-charges")),
            ("", Some(0), "-0".to_owned()),
        ] {
            let id = line_id(number, position);
            assert_eq!(id.as_str(), expected);
            assert_eq!(id, Text::from(expected.as_str()));
            assert_eq!(id, Text::from(expected.clone()));
            assert_eq!(format!("{id:?}"), format!("{expected:?}"));
        }
    }

    #[test]
    fn the_line_description_reads_as_before() {
        let item = LineDescription { invoice_number: "01-P002271", item_position: Some(2) };
        assert_eq!(item.to_string(), "Invoice 01-P002271 item 2");
        let charges = LineDescription { invoice_number: "01-P002271", item_position: None };
        assert_eq!(charges.to_string(), "Invoice 01-P002271 additional charges");
    }

    proptest! {
        #[test]
        fn any_text_is_escaped_as_serde_json_escapes_it(chars in proptest::collection::vec(any::<char>(), 0..48)) {
            let text: String = chars.into_iter().collect();
            let mut out = String::new();
            json_out::push_str(&mut out, &text);
            prop_assert_eq!(out, serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn any_decimal_is_written_with_its_display_digits(
            lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(), negative in any::<bool>(), scale in 0u32..=28,
            small in any::<bool>(),
        ) {
            // Half the cases with a mantissa below 2^64, the path nearly every amount takes.
            let (mid, hi) = if small { (mid % 1000, 0) } else { (mid, hi) };
            let amount = Decimal::from_parts(lo, mid, hi, negative, scale);
            let mut out = String::new();
            json_out::push_decimal(&mut out, &amount);
            prop_assert_eq!(out, amount.to_string());
        }

        #[test]
        fn eight_bytes_need_an_escape_exactly_when_one_of_them_does(
            bytes in any::<[u8; 8]>(),
            pick in any::<[bool; 8]>(),
        ) {
            // Half the bytes drawn near the characters that matter, so both answers come up often.
            let near = [0x00, 0x1f, 0x20, 0x21, b'"', 0x23, b'\\', 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff];
            let word: [u8; 8] =
                std::array::from_fn(|i| if pick[i] { near[usize::from(bytes[i]) % near.len()] } else { bytes[i] });
            let expected = word.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(json_out::needs_escape(u64::from_le_bytes(word)), expected);
        }

        #[test]
        fn any_whole_number_is_written_as_display_writes_it(n in any::<u64>()) {
            let mut out = String::new();
            json_out::push_u64(&mut out, n);
            prop_assert_eq!(out, n.to_string());
        }
    }
}
