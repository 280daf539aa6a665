//! Komet Sales' "PO Reconciliation Invoices" webhook payload: typed, exact, and parsed leniently where
//! Komet's own documentation is inconsistent (see README, "The Komet payload", and the fixtures in
//! `shared/tests/fixtures/`).
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

use crate::json::{self, Value};
use crate::money::{self, MAX_AMOUNT};
use chrono::NaiveDate;
pub use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One Komet purchase order with its vendor invoices, in normalised form. Its text is [`CompactString`]: reads
/// like a `String`, and is held in place up to 24 bytes, so most of a PO's codes and numbers cost no allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseOrder {
    /// Komet's purchase order id; also the SQS message group, so updates to one PO stay in order.
    pub id: u64,
    pub po_number: CompactString,
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
    pub code: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<CompactString>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorInvoice {
    pub invoice_number: CompactString,
    #[serde(with = "money::json_number")]
    pub invoice_amount: Decimal,
    #[serde(with = "money::json_number")]
    pub total_additional_charges: Decimal,
    /// The invoice PDF, always with a scheme (`https://` is added when Komet leaves it out).
    /// Komet's links stop working six hours after the webhook was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<CompactString>,
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
    pub code: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_accounting_code: Option<CompactString>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub vendor_type: Option<CompactString>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseOrderItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_procurement_accounting_code: Option<CompactString>,
    #[serde(with = "money::json_number")]
    pub total_cost: Decimal,
}

impl PurchaseOrder {
    /// All items of all invoices, in document order.
    pub fn items(&self) -> impl Iterator<Item = &PurchaseOrderItem> {
        self.vendor_invoices.iter().flat_map(|invoice| invoice.purchase_order_items.iter())
    }
}

