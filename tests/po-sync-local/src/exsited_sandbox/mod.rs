//! A local Exsited: the purchase-orders v3 API and its OAuth token endpoint, with the contract Exsited
//! documents, so an Exsited client can be exercised without an Exsited tenant.
//!
//! Sources: Exsited's "Purchase Order POST API Documentation" page (v3: create, cancel, reactivate), Exsited's
//! Python SDK (`exsited/exsited-python`: the paths of get, list and `/information`; the field names of a PO,
//! its lines and the list's `pagination`), and issue 23's summary of Exsited's developer docs (the token
//! request, one token per credentials, the error shape, `/information`'s wrapper, `/change`'s operations,
//! delete).
//!
//! What it enforces:
//! - **Auth** (issue 23): `POST /api/v1/oauth2/token` with JSON `{"grant_type":"client_credentials",
//!   "client_id","client_secret","redirect_uri"}` answers 200 `{"access_token","refresh_token","expires_in",
//!   "token_type":"Bearer"}`; a wrong client id, secret or grant type is 401, a missing field 400. Every
//!   `/api/v3/…` request needs `Authorization: Bearer <token>`: missing, unknown, expired or ended is 401. A new
//!   token ends the previous one (one set of credentials, one live token). Lifetime: 3600 s unless
//!   [`Sandbox::set_token_lifetime`] says otherwise.
//! - **Errors** (issue 23): `{"errors":[{"code","message"}]}`, one entry per problem, each message starting
//!   with the JSON path it is about (`purchase_order.lines[0].item_quantity: expected a decimal string …`).
//!   The codes are the sandbox's own (Exsited documents the shape, not its codes): `REQUIRED`,
//!   `INVALID_VALUE`, `UNKNOWN_FIELD`, `UNKNOWN_ACCOUNT`, `UNKNOWN_ITEM`, `UNKNOWN_LINE`, `DUPLICATE`,
//!   `PO_INACTIVE`, `INVALID_JSON`, `UNSUPPORTED_MEDIA_TYPE`, `INVALID_CLIENT`, `UNSUPPORTED_GRANT_TYPE`,
//!   `INVALID_TOKEN`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`; an injected failure's code is its status's name
//!   (`TOO_MANY_REQUESTS`). 403 exists only as an injected failure: the sandbox has no permissions.
//! - **Create** `POST /api/v3/purchase-orders` (Exsited's page, fields from its SDK): `{"purchase_order":
//!   {...}}`, every number a JSON *string* holding a plain decimal (a JSON number is a 400 naming its path),
//!   `price_tax_inclusive` the string `"true"`/`"false"`, dates `YYYY-MM-DD`, `currency` a three-letter code,
//!   `account_id` one of the sandbox's supplier accounts and each line's `item_id` (or `item_uuid`) one of its
//!   items, at least one line, quantities above 0. Answers **201** with `{"purchase_order": {...}}` in the
//!   documented shape: status `ACTIVE`, `id` (the caller's, else `PO-XXXXXX-0001`: 6 random upper-case letters
//!   or digits and a counter), `currency {uuid,name,link}`, `subtotal`/`tax`/`total`, `uuid`, `version`, and
//!   lines with their own `uuid` (what `/change` names them by).
//! - **Get** `GET /api/v3/purchase-orders/{id}`: 200 or 404. **List** `GET /api/v3/purchase-orders`
//!   (`account_id`, `limit`, `offset`): `{"purchase_orders":[...],"pagination":{records,limit,offset,
//!   previous_page,next_page}}`, oldest first, every PO when no `limit` is given.
//! - **Change header** `PATCH …/{id}/information` (issue 23): wrapper `"purchase-order"` (hyphen; the
//!   create's `purchase_order` there is a 400 naming it) with any of `issue_date`, `due_date`,
//!   `expected_completion_date`, `purchase_order_note`, `custom_attributes`; 200 with the PO.
//! - **Change lines** `POST …/{id}/change` (issue 23): `{"purchase_order":{"lines":[{"op":"add",…},
//!   {"op":"update","uuid",…},{"op":"delete","uuid"}]}}`, applied in order, all or none; an unknown `op` or
//!   line uuid is a 400; totals are computed again; 200 with the PO.
//! - **Cancel / reactivate** `POST …/{id}/cancel` | `/reactivate` (Exsited's page): status `INACTIVE` /
//!   `ACTIVE`, 204 with no content. **Delete** `DELETE …/{id}` (issue 23; Exsited's Python SDK deletes through
//!   `/api/v2/purchase-orders/{id}`, which the sandbox does not serve): 204, then the PO is gone (404).
//! - Unknown paths are 404 and a known path with another method 405, both in the error shape.
//!
//! Choices where Exsited's docs are silent:
//! - create answers 201 Created (Exsited's page shows the answer's body, not its status);
//! - amounts are computed exactly from the decimal strings (quantity × price per line, their sum; no floating
//!   point) and written with six fraction digits, more only when the exact value needs them (never rounded):
//!   `3 × "12.345000" + 1 × "0.10"` is `"37.135000"`, `1.5 × 0.333333` is `"0.4999995"`. Tax is always zero (the
//!   sandbox knows no tax codes), so `total` = `subtotal`. A line without a price snapshot costs 0 (the
//!   sandbox's catalogue has no prices) and without `item_name` is named after its item id; `price_type` is
//!   kept as given and every price is per unit; a decimal string may have at most 18 fraction digits;
//!   `item_purchase_tax_configuration` is accepted and not used;
//! - a caller `id` that exists already is 400 `DUPLICATE` ("purchase order PO-1 already exists"); ids must fit
//!   in one path segment (1-100 characters, no spaces or `/?#%`);
//! - `/information` or `/change` on an `INACTIVE` PO is 400 `PO_INACTIVE`; cancelling an inactive PO or
//!   reactivating an active one is a harmless 204 (so a retried call whose answer was lost succeeds); a PO may
//!   be deleted in either status; `/change` may not leave a PO without lines;
//! - fields Exsited's PO does not have are refused (400 `UNKNOWN_FIELD`), so a misspelt field is found here
//!   rather than silently dropped; so are the list's query parameters other than `account_id`, `limit` and
//!   `offset`: there is no filter on the note (a client looking for a PO whose create answer was lost lists
//!   the account's POs and looks at their `purchase_order_note` itself). Without `limit` the list answers
//!   every PO (Exsited pages its lists, with a default page size it does not document: a client should follow
//!   `pagination.next_page` until it is null);
//! - a body must come with `Content-Type: application/json` (else 415); `redirect_uri` must be present in the
//!   token request but any value is taken (the sandbox has none registered); the `refresh_token` it answers
//!   is not accepted back (only `grant_type` `client_credentials` is).
//!
//! Control endpoints (for tests and for a developer with `curl`), each with a method on [`Sandbox`]:
//! - `GET /_sandbox/requests`: every API request, oldest first, with the answer given; without the
//!   `Authorization` header, the client secret or any token (see [`RecordedRequest`]);
//! - `POST /_sandbox/fail` `{"times": 2, "status": 429, "retry_after": 1}`: answer the next API requests
//!   with that status instead (`"delay_ms"` answers late, `"delay_after_ms"` processes the request and then
//!   holds the answer back, `"message"` sets the error message, `"path_contains": "/change"` fails only
//!   requests whose path holds that text, e.g. one PO's id; `"times": null` means until reset). The token
//!   endpoint is an API request too;
//! - `POST /_sandbox/expire-tokens`: every token issued so far expires now (the next request with one is 401);
//! - `POST /_sandbox/token-lifetime` `{"seconds": 2}`: the lifetime of tokens issued from now on;
//! - `POST /_sandbox/accounts` `{"id": "SUP-0003"}`, `POST /_sandbox/items` `{"id": "ROSES"}`: more supplier
//!   accounts and items; `GET /_sandbox/purchase-orders`: every PO held, cancelled ones included;
//! - `POST /_sandbox/reset`: back to the configuration: no requests, POs, tokens or pending failures, the
//!   configured accounts and items only, the default token lifetime, the id counter at 1.

