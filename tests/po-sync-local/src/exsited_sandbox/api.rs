//! The API itself: routing (by hand, so that every answer, 404 and 405 included, is in Exsited's error shape),
//! the token endpoint and bearer tokens, and each purchase-order endpoint over the ledger.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::contract::{self, Problem, PurchaseOrder, Status, code};
use super::{Failure, IssuedToken, Ledger, PURCHASE_ORDERS_PATH, Sandbox};

/// The status, JSON body (none for 204) and headers the sandbox answers.
#[derive(Debug)]
pub(super) struct Answer {
    status: StatusCode,
    body: Option<Value>,
    retry_after: Option<u32>,
    allow: Option<&'static str>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Answer { status, body: Some(body), retry_after: None, allow: None }
    }

    fn no_content() -> Self {
        Answer { status: StatusCode::NO_CONTENT, body: None, retry_after: None, allow: None }
    }

    /// Exsited's error shape, one entry per problem.
    fn errors(status: StatusCode, problems: Vec<Problem>) -> Self {
        let errors: Vec<Value> =
            problems.into_iter().map(|p| json!({ "code": p.code, "message": p.message })).collect();
        Answer::json(status, json!({ "errors": errors }))
    }

    pub(super) fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Answer::errors(status, vec![Problem::new(code, message)])
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, axum::Json(body)).into_response(),
            None => self.status.into_response(),
        };
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl Ledger {
    fn order(&mut self, id: &str) -> Result<&mut PurchaseOrder, Answer> {
        self.orders.iter_mut().find(|o| o.id == id).ok_or_else(|| not_found(id))
    }
}

fn not_found(id: &str) -> Answer {
    Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("purchase order {id} not found"))
}

/// Every request outside `/_sandbox/`: recorded, perhaps failed on purpose, else answered per the contract.
pub(super) async fn serve(
    State(sandbox): State<Sandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path().starts_with("/_sandbox/") {
        return Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no control endpoint {}", uri.path()))
            .into_response();
    }
    let seq = sandbox.record(&method, &uri, &headers, &body);
    let failure = sandbox.next_failure(uri.path());
    if let Some(delay) = failure.as_ref().and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let delay_after = failure.as_ref().and_then(|f| f.delay_after_ms);
    let answer = match failure {
        Some(Failure { status: Some(status), retry_after, message, .. }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = status.canonical_reason().unwrap_or("ERROR").to_ascii_uppercase().replace([' ', '-'], "_");
            let message = message.unwrap_or_else(|| format!("{status}: injected by the sandbox"));
            Answer { retry_after, ..Answer::json(status, json!({ "errors": [{ "code": code, "message": message }] })) }
        }
        _ => sandbox.handle(&method, &uri, &headers, &body),
    };
    if let Some(delay) = delay_after {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    sandbox.finish(seq, &answer);
    answer.into_response()
}

/// The API's resources.
enum Endpoint {
    Token,
    Orders,
    Order(String),
    Information(String),
    Change(String),
    Cancel(String),
    Reactivate(String),
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match segments.as_slice() {
            ["api", "v1", "oauth2", "token"] => Endpoint::Token,
            ["api", "v3", "purchase-orders"] => Endpoint::Orders,
            ["api", "v3", "purchase-orders", id] if !id.is_empty() => Endpoint::Order(id.to_string()),
            ["api", "v3", "purchase-orders", id, "information"] => Endpoint::Information(id.to_string()),
            ["api", "v3", "purchase-orders", id, "change"] => Endpoint::Change(id.to_string()),
            ["api", "v3", "purchase-orders", id, "cancel"] => Endpoint::Cancel(id.to_string()),
            ["api", "v3", "purchase-orders", id, "reactivate"] => Endpoint::Reactivate(id.to_string()),
            _ => return None,
        })
    }

    fn allowed(&self) -> &'static str {
        match self {
            Endpoint::Orders => "GET, POST",
            Endpoint::Order(_) => "GET, DELETE",
            Endpoint::Information(_) => "PATCH",
            Endpoint::Token | Endpoint::Change(_) | Endpoint::Cancel(_) | Endpoint::Reactivate(_) => "POST",
        }
    }

    /// Whether the request carries a JSON body.
    fn takes_body(&self, method: &Method) -> bool {
        match self {
            Endpoint::Token | Endpoint::Information(_) | Endpoint::Change(_) => true,
            Endpoint::Orders => method == Method::POST,
            Endpoint::Order(_) | Endpoint::Cancel(_) | Endpoint::Reactivate(_) => false,
        }
    }
}

impl Sandbox {
    /// Records the answer given to request `seq`, redacted.
    fn finish(&self, seq: u64, answer: &Answer) {
        let body = answer
            .body
            .as_ref()
            .map(|b| super::redact_body(b.to_string().as_bytes(), &self.shared.config.client_secret));
        // A 204's empty body is recorded as "".
        crate::sandbox_kit::record_answer(
            &mut self.ledger().requests,
            seq,
            answer.status.as_u16(),
            body.unwrap_or_default(),
        );
    }

