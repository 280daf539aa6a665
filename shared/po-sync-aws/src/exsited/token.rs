//! Exsited's token shared by every client holding the same credentials (reconcile-exsited's concurrent
//! instances, the operator CLI): Exsited ends a token when it issues a new one for the same credentials, so
//! clients that each fetched their own would end each other's.
//!
//! One record per tenant and client id, in a [`TokenStore`]: the token, when it expires, and a refresh lease
//! (who is fetching a new one, until when). Written only by compare-and-set on its revision. What to do with
//! the record read is decided by [`decide`]; [`crate::exsited::ExsitedClient`] does it.
//!
//! In DynamoDB ([`DynamoTokenStore`]) the record is one item of the ledger table, beside the POs, keyed
//! `exsited-token#<16 hex>` ([`key`]): never a number, so tools listing PO entries skip it. The access token is
//! a credential: it is held as a [`SecretString`] (redacted in `Debug`, zeroed on drop) and never logged.

use crate::ledger::{DynamoLedger, Written, fits};
use crate::port::{Failure, PortError};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The beginning of a token record's key.
pub const KEY_PREFIX: &str = "exsited-token#";

/// The key of the token of `client_id` at `base_url`: `exsited-token#` and the first 16 hex digits of the
/// SHA-256 of the base URL (without a trailing slash), a newline and the client id.
pub fn key(base_url: &str, client_id: &str) -> String {
    let digest = po_sync::message::sha256_hex(format!("{}\n{client_id}", base_url.trim_end_matches('/')).as_bytes());
    format!("{KEY_PREFIX}{}", &digest[..16])
}

/// The shared token of one set of credentials, as stored (the ledger table's attributes, camelCase).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// [`key`] (the ledger table's partition key).
    pub po_id: String,
    /// Incremented by every write; the compare-and-set token.
    pub revision: u64,
    /// The token; `None` while a new one is being fetched, or after a fetch failed.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "expose", deserialize_with = "secret")]
    pub access_token: Option<SecretString>,
    /// When Exsited said the token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The refresh lease: `holder` is fetching a new token and nobody else asks Exsited until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshing_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub updated_at: DateTime<Utc>,
}

fn expose<S: Serializer>(token: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    token.as_ref().map(|t| t.expose_secret()).serialize(serializer)
}

fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(SecretString::from))
}

/// A token and when it expires.
#[derive(Debug, Clone)]
pub struct SharedToken {
    pub access_token: SecretString,
    pub expires_at: DateTime<Utc>,
}

impl TokenRecord {
    /// The record's token, if it has one.
    pub fn token(&self) -> Option<SharedToken> {
        let access_token = self.access_token.clone()?;
        Some(SharedToken { access_token, expires_at: self.expires_at? })
    }

    /// This lease's record once `token` is fetched: the token stored, the lease ended (one revision on).
    pub fn holding(&self, token: &SharedToken, now: DateTime<Utc>) -> TokenRecord {
        TokenRecord {
            po_id: self.po_id.clone(),
            revision: self.revision + 1,
            access_token: Some(token.access_token.clone()),
            expires_at: Some(token.expires_at),
            refreshing_until: None,
            holder: None,
            updated_at: now,
        }
    }

    /// This lease's record when no token could be fetched: the lease ended early, so the next one need not wait
    /// for it to run out (one revision on).
    pub fn released(&self, now: DateTime<Utc>) -> TokenRecord {
        TokenRecord {
            revision: self.revision + 1,
            refreshing_until: None,
            holder: None,
            updated_at: now,
            ..self.clone()
        }
    }
}

/// How long a token is trusted and a lease held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRules {
    /// A token this close to its expiry is renewed rather than used.
    pub renew_margin: TimeDelta,
    /// How long a lease keeps others from fetching: longer than a token request can take.
    pub lease: TimeDelta,
}

/// What to do after reading the record.
#[derive(Debug, Clone)]
pub enum Step {
    /// Use the stored token.
    Use(SharedToken),
    /// Another holder is fetching a new token: wait a little and read again.
    Wait,
    /// Write this lease (compare-and-set); once stored, fetch a token and store it with
    /// [`TokenRecord::holding`]. Lost the write: read again.
    Lease(TokenRecord),
}

