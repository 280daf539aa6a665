//! Exsited's purchase-orders v3 API over HTTPS, with OAuth 2.0 client credentials: what reconcile's Exsited
//! destination sends through ([`ExsitedClient::deliver`]).
//!
//! One token for every request of the process: Exsited ends a token when a new one is issued for the same
//! credentials, so requests racing to "refresh" would end each other's. A token is fetched when there is none
//! or it is about to expire, and once more after a 401 (another request may already have done so: the
//! generation tells).
//!
//! Across processes (reconcile-exsited's concurrent instances, the operator CLI) the token is shared through a
//! [`token::TokenStore`] given with [`ExsitedClient::with_token_store`] (in Lambda, the ledger table:
//! [`token::DynamoTokenStore`]). The process keeps its copy in front of the store, which is read only when that
//! copy is missing, due for renewal or refused with a 401; then the store's token is used if it is good, else
//! one client takes a short lease, fetches the next token and stores it while the others wait for it
//! ([`token::decide`]).
//!
//! The credentials and the token travel only in request bodies and headers marked sensitive, and are never
//! logged.

mod auth;
mod error;
mod orders;
pub mod token;

pub use auth::RENEWAL_INTERVAL;
pub use error::{ExsitedError, ExsitedErrorItem};
pub use orders::{Delivered, Delivery, PurchaseOrder, PurchaseOrderLine, is_inactive};

use crate::secrets::RenewableCredentials;
use auth::{ClientCredentials, CredentialsRenewal, Shared, Token};
use bytes::Bytes;
use error::ErrorBody;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::SecretString;
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ExsitedSetupError {
    #[error("Exsited secret {arn} has no {key:?}")]
    MissingSecretKey { arn: String, key: &'static str },
    #[error(transparent)]
    Secret(Box<crate::secrets::SecretError>),
    #[error("cannot build the Exsited HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Exsited's token endpoint.
pub const TOKEN_PATH: &str = "/api/v1/oauth2/token";
/// Exsited's purchase orders.
pub const PURCHASE_ORDERS_PATH: &str = "/api/v3/purchase-orders";

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

/// Exsited's API for one tenant and one set of credentials; holds one connection pool and one token.
pub struct ExsitedClient {
    http: reqwest::Client,
    config: ExsitedConfig,
    credentials: RenewableCredentials<ClientCredentials>,
    // Boxed: the Secrets Manager client is large, and most clients have no secret to read again.
    renewal: Option<Box<CredentialsRenewal>>,
    token: Mutex<Option<Token>>,
    fetched: std::sync::atomic::AtomicU64,
    shared: Option<Shared>,
}

impl fmt::Debug for ExsitedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExsitedClient")
            .field("base_url", &self.config.base_url)
            .field("shared_token", &self.shared.as_ref().map(|s| &s.key))
            .finish_non_exhaustive()
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
        let credentials =
            ClientCredentials { client_id: config.client_id.clone(), client_secret: config.client_secret.clone() };
        Ok(ExsitedClient {
            http,
            config,
            credentials: RenewableCredentials::new(credentials, RENEWAL_INTERVAL),
            renewal: None,
            token: Mutex::new(None),
            fetched: Default::default(),
            shared: None,
        })
    }

    /// One request with the current token; after a 401, once more with a new token. Each request (the token's
    /// too) within `budget`.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
        budget: Budget,
    ) -> Result<(u16, Bytes), ExsitedError> {
        let answer = async {
            let (header, generation) = self.current_token(None, budget).await?;
            match self.request(method.clone(), path, body.clone(), header, budget).await {
                Err(ExsitedError::Refused { status: 401, .. }) => {
                    let (header, _) = self.current_token(Some(generation), budget).await?;
                    self.request(method, path, body, header, budget).await
                }
                other => other,
            }
        }
        .await;
        // Counted once the request has its answer: the 401 a new token cures is no failure.
        if let Some(cause) = answer.as_ref().err().and_then(ExsitedError::outage_cause) {
            crate::metrics::exsited_failure(cause);
        }
        answer
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
        token: HeaderValue,
        budget: Budget,
    ) -> Result<(u16, Bytes), ExsitedError> {
        let timeout = budget.timeout(self.config.request_timeout)?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.config.base_url))
            .header(AUTHORIZATION, token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let sent_at = Instant::now();
        let answer = match request.send().await {
            Ok(response) => answer(response).await,
            Err(error) => Err(unreachable(error)),
        };
        crate::metrics::exsited_request(sent_at.elapsed());
        answer
    }
}

/// Until when a delivery's requests must be done (the invocation's deadline less its margin); `None`: no limit
/// but each request's timeout.
#[derive(Debug, Clone, Copy)]
struct Budget {
    until: Option<Instant>,
}

