//! What AppZen holds for a PO (`GET /dictionary-data-services/purchase-order/purchase-order-number/{number}`,
//! which answers the purchase order in the upsert's own shape, with fields of AppZen's besides), and where it
//! differs from the body po-sync sends.
//!
//! Compared: what Komet's PO decides (number, entity, supplier, dates, total, and each line's number, GL code,
//! description, quantity, unit price and amount, lines matched by `po_line_id`). Not compared: the statuses and
//! `uninvoiced_amount` (AppZen's own workflow moves them as invoices are matched) and `custom_json` (notes for
//! auditors, such as where the invoice PDFs are archived). Amounts are compared as exact decimals, so AppZen
//! answering `1.5` for the `1.50` it was sent is no difference.

use super::{Money, PurchaseOrderBody, PurchaseOrderLine};
use crate::money;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;

/// The GET path, before the URL-encoded PO number: the upsert path and `/purchase-order-number/`.
pub const READ_PATH_SEGMENT: &str = "purchase-order-number";

/// AppZen's answer to the GET, the fields po-sync sends; anything else it answers is ignored. Every field is
/// optional, so an answer missing one is reported as a difference in that field, not as unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeldPurchaseOrder {
    #[serde(default, deserialize_with = "text")]
    pub purchase_order_number: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub entity_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub supplier_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub start_date: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub end_date: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub purchase_order_date: Option<String>,
    #[serde(default)]
    pub total_amount: Option<HeldMoney>,
    #[serde(default)]
    pub purchase_order_lines: Option<Vec<HeldLine>>,
    /// The archive notes po-sync wrote into `custom_json` (not compared; kept when the PO is sent again from
    /// the CLI). A `custom_json` of another shape reads as none.
    #[serde(default, deserialize_with = "lenient")]
    pub custom_json: Option<HeldCustomJson>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeldCustomJson {
    #[serde(default)]
    pub komet_invoices: Vec<HeldInvoiceNote>,
}

/// Where po-sync archived one invoice's PDF, or why it could not, as AppZen holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeldInvoiceNote {
    #[serde(default, deserialize_with = "text")]
    pub invoice_number: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub archived_file: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub archive_incomplete: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeldMoney {
    #[serde(default, with = "money::json_number::option")]
    pub amount: Option<Decimal>,
    #[serde(default, deserialize_with = "text")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeldLine {
    #[serde(default, deserialize_with = "text")]
    pub po_line_id: Option<String>,
    #[serde(default, with = "money::json_number::option")]
    pub line_number: Option<Decimal>,
    #[serde(default, deserialize_with = "text")]
    pub gl_code: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub line_description: Option<String>,
    #[serde(default, with = "money::json_number::option")]
    pub quantity: Option<Decimal>,
    #[serde(default)]
    pub unit_price: Option<HeldMoney>,
    #[serde(default)]
    pub amount: Option<HeldMoney>,
    /// The line's cancellation (`po-sync-admin cancel` sets it); anything but a JSON boolean reads as none.
    #[serde(default, deserialize_with = "lenient")]
    pub cancel_flag: Option<bool>,
}

impl HeldPurchaseOrder {
    /// Reads AppZen's answer; the error says what in it could not be read.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        // serde would also read a struct from an array, field by field.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err("AppZen's answer is not a purchase order as documented: expected a JSON object".to_owned());
        }
        serde_json::from_slice(body).map_err(|e| format!("AppZen's answer is not a purchase order as documented: {e}"))
    }
}

impl HeldPurchaseOrder {
    /// The archive note AppZen holds for invoice `number`, if any.
    pub fn invoice_note(&self, number: &str) -> Option<&HeldInvoiceNote> {
        let notes = &self.custom_json.as_ref()?.komet_invoices;
        notes.iter().find(|note| note.invoice_number.as_deref() == Some(number))
    }
}

/// `T` when the value reads as one, `None` otherwise (and for `null`).
fn lenient<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    let raw = <Option<&RawValue>>::deserialize(deserializer)?;
    Ok(raw.and_then(|raw| serde_json::from_str(raw.get()).ok()))
}

/// A text field, also when AppZen answers it as a number (`"entity_id": 1002`); `null` is absent.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let raw = <Option<&RawValue>>::deserialize(deserializer)?;
    Ok(match raw.map(RawValue::get) {
        None | Some("null") => None,
        Some(raw) => Some(serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned())),
    })
}

/// One field where AppZen's copy is not what po-sync sent: its path, and both values as text (`(absent)`
/// where one side has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub field: String,
    pub expected: String,
    pub held: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: po-sync sent {}, AppZen holds {}", self.field, self.expected, self.held)
    }
}

const ABSENT: &str = "(absent)";

fn shown<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| ABSENT.to_owned(), |v| v.to_string())
}

/// Collects differences field by field.
struct Differences(Vec<Difference>);

impl Differences {
    fn text(&mut self, field: impl Into<String>, expected: Option<&str>, held: Option<&str>) {
        if expected != held {
            self.0.push(Difference { field: field.into(), expected: shown(expected), held: shown(held) });
        }
    }

