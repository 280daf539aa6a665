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

pub mod token;

use crate::ledger::Written;
use crate::secrets::RenewableCredentials;
use bytes::Bytes;
use po_sync::config::reconcile::{ExsitedCredentialsSource, ExsitedDestinationConfig};
use po_sync::exsited::{ChangeRequest, CreateRequest, InformationRequest, changes_to};
use po_sync::outage::OutageCause;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use token::{SharedToken, Step, TokenRules, TokenStore};
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
}

/// How often, at most, Exsited's secret is read again after the token endpoint refused its credentials, however
/// many records fail meanwhile (as AppZen's).
pub const RENEWAL_INTERVAL: Duration = Duration::from_secs(30);

/// Where the client credentials came from, to read them again ([`RenewableCredentials`]).
struct CredentialsRenewal {
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
            secret
                .remove(key)
                .filter(|v| !v.trim().is_empty())
                .map(SecretString::from)
                .ok_or_else(|| ExsitedSetupError::MissingSecretKey { arn: self.arn.clone(), key })
        };
        Ok(ClientCredentials { client_id: take("client_id")?, client_secret: take("client_secret")? })
    }
}

/// The client credentials in use.
struct ClientCredentials {
    client_id: SecretString,
    client_secret: SecretString,
}

impl ClientCredentials {
    fn same_as(&self, other: &ClientCredentials) -> bool {
        self.client_id.expose_secret() == other.client_id.expose_secret()
            && self.client_secret.expose_secret() == other.client_secret.expose_secret()
    }
}

/// Exsited's token endpoint.
pub const TOKEN_PATH: &str = "/api/v1/oauth2/token";
/// Exsited's purchase orders.
pub const PURCHASE_ORDERS_PATH: &str = "/api/v3/purchase-orders";

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
    /// The token endpoint refused the client credentials. OAuth servers answer a wrong client secret with 400
    /// `invalid_client` as often as with 401: either way no PO can be sent until a person fixes the secret.
    #[error("Exsited's token endpoint refused the client credentials (HTTP {status}): {}", describe(.errors))]
    CredentialsRefused { status: u16, errors: Vec<ExsitedErrorItem> },
}

impl ExsitedError {
    /// A timeout, a refused connection, 408, 429 or a 5xx: the request may succeed later. Anything else needs a
    /// fix.
    pub fn is_transient(&self) -> bool {
        matches!(self.outage_cause(), Some(OutageCause::Throttled | OutageCause::Unavailable))
    }

    /// The outage this failure is (Exsited gave no verdict on the PO), or `None` for Exsited's verdict on the PO
    /// (another 4xx, or an answer that is not what its API documents):
    /// - credentials: 401 (the client already fetched a new token once) or 403, also from the token endpoint;
    /// - endpoint: a redirect, 404, 405, 407;
    /// - throttled: 429;
    /// - unavailable: 408, 5xx, a timeout or a connection error, and a token the shared store cannot give
    ///   (the store failed, or another client is renewing it): all [`ExsitedError::Unreachable`].
    pub fn outage_cause(&self) -> Option<OutageCause> {
        match self {
            ExsitedError::Unreachable(_) => Some(OutageCause::Unavailable),
            ExsitedError::Refused { status, .. } => po_sync::outage::classify_exsited_status(*status),
            ExsitedError::CredentialsRefused { .. } => Some(OutageCause::Credentials),
            ExsitedError::Unreadable { .. } => None,
        }
    }

