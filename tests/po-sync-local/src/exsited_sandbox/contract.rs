//! The purchase order itself: the request bodies Exsited's v3 API takes (checked field by field, each problem
//! named with its JSON path), the purchase order the sandbox keeps, and the shape it answers it in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::decimal::{Decimal, NotDecimal};

/// One entry of Exsited's error answer, `{"code","message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Problem { code, message: message.into() }
    }
}

/// Error codes (Exsited documents the shape, not its codes; these are the sandbox's own, one per kind).
pub mod code {
    pub const REQUIRED: &str = "REQUIRED";
    pub const INVALID_VALUE: &str = "INVALID_VALUE";
    pub const UNKNOWN_FIELD: &str = "UNKNOWN_FIELD";
    pub const UNKNOWN_ACCOUNT: &str = "UNKNOWN_ACCOUNT";
    pub const UNKNOWN_ITEM: &str = "UNKNOWN_ITEM";
    pub const UNKNOWN_LINE: &str = "UNKNOWN_LINE";
    pub const DUPLICATE: &str = "DUPLICATE";
    pub const PO_INACTIVE: &str = "PO_INACTIVE";
}

/// The supplier accounts and catalogue items a purchase order may name.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub accounts: BTreeSet<String>,
    /// item id → its uuid (a line may name an item by either).
    pub items: BTreeMap<String, String>,
}

impl Catalogue {
    pub fn add_item(&mut self, id: &str) {
        self.items.insert(id.to_owned(), name_uuid("item", id));
    }
}

/// Collects problems, each message starting with the JSON path it is about.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, code: &'static str, path: &str, what: impl std::fmt::Display) {
        self.0.push(Problem::new(code, format!("{path}: {what}")));
    }

    fn expected(&mut self, path: &str, what: &str, found: &Value) {
        self.add(code::INVALID_VALUE, path, format!("expected {what}, found {}", describe(found)));
    }

    fn into_result<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() { Ok(value) } else { Err(self.0) }
    }
}

/// A line as a create or an `add` asks for it, checked.
#[derive(Debug, Clone)]
struct NewLine {
    item_id: String,
    item_name: Option<String>,
    quantity: Decimal,
    price: Option<Decimal>,
    price_type: Option<String>,
    accounting_code: Option<Value>,
}

/// A create request, checked.
#[derive(Debug, Clone)]
pub struct NewPurchaseOrder {
    pub id: Option<String>,
    currency: String,
    note: String,
    account_id: String,
    price_tax_inclusive: bool,
    dates: Dates,
    supplier_invoice_id: Option<String>,
    custom_attributes: Option<Value>,
    lines: Vec<NewLine>,
}

#[derive(Debug, Clone, Default)]
struct Dates {
    issue_date: Option<String>,
    due_date: Option<String>,
    expected_completion_date: Option<String>,
}

/// The wrapper key of the create and `/change` bodies; `/information` takes `"purchase-order"` (Exsited's
/// docs spell the two differently, and so must a client).
pub const WRAPPER: &str = "purchase_order";
pub const INFORMATION_WRAPPER: &str = "purchase-order";

const CREATE_FIELDS: &[&str] = &[
    "id",
    "currency",
    "purchase_order_note",
    "account_id",
    "price_tax_inclusive",
    "issue_date",
    "due_date",
    "expected_completion_date",
    "supplier_invoice_id",
    "custom_attributes",
    "lines",
];
/// Fields of Exsited's answer that a request cannot set.
const READ_ONLY_FIELDS: &[&str] =
    &["status", "uuid", "version", "subtotal", "tax", "total", "created_by", "created_on", "last_updated_on"];
const LINE_FIELDS: &[&str] = &[
    "item_id",
    "item_uuid",
    "item_name",
    "item_quantity",
    "item_price_snapshot",
    "item_accounting_code",
    // Kept out of the sandbox's arithmetic (it knows no tax codes), accepted because Exsited's line has it.
    "item_purchase_tax_configuration",
];
const INFORMATION_FIELDS: &[&str] =
    &["issue_date", "due_date", "expected_completion_date", "purchase_order_note", "custom_attributes"];

