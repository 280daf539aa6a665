//! Reconciliation: does a Komet purchase order add up against its vendor invoices?
//!
//! Rules (each discrepancy records the rule, the invoice if any, the figure Komet states (`expected`), the
//! figure the parts add up to (`actual`) and `difference = actual − expected`):
//! 1. [`Rule::InvoiceItems`] per invoice: Σ items' `totalCost` + `totalAdditionalCharges` = `invoiceAmount`;
//! 2. [`Rule::InvoicesTotal`]: Σ `invoiceAmount` = PO `total`;
//! 3. [`Rule::ItemsSubtotal`]: Σ all items' `totalCost` = PO `subTotal` (when present);
//! 4. [`Rule::AdditionalCharges`]: `total` − `subTotal` = Σ `totalAdditionalCharges` (when `subTotal` present).

use crate::komet::PurchaseOrder;
use crate::money;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// A reconciliation rule; its snake_case name (serde's and `Display`'s) is what the JSON and the logs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Rule {
    InvoiceItems,
    InvoicesTotal,
    ItemsSubtotal,
    AdditionalCharges,
}

impl Rule {
    /// What the rule checks, in words a buyer reads in the notification e-mail.
    pub fn description(self) -> &'static str {
        match self {
            Rule::InvoiceItems => "invoice items plus additional charges equal the invoice amount",
            Rule::InvoicesTotal => "invoice amounts add up to the PO total",
            Rule::ItemsSubtotal => "all items add up to the PO subtotal",
            Rule::AdditionalCharges => "PO total less subtotal equals the additional charges",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    pub rule: Rule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    /// The figure Komet states (the invoice amount, the PO total or subtotal).
    #[serde(with = "money::json_number")]
    pub expected: Decimal,
    /// The figure its parts add up to.
    #[serde(with = "money::json_number")]
    pub actual: Decimal,
    /// `actual − expected`.
    #[serde(with = "money::json_number")]
    pub difference: Decimal,
}

/// How far apart two amounts may be and still match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance(Decimal);

impl Tolerance {
    /// Exact to the cent: differences are compared at cents (half a cent rounds up), and must be zero.
    pub const CENT: Tolerance = Tolerance(Decimal::ZERO);

    /// A tolerance of `max_difference` (in currency units, compared at cents). Negative is refused.
    pub fn new(max_difference: Decimal) -> Result<Self, String> {
        if max_difference.is_sign_negative() && !max_difference.is_zero() {
            return Err(format!("must not be negative, found {max_difference}"));
        }
        Ok(Tolerance(max_difference))
    }

    pub fn max_difference(self) -> Decimal {
        self.0
    }