    /// Exsited's HTTP status, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ExsitedError::Refused { status, .. }
            | ExsitedError::Unreadable { status, .. }
            | ExsitedError::CredentialsRefused { status, .. } => Some(*status),
            ExsitedError::Unreachable(_) => None,
        }
    }

    /// The failure in a few words, as an outage e-mail names the last one: `HTTP 401`, `timeout`.
    pub fn failure(&self) -> String {
        match self {
            ExsitedError::Unreachable(reason) => reason.clone(),
            ExsitedError::Refused { status, .. } | ExsitedError::Unreadable { status, .. } => format!("HTTP {status}"),
            ExsitedError::CredentialsRefused { status, .. } => format!("HTTP {status} from the token endpoint"),
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
struct OrderPage {
    #[serde(default)]
    purchase_orders: Vec<PurchaseOrder>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    #[serde(default)]
    next_page: Option<serde_json::Value>,
}

/// What [`ExsitedClient::deliver`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A new PO; Exsited's answer, with the id it gave.
    Created(PurchaseOrder),
    /// An existing PO (known from the ledger, or found by its note) now holds the version.
    Changed(PurchaseOrder),
    /// The PO is cancelled in Exsited: nothing was sent. A person decides whether it comes back.
    Inactive(PurchaseOrder),
    /// Komet moved the PO to another vendor: a PO of the new supplier account holds the version, and the one
    /// under the old account (`cancelled`, its id) was cancelled.
    Moved { order: PurchaseOrder, cancelled: String },
}

/// What [`ExsitedClient::deliver`] came to, with the operations it made (get, list, create, change each count
/// once, whatever the token requests, retries after a 401 or pages of a list).
#[derive(Debug)]
pub struct Delivery {
    pub operations: u32,
    pub result: Result<Delivered, ExsitedError>,
}

/// Whether Exsited holds `order` under another supplier account than `account`. Compared as Exsited might write
/// the id back (another case, spaces): only another account means Komet moved the PO.
fn held_under_another_account(order: &PurchaseOrder, account: &str) -> bool {
    order.account_id.as_deref().is_some_and(|held| !held.trim().eq_ignore_ascii_case(account.trim()))
}

/// A PO Exsited shows as cancelled (`INACTIVE`; the docs say "inactive").
pub fn is_inactive(order: &PurchaseOrder) -> bool {
    order.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("inactive") || s.eq_ignore_ascii_case("cancelled"))
}

/// Lists are read a page at a time, and at most this many pages, so a huge account cannot hold a record forever.
const LIST_PAGE: usize = 100;
const LIST_MAX_PAGES: usize = 50;

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
    /// The same token, to tell the shared store which one was refused.
    access_token: SecretString,
    /// Counts the tokens this client has held, so a request refused with an old token knows a newer one is
    /// already in place.
    generation: u64,
    renew_at: Instant,
}

/// The token store shared with other clients, and this client's place in it.
struct Shared {
    store: Arc<dyn TokenStore>,
    /// [`token::key`] of this client's tenant and client id.
    key: String,
    /// Who this client is when it holds the lease.
    holder: String,
    rules: TokenRules,
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

    /// Creates the PO; Exsited's answer names the id it gave it.
    pub async fn create(&self, request: &CreateRequest) -> Result<PurchaseOrder, ExsitedError> {
        self.create_within(request, Budget::NONE).await
    }

    async fn create_within(&self, request: &CreateRequest, budget: Budget) -> Result<PurchaseOrder, ExsitedError> {
        let body = serde_json::to_vec(request).map(Bytes::from).map_err(|e| unreadable(0, e))?;
        let (status, answer) = self.send(reqwest::Method::POST, PURCHASE_ORDERS_PATH, Some(body), budget).await?;
        one_order(status, &answer)
    }

    /// The PO of Exsited id `id`; `None` when Exsited answers 404.
    pub async fn get(&self, id: &str) -> Result<Option<PurchaseOrder>, ExsitedError> {
        self.get_within(id, Budget::NONE).await
    }

