//! JSON secrets from AWS Secrets Manager, read at cold start, and the credentials read from them again when the
//! service they are for refuses them ([`RenewableCredentials`]).

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    // The SDK error's Display names the operation only; its source says why (access denied, not found…).
    #[error("could not read secret {arn}: {source}")]
    Unavailable {
        arn: String,
        // Boxed: the SDK error is large, and this error is only ever built once, at cold start.
        #[source]
        source: Box<
            aws_sdk_secretsmanager::error::SdkError<
                aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
            >,
        >,
    },
    #[error("secret {arn} has no SecretString")]
    NotText { arn: String },
    #[error("secret {arn} is not a JSON object of strings")]
    NotJsonObject { arn: String },
}

/// Reads a secret whose value is a JSON object of strings, such as `{"username": "...", "password": "..."}`.
/// The values are never logged; errors name only the ARN.
pub async fn read_json_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<HashMap<String, String>, SecretError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|source| SecretError::Unavailable { arn: arn.to_owned(), source: Box::new(source) })?;
    let text = output.secret_string().ok_or_else(|| SecretError::NotText { arn: arn.to_owned() })?;
    serde_json::from_str(text).map_err(|_| SecretError::NotJsonObject { arn: arn.to_owned() })
}

/// Takes `key` out of a secret [`read_json_secret`] read; `None` when it is missing or blank, which no
/// credential may be.
pub fn take_non_blank(secret: &mut HashMap<String, String>, key: &str) -> Option<secrecy::SecretString> {
    secret.remove(key).filter(|value| !value.trim().is_empty()).map(secrecy::SecretString::from)
}

/// Credentials kept in memory and read again from their secret when the service refuses them, so a rotated or
/// corrected secret takes effect without a deploy: at most once per `interval` however many requests fail
/// meanwhile, one reading at a time. Each reading has a generation, so a request refused with an older one knows
/// newer credentials are in place already.
#[derive(Debug)]
pub struct RenewableCredentials<T> {
    current: std::sync::RwLock<std::sync::Arc<Reading<T>>>,
    last_read: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    interval: std::time::Duration,
}

/// One reading of the credentials.
#[derive(Debug)]
pub struct Reading<T> {
    pub value: T,
    /// 0 for the first reading, then one more per renewal.
    pub generation: u64,
}

impl<T> RenewableCredentials<T> {
    pub fn new(value: T, interval: std::time::Duration) -> Self {
        RenewableCredentials {
            current: std::sync::RwLock::new(std::sync::Arc::new(Reading { value, generation: 0 })),
            last_read: tokio::sync::Mutex::new(None),
            interval,
        }
    }

    pub fn current(&self) -> std::sync::Arc<Reading<T>> {
        std::sync::Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// After `service` refused the credentials of generation `refused`: whether others are in place now (another
    /// request renewed them, or `read` found new ones in the secret), so the request is worth sending again.
    /// `same` compares two readings (secrets need not implement `PartialEq`). Logs what it found, never the values.
    pub async fn renew<E: std::fmt::Display>(
        &self,
        service: &str,
        refused: u64,
        read: impl Future<Output = Result<T, E>>,
        same: impl Fn(&T, &T) -> bool,
    ) -> bool {
        let mut last_read = self.last_read.lock().await;
        if self.current().generation != refused {
            return true;
        }
        if last_read.is_some_and(|at| at.elapsed() < self.interval) {
            return false;
        }
        *last_read = Some(tokio::time::Instant::now());
        match read.await {
            Ok(value) if same(&value, &self.current().value) => {
                tracing::warn!("{service} refused the credentials, and the secret still holds the same ones");
                false
            }
            Ok(value) => {
                let renewed = Reading { value, generation: refused + 1 };
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(renewed);
                tracing::warn!("{service} refused the credentials; read new ones from the secret, retrying with them");
                true
            }
            Err(error) => {
                tracing::error!(error = %error,
                    "{service} refused the credentials, and the secret could not be read again");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RenewableCredentials, take_non_blank};
    use secrecy::ExposeSecret;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn a_credential_is_taken_only_when_present_and_not_blank() {
        let mut secret: HashMap<String, String> =
            [("client_id", "id-1"), ("client_secret", " \t "), ("other", "")].map(|(k, v)| (k.into(), v.into())).into();
        let taken = take_non_blank(&mut secret, "client_id");
        assert_eq!(taken.as_ref().map(|t| t.expose_secret()), Some("id-1"));
        assert!(!secret.contains_key("client_id"), "taken out of the secret");
        assert!(take_non_blank(&mut secret, "client_secret").is_none(), "blank");
        assert!(take_non_blank(&mut secret, "other").is_none(), "empty");
        assert!(take_non_blank(&mut secret, "api_key").is_none(), "missing");
    }

    async fn read(value: &'static str) -> Result<&'static str, String> {
        Ok(value)
    }

    async fn never_read() -> Result<&'static str, String> {
        panic!("the secret is read again")
    }

    #[tokio::test]
    async fn a_refusal_reads_the_secret_once_per_interval_and_later_refusals_of_the_old_reading_use_the_new_one() {
        let credentials = RenewableCredentials::new("old", Duration::from_secs(3600));
        let same = |a: &&str, b: &&str| a == b;
        assert!(credentials.renew("AppZen", 0, read("new"), same).await);
        assert_eq!((credentials.current().value, credentials.current().generation), ("new", 1));
        // A request refused with the old reading: the new one is in place, nothing is read.
        assert!(credentials.renew("AppZen", 0, never_read(), same).await);
        // The new reading refused too: within the interval, nothing is read.
        assert!(!credentials.renew("AppZen", 1, never_read(), same).await);
        assert_eq!(credentials.current().generation, 1);
    }

    #[tokio::test]
    async fn the_same_credentials_or_an_unreadable_secret_are_no_renewal() {
        let credentials = RenewableCredentials::new("old", Duration::ZERO);
        let same = |a: &&str, b: &&str| a == b;
        assert!(!credentials.renew("Exsited", 0, read("old"), same).await);
        assert!(!credentials.renew("Exsited", 0, async { Err::<&str, _>("access denied".to_owned()) }, same).await);
        assert_eq!((credentials.current().value, credentials.current().generation), ("old", 0));
    }
}