    fn accepts(self, difference: Decimal) -> bool {
        difference.abs().round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero) <= self.0
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::CENT
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    pub discrepancies: Vec<Discrepancy>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

/// Checks one purchase order against its invoices. Pure and linear in the number of items.
pub fn reconcile(po: &PurchaseOrder, tolerance: Tolerance) -> Report {
    let mut discrepancies = Vec::new();
    let mut check = |rule, invoice_number: Option<&str>, expected: Decimal, actual: Decimal| {
        let difference = actual - expected;
        if !tolerance.accepts(difference) {
            discrepancies.push(Discrepancy {
                rule,
                invoice_number: invoice_number.map(str::to_owned),
                expected,
                actual,
                difference,
            });
        }
    };

    let mut all_items = Decimal::ZERO;
    let mut all_invoices = Decimal::ZERO;
    let mut all_charges = Decimal::ZERO;
    for invoice in &po.vendor_invoices {
        let items: Decimal = invoice.purchase_order_items.iter().map(|item| item.total_cost).sum();
        check(
            Rule::InvoiceItems,
            Some(&invoice.invoice_number),
            invoice.invoice_amount,
            items + invoice.total_additional_charges,
        );
        all_items += items;
        all_invoices += invoice.invoice_amount;
        all_charges += invoice.total_additional_charges;
    }
    check(Rule::InvoicesTotal, None, po.total, all_invoices);
    if let Some(sub_total) = po.sub_total {
        check(Rule::ItemsSubtotal, None, sub_total, all_items);
        check(Rule::AdditionalCharges, None, po.total - sub_total, all_charges);
    }
    Report { discrepancies }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::komet::{PurchaseOrderItem, VendorInvoice};

    fn d(text: &str) -> Decimal {
        money::decimal(text).unwrap()
    }

    #[test]
    fn a_rule_shows_as_its_json_name() {
        for rule in [Rule::InvoiceItems, Rule::InvoicesTotal, Rule::ItemsSubtotal, Rule::AdditionalCharges] {
            assert_eq!(serde_json::to_value(rule).unwrap(), rule.to_string());
        }
        assert_eq!(Rule::ItemsSubtotal.to_string(), "items_subtotal");
    }

    fn invoice(number: &str, amount: &str, charges: &str, items: &[&str]) -> VendorInvoice {
        VendorInvoice {
            invoice_number: number.into(),
            invoice_amount: d(amount),
            total_additional_charges: d(charges),
            file: None,
            vendor: None,
            purchase_order_items: items
                .iter()
                .map(|cost| PurchaseOrderItem { category_procurement_accounting_code: None, total_cost: d(cost) })
                .collect(),
        }
    }

    fn po(sub_total: Option<&str>, total: &str, invoices: Vec<VendorInvoice>) -> PurchaseOrder {
        PurchaseOrder {
            id: 1,
            po_number: "P1".into(),
            ship_date: None,
            arrival_date: None,
            sub_total: sub_total.map(d),
            total: d(total),
            location: None,
            vendor_invoices: invoices,
        }
    }

    #[test]
    fn a_po_that_adds_up_is_clean() {
        let po = po(Some("25.50"), "27.75", vec![invoice("A", "27.75", "2.25", &["10.10", "15.40"])]);
        assert!(reconcile(&po, Tolerance::CENT).is_clean());
    }

    #[test]
    fn each_rule_reports_expected_actual_and_difference() {
        // Items 10 + charges 1 = 11 vs invoice 12; invoices 12 vs total 13; items 10 vs subtotal 9;
        // total − subtotal = 4 vs charges 1.
        let po = po(Some("9"), "13", vec![invoice("A", "12", "1", &["4", "6"])]);
        let report = reconcile(&po, Tolerance::CENT);
        let found: Vec<_> = report
            .discrepancies
            .iter()
            .map(|x| (x.rule, x.invoice_number.as_deref(), x.expected, x.actual, x.difference))
            .collect();
        assert_eq!(
            found,
            vec![
                (Rule::InvoiceItems, Some("A"), d("12"), d("11"), d("-1")),
                (Rule::InvoicesTotal, None, d("13"), d("12"), d("-1")),
                (Rule::ItemsSubtotal, None, d("9"), d("10"), d("1")),
                (Rule::AdditionalCharges, None, d("4"), d("1"), d("-3")),
            ]
        );
    }

    #[test]
    fn without_a_subtotal_only_the_invoice_rules_apply() {
        let po = po(None, "10", vec![invoice("A", "10", "0", &["3"])]);
        let rules: Vec<_> = reconcile(&po, Tolerance::CENT).discrepancies.iter().map(|x| x.rule).collect();
        assert_eq!(rules, vec![Rule::InvoiceItems]);
    }

    #[test]
    fn exact_to_the_cent_by_default_and_configurable() {
        let off_by_a_cent = po(None, "10.01", vec![invoice("A", "10.00", "0", &["10.00"])]);
        assert_eq!(reconcile(&off_by_a_cent, Tolerance::CENT).discrepancies.len(), 1);
        let sub_cent = po(None, "10.004", vec![invoice("A", "10.00", "0", &["10.00"])]);
        assert!(reconcile(&sub_cent, Tolerance::CENT).is_clean());
        let half_cent = po(None, "10.005", vec![invoice("A", "10.00", "0", &["10.00"])]);
        assert!(!reconcile(&half_cent, Tolerance::CENT).is_clean());
        let five_cents = Tolerance::new(d("0.05")).unwrap();
        let off_by_five = po(None, "10.05", vec![invoice("A", "10.00", "0", &["10.00"])]);
        assert!(reconcile(&off_by_five, five_cents).is_clean());
        let off_by_six = po(None, "10.06", vec![invoice("A", "10.00", "0", &["10.00"])]);
        assert!(!reconcile(&off_by_six, five_cents).is_clean());
        assert!(Tolerance::new(d("-0.01")).is_err());
    }

    #[test]
    fn sums_are_exact_decimals() {
        // 0.1 + 0.2 is 0.3 here; in f64 it is not, and this PO would be flagged.
        let po = po(Some("0.3"), "0.3", vec![invoice("A", "0.3", "0", &["0.1", "0.2"])]);
        assert!(reconcile(&po, Tolerance::CENT).is_clean());
    }
}
