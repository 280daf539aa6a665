//! Komet Sales' "PO Reconciliation Invoices" webhook payload: typed, exact, and parsed leniently where
//! Komet's own documentation is inconsistent (see docs/payload.md, "The Komet payload", and the fixtures in
//! `shared/po-sync/tests/fixtures/`).
//!
//! Accepted beyond the field list, because Komet's documented sample does it:
//! - `subtotal` as well as `subTotal`;
//! - `location` and `vendor` as an object, or as an array holding one object;
//! - location `code` as a string or an integer;
//! - `vendorAccountingCode` null or missing; `file` without a URL scheme (`www.kometsales.com/url`);
//! - `totalAdditionalCharges` missing, meaning zero;
//! - trailing commas before `}` or `]` (see [`crate::json`]).
//!
//! Every problem found is reported with its JSON path, not just the first one.

use crate::archive::{LinkRefusal, invoice_link};
use crate::json::{self, Value};
use crate::limits;
use crate::money::{self, MAX_AMOUNT};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One Komet purchase order with its vendor invoices, in normalised form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseOrder {
    /// Komet's purchase order id; also the SQS message group, so updates to one PO stay in order.
    pub id: u64,
    pub po_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_date: Option<NaiveDate>,
    #[serde(default, with = "money::json_number::option", skip_serializing_if = "Option::is_none")]
    pub sub_total: Option<Decimal>,
    #[serde(with = "money::json_number")]
    pub total: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    pub vendor_invoices: Vec<VendorInvoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Always text: Komet sends `"02"` in its sample and documents an integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorInvoice {
    pub invoice_number: String,
    #[serde(with = "money::json_number")]
    pub invoice_amount: Decimal,
    #[serde(with = "money::json_number")]
    pub total_additional_charges: Decimal,
    /// The invoice PDF, always with a scheme (`https://` is added when Komet leaves it out).
    /// Komet's links stop working six hours after the webhook was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Vendor>,
    pub purchase_order_items: Vec<PurchaseOrderItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vendor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_accounting_code: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub vendor_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseOrderItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_procurement_accounting_code: Option<String>,
    #[serde(with = "money::json_number")]
    pub total_cost: Decimal,
}

impl PurchaseOrder {
    /// All items of all invoices, in document order.
    pub fn items(&self) -> impl Iterator<Item = &PurchaseOrderItem> {
        self.vendor_invoices.iter().flat_map(|invoice| invoice.purchase_order_items.iter())
    }
}

/// One thing wrong with the payload, at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path such as `vendorInvoices[1].purchaseOrderItems[0].totalCost`; `body` for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The payload was refused: every problem found, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PayloadError {
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_REPORTED_PROBLEMS`], counted but not listed.
    pub unreported: usize,
}

/// Enough to fix a payload by; a hostile body cannot make the error (and Komet's screen) unbounded.
pub const MAX_REPORTED_PROBLEMS: usize = 20;

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        if self.unreported > 0 {
            write!(f, "; and {} more problem(s)", self.unreported)?;
        }
        Ok(())
    }
}

/// Parses and validates a webhook body: the document as a tree ([`crate::json`]), then every member checked,
/// every problem named with its path. Never panics; linear in the body's size.
pub fn parse_webhook(body: &[u8]) -> Result<PurchaseOrder, PayloadError> {
    let document = json::parse(body).map_err(|e| PayloadError {
        problems: vec![Problem { path: "body".to_owned(), message: e.to_string() }],
        unreported: 0,
    })?;
    let mut checker = Checker::default();
    let po = checker.purchase_order(&document);
    match (po, checker.problems.is_empty()) {
        (Some(po), true) => Ok(po),
        _ => Err(PayloadError { problems: checker.problems, unreported: checker.unreported }),
    }
}

/// A JSON path built on the stack, rendered only when a problem is reported.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    fn key(&'p self, key: &'p str) -> Path<'p> {
        Path::Key(self, key)
    }
    fn index(&'p self, index: usize) -> Path<'p> {
        Path::Index(self, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("body"),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// A date exactly as Komet documents it, `YYYY-MM-DD` (chrono alone would also take "2020-3-7").
fn shaped_date(text: &str) -> Option<NaiveDate> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    shaped.then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()).flatten()
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    unreported: usize,
}

type Members<'v, 'a> = &'v [(std::borrow::Cow<'a, str>, Value<'a>)];

impl Checker {
    fn report(&mut self, path: &Path<'_>, message: impl Into<String>) {
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(Problem { path: path.to_string(), message: message.into() });
        } else {
            self.unreported += 1;
        }
    }

    fn expected(&mut self, path: &Path<'_>, what: &str, found: &Value<'_>) {
        self.report(path, format!("expected {what}, found {}", found.describe()));
    }

    fn object<'v, 'a>(&mut self, value: &'v Value<'a>, path: &Path<'_>) -> Option<Members<'v, 'a>> {
        match value {
            Value::Object(members) => Some(members),
            other => {
                self.expected(path, "an object", other);
                None
            }
        }
    }

    /// The member named `key` (or any of its `aliases`); a member present twice, with different values,
    /// is a problem because a reader could not know which one Komet meant.
    fn member<'v, 'a>(&mut self, members: Members<'v, 'a>, parent: &Path<'_>, names: &[&str]) -> Option<&'v Value<'a>> {
        let mut found: Option<(&str, &'v Value<'a>)> = None;
        for (key, value) in members {
            let Some(name) = names.iter().find(|name| **name == key.as_ref()) else { continue };
            match found {
                None => found = Some((name, value)),
                Some((first, earlier)) if earlier != value => {
                    let path = parent.key(first);
                    self.report(&path, format!("given twice (as {first} and {name}) with different values"));
                }
                Some(_) => {}
            }
        }
        match found {
            Some((_, Value::Null)) | None => None,
            Some((_, value)) => Some(value),
        }
    }

    fn required<'v, 'a>(
        &mut self,
        members: Members<'v, 'a>,
        parent: &Path<'_>,
        names: &[&str],
        what: &str,
    ) -> Option<&'v Value<'a>> {
        let value = self.member(members, parent, names);
        if value.is_none() {
            let present_as_null = members.iter().any(|(k, v)| names.contains(&k.as_ref()) && *v == Value::Null);
            let path = parent.key(names[0]);
            self.report(
                &path,
                if present_as_null { format!("expected {what}, found null") } else { "is required".to_owned() },
            );
        }
        value
    }

    fn text(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<String> {
        match value {
            Value::String(s) => Some(s.to_string()),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    /// `text`, if it is at most `max` characters long.
    fn within(&mut self, text: String, path: &Path<'_>, max: usize) -> Option<String> {
        let length = text.chars().count();
        if length > max {
            self.report(path, format!("is {length} characters long, more than the {max} allowed"));
            return None;
        }
        Some(text)
    }

    fn code_text(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<String> {
        let text = self.text(value, path)?;
        self.within(text, path, limits::CODE_CHARS)
    }

    fn name(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<String> {
        let text = self.text(value, path)?;
        self.within(text, path, limits::NAME_CHARS)
    }

    fn identifier(&mut self, value: &Value<'_>, path: &Path<'_>, max: usize) -> Option<String> {
        let text = self.text(value, path)?;
        let text = self.within(text, path, max)?;
        if text.trim().is_empty() {
            self.report(path, "must not be empty");
            return None;
        }
        Some(text)
    }

    fn whole_number(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<u64> {
        match value {
            Value::Number(text) if text.bytes().all(|b| b.is_ascii_digit()) => match text.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.report(path, format!("expected a whole number below 2^64, found {}", value.describe()));
                    None
                }
            },
            other => {
                self.expected(path, "a non-negative whole number", other);
                None
            }
        }
    }

    /// A code Komet documents as an integer but sends as a string: both become text, digits unchanged.
    fn code(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<String> {
        match value {
            Value::String(s) => self.within(s.to_string(), path, limits::CODE_CHARS),
            Value::Number(text) if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => Some((*text).into()),
            other => {
                self.expected(path, "a string or a whole number", other);
                None
            }
        }
    }

    fn amount(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<Decimal> {
        let Value::Number(text) = value else {
            self.expected(path, "a number", value);
            return None;
        };
        match money::parse_exact(text) {
            Ok(amount) if amount.is_sign_negative() => {
                self.report(path, format!("must not be negative, found {text}"));
                None
            }
            Ok(amount) if !money::within_max(&amount) => {
                self.report(path, format!("expected an amount up to {MAX_AMOUNT}, found {text}"));
                None
            }
            Ok(amount) => Some(amount),
            Err(_) => {
                self.report(path, format!("expected a finite amount up to {MAX_AMOUNT}, found {}", value.describe()));
                None
            }
        }
    }

    fn date(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<NaiveDate> {
        let Value::String(text) = value else {
            self.expected(path, "a date (YYYY-MM-DD)", value);
            return None;
        };
        match shaped_date(text) {
            Some(date) => Some(date),
            None => {
                self.expected(path, "a date (YYYY-MM-DD)", value);
                None
            }
        }
    }

    /// An invoice link: kept when http(s), given `https://` when Komet omits the scheme, refused otherwise
    /// (it ends up as a link in an e-mail).
    fn link(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<String> {
        let Value::String(text) = value else {
            self.expected(path, "a string", value);
            return None;
        };
        match invoice_link(text) {
            Ok(link) => self.within(link, path, limits::LINK_CHARS),
            Err(LinkRefusal::NotAUrl) => {
                self.report(path, format!("expected a URL, found {}", value.describe()));
                None
            }
            Err(LinkRefusal::Scheme(scheme)) => {
                self.report(path, format!("expected an http or https URL, found scheme \"{}\"", scheme.escape_debug()));
                None
            }
        }
    }

    /// Komet's field list calls `location` and `vendor` arrays; its sample sends objects. Both are fine.
    fn single_object<'v, 'a>(&mut self, value: &'v Value<'a>, path: &Path<'_>) -> Option<(Members<'v, 'a>, bool)> {
        match value {
            Value::Object(members) => Some((members, false)),
            Value::Array(items) => match items.as_slice() {
                [] => None,
                [Value::Object(members)] => Some((members, true)),
                [other] => {
                    let path = path.index(0);
                    self.expected(&path, "an object", other);
                    None
                }
                many => {
                    self.report(path, format!("expected one object, found an array of {}", many.len()));
                    None
                }
            },
            other => {
                self.expected(path, "an object", other);
                None
            }
        }
    }

    fn optional<'v, 'a, T>(
        &mut self,
        members: Members<'v, 'a>,
        parent: &Path<'_>,
        names: &[&str],
        read: impl FnOnce(&mut Self, &Value<'a>, &Path<'_>) -> Option<T>,
    ) -> Option<T> {
        let value = self.member(members, parent, names)?;
        let path = parent.key(names[0]);
        read(self, value, &path)
    }

    fn purchase_order(&mut self, document: &Value<'_>) -> Option<PurchaseOrder> {
        let root = Path::Root;
        let Value::Object(members) = document else {
            self.expected(&root, "a JSON object", document);
            return None;
        };
        let id = self.required(members, &root, &["id"], "a number").and_then(|v| self.whole_number(v, &root.key("id")));
        let po_number = self
            .required(members, &root, &["poNumber"], "a string")
            .and_then(|v| self.identifier(v, &root.key("poNumber"), limits::PO_NUMBER_CHARS));
        let ship_date = self.optional(members, &root, &["shipDate"], Self::date);
        let arrival_date = self.optional(members, &root, &["arrivalDate"], Self::date);
        let sub_total = self.optional(members, &root, &["subTotal", "subtotal"], Self::amount);
        let total =
            self.required(members, &root, &["total"], "a number").and_then(|v| self.amount(v, &root.key("total")));
        let location = self.optional(members, &root, &["location"], Self::location);
        let invoices_path = root.key("vendorInvoices");
        let vendor_invoices = self
            .required(members, &root, &["vendorInvoices"], "an array")
            .and_then(|v| self.list(v, &invoices_path, limits::INVOICES, Self::vendor_invoice));
        let items: usize = vendor_invoices.iter().flatten().map(|i| i.purchase_order_items.len()).sum();
        if items > limits::ITEMS {
            self.report(&invoices_path, format!("holds {items} items in all, more than the {} allowed", limits::ITEMS));
            return None;
        }
        Some(PurchaseOrder {
            id: id?,
            po_number: po_number?,
            ship_date,
            arrival_date,
            sub_total,
            total: total?,
            location,
            vendor_invoices: vendor_invoices?,
        })
    }

    /// An array of at most `max` elements, each read with `read` (a longer one is refused unread).
    fn list<T>(
        &mut self,
        value: &Value<'_>,
        path: &Path<'_>,
        max: usize,
        mut read: impl FnMut(&mut Self, &Value<'_>, &Path<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Value::Array(values) = value else {
            self.expected(path, "an array", value);
            return None;
        };
        if values.len() > max {
            self.report(path, format!("holds {} elements, more than the {max} allowed", values.len()));
            return None;
        }
        let mut out = Vec::with_capacity(values.len());
        let mut complete = true;
        for (i, value) in values.iter().enumerate() {
            match read(self, value, &path.index(i)) {
                Some(item) => out.push(item),
                None => complete = false,
            }
        }
        complete.then_some(out)
    }

    fn location(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<Location> {
        let (members, in_array) = self.single_object(value, path)?;
        let indexed = path.index(0);
        let path = if in_array { &indexed } else { path };
        Some(Location {
            id: self.optional(members, path, &["id"], Self::whole_number),
            code: self.optional(members, path, &["code"], Self::code),
            name: self.optional(members, path, &["name"], Self::name),
        })
    }

    fn vendor(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<Vendor> {
        let (members, in_array) = self.single_object(value, path)?;
        let indexed = path.index(0);
        let path = if in_array { &indexed } else { path };
        Some(Vendor {
            id: self.optional(members, path, &["id"], Self::whole_number),
            code: self.optional(members, path, &["code"], Self::code),
            name: self.optional(members, path, &["name"], Self::name),
            vendor_accounting_code: self.optional(members, path, &["vendorAccountingCode"], Self::code_text),
            vendor_type: self.optional(members, path, &["type"], Self::name),
        })
    }

    fn vendor_invoice(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<VendorInvoice> {
        let members = self.object(value, path)?;
        let invoice_number = self
            .required(members, path, &["invoiceNumber"], "a string")
            .and_then(|v| self.identifier(v, &path.key("invoiceNumber"), limits::INVOICE_NUMBER_CHARS));
        let invoice_amount = self
            .required(members, path, &["invoiceAmount"], "a number")
            .and_then(|v| self.amount(v, &path.key("invoiceAmount")));
        let charges_path = path.key("totalAdditionalCharges");
        let total_additional_charges = match self.member(members, path, &["totalAdditionalCharges"]) {
            None => Some(Decimal::ZERO),
            Some(v) => self.amount(v, &charges_path),
        };
        let file = self.optional(members, path, &["file"], Self::link);
        let vendor = self.optional(members, path, &["vendor"], Self::vendor);
        let purchase_order_items = self
            .required(members, path, &["purchaseOrderItems"], "an array")
            .and_then(|v| self.list(v, &path.key("purchaseOrderItems"), limits::ITEMS_PER_INVOICE, Self::item));
        Some(VendorInvoice {
            invoice_number: invoice_number?,
            invoice_amount: invoice_amount?,
            total_additional_charges: total_additional_charges?,
            file,
            vendor,
            purchase_order_items: purchase_order_items?,
        })
    }

    fn item(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<PurchaseOrderItem> {
        let members = self.object(value, path)?;
        let code = self.optional(members, path, &["categoryProcurementAccountingCode"], Self::code_text);
        let total_cost = self
            .required(members, path, &["totalCost"], "a number")
            .and_then(|v| self.amount(v, &path.key("totalCost")));
        Some(PurchaseOrderItem { category_procurement_accounting_code: code, total_cost: total_cost? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_read_as_chrono_parses_it() {
        let mut checker = Checker::default();
        let path = Path::Root;
        for year in ["0000", "0001", "1999", "2024", "9999"] {
            for month in 0..=13 {
                for day in 0..=32 {
                    let text = format!("{year}-{month:02}-{day:02}");
                    let read = checker.date(&Value::String(text.as_str().into()), &path);
                    assert_eq!(read, NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok(), "{text}");
                }
            }
        }
    }
}
