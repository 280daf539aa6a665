//! Exsited's purchase order (`POST /api/v3/purchase-orders`, Exsited's purchase-orders v3 API), and the pure
//! mapping from a Komet purchase order to it (reconcile with `DESTINATION=exsited`; docs/design.md, "A second
//! destination").
//!
//! Exsited takes every value as a string (`"item_quantity": "1"`, `"price": "500.10"`): amounts leave as
//! `Decimal`'s exact digits. Its lines name catalogue items and its header an existing supplier account, so
//! both come from Komet's codes, by rule or by the operator's mapping; a PO whose codes cannot be mapped is
//! refused with what is missing, like AppZen's mapping errors.

use crate::appzen::{LineDescription, MappingError, single_vendor};
use crate::komet::{PurchaseOrder, Vendor};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::HashMap;

/// Exsited's price type for a price per unit, as its SDK examples set it.
pub const PER_UNIT_PRICING: &str = "INCREMENTAL_PER_UNIT_PRICING";

/// The create request: `{"purchase_order": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateRequest {
    pub purchase_order: NewPurchaseOrder,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewPurchaseOrder {
    pub currency: String,
    /// Where a person in Exsited sees Komet's PO number, id and invoice numbers.
    pub purchase_order_note: String,
    pub account_id: String,
    /// `"false"`: Komet's costs are before tax.
    pub price_tax_inclusive: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_completion_date: Option<NaiveDate>,
    pub lines: Vec<NewLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewLine {
    pub item_id: String,
    /// `Invoice 01-P004410 item 2`: the line's origin in Komet.
    pub item_name: String,
    pub item_quantity: String,
    pub item_price_snapshot: PriceSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceSnapshot {
    pub pricing_rule: PricingRule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricingRule {
    pub price_type: String,
    pub price: String,
}

/// How a Komet code becomes an Exsited id: the code itself, or the operator's table (a code missing from it
/// cannot be mapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdRule {
    SameAsKomet,
    Table(HashMap<String, String>),
}

impl IdRule {
    /// `CODE=ID,CODE=ID` (spaces around either ignored): a table; empty: the code itself.
    pub fn parse(text: &str) -> Result<IdRule, String> {
        if text.trim().is_empty() {
            return Ok(IdRule::SameAsKomet);
        }
        let mut table = HashMap::new();
        for pair in text.split(',') {
            let Some((code, id)) = pair.split_once('=').map(|(c, i)| (c.trim(), i.trim())) else {
                return Err(format!("{pair:?} is not CODE=ID"));
            };
            if code.is_empty() || id.is_empty() {
                return Err(format!("{pair:?} is not CODE=ID"));
            }
            if table.insert(code.to_owned(), id.to_owned()).is_some() {
                return Err(format!("{code:?} is mapped twice"));
            }
        }
        Ok(IdRule::Table(table))
    }

    fn id_of(&self, code: &str) -> Option<String> {
        match self {
            IdRule::SameAsKomet => Some(code.to_owned()),
            IdRule::Table(table) => table.get(code).cloned(),
        }
    }
}

/// How a Komet PO becomes an Exsited one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExsitedSettings {
    pub currency: String,
    /// Supplier account from the vendor's accounting code (else its code).
    pub accounts: IdRule,
    /// Catalogue item from each item's category procurement accounting code.
    pub items: IdRule,
    /// The catalogue item that carries an invoice's additional charges.
    pub charges_item_id: String,
}

/// Maps a Komet PO to Exsited's create request. Pure; the error names what is missing (the Komet field, or the
/// code the operator's table lacks).
pub fn map_purchase_order(po: &PurchaseOrder, settings: &ExsitedSettings) -> Result<CreateRequest, MappingError> {
    let vendor = single_vendor(po).map_err(in_exsited_terms)?;
    let account_id = account_id(vendor, &settings.accounts)?;
    let line = |item_id: String, description: LineDescription<'_>, price: Decimal| NewLine {
        item_id,
        item_name: description.to_string(),
        // Komet sends a cost per item line, not units: one unit at the line's cost, as for AppZen.
        item_quantity: "1".to_owned(),
        item_price_snapshot: PriceSnapshot {
            pricing_rule: PricingRule { price_type: PER_UNIT_PRICING.to_owned(), price: price.to_string() },
        },
    };
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, invoice) in po.vendor_invoices.iter().enumerate() {
        let number = invoice.invoice_number.as_str();
        if !seen.insert(number) {
            return Err(in_exsited_terms(MappingError::DuplicateInvoice(number.to_owned())));
        }
        for (j, item) in invoice.purchase_order_items.iter().enumerate() {
            let path = format!("vendorInvoices[{i}].purchaseOrderItems[{j}].categoryProcurementAccountingCode");
            let code = item
                .category_procurement_accounting_code
                .as_deref()
                .ok_or_else(|| in_exsited_terms(MappingError::Missing(path)))?;
            let item_id = settings.items.id_of(code).ok_or_else(|| {
                MappingError::Unmapped(format!(
                    "no Exsited item for category code {code:?}: add it to EXSITED_ITEM_MAP (CODE=ITEM_ID)"
                ))
            })?;
            let description = LineDescription { invoice_number: number, item_position: Some(j as u32 + 1) };
            lines.push(line(item_id, description, item.total_cost));
        }
        if !invoice.total_additional_charges.is_zero() {
            let description = LineDescription { invoice_number: number, item_position: None };
            lines.push(line(settings.charges_item_id.clone(), description, invoice.total_additional_charges));
        }
    }
    if lines.is_empty() {
        return Err(in_exsited_terms(MappingError::NoLines));
    }
    let invoices: Vec<&str> = po.vendor_invoices.iter().map(|i| i.invoice_number.as_str()).collect();
    Ok(CreateRequest {
        purchase_order: NewPurchaseOrder {
            currency: settings.currency.clone(),
            purchase_order_note: format!(
                "{} invoices {}",
                note_prefix(po.id, &po.po_number),
                crate::text::log_field(&invoices.join(", "))
            ),
            account_id,
            price_tax_inclusive: "false".to_owned(),
            issue_date: po.ship_date,
            expected_completion_date: po.arrival_date,
            lines,
        },
    })
}