impl PurchaseOrder {
    /// Appends the PO's JSON to `out`: the same bytes as `serde_json::to_writer(out, self)` (the derived
    /// `Serialize`; tests hold the two together), written straight into the queue message's buffer.
    pub fn write_json(&self, out: &mut String) {
        use crate::json_out::{push_date, push_decimal, push_str, push_u64};
        out.push_str("{\"id\":");
        push_u64(out, self.id);
        out.push_str(",\"poNumber\":");
        push_str(out, &self.po_number);
        if let Some(date) = self.ship_date {
            out.push_str(",\"shipDate\":");
            push_date(out, date);
        }
        if let Some(date) = self.arrival_date {
            out.push_str(",\"arrivalDate\":");
            push_date(out, date);
        }
        if let Some(sub_total) = &self.sub_total {
            out.push_str(",\"subTotal\":");
            push_decimal(out, sub_total);
        }
        out.push_str(",\"total\":");
        push_decimal(out, &self.total);
        if let Some(location) = &self.location {
            out.push_str(",\"location\":");
            let mut members = ObjectOut::open(out);
            if let Some(id) = location.id {
                push_u64(members.key("id"), id);
            }
            if let Some(code) = &location.code {
                push_str(members.key("code"), code);
            }
            if let Some(name) = &location.name {
                push_str(members.key("name"), name);
            }
            members.close();
        }
        out.push_str(",\"vendorInvoices\":[");
        for (i, invoice) in self.vendor_invoices.iter().enumerate() {
            out.push_str(if i == 0 { "{\"invoiceNumber\":" } else { ",{\"invoiceNumber\":" });
            push_str(out, &invoice.invoice_number);
            out.push_str(",\"invoiceAmount\":");
            push_decimal(out, &invoice.invoice_amount);
            out.push_str(",\"totalAdditionalCharges\":");
            push_decimal(out, &invoice.total_additional_charges);
            if let Some(file) = &invoice.file {
                out.push_str(",\"file\":");
                push_str(out, file);
            }
            if let Some(vendor) = &invoice.vendor {
                out.push_str(",\"vendor\":");
                let mut members = ObjectOut::open(out);
                if let Some(id) = vendor.id {
                    push_u64(members.key("id"), id);
                }
                for (key, text) in [
                    ("code", &vendor.code),
                    ("name", &vendor.name),
                    ("vendorAccountingCode", &vendor.vendor_accounting_code),
                    ("type", &vendor.vendor_type),
                ] {
                    if let Some(text) = text {
                        push_str(members.key(key), text);
                    }
                }
                members.close();
            }
            out.push_str(",\"purchaseOrderItems\":[");
            for (j, item) in invoice.purchase_order_items.iter().enumerate() {
                out.push_str(if j == 0 { "{" } else { ",{" });
                if let Some(code) = &item.category_procurement_accounting_code {
                    out.push_str("\"categoryProcurementAccountingCode\":");
                    push_str(out, code);
                    out.push(',');
                }
                out.push_str("\"totalCost\":");
                push_decimal(out, &item.total_cost);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push_str("]}");
    }
}

/// An object whose members are all optional: each key after the first gets its comma.
struct ObjectOut<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> ObjectOut<'o> {
    fn open(out: &'o mut String) -> Self {
        out.push('{');
        ObjectOut { out, first: true }
    }

    /// Writes `"key":` and hands back the buffer for the value.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    fn close(self) {
        self.out.push('}');
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

/// Parses and validates a webhook body. Never panics; linear in the body's size.
pub fn parse_webhook(body: &[u8]) -> Result<PurchaseOrder, PayloadError> {
    // A valid body is read in one pass, straight into the PO; anything the direct reader is not sure of is read
    // again the full way, which names every problem (see `direct`).
    match direct::read(body) {
        Some(po) => Ok(po),
        None => parse_and_check(body),
    }
}

mod direct;

/// The full way: the document as a tree, then every member checked, every problem named with its path.
fn parse_and_check(body: &[u8]) -> Result<PurchaseOrder, PayloadError> {
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

/// A date exactly as Komet documents it, `YYYY-MM-DD` (chrono alone would also take "2020-3-7"): what
/// `NaiveDate::parse_from_str(text, "%Y-%m-%d")` gives for such text, without interpreting a format string.
fn shaped_date(text: &str) -> Option<NaiveDate> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    let number = |range: std::ops::Range<usize>| text.get(range).and_then(|digits| digits.parse::<u32>().ok());
    match (number(0..4), number(5..7), number(8..10)) {
        (Some(year), Some(month), Some(day)) if shaped => NaiveDate::from_ymd_opt(year as i32, month, day),
        _ => None,
    }
}

/// Why a `file` is not an invoice link.
enum LinkRefusal<'t> {
    NotAUrl,
    Scheme(&'t str),
}

/// An invoice link: kept when http(s), given `https://` when Komet omits the scheme, refused otherwise (it
/// ends up as a link in an e-mail). Read in place and allocated once, at its final size.
fn invoice_link(text: &str) -> Result<CompactString, LinkRefusal<'_>> {
    let text = text.trim();
    let has_scheme = |scheme: &str| text.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme));
    if has_scheme("https://") || has_scheme("http://") {
        Ok(text.into())
    } else if text.is_empty() || text.contains(char::is_whitespace) {
        Err(LinkRefusal::NotAUrl)
    } else if let Some((scheme, _)) = text.split_once(':').filter(|(scheme, _)| !scheme.contains(['/', '.'])) {
        Err(LinkRefusal::Scheme(scheme))
    } else {
        let mut link = CompactString::with_capacity("https://".len() + text.len());
        link.push_str("https://");
        link.push_str(text);
        Ok(link)
    }
}

/// An amount Komet may send: exact, not negative, at most [`MAX_AMOUNT`] (what [`Checker::amount`] accepts).
fn acceptable_amount(text: &str) -> Option<Decimal> {
    money::parse_exact(text).ok().filter(|amount| !amount.is_sign_negative() && money::within_max(amount))
}