    async fn get_within(&self, id: &str, budget: Budget) -> Result<Option<PurchaseOrder>, ExsitedError> {
        match self.send(reqwest::Method::GET, &order_path(id, None), None, budget).await {
            Ok((status, answer)) => one_order(status, &answer).map(Some),
            Err(ExsitedError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes Exsited hold `request` for one Komet PO: changes the PO known by `known_id` (from the ledger), or
    /// the account's PO whose note begins with `note_prefix` (a create whose answer was lost), or else creates
    /// it. A cancelled PO is left as it is ([`Delivered::Inactive`]): reactivating it is a person's decision.
    ///
    /// `until` is when every request must be done (the invocation's deadline less its margin; `None`: no limit
    /// but each request's timeout): each request's timeout is cut to the time left, and no request starts with
    /// less left than one is worth starting with (the request timeout, at most a second): the delivery stops
    /// there with an [`ExsitedError::Unreachable`], so the record is handed back, as AppZen's is when out of time.
    pub async fn deliver(
        &self,
        known_id: Option<&str>,
        request: &CreateRequest,
        note_prefix: &str,
        until: Option<Instant>,
    ) -> Delivery {
        let mut operations = 0;
        let budget = Budget { until };
        let result = self.deliver_counting(known_id, request, note_prefix, budget, &mut operations).await;
        Delivery { operations, result }
    }

    async fn deliver_counting(
        &self,
        known_id: Option<&str>,
        request: &CreateRequest,
        note_prefix: &str,
        budget: Budget,
        operations: &mut u32,
    ) -> Result<Delivered, ExsitedError> {
        let account = &request.purchase_order.account_id;
        let known = match known_id {
            Some(id) => {
                self.begin(budget, operations)?;
                self.get_within(id, budget).await?
            }
            None => None,
        };
        let existing = match known {
            Some(order) => Some(order),
            // Never created, deleted in Exsited since, or created by a request whose answer was lost.
            None => {
                self.begin(budget, operations)?;
                self.find_within(account, note_prefix, budget).await?
            }
        };
        let Some(existing) = existing else {
            self.begin(budget, operations)?;
            return self.create_within(request, budget).await.map(Delivered::Created);
        };
        let moved = held_under_another_account(&existing, account);
        if is_inactive(&existing) {
            // The old account's PO cancelled by a move whose ledger write was lost: the new account's PO holds
            // the PO now. Anything else inactive was cancelled in Exsited, by a person.
            if moved {
                self.begin(budget, operations)?;
                if let Some(moved) = self.find_within(account, note_prefix, budget).await?.filter(|o| !is_inactive(o)) {
                    return self.change_within(&moved, request, budget, operations).await.map(Delivered::Changed);
                }
            }
            return Ok(Delivered::Inactive(existing));
        }
        if moved {
            return self.move_to_account(existing, request, note_prefix, budget, operations).await;
        }
        self.change_within(&existing, request, budget, operations).await.map(Delivered::Changed)
    }

    /// Counts an operation once it may start: time is left for a request.
    fn begin(&self, budget: Budget, operations: &mut u32) -> Result<(), ExsitedError> {
        budget.timeout(self.config.request_timeout)?;
        *operations += 1;
        Ok(())
    }

    /// `existing` changed to hold the version: its header, then its lines.
    async fn change_within(
        &self,
        existing: &PurchaseOrder,
        request: &CreateRequest,
        budget: Budget,
        operations: &mut u32,
    ) -> Result<PurchaseOrder, ExsitedError> {
        let line_uuids: Vec<String> = existing.lines.iter().filter_map(|l| l.uuid.clone()).collect();
        let (information, lines) = changes_to(request, &line_uuids);
        self.begin(budget, operations)?;
        self.change_information_within(&existing.id, &information, budget).await?;
        self.begin(budget, operations)?;
        self.change_lines_within(&existing.id, &lines, budget).await
    }

    /// Komet moved the PO to another vendor, and Exsited cannot move a PO to another supplier account
    /// (`/information` has no `account_id`). So the version goes to a PO of the new account (the active one an
    /// earlier try created, found by its note, else a new one), and only then is `old` cancelled: a retry after a
    /// failure between the two finds that PO instead of creating a second.
    async fn move_to_account(
        &self,
        old: PurchaseOrder,
        request: &CreateRequest,
        note_prefix: &str,
        budget: Budget,
        operations: &mut u32,
    ) -> Result<Delivered, ExsitedError> {
        self.begin(budget, operations)?;
        let earlier = self
            .find_within(&request.purchase_order.account_id, note_prefix, budget)
            .await?
            .filter(|o| !is_inactive(o));
        let order = match earlier {
            Some(earlier) => self.change_within(&earlier, request, budget, operations).await?,
            None => {
                self.begin(budget, operations)?;
                self.create_within(request, budget).await?
            }
        };
        self.begin(budget, operations)?;
        self.send(reqwest::Method::POST, &order_path(&old.id, Some("cancel")), None, budget).await?;
        Ok(Delivered::Moved { order, cancelled: old.id })
    }

    /// The account's PO whose note begins with `note_prefix`, the newest if several.
    pub async fn find(&self, account_id: &str, note_prefix: &str) -> Result<Option<PurchaseOrder>, ExsitedError> {
        self.find_within(account_id, note_prefix, Budget::NONE).await
    }

    async fn find_within(
        &self,
        account_id: &str,
        note_prefix: &str,
        budget: Budget,
    ) -> Result<Option<PurchaseOrder>, ExsitedError> {
        let mut found = None;
        for page in 0..LIST_MAX_PAGES {
            let path = format!(
                "{PURCHASE_ORDERS_PATH}?account_id={}&limit={LIST_PAGE}&offset={}",
                url::form_urlencoded::byte_serialize(account_id.as_bytes()).collect::<String>(),
                page * LIST_PAGE
            );
            let (status, answer) = self.send(reqwest::Method::GET, &path, None, budget).await?;
            let page: OrderPage = serde_json::from_slice(&answer).map_err(|e| unreadable(status, e))?;
            let listed = page.purchase_orders.len();
            if let Some(order) = page
                .purchase_orders
                .into_iter()
                .rfind(|o| o.purchase_order_note.as_deref().is_some_and(|n| n.starts_with(note_prefix)))
            {
                found = Some(order);
            }
            let more = page.pagination.and_then(|p| p.next_page).is_some_and(|next| !next.is_null());
            if !more || listed == 0 {
                return Ok(found);
            }
        }
        Ok(found)
    }

    /// `PATCH …/{id}/information`: the header.
    pub async fn change_information(
        &self,
        id: &str,
        request: &InformationRequest,
    ) -> Result<PurchaseOrder, ExsitedError> {
        self.change_information_within(id, request, Budget::NONE).await
    }

    async fn change_information_within(
        &self,
        id: &str,
        request: &InformationRequest,
        budget: Budget,
    ) -> Result<PurchaseOrder, ExsitedError> {
        let body = serde_json::to_vec(request).map(Bytes::from).map_err(|e| unreadable(0, e))?;
        let (status, answer) =
            self.send(reqwest::Method::PATCH, &order_path(id, Some("information")), Some(body), budget).await?;
        one_order(status, &answer)
    }

    /// `POST …/{id}/change`: the lines.
    pub async fn change_lines(&self, id: &str, request: &ChangeRequest) -> Result<PurchaseOrder, ExsitedError> {
        self.change_lines_within(id, request, Budget::NONE).await
    }

    async fn change_lines_within(
        &self,
        id: &str,
        request: &ChangeRequest,
        budget: Budget,
    ) -> Result<PurchaseOrder, ExsitedError> {
        let body = serde_json::to_vec(request).map(Bytes::from).map_err(|e| unreadable(0, e))?;
        let (status, answer) =
            self.send(reqwest::Method::POST, &order_path(id, Some("change")), Some(body), budget).await?;
        one_order(status, &answer)
    }

    /// Marks the PO inactive (`POST …/{id}/cancel`, no body; Exsited answers with no content).
    pub async fn cancel(&self, id: &str) -> Result<(), ExsitedError> {
        self.send(reqwest::Method::POST, &order_path(id, Some("cancel")), None, Budget::NONE).await.map(|_| ())
    }

    /// Makes a cancelled PO active again (`POST …/{id}/reactivate`).
    pub async fn reactivate(&self, id: &str) -> Result<(), ExsitedError> {
        self.send(reqwest::Method::POST, &order_path(id, Some("reactivate")), None, Budget::NONE).await.map(|_| ())
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

    /// The token to use: the current one unless it is about to expire or `refused` names its generation (a 401
    /// with it), else a new one (from the shared store if there is one). Holding the lock while fetching makes
    /// racing requests wait for that one token.
    async fn current_token(&self, refused: Option<u64>, budget: Budget) -> Result<(HeaderValue, u64), ExsitedError> {
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

fn time_delta(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

/// The shared token store failed: the request gives up for now (transient: the record is handed back), rather
/// than fetch a token of its own that would end the others'.
fn store_failed(error: crate::port::PortError) -> ExsitedError {
    ExsitedError::Unreachable(format!("no token: the shared Exsited token store failed: {error}"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
