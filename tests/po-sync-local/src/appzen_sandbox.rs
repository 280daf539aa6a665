//! A local AppZen: `POST /dictionary-data-services/purchase-order` with AppZen's documented contract, so the
//! real `reconcile` binary can be exercised without an AppZen account.
//!
//! What it enforces (from AppZen's "Create or update a purchase order" page):
//! - the three headers `x-api-key`, `customer-id`, `customer-key`: a missing one, or a wrong customer id or
//!   key, is 401; a wrong `x-api-key` is 403 ("may not have permission");
//! - a JSON body (`Content-Type: application/json`, else 415) holding every field AppZen marks required, each
//!   of its documented type; numbers must be JSON numbers (`500.10`, never `"500.10"`); the
//!   `appzen_*_status` fields take AppZen's values `PO_ISSUED` / `PO_CLOSED`; dates are `YYYY-MM-DD`.
//!   Money fields are objects `{"amount": number, "currency": string}`: AppZen's field table calls some of
//!   them "Number", its sample request shows objects, and the sample is what the API takes. Fields the
//!   table does not list are accepted (AppZen's own sample carries `external_unique_id`).
//!
//! It answers 201 `{"uuid","status":"CREATED"}` for a new `purchase_order_number`, 200 `UPDATED` (same uuid)
//! for a known one, and AppZen's error shape `{timestamp, status, error, message}` otherwise, the message
//! naming every problem with its path.
//!
//! `GET /dictionary-data-services/purchase-order/purchase-order-number/{number}` (AppZen's "Get details of a
//! purchase order by purchase order number", same headers) answers what the last accepted upsert of that number
//! set, in the upsert's shape with AppZen's `uuid` and `entity_name` added, or 404. To change a PO "behind
//! po-sync's back", upsert it directly.
//!
//! Control endpoints (for tests and for a developer with `curl`):
//! - `GET /_sandbox/requests`: every request received, oldest first (headers without the secrets, the exact
//!   body text, and the answer given);
//! - `POST /_sandbox/fail` `{"times": 2, "status": 500}`: answer the next upserts with that status instead
//!   (`"retry_after": 1` adds a `Retry-After` header, `"delay_ms": 3000` answers slowly, `"message"` sets the
//!   error message; `"po_number": "P1"` fails only that PO's upserts; `"times": null` means until reset);
//! - `POST /_sandbox/latency` `{"ms": 300}`: every upsert answers that much later (AppZen's own latency);
//! - `POST /_sandbox/reset`: forget requests, purchase orders, pending failures and the latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::sandbox_kit::{self, injected_failure, recorded_request};

/// A sandbox serving in the background; stops when dropped.
pub type RunningSandbox = sandbox_kit::RunningSandbox<Sandbox>;

/// AppZen's upsert path.
pub const UPSERT_PATH: &str = "/dictionary-data-services/purchase-order";

/// AppZen's read of one PO by its number.
pub const READ_PATH: &str = "/dictionary-data-services/purchase-order/purchase-order-number/{number}";

/// The three values AppZen checks on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub api_key: String,
    pub customer_id: String,
    pub customer_key: String,
}

impl Default for Credentials {
    /// The credentials of the local pipeline; not secrets, they only open this sandbox.
    fn default() -> Self {
        Credentials {
            api_key: "local-api-key".to_owned(),
            customer_id: "local-customer".to_owned(),
            customer_key: "local-customer-key".to_owned(),
        }
    }
}

/// Headers never recorded: they are credentials.
const SECRET_HEADERS: [&str; 4] = ["x-api-key", "customer-key", "authorization", "cookie"];

recorded_request! {
    /// One request as the sandbox received it, and what it answered: the body exactly as sent, the headers
    /// without `x-api-key`, `customer-key`, `authorization` and `cookie`.
    pub struct RecordedRequest {}
}

impl RecordedRequest {
    /// Whether this request was an upsert the sandbox accepted (200 or 201).
    pub fn accepted(&self) -> bool {
        matches!(self.response_status, Some(200 | 201))
    }
}

injected_failure! {
    /// A failure to inject into the next upserts (an upsert `delay_after_ms` holds back was applied: the PO
    /// was updated).
    pub struct Failure {
        /// Only upserts of this `purchase_order_number` fail (and count against `times`); `None`: every upsert.
        pub po_number: Option<String>,
    }
}

