//! AppZen's upsert body, as serde writes it.

use crate::money;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// Text in AppZen's body: borrowed from the Komet PO or the settings (nearly all of it), owned where po-sync
/// computes it (a line id, an id written as text).
pub type Text<'a> = Cow<'a, str>;

/// `{ "amount": 12.5, "currency": "USD" }`, AppZen's shape for every money field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Money<'a> {
    #[serde(with = "money::json_number")]
    pub amount: Decimal,
    pub currency: &'a str,
}

/// AppZen's upsert body. It borrows its text from the Komet PO and the [`MappingSettings`] it was mapped from,
/// so mapping copies little but the line ids; [`PurchaseOrderBody::to_json`] writes it.
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
/// parts and written out where it is needed (`Display`, the JSON).
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
    pub fn to_json(&self) -> String {
        // About 480 bytes a line, the header and the invoices' custom_json besides.
        let estimate = 1_024 + self.purchase_order_lines.len() * 512 + self.custom_json.komet_invoices.len() * 256;
        crate::message::to_json_with_capacity(self, estimate)
    }
}
