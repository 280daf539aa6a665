//! Exsited's purchase-orders v3 API over HTTPS, with OAuth 2.0 client credentials (issue 23: not wired into
//! reconcile yet).
//!
//! One token for every request of the process: Exsited ends a token when a new one is issued for the same
//! credentials, so requests racing to "refresh" would end each other's. A token is fetched when there is none
//! or it is about to expire, and once more after a 401 (another request may already have done so: the
//! generation tells). Sharing one token across Lambda instances needs a store of its own (docs/design.md, "A
//! second destination"); within an instance this client already shares it.
//!
//! The credentials and the token travel only in request bodies and headers marked sensitive, and are never
//! logged.

use bytes::Bytes;
use po_sync::exsited::CreateRequest;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Exsited's token endpoint.
pub const TOKEN_PATH: &str = "/api/v1/oauth2/token";
/// Exsited's purchase orders.
pub const PURCHASE_ORDERS_PATH: &str = "/api/v3/purchase-orders";

/// A token is renewed this long before Exsited says it expires, so a request never leaves with a dying one.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ExsitedConfig {
    /// `https://<tenant>.exsited.com`, without a trailing slash.
    pub base_url: String,
    pub client_id: SecretString,
    pub client_secret: SecretString,
    /// The redirect URI registered with the credentials (the token request carries it).
    pub redirect_uri: String,
    pub request_timeout: Duration,
}

/// One of Exsited's errors: `{"errors":[{"code","message"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExsitedErrorItem {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ExsitedErrorItem>,
}

/// Why a request to Exsited came to nothing; `is_transient` says whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExsitedError {
    #[error("Exsited did not answer: {0}")]
    Unreachable(String),
    #[error("Exsited answered HTTP {status}: {}", describe(.errors))]
    Refused { status: u16, errors: Vec<ExsitedErrorItem>, retry_after: Option<Duration> },
    #[error("Exsited's answer (HTTP {status}) is not what its API documents: {reason}")]
    Unreadable { status: u16, reason: String },
}

impl ExsitedError {
    /// A timeout, a refused connection, 429 or a 5xx: the request may succeed later. Anything else needs a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            ExsitedError::Unreachable(_) => true,
            ExsitedError::Refused { status, .. } => *status == 429 || *status >= 500,
            ExsitedError::Unreadable { .. } => false,
        }
    }
}

fn describe(errors: &[ExsitedErrorItem]) -> String {
    if errors.is_empty() {
        return "no error detail".to_owned();
    }
    let each = errors.iter().map(|e| match (&e.code, &e.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.clone(),
        (Some(code), None) => code.clone(),
        (None, None) => "(empty error)".to_owned(),
    });
    po_sync::text::log_field(&each.collect::<Vec<_>>().join("; ")).into_owned()
}

