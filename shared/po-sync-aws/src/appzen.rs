//! AppZen's purchase-order upsert over HTTPS: one client (one connection pool) built at cold start, every
//! answer classified into a typed outcome, transient failures retried with backoff inside the invocation; and
//! the read-back of what AppZen holds for a PO (`read`).
//!
//! The credentials travel only in headers marked sensitive and are never logged.

use crate::secrets::RenewableCredentials;
use bytes::Bytes;
use po_sync::appzen::{ErrorResponse, UPSERT_PATH, UpsertResponse};
use po_sync::config::reconcile::{AppZenConfig, AppZenCredentials, CredentialsSource};
use po_sync::outage::{OutageCause, StatusClass, classify_status};
use po_sync::retry::{Backoff, GiveUpReason, NextStep, next_step, parse_retry_after, wait_before_retry};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use secrecy::ExposeSecret;
use std::fmt;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

mod read;

pub use read::ReadError;

pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

#[derive(Debug, thiserror::Error)]
pub enum AppZenSetupError {
    #[error("AppZen credential {0} is not a valid HTTP header value")]
    InvalidCredential(&'static str),
    #[error("AppZen secret {arn} has no {key:?}")]
    MissingSecretKey { arn: String, key: &'static str },
    // Boxed: the SDK error inside is large, and this type travels in every `Result` here.
    #[error(transparent)]
    Secret(Box<crate::secrets::SecretError>),
    #[error("cannot build the AppZen HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("APPZEN_BASE_URL gives an invalid URL {url:?}")]
    InvalidUrl { url: String },
}

/// The credentials from the environment, or read once from Secrets Manager.
pub async fn resolve_credentials(
    source: &CredentialsSource,
    aws: &aws_config::SdkConfig,
) -> Result<AppZenCredentials, AppZenSetupError> {
    match source {
        CredentialsSource::Inline(credentials) => Ok(credentials.clone()),
        CredentialsSource::Secret { arn } => SecretRenewal::new(aws, arn).read().await,
    }
}

/// AppZen's credentials' secret, read again when AppZen refuses them (at most once per
/// `credential_renewal_interval`, 30 s: [`RenewableCredentials`]).
#[derive(Debug)]
pub struct SecretRenewal {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl SecretRenewal {
    pub fn new(aws: &aws_config::SdkConfig, arn: &str) -> Self {
        SecretRenewal { client: aws_sdk_secretsmanager::Client::new(aws), arn: arn.to_owned() }
    }

    async fn read(&self) -> Result<AppZenCredentials, AppZenSetupError> {
        let mut secret = crate::secrets::read_json_secret(&self.client, &self.arn)
            .await
            .map_err(|e| AppZenSetupError::Secret(Box::new(e)))?;
        let mut take = |key: &'static str| {
            crate::secrets::take_non_blank(&mut secret, key)
                .ok_or_else(|| AppZenSetupError::MissingSecretKey { arn: self.arn.clone(), key })
        };
        Ok(AppZenCredentials {
            api_key: take("api_key")?,
            customer_id: take("customer_id")?,
            customer_key: take("customer_key")?,
        })
    }
}

/// AppZen took the PO (2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub http_status: u16,
    /// AppZen's id for the PO; `None` only if a 2xx body was not AppZen's usual JSON.
    pub uuid: Option<String>,
    /// `CREATED` or `UPDATED`.
    pub status: Option<String>,
    pub correlation_id: Option<String>,
}

/// AppZen refused the PO; retrying the same request cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub http_status: u16,
    pub error: ErrorResponse,
    pub correlation_id: Option<String>,
}

/// AppZen gave no verdict on the PO: an outage of AppZen or of po-sync's setup, not the PO's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub cause: OutageCause,
    pub failure: AppZenFailure,
    pub retry_after: Option<Duration>,
    pub correlation_id: Option<String>,
    /// AppZen's error body, for a credentials or endpoint failure (it may say what is wrong).
    pub answer: Option<ErrorResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppZenFailure {
    Status(u16),
    Timeout,
    /// Connection refused or reset, TLS, DNS, a body cut short. The text is reqwest's, without the URL.
    Connection(String),
}

impl fmt::Display for AppZenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppZenFailure::Status(status) => write!(f, "HTTP {status}"),
            AppZenFailure::Timeout => f.write_str("timeout"),
            AppZenFailure::Connection(reason) => write!(f, "connection error: {reason}"),
        }
    }
}

impl Outage {
    fn of(failure: AppZenFailure) -> Self {
        let cause = match &failure {
            AppZenFailure::Status(status) => match classify_status(*status) {
                StatusClass::Outage(cause) => cause,
                _ => OutageCause::Unavailable,
            },
            AppZenFailure::Timeout | AppZenFailure::Connection(_) => OutageCause::Unavailable,
        };
        Outage { cause, failure, retry_after: None, correlation_id: None, answer: None }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self.failure {
            AppZenFailure::Status(status) => Some(status),
            _ => None,
        }
    }
}