/// `name == key`, with the cheap differences (length, first byte) ruled out before a comparison call: most
/// members of an object are compared with a name they are not.
fn same_key(name: &str, key: &str) -> bool {
    name.len() == key.len() && name.as_bytes().first() == key.as_bytes().first() && name == key
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
            let Some(name) = names.iter().find(|name| same_key(name, key)) else { continue };
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

    fn text(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<CompactString> {
        match value {
            Value::String(s) => Some(CompactString::from(s.as_ref())),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    fn identifier(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<CompactString> {
        let text = self.text(value, path)?;
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
    fn code(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<CompactString> {
        match value {
            Value::String(s) => Some(CompactString::from(s.as_ref())),
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
    fn link(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<CompactString> {
        let Value::String(text) = value else {
            self.expected(path, "a string", value);
            return None;
        };
        match invoice_link(text) {
            Ok(link) => Some(link),
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
            .and_then(|v| self.identifier(v, &root.key("poNumber")));
        let ship_date = self.optional(members, &root, &["shipDate"], Self::date);
        let arrival_date = self.optional(members, &root, &["arrivalDate"], Self::date);
        let sub_total = self.optional(members, &root, &["subTotal", "subtotal"], Self::amount);
        let total =
            self.required(members, &root, &["total"], "a number").and_then(|v| self.amount(v, &root.key("total")));
        let location = self.optional(members, &root, &["location"], Self::location);
        let vendor_invoices = self
            .required(members, &root, &["vendorInvoices"], "an array")
            .and_then(|v| self.list(v, &root.key("vendorInvoices"), Self::vendor_invoice));
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

    fn list<T>(
        &mut self,
        value: &Value<'_>,
        path: &Path<'_>,
        mut read: impl FnMut(&mut Self, &Value<'_>, &Path<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Value::Array(values) = value else {
            self.expected(path, "an array", value);
            return None;
        };
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
            name: self.optional(members, path, &["name"], Self::text),
        })
    }

    fn vendor(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<Vendor> {
        let (members, in_array) = self.single_object(value, path)?;
        let indexed = path.index(0);
        let path = if in_array { &indexed } else { path };
        Some(Vendor {
            id: self.optional(members, path, &["id"], Self::whole_number),
            code: self.optional(members, path, &["code"], Self::code),
            name: self.optional(members, path, &["name"], Self::text),
            vendor_accounting_code: self.optional(members, path, &["vendorAccountingCode"], Self::text),
            vendor_type: self.optional(members, path, &["type"], Self::text),
        })
    }

    fn vendor_invoice(&mut self, value: &Value<'_>, path: &Path<'_>) -> Option<VendorInvoice> {
        let members = self.object(value, path)?;
        let invoice_number = self
            .required(members, path, &["invoiceNumber"], "a string")
            .and_then(|v| self.identifier(v, &path.key("invoiceNumber")));
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
            .and_then(|v| self.list(v, &path.key("purchaseOrderItems"), Self::item));
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
        let code = self.optional(members, path, &["categoryProcurementAccountingCode"], Self::text);
        let total_cost = self
            .required(members, path, &["totalCost"], "a number")
            .and_then(|v| self.amount(v, &path.key("totalCost")));
        Some(PurchaseOrderItem { category_procurement_accounting_code: code, total_cost: total_cost? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: [&str; 4] = [
        include_str!("../tests/fixtures/komet-clean-po.json"),
        include_str!("../tests/fixtures/komet-doc-sample.json"),
        include_str!("../tests/fixtures/komet-optional-fields-absent.json"),
        include_str!("../tests/fixtures/komet-several-vendors.json"),
    ];

    /// Alterations of the doc sample, each (what, into): valid ones the direct reader must take as the full
    /// reader does, and ones it must leave to the full reader (which refuses them, or reads them the same).
    const ALTERATIONS: &[(&str, &str)] = &[
        ("\"subtotal\": 60.0", "\"subTotal\": 60.0"),
        ("\"subtotal\": 60.0", "\"subtotal\": null"),
        ("\"subtotal\": 60.0", "\"subtotal\": 60.0, \"subTotal\": 60.0"),
        ("\"subtotal\": 60.0", "\"subtotal\": 60.0, \"subTotal\": 61.0"),
        ("\"subtotal\": 60.0,", ""),
        ("\"total\": 60.0", "\"total\": 6e1"),
        ("\"total\": 60.0", "\"total\": 6.0E+1"),
        ("\"total\": 60.0", "\"total\": -0.0"),
        ("\"total\": 60.0", "\"total\": -1"),
        ("\"total\": 60.0", "\"total\": 1000000000000.01"),
        ("\"total\": 60.0", "\"total\": 1e400"),
        ("\"total\": 60.0", "\"total\": 060.0"),
        ("\"total\": 60.0", "\"total\": 60."),
        ("\"total\": 60.0", "\"total\": \"60.0\""),
        ("\"total\": 60.0", "\"total\": null"),
        ("\"total\": 60.0", "\"total\": 60.0000000000000000000000000000000000000000000000000000000000000000"),
        ("\"id\" : 12345", "\"id\" : 0"),
        ("\"id\" : 12345", "\"id\" : -1"),
        ("\"id\" : 12345", "\"id\" : 1.5"),
        ("\"id\" : 12345", "\"id\" : 18446744073709551616"),
        ("\"id\" : 12345", "\"id\" : 12345, \"id\" : 12345"),
        ("\"id\" : 12345,", ""),
        ("\"poNumber\": \"P002271\"", "\"poNumber\": \"  \""),
        ("\"poNumber\": \"P002271\"", "\"poNumber\": \"P00\\u0032271\""),
        ("\"poNumber\": \"P002271\"", "\"po\\u004eumber\": \"P002271\""),
        ("\"poNumber\": \"P002271\"", "\"poNumber\": \"P002271\", \"extra\": [1, {}]"),
        ("\"shipDate\": \"2020-03-27\"", "\"shipDate\": null"),
        ("\"shipDate\": \"2020-03-27\"", "\"shipDate\": \"2020-3-27\""),
        ("\"shipDate\": \"2020-03-27\"", "\"shipDate\": \"2020-02-30\""),
        ("\"shipDate\": \"2020-03-27\",", ""),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": null"),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": []"),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": {}"),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": [{\"code\": 2},]"),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": [{}, {}]"),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": [null]"),
        ("\"location\":{ \"id\": 3, \"code\": \"02\", \"name\": \"Chicago\" }", "\"location\": \"Chicago\""),
        ("\"code\": \"02\"", "\"code\": 2"),
        ("\"code\": \"02\"", "\"code\": -2"),
        ("\"code\": \"02\"", "\"code\": 2.5"),
        ("\"code\": \"02\"", "\"code\": null"),
        ("\"name\": \"Chicago\"", "\"name\": 7"),
        ("\"name\": \"Chicago\"", "\"name\": \"Chi\tcago\""),
        ("\"name\": \"Chicago\"", "\"name\": \"Ñandú 🌹\""),
        ("\"vendorAccountingCode\": null", "\"vendorAccountingCode\": \"2000-AV\""),
        ("\"vendorAccountingCode\": null, ", ""),
        ("\"vendorAccountingCode\": null", "\"vendorAccountingCode\": null, \"rating\": 5"),
        ("\"type\": \"Fresh Cut\", }", "\"type\": \"Fresh Cut\" }"),
        ("\"type\": \"Fresh Cut\", }", "\"type\": \"Fresh Cut\",, }"),
        ("{ \"id\": 29697", "[{ \"id\": 29697"),
        ("\"Fresh Cut\", }", "\"Fresh Cut\", }]"),
        ("\"file\": \"www.kometsales.com/url\"", "\"file\": \" HTTPS://x.y/z \""),
        ("\"file\": \"www.kometsales.com/url\"", "\"file\": \"ftp://x.y/z\""),
        ("\"file\": \"www.kometsales.com/url\"", "\"file\": \"mailto:a@b.c\""),
        ("\"file\": \"www.kometsales.com/url\"", "\"file\": \"a b\""),
        ("\"file\": \"www.kometsales.com/url\"", "\"file\": \"\""),
        ("\"file\": \"www.kometsales.com/url\"", "\"file\": null"),
        ("\"totalAdditionalCharges\": 0.0", "\"totalAdditionalCharges\": null"),
        ("\"totalAdditionalCharges\": 0.0, ", ""),
        ("\"totalAdditionalCharges\": 0.0", "\"totalAdditionalCharges\": 2.5"),
        ("\"invoiceNumber\": \"01-P002271\"", "\"invoiceNumber\": \"01-P002272\""),
        ("\"invoiceNumber\": \"01-P002271\"", "\"invoiceNumber\": null"),
        ("\"categoryProcurementAccountingCode\": \"CGEN\", ", ""),
        ("\"categoryProcurementAccountingCode\": \"CGEN\"", "\"categoryProcurementAccountingCode\": null"),
        ("{ \"categoryProcurementAccountingCode\": \"CGEN\", \"totalCost\": 10.0 }", "{}"),
        ("\"totalCost\": 3.0 }", "\"totalCost\": 3.0, }"),
        ("\"totalCost\": 7.0 } ]", "\"totalCost\": 7.0 }, ]"),
        ("\"totalCost\": 7.0 } ]", "\"totalCost\": 7.0 } ] , "),
        ("\"purchaseOrderItems\": [", "\"purchaseOrderItems\": [ ], \"x\": ["),
        ("\"vendorInvoices\": [", "\"vendorInvoices\": null, \"y\": ["),
        ("{ \"id\" : 12345", "\u{feff}{ \"id\" : 12345"),
        ("{ \"id\" : 12345", "\t\r\n{\n\"id\"\n:\t12345"),
        ("] }", "] }  \n"),
        ("] }", "] } x"),
        ("] }", "]"),
        (", ", ","),
        (", ", " ,\n "),
        (": ", ":"),
    ];

    /// The direct reader either reads `body` exactly as the full reader does, or leaves it to it.
    fn agree(body: &str) -> Result<Option<PurchaseOrder>, String> {
        let full = parse_and_check(body.as_bytes());
        match direct::read(body.as_bytes()) {
            None => Ok(None),
            Some(po) if full.as_ref() == Ok(&po) => Ok(Some(po)),
            Some(po) => Err(format!("direct {po:?}, full {full:?} for {body}")),
        }
    }

    #[test]
    fn every_fixture_is_read_directly_to_what_the_full_reader_reads() {
        for fixture in FIXTURES {
            assert!(agree(fixture).unwrap().is_some(), "{fixture}");
        }
    }

    #[test]
    fn altered_bodies_are_read_as_the_full_reader_reads_them_or_left_to_it() {
        let sample = FIXTURES[1];
        let mut direct = 0;
        for (i, (what, into)) in ALTERATIONS.iter().enumerate() {
            assert!(sample.contains(what), "{what}");
            for altered in [sample.replacen(what, into, 1), sample.replace(what, into)] {
                direct += usize::from(agree(&altered).unwrap().is_some());
                // And each alteration together with each later one.
                for (then, into) in &ALTERATIONS[i + 1..] {
                    agree(&altered.replacen(then, into, 1)).unwrap();
                }
            }
        }
        // The valid spellings are read directly (a reader that always gave up would agree too).
        assert!(direct > ALTERATIONS.len() / 2, "{direct}");
    }

    proptest! {
        #[test]
        fn any_altered_byte_or_cut_is_read_as_the_full_reader_reads_it_or_left_to_it(
            fixture in 0usize..4, position in 0usize..2000, byte in any::<u8>(), cut in 0usize..2000,
        ) {
            let mut body = FIXTURES[fixture].as_bytes().to_vec();
            let position = position % body.len();
            body[position] = byte;
            let cut = (cut % body.len()).max(position + 1);
            for body in [&body[..], &body[..cut]] {
                let full = parse_and_check(body);
                if let Some(po) = direct::read(body) {
                    prop_assert_eq!(Ok(po), full);
                }
            }
        }
    }

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