/// A purchase order as Exsited answers it (the fields po-sync reads; amounts are Exsited's decimal strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PurchaseOrder {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub total: Option<String>,
    #[serde(default)]
    pub purchase_order_note: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub lines: Vec<PurchaseOrderLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PurchaseOrderLine {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub item_id: Option<String>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_quantity: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OneOrder {
    purchase_order: PurchaseOrder,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Token {
    header: HeaderValue,
    /// Counts tokens fetched, so a request refused with an old token knows a newer one is already in place.
    generation: u64,
    renew_at: Instant,
}

/// Exsited's API for one tenant and one set of credentials; holds one connection pool and one token.
pub struct ExsitedClient {
    http: reqwest::Client,
    config: ExsitedConfig,
    token: Mutex<Option<Token>>,
    fetched: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for ExsitedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExsitedClient").field("base_url", &self.config.base_url).finish_non_exhaustive()
    }
}

impl ExsitedClient {
    pub fn new(config: ExsitedConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirected POST loses its body; a redirect means a wrong base URL, which a person must fix.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("po-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ExsitedClient { http, config, token: Mutex::new(None), fetched: Default::default() })
    }

    /// Tokens fetched since the client was built.
    pub fn tokens_fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Creates the PO; Exsited's answer names the id it gave it.
    pub async fn create(&self, request: &CreateRequest) -> Result<PurchaseOrder, ExsitedError> {
        let body = serde_json::to_vec(request).map(Bytes::from).map_err(|e| unreadable(0, e))?;
        let (status, answer) = self.send(reqwest::Method::POST, PURCHASE_ORDERS_PATH, Some(body)).await?;
        one_order(status, &answer)
    }

    /// The PO of Exsited id `id`; `None` when Exsited answers 404.
    pub async fn get(&self, id: &str) -> Result<Option<PurchaseOrder>, ExsitedError> {
        match self.send(reqwest::Method::GET, &order_path(id, None), None).await {
            Ok((status, answer)) => one_order(status, &answer).map(Some),
            Err(ExsitedError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks the PO inactive (`POST …/{id}/cancel`, no body; Exsited answers with no content).
    pub async fn cancel(&self, id: &str) -> Result<(), ExsitedError> {
        self.send(reqwest::Method::POST, &order_path(id, Some("cancel")), None).await.map(|_| ())
    }

    /// Makes a cancelled PO active again (`POST …/{id}/reactivate`).
    pub async fn reactivate(&self, id: &str) -> Result<(), ExsitedError> {
        self.send(reqwest::Method::POST, &order_path(id, Some("reactivate")), None).await.map(|_| ())
    }

    /// One request with the current token; after a 401, once more with a new token.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), ExsitedError> {
        let (header, generation) = self.current_token(None).await?;
        match self.request(method.clone(), path, body.clone(), header).await {
            Err(ExsitedError::Refused { status: 401, .. }) => {
                let (header, _) = self.current_token(Some(generation)).await?;
                self.request(method, path, body, header).await
            }
            other => other,
        }
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
        token: HeaderValue,
    ) -> Result<(u16, Bytes), ExsitedError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.config.base_url))
            .header(AUTHORIZATION, token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.config.request_timeout);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(unreachable)?;
        answer(response).await
    }

    /// The token to use: the current one unless it is about to expire or `refused` names its generation (a 401
    /// with it), else a new one. Holding the lock while fetching makes racing requests wait for that one token.
    async fn current_token(&self, refused: Option<u64>) -> Result<(HeaderValue, u64), ExsitedError> {
        let mut token = self.token.lock().await;
        if let Some(current) = token.as_ref()
            && refused != Some(current.generation)
            && Instant::now() < current.renew_at
        {
            return Ok((current.header.clone(), current.generation));
        }
        let fresh = self.fetch_token().await?;
        let generation = self.fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let lifetime = Duration::from_secs(fresh.expires_in.unwrap_or(3600));
        let mut header = HeaderValue::from_str(&format!("Bearer {}", fresh.access_token))
            .map_err(|_| unreadable(200, "the access token is not a valid header value"))?;
        header.set_sensitive(true);
        let renew_at = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        *token = Some(Token { header: header.clone(), generation, renew_at });
        Ok((header, generation))
    }

    async fn fetch_token(&self) -> Result<TokenAnswer, ExsitedError> {
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.config.client_id.expose_secret(),
            "client_secret": self.config.client_secret.expose_secret(),
            "redirect_uri": self.config.redirect_uri,
        });
        let response = self
            .http
            .post(format!("{}{TOKEN_PATH}", self.config.base_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.config.request_timeout)
            .body(body.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let (status, bytes) = answer(response).await?;
        serde_json::from_slice(&bytes).map_err(|e| unreadable(status, format!("token answer: {e}")))
    }
}

fn order_path(id: &str, action: Option<&str>) -> String {
    // Exsited's ids (`PO-LHROM9-0024`) are path-safe; anything else is encoded so it stays one segment.
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20");
    match action {
        Some(action) => format!("{PURCHASE_ORDERS_PATH}/{id}/{action}"),
        None => format!("{PURCHASE_ORDERS_PATH}/{id}"),
    }
}

async fn answer(response: reqwest::Response) -> Result<(u16, Bytes), ExsitedError> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| po_sync::retry::parse_retry_after(v, std::time::SystemTime::now()));
    let bytes = response.bytes().await.map_err(unreachable)?;
    if (200..300).contains(&status) {
        return Ok((status, bytes));
    }
    let errors = serde_json::from_slice::<ErrorBody>(&bytes).map(|b| b.errors).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).trim().to_owned();
        vec![ExsitedErrorItem { code: None, message: Some(text).filter(|t| !t.is_empty()) }]
    });
    Err(ExsitedError::Refused { status, errors, retry_after })
}

fn one_order(status: u16, bytes: &[u8]) -> Result<PurchaseOrder, ExsitedError> {
    serde_json::from_slice::<OneOrder>(bytes).map(|o| o.purchase_order).map_err(|e| unreadable(status, e))
}

fn unreachable(error: reqwest::Error) -> ExsitedError {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    if error.is_timeout() {
        text = "timeout".to_owned();
    }
    ExsitedError::Unreachable(text)
}

fn unreadable(status: u16, reason: impl fmt::Display) -> ExsitedError {
    ExsitedError::Unreadable { status, reason: reason.to_string() }
}