/// One HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Accepted(Accepted),
    Rejected(Rejected),
    Outage(Outage),
}

/// The outcome of an upsert after retries: the record's fate follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertOutcome {
    Accepted(Accepted),
    Rejected(Rejected),
    /// Still no verdict when the attempts or the invocation's time ran out, or at once when only a person can
    /// fix it: SQS must redeliver.
    GaveUp {
        last: Outage,
        reason: GiveUpReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    pub outcome: UpsertOutcome,
    /// HTTP requests made.
    pub attempts: u32,
    /// The wait before each retry, in order (`Retry-After` shows here).
    pub waits: Vec<Duration>,
}

/// AppZen's purchase-order upsert. Cheap to share by reference; holds one connection pool. Its `Debug` shows the
/// credential headers as `Sensitive` (they are marked so).
#[derive(Debug)]
pub struct AppZenClient {
    http: reqwest::Client,
    /// The three credential headers, marked sensitive; replaced when a renewal reads new ones.
    credentials: RenewableCredentials<HeaderMap>,
    renewal: Option<SecretRenewal>,
    upsert_url: reqwest::Url,
    request_timeout: Duration,
    max_attempts: u32,
    backoff: Backoff,
    deadline_margin: Duration,
}

/// The three credential headers, marked sensitive.
fn credential_headers(credentials: &AppZenCredentials) -> Result<HeaderMap, AppZenSetupError> {
    let mut headers = HeaderMap::new();
    let secret_headers = [
        ("x-api-key", "api_key", &credentials.api_key),
        ("customer-id", "customer_id", &credentials.customer_id),
        ("customer-key", "customer_key", &credentials.customer_key),
    ];
    for (header, name, value) in secret_headers {
        headers.insert(HeaderName::from_static(header), sensitive(name, value.expose_secret())?);
    }
    Ok(headers)
}

fn sensitive(name: &'static str, value: &str) -> Result<HeaderValue, AppZenSetupError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| AppZenSetupError::InvalidCredential(name))?;
    // Keeps the value out of Debug output (and out of HPACK tables under HTTP/2).
    value.set_sensitive(true);
    Ok(value)
}

