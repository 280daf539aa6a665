//! Configuration of the `reconcile` function.

pub use super::HistoryConfig;
use super::{ConfigError, Env, fifo_queue_url, history, number_in, one_of, optional, parsed_or, required};
use crate::appzen::{Currency, EntityIdSource, MappingSettings, SupplierIdSource};
use crate::archive::{DEFAULT_INVOICE_HOSTS, FetchPolicy};
use crate::decision::Policy;
use crate::destination::{Destination, parse_destinations};
use crate::exsited::{ExsitedSettings, IdRule};
use crate::reconcile::Tolerance;
use crate::retry::{Backoff, RetrySchedule, parse_duration};
use secrecy::SecretString;
use std::time::Duration;

pub const DEFAULT_APPZEN_BASE_URL: &str = "https://api.appzen.com";

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub notify_queue_url: String,
    /// The version ledger's DynamoDB table (`LEDGER_TABLE_NAME`).
    pub ledger_table: String,
    /// Where each PO's attempts are recorded; `None` (no `HISTORY_TABLE_NAME`) records none.
    pub history: Option<HistoryConfig>,
    /// Where invoice PDFs are archived; `None` (no `ARCHIVE_BUCKET`) leaves Komet's links as they are.
    pub archive: Option<ArchiveConfig>,
    pub policy: Policy,
    pub tolerance: Tolerance,
    /// How a Komet PO becomes an AppZen one (also what `po-sync-admin verify` rebuilds AppZen's body with).
    pub mapping: MappingSettings,
    /// Where this function sends POs (`DESTINATION`), with that destination's settings.
    pub destination: DestinationConfig,
    /// Whether this function mails a PO's reconciliation mismatch: only the first of `DESTINATIONS` does, so a
    /// mismatch is one e-mail per version whatever the number of destinations.
    pub mails_mismatch: bool,
    pub batch: BatchConfig,
}

/// The one destination a reconcile function sends to.
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    AppZen(AppZenConfig),
    Exsited(ExsitedDestinationConfig),
}

impl DestinationConfig {
    pub fn destination(&self) -> Destination {
        match self {
            DestinationConfig::AppZen(_) => Destination::Appzen,
            DestinationConfig::Exsited(_) => Destination::Exsited,
        }
    }
}

/// Exsited's tenant, credentials and mapping (`EXSITED_*`).
#[derive(Debug, Clone)]
pub struct ExsitedDestinationConfig {
    /// `https://<tenant>.exsited.com`, without a trailing slash (`EXSITED_BASE_URL`).
    pub base_url: String,
    pub credentials: ExsitedCredentialsSource,
    /// The redirect URI registered with the credentials (`EXSITED_REDIRECT_URI`); the token request carries it.
    pub redirect_uri: String,
    /// Per HTTP request (`EXSITED_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// `EXSITED_CURRENCY`, `EXSITED_ACCOUNT_MAP`, `EXSITED_ITEM_MAP`, `EXSITED_CHARGES_ITEM`.
    pub mapping: ExsitedSettings,
}

/// Where Exsited's OAuth client credentials come from.
#[derive(Debug, Clone)]
pub enum ExsitedCredentialsSource {
    /// `EXSITED_CLIENT_ID` and `EXSITED_CLIENT_SECRET` (local use).
    Inline { client_id: SecretString, client_secret: SecretString },
    /// A Secrets Manager JSON secret with keys `client_id` and `client_secret` (`EXSITED_SECRET_ARN`).
    Secret { arn: String },
}

/// How a batch is worked through and how long a handed-back record waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// `webhooks.fifo`, whose handed-back records wait by `retry_schedule` (`WEBHOOK_QUEUE_URL`); `None`: they
    /// come back after the queue's visibility timeout.
    pub webhook_queue_url: Option<String>,
    /// `RETRY_SCHEDULE`.
    pub retry_schedule: RetrySchedule,
    /// Message groups (POs) of one batch processed at once (`GROUP_CONCURRENCY`).
    pub group_concurrency: usize,
    /// How long a throttling or unavailability outage lasts before it is mailed (`OUTAGE_EMAIL_AFTER`).
    pub outage_email_after: Duration,
}

