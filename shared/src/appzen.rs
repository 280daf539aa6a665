//! AppZen's purchase-order upsert (`POST /dictionary-data-services/purchase-order`): the request body, the
//! answers, and the pure mapping from a Komet purchase order to that body.
//!
//! The mapping table lives in the README ("Komet → AppZen mapping"); keep the two in step.

use crate::komet::{PurchaseOrder, Vendor};
use crate::money;
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

/// Which Komet location field becomes AppZen's `entity_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntityIdSource {
    #[default]
    LocationCode,
    LocationId,
}

/// Which Komet vendor field becomes AppZen's `supplier_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// `{ "amount": 12.5, "currency": "USD" }`, AppZen's shape for every money field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "money::json_number")]
    pub amount: Decimal,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderBody {
    pub purchase_order_number: String,
    pub entity_id: String,
    pub supplier_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_order_date: Option<NaiveDate>,
    pub total_amount: Money,
    pub purchase_order_status: String,
    pub appzen_purchase_order_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_to_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_to_location_id: Option<String>,
    pub custom_json: HeaderCustomJson,
    pub purchase_order_lines: Vec<PurchaseOrderLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderLine {
    pub po_line_id: String,
    pub line_number: u32,
    pub gl_code: String,
    pub line_description: String,
    pub quantity: u32,
    pub unit_price: Money,
    pub amount: Money,
    pub uninvoiced_amount: Money,
    pub purchase_order_line_status: String,
    pub appzen_purchase_order_line_status: String,
    pub custom_json: LineCustomJson,
}

/// Komet's identities and figures kept alongside the PO in AppZen, for auditors to trace back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderCustomJson {
    pub komet_po_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_location_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_vendor_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub komet_vendor_name: Option<String>,
    #[serde(with = "money::json_number::option", skip_serializing_if = "Option::is_none", default)]
    pub komet_sub_total: Option<Decimal>,
    pub komet_invoices: Vec<InvoiceCustomJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceCustomJson {
    pub invoice_number: String,
    #[serde(with = "money::json_number")]
    pub invoice_amount: Decimal,
    #[serde(with = "money::json_number")]
    pub total_additional_charges: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineCustomJson {
    pub komet_invoice_number: String,
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

/// Maps a Komet PO to AppZen's upsert body. Pure: the same PO and settings always give the same body.
pub fn map_purchase_order(po: &PurchaseOrder, settings: &MappingSettings) -> Result<PurchaseOrderBody, MappingError> {
    let currency = settings.currency.as_str();
    let money = |amount: Decimal| Money { amount, currency: currency.to_owned() };

    let location = po.location.as_ref();
    let entity_id = match settings.entity_id_source {
        EntityIdSource::LocationCode => location.and_then(|l| l.code.clone()).ok_or("location.code"),
        EntityIdSource::LocationId => location.and_then(|l| l.id).map(|id| id.to_string()).ok_or("location.id"),
    }
    .map_err(|field| MappingError::Missing(field.to_owned()))?;

    let vendor = single_vendor(po)?;
    let supplier_id = supplier_id(vendor, settings.supplier_id_source)?;

    let mut lines = Vec::with_capacity(po.items().count() + po.vendor_invoices.len());
    let mut seen_invoices = std::collections::HashSet::with_capacity(po.vendor_invoices.len());
    for (i, invoice) in po.vendor_invoices.iter().enumerate() {
        if !seen_invoices.insert(invoice.invoice_number.as_str()) {
            return Err(MappingError::DuplicateInvoice(invoice.invoice_number.clone()));
        }
        for (j, item) in invoice.purchase_order_items.iter().enumerate() {
            let position = j as u32 + 1;
            let gl_code = item.category_procurement_accounting_code.clone().ok_or_else(|| {
                MappingError::Missing(format!(
                    "vendorInvoices[{i}].purchaseOrderItems[{j}].categoryProcurementAccountingCode"
                ))
            })?;
            lines.push(line(
                invoice_text("", &invoice.invoice_number, "-", Some(position)),
                lines.len() as u32 + 1,
                gl_code,
                invoice_text("Invoice ", &invoice.invoice_number, " item ", Some(position)),
                item.total_cost,
                &money,
                settings,
                LineCustomJson {
                    komet_invoice_number: invoice.invoice_number.clone(),
                    komet_item_position: Some(position),
                },
            ));
        }
        if !invoice.total_additional_charges.is_zero() {
            lines.push(line(
                invoice_text("", &invoice.invoice_number, "-charges", None),
                lines.len() as u32 + 1,
                settings.additional_charges_gl_code.clone(),
                invoice_text("Invoice ", &invoice.invoice_number, " additional charges", None),
                invoice.total_additional_charges,
                &money,
                settings,
                LineCustomJson { komet_invoice_number: invoice.invoice_number.clone(), komet_item_position: None },
            ));
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
        purchase_order_status: settings.purchase_order_status.clone(),
        appzen_purchase_order_status: APPZEN_STATUS_ISSUED.to_owned(),
        ship_to_location: location.and_then(|l| l.name.clone()),
        ship_to_location_id: location.and_then(|l| l.code.clone().or_else(|| l.id.map(|id| id.to_string()))),
        custom_json: HeaderCustomJson {
            komet_po_id: po.id,
            komet_location_id: location.and_then(|l| l.id),
            komet_vendor_id: vendor.id,
            komet_vendor_name: vendor.name.clone(),
            komet_sub_total: po.sub_total,
            komet_invoices: po
                .vendor_invoices
                .iter()
                .map(|invoice| InvoiceCustomJson {
                    invoice_number: invoice.invoice_number.clone(),
                    invoice_amount: invoice.invoice_amount,
                    total_additional_charges: invoice.total_additional_charges,
                    file: invoice.file.clone(),
                })
                .collect(),
        },
        purchase_order_lines: lines,
    })
}

/// `prefix` + `invoice_number` + `suffix` (+ `position`), allocated once at its final size: `format!` here
/// cost a grow-and-copy on each of a large PO's tens of thousands of lines.
fn invoice_text(prefix: &str, invoice_number: &str, suffix: &str, position: Option<u32>) -> String {
    let mut text = String::with_capacity(prefix.len() + invoice_number.len() + suffix.len() + 10);
    text.push_str(prefix);
    text.push_str(invoice_number);
    text.push_str(suffix);
    if let Some(position) = position {
        // Writing to a String cannot fail.
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{position}"));
    }
    text
}

#[allow(clippy::too_many_arguments)]
fn line(
    po_line_id: String,
    line_number: u32,
    gl_code: String,
    line_description: String,
    amount: Decimal,
    money: &impl Fn(Decimal) -> Money,
    settings: &MappingSettings,
    custom_json: LineCustomJson,
) -> PurchaseOrderLine {
    PurchaseOrderLine {
        po_line_id,
        line_number,
        gl_code,
        line_description,
        // Komet sends a cost per item line, not units: one unit at the line's cost (AppZen: "1 if missing").
        quantity: 1,
        unit_price: money(amount),
        amount: money(amount),
        // The PO is built from its invoices, so nothing on it is left to invoice.
        uninvoiced_amount: money(Decimal::ZERO),
        purchase_order_line_status: settings.purchase_order_status.clone(),
        appzen_purchase_order_line_status: APPZEN_STATUS_ISSUED.to_owned(),
        custom_json,
    }
}

/// The one vendor all invoices name (by id, else by code). Several vendors cannot be one AppZen PO.
fn single_vendor(po: &PurchaseOrder) -> Result<&Vendor, MappingError> {
    let mut vendors: Vec<&Vendor> = Vec::new();
    for invoice in &po.vendor_invoices {
        let Some(vendor) = invoice.vendor.as_ref() else {
            continue;
        };
        if !vendors.iter().any(|known| same_vendor(known, vendor)) {
            vendors.push(vendor);
        }
    }
    match vendors.as_slice() {
        [] => Err(MappingError::Missing("vendorInvoices[].vendor".to_owned())),
        [one] => Ok(one),
        many => Err(MappingError::SeveralVendors(many.iter().map(|v| vendor_label(v)).collect())),
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

fn supplier_id(vendor: &Vendor, source: SupplierIdSource) -> Result<String, MappingError> {
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let found = match source {
        SupplierIdSource::AccountingCodeOrCode => {
            non_empty(&vendor.vendor_accounting_code).or_else(|| non_empty(&vendor.code))
        }
        SupplierIdSource::AccountingCode => non_empty(&vendor.vendor_accounting_code),
        SupplierIdSource::Code => non_empty(&vendor.code),
        SupplierIdSource::Id => vendor.id.map(|id| id.to_string()),
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

impl PurchaseOrderBody {
    /// The exact JSON sent to AppZen; amounts are JSON numbers with the digits Komet sent.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        // The body is ~6x its Komet input (~460 bytes per line): reserving it up front saves ~20 doublings
        // and their copies on a large PO. Over-reserving is free: untouched capacity is never paged in.
        let estimate = 1024 + 512 * self.purchase_order_lines.len() + 256 * self.custom_json.komet_invoices.len();
        let mut json = Vec::with_capacity(estimate);
        serde_json::to_writer(&mut json, self)?;
        String::from_utf8(json).map_err(serde::ser::Error::custom)
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