mod api;
mod contract;
mod decimal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sandbox_kit::{self, injected_failure, recorded_request};
use api::Answer;
use contract::{Catalogue, PurchaseOrder, code};

/// A sandbox serving in the background; stops when dropped.
pub type RunningSandbox = sandbox_kit::RunningSandbox<Sandbox>;

/// Exsited's token endpoint.
pub const TOKEN_PATH: &str = "/api/v1/oauth2/token";
/// Exsited's purchase orders (v3).
pub const PURCHASE_ORDERS_PATH: &str = "/api/v3/purchase-orders";
/// Exsited's `expires_in` (issue 23).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest lifetime [`Sandbox::set_token_lifetime`] takes (a year), so an expiry time cannot overflow.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the sandbox's tenant knows: its one set of API credentials, supplier accounts and catalogue items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub client_id: String,
    pub client_secret: String,
    pub accounts: Vec<String>,
    pub items: Vec<String>,
}

impl Default for Config {
    /// The local pipeline's values; not secrets, they only open this sandbox.
    fn default() -> Self {
        Config {
            client_id: "local-exsited-client".to_owned(),
            client_secret: "local-exsited-secret".to_owned(),
            accounts: vec!["SUP-0001".to_owned(), "SUP-0002".to_owned()],
            items: vec!["FLOWERS".to_owned(), "ADDITIONAL_CHARGES".to_owned()],
        }
    }
}