/// Exsited's requests are made once per delivery (a transient failure hands the record back), so the margin
/// only covers the notifications and the answer to Lambda.
const EXSITED_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// A batch holds at most 10 records, so 10 groups at once is the whole batch.
pub const DEFAULT_GROUP_CONCURRENCY: u64 = 5;

#[derive(Debug, Clone)]
pub struct AppZenConfig {
    /// Without a trailing slash; `UPSERT_PATH` is appended.
    pub base_url: String,
    pub credentials: CredentialsSource,
    /// Per HTTP request (`APPZEN_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Attempts per message and invocation, the first included (`APPZEN_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Not environment variables: sensible defaults, and tests set tiny ones here.
    pub backoff: Backoff,
    /// Time kept back at the end of an invocation to notify and answer Lambda.
    pub deadline_margin: Duration,
    /// The least time between two reads of the credentials' secret after AppZen refused them (tests: zero).
    pub credential_renewal_interval: Duration,
}

/// The invoice archive: the bucket and how invoice links are fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    /// `ARCHIVE_BUCKET`.
    pub bucket: String,
    /// `INVOICE_HOSTS` and `INVOICE_MAX_BYTES`.
    pub policy: FetchPolicy,
    /// Per download (`INVOICE_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Downloads at once per record (`INVOICE_CONCURRENCY`).
    pub concurrency: usize,
    /// PDF bytes held at once by all downloads of the process together, until their uploads are done
    /// (`INVOICE_BUFFER_MIB`, in bytes here).
    pub buffer_bytes: usize,
}

/// `INVOICE_BUFFER_MIB`: three PDFs of the largest default size (`INVOICE_MAX_BYTES`, 20 MiB) at once. In
/// reconcile's 256 MB: its own baseline (runtime, clients; 12 MB measured), five POs of up to about 15 MB each
/// being mapped (`GROUP_CONCURRENCY`) and 64 MiB of PDFs come to about 155 MB, leaving 100 MB for the
/// allocator's slack, the HTTP clients' buffers and TLS (docs/performance.md, "Invoice archiving").
pub const DEFAULT_INVOICE_BUFFER_MIB: u64 = 64;

/// Where the AppZen credentials come from.
#[derive(Debug, Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub enum CredentialsSource {
    Inline(AppZenCredentials),
    /// A Secrets Manager JSON secret with keys `api_key`, `customer_id`, `customer_key`, read at cold start.
    Secret {
        arn: String,
    },
}

/// AppZen's three header values, as [`SecretString`]s: `[REDACTED]` in `Debug`, zeroed on drop.
#[derive(Debug, Clone)]
pub struct AppZenCredentials {
    pub api_key: SecretString,
    pub customer_id: SecretString,
    pub customer_key: SecretString,
}

const INLINE_VARIABLES: [&str; 3] = ["APPZEN_API_KEY", "APPZEN_CUSTOMER_ID", "APPZEN_CUSTOMER_KEY"];

impl ReconcileConfig {
    /// AppZen's settings, when this function sends to AppZen.
    pub fn appzen(&self) -> Option<&AppZenConfig> {
        match &self.destination {
            DestinationConfig::AppZen(appzen) => Some(appzen),
            DestinationConfig::Exsited(_) => None,
        }
    }

    pub fn appzen_mut(&mut self) -> Option<&mut AppZenConfig> {
        match &mut self.destination {
            DestinationConfig::AppZen(appzen) => Some(appzen),
            DestinationConfig::Exsited(_) => None,
        }
    }

