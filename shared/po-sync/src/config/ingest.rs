//! Configuration of the `ingest` function.
//!
//! | variable             | meaning                                                                  |
//! |----------------------|--------------------------------------------------------------------------|
//! | `WEBHOOK_AUTH`       | `basic` or `bearer`: the authentication chosen in Komet's webhook setup  |
//! | `WEBHOOK_USERNAME`   | Basic user name (without `WEBHOOK_SECRET_ARN`)                           |
//! | `WEBHOOK_PASSWORD`   | Basic password (without `WEBHOOK_SECRET_ARN`)                            |
//! | `WEBHOOK_TOKEN`      | Bearer token (without `WEBHOOK_SECRET_ARN`)                              |
//! | `WEBHOOK_SECRET_ARN` | Secrets Manager JSON secret with `username`/`password` or `token`        |
//! | `QUEUE_URL`          | the `webhooks.fifo` queue (AppZen's)                                     |
//! | `DESTINATIONS`       | `appzen` (default), `exsited` or `appzen,exsited`: the queues to fill    |
//! | `EXSITED_QUEUE_URL`  | Exsited's queue, required when `DESTINATIONS` names `exsited`            |
//! | `MAX_BODY_BYTES`     | largest body accepted, default 6,000,000 bytes (about what Lambda takes) |
//! | `ARCHIVE_BUCKET`     | where a PO too large for one SQS message is stored (`bodies/`); optional |

use super::{ConfigError, Env, one_of, optional, parsed_or, required};
use crate::destination::{Destination, parse_destinations};
use secrecy::SecretString;
use std::collections::HashMap;

/// Default for `MAX_BODY_BYTES`: about the largest body that can reach the function at all, so the 413 is left
/// for bodies nobody could accept. Lambda takes a synchronous event of at most 6 MiB (6,291,456 bytes), and
/// API Gateway's event is the body as a JSON string (each `"` and `\` escaped, so one byte more each) plus the
/// headers and request context (a few KB): a body of 6,000,000 bytes leaves 291,456 bytes (~285 KiB) for both.
/// A larger body can never arrive, and a body near this size arrives only if it has few characters to escape
/// (Komet's JSON has one `"` in 11 to 12 bytes, so about 5.75 MB of it arrives); what does not arrive is
/// refused by Lambda and API Gateway before ingest runs. A PO whose message would exceed SQS's 1 MiB goes
/// through the bucket (`ARCHIVE_BUCKET`) as a claim check.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 6_000_000;
/// Lambda's synchronous invocation payload limit; a larger body never reaches the function.
pub const MAX_MAX_BODY_BYTES: u64 = 6 * 1_048_576;

/// The authentication Komet is set up to send (Setup → Settings → Webhooks); `WEBHOOK_AUTH`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum AuthScheme {
    Basic,
    Bearer,
}

/// What Komet must present. The secret parts are [`SecretString`]s: `Debug` shows them as `[REDACTED]`, they are
/// zeroed on drop, and reading one takes an explicit `expose_secret()`.
#[derive(Debug, Clone)]
pub enum Credentials {
    Basic { username: String, password: SecretString },
    Bearer { token: SecretString },
}

impl Credentials {
    pub fn scheme(&self) -> AuthScheme {
        match self {
            Credentials::Basic { .. } => AuthScheme::Basic,
            Credentials::Bearer { .. } => AuthScheme::Bearer,
        }
    }

    /// The credentials in a `WEBHOOK_SECRET_ARN` secret (keys `username`, `password`, `token`).
    /// Errors name the variable and the missing key, never a value.
    pub fn from_secret(scheme: AuthScheme, secret: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let key = |name: &str| {
            secret.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::new(SECRET_ARN, format!("the secret has no {name:?} (WEBHOOK_AUTH is {scheme:?})"))
            })
        };
        match scheme {
            AuthScheme::Basic => basic(key("username")?, key("password")?, SECRET_ARN),
            AuthScheme::Bearer => Ok(Credentials::Bearer { token: key("token")?.into() }),
        }
    }
}

/// Basic credentials, refusing a user name Komet could not send (RFC 7617: no `:` in it).
fn basic(username: String, password: String, variable: &'static str) -> Result<Credentials, ConfigError> {
    if username.contains(':') {
        return Err(ConfigError::new(variable, "the Basic user name must not contain ':'"));
    }
    Ok(Credentials::Basic { username, password: password.into() })
}

/// Where the credentials come from.
#[derive(Debug, Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub enum CredentialSource {
    /// Given in the environment.
    Environment(Credentials),
    /// In a Secrets Manager secret, read once at cold start with [`Credentials::from_secret`].
    Secret { arn: String },
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub auth: AuthScheme,
    pub credentials: CredentialSource,
    /// Each destination's queue, in the order of `DESTINATIONS`: AppZen's is `QUEUE_URL`, Exsited's
    /// `EXSITED_QUEUE_URL`. A webhook is answered 200 only once every one of them has it.
    pub queues: Vec<(Destination, String)>,
    pub max_body_bytes: usize,
    /// `ARCHIVE_BUCKET`: where a PO too large for one SQS message is stored (`bodies/…`), its queue message then
    /// a claim check. `None`: such a PO is refused with a 413.
    pub archive_bucket: Option<String>,
}