    fn number(&mut self, field: impl Into<String>, expected: Decimal, held: Option<Decimal>) {
        if held != Some(expected) {
            self.0.push(Difference { field: field.into(), expected: expected.to_string(), held: shown(held) });
        }
    }

    fn money(&mut self, field: &str, expected: &Money<'_>, held: Option<&HeldMoney>) {
        self.number(format!("{field}.amount"), expected.amount, held.and_then(|m| m.amount));
        self.text(format!("{field}.currency"), Some(expected.currency), held.and_then(|m| m.currency.as_deref()));
    }

    fn line(&mut self, expected: &PurchaseOrderLine<'_>, held: &HeldLine) {
        let at = |field: &str| format!("purchase_order_lines[{}].{field}", expected.po_line_id);
        self.number(at("line_number"), expected.line_number.into(), held.line_number);
        self.text(at("gl_code"), Some(&expected.gl_code), held.gl_code.as_deref());
        let description = expected.line_description.to_string();
        self.text(at("line_description"), Some(&description), held.line_description.as_deref());
        self.number(at("quantity"), expected.quantity.into(), held.quantity);
        self.money(&at("unit_price"), &expected.unit_price, held.unit_price.as_ref());
        self.money(&at("amount"), &expected.amount, held.amount.as_ref());
        // Absent and `false` both mean not cancelled (reconcile sends no flag; reactivate sends `false`).
        let (sent, kept) = (expected.cancel_flag == Some(true), held.cancel_flag == Some(true));
        if sent != kept {
            self.0.push(Difference { field: at("cancel_flag"), expected: sent.to_string(), held: kept.to_string() });
        }
    }
}

