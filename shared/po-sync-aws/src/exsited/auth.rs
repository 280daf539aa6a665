//! The client credentials and the access token. One token serves every request of the process, and, given a
//! [`TokenStore`], every po-sync client of the same tenant and credentials.

use super::token::{self, SharedToken, Step, TokenRules, TokenStore};
use super::{
    Budget, ExsitedClient, ExsitedConfig, ExsitedError, ExsitedSetupError, TOKEN_PATH, answer, time_delta, unreachable,
    unreadable,
};
use crate::ledger::Written;
use po_sync::config::reconcile::{ExsitedCredentialsSource, ExsitedDestinationConfig};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often, at most, Exsited's secret is read again after the token endpoint refused its credentials, however
/// many records fail meanwhile (as AppZen's).
pub const RENEWAL_INTERVAL: Duration = Duration::from_secs(30);

/// Where the client credentials came from, to read them again ([`crate::secrets::RenewableCredentials`]).
pub(super) struct CredentialsRenewal {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl CredentialsRenewal {
    /// `client_id` and `client_secret` from the secret, both present and not blank.
    async fn read(&self) -> Result<ClientCredentials, ExsitedSetupError> {
        let mut secret = crate::secrets::read_json_secret(&self.client, &self.arn)
            .await
            .map_err(|e| ExsitedSetupError::Secret(Box::new(e)))?;
        let mut take = |key: &'static str| {
            crate::secrets::take_non_blank(&mut secret, key)
                .ok_or_else(|| ExsitedSetupError::MissingSecretKey { arn: self.arn.clone(), key })
        };
        Ok(ClientCredentials { client_id: take("client_id")?, client_secret: take("client_secret")? })
    }
}

/// The client credentials in use.
pub(super) struct ClientCredentials {
    pub(super) client_id: SecretString,
    pub(super) client_secret: SecretString,
}

impl ClientCredentials {
    fn same_as(&self, other: &ClientCredentials) -> bool {
        self.client_id.expose_secret() == other.client_id.expose_secret()
            && self.client_secret.expose_secret() == other.client_secret.expose_secret()
    }
}

/// A token is renewed this long before Exsited says it expires, so a request never leaves with a dying one.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How long a client fetching the shared token keeps the others from asking Exsited (at least: a token request
/// may take up to the request timeout, and the lease outlasts it by this much).
const LEASE: Duration = Duration::from_secs(15);
/// While another client holds the lease, the store is read again this often, at most for [`LEASE_WAIT`]; then
/// the request gives up (transient: the record is handed back) rather than end the token being fetched.
const LEASE_POLL: Duration = Duration::from_millis(200);
const LEASE_WAIT: Duration = Duration::from_secs(3);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub(super) struct Token {
    header: HeaderValue,
    /// The same token, to tell the shared store which one was refused.
    access_token: SecretString,
    /// Counts the tokens this client has held, so a request refused with an old token knows a newer one is
    /// already in place.
    generation: u64,
    renew_at: Instant,
}

/// The token store shared with other clients, and this client's place in it.
pub(super) struct Shared {
    store: Arc<dyn TokenStore>,
    /// [`token::key`] of this client's tenant and client id.
    pub(super) key: String,
    /// Who this client is when it holds the lease.
    holder: String,
    rules: TokenRules,
}