const AUTH: &str = "WEBHOOK_AUTH";
const USERNAME: &str = "WEBHOOK_USERNAME";
const PASSWORD: &str = "WEBHOOK_PASSWORD";
const TOKEN: &str = "WEBHOOK_TOKEN";
const SECRET_ARN: &str = "WEBHOOK_SECRET_ARN";
const QUEUE_URL: &str = "QUEUE_URL";
const EXSITED_QUEUE_URL: &str = "EXSITED_QUEUE_URL";
const MAX_BODY_BYTES: &str = "MAX_BODY_BYTES";
const ARCHIVE_BUCKET: &str = "ARCHIVE_BUCKET";

impl IngestConfig {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let auth = one_of::<AuthScheme>(&required(env, AUTH)?).map_err(|problem| ConfigError::new(AUTH, problem))?;
        let credentials = match optional(env, SECRET_ARN) {
            Some(arn) => {
                // Two sources for one credential is a deploy mistake: say so instead of silently picking one.
                let in_env = match auth {
                    AuthScheme::Basic => [USERNAME, PASSWORD].as_slice(),
                    AuthScheme::Bearer => [TOKEN].as_slice(),
                };
                if let Some(variable) = in_env.iter().copied().find(|v| optional(env, v).is_some()) {
                    return Err(ConfigError::new(variable, "must not be set together with WEBHOOK_SECRET_ARN"));
                }
                CredentialSource::Secret { arn }
            }
            None => CredentialSource::Environment(match auth {
                AuthScheme::Basic => basic(required(env, USERNAME)?, required(env, PASSWORD)?, USERNAME)?,
                AuthScheme::Bearer => Credentials::Bearer { token: required(env, TOKEN)?.into() },
            }),
        };
        let destinations = parsed_or(env, "DESTINATIONS", vec![Destination::Appzen], parse_destinations)?;
        let mut queues = Vec::new();
        for destination in destinations {
            let variable = match destination {
                Destination::Appzen => QUEUE_URL,
                Destination::Exsited => EXSITED_QUEUE_URL,
            };
            queues.push((destination, super::fifo_queue_url(variable, &required(env, variable)?)?));
        }
        let max_body_bytes =
            parsed_or(env, MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, super::number_in(1..=MAX_MAX_BODY_BYTES))?;
        Ok(IngestConfig {
            auth,
            credentials,
            queues,
            // At most 6 MiB, so it fits in any usize.
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            archive_bucket: optional(env, ARCHIVE_BUCKET),
        })
    }
}

