//! AppZen's upsert body, as serde writes it.

use super::HeldPurchaseOrder;
use crate::money;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
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
    /// AppZen keeps a cancellation per line. reconcile never sets these; `po-sync-admin cancel` and
    /// `reactivate` do ([`PurchaseOrderBody::mark_cancelled`], [`PurchaseOrderBody::mark_active`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_flag: Option<bool>,
    /// `yyyy-mm-ddTHH:mm:ssZ`, as AppZen documents it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<Text<'a>>,
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

    /// The PO cancelled, as AppZen's API records it: on every line (`cancel_flag`, `cancel_date`, and
    /// `cancel_reason` when there is one).
    pub fn mark_cancelled(&mut self, at: DateTime<Utc>, reason: Option<&str>) {
        let date = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        for line in &mut self.purchase_order_lines {
            line.cancel_flag = Some(true);
            line.cancel_date = Some(date.clone());
            line.cancel_reason = reason.map(|r| Text::Owned(r.to_owned()));
        }
    }

    /// The PO active again: every line says `cancel_flag: false`, since an upsert that leaves a field out does
    /// not say whether AppZen clears it.
    pub fn mark_active(&mut self) {
        for line in &mut self.purchase_order_lines {
            line.cancel_flag = Some(false);
            line.cancel_date = None;
            line.cancel_reason = None;
        }
    }

    /// Takes the archive notes (`archived_file`, `archive_incomplete`) AppZen holds for each invoice, as
    /// reconcile wrote them when it sent this version: a body rebuilt from the kept webhook has none, and
    /// sending it without them would erase them in AppZen.
    pub fn keep_archive_notes(&mut self, held: &HeldPurchaseOrder) {
        for invoice in &mut self.custom_json.komet_invoices {
            if let Some(note) = held.invoice_note(&invoice.invoice_number) {
                invoice.archived_file.clone_from(&note.archived_file);
                invoice.archive_incomplete.clone_from(&note.archive_incomplete);
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

#[cfg(test)]
mod tests {
    use crate::appzen::{HeldPurchaseOrder, MappingSettings, map_purchase_order};
    use crate::komet::parse_webhook;
    use chrono::{TimeZone, Utc};
    use serde_json::Value;

    const CLEAN_PO: &[u8] = include_bytes!("../../tests/fixtures/komet-clean-po.json");

    fn lines(json: &str) -> Vec<Value> {
        let document: Value = serde_json::from_str(json).unwrap();
        document["purchase_order_lines"].as_array().unwrap().clone()
    }

    #[test]
    fn a_cancelled_po_says_so_on_every_line_and_an_active_one_says_false() {
        let po = parse_webhook(CLEAN_PO).unwrap();
        let settings = MappingSettings::default();
        let mut body = map_purchase_order(&po, &settings).unwrap();
        let sent = body.to_json();
        assert!(!sent.contains("cancel_"), "reconcile's body says nothing of cancellation");

        let at = Utc.with_ymd_and_hms(2026, 12, 6, 9, 30, 5).unwrap();
        body.mark_cancelled(at, Some("ordered \"twice\""));
        let cancelled = lines(&body.to_json());
        assert!(cancelled.len() > 1);
        for line in &cancelled {
            assert_eq!(line["cancel_flag"], Value::Bool(true));
            assert_eq!(line["cancel_date"], "2026-12-06T09:30:05Z");
            assert_eq!(line["cancel_reason"], "ordered \"twice\"");
        }

        body.mark_active();
        let json = body.to_json();
        for line in lines(&json) {
            assert_eq!(line["cancel_flag"], Value::Bool(false));
            assert!(line.get("cancel_date").is_none() && line.get("cancel_reason").is_none());
        }
        // Only the flags differ from what reconcile sends.
        assert_eq!(json.replace(r#""cancel_flag":false,"#, ""), sent);

        body.mark_cancelled(at, None);
        assert!(lines(&body.to_json()).iter().all(|line| line.get("cancel_reason").is_none()));
    }

    #[test]
    fn archive_notes_come_from_appzen_s_copy_invoice_by_invoice() {
        let po = parse_webhook(CLEAN_PO).unwrap();
        let settings = MappingSettings::default();
        let mut body = map_purchase_order(&po, &settings).unwrap();
        let first = body.custom_json.komet_invoices[0].invoice_number.to_string();
        let held = HeldPurchaseOrder::from_json(
            format!(
                r#"{{"uuid":"u","custom_json":{{"komet_po_id":1,"komet_invoices":[
                    {{"invoice_number":"{first}","archived_file":"s3://b/invoices/1/a.pdf"}},
                    {{"invoice_number":"not on this PO","archive_incomplete":"gone"}}]}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        body.keep_archive_notes(&held);
        let invoices = &body.custom_json.komet_invoices;
        assert_eq!(invoices[0].archived_file.as_deref(), Some("s3://b/invoices/1/a.pdf"));
        assert!(invoices[1..].iter().all(|i| i.archived_file.is_none() && i.archive_incomplete.is_none()));

        // A custom_json of another shape is no note, and not an unreadable answer.
        let other = HeldPurchaseOrder::from_json(br#"{"custom_json":{"komet_invoices":"none"}}"#).unwrap();
        assert_eq!(other.custom_json, None);
        assert!(HeldPurchaseOrder::from_json(br#"{"custom_json":"text"}"#).is_ok());
    }
}