/// Headers never recorded: they carry credentials.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
/// JSON fields never recorded, in request or answer bodies.
const SECRET_FIELDS: [&str; 3] = ["client_secret", "access_token", "refresh_token"];
const REDACTED: &str = "<redacted>";

recorded_request! {
    /// One API request as the sandbox received it, and what it answered. Left out or redacted: the
    /// `authorization`, `proxy-authorization` and `cookie` headers; in bodies (request and answer) the
    /// `client_secret`, `access_token` and `refresh_token` fields, which read `<redacted>` (such a body is
    /// written anew); the configured client secret wherever else it appears. An answer without content (204)
    /// is recorded as an empty body.
    pub struct RecordedRequest {
        /// The query string, as sent.
        pub query: Option<String>,
    }
}

injected_failure! {
    /// A failure to inject into the next API requests, the token endpoint's included (`delay_after_ms` is a
    /// create whose answer was lost).
    pub struct Failure {
        /// Only requests whose path contains this text fail (and count against `times`); `None`: every request.
        pub path_contains: Option<String>,
    }
}

struct IssuedToken {
    expires_at: Instant,
    /// A newer token was issued for the same credentials.
    ended: bool,
}

struct Ledger {
    requests: Vec<RecordedRequest>,
    /// Oldest first.
    orders: Vec<PurchaseOrder>,
    failures: Vec<Failure>,
    tokens: HashMap<String, IssuedToken>,
    tokens_issued: u64,
    token_lifetime: Duration,
    catalogue: Catalogue,
    /// The counter of the next id the sandbox gives a PO.
    next_number: u32,
}

impl Ledger {
    fn new(config: &Config) -> Self {
        let mut catalogue = Catalogue { accounts: config.accounts.iter().cloned().collect(), ..Catalogue::default() };
        for item in &config.items {
            catalogue.add_item(item);
        }
        Ledger {
            requests: Vec::new(),
            orders: Vec::new(),
            failures: Vec::new(),
            tokens: HashMap::new(),
            tokens_issued: 0,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            catalogue,
            next_number: 1,
        }
    }
}

struct Shared {
    config: Config,
    ledger: Mutex<Ledger>,
}

/// A handle on the sandbox's state, usable while it serves.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl Sandbox {
    pub fn new(config: Config) -> Self {
        let ledger = Mutex::new(Ledger::new(&config));
        Sandbox { shared: Arc::new(Shared { config, ledger }) }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        sandbox_kit::lock(&self.shared.ledger)
    }

    /// The axum router: the API (as a fallback that routes itself, so that every answer, 404 and 405
    /// included, is in Exsited's error shape) and the control endpoints.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(sandbox_kit::control_routes(Sandbox::requests, Sandbox::fail_next, Sandbox::reset, control_error))
            .route("/_sandbox/expire-tokens", post(expire_tokens))
            .route("/_sandbox/token-lifetime", post(set_token_lifetime))
            .route("/_sandbox/accounts", post(add_account))
            .route("/_sandbox/items", post(add_item))
            .route("/_sandbox/purchase-orders", get(list_held))
            .fallback(api::serve)
            .with_state(self.clone())
    }

    /// Every API request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.ledger().requests.clone()
    }

    /// Makes the next API requests fail as described.
    pub fn fail_next(&self, failure: Failure) {
        self.ledger().failures.push(failure);
    }

    /// Back to the configuration (see the module's doc).
    pub fn reset(&self) {
        *self.ledger() = Ledger::new(&self.shared.config);
    }

    /// Every token issued so far expires now; how many were still live.
    pub fn expire_tokens(&self) -> usize {
        let now = Instant::now();
        let mut ledger = self.ledger();
        let live = ledger.tokens.values().filter(|t| !t.ended && t.expires_at > now).count();
        ledger.tokens.values_mut().for_each(|t| t.expires_at = t.expires_at.min(now));
        live
    }

    /// Tokens issued since the start (or the last reset).
    pub fn tokens_issued(&self) -> u64 {
        self.ledger().tokens_issued
    }

    /// The lifetime of tokens issued from now on (`expires_in` is it in whole seconds, rounded up), at most
    /// [`MAX_TOKEN_LIFETIME`].
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.ledger().token_lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    }

    /// Every PO held, oldest first, in the shape the API answers it.
    pub fn purchase_orders(&self) -> Vec<Value> {
        self.ledger().orders.iter().map(PurchaseOrder::to_json).collect()
    }

    pub fn purchase_order(&self, id: &str) -> Option<Value> {
        self.ledger().orders.iter().find(|o| o.id == id).map(PurchaseOrder::to_json)
    }

    pub fn add_account(&self, id: &str) {
        self.ledger().catalogue.accounts.insert(id.to_owned());
    }

    pub fn add_item(&self, id: &str) {
        self.ledger().catalogue.add_item(id);
    }

    /// The uuid of a catalogue item (the same for the same id, across resets and runs).
    pub fn item_uuid(&self, id: &str) -> Option<String> {
        self.ledger().catalogue.items.get(id).cloned()
    }

    /// Starts serving on 127.0.0.1 (port 0: a free one) in a background task.
    pub async fn spawn(self, port: u16) -> std::io::Result<RunningSandbox> {
        let router = self.router();
        sandbox_kit::spawn(self, router, port).await
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> u64 {
        let secret = &self.shared.config.client_secret;
        let headers = sandbox_kit::recorded_headers(headers, &SECRET_HEADERS, |value| redact_text(&value, secret));
        let body = redact_body(body, secret);
        let mut ledger = self.ledger();
        let request = sandbox_kit::record(&mut ledger.requests, method, uri, headers, body);
        request.query = uri.query().map(|q| redact_text(q, secret));
        request.seq
    }

    /// The first queued failure that applies to this path, counted down.
    fn next_failure(&self, path: &str) -> Option<Failure> {
        sandbox_kit::take_failure(&mut self.ledger().failures, |failure| {
            failure.path_contains.as_deref().is_none_or(|text| path.contains(text))
        })
    }
}

