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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use api::Answer;
use contract::{Catalogue, PurchaseOrder, code};

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

/// One API request as the sandbox received it, and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 1, 2, … in arrival order.
    pub seq: u64,
    pub received_at: String,
    pub method: String,
    pub path: String,
    /// The query string, as sent.
    pub query: Option<String>,
    /// Lower-case names; `authorization`, `proxy-authorization` and `cookie` are left out.
    pub headers: HashMap<String, String>,
    /// The body as sent, except that `client_secret`, `access_token` and `refresh_token` fields read
    /// `<redacted>` (such a body is written anew) and the configured client secret is replaced wherever else it
    /// appears.
    pub body: String,
    /// `None` while the answer is being prepared (a slow call).
    pub response_status: Option<u16>,
    /// The answer's body, redacted the same way (a token answer's tokens read `<redacted>`); empty for 204.
    pub response_body: Option<String>,
}

impl RecordedRequest {
    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A failure to inject into the next API requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Failure {
    /// How many requests fail this way; `None` means every request until reset.
    #[serde(default)]
    pub times: Option<u32>,
    /// Status to answer instead of processing (429, 500, 503, 403…). `None` with a delay: answer normally, late.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` header, in seconds.
    #[serde(default)]
    pub retry_after: Option<u32>,
    /// Wait this long before answering (before processing).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Process the request as usual, then hold the answer back this long: an answer the client may have given
    /// up on although Exsited acted on the request (a create whose answer was lost).
    #[serde(default)]
    pub delay_after_ms: Option<u64>,
    /// The `message` of the error.
    #[serde(default)]
    pub message: Option<String>,
    /// Only requests whose path contains this text fail (and count against `times`); `None`: every request.
    #[serde(default)]
    pub path_contains: Option<String>,
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
        // No lock is held across an await or a panic that could leave the ledger half-written.
        self.shared.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The axum router: the API (as a fallback that routes itself, so that every answer, 404 and 405
    /// included, is in Exsited's error shape) and the control endpoints.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/_sandbox/requests", get(list_requests))
            .route("/_sandbox/fail", post(queue_failure))
            .route("/_sandbox/reset", post(reset))
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

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await
    }

    /// Starts serving on 127.0.0.1 (port 0: a free one) in a background task.
    pub async fn spawn(self, port: u16) -> std::io::Result<RunningSandbox> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sandbox = self.clone();
        let task = tokio::spawn(async move {
            let _ = self
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(RunningSandbox { sandbox, address, stop: Some(stop), task })
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> u64 {
        let secret = &self.shared.config.client_secret;
        let headers = headers
            .iter()
            .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
            .map(|(name, value)| {
                (name.as_str().to_owned(), redact_text(&String::from_utf8_lossy(value.as_bytes()), secret))
            })
            .collect();
        let mut ledger = self.ledger();
        let seq = ledger.requests.len() as u64 + 1;
        ledger.requests.push(RecordedRequest {
            seq,
            received_at: chrono::Utc::now().to_rfc3339(),
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(|q| redact_text(q, secret)),
            headers,
            body: redact_body(body, secret),
            response_status: None,
            response_body: None,
        });
        seq
    }

    /// The first queued failure that applies to this path, counted down.
    fn next_failure(&self, path: &str) -> Option<Failure> {
        let mut ledger = self.ledger();
        ledger.failures.retain(|f| f.times != Some(0));
        let index =
            ledger.failures.iter().position(|f| f.path_contains.as_deref().is_none_or(|text| path.contains(text)))?;
        let failure = &mut ledger.failures[index];
        let current = failure.clone();
        match &mut failure.times {
            Some(1) => {
                ledger.failures.remove(index);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(current)
    }
}

/// A sandbox serving in the background; stops when dropped.
pub struct RunningSandbox {
    pub sandbox: Sandbox,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// `http://127.0.0.1:PORT`, the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl std::ops::Deref for RunningSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
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

async fn list_requests(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.requests()).into_response()
}

async fn list_held(State(sandbox): State<Sandbox>) -> Response {
    axum::Json(sandbox.purchase_orders()).into_response()
}

async fn queue_failure(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<Failure>(&body) {
        Ok(failure) => {
            sandbox.fail_next(failure.clone());
            axum::Json(json!({ "queued": failure })).into_response()
        }
        Err(e) => control_error(format!("expected {{\"times\":N,\"status\":S,...}}: {e}")),
    }
}

async fn reset(State(sandbox): State<Sandbox>) -> Response {
    sandbox.reset();
    axum::Json(json!({ "reset": true })).into_response()
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

fn control_error(message: String) -> Response {
    Answer::error(StatusCode::BAD_REQUEST, code::INVALID_VALUE, message).into_response()
}