/// The object under `wrapper`; `other` is the wrapper of the other spelling, named in the problem when a
/// client used it by mistake.
fn unwrap<'a>(
    document: &'a Value,
    wrapper: &str,
    other: &str,
    problems: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    let Some(top) = document.as_object() else {
        problems.add(code::INVALID_VALUE, "(body)", format!("expected a JSON object, found {}", describe(document)));
        return None;
    };
    for key in top.keys().filter(|k| k.as_str() != wrapper) {
        let hint =
            if key == other { format!("; this endpoint takes its fields under \"{wrapper}\"") } else { String::new() };
        problems.add(code::UNKNOWN_FIELD, key, format!("unknown field{hint}"));
    }
    match top.get(wrapper) {
        Some(Value::Object(inner)) => Some(inner),
        Some(found) => {
            problems.expected(wrapper, "an object", found);
            None
        }
        None => {
            problems.add(code::REQUIRED, wrapper, "is required");
            None
        }
    }
}

fn unknown_fields(object: &Map<String, Value>, allowed: &[&str], path: &str, problems: &mut Problems) {
    for key in object.keys().filter(|k| !allowed.contains(&k.as_str())) {
        let what = if READ_ONLY_FIELDS.contains(&key.as_str()) {
            "is set by Exsited, a request cannot set it"
        } else {
            // Refused rather than ignored, so that a misspelt field is found here, not lost in Exsited.
            "unknown field"
        };
        problems.add(code::UNKNOWN_FIELD, &format!("{path}.{key}"), what);
    }
}