impl Failure {
    fn applies_to(&self, body: &[u8]) -> bool {
        match &self.po_number {
            None => true,
            Some(number) => serde_json::from_slice::<Value>(body)
                .is_ok_and(|b| b.get("purchase_order_number").and_then(Value::as_str) == Some(number)),
        }
    }
}

/// Decides, per upsert (given its body), a failure to answer instead when none is queued with
/// [`Sandbox::fail_next`]: the soak's seeded random faults.
pub type FaultHook = Arc<dyn Fn(&[u8]) -> Option<Failure> + Send + Sync>;

/// The header every upsert answer carries, as AppZen's do: `sandbox-<seq>`, naming the request in
/// `/_sandbox/requests`, so a caller's log line leads to the request.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

#[derive(Default)]
struct Ledger {
    requests: Vec<RecordedRequest>,
    /// purchase_order_number → what AppZen holds for it.
    purchase_orders: HashMap<String, HeldPo>,
    failures: Vec<Failure>,
}

/// A purchase order as the sandbox holds it: its uuid and the body of the last accepted upsert, exactly.
struct HeldPo {
    uuid: String,
    body: Bytes,
}

struct Shared {
    credentials: Credentials,
    ledger: Mutex<Ledger>,
    fault_hook: Mutex<Option<FaultHook>>,
    /// Every upsert's answer waits this long (AppZen's own latency), in milliseconds.
    latency_ms: AtomicU64,
    /// Upserts being answered now, and the most there were at once since the last reset.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts an upsert as in flight while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        sandbox_kit::lock(&self.ledger)
    }
}