/// How a PO's note begins: `Komet PO P004410 (id 48213);`. Exsited gives a PO an id of its own, so this is how
/// po-sync finds the PO a create made when the create's answer was lost.
pub fn note_prefix(po_id: u64, po_number: &str) -> String {
    format!("Komet PO {po_number} (id {po_id});")
}

/// `PATCH /api/v3/purchase-orders/{id}/information`: the header fields a later version may change. Exsited's
/// wrapper key here is `purchase-order`, with a hyphen (the create's is `purchase_order`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InformationRequest {
    #[serde(rename = "purchase-order")]
    pub purchase_order: Information,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Information {
    pub purchase_order_note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_completion_date: Option<NaiveDate>,
}

/// `POST /api/v3/purchase-orders/{id}/change`: line operations, applied in order, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeRequest {
    pub purchase_order: LineChanges,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineChanges {
    pub lines: Vec<LineOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LineOp {
    Add(NewLine),
    Delete { uuid: String },
}

/// What makes an existing Exsited PO into `request`: its header, and its lines replaced by the new version's
/// (added first, so the PO never has no lines; then the old ones, by uuid, deleted). Replacing rather than
/// matching line by line keeps Exsited's lines exactly Komet's, in Komet's order, whatever changed.
pub fn changes_to(request: &CreateRequest, existing_line_uuids: &[String]) -> (InformationRequest, ChangeRequest) {
    let order = &request.purchase_order;
    let information = InformationRequest {
        purchase_order: Information {
            purchase_order_note: order.purchase_order_note.clone(),
            issue_date: order.issue_date,
            expected_completion_date: order.expected_completion_date,
        },
    };
    let adds = order.lines.iter().cloned().map(LineOp::Add);
    let deletes = existing_line_uuids.iter().map(|uuid| LineOp::Delete { uuid: uuid.clone() });
    (information, ChangeRequest { purchase_order: LineChanges { lines: adds.chain(deletes).collect() } })
}

fn account_id(vendor: &Vendor, rule: &IdRule) -> Result<String, MappingError> {
    let code = vendor.vendor_accounting_code.as_deref().or(vendor.code.as_deref()).ok_or_else(|| {
        in_exsited_terms(MappingError::Missing("vendorInvoices[].vendor.vendorAccountingCode (or its code)".to_owned()))
    })?;
    rule.id_of(code).ok_or_else(|| {
        MappingError::Unmapped(format!(
            "no Exsited supplier account for vendor code {code:?}: add it to EXSITED_ACCOUNT_MAP (CODE=ACCOUNT_ID)"
        ))
    })
}

/// The checks shared with AppZen's mapping, said of Exsited.
fn in_exsited_terms(error: MappingError) -> MappingError {
    MappingError::Unmapped(error.to_string().replace("AppZen", "Exsited"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::komet::parse_webhook;

    const CLEAN_PO: &[u8] = include_bytes!("../tests/fixtures/komet-clean-po.json");

    fn settings(accounts: &str, items: &str) -> ExsitedSettings {
        ExsitedSettings {
            currency: "USD".into(),
            accounts: IdRule::parse(accounts).unwrap(),
            items: IdRule::parse(items).unwrap(),
            charges_item_id: "ADDITIONAL_CHARGES".into(),
        }
    }

    #[test]
    fn the_clean_po_becomes_one_line_per_item_and_charge_with_exact_string_amounts() {
        let po = parse_webhook(CLEAN_PO).unwrap();
        let request = map_purchase_order(&po, &settings("V-0042=SUP-0001", "")).unwrap();
        let json = serde_json::to_value(&request).unwrap();
        let order = &json["purchase_order"];
        assert_eq!(order["account_id"], "SUP-0001");
        assert_eq!(order["price_tax_inclusive"], "false");
        assert_eq!(order["issue_date"], "2026-02-09");
        assert_eq!(order["purchase_order_note"], "Komet PO P004410 (id 48213); invoices 01-P004410, 01-P004411");
        let lines: Vec<(&str, &str, &str)> = order["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["item_id"].as_str().unwrap(),
                    l["item_name"].as_str().unwrap(),
                    l["item_price_snapshot"]["pricing_rule"]["price"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("CGEN", "Invoice 01-P004410 item 1", "500.10"),
                ("PGEN", "Invoice 01-P004410 item 2", "333.96"),
                ("ADDITIONAL_CHARGES", "Invoice 01-P004410 additional charges", "50.25"),
                ("CGEN", "Invoice 01-P004411 item 1", "0.1"),
                ("CGEN", "Invoice 01-P004411 item 2", "0.2"),
                ("RGEN", "Invoice 01-P004411 item 3", "400.20"),
            ]
        );
        // Every number is a string, as Exsited takes them.
        assert!(order["lines"].as_array().unwrap().iter().all(|l| l["item_quantity"] == "1"));
        let total: Decimal = lines.iter().map(|(_, _, price)| price.parse::<Decimal>().unwrap()).sum();
        assert_eq!(total, po.total, "the lines add up to Komet's total, to the cent");
    }

    #[test]
    fn a_code_the_operators_table_lacks_is_named() {
        let po = parse_webhook(CLEAN_PO).unwrap();
        let missing_account = map_purchase_order(&po, &settings("OTHER=SUP-9", "")).unwrap_err();
        assert!(missing_account.to_string().contains("vendor code \"V-0042\""), "{missing_account}");
        let missing_item = map_purchase_order(&po, &settings("", "CGEN=FLOWERS")).unwrap_err();
        assert!(missing_item.to_string().contains("category code \"PGEN\""), "{missing_item}");
        let mapped = map_purchase_order(&po, &settings("", "CGEN=FLOWERS,PGEN=PLANTS,RGEN=ROSES")).unwrap();
        assert_eq!(mapped.purchase_order.account_id, "V-0042", "without a table the vendor's code is the account");
        assert_eq!(mapped.purchase_order.lines[1].item_id, "PLANTS");
    }

    #[test]
    fn a_mapping_table_is_code_equals_id_pairs() {
        assert_eq!(IdRule::parse(" "), Ok(IdRule::SameAsKomet));
        let IdRule::Table(table) = IdRule::parse("A = 1, B=2").unwrap() else { panic!() };
        assert_eq!((table["A"].as_str(), table["B"].as_str()), ("1", "2"));
        for bad in ["A", "A=", "=1", "A=1,A=2"] {
            assert!(IdRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_later_version_changes_the_header_and_replaces_the_lines() {
        let po = parse_webhook(CLEAN_PO).unwrap();
        let request = map_purchase_order(&po, &settings("", "")).unwrap();
        let (information, change) = changes_to(&request, &["old-1".to_owned(), "old-2".to_owned()]);
        let information = serde_json::to_value(&information).unwrap();
        assert!(
            information["purchase-order"]["purchase_order_note"]
                .as_str()
                .unwrap()
                .starts_with(&note_prefix(48213, "P004410"))
        );
        assert_eq!(information["purchase-order"]["issue_date"], "2026-02-09");
        let ops: Vec<serde_json::Value> =
            serde_json::to_value(&change).unwrap()["purchase_order"]["lines"].as_array().unwrap().clone();
        assert_eq!(ops.len(), 8);
        assert_eq!((ops[0]["op"].as_str(), ops[0]["item_id"].as_str()), (Some("add"), Some("CGEN")));
        assert_eq!(ops[0]["item_price_snapshot"]["pricing_rule"]["price"], "500.10");
        assert_eq!(ops[7], serde_json::json!({"op": "delete", "uuid": "old-2"}));
    }
}