fn string(
    object: &Map<String, Value>,
    key: &str,
    path: &str,
    required: bool,
    problems: &mut Problems,
) -> Option<String> {
    let path = format!("{path}.{key}");
    match object.get(key) {
        None | Some(Value::Null) if required => {
            problems.add(code::REQUIRED, &path, "is required");
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if required && text.trim().is_empty() => {
            problems.add(code::REQUIRED, &path, "must not be empty");
            None
        }
        Some(Value::String(text)) => Some(text.clone()),
        Some(found) => {
            problems.expected(&path, "a string", found);
            None
        }
    }
}

/// A decimal held in a JSON string (Exsited takes every number that way; a JSON number is refused).
fn decimal(
    object: &Map<String, Value>,
    key: &str,
    path: &str,
    required: bool,
    problems: &mut Problems,
) -> Option<Decimal> {
    let path = format!("{path}.{key}");
    match object.get(key) {
        None | Some(Value::Null) if required => {
            problems.add(code::REQUIRED, &path, "is required");
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => match Decimal::parse(text) {
            Ok(parsed) => Some(parsed),
            Err(NotDecimal::Syntax) => {
                problems.expected(&path, "a decimal string like \"12.50\"", &Value::String(text.clone()));
                None
            }
            Err(NotDecimal::TooLong) => {
                let what = "has more digits than the sandbox computes with (18 after the point, 38 in all)";
                problems.add(code::INVALID_VALUE, &path, what);
                None
            }
        },
        Some(found) => {
            problems.expected(&path, "a decimal string like \"12.50\"", found);
            None
        }
    }
}

fn date(object: &Map<String, Value>, key: &str, path: &str, problems: &mut Problems) -> Option<String> {
    let text = string(object, key, path, false, problems)?;
    let valid = text.len() == 10 && chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_ok();
    if !valid {
        problems.expected(&format!("{path}.{key}"), "a date string like \"2026-02-09\"", &Value::String(text));
        return None;
    }
    Some(text)
}

fn dates(object: &Map<String, Value>, path: &str, problems: &mut Problems) -> Dates {
    Dates {
        issue_date: date(object, "issue_date", path, problems),
        due_date: date(object, "due_date", path, problems),
        expected_completion_date: date(object, "expected_completion_date", path, problems),
    }
}

/// `[{"name": "...", "value": "..."}]`, kept as given.
fn custom_attributes(object: &Map<String, Value>, path: &str, problems: &mut Problems) -> Option<Value> {
    let path = format!("{path}.custom_attributes");
    let value = object.get("custom_attributes")?;
    let Some(attributes) = value.as_array() else {
        problems.expected(&path, "an array of {\"name\",\"value\"}", value);
        return None;
    };
    for (i, attribute) in attributes.iter().enumerate() {
        match attribute.as_object() {
            Some(attribute) => {
                string(attribute, "name", &format!("{path}[{i}]"), true, problems);
                string(attribute, "value", &format!("{path}[{i}]"), false, problems);
            }
            None => problems.expected(&format!("{path}[{i}]"), "an object {\"name\",\"value\"}", attribute),
        }
    }
    Some(value.clone())
}

/// `item_price_snapshot.pricing_rule.{price, price_type}`: the price (required in a snapshot) and its type.
fn price_snapshot(
    object: &Map<String, Value>,
    path: &str,
    problems: &mut Problems,
) -> Option<(Option<Decimal>, Option<String>)> {
    let path = format!("{path}.item_price_snapshot");
    let snapshot = object.get("item_price_snapshot")?;
    let Some(rule) = snapshot.as_object().map(|s| s.get("pricing_rule")) else {
        problems.expected(&path, "an object {\"pricing_rule\": {...}}", snapshot);
        return Some((None, None));
    };
    let path = format!("{path}.pricing_rule");
    match rule {
        Some(Value::Object(rule)) => {
            // Other keys of Exsited's pricing rule (uuid, version, uom, warehouse) are accepted and not used.
            Some((decimal(rule, "price", &path, true, problems), string(rule, "price_type", &path, false, problems)))
        }
        Some(found) => {
            problems.expected(&path, "an object", found);
            Some((None, None))
        }
        None => {
            problems.add(code::REQUIRED, &path, "is required");
            Some((None, None))
        }
    }
}

/// The item a line names, by `item_id` or `item_uuid` (both: they must agree).
fn item(object: &Map<String, Value>, path: &str, catalogue: &Catalogue, problems: &mut Problems) -> Option<String> {
    let by_id = string(object, "item_id", path, false, problems);
    let by_uuid = string(object, "item_uuid", path, false, problems);
    let known = || catalogue.items.keys().cloned().collect::<Vec<_>>().join(", ");
    let from_id = by_id.as_ref().and_then(|id| {
        let found = catalogue.items.contains_key(id).then(|| id.clone());
        if found.is_none() {
            problems.add(
                code::UNKNOWN_ITEM,
                &format!("{path}.item_id"),
                format!("no item {id:?} (known: {})", known()),
            );
        }
        found
    });
    let from_uuid = by_uuid.as_ref().and_then(|uuid| {
        let found = catalogue.items.iter().find(|(_, u)| *u == uuid).map(|(id, _)| id.clone());
        if found.is_none() {
            problems.add(code::UNKNOWN_ITEM, &format!("{path}.item_uuid"), format!("no item with uuid {uuid:?}"));
        }
        found
    });
    match (by_id, by_uuid, from_id, from_uuid) {
        (None, None, ..) => {
            problems.add(code::REQUIRED, &format!("{path}.item_id"), "is required (or item_uuid)");
            None
        }
        (_, _, Some(a), Some(b)) if a != b => {
            problems.add(code::INVALID_VALUE, &format!("{path}.item_uuid"), format!("names item {b:?}, not {a:?}"));
            None
        }
        (_, _, a, b) => a.or(b),
    }
}

fn quantity(object: &Map<String, Value>, path: &str, required: bool, problems: &mut Problems) -> Option<Decimal> {
    let quantity = decimal(object, "item_quantity", path, required, problems)?;
    if !quantity.is_positive() {
        // Exsited does not say; a PO line for nothing (or less) is refused here.
        problems.add(code::INVALID_VALUE, &format!("{path}.item_quantity"), "must be greater than 0");
    }
    Some(quantity)
}

fn accounting_code(object: &Map<String, Value>, path: &str, problems: &mut Problems) -> Option<Value> {
    let value = object.get("item_accounting_code")?;
    if !value.is_object() {
        problems.expected(
            &format!("{path}.item_accounting_code"),
            "an object like {\"cost_of_goods_sold\": \"5000\"}",
            value,
        );
    }
    Some(value.clone())
}

fn new_line(
    line: &Value,
    path: &str,
    allowed: &[&str],
    catalogue: &Catalogue,
    problems: &mut Problems,
) -> Option<NewLine> {
    let Some(object) = line.as_object() else {
        problems.expected(path, "an object", line);
        return None;
    };
    unknown_fields(object, allowed, path, problems);
    let item_id = item(object, path, catalogue, problems);
    let item_name = string(object, "item_name", path, false, problems);
    let quantity = quantity(object, path, true, problems);
    let (price, price_type) = price_snapshot(object, path, problems).unwrap_or_default();
    let accounting_code = accounting_code(object, path, problems);
    if let Some(tax) = object.get("item_purchase_tax_configuration").filter(|v| !v.is_object()) {
        problems.expected(&format!("{path}.item_purchase_tax_configuration"), "an object", tax);
    }
    Some(NewLine { item_id: item_id?, item_name, quantity: quantity?, price, price_type, accounting_code })
}

/// Checks a create body (`POST /api/v3/purchase-orders`) against Exsited's request and the catalogue.
pub fn parse_create(document: &Value, catalogue: &Catalogue) -> Result<NewPurchaseOrder, Vec<Problem>> {
    let mut problems = Problems::default();
    let Some(order) = unwrap(document, WRAPPER, INFORMATION_WRAPPER, &mut problems) else {
        return Err(problems.0);
    };
    let path = WRAPPER;
    unknown_fields(order, CREATE_FIELDS, path, &mut problems);
    let id = string(order, "id", path, false, &mut problems);
    if let Some(id) = &id
        && (id.trim().is_empty() || id.len() > 100 || id.chars().any(|c| c.is_whitespace() || "/?#%".contains(c)))
    {
        // Exsited does not document its id syntax; the sandbox keeps ids usable as one path segment.
        problems.add(
            code::INVALID_VALUE,
            "purchase_order.id",
            format!("{id:?} is not a usable id (1-100 characters, no spaces or /?#%)"),
        );
    }
    let currency = string(order, "currency", path, true, &mut problems);
    if let Some(currency) = &currency
        && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
    {
        problems.add(
            code::INVALID_VALUE,
            "purchase_order.currency",
            format!("expected a currency code like \"USD\", found {currency:?}"),
        );
    }
    let note = string(order, "purchase_order_note", path, false, &mut problems).unwrap_or_default();
    let account_id = string(order, "account_id", path, true, &mut problems);
    if let Some(account) = &account_id
        && !catalogue.accounts.contains(account)
    {
        let known = catalogue.accounts.iter().cloned().collect::<Vec<_>>().join(", ");
        problems.add(
            code::UNKNOWN_ACCOUNT,
            "purchase_order.account_id",
            format!("no supplier account {account:?} (known: {known})"),
        );
    }
    let price_tax_inclusive = match order.get("price_tax_inclusive") {
        None | Some(Value::Null) => false,
        Some(Value::String(flag)) if flag == "true" => true,
        Some(Value::String(flag)) if flag == "false" => false,
        Some(found) => {
            problems.expected("purchase_order.price_tax_inclusive", "the string \"true\" or \"false\"", found);
            false
        }
    };
    let dates = dates(order, path, &mut problems);
    let supplier_invoice_id = string(order, "supplier_invoice_id", path, false, &mut problems);
    let custom_attributes = custom_attributes(order, path, &mut problems);
    let mut lines = Vec::new();
    match order.get("lines") {
        Some(Value::Array(given)) if !given.is_empty() => {
            for (i, line) in given.iter().enumerate() {
                let line_path = format!("purchase_order.lines[{i}]");
                lines.extend(new_line(line, &line_path, LINE_FIELDS, catalogue, &mut problems));
            }
        }
        Some(Value::Array(_)) => problems.add(code::REQUIRED, "purchase_order.lines", "must hold at least one line"),
        None | Some(Value::Null) => problems.add(code::REQUIRED, "purchase_order.lines", "is required"),
        Some(found) => problems.expected("purchase_order.lines", "an array of lines", found),
    }
    problems.into_result(()).map(|()| NewPurchaseOrder {
        id,
        currency: currency.unwrap_or_default(),
        note,
        account_id: account_id.unwrap_or_default(),
        price_tax_inclusive,
        dates,
        supplier_invoice_id,
        custom_attributes,
        lines,
    })
}

/// A header change (`PATCH …/{id}/information`), checked: only the fields present change.
#[derive(Debug, Clone)]
pub struct InformationChange {
    dates: Dates,
    note: Option<String>,
    custom_attributes: Option<Value>,
}

pub fn parse_information(document: &Value) -> Result<InformationChange, Vec<Problem>> {
    let mut problems = Problems::default();
    let Some(order) = unwrap(document, INFORMATION_WRAPPER, WRAPPER, &mut problems) else {
        return Err(problems.0);
    };
    let path = INFORMATION_WRAPPER;
    unknown_fields(order, INFORMATION_FIELDS, path, &mut problems);
    if !order.keys().any(|k| INFORMATION_FIELDS.contains(&k.as_str())) {
        problems.add(code::REQUIRED, path, format!("nothing to change: give any of {}", INFORMATION_FIELDS.join(", ")));
    }
    let change = InformationChange {
        dates: dates(order, path, &mut problems),
        note: string(order, "purchase_order_note", path, false, &mut problems),
        custom_attributes: custom_attributes(order, path, &mut problems),
    };
    problems.into_result(change)
}

/// One operation of a line change (`POST …/{id}/change`).
#[derive(Debug, Clone)]
enum LineOp {
    Add(NewLine),
    Update {
        uuid: String,
        name: Option<String>,
        quantity: Option<Decimal>,
        price: Option<(Option<Decimal>, Option<String>)>,
        accounting_code: Option<Value>,
    },
    Delete {
        uuid: String,
    },
}

#[derive(Debug, Clone)]
pub struct LinesChange(Vec<LineOp>);

pub fn parse_change(document: &Value, catalogue: &Catalogue) -> Result<LinesChange, Vec<Problem>> {
    let mut problems = Problems::default();
    let Some(order) = unwrap(document, WRAPPER, INFORMATION_WRAPPER, &mut problems) else {
        return Err(problems.0);
    };
    unknown_fields(order, &["lines"], WRAPPER, &mut problems);
    let given = match order.get("lines") {
        Some(Value::Array(given)) if !given.is_empty() => given.as_slice(),
        Some(Value::Array(_)) => {
            problems.add(code::REQUIRED, "purchase_order.lines", "must hold at least one operation");
            &[]
        }
        None | Some(Value::Null) => {
            problems.add(code::REQUIRED, "purchase_order.lines", "is required");
            &[]
        }
        Some(found) => {
            problems.expected("purchase_order.lines", "an array of line operations", found);
            &[]
        }
    };
    let mut ops = Vec::new();
    for (i, line) in given.iter().enumerate() {
        let path = format!("purchase_order.lines[{i}]");
        let Some(object) = line.as_object() else {
            problems.expected(&path, "an object", line);
            continue;
        };
        match object.get("op").and_then(Value::as_str) {
            Some("add") => {
                let allowed: Vec<&str> = LINE_FIELDS.iter().copied().chain(["op"]).collect();
                ops.extend(new_line(line, &path, &allowed, catalogue, &mut problems).map(LineOp::Add));
            }
            Some("update") => {
                unknown_fields(
                    object,
                    &["op", "uuid", "item_name", "item_quantity", "item_price_snapshot", "item_accounting_code"],
                    &path,
                    &mut problems,
                );
                let uuid = string(object, "uuid", &path, true, &mut problems);
                let name = string(object, "item_name", &path, false, &mut problems);
                let quantity = quantity(object, &path, false, &mut problems);
                let price = price_snapshot(object, &path, &mut problems);
                let accounting_code = accounting_code(object, &path, &mut problems);
                // By key, not by parsed value: a field given with a wrong value is reported as that, not as absent.
                let updatable = ["item_name", "item_quantity", "item_price_snapshot", "item_accounting_code"];
                if !updatable.iter().any(|key| object.get(*key).is_some_and(|v| !v.is_null())) {
                    problems.add(
                        code::REQUIRED,
                        &path,
                        "nothing to update: give item_quantity, item_price_snapshot, item_name or item_accounting_code",
                    );
                }
                ops.extend(uuid.map(|uuid| LineOp::Update { uuid, name, quantity, price, accounting_code }));
            }
            Some("delete") => {
                unknown_fields(object, &["op", "uuid"], &path, &mut problems);
                ops.extend(string(object, "uuid", &path, true, &mut problems).map(|uuid| LineOp::Delete { uuid }));
            }
            _ => match object.get("op") {
                None => problems.add(
                    code::REQUIRED,
                    &format!("{path}.op"),
                    "is required (\"add\", \"update\" or \"delete\")",
                ),
                Some(found) => problems.expected(&format!("{path}.op"), "\"add\", \"update\" or \"delete\"", found),
            },
        }
    }
    problems.into_result(LinesChange(ops))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Inactive,
}

#[derive(Debug, Clone)]
struct Line {
    uuid: String,
    version: u64,
    item_id: String,
    item_uuid: String,
    item_name: String,
    quantity: Decimal,
    price: Decimal,
    price_type: Option<String>,
    accounting_code: Option<Value>,
    subtotal: Decimal,
}

/// A purchase order as the sandbox keeps it.
#[derive(Debug, Clone)]
pub struct PurchaseOrder {
    pub id: String,
    pub status: Status,
    uuid: String,
    version: u64,
    currency: String,
    note: String,
    account_id: String,
    price_tax_inclusive: bool,
    dates: Dates,
    supplier_invoice_id: Option<String>,
    custom_attributes: Value,
    created_on: String,
    last_updated_on: String,
    lines: Vec<Line>,
    subtotal: Decimal,
}

/// Who the sandbox says created and changed its purchase orders (`created_by`).
const API_USER: &str = "Sandbox API user";

fn line_from(new: NewLine, catalogue: &Catalogue) -> Line {
    let item_uuid = catalogue.items.get(&new.item_id).cloned().unwrap_or_else(|| name_uuid("item", &new.item_id));
    Line {
        uuid: random_uuid(),
        version: 1,
        // Exsited would show the catalogue item's name; the sandbox's items have none but their id.
        item_name: new.item_name.unwrap_or_else(|| new.item_id.clone()),
        item_id: new.item_id,
        item_uuid,
        quantity: new.quantity,
        // A line without a price snapshot takes the catalogue price; the sandbox's items have none, so 0.
        price: new.price.unwrap_or(Decimal::ZERO),
        price_type: new.price_type,
        accounting_code: new.accounting_code,
        subtotal: Decimal::ZERO,
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl PurchaseOrder {
    /// The new purchase order, totals computed (a 400 problem if they do not fit the sandbox's arithmetic).
    pub fn create(id: String, new: NewPurchaseOrder, catalogue: &Catalogue) -> Result<PurchaseOrder, Problem> {
        let created = now();
        let mut order = PurchaseOrder {
            id,
            status: Status::Active,
            uuid: random_uuid(),
            version: 1,
            currency: new.currency,
            note: new.note,
            account_id: new.account_id,
            price_tax_inclusive: new.price_tax_inclusive,
            dates: new.dates,
            supplier_invoice_id: new.supplier_invoice_id,
            custom_attributes: new.custom_attributes.unwrap_or_else(|| json!([])),
            last_updated_on: created.clone(),
            created_on: created,
            lines: new.lines.into_iter().map(|line| line_from(line, catalogue)).collect(),
            subtotal: Decimal::ZERO,
        };
        order.recompute()?;
        Ok(order)
    }

    /// Each line's quantity × price, and their sum. No tax: the sandbox knows no tax codes.
    fn recompute(&mut self) -> Result<(), Problem> {
        let mut subtotal = Decimal::ZERO;
        for (i, line) in self.lines.iter_mut().enumerate() {
            let too_large = || {
                Problem::new(code::INVALID_VALUE, format!("purchase_order.lines[{i}]: quantity × price is too large"))
            };
            line.subtotal = line.quantity.checked_mul(line.price).ok_or_else(too_large)?;
            subtotal = subtotal.checked_add(line.subtotal).ok_or_else(too_large)?;
        }
        self.subtotal = subtotal;
        Ok(())
    }

    fn touch(&mut self) {
        self.version += 1;
        self.last_updated_on = now();
    }

    fn refuse_if_inactive(&self) -> Result<(), Problem> {
        match self.status {
            Status::Active => Ok(()),
            // Exsited does not say what changing a cancelled PO does; the sandbox refuses it.
            Status::Inactive => Err(Problem::new(
                code::PO_INACTIVE,
                format!("purchase order {} is INACTIVE (cancelled): reactivate it before changing it", self.id),
            )),
        }
    }

    pub fn change_information(&mut self, change: InformationChange) -> Result<(), Problem> {
        self.refuse_if_inactive()?;
        let dates = &mut self.dates;
        for (field, value) in [
            (&mut dates.issue_date, change.dates.issue_date),
            (&mut dates.due_date, change.dates.due_date),
            (&mut dates.expected_completion_date, change.dates.expected_completion_date),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if let Some(note) = change.note {
            self.note = note;
        }
        if let Some(attributes) = change.custom_attributes {
            self.custom_attributes = attributes;
        }
        self.touch();
        Ok(())
    }

    /// Applies the operations in order, all or none; an unknown line uuid is a problem naming it.
    pub fn change_lines(&mut self, change: LinesChange, catalogue: &Catalogue) -> Result<(), Vec<Problem>> {
        self.refuse_if_inactive().map_err(|p| vec![p])?;
        let mut changed = self.clone();
        let mut problems = Problems::default();
        for (i, op) in change.0.into_iter().enumerate() {
            let path = format!("purchase_order.lines[{i}].uuid");
            let position = |lines: &[Line], uuid: &str| lines.iter().position(|l| l.uuid == uuid);
            let missing = |problems: &mut Problems, uuid: &str, id: &str| {
                problems.add(code::UNKNOWN_LINE, &path, format!("no line {uuid:?} on purchase order {id}"));
            };
            match op {
                LineOp::Add(new) => changed.lines.push(line_from(new, catalogue)),
                LineOp::Update { uuid, name, quantity, price, accounting_code } => {
                    match position(&changed.lines, &uuid) {
                        Some(at) => {
                            let line = &mut changed.lines[at];
                            line.item_name = name.unwrap_or_else(|| line.item_name.clone());
                            line.quantity = quantity.unwrap_or(line.quantity);
                            if let Some((price, price_type)) = price {
                                line.price = price.unwrap_or(line.price);
                                line.price_type = price_type.or_else(|| line.price_type.clone());
                            }
                            line.accounting_code = accounting_code.or_else(|| line.accounting_code.clone());
                            line.version += 1;
                        }
                        None => missing(&mut problems, &uuid, &self.id),
                    }
                }
                LineOp::Delete { uuid } => match position(&changed.lines, &uuid) {
                    Some(at) => {
                        changed.lines.remove(at);
                    }
                    None => missing(&mut problems, &uuid, &self.id),
                },
            }
        }
        if problems.0.is_empty() && changed.lines.is_empty() {
            // Exsited does not say; a PO without lines is refused here as it is on create.
            problems.add(code::INVALID_VALUE, "purchase_order.lines", "a purchase order must keep at least one line");
        }
        problems.into_result(())?;
        changed.recompute().map_err(|p| vec![p])?;
        changed.touch();
        *self = changed;
        Ok(())
    }

    /// Cancel or reactivate. Exsited does not say what cancelling a cancelled PO does: here it is a harmless
    /// no-op, so that a retried cancel whose first answer was lost succeeds.
    pub fn set_status(&mut self, status: Status) {
        if self.status != status {
            self.status = status;
            self.touch();
        }
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The purchase order in the shape of Exsited's answer (every amount a decimal string).
    pub fn to_json(&self) -> Value {
        let zero = Decimal::ZERO.to_string();
        let currency_uuid = name_uuid("currency", &self.currency);
        let lines: Vec<Value> = self
            .lines
            .iter()
            .map(|line| {
                let mut rule = json!({ "price": line.price.to_string() });
                if let Some(price_type) = &line.price_type {
                    rule["price_type"] = json!(price_type);
                }
                let mut value = json!({
                    "uuid": line.uuid,
                    "version": line.version.to_string(),
                    "item_uuid": line.item_uuid,
                    "item_id": line.item_id,
                    "item_name": line.item_name,
                    "item_quantity": line.quantity.to_string(),
                    "item_price_snapshot": { "pricing_rule": rule },
                    "subtotal": line.subtotal.to_string(),
                    "tax": zero,
                    "total": line.subtotal.to_string(),
                });
                if let Some(code) = &line.accounting_code {
                    value["item_accounting_code"] = code.clone();
                }
                value
            })
            .collect();
        let mut order = json!({
            "status": match self.status { Status::Active => "ACTIVE", Status::Inactive => "INACTIVE" },
            "id": self.id,
            "uuid": self.uuid,
            "version": self.version.to_string(),
            "currency": {
                "uuid": currency_uuid,
                "name": self.currency,
                "link": format!("/api/v3/settings/currencies/{currency_uuid}"),
            },
            "subtotal": self.subtotal.to_string(),
            "tax": zero,
            "total": self.subtotal.to_string(),
            "price_tax_inclusive": self.price_tax_inclusive.to_string(),
            "purchase_order_note": self.note,
            "account_id": self.account_id,
            "created_by": API_USER,
            "created_on": self.created_on,
            "last_updated_by": API_USER,
            "last_updated_on": self.last_updated_on,
            "custom_attributes": self.custom_attributes,
            "lines": lines,
        });
        for (key, value) in [
            ("issue_date", &self.dates.issue_date),
            ("due_date", &self.dates.due_date),
            ("expected_completion_date", &self.dates.expected_completion_date),
            ("supplier_invoice_id", &self.supplier_invoice_id),
        ] {
            if let Some(value) = value {
                order[key] = json!(value);
            }
        }
        order
    }
}

/// A JSON value in a problem message: its text for scalars, its kind for the rest.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("string {:?}", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A random version-4 UUID in its usual text form.
pub fn random_uuid() -> String {
    uuid_text(fastrand::u128(..).to_be_bytes())
}

/// The same UUID-shaped value for the same kind and name (catalogue items, currencies), so it is stable across
/// resets and runs: FNV-1a over the text, twice.
pub fn name_uuid(kind: &str, name: &str) -> String {
    let fnv = |seed: u64| {
        format!("{kind}:{name}").bytes().fold(seed, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    };
    let high = fnv(0xcbf2_9ce4_8422_2325);
    let low = fnv(high);
    uuid_text(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
}

fn uuid_text(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