/// A handle on the sandbox's state, usable while it serves.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl Sandbox {
    pub fn new(credentials: Credentials) -> Self {
        Sandbox {
            shared: Arc::new(Shared {
                credentials,
                ledger: Mutex::new(Ledger::default()),
                fault_hook: Mutex::new(None),
                latency_ms: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Consulted for every upsert that no queued failure answers (`None` removes it).
    pub fn set_fault_hook(&self, hook: Option<FaultHook>) {
        *sandbox_kit::lock(&self.shared.fault_hook) = hook;
    }

    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// The axum router (upsert plus control endpoints).
    pub fn router(&self) -> Router {
        Router::new()
            .route(UPSERT_PATH, post(upsert))
            .route(READ_PATH, get(read_purchase_order))
            .merge(sandbox_kit::control_routes(Sandbox::requests, Sandbox::fail_next, Sandbox::reset, control_error))
            .route("/_sandbox/latency", post(set_latency))
            // Komet's file server, for the invoice archive: PDFs, links that have expired, a page that is no PDF.
            .route("/invoices/{name}", get(invoice_pdf))
            .route("/expired/{name}", get(expired_link))
            .route("/not-a-pdf/{name}", get(not_a_pdf))
            .fallback(not_found)
            .with_state(self.clone())
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.ledger().requests.clone()
    }

    /// The upserts received so far (requests to the upsert path), oldest first.
    pub fn upserts(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path == UPSERT_PATH).collect()
    }

    /// Makes the next upserts fail as described.
    pub fn fail_next(&self, failure: Failure) {
        self.shared.ledger().failures.push(failure);
    }

    /// Every upsert (answered normally or not) waits `latency` first: AppZen's own response time.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// The most upserts that were being answered at once since the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets the PO of this number, as if AppZen had lost it (AppZen documents no delete); whether it held one.
    pub fn forget(&self, po_number: &str) -> bool {
        self.shared.ledger().purchase_orders.remove(po_number).is_some()
    }

    pub fn reset(&self) {
        *self.shared.ledger() = Ledger::default();
        self.shared.latency_ms.store(0, Ordering::SeqCst);
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// Starts serving on 127.0.0.1 (port 0: a free one) in a background task.
    pub async fn spawn(self, port: u16) -> std::io::Result<RunningSandbox> {
        let router = self.router();
        sandbox_kit::spawn(self, router, port).await
    }
}

async fn upsert(State(sandbox): State<Sandbox>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let _in_flight = InFlight::enter(&sandbox.shared);
    let seq = record(&sandbox, &method, &uri, &headers, &body);
    let latency = sandbox.shared.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let hook = sandbox_kit::lock(&sandbox.shared.fault_hook).clone();
    let failure = next_failure(&sandbox, &body).or_else(|| hook.and_then(|decide| decide(&body)));
    let delay_after = failure.as_ref().and_then(|f| f.delay_after_ms);
    if let Some(delay) = failure.as_ref().and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let answer = match failure {
        Some(Failure { status: Some(status), retry_after, message, .. }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message.unwrap_or_else(|| format!("Error code : {} - injected by the sandbox", error_code()));
            let mut answer = Answer::error(status, message);
            answer.retry_after = retry_after;
            answer
        }
        _ => process(&sandbox, &headers, &body),
    };
    sandbox_kit::record_answer(
        &mut sandbox.shared.ledger().requests,
        seq,
        answer.status.as_u16(),
        answer.body.to_string(),
    );
    if let Some(delay) = delay_after {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = answer.into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("sandbox-{seq}")) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}

fn record(sandbox: &Sandbox, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> u64 {
    // AppZen's secrets travel only in headers: the body is kept exactly.
    let headers = sandbox_kit::recorded_headers(headers, &SECRET_HEADERS, |value| value);
    let body = String::from_utf8_lossy(body).into_owned();
    sandbox_kit::record(&mut sandbox.shared.ledger().requests, method, uri, headers, body).seq
}

/// The first queued failure that applies to this upsert, counted down.
fn next_failure(sandbox: &Sandbox, body: &[u8]) -> Option<Failure> {
    sandbox_kit::take_failure(&mut sandbox.shared.ledger().failures, |failure| failure.applies_to(body))
}

/// The status and JSON the sandbox answers.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<u32>,
}

impl Answer {
    fn ok(status: StatusCode, body: Value) -> Self {
        Answer { status, body, retry_after: None }
    }

    /// AppZen's error shape: `{"timestamp","status","error","message"}`.
    fn error(status: StatusCode, message: String) -> Self {
        Answer {
            status,
            body: json!({
                "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
                "status": status.as_u16(),
                "error": status.canonical_reason().unwrap_or("Error"),
                "message": message,
            }),
            retry_after: None,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// AppZen prefixes its messages with an opaque error code (`Error code : 17e3338d - …`).
fn error_code() -> String {
    format!("{:08x}", fastrand::u32(..))
}

fn process(sandbox: &Sandbox, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Err(answer) = check_credentials(&sandbox.shared.credentials, headers) {
        return answer;
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return Answer::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Error code : {} - Content type '{content_type}' not supported; send application/json",
                error_code()
            ),
        );
    }
    let document: Value = match serde_json::from_slice(body) {
        Ok(document) => document,
        Err(e) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                format!("Error code : {} - JSON parse error: {e}", error_code()),
            );
        }
    };
    let problems = validate_purchase_order(&document);
    if !problems.is_empty() {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            format!("Error code : {} - {}", error_code(), problems.join("; ")),
        );
    }
    let number = document["purchase_order_number"].as_str().unwrap_or_default().to_owned();
    let body = Bytes::copy_from_slice(body);
    let mut ledger = sandbox.shared.ledger();
    match ledger.purchase_orders.get_mut(&number) {
        Some(held) => {
            held.body = body;
            Answer::ok(StatusCode::OK, json!({ "uuid": held.uuid, "status": "UPDATED" }))
        }
        None => {
            let uuid = random_uuid();
            ledger.purchase_orders.insert(number, HeldPo { uuid: uuid.clone(), body });
            Answer::ok(StatusCode::CREATED, json!({ "uuid": uuid, "status": "CREATED" }))
        }
    }
}

/// `GET …/purchase-order-number/{number}`: the PO as AppZen's "Get details of a purchase order by purchase
/// order number" answers it: the fields last upserted (their exact text), with AppZen's own `uuid` and
/// `entity_name` added; 404 in AppZen's error shape for a number it does not hold.
async fn read_purchase_order(
    State(sandbox): State<Sandbox>,
    axum::extract::Path(number): axum::extract::Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let seq = record(&sandbox, &method, &uri, &headers, &Bytes::new());
    let answer = match check_credentials(&sandbox.shared.credentials, &headers) {
        Err(refused) => Err(refused),
        Ok(()) => match sandbox.shared.ledger().purchase_orders.get(&number) {
            Some(held) => Ok(held_answer(held)),
            None => Err(Answer::error(
                StatusCode::NOT_FOUND,
                format!("Error code : {} - No purchase order found with purchase_order_number {number}", error_code()),
            )),
        },
    };
    let (status, text) = match &answer {
        Ok(body) => (StatusCode::OK, String::from_utf8_lossy(body).into_owned()),
        Err(refused) => (refused.status, refused.body.to_string()),
    };
    let text = text.chars().take(2_000).collect();
    sandbox_kit::record_answer(&mut sandbox.shared.ledger().requests, seq, status.as_u16(), text);
    let mut response = match answer {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(refused) => refused.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&format!("sandbox-{seq}")) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}

/// The held body with AppZen's own fields in front: the upserted text is kept as it is, amounts included.
fn held_answer(held: &HeldPo) -> Bytes {
    let fields = json!({ "uuid": held.uuid, "entity_name": "Sandbox entity" }).to_string();
    let rest = held.body.trim_ascii_start().strip_prefix(b"{").unwrap_or_default();
    let mut answer = Vec::with_capacity(fields.len() + rest.len() + 1);
    answer.extend_from_slice(&fields.as_bytes()[..fields.len() - 1]);
    if rest.trim_ascii_start().first() != Some(&b'}') {
        answer.push(b',');
    }
    answer.extend_from_slice(rest);
    Bytes::from(answer)
}

fn check_credentials(expected: &Credentials, headers: &HeaderMap) -> Result<(), Answer> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let unauthorized =
        |what: &str| Err(Answer::error(StatusCode::UNAUTHORIZED, format!("Error code : {} - {what}", error_code())));
    let (Some(api_key), Some(customer_id), Some(customer_key)) =
        (header("x-api-key"), header("customer-id"), header("customer-key"))
    else {
        let missing: Vec<&str> =
            ["x-api-key", "customer-id", "customer-key"].into_iter().filter(|name| header(name).is_none()).collect();
        return unauthorized(&format!("missing header(s): {}", missing.join(", ")));
    };
    if customer_id != expected.customer_id || customer_key != expected.customer_key {
        return unauthorized("invalid customer-id or customer-key");
    }
    if api_key != expected.api_key {
        return Err(Answer::error(
            StatusCode::FORBIDDEN,
            format!("Error code : {} - the x-api-key has no permission for this request", error_code()),
        ));
    }
    Ok(())
}