    /// Time kept back at the end of an invocation to notify and answer Lambda.
    pub fn deadline_margin(&self) -> Duration {
        self.appzen().map_or(EXSITED_DEADLINE_MARGIN, |appzen| appzen.deadline_margin)
    }

    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let mapping = MappingSettings {
            currency: parsed_or(env, "CURRENCY", Currency::default(), Currency::parse)?,
            entity_id_source: parsed_or(env, "APPZEN_ENTITY_ID_FROM", EntityIdSource::default(), one_of)?,
            supplier_id_source: parsed_or(env, "APPZEN_SUPPLIER_ID_FROM", SupplierIdSource::default(), one_of)?,
            additional_charges_gl_code: optional(env, "APPZEN_CHARGES_GL_CODE")
                .unwrap_or_else(|| MappingSettings::default().additional_charges_gl_code),
            ..MappingSettings::default()
        };
        let destination = parsed_or(env, "DESTINATION", Destination::Appzen, one_of)?;
        let destinations = parsed_or(env, "DESTINATIONS", vec![destination], parse_destinations)?;
        if !destinations.contains(&destination) {
            return Err(ConfigError::new(
                "DESTINATIONS",
                format!("does not name this function's DESTINATION ({})", destination.as_str()),
            ));
        }
        let mails_mismatch = destinations.first() == Some(&destination);
        Ok(ReconcileConfig {
            notify_queue_url: required(env, "NOTIFY_QUEUE_URL")?,
            policy: parsed_or(env, "RECONCILE_POLICY", Policy::default(), one_of)?,
            tolerance: parsed_or(env, "RECONCILE_TOLERANCE", Tolerance::CENT, |v| {
                crate::money::parse_exact(v)
                    .and_then(Tolerance::new)
                    .map_err(|e| format!("{e} (an amount such as 0.05)"))
            })?,
            mapping,
            destination: match destination {
                Destination::Appzen => DestinationConfig::AppZen(appzen(env)?),
                Destination::Exsited => DestinationConfig::Exsited(exsited(env)?),
            },
            mails_mismatch,
            ledger_table: required(env, "LEDGER_TABLE_NAME")?,
            history: history(env)?,
            archive: archive(env)?,
            batch: BatchConfig {
                webhook_queue_url: optional(env, "WEBHOOK_QUEUE_URL")
                    .map(|url| fifo_queue_url("WEBHOOK_QUEUE_URL", &url))
                    .transpose()?,
                retry_schedule: parsed_or(env, "RETRY_SCHEDULE", RetrySchedule::default(), RetrySchedule::parse)?,
                group_concurrency: parsed_or(env, "GROUP_CONCURRENCY", DEFAULT_GROUP_CONCURRENCY, number_in(1..=10))?
                    as usize,
                outage_email_after: parsed_or(env, "OUTAGE_EMAIL_AFTER", Duration::from_secs(15 * 60), parse_duration)?,
            },
        })
    }
}

fn appzen(env: &impl Env) -> Result<AppZenConfig, ConfigError> {
    Ok(AppZenConfig {
        base_url: parsed_or(env, "APPZEN_BASE_URL", DEFAULT_APPZEN_BASE_URL.to_owned(), |value| {
            base_url(value, DEFAULT_APPZEN_BASE_URL)
        })?,
        credentials: credentials(env)?,
        request_timeout: Duration::from_millis(parsed_or(env, "APPZEN_TIMEOUT_MS", 10_000, number_in(100..=900_000))?),
        max_attempts: parsed_or(env, "APPZEN_MAX_ATTEMPTS", 4, number_in(1..=20))? as u32,
        backoff: Backoff::default(),
        deadline_margin: Duration::from_secs(2),
        credential_renewal_interval: Duration::from_secs(30),
    })
}