/// The next step for `holder`, given the record read (`None`: there is none yet) at `now`. `refused` is the
/// token Exsited just answered 401 to, which is not used again.
pub fn decide(
    read: Option<&TokenRecord>,
    key: &str,
    refused: Option<&SecretString>,
    holder: &str,
    now: DateTime<Utc>,
    rules: TokenRules,
) -> Step {
    if let Some(record) = read {
        if let Some(token) = record.token()
            && now + rules.renew_margin < token.expires_at
            && refused.is_none_or(|refused| refused.expose_secret() != token.access_token.expose_secret())
        {
            return Step::Use(token);
        }
        if let (Some(until), Some(other)) = (record.refreshing_until, record.holder.as_deref())
            && now < until
            && other != holder
        {
            return Step::Wait;
        }
    }
    Step::Lease(TokenRecord {
        po_id: key.to_owned(),
        revision: read.map_or(0, |r| r.revision) + 1,
        // The token read is of no use to anyone now (expiring, or refused): nobody is handed it while the lease
        // holder fetches the next one.
        access_token: None,
        expires_at: None,
        refreshing_until: Some(now + rules.lease),
        holder: Some(holder.to_owned()),
        updated_at: now,
    })
}

/// Where the shared token is kept. Boxed futures, so a client can hold any store (`Arc<dyn TokenStore>`).
pub trait TokenStore: Send + Sync {
    /// The record of `key`, as last written (strongly consistent).
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, PortError>>;
    /// Stores `record` if the stored one is still the one it was derived from: revision `record.revision - 1`,
    /// or none at all when `record.revision` is 1.
    fn write<'a>(&'a self, record: &'a TokenRecord) -> BoxFuture<'a, Result<Written, PortError>>;
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, PortError>> {
        (**self).read(key)
    }

    fn write<'a>(&'a self, record: &'a TokenRecord) -> BoxFuture<'a, Result<Written, PortError>> {
        (**self).write(record)
    }
}

/// The ledger table (`LEDGER_TABLE_NAME`, partition key `poId`): `GetItem` and a conditional `PutItem`, the
/// permissions reconcile already has on it. No TTL: the table has none, and the record is one item per
/// credentials, rewritten in place.
#[derive(Debug, Clone)]
pub struct DynamoTokenStore {
    ledger: DynamoLedger,
}

impl DynamoTokenStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoTokenStore { ledger: DynamoLedger::new(client, table) }
    }

    pub fn table(&self) -> &str {
        self.ledger.table()
    }
}

impl TokenStore for DynamoTokenStore {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, PortError>> {
        Box::pin(self.ledger.get(key.to_owned()))
    }

    fn write<'a>(&'a self, record: &'a TokenRecord) -> BoxFuture<'a, Result<Written, PortError>> {
        Box::pin(self.ledger.compare_and_put(record, record.revision))
    }
}

/// The records in memory, with the same compare-and-set rule. Clones share them, so clients given clones
/// share one token, as instances sharing the ledger table do.
#[derive(Debug, Clone, Default)]
pub struct MemoryTokenStore {
    records: Arc<Mutex<HashMap<String, TokenRecord>>>,
}

impl MemoryTokenStore {
    /// Every record, in no particular order.
    pub fn records(&self) -> Vec<TokenRecord> {
        self.records.lock().map(|r| r.values().cloned().collect()).unwrap_or_default()
    }

    fn with<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut HashMap<String, TokenRecord>) -> T,
    ) -> Result<T, PortError> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| PortError::new(operation, Failure::Permanent, "memory token store poisoned"))?;
        Ok(f(&mut records))
    }
}

impl TokenStore for MemoryTokenStore {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, PortError>> {
        let read = self.with("dynamodb:GetItem", |records| records.get(key).cloned());
        Box::pin(async move { read })
    }