/// Where `held` differs from `expected` (the body po-sync sends), header first, then line by line in the
/// body's order, then lines AppZen holds that po-sync never sent. Empty: AppZen holds what po-sync sent.
pub fn differences(expected: &PurchaseOrderBody<'_>, held: &HeldPurchaseOrder) -> Vec<Difference> {
    let mut found = Differences(Vec::new());
    found.text("purchase_order_number", Some(&expected.purchase_order_number), held.purchase_order_number.as_deref());
    found.text("entity_id", Some(&expected.entity_id), held.entity_id.as_deref());
    found.text("supplier_id", Some(&expected.supplier_id), held.supplier_id.as_deref());
    for (field, sent, kept) in [
        ("start_date", expected.start_date, &held.start_date),
        ("end_date", expected.end_date, &held.end_date),
        ("purchase_order_date", expected.purchase_order_date, &held.purchase_order_date),
    ] {
        // AppZen may answer a date with a time of day; the day is what po-sync sent.
        let kept_day = kept.as_deref().map(|d| d.get(..10).unwrap_or(d));
        found.text(field, sent.map(|d| d.format("%Y-%m-%d").to_string()).as_deref(), kept_day);
    }
    found.money("total_amount", &expected.total_amount, held.total_amount.as_ref());

    let held_lines = held.purchase_order_lines.as_deref().unwrap_or_default();
    let mut by_id: HashMap<&str, &HeldLine> = HashMap::with_capacity(held_lines.len());
    for line in held_lines {
        by_id.entry(line.po_line_id.as_deref().unwrap_or_default()).or_insert(line);
    }
    for line in &expected.purchase_order_lines {
        match by_id.remove(line.po_line_id.as_ref()) {
            Some(held_line) => found.line(line, held_line),
            None => found.0.push(Difference {
                field: format!("purchase_order_lines[{}]", line.po_line_id),
                expected: format!("a line of {} {}", line.amount.amount, line.amount.currency),
                held: ABSENT.to_owned(),
            }),
        }
    }
    for line in held_lines {
        let id = line.po_line_id.as_deref().unwrap_or_default();
        if by_id.remove(id).is_some() {
            found.0.push(Difference {
                field: format!("purchase_order_lines[{}]", if id.is_empty() { "(no po_line_id)" } else { id }),
                expected: ABSENT.to_owned(),
                held: format!("a line of {}", shown(line.amount.as_ref().and_then(|m| m.amount))),
            });
        }
    }
    found.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appzen::{MappingSettings, map_purchase_order};
    use crate::komet::parse_webhook;

    const SAMPLE: &[u8] = include_bytes!("../../tests/fixtures/komet-clean-po.json");

    /// What po-sync sends for Komet's sample, as AppZen would store it and answer it again.
    fn round_trip(body: &PurchaseOrderBody<'_>) -> HeldPurchaseOrder {
        HeldPurchaseOrder::from_json(body.to_json().as_bytes()).unwrap()
    }

    #[test]
    fn what_po_sync_sent_read_back_is_no_difference() {
        let po = parse_webhook(SAMPLE).unwrap();
        let settings = MappingSettings::default();
        let body = map_purchase_order(&po, &settings).unwrap();
        assert_eq!(differences(&body, &round_trip(&body)), []);
    }

    #[test]
    fn appzens_own_additions_and_number_forms_are_no_difference() {
        let po = parse_webhook(SAMPLE).unwrap();
        let settings = MappingSettings::default();
        let body = map_purchase_order(&po, &settings).unwrap();
        let mut answer: serde_json::Value = serde_json::from_str(&body.to_json()).unwrap();
        // AppZen's documented answer carries fields of its own, may write 60 for 60.00, moves the statuses.
        answer["entity_name"] = "Acme Inc".into();
        answer["uuid"] = "4b0e…".into();
        answer["purchase_order_status"] = "Closed".into();
        answer["appzen_purchase_order_status"] = "PO_CLOSED".into();
        answer["purchase_order_lines"][0]["uninvoiced_amount"]["amount"] = 0.into();
        answer["custom_json"] = serde_json::json!({});
        let amount = body.purchase_order_lines[0].amount.amount;
        answer["purchase_order_lines"][0]["amount"]["amount"] =
            serde_json::from_str(&amount.normalize().to_string()).unwrap();
        answer["start_date"] = format!("{}T00:00:00Z", answer["start_date"].as_str().unwrap()).into();
        let held = HeldPurchaseOrder::from_json(answer.to_string().as_bytes()).unwrap();
        assert_eq!(differences(&body, &held), []);
    }

    #[test]
    fn a_changed_amount_a_missing_line_and_an_extra_line_are_named_by_path() {
        let po = parse_webhook(SAMPLE).unwrap();
        let settings = MappingSettings::default();
        let body = map_purchase_order(&po, &settings).unwrap();
        let first = body.purchase_order_lines[0].po_line_id.to_string();
        let second = body.purchase_order_lines[1].po_line_id.to_string();
        let mut answer: serde_json::Value = serde_json::from_str(&body.to_json()).unwrap();
        answer["total_amount"]["amount"] = serde_json::from_str("99999.99").unwrap();
        answer["supplier_id"] = 42.into();
        let lines = answer["purchase_order_lines"].as_array_mut().unwrap();
        lines[0]["unit_price"]["amount"] = serde_json::from_str("0.01").unwrap();
        lines.remove(1);
        lines.push(serde_json::json!({"po_line_id": "added-by-hand", "amount": {"amount": 5, "currency": "USD"}}));
        let held = HeldPurchaseOrder::from_json(answer.to_string().as_bytes()).unwrap();

        let found = differences(&body, &held);
        let fields: Vec<&str> = found.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "supplier_id".to_owned(),
                "total_amount.amount".to_owned(),
                format!("purchase_order_lines[{first}].unit_price.amount"),
                format!("purchase_order_lines[{second}]"),
                "purchase_order_lines[added-by-hand]".to_owned(),
            ]
        );
        assert_eq!(found[1].expected, body.total_amount.amount.to_string());
        assert_eq!(found[1].held, "99999.99");
        assert_eq!(found[0].held, "42", "a number where text was sent is shown as its digits");
        assert_eq!(found[3].held, ABSENT);
        assert_eq!(
            found[4].to_string(),
            "purchase_order_lines[added-by-hand]: po-sync sent (absent), AppZen holds a line of 5"
        );
    }

    #[test]
    fn a_cancellation_differs_only_where_one_side_holds_the_line_cancelled() {
        let po = parse_webhook(SAMPLE).unwrap();
        let settings = MappingSettings::default();
        let mut body = map_purchase_order(&po, &settings).unwrap();
        let active = body.clone();
        let at = chrono::DateTime::UNIX_EPOCH;
        body.mark_cancelled(at, Some("ordered twice"));
        let cancelled = round_trip(&body);
        assert_eq!(differences(&body, &cancelled), []);

        let found = differences(&active, &cancelled);
        assert_eq!(found.len(), active.purchase_order_lines.len(), "{found:?}");
        let first = &active.purchase_order_lines[0].po_line_id;
        assert_eq!(
            found[0].to_string(),
            format!("purchase_order_lines[{first}].cancel_flag: po-sync sent false, AppZen holds true")
        );
        assert_eq!(differences(&body, &round_trip(&active)).len(), active.purchase_order_lines.len());

        // Reactivated (`false` on every line) is what reconcile's body (no flag) means.
        body.mark_active();
        assert_eq!(differences(&active, &round_trip(&body)), []);
    }

    #[test]
    fn an_answer_without_the_fields_reports_each_missing_one() {
        let po = parse_webhook(SAMPLE).unwrap();
        let settings = MappingSettings::default();
        let body = map_purchase_order(&po, &settings).unwrap();
        let held = HeldPurchaseOrder::from_json(b"{\"uuid\":\"x\"}").unwrap();
        let found = differences(&body, &held);
        assert!(found.iter().any(|d| d.field == "total_amount.amount" && d.held == ABSENT), "{found:?}");
        assert_eq!(
            found.iter().filter(|d| d.field.starts_with("purchase_order_lines[") && !d.field.contains("].")).count(),
            body.purchase_order_lines.len()
        );
    }

    #[test]
    fn an_answer_that_is_not_a_purchase_order_is_unreadable_not_a_difference() {
        assert!(HeldPurchaseOrder::from_json(b"[1,2]").unwrap_err().contains("not a purchase order"));
        assert!(HeldPurchaseOrder::from_json(b"{\"total_amount\":{\"amount\":\"lots\"}}").is_err());
    }
}