fn exsited(env: &impl Env) -> Result<ExsitedDestinationConfig, ConfigError> {
    let id_rule = |variable| parsed_or(env, variable, IdRule::SameAsKomet, IdRule::parse);
    Ok(ExsitedDestinationConfig {
        base_url: base_url(&required(env, "EXSITED_BASE_URL")?, "https://<tenant>.exsited.com")
            .map_err(|problem| ConfigError::new("EXSITED_BASE_URL", problem))?,
        credentials: exsited_credentials(env)?,
        redirect_uri: optional(env, "EXSITED_REDIRECT_URI").unwrap_or_else(|| DEFAULT_EXSITED_REDIRECT_URI.to_owned()),
        request_timeout: Duration::from_millis(parsed_or(env, "EXSITED_TIMEOUT_MS", 10_000, number_in(100..=900_000))?),
        mapping: ExsitedSettings {
            currency: parsed_or(env, "EXSITED_CURRENCY", Currency::default(), Currency::parse)?.as_str().to_owned(),
            accounts: id_rule("EXSITED_ACCOUNT_MAP")?,
            items: id_rule("EXSITED_ITEM_MAP")?,
            charges_item_id: optional(env, "EXSITED_CHARGES_ITEM")
                .unwrap_or_else(|| DEFAULT_EXSITED_CHARGES_ITEM.to_owned()),
        },
    })
}

/// What Exsited's token request carries when the operator registered none in particular.
pub const DEFAULT_EXSITED_REDIRECT_URI: &str = "https://localhost";
/// The catalogue item an invoice's additional charges become unless `EXSITED_CHARGES_ITEM` names another.
pub const DEFAULT_EXSITED_CHARGES_ITEM: &str = "ADDITIONAL_CHARGES";

fn exsited_credentials(env: &impl Env) -> Result<ExsitedCredentialsSource, ConfigError> {
    let (id, secret) = (optional(env, "EXSITED_CLIENT_ID"), optional(env, "EXSITED_CLIENT_SECRET"));
    match (optional(env, "EXSITED_SECRET_ARN"), id, secret) {
        (Some(arn), None, None) => Ok(ExsitedCredentialsSource::Secret { arn }),
        (Some(_), _, _) => Err(ConfigError::new(
            "EXSITED_SECRET_ARN",
            "is set together with EXSITED_CLIENT_ID/EXSITED_CLIENT_SECRET; set one or the other",
        )),
        (None, Some(id), Some(secret)) => {
            Ok(ExsitedCredentialsSource::Inline { client_id: id.into(), client_secret: secret.into() })
        }
        (None, id, _) => Err(ConfigError::new(
            if id.is_none() { "EXSITED_CLIENT_ID" } else { "EXSITED_CLIENT_SECRET" },
            "is required unless EXSITED_SECRET_ARN names a secret with Exsited's client_id and client_secret",
        )),
    }
}

fn archive(env: &impl Env) -> Result<Option<ArchiveConfig>, ConfigError> {
    let Some(bucket) = optional(env, "ARCHIVE_BUCKET") else { return Ok(None) };
    let hosts = parsed_or(env, "INVOICE_HOSTS", Vec::new(), FetchPolicy::parse_hosts)?;
    let hosts = if hosts.is_empty() {
        FetchPolicy::parse_hosts(DEFAULT_INVOICE_HOSTS).map_err(|p| ConfigError::new("INVOICE_HOSTS", p))?
    } else {
        hosts
    };
    Ok(Some(ArchiveConfig {
        bucket,
        policy: FetchPolicy {
            hosts,
            max_bytes: parsed_or(env, "INVOICE_MAX_BYTES", 20 << 20, number_in(1024..=100 << 20))? as usize,
        },
        timeout: Duration::from_millis(parsed_or(env, "INVOICE_TIMEOUT_MS", 10_000, number_in(100..=120_000))?),
        concurrency: parsed_or(env, "INVOICE_CONCURRENCY", 4, number_in(1..=16))? as usize,
        buffer_bytes: (parsed_or(env, "INVOICE_BUFFER_MIB", DEFAULT_INVOICE_BUFFER_MIB, number_in(1..=10_240))? << 20)
            as usize,
    }))
}

/// An http(s) base URL without its trailing slash; `example` shows the expected form in the error.
fn base_url(value: &str, example: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(trimmed.to_owned()),
        _ => Err(format!("expected an http(s) URL such as {example}, found {value:?}")),
    }
}