    fn handle(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Answer {
        let Some(endpoint) = Endpoint::of(uri.path()) else {
            return Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no such resource: {}", uri.path()));
        };
        let allowed = endpoint.allowed();
        if !allowed.split(", ").any(|m| m == method.as_str()) {
            let message = format!("{method} is not allowed on {} (allowed: {allowed})", uri.path());
            return Answer {
                allow: Some(allowed),
                ..Answer::error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", message)
            };
        }
        let mut ledger = self.ledger();
        if !matches!(endpoint, Endpoint::Token)
            && let Err(refused) = authorize(&ledger, headers)
        {
            return refused;
        }
        let document = if endpoint.takes_body(method) {
            match json_body(headers, body) {
                Ok(document) => document,
                Err(refused) => return refused,
            }
        } else {
            Value::Null
        };
        let outcome = match endpoint {
            Endpoint::Token => self.issue_token(&mut ledger, &document),
            Endpoint::Orders if method == Method::GET => list(&ledger, uri.query().unwrap_or("")),
            Endpoint::Orders => create(&mut ledger, &document),
            Endpoint::Order(id) if method == Method::GET => ledger
                .order(&id)
                .map(|order| Answer::json(StatusCode::OK, json!({ "purchase_order": order.to_json() }))),
            Endpoint::Order(id) => match ledger.orders.iter().position(|o| o.id == id) {
                Some(at) => {
                    ledger.orders.remove(at);
                    Ok(Answer::no_content())
                }
                None => Err(not_found(&id)),
            },
            Endpoint::Information(id) => change_information(&mut ledger, &id, &document),
            Endpoint::Change(id) => change_lines(&mut ledger, &id, &document),
            Endpoint::Cancel(id) => {
                ledger.order(&id).map(|order| order.set_status(Status::Inactive)).map(|()| Answer::no_content())
            }
            Endpoint::Reactivate(id) => {
                ledger.order(&id).map(|order| order.set_status(Status::Active)).map(|()| Answer::no_content())
            }
        };
        outcome.unwrap_or_else(|refused| refused)
    }

    fn issue_token(&self, ledger: &mut Ledger, document: &Value) -> Result<Answer, Answer> {
        let mut problems = Vec::new();
        let mut field = |name: &str| match document.get(name) {
            Some(Value::String(value)) if !value.is_empty() => Some(value.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                problems.push(Problem::new(code::REQUIRED, format!("{name}: is required")));
                None
            }
            Some(found) => {
                let found = contract::describe(found);
                problems.push(Problem::new(code::INVALID_VALUE, format!("{name}: expected a string, found {found}")));
                None
            }
        };
        let (grant_type, client_id, client_secret, _redirect_uri) =
            (field("grant_type"), field("client_id"), field("client_secret"), field("redirect_uri"));
        if !document.is_object() {
            problems = vec![Problem::new(code::INVALID_VALUE, "(body): expected a JSON object")];
        }
        if !problems.is_empty() {
            return Err(Answer::errors(StatusCode::BAD_REQUEST, problems));
        }
        if grant_type.as_deref() != Some("client_credentials") {
            let message =
                format!("grant_type {:?} is not supported: use \"client_credentials\"", grant_type.unwrap_or_default());
            return Err(Answer::error(StatusCode::UNAUTHORIZED, "UNSUPPORTED_GRANT_TYPE", message));
        }
        let config = &self.shared.config;
        if client_id.as_deref() != Some(config.client_id.as_str())
            || client_secret.as_deref() != Some(config.client_secret.as_str())
        {
            return Err(Answer::error(
                StatusCode::UNAUTHORIZED,
                "INVALID_CLIENT",
                "invalid client_id or client_secret",
            ));
        }
        // One live token per credentials: issuing one ends the previous (issue 23).
        ledger.tokens.values_mut().for_each(|t| t.ended = true);
        let token = random_text(40);
        let lifetime = ledger.token_lifetime;
        ledger.tokens.insert(token.clone(), IssuedToken { expires_at: Instant::now() + lifetime, ended: false });
        ledger.tokens_issued += 1;
        let expires_in = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        Ok(Answer::json(
            StatusCode::OK,
            json!({
                "access_token": token,
                "refresh_token": random_text(40),
                "expires_in": expires_in,
                "token_type": "Bearer",
            }),
        ))
    }
}

fn authorize(ledger: &Ledger, headers: &HeaderMap) -> Result<(), Answer> {
    let refuse = |why: &str| Err(Answer::error(StatusCode::UNAUTHORIZED, "INVALID_TOKEN", why));
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return refuse("missing Authorization header (Bearer <access token>)");
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return refuse("the Authorization header is not Bearer <access token>");
    };
    match ledger.tokens.get(token) {
        None => refuse("unknown access token"),
        Some(issued) if issued.ended => {
            refuse("the access token was ended: a newer one was issued for these credentials")
        }
        Some(issued) if Instant::now() >= issued.expires_at => refuse("the access token has expired"),
        Some(_) => Ok(()),
    }
}

fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Answer> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        let message = format!("Content-Type {content_type:?} is not supported: send application/json");
        return Err(Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", message));
    }
    serde_json::from_slice(body)
        .map_err(|e| Answer::error(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("the body is not JSON: {e}")))
}

fn bad_request(problems: Vec<Problem>) -> Answer {
    Answer::errors(StatusCode::BAD_REQUEST, problems)
}

fn create(ledger: &mut Ledger, document: &Value) -> Result<Answer, Answer> {
    let new = contract::parse_create(document, &ledger.catalogue).map_err(bad_request)?;
    let id = match new.id.clone() {
        Some(id) if ledger.orders.iter().any(|o| o.id == id) => {
            // Exsited does not say what a second create with the same id does; the sandbox refuses it.
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                code::DUPLICATE,
                format!("purchase order {id} already exists"),
            ));
        }
        Some(id) => id,
        None => loop {
            let letters: String = (0..6).map(|_| fastrand::alphanumeric().to_ascii_uppercase()).collect();
            let id = format!("PO-{letters}-{:04}", ledger.next_number);
            ledger.next_number = ledger.next_number.wrapping_add(1);
            if !ledger.orders.iter().any(|o| o.id == id) {
                break id;
            }
        },
    };
    let order = PurchaseOrder::create(id, new, &ledger.catalogue).map_err(|p| bad_request(vec![p]))?;
    let answer = Answer::json(StatusCode::CREATED, json!({ "purchase_order": order.to_json() }));
    ledger.orders.push(order);
    Ok(answer)
}

fn list(ledger: &Ledger, query: &str) -> Result<Answer, Answer> {
    let (mut account, mut limit, mut offset, mut problems) = (None, None, 0usize, Vec::new());
    for (name, value) in query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))) {
        let (name, value) = (query_decode(name), query_decode(value));
        let mut number = |into: &mut usize| match value.parse::<usize>() {
            Ok(n) => *into = n,
            Err(_) => problems
                .push(Problem::new(code::INVALID_VALUE, format!("{name}: expected a whole number, found {value:?}"))),
        };
        match name.as_str() {
            "account_id" => account = Some(value.clone()),
            "limit" => number(limit.insert(0)),
            "offset" => number(&mut offset),
            _ => problems.push(Problem::new(
                code::UNKNOWN_FIELD,
                format!("{name}: unknown query parameter (the list takes account_id, limit and offset)"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(bad_request(problems));
    }
    let matching: Vec<&PurchaseOrder> =
        ledger.orders.iter().filter(|o| account.as_deref().is_none_or(|a| o.account_id() == a)).collect();
    let records = matching.len();
    let limit = limit.unwrap_or(records);
    let page: Vec<Value> = matching.iter().skip(offset).take(limit).map(|o| o.to_json()).collect();
    let link = |offset: usize| {
        let account = account.as_deref().map(|a| format!("account_id={}&", query_encode(a))).unwrap_or_default();
        format!("{PURCHASE_ORDERS_PATH}?{account}limit={limit}&offset={offset}")
    };
    let next = (limit > 0 && offset.saturating_add(limit) < records).then(|| link(offset + limit));
    let previous = (offset > 0 && limit > 0).then(|| link(offset.saturating_sub(limit)));
    Ok(Answer::json(
        StatusCode::OK,
        json!({
            "purchase_orders": page,
            "pagination": {
                "records": records,
                "limit": limit,
                "offset": offset,
                "previous_page": previous,
                "next_page": next,
            },
        }),
    ))
}

fn change_information(ledger: &mut Ledger, id: &str, document: &Value) -> Result<Answer, Answer> {
    let order = ledger.order(id)?;
    let change = contract::parse_information(document).map_err(bad_request)?;
    order.change_information(change).map_err(|p| bad_request(vec![p]))?;
    Ok(Answer::json(StatusCode::OK, json!({ "purchase_order": order.to_json() })))
}

fn change_lines(ledger: &mut Ledger, id: &str, document: &Value) -> Result<Answer, Answer> {
    let Ledger { orders, catalogue, .. } = ledger;
    let order = orders.iter_mut().find(|o| o.id == id).ok_or_else(|| not_found(id))?;
    let change = contract::parse_change(document, catalogue).map_err(bad_request)?;
    order.change_lines(change, catalogue).map_err(bad_request)?;
    Ok(Answer::json(StatusCode::OK, json!({ "purchase_order": order.to_json() })))
}

/// `n` random letters and digits.
fn random_text(n: usize) -> String {
    (0..n).map(|_| fastrand::alphanumeric()).collect()
}

/// `%XX` escapes decoded (a malformed one is kept as it is).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            // from_str_radix alone would take a sign ("%+1").
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Every byte but letters, digits and `-._~` as `%XX`.
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query_decode(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}