impl Budget {
    const NONE: Budget = Budget { until: None };

    /// The timeout of a request starting now: `request_timeout`, cut to the time left. Out of time when less is
    /// left than a request is worth starting with (as AppZen: the request timeout, at most a second).
    fn timeout(self, request_timeout: Duration) -> Result<Duration, ExsitedError> {
        let Some(until) = self.until else { return Ok(request_timeout) };
        let left = until.saturating_duration_since(Instant::now());
        if left < request_timeout.min(Duration::from_secs(1)) {
            return Err(ExsitedError::Unreachable(OUT_OF_TIME.to_owned()));
        }
        Ok(request_timeout.min(left))
    }

    /// This budget as it will be after `wait`.
    fn after(self, wait: Duration) -> Budget {
        Budget { until: self.until.map(|until| until.checked_sub(wait).unwrap_or_else(Instant::now)) }
    }
}

/// Why a delivery stopped before a request: the invocation had too little time left for it.
pub const OUT_OF_TIME: &str = "out of time: too little of the invocation was left for another request";

fn time_delta(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
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

#[cfg(test)]
mod tests {
    use super::auth::store_failed;
    use super::*;
    use po_sync::outage::OutageCause;

    fn refused(status: u16) -> ExsitedError {
        ExsitedError::Refused { status, errors: Vec::new(), retry_after: None }
    }

    #[test]
    fn failures_are_classified_into_the_outage_causes_appzen_s_are() {
        use OutageCause::*;
        for (error, cause) in [
            (refused(401), Some(Credentials)),
            (refused(403), Some(Credentials)),
            (refused(302), Some(Endpoint)),
            (refused(404), Some(Endpoint)),
            (refused(405), Some(Endpoint)),
            (refused(407), Some(Endpoint)),
            (refused(429), Some(Throttled)),
            (refused(408), Some(Unavailable)),
            (refused(500), Some(Unavailable)),
            (refused(503), Some(Unavailable)),
            (ExsitedError::Unreachable("timeout".to_owned()), Some(Unavailable)),
            (ExsitedError::Unreachable("error sending request: connection refused".to_owned()), Some(Unavailable)),
            // Exsited's verdicts on the PO: no outage.
            (refused(400), None),
            (refused(409), None),
            (refused(422), None),
            (ExsitedError::Unreadable { status: 200, reason: "not a purchase order".to_owned() }, None),
        ] {
            assert_eq!(error.outage_cause(), cause, "{error:?}");
            assert_eq!(error.is_transient(), matches!(cause, Some(Throttled | Unavailable)), "{error:?}");
        }
    }

    #[test]
    fn a_request_s_timeout_is_cut_to_the_time_left_and_none_starts_without_a_second() {
        let ten = Duration::from_secs(10);
        assert_eq!(Budget::NONE.timeout(ten), Ok(ten), "no deadline: the request timeout");
        let far = Budget { until: Some(Instant::now() + Duration::from_secs(60)) };
        assert_eq!(far.timeout(ten), Ok(ten));
        let near = Budget { until: Some(Instant::now() + Duration::from_secs(3)) };
        let cut = near.timeout(ten).unwrap();
        assert!(cut <= Duration::from_secs(3) && cut > Duration::from_secs(2), "{cut:?}");
        let out = Err(ExsitedError::Unreachable(OUT_OF_TIME.to_owned()));
        assert_eq!(near.after(Duration::from_millis(2500)).timeout(ten), out, "half a second left after the wait");
        assert_eq!(Budget { until: Some(Instant::now()) }.timeout(ten), out);
        let short = Budget { until: Some(Instant::now() + Duration::from_millis(400)) };
        assert!(short.timeout(Duration::from_millis(300)).is_ok(), "a request needs its timeout, at most a second");
        let stopped = ExsitedError::Unreachable(OUT_OF_TIME.to_owned());
        assert_eq!(stopped.outage_cause(), Some(OutageCause::Unavailable), "handed back");
    }

    #[test]
    fn a_token_the_shared_store_cannot_give_is_an_unavailability() {
        use crate::port::{Failure, PortError};
        let failed = store_failed(PortError::new("dynamodb:GetItem", Failure::Transient, "throttled"));
        assert!(matches!(failed, ExsitedError::Unreachable(_)), "{failed:?}");
        assert_eq!(failed.outage_cause(), Some(OutageCause::Unavailable));
        assert_eq!(refused(401).failure(), "HTTP 401");
        assert_eq!(ExsitedError::Unreachable("timeout".to_owned()).failure(), "timeout");
    }
}