fn credentials(env: &impl Env) -> Result<CredentialsSource, ConfigError> {
    let inline: Vec<Option<String>> = INLINE_VARIABLES.iter().map(|name| optional(env, name)).collect();
    match (optional(env, "APPZEN_SECRET_ARN"), inline.as_slice()) {
        (Some(_), [None, None, None]) => Ok(CredentialsSource::Secret { arn: required(env, "APPZEN_SECRET_ARN")? }),
        (Some(_), _) => Err(ConfigError::new(
            "APPZEN_SECRET_ARN",
            "is set together with APPZEN_API_KEY/APPZEN_CUSTOMER_ID/APPZEN_CUSTOMER_KEY; set one or the other",
        )),
        (None, [Some(api_key), Some(customer_id), Some(customer_key)]) => {
            Ok(CredentialsSource::Inline(AppZenCredentials {
                api_key: api_key.as_str().into(),
                customer_id: customer_id.as_str().into(),
                customer_key: customer_key.as_str().into(),
            }))
        }
        (None, _) => {
            let missing =
                INLINE_VARIABLES.iter().zip(&inline).find(|(_, v)| v.is_none()).map_or("APPZEN_API_KEY", |(n, _)| n);
            Err(ConfigError::new(
                missing,
                "is required unless APPZEN_SECRET_ARN names a secret with the AppZen credentials",
            ))
        }
    }
}