impl AppZenClient {
    pub fn new(config: &AppZenConfig, credentials: &AppZenCredentials) -> Result<Self, AppZenSetupError> {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
        let url = format!("{}{UPSERT_PATH}", config.base_url);
        let upsert_url = reqwest::Url::parse(&url).map_err(|_| AppZenSetupError::InvalidUrl { url })?;
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // A redirected POST loses its body; a redirect means a wrong base URL, which a person must fix.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            // Lambda freezes between invocations; drop connections AppZen's load balancer has likely closed.
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("po-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(AppZenClient {
            http,
            credentials: RenewableCredentials::new(
                credential_headers(credentials)?,
                config.credential_renewal_interval,
            ),
            renewal: None,
            upsert_url,
            request_timeout: config.request_timeout,
            max_attempts: config.max_attempts.max(1),
            backoff: config.backoff,
            deadline_margin: config.deadline_margin,
        })
    }

    /// Reads the credentials from this secret again when AppZen refuses them.
    pub fn with_renewal(mut self, renewal: SecretRenewal) -> Self {
        self.renewal = Some(renewal);
        self
    }

    pub fn upsert_url(&self) -> &str {
        self.upsert_url.as_str()
    }

    /// After AppZen refused the credentials of `generation`: whether newer ones are in place now (another
    /// request renewed them, or the secret holds new ones), so the request is worth sending again at once.
    async fn renew_credentials(&self, generation: u64) -> bool {
        let Some(renewal) = &self.renewal else { return false };
        let read = async { renewal.read().await.and_then(|credentials| credential_headers(&credentials)) };
        self.credentials.renew("AppZen", generation, read, |a, b| a == b).await
    }

    /// Upserts `body` (AppZen's JSON), retrying transient failures while attempts and time allow.
    /// `deadline` is when the invocation ends; `None` means no limit but the attempts.
    ///
    /// Pass the body by value (`String`): every attempt then sends that one buffer, never a copy (a large
    /// PO's body is tens of MB, and a copy would double reconcile's peak memory).
    pub async fn upsert(&self, body: impl Into<Bytes>, deadline: Option<Instant>) -> Upsert {
        let body = body.into();
        let time_left =
            || deadline.map(|d| d.saturating_duration_since(Instant::now()).saturating_sub(self.deadline_margin));
        let attempt_needs = self.request_timeout.min(Duration::from_secs(1));
        let mut attempts = 0;
        let mut waits = Vec::new();
        loop {
            let timeout = match time_left() {
                Some(left) if left < attempt_needs => {
                    let last = Outage::of(AppZenFailure::Timeout);
                    return Upsert {
                        outcome: UpsertOutcome::GaveUp { last, reason: GiveUpReason::OutOfTime },
                        attempts,
                        waits,
                    };
                }
                Some(left) => self.request_timeout.min(left),
                None => self.request_timeout,
            };
            attempts += 1;
            let sent_at = Instant::now();
            let credentials = self.credentials.current();
            let attempt = self.attempt_with(&credentials.value, body.clone(), timeout).await;
            crate::metrics::appzen_request(sent_at.elapsed());
            let outage = match attempt {
                Attempt::Accepted(accepted) => {
                    return Upsert { outcome: UpsertOutcome::Accepted(accepted), attempts, waits };
                }
                Attempt::Rejected(rejected) => {
                    return Upsert { outcome: UpsertOutcome::Rejected(rejected), attempts, waits };
                }
                Attempt::Outage(outage) => outage,
            };
            crate::metrics::appzen_failure(outage.cause);
            if outage.cause.needs_a_fix() {
                let renewed = outage.cause == OutageCause::Credentials
                    && attempts < self.max_attempts
                    && self.renew_credentials(credentials.generation).await;
                if renewed {
                    continue;
                }
                return Upsert {
                    outcome: UpsertOutcome::GaveUp { last: outage, reason: GiveUpReason::NeedsFix },
                    attempts,
                    waits,
                };
            }
            let wait = wait_before_retry(&self.backoff, attempts, outage.retry_after, fastrand::f64());
            match next_step(attempts, self.max_attempts, wait, attempt_needs, time_left()) {
                NextStep::WaitThenRetry(wait) => {
                    tracing::warn!(attempt = attempts, failure = %outage.failure, wait_ms = wait.as_millis() as u64,
                        correlation_id = outage.correlation_id.as_deref(), "AppZen transient failure; retrying");
                    waits.push(wait);
                    tokio::time::sleep(wait).await;
                }
                NextStep::GiveUp(reason) => {
                    return Upsert { outcome: UpsertOutcome::GaveUp { last: outage, reason }, attempts, waits };
                }
            }
        }
    }

    /// One HTTP request with the current credentials, classified. Cloning `Bytes` shares the buffer.
    pub async fn attempt(&self, body: Bytes, timeout: Duration) -> Attempt {
        let credentials = self.credentials.current();
        self.attempt_with(&credentials.value, body, timeout).await
    }

    async fn attempt_with(&self, credentials: &HeaderMap, body: Bytes, timeout: Duration) -> Attempt {
        let sent = self
            .http
            .post(self.upsert_url.clone())
            .headers(credentials.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Attempt::Outage(transport_failure(&error)),
        };
        let status = response.status().as_u16();
        let headers = response.headers();
        let correlation_id = headers.get(CORRELATION_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let outage = |cause, answer| {
            Attempt::Outage(Outage {
                cause,
                failure: AppZenFailure::Status(status),
                retry_after,
                correlation_id: correlation_id.clone(),
                answer,
            })
        };
        let class = classify_status(status);
        if let StatusClass::Outage(cause) = class
            && !cause.needs_a_fix()
        {
            return outage(cause, None);
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            // The answer was cut short: we cannot tell what AppZen decided, so try again.
            Err(error) => return Attempt::Outage(Outage { correlation_id, ..transport_failure(&error) }),
        };
        match class {
            StatusClass::Accepted => {
                let answer = serde_json::from_slice::<UpsertResponse>(&bytes).ok();
                Attempt::Accepted(Accepted {
                    http_status: status,
                    uuid: answer.as_ref().map(|a| a.uuid.clone()),
                    status: answer.map(|a| a.status),
                    correlation_id,
                })
            }
            StatusClass::Rejected => Attempt::Rejected(Rejected {
                http_status: status,
                error: ErrorResponse::from_body(&bytes),
                correlation_id,
            }),
            StatusClass::Outage(cause) => outage(cause, Some(ErrorResponse::from_body(&bytes))),
        }
    }
}

fn transport_failure(error: &reqwest::Error) -> Outage {
    let failure = if error.is_timeout() {
        AppZenFailure::Timeout
    } else {
        // Without the URL: it is known, and keeps the log line short.
        let mut text = error.to_string();
        if let Some(url) = error.url() {
            text = text.replace(&format!(" ({url})"), "");
        }
        let source = std::error::Error::source(error).map(|s| format!(": {s}")).unwrap_or_default();
        AppZenFailure::Connection(format!("{text}{source}"))
    };
    Outage::of(failure)
}