/// Tests compare credentials by value. Production code never does: the verifier compares digests in constant time.
#[cfg(test)]
impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        match (self, other) {
            (Credentials::Basic { username, password }, Credentials::Basic { username: u, password: p }) => {
                username == u && password.expose_secret() == p.expose_secret()
            }
            (Credentials::Bearer { token }, Credentials::Bearer { token: t }) => {
                token.expose_secret() == t.expose_secret()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/webhooks.fifo";

    fn error(env: &impl Env) -> String {
        IngestConfig::from_env(env).unwrap_err().to_string()
    }

    #[test]
    fn basic_credentials_from_the_environment_with_defaults() {
        let env = [
            ("WEBHOOK_AUTH", "Basic"),
            ("WEBHOOK_USERNAME", "komet"),
            ("WEBHOOK_PASSWORD", "pa:ss"),
            ("QUEUE_URL", QUEUE),
        ];
        let config = IngestConfig::from_env(&env).unwrap();
        assert_eq!(config.auth, AuthScheme::Basic);
        assert_eq!(
            config.credentials,
            CredentialSource::Environment(Credentials::Basic { username: "komet".into(), password: "pa:ss".into() })
        );
        assert_eq!(config.queues, [(Destination::Appzen, QUEUE.to_owned())]);
        assert_eq!(config.max_body_bytes, 6_000_000);
        assert_eq!(config.archive_bucket, None);
    }

    #[test]
    fn bearer_token_and_body_limit() {
        let env = [
            ("WEBHOOK_AUTH", "bearer"),
            ("WEBHOOK_TOKEN", "t0k"),
            ("QUEUE_URL", QUEUE),
            ("MAX_BODY_BYTES", "2048"),
            ("ARCHIVE_BUCKET", " po-sync-archive "),
        ];
        let config = IngestConfig::from_env(&env).unwrap();
        assert_eq!(config.credentials, CredentialSource::Environment(Credentials::Bearer { token: "t0k".into() }));
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.archive_bucket.as_deref(), Some("po-sync-archive"));
    }

    #[test]
    fn each_missing_or_bad_variable_is_named() {
        assert_eq!(error(&[("QUEUE_URL", QUEUE)]), "configuration WEBHOOK_AUTH: is required but not set");
        assert_eq!(
            error(&[("WEBHOOK_AUTH", "digest"), ("QUEUE_URL", QUEUE)]),
            "configuration WEBHOOK_AUTH: expected basic or bearer, found \"digest\""
        );
        assert_eq!(
            error(&[("WEBHOOK_AUTH", "basic"), ("WEBHOOK_USERNAME", "komet"), ("QUEUE_URL", QUEUE)]),
            "configuration WEBHOOK_PASSWORD: is required but not set"
        );
        assert_eq!(
            error(&[("WEBHOOK_AUTH", "basic"), ("WEBHOOK_PASSWORD", "p"), ("QUEUE_URL", QUEUE)]),
            "configuration WEBHOOK_USERNAME: is required but not set"
        );
        assert_eq!(
            error(&[
                ("WEBHOOK_AUTH", "basic"),
                ("WEBHOOK_USERNAME", "ko:met"),
                ("WEBHOOK_PASSWORD", "p"),
                ("QUEUE_URL", QUEUE)
            ]),
            "configuration WEBHOOK_USERNAME: the Basic user name must not contain ':'"
        );
        // A Basic password does not stand in for a Bearer token.
        assert_eq!(
            error(&[("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_PASSWORD", "p"), ("QUEUE_URL", QUEUE)]),
            "configuration WEBHOOK_TOKEN: is required but not set"
        );
        assert_eq!(
            error(&[("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_TOKEN", "t")]),
            "configuration QUEUE_URL: is required but not set"
        );
        let standard = "https://sqs.us-east-1.amazonaws.com/123456789012/webhooks";
        assert_eq!(
            error(&[("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_TOKEN", "t"), ("QUEUE_URL", standard)]),
            format!("configuration QUEUE_URL: must be the URL of a FIFO queue (ending in .fifo), got {standard:?}")
        );
        for bad in ["0", "lots", "7340032"] {
            let env =
                [("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_TOKEN", "t"), ("QUEUE_URL", QUEUE), ("MAX_BODY_BYTES", bad)];
            assert!(
                error(&env).starts_with("configuration MAX_BODY_BYTES: expected a whole number from 1 to 6291456"),
                "{bad}"
            );
        }
    }

    #[test]
    fn with_a_secret_arn_the_credentials_come_later_from_the_secret() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:po-sync/komet-AbCdEf";
        let env = [("WEBHOOK_AUTH", "basic"), ("WEBHOOK_SECRET_ARN", arn), ("QUEUE_URL", QUEUE)];
        let config = IngestConfig::from_env(&env).unwrap();
        assert_eq!(config.credentials, CredentialSource::Secret { arn: arn.to_owned() });

        let secret: HashMap<String, String> = [("username", "komet"), ("password", "s3cret")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            Credentials::from_secret(AuthScheme::Basic, &secret).unwrap(),
            Credentials::Basic { username: "komet".into(), password: "s3cret".into() }
        );
        assert_eq!(
            Credentials::from_secret(AuthScheme::Bearer, &secret).unwrap_err().to_string(),
            "configuration WEBHOOK_SECRET_ARN: the secret has no \"token\" (WEBHOOK_AUTH is Bearer)"
        );
    }

    #[test]
    fn a_secret_and_environment_credentials_together_are_refused() {
        let env =
            [("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_SECRET_ARN", "arn:x"), ("WEBHOOK_TOKEN", "t"), ("QUEUE_URL", QUEUE)];
        assert_eq!(error(&env), "configuration WEBHOOK_TOKEN: must not be set together with WEBHOOK_SECRET_ARN");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let shown = format!(
            "{:?} {:?}",
            Credentials::Basic { username: "komet".into(), password: "hunter2".into() },
            Credentials::Bearer { token: "tok-123".into() }
        );
        assert!(!shown.contains("hunter2") && !shown.contains("tok-123"), "{shown}");
        assert!(shown.contains("komet"));
    }

    #[test]
    fn each_destination_named_has_its_queue() {
        let exsited = "https://sqs.us-east-1.amazonaws.com/123456789012/webhooks-exsited.fifo";
        let base = [("WEBHOOK_AUTH", "bearer"), ("WEBHOOK_TOKEN", "t"), ("QUEUE_URL", QUEUE)];
        let both: Vec<(&str, &str)> =
            base.iter().copied().chain([("DESTINATIONS", "appzen,exsited"), ("EXSITED_QUEUE_URL", exsited)]).collect();
        let env: HashMap<String, String> = both.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let config = IngestConfig::from_env(&env).unwrap();
        assert_eq!(
            config.queues,
            [(Destination::Appzen, QUEUE.to_owned()), (Destination::Exsited, exsited.to_owned())]
        );
        let missing: HashMap<String, String> = base
            .iter()
            .chain(&[("DESTINATIONS", "appzen,exsited")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(IngestConfig::from_env(&missing).unwrap_err().variable, "EXSITED_QUEUE_URL");
    }
}