/// Tests compare credentials by value; production code only sends them.
#[cfg(test)]
impl PartialEq for AppZenCredentials {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        let exposed = |c: &Self| [&c.api_key, &c.customer_id, &c.customer_key].map(|s| s.expose_secret().to_owned());
        exposed(self) == exposed(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::HostRule;
    use crate::money::decimal;

    const MINIMAL: [(&str, &str); 5] = [
        ("NOTIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/notifications.fifo"),
        ("LEDGER_TABLE_NAME", "po-sync-ledger"),
        ("APPZEN_API_KEY", "key"),
        ("APPZEN_CUSTOMER_ID", "cid"),
        ("APPZEN_CUSTOMER_KEY", "ckey"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> std::collections::HashMap<String, String> {
        MINIMAL.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn error(extra: &[(&'static str, &'static str)]) -> String {
        ReconcileConfig::from_env(&with(extra)).unwrap_err().to_string()
    }

    #[test]
    fn history_is_kept_only_where_a_table_is_named() {
        assert_eq!(ReconcileConfig::from_env(&MINIMAL).unwrap().history, None);
        let named = ReconcileConfig::from_env(&with(&[("HISTORY_TABLE_NAME", "po-sync-history")])).unwrap();
        assert_eq!(named.history, Some(HistoryConfig { table: "po-sync-history".into(), retention_days: 90 }));
        let extra = [("HISTORY_TABLE_NAME", "h"), ("HISTORY_RETENTION_DAYS", "16")];
        assert_eq!(ReconcileConfig::from_env(&with(&extra)).unwrap().history.unwrap().retention_days, 16);
        assert_eq!(
            error(&[("HISTORY_TABLE_NAME", "h"), ("HISTORY_RETENTION_DAYS", "0")]),
            "configuration HISTORY_RETENTION_DAYS: expected a whole number from 1 to 3650, found \"0\""
        );
    }

    #[test]
    fn defaults_follow_the_documented_contract() {
        let config = ReconcileConfig::from_env(&MINIMAL).unwrap();
        assert_eq!(config.policy, Policy::Block);
        assert_eq!(config.tolerance, Tolerance::CENT);
        assert_eq!(config.mapping, MappingSettings::default());
        assert_eq!(config.appzen().unwrap().base_url, "https://api.appzen.com");
        assert_eq!(config.appzen().unwrap().request_timeout, Duration::from_secs(10));
        assert_eq!(config.appzen().unwrap().max_attempts, 4);
        assert_eq!(config.ledger_table, "po-sync-ledger");
        assert_eq!(
            config.appzen().unwrap().credentials,
            CredentialsSource::Inline(AppZenCredentials {
                api_key: "key".into(),
                customer_id: "cid".into(),
                customer_key: "ckey".into()
            })
        );
    }

    #[test]
    fn every_variable_is_read() {
        let config = ReconcileConfig::from_env(&with(&[
            ("RECONCILE_POLICY", "forward"),
            ("RECONCILE_TOLERANCE", "0.05"),
            ("CURRENCY", "EUR"),
            ("APPZEN_BASE_URL", "http://127.0.0.1:9999/"),
            ("APPZEN_ENTITY_ID_FROM", "location_id"),
            ("APPZEN_SUPPLIER_ID_FROM", "id"),
            ("APPZEN_CHARGES_GL_CODE", "6100"),
            ("APPZEN_TIMEOUT_MS", "2500"),
            ("APPZEN_MAX_ATTEMPTS", "2"),
        ]))
        .unwrap();
        assert_eq!(config.policy, Policy::Forward);
        assert_eq!(config.tolerance, Tolerance::new(decimal("0.05").unwrap()).unwrap());
        assert_eq!(config.mapping.currency.as_str(), "EUR");
        assert_eq!(config.mapping.entity_id_source, EntityIdSource::LocationId);
        assert_eq!(config.mapping.supplier_id_source, SupplierIdSource::Id);
        assert_eq!(config.mapping.additional_charges_gl_code, "6100");
        assert_eq!(config.appzen().unwrap().base_url, "http://127.0.0.1:9999", "trailing slash dropped");
        assert_eq!(config.appzen().unwrap().request_timeout, Duration::from_millis(2500));
        assert_eq!(config.appzen().unwrap().max_attempts, 2);
    }

    #[test]
    fn the_batch_settings_default_to_a_day_s_horizon_and_five_groups_at_once() {
        let batch = ReconcileConfig::from_env(&MINIMAL).unwrap().batch;
        assert_eq!(batch.webhook_queue_url, None);
        assert_eq!(batch.retry_schedule, RetrySchedule::default());
        assert_eq!((batch.group_concurrency, batch.outage_email_after), (5, Duration::from_secs(900)));

        let batch = ReconcileConfig::from_env(&with(&[
            ("WEBHOOK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/po-sync-webhooks.fifo"),
            ("RETRY_SCHEDULE", "1s,2s"),
            ("GROUP_CONCURRENCY", "10"),
            ("OUTAGE_EMAIL_AFTER", "0s"),
        ]))
        .unwrap()
        .batch;
        assert_eq!(
            batch.webhook_queue_url.as_deref(),
            Some("https://sqs.us-east-1.amazonaws.com/1/po-sync-webhooks.fifo")
        );
        assert_eq!(batch.retry_schedule.describe(), "1s,2s");
        assert_eq!((batch.group_concurrency, batch.outage_email_after), (10, Duration::ZERO));

        for (variable, value, problem) in [
            ("WEBHOOK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/standard", "must be the URL of a FIFO queue"),
            ("RETRY_SCHEDULE", "1m,soon", "step \"soon\""),
            ("GROUP_CONCURRENCY", "11", "from 1 to 10"),
            ("OUTAGE_EMAIL_AFTER", "15", "step \"15\""),
        ] {
            let error = error(&[(variable, value)]);
            assert!(error.starts_with(&format!("configuration {variable}: ")) && error.contains(problem), "{error}");
        }
    }

    #[test]
    fn a_secret_arn_replaces_the_three_inline_credentials() {
        let env = [
            ("NOTIFY_QUEUE_URL", "q"),
            ("LEDGER_TABLE_NAME", "t"),
            ("APPZEN_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:appzen"),
        ];
        let config = ReconcileConfig::from_env(&env).unwrap();
        assert_eq!(
            config.appzen().unwrap().credentials,
            CredentialsSource::Secret { arn: "arn:aws:secretsmanager:us-east-1:1:secret:appzen".into() }
        );
        assert!(
            error(&[("APPZEN_SECRET_ARN", "arn:x")]).starts_with("configuration APPZEN_SECRET_ARN: is set together")
        );
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            ReconcileConfig::from_env(&[("APPZEN_API_KEY", "k")]).unwrap_err().to_string(),
            "configuration NOTIFY_QUEUE_URL: is required but not set"
        );
        let partial = [("NOTIFY_QUEUE_URL", "q"), ("APPZEN_API_KEY", "k"), ("APPZEN_CUSTOMER_KEY", "c")];
        assert!(
            ReconcileConfig::from_env(&partial)
                .unwrap_err()
                .to_string()
                .starts_with("configuration APPZEN_CUSTOMER_ID: is required")
        );
        let without_ledger: Vec<_> = MINIMAL.iter().filter(|(k, _)| *k != "LEDGER_TABLE_NAME").copied().collect();
        let env: std::collections::HashMap<String, String> =
            without_ledger.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            ReconcileConfig::from_env(&env).unwrap_err().to_string(),
            "configuration LEDGER_TABLE_NAME: is required but not set"
        );
        for (variable, value) in [
            ("RECONCILE_POLICY", "drop"),
            ("RECONCILE_TOLERANCE", "-0.01"),
            ("RECONCILE_TOLERANCE", "five cents"),
            ("CURRENCY", "usd"),
            ("APPZEN_BASE_URL", "api.appzen.com"),
            ("APPZEN_ENTITY_ID_FROM", "name"),
            ("APPZEN_SUPPLIER_ID_FROM", "name"),
            ("APPZEN_TIMEOUT_MS", "0"),
            ("APPZEN_MAX_ATTEMPTS", "0"),
        ] {
            let message = error(&[(variable, value)]);
            assert!(message.starts_with(&format!("configuration {variable}: ")), "{message}");
        }
    }

    #[test]
    fn the_archive_is_on_with_a_bucket_and_fetches_from_komet_by_default() {
        assert_eq!(ReconcileConfig::from_env(&MINIMAL).unwrap().archive, None);
        let archive =
            ReconcileConfig::from_env(&with(&[("ARCHIVE_BUCKET", "po-sync-archive")])).unwrap().archive.unwrap();
        assert_eq!(archive.bucket, "po-sync-archive");
        assert_eq!(archive.policy.hosts, vec![HostRule::Domain("kometsales.com".into())]);
        assert_eq!(
            (archive.policy.max_bytes, archive.timeout, archive.concurrency),
            (20 << 20, Duration::from_secs(10), 4)
        );
        assert_eq!(archive.buffer_bytes, 64 << 20);
        let tuned = ReconcileConfig::from_env(&with(&[
            ("ARCHIVE_BUCKET", "b"),
            ("INVOICE_HOSTS", "127.0.0.1"),
            ("INVOICE_MAX_BYTES", "2048"),
            ("INVOICE_TIMEOUT_MS", "500"),
            ("INVOICE_CONCURRENCY", "2"),
            ("INVOICE_BUFFER_MIB", "48"),
        ]))
        .unwrap()
        .archive
        .unwrap();
        assert_eq!(tuned.policy.hosts, vec![HostRule::Address("127.0.0.1".parse().unwrap())]);
        assert_eq!((tuned.policy.max_bytes, tuned.timeout, tuned.concurrency), (2048, Duration::from_millis(500), 2));
        assert_eq!(tuned.buffer_bytes, 48 << 20);
        assert!(
            error(&[("ARCHIVE_BUCKET", "b"), ("INVOICE_HOSTS", "localhost")])
                .starts_with("configuration INVOICE_HOSTS: ")
        );
        assert!(
            error(&[("ARCHIVE_BUCKET", "b"), ("INVOICE_CONCURRENCY", "0")])
                .starts_with("configuration INVOICE_CONCURRENCY: ")
        );
        for value in ["0", "10241", "64MiB", "-1"] {
            let error = error(&[("ARCHIVE_BUCKET", "b"), ("INVOICE_BUFFER_MIB", value)]);
            assert!(
                error.starts_with("configuration INVOICE_BUFFER_MIB: expected a whole number from 1 to 10240"),
                "{error}"
            );
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let config = ReconcileConfig::from_env(&MINIMAL).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("ckey") && !debug.contains("\"key\"") && !debug.contains("cid"), "{debug}");
    }

    const EXSITED: [(&str, &str); 6] = [
        ("NOTIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/notifications.fifo"),
        ("LEDGER_TABLE_NAME", "po-sync-ledger"),
        ("DESTINATION", "exsited"),
        ("EXSITED_BASE_URL", "https://acme.exsited.com/"),
        ("EXSITED_CLIENT_ID", "client"),
        ("EXSITED_CLIENT_SECRET", "s3cret"),
    ];

    fn exsited_with(extra: &[(&'static str, &'static str)]) -> Result<ReconcileConfig, ConfigError> {
        let env: std::collections::HashMap<String, String> =
            EXSITED.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ReconcileConfig::from_env(&env)
    }

    #[test]
    fn an_exsited_function_needs_exsited_settings_and_no_appzen_credentials() {
        let config = exsited_with(&[("EXSITED_ITEM_MAP", "CGEN=FLOWERS"), ("EXSITED_CURRENCY", "EUR")]).unwrap();
        let DestinationConfig::Exsited(exsited) = &config.destination else { panic!("{config:?}") };
        assert_eq!(exsited.base_url, "https://acme.exsited.com");
        assert_eq!(exsited.mapping.accounts, IdRule::SameAsKomet);
        assert_eq!(exsited.mapping.items, IdRule::parse("CGEN=FLOWERS").unwrap());
        assert_eq!(
            (exsited.mapping.currency.as_str(), exsited.mapping.charges_item_id.as_str()),
            ("EUR", "ADDITIONAL_CHARGES")
        );
        assert!(config.appzen().is_none() && config.mails_mismatch);
        assert!(!format!("{config:?}").contains("s3cret"), "the client secret never shows");
        let secret = [("EXSITED_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:x")];
        assert_eq!(exsited_with(&secret).unwrap_err().variable, "EXSITED_SECRET_ARN", "secret and inline together");
        let mut no_url = EXSITED.to_vec();
        no_url.retain(|(k, _)| *k != "EXSITED_BASE_URL");
        let env: std::collections::HashMap<String, String> =
            no_url.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(ReconcileConfig::from_env(&env).unwrap_err().variable, "EXSITED_BASE_URL");
        let error = exsited_with(&[("EXSITED_BASE_URL", "acme.exsited.com")]).unwrap_err();
        assert!(error.to_string().contains("https://<tenant>.exsited.com"), "Exsited's own example: {error}");
        assert_eq!(exsited_with(&[("EXSITED_ACCOUNT_MAP", "V-0042")]).unwrap_err().variable, "EXSITED_ACCOUNT_MAP");
    }

    #[test]
    fn only_the_first_of_the_destinations_mails_a_mismatch() {
        assert!(ReconcileConfig::from_env(&with(&[("DESTINATIONS", "appzen,exsited")])).unwrap().mails_mismatch);
        assert!(!exsited_with(&[("DESTINATIONS", "appzen,exsited")]).unwrap().mails_mismatch);
        assert!(exsited_with(&[("DESTINATIONS", "exsited,appzen")]).unwrap().mails_mismatch);
        assert_eq!(exsited_with(&[("DESTINATIONS", "appzen")]).unwrap_err().variable, "DESTINATIONS");
        assert_eq!(
            error(&[("DESTINATION", "sap")]),
            "configuration DESTINATION: expected appzen or exsited, found \"sap\""
        );
    }
}