impl ExsitedClient {
    /// The client `config` describes. Credentials from a secret are read now, and again when the token endpoint
    /// refuses them (at most every [`RENEWAL_INTERVAL`]), so a rotated client secret needs no restart.
    pub async fn from_config(
        config: &ExsitedDestinationConfig,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ExsitedSetupError> {
        let (client_id, client_secret, renewal) = match &config.credentials {
            ExsitedCredentialsSource::Inline { client_id, client_secret } => {
                (client_id.clone(), client_secret.clone(), None)
            }
            ExsitedCredentialsSource::Secret { arn } => {
                let renewal = CredentialsRenewal { client: aws_sdk_secretsmanager::Client::new(aws), arn: arn.clone() };
                let ClientCredentials { client_id, client_secret } = renewal.read().await?;
                (client_id, client_secret, Some(Box::new(renewal)))
            }
        };
        let mut client = ExsitedClient::new(ExsitedConfig {
            base_url: config.base_url.clone(),
            client_id,
            client_secret,
            redirect_uri: config.redirect_uri.clone(),
            request_timeout: config.request_timeout,
        })?;
        client.renewal = renewal;
        Ok(client)
    }

    /// Shares the token through `store` with every client of the same tenant and client id that uses it
    /// (reconcile's instances, the operator CLI), instead of keeping one of its own.
    pub fn with_token_store(mut self, store: impl TokenStore + 'static) -> Self {
        let lease = LEASE.max(self.config.request_timeout + Duration::from_secs(5));
        self.shared = Some(Shared {
            store: Arc::new(store),
            key: token::key(&self.config.base_url, self.config.client_id.expose_secret()),
            holder: format!("{:016x}", fastrand::u64(..)),
            rules: TokenRules { renew_margin: time_delta(EXPIRY_MARGIN), lease: time_delta(lease) },
        });
        self
    }

    /// Tokens fetched from Exsited by this client since it was built (not those it found in the store).
    pub fn tokens_fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The token to use: the current one unless it is about to expire or `refused` names its generation (a 401
    /// with it), else a new one (from the shared store if there is one). Holding the lock while fetching makes
    /// racing requests wait for that one token.
    pub(super) async fn current_token(
        &self,
        refused: Option<u64>,
        budget: Budget,
    ) -> Result<(HeaderValue, u64), ExsitedError> {
        let mut token = self.token.lock().await;
        if let Some(current) = token.as_ref()
            && refused != Some(current.generation)
            && Instant::now() < current.renew_at
        {
            return Ok((current.header.clone(), current.generation));
        }
        let fresh = match &self.shared {
            None => self.fetch_new(budget).await?,
            Some(shared) => {
                let refused = token.as_ref().filter(|t| refused == Some(t.generation)).map(|t| &t.access_token);
                self.shared_token(shared, refused, budget).await?
            }
        };
        let header = bearer(&fresh.access_token)?;
        let generation = token.as_ref().map_or(0, |t| t.generation) + 1;
        let lifetime = (fresh.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
        let now = Instant::now();
        // A lifetime too long for the clock (no real token) is a year: it is renewed after a 401 anyway.
        let renew_at = now.checked_add(lifetime.saturating_sub(EXPIRY_MARGIN)).unwrap_or(now + YEAR);
        *token = Some(Token { header: header.clone(), access_token: fresh.access_token, generation, renew_at });
        Ok((header, generation))
    }

    /// The shared token: the stored one if it is good, else one this client fetches under a lease, or one
    /// another client is fetching (waited for, briefly). `refused` is the token Exsited just answered 401 to.
    async fn shared_token(
        &self,
        shared: &Shared,
        refused: Option<&SecretString>,
        budget: Budget,
    ) -> Result<SharedToken, ExsitedError> {
        let started = Instant::now();
        let gave_up = || {
            ExsitedError::Unreachable(
                "no token: another po-sync client is renewing the shared Exsited token; try again later".to_owned(),
            )
        };
        loop {
            let record = shared.store.read(&shared.key).await.map_err(store_failed)?;
            let now = chrono::Utc::now();
            let lease = match token::decide(record.as_ref(), &shared.key, refused, &shared.holder, now, shared.rules) {
                Step::Use(token) => return Ok(token),
                Step::Wait if started.elapsed() + LEASE_POLL > LEASE_WAIT => return Err(gave_up()),
                Step::Wait => {
                    // Waiting must leave time for the request the token is for.
                    budget.after(LEASE_POLL).timeout(self.config.request_timeout)?;
                    tokio::time::sleep(LEASE_POLL).await;
                    continue;
                }
                Step::Lease(lease) => lease,
            };
            if shared.store.write(&lease).await.map_err(store_failed)? == Written::Conflict {
                // Another client wrote first: read what it wrote (most likely its own lease).
                if started.elapsed() > LEASE_WAIT {
                    return Err(gave_up());
                }
                continue;
            }
            let fresh = match self.fetch_new(budget).await {
                Ok(fresh) => fresh,
                Err(error) => {
                    // Let the next client try at once rather than wait out the lease; if this write is lost, the
                    // lease runs out by itself.
                    let _ = shared.store.write(&lease.released(chrono::Utc::now())).await;
                    return Err(error);
                }
            };
            match shared.store.write(&lease.holding(&fresh, chrono::Utc::now())).await {
                Ok(Written::Stored) => {}
                // Only if the lease ran out while the token was fetched: this request still uses the new token.
                Ok(Written::Conflict) => tracing::warn!(
                    key = %shared.key,
                    "the new Exsited token was not stored: the lease ran out while it was fetched and another client wrote the record"
                ),
                Err(error) => tracing::warn!(
                    key = %shared.key,
                    error = %error,
                    "the new Exsited token was not stored; other clients fetch their own once the lease runs out"
                ),
            }
            return Ok(fresh);
        }
    }

    /// A new token from Exsited (which ends the previous one).
    async fn fetch_new(&self, budget: Budget) -> Result<SharedToken, ExsitedError> {
        let fresh = self.fetch_token(budget).await?;
        self.fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lifetime = Duration::from_secs(fresh.expires_in.unwrap_or(3600));
        let access_token = SecretString::from(fresh.access_token);
        // Checked before it is stored for others.
        bearer(&access_token)?;
        let now = chrono::Utc::now();
        let expires_at =
            now.checked_add_signed(time_delta(lifetime)).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        Ok(SharedToken { access_token, expires_at })
    }

    /// A token for the current credentials; if the endpoint refuses them and the secret holds others now, one
    /// more try with those.
    async fn fetch_token(&self, budget: Budget) -> Result<TokenAnswer, ExsitedError> {
        let credentials = self.credentials.current();
        match self.request_token(&credentials.value, budget).await {
            Err(ExsitedError::CredentialsRefused { .. }) if self.renew_credentials(credentials.generation).await => {
                self.request_token(&self.credentials.current().value, budget).await
            }
            answer => answer,
        }
    }

    /// After the token endpoint refused the credentials of `generation`: whether others are in place now
    /// (another request renewed them, or the secret holds new ones).
    async fn renew_credentials(&self, generation: u64) -> bool {
        let Some(renewal) = &self.renewal else { return false };
        self.credentials.renew("Exsited", generation, renewal.read(), ClientCredentials::same_as).await
    }

    async fn request_token(
        &self,
        credentials: &ClientCredentials,
        budget: Budget,
    ) -> Result<TokenAnswer, ExsitedError> {
        let timeout = budget.timeout(self.config.request_timeout)?;
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": credentials.client_id.expose_secret(),
            "client_secret": credentials.client_secret.expose_secret(),
            "redirect_uri": self.config.redirect_uri,
        });
        let response = self
            .http
            .post(format!("{}{TOKEN_PATH}", self.config.base_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let (status, bytes) = answer(response).await.map_err(token_refusal)?;
        serde_json::from_slice(&bytes).map_err(|e| unreadable(status, format!("token answer: {e}")))
    }
}

/// A refusal from the token endpoint: a 4xx that is not about the address (404, 405, 407) nor a passing one
/// (408, 429) refuses the credentials, whatever its status.
fn token_refusal(error: ExsitedError) -> ExsitedError {
    match error {
        ExsitedError::Refused { status, errors, .. }
            if (400..500).contains(&status) && !matches!(status, 404 | 405 | 407 | 408 | 429) =>
        {
            ExsitedError::CredentialsRefused { status, errors }
        }
        other => other,
    }
}

/// The `Authorization` header of `token`, marked sensitive.
fn bearer(token: &SecretString) -> Result<HeaderValue, ExsitedError> {
    let mut header = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| unreadable(200, "the access token is not a valid header value"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// The shared token store failed: the request gives up for now (transient: the record is handed back), rather
/// than fetch a token of its own that would end the others'.
pub(super) fn store_failed(error: crate::port::PortError) -> ExsitedError {
    ExsitedError::Unreachable(format!("no token: the shared Exsited token store failed: {error}"))
}