    fn write<'a>(&'a self, record: &'a TokenRecord) -> BoxFuture<'a, Result<Written, PortError>> {
        let written = self.with("dynamodb:PutItem", |records| {
            if !fits(records.get(&record.po_id).map(|r| r.revision), record.revision) {
                return Written::Conflict;
            }
            records.insert(record.po_id.clone(), record.clone());
            Written::Stored
        });
        Box::pin(async move { written })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "exsited-token#0123456789abcdef";
    const RULES: TokenRules = TokenRules { renew_margin: TimeDelta::seconds(60), lease: TimeDelta::seconds(15) };

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn stored(revision: u64, token: &str, expires_at: DateTime<Utc>) -> TokenRecord {
        TokenRecord {
            po_id: KEY.to_owned(),
            revision,
            access_token: Some(token.to_owned().into()),
            expires_at: Some(expires_at),
            refreshing_until: None,
            holder: None,
            updated_at: at(0),
        }
    }

    fn leased(revision: u64, holder: &str, until: DateTime<Utc>) -> TokenRecord {
        TokenRecord {
            access_token: None,
            expires_at: None,
            refreshing_until: Some(until),
            holder: Some(holder.to_owned()),
            ..stored(revision, "", at(0))
        }
    }

    fn lease_of(step: Step) -> TokenRecord {
        match step {
            Step::Lease(record) => record,
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_is_used() {
        let record = stored(4, "t-1", at(3600));
        match decide(Some(&record), KEY, None, "me", at(0), RULES) {
            Step::Use(token) => assert_eq!((token.access_token.expose_secret(), token.expires_at), ("t-1", at(3600))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_stored_is_leased_from_revision_one() {
        let lease = lease_of(decide(None, KEY, None, "me", at(0), RULES));
        assert_eq!((lease.po_id.as_str(), lease.revision), (KEY, 1));
        assert_eq!((lease.holder.as_deref(), lease.refreshing_until), (Some("me"), Some(at(15))));
        assert!(lease.access_token.is_none());
    }

    #[test]
    fn a_token_within_the_renewal_margin_is_renewed() {
        let record = stored(4, "t-1", at(60));
        let lease = lease_of(decide(Some(&record), KEY, None, "me", at(0), RULES));
        assert_eq!(lease.revision, 5);
        assert!(lease.access_token.is_none() && lease.expires_at.is_none(), "the dying token is not handed out");
        // One second more of life and it is still used.
        assert!(matches!(decide(Some(&stored(4, "t-1", at(61))), KEY, None, "me", at(0), RULES), Step::Use(_)));
    }

    #[test]
    fn the_token_just_refused_is_not_used_again_but_a_newer_one_is() {
        let refused: SecretString = "t-1".to_owned().into();
        let record = stored(4, "t-1", at(3600));
        assert_eq!(lease_of(decide(Some(&record), KEY, Some(&refused), "me", at(0), RULES)).revision, 5);
        // Someone already replaced it: the new one is used, Exsited is not asked.
        let replaced = stored(6, "t-2", at(3600));
        assert!(matches!(decide(Some(&replaced), KEY, Some(&refused), "me", at(0), RULES), Step::Use(_)));
    }

    #[test]
    fn a_live_lease_of_another_holder_is_waited_for() {
        let record = leased(5, "other", at(10));
        assert!(matches!(decide(Some(&record), KEY, None, "me", at(0), RULES), Step::Wait));
        // Even with a refused token in hand: the holder is fetching its replacement.
        let refused: SecretString = "t-1".to_owned().into();
        assert!(matches!(decide(Some(&record), KEY, Some(&refused), "me", at(9), RULES), Step::Wait));
        // A valid token beside a lease (not written so, but read so by hand) is still used.
        let both =
            TokenRecord { refreshing_until: Some(at(10)), holder: Some("other".into()), ..stored(5, "t", at(3600)) };
        assert!(matches!(decide(Some(&both), KEY, None, "me", at(0), RULES), Step::Use(_)));
    }

    #[test]
    fn an_expired_lease_or_ones_own_is_taken_over() {
        let expired = leased(5, "other", at(10));
        let lease = lease_of(decide(Some(&expired), KEY, None, "me", at(10), RULES));
        assert_eq!((lease.revision, lease.holder.as_deref(), lease.refreshing_until), (6, Some("me"), Some(at(25))));
        let own = leased(5, "me", at(10));
        assert_eq!(lease_of(decide(Some(&own), KEY, None, "me", at(1), RULES)).revision, 6);
    }

    #[test]
    fn the_token_is_stored_over_the_lease_and_a_failed_fetch_releases_it() {
        let lease = lease_of(decide(None, KEY, None, "me", at(0), RULES));
        let token = SharedToken { access_token: "t-1".to_owned().into(), expires_at: at(3600) };
        let holding = lease.holding(&token, at(1));
        assert_eq!((holding.revision, holding.refreshing_until.is_none(), holding.holder.is_none()), (2, true, true));
        assert_eq!(holding.token().map(|t| t.expires_at), Some(at(3600)));
        let released = lease.released(at(1));
        assert_eq!((released.revision, released.refreshing_until, released.access_token.is_none()), (2, None, true));
    }

    #[tokio::test]
    async fn a_lost_compare_and_set_reads_again_and_waits_for_the_winner() {
        let store = MemoryTokenStore::default();
        store.records.lock().unwrap().insert(KEY.to_owned(), stored(3, "t-1", at(30)));
        // Both read revision 3 (expiring) and decide to lease; the other writes first.
        let read = store.read(KEY).await.unwrap();
        let mine = lease_of(decide(read.as_ref(), KEY, None, "me", at(0), RULES));
        let theirs = lease_of(decide(read.as_ref(), KEY, None, "other", at(0), RULES));
        assert_eq!(store.write(&theirs).await.unwrap(), Written::Stored);
        assert_eq!(store.write(&mine).await.unwrap(), Written::Conflict);
        // Back to the read: the winner's lease is live, so wait rather than ask Exsited.
        let read = store.read(KEY).await.unwrap();
        assert!(matches!(decide(read.as_ref(), KEY, None, "me", at(1), RULES), Step::Wait));
        // The winner stores its token over its lease (revision + 2 from the read), and it is used.
        let token = SharedToken { access_token: "t-2".to_owned().into(), expires_at: at(3600) };
        assert_eq!(store.write(&theirs.holding(&token, at(2))).await.unwrap(), Written::Stored);
        let read = store.read(KEY).await.unwrap();
        assert_eq!(read.as_ref().map(|r| r.revision), Some(5));
        assert!(
            matches!(decide(read.as_ref(), KEY, None, "me", at(3), RULES), Step::Use(t) if t.access_token.expose_secret() == "t-2")
        );
        // A second record of revision 1 for the same key loses too.
        assert_eq!(
            store.write(&lease_of(decide(None, KEY, None, "me", at(0), RULES))).await.unwrap(),
            Written::Conflict
        );
    }

    #[test]
    fn keys_are_per_tenant_and_client_and_never_a_number() {
        let a = key("https://t.exsited.com", "id-1");
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 16, "{a}");
        assert!(a.parse::<u64>().is_err());
        assert_eq!(a, key("https://t.exsited.com/", "id-1"));
        assert_ne!(a, key("https://t.exsited.com", "id-2"));
        assert_ne!(a, key("https://u.exsited.com", "id-1"));
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let record = stored(2, "tok-very-secret", at(3600));
        let store = MemoryTokenStore::default();
        store.records.lock().unwrap().insert(KEY.to_owned(), record.clone());
        let shown = format!(
            "{record:?} {:?} {store:?} {:?}",
            record.token(),
            decide(Some(&record), KEY, None, "me", at(0), RULES)
        );
        assert!(!shown.contains("tok-very-secret"), "{shown}");
        // The item itself carries it, under its own attribute.
        let item: HashMap<String, aws_sdk_dynamodb::types::AttributeValue> = serde_dynamo::to_item(&record).unwrap();
        assert_eq!(item.get("accessToken").and_then(|v| v.as_s().ok()).map(String::as_str), Some("tok-very-secret"));
        assert_eq!(item.get("poId").and_then(|v| v.as_s().ok()).map(String::as_str), Some(KEY));
        assert!(item.get("revision").is_some_and(|v| v.as_n().is_ok()));
        assert!(!item.contains_key("refreshingUntil") && !item.contains_key("holder"));
        let back: TokenRecord = serde_dynamo::from_item(item).unwrap();
        assert_eq!(back.token().map(|t| t.access_token.expose_secret().to_owned()).as_deref(), Some("tok-very-secret"));
    }
}