/// A body as recorded: its exact text with the client secret replaced, or, when it is JSON holding a secret
/// field, that JSON with the field redacted (written anew, so its spacing and key order may differ).
fn redact_body(body: &[u8], secret: &str) -> String {
    if let Ok(mut document) = serde_json::from_slice::<Value>(body)
        && redact_fields(&mut document)
    {
        return redact_text(&document.to_string(), secret);
    }
    redact_text(&String::from_utf8_lossy(body), secret)
}

/// Whether any field was redacted (every one is: no short-circuit).
fn redact_fields(value: &mut Value) -> bool {
    let mut redacted = false;
    match value {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                if SECRET_FIELDS.contains(&key.as_str()) {
                    *value = Value::String(REDACTED.to_owned());
                    redacted = true;
                } else {
                    redacted |= redact_fields(value);
                }
            }
        }
        Value::Array(values) => {
            for value in values {
                redacted |= redact_fields(value);
            }
        }
        _ => {}
    }
    redacted
}

fn redact_text(text: &str, secret: &str) -> String {
    if secret.is_empty() { text.to_owned() } else { text.replace(secret, REDACTED) }
}

async fn list_held(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.purchase_orders()).into_response()
}

async fn expire_tokens(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(json!({ "expired": sandbox.expire_tokens() })).into_response()
}

async fn set_token_lifetime(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Lifetime {
        seconds: u64,
    }
    match serde_json::from_slice::<Lifetime>(&body) {
        Ok(lifetime) => {
            sandbox.set_token_lifetime(Duration::from_secs(lifetime.seconds));
            axum::Json(json!({ "token_lifetime_seconds": lifetime.seconds })).into_response()
        }
        Err(e) => control_error(format!("expected {{\"seconds\":N}}: {e}")),
    }
}

#[derive(Deserialize)]
struct NewId {
    id: String,
}

async fn add_account(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<NewId>(&body) {
        Ok(NewId { id }) if !id.is_empty() => {
            sandbox.add_account(&id);
            let accounts: Vec<String> = sandbox.ledger().catalogue.accounts.iter().cloned().collect();
            axum::Json(json!({ "accounts": accounts })).into_response()
        }
        _ => control_error("expected {\"id\": \"SUP-0003\"}".to_owned()),
    }
}

async fn add_item(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<NewId>(&body) {
        Ok(NewId { id }) if !id.is_empty() => {
            sandbox.add_item(&id);
            let items: Vec<Value> =
                sandbox.ledger().catalogue.items.iter().map(|(id, uuid)| json!({ "id": id, "uuid": uuid })).collect();
            axum::Json(json!({ "items": items })).into_response()
        }
        _ => control_error("expected {\"id\": \"ROSES\"}".to_owned()),
    }
}

/// A control request the sandbox cannot take: 400 in Exsited's error shape.
fn control_error(message: String) -> Response {
    Answer::error(StatusCode::BAD_REQUEST, code::INVALID_VALUE, message).into_response()
}