/// A random version-4 UUID in its usual text form.
fn random_uuid() -> String {
    let mut bytes: [u8; 16] = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The type AppZen documents for a field.
#[derive(Debug, Clone, Copy)]
enum Kind {
    String,
    Number,
    /// A number > 0 (`rate`: "Minimum:0 exclusiveMinimum: True").
    PositiveNumber,
    Boolean,
    /// `YYYY-MM-DD` (AppZen's examples: `2020-11-01`).
    Date,
    /// `{"amount": number, "currency": string}`.
    Money,
    /// `PO_ISSUED` or `PO_CLOSED`.
    AppZenStatus,
    /// Any JSON object (`custom_json`).
    Object,
    ExchangeRate,
    Lines,
    VatBreakdown,
}

type Field = (&'static str, Kind, bool);

/// Header fields: (name, type, required).
const HEADER_FIELDS: &[Field] = &[
    ("purchase_order_number", Kind::String, true),
    ("entity_id", Kind::String, true),
    ("supplier_id", Kind::String, true),
    ("gl_code", Kind::String, false),
    ("payment_term_id", Kind::String, false),
    ("external_unique_id", Kind::String, false),
    ("comments", Kind::String, false),
    ("exchange_rate", Kind::ExchangeRate, false),
    ("start_date", Kind::Date, false),
    ("end_date", Kind::Date, false),
    ("total_amount", Kind::Money, false),
    ("amount_limit", Kind::Money, false),
    ("min_release_amount", Kind::Money, false),
    ("email_address", Kind::String, false),
    ("purchase_requisition_id", Kind::String, false),
    ("purchase_order_type", Kind::String, false),
    ("purchase_order_status", Kind::String, true),
    ("appzen_purchase_order_status", Kind::AppZenStatus, true),
    ("ship_to_location", Kind::String, false),
    ("ship_to_location_id", Kind::String, false),
    ("requester", Kind::String, false),
    ("custom_json", Kind::Object, false),
    ("purchase_order_lines", Kind::Lines, true),
    ("purchase_order_date", Kind::String, false),
];

/// Line fields: (name, type, required).
const LINE_FIELDS: &[Field] = &[
    ("po_line_id", Kind::String, false),
    ("line_number", Kind::Number, false),
    ("gl_code", Kind::String, true),
    ("line_item_code", Kind::String, false),
    ("line_description", Kind::String, false),
    ("quantity", Kind::Number, true),
    ("unit_price", Kind::Money, true),
    ("amount", Kind::Money, true),
    ("line_vat_amount", Kind::Money, false),
    ("line_vat_breakdown", Kind::VatBreakdown, false),
    ("contractor_name", Kind::String, false),
    ("contractor_start_date", Kind::String, false),
    ("closed_flag", Kind::Boolean, false),
    ("closed_by", Kind::String, false),
    ("closed_date", Kind::String, false),
    ("closed_reason", Kind::String, false),
    ("cancel_flag", Kind::Boolean, false),
    ("cancel_date", Kind::String, false),
    ("cancel_reason", Kind::String, false),
    ("taxable_flag", Kind::Boolean, false),
    ("tax_code_id", Kind::String, false),
    ("tax_name", Kind::String, false),
    ("type_1099", Kind::String, false),
    ("committed_amount", Kind::Money, false),
    ("amount_limit", Kind::Money, false),
    ("unit_list_price", Kind::Money, false),
    ("base_list_price", Kind::Money, false),
    ("uninvoiced_amount", Kind::Money, true),
    ("received_amount", Kind::Money, false),
    ("progress_payment_rate", Kind::Number, false),
    ("item_category", Kind::String, false),
    ("item_category_id", Kind::String, false),
    ("hazard_class_id", Kind::String, false),
    ("unit_of_measure", Kind::String, false),
    ("committed_quantity", Kind::Number, false),
    ("ordered_quantity", Kind::Number, false),
    ("received_quantity", Kind::Number, false),
    ("service_line_start_date", Kind::String, false),
    ("service_line_end_date", Kind::String, false),
    ("match_basis", Kind::String, false),
    ("match_type", Kind::String, false),
    ("line_type", Kind::String, false),
    ("purchase_order_line_status", Kind::String, true),
    ("appzen_purchase_order_line_status", Kind::AppZenStatus, true),
    ("purchase_requisition_id", Kind::String, false),
    ("buyer", Kind::String, false),
    ("custom_json", Kind::Object, false),
];

/// Every problem with an upsert body, each naming its JSON path; empty when AppZen would accept it.
pub fn validate_purchase_order(document: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    match document.as_object() {
        Some(object) => check_fields(object, HEADER_FIELDS, "", &mut problems),
        None => problems.push(format!("the body must be a JSON object, found {}", describe(document))),
    }
    problems
}

fn check_fields(object: &Map<String, Value>, fields: &[Field], prefix: &str, problems: &mut Vec<String>) {
    for &(name, kind, required) in fields {
        let path = format!("{prefix}{name}");
        match object.get(name) {
            None if required => problems.push(format!("{path}: is required")),
            Some(Value::Null) if required => problems.push(format!("{path}: is required, found null")),
            None | Some(Value::Null) => {}
            Some(value) => check_value(value, kind, required, &path, problems),
        }
    }
}

fn check_value(value: &Value, kind: Kind, required: bool, path: &str, problems: &mut Vec<String>) {
    let mut expected = |what: &str| problems.push(format!("{path}: expected {what}, found {}", describe(value)));
    match kind {
        Kind::String => match value.as_str() {
            Some("") if required => problems.push(format!("{path}: must not be empty")),
            Some(_) => {}
            None => expected("a string"),
        },
        Kind::Number => {
            if !value.is_number() {
                expected("a number");
            }
        }
        Kind::PositiveNumber => match value.as_f64() {
            Some(n) if n > 0.0 => {}
            Some(_) => problems.push(format!("{path}: must be greater than 0")),
            None => expected("a number"),
        },
        Kind::Boolean => {
            if !value.is_boolean() {
                expected("true or false");
            }
        }
        Kind::Date => match value.as_str() {
            Some(text) if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() && text.len() == 10 => {}
            Some(text) => problems.push(format!("{path}: expected a date like 2020-11-01, found \"{text}\"")),
            None => expected("a date string like 2020-11-01"),
        },
        Kind::AppZenStatus => match value.as_str() {
            Some("PO_ISSUED" | "PO_CLOSED") => {}
            _ => expected("PO_ISSUED or PO_CLOSED"),
        },
        Kind::Object => {
            if !value.is_object() {
                expected("an object");
            }
        }
        Kind::Money => match value.as_object() {
            Some(money) => check_fields(
                money,
                &[("amount", Kind::Number, true), ("currency", Kind::String, true)],
                &format!("{path}."),
                problems,
            ),
            None => expected("an object {\"amount\": number, \"currency\": string}"),
        },
        Kind::ExchangeRate => match value.as_object() {
            Some(rate) => check_fields(
                rate,
                &[
                    ("conversion_rate", Kind::Number, false),
                    ("from_currency_code", Kind::String, false),
                    ("to_currency_code", Kind::String, false),
                ],
                &format!("{path}."),
                problems,
            ),
            None => expected("an object"),
        },
        Kind::Lines => match value.as_array() {
            Some(lines) if lines.is_empty() => problems.push(format!("{path}: must hold at least one line")),
            Some(lines) => {
                for (i, line) in lines.iter().enumerate() {
                    match line.as_object() {
                        Some(line) => check_fields(line, LINE_FIELDS, &format!("{path}[{i}]."), problems),
                        None => problems.push(format!("{path}[{i}]: expected an object, found {}", describe(line))),
                    }
                }
            }
            None => expected("an array of lines"),
        },
        Kind::VatBreakdown => match value.as_array() {
            Some(entries) => {
                for (i, entry) in entries.iter().enumerate() {
                    match entry.as_object() {
                        Some(entry) => check_fields(
                            entry,
                            &[
                                ("code", Kind::String, false),
                                ("rate", Kind::PositiveNumber, false),
                                ("vat_amount", Kind::Money, false),
                            ],
                            &format!("{path}[{i}]."),
                            problems,
                        ),
                        None => problems.push(format!("{path}[{i}]: expected an object, found {}", describe(entry))),
                    }
                }
            }
            None => expected("an array"),
        },
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("string {:?}", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A small, valid PDF naming the invoice, the same bytes for the same name (so a re-run archives nothing new).
pub fn invoice_pdf_bytes(name: &str) -> Vec<u8> {
    let text = name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect::<String>();
    let stream = format!("BT /F1 12 Tf 72 720 Td (Invoice {text}) Tj ET");
    format!(
        "%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
         3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >> endobj\n\
         4 0 obj << /Length {} >> stream\n{stream}\nendstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        stream.len()
    )
    .into_bytes()
}

async fn invoice_pdf(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    ([(header::CONTENT_TYPE, "application/pdf")], invoice_pdf_bytes(&name)).into_response()
}

/// What an expired pre-signed link answers.
async fn expired_link() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/xml")],
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
    )
        .into_response()
}

/// A login page served where a PDF was expected.
async fn not_a_pdf() -> Response {
    ([(header::CONTENT_TYPE, "application/pdf")], "<html><body>Please sign in</body></html>").into_response()
}

async fn set_latency(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Latency {
        ms: u64,
    }
    match serde_json::from_slice::<Latency>(&body) {
        Ok(latency) => {
            sandbox.set_latency(Duration::from_millis(latency.ms));
            (StatusCode::OK, axum::Json(json!({ "latency_ms": latency.ms }))).into_response()
        }
        Err(e) => control_error(format!("expected {{\"ms\":N}}: {e}")),
    }
}

/// A control request the sandbox cannot take: 400 in AppZen's error shape.
fn control_error(message: String) -> Response {
    Answer::error(StatusCode::BAD_REQUEST, message).into_response()
}

async fn not_found(uri: Uri) -> Response {
    Answer::error(
        StatusCode::NOT_FOUND,
        format!("Error code : {} - The resource you specified cannot be not found: {}", error_code(), uri.path()),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        json!({
            "purchase_order_number": "P1", "entity_id": "2", "supplier_id": "V", "purchase_order_status": "Issued",
            "appzen_purchase_order_status": "PO_ISSUED",
            "total_amount": {"amount": 1.5, "currency": "USD"},
            "purchase_order_lines": [{
                "gl_code": "CGEN", "quantity": 1,
                "unit_price": {"amount": 1.5, "currency": "USD"}, "amount": {"amount": 1.5, "currency": "USD"},
                "uninvoiced_amount": {"amount": 0, "currency": "USD"},
                "purchase_order_line_status": "Issued", "appzen_purchase_order_line_status": "PO_ISSUED"
            }]
        })
    }

    #[test]
    fn a_complete_body_passes() {
        assert_eq!(validate_purchase_order(&valid()), Vec::<String>::new());
    }

    #[test]
    fn appzens_own_sample_request_passes() {
        // The sample on AppZen's page, with its null purchase_requisition_id and undocumented external_unique_id.
        let sample = json!({
            "purchase_order_number": "193-994K", "entity_id": "1002", "supplier_id": "3009293",
            "gl_code": "1002.369.922.0000.0000", "payment_term_id": "8900012", "external_unique_id": "XP-1234-01",
            "comments": "string", "exchange_rate": {"conversion_rate": 0, "from_currency_code": "", "to_currency_code": ""},
            "start_date": "2020-11-01", "end_date": "2020-11-01", "total_amount": {"amount": 1.5, "currency": "USD"},
            "amount_limit": {"amount": 1.5, "currency": "USD"}, "min_release_amount": {"amount": 1.5, "currency": "USD"},
            "email_address": "john.doe@acme.org", "purchase_requisition_id": null, "purchase_order_type": "string",
            "purchase_order_status": "Issued", "appzen_purchase_order_status": "PO_ISSUED", "custom_json": {},
            "purchase_order_lines": [{
                "po_line_id": "string", "line_number": 0, "gl_code": "string", "quantity": 0,
                "unit_price": {"amount": 1.5, "currency": "USD"}, "amount": {"amount": 1.5, "currency": "USD"},
                "line_vat_breakdown": [{"code": "GST", "rate": 20.5, "vat_amount": {"amount": 1.5, "currency": "USD"}}],
                "closed_flag": true, "uninvoiced_amount": {"amount": 1.5, "currency": "USD"},
                "purchase_order_line_status": "string", "appzen_purchase_order_line_status": "PO_ISSUED", "custom_json": {}
            }],
            "purchase_order_date": "2020-11-01"
        });
        assert_eq!(validate_purchase_order(&sample), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let mut body = valid();
        body["supplier_id"] = Value::Null;
        body.as_object_mut().unwrap().remove("entity_id");
        body["total_amount"]["amount"] = json!("1.50");
        body["purchase_order_lines"][0]["quantity"] = json!("1");
        body["purchase_order_lines"][0]["appzen_purchase_order_line_status"] = json!("OPEN");
        body["start_date"] = json!("11/01/2020");
        assert_eq!(
            validate_purchase_order(&body),
            vec![
                "entity_id: is required",
                "supplier_id: is required, found null",
                "start_date: expected a date like 2020-11-01, found \"11/01/2020\"",
                "total_amount.amount: expected a number, found string \"1.50\"",
                "purchase_order_lines[0].quantity: expected a number, found string \"1\"",
                "purchase_order_lines[0].appzen_purchase_order_line_status: expected PO_ISSUED or PO_CLOSED, found string \"OPEN\"",
            ]
        );
    }

    #[test]
    fn money_must_be_an_object_and_lines_must_exist() {
        let mut body = valid();
        body["total_amount"] = json!(1.5);
        body["purchase_order_lines"] = json!([]);
        assert_eq!(
            validate_purchase_order(&body),
            vec![
                "total_amount: expected an object {\"amount\": number, \"currency\": string}, found 1.5",
                "purchase_order_lines: must hold at least one line",
            ]
        );
    }

    #[test]
    fn uuids_look_like_version_4_uuids() {
        let uuid = random_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(uuid, random_uuid());
    }
}
