//! The version ledger port: one [`LedgerEntry`] per Komet PO, and one [`OutageRecord`] per destination and
//! outage cause, read consistently and written only by compare-and-set on their revision. DynamoDB in Lambda,
//! memory in tests. The rules are in `po_sync::ledger` and `po_sync::outage`.
//!
//! Beside it, each PO's history ([`Attempt`]s, `po_sync::history`): appended, never rewritten, read newest
//! first; in DynamoDB a table of its own (partition key `poId`, sort key `attemptKey`, TTL `expiresAt`).

use crate::port::{Failure, PortError};
use aws_sdk_dynamodb::types::AttributeValue;
use po_sync::destination::Destination;
use po_sync::history::Attempt;
use po_sync::ledger::LedgerEntry;
use po_sync::outage::{OutageCause, OutageRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// Someone wrote first: read again and decide again.
    Conflict,
}

pub trait Ledger: Send + Sync {
    /// The PO's entry, as last written (strongly consistent).
    fn read(&self, po_id: u64) -> impl Future<Output = Result<Option<LedgerEntry>, PortError>> + Send;
    /// Stores `entry` if the stored entry is still the one it was derived from: revision `entry.revision - 1`,
    /// or no entry at all when `entry.revision` is 1.
    fn write(&self, entry: &LedgerEntry) -> impl Future<Output = Result<Written, PortError>> + Send;
    /// `destination`'s outage of `cause`, as last written (its item: [`OutageRecord::key`]; each destination's
    /// outages are its own, whichever destination's PO entries this ledger keeps).
    fn read_outage(
        &self,
        destination: Destination,
        cause: OutageCause,
    ) -> impl Future<Output = Result<Option<OutageRecord>, PortError>> + Send;
    /// Stores `record` (under its `po_id`, the key of its destination and cause) by the same compare-and-set
    /// rule as [`Ledger::write`].
    fn write_outage(&self, record: &OutageRecord) -> impl Future<Output = Result<Written, PortError>> + Send;
    /// Appends `attempt` to its PO's history; does nothing where no history is kept.
    fn record(&self, attempt: &Attempt) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The PO's history, newest first, at most `limit` attempts; empty where no history is kept.
    fn history(&self, po_id: u64, limit: usize) -> impl Future<Output = Result<Vec<Attempt>, PortError>> + Send;
}

/// The DynamoDB table at `LEDGER_TABLE_NAME` (partition key `poId`, a string).
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
    history: Option<DynamoHistory>,
    /// Whose entries these are: each destination keeps its own item per PO ([`Destination::ledger_key`]).
    destination: Destination,
}

/// The history table (`HISTORY_TABLE_NAME`, partition key `poId`, sort key `attemptKey`) and how long its
/// records are kept (`HISTORY_RETENTION_DAYS`; DynamoDB's TTL on `expiresAt` deletes them after).
#[derive(Debug, Clone)]
pub struct DynamoHistory {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: chrono::Duration,
}

const GET_ITEM: &str = "dynamodb:GetItem";
const PUT_ITEM: &str = "dynamodb:PutItem";
const QUERY: &str = "dynamodb:Query";
const SCAN: &str = "dynamodb:Scan";
pub const KEY: &str = "poId";
/// The history table's sort key ([`Attempt::sort_key`]) and its TTL attribute.
pub const HISTORY_SORT_KEY: &str = "attemptKey";
pub const HISTORY_TTL: &str = "expiresAt";

impl DynamoLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLedger { client, table: table.into(), history: None, destination: Destination::Appzen }
    }

    /// The entries `destination` keeps (AppZen's unless said otherwise).
    pub fn for_destination(mut self, destination: Destination) -> Self {
        self.destination = destination;
        self
    }

    /// Keeps each PO's history in `table`, each record for `retention` (DynamoDB's TTL deletes it after).
    pub fn with_history(mut self, table: impl Into<String>, retention: chrono::Duration) -> Self {
        self.history = Some(DynamoHistory::new(self.client.clone(), table, retention));
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Every PO's entry, page by page (eventually consistent), the outage records beside them left out; with
    /// the keys of items po-sync cannot read (edited by hand), each with why. For an operator's sweep
    /// (`po-sync-admin verify`), never for reconcile.
    pub async fn entries(&self) -> Result<(Vec<LedgerEntry>, Vec<String>), PortError> {
        let mut entries = Vec::new();
        let mut unreadable = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| PortError::from_sdk(SCAN, e))?;
            for item in page.items.unwrap_or_default() {
                let key = match item.get(KEY) {
                    Some(AttributeValue::S(key)) => key.clone(),
                    _ => continue,
                };
                if key.parse::<u64>().is_err() {
                    continue;
                }
                match serde_dynamo::from_item(item) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => unreadable.push(format!("ledger item {key} is unreadable: {e}")),
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok((entries, unreadable))
    }
}

impl DynamoLedger {
    pub(crate) async fn get<T: DeserializeOwned>(&self, key: String) -> Result<Option<T>, PortError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| PortError::from_sdk(GET_ITEM, e))?;
        match output.item {
            None => Ok(None),
            Some(item) => serde_dynamo::from_item(item).map(Some).map_err(|e| {
                // Someone edited the item by hand into something po-sync cannot read: a person must look.
                PortError::new(GET_ITEM, Failure::Permanent, format!("ledger item {key} is unreadable: {e}"))
            }),
        }
    }

    /// Puts `item` if the stored one still has revision `revision - 1` (none at all for revision 1).
    pub(crate) async fn compare_and_put(&self, item: &impl Serialize, revision: u64) -> Result<Written, PortError> {
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(item)
            .map_err(|e| PortError::new(PUT_ITEM, Failure::Permanent, format!("ledger item: {e}")))?;
        let mut request = self.client.put_item().table_name(&self.table).set_item(Some(item));
        request = match revision.checked_sub(1) {
            Some(0) | None => request.condition_expression("attribute_not_exists(poId)"),
            Some(expected) => request
                .condition_expression("revision = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(Written::Stored),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Ok(Written::Conflict)
            }
            Err(e) => Err(PortError::from_sdk(PUT_ITEM, e)),
        }
    }
}

impl Ledger for DynamoLedger {
    async fn read(&self, po_id: u64) -> Result<Option<LedgerEntry>, PortError> {
        let entry: Option<LedgerEntry> = self.get(self.destination.ledger_key(po_id)).await?;
        // The item's key is the destination's; the entry speaks of Komet's PO id, as the rules expect.
        Ok(entry.map(|entry| LedgerEntry { po_id: po_id.to_string(), ..entry }))
    }

    async fn write(&self, entry: &LedgerEntry) -> Result<Written, PortError> {
        match (self.destination, entry.po_id.parse::<u64>()) {
            (Destination::Appzen, _) => self.compare_and_put(entry, entry.revision).await,
            (destination, Ok(po_id)) => {
                let keyed = LedgerEntry { po_id: destination.ledger_key(po_id), ..entry.clone() };
                self.compare_and_put(&keyed, entry.revision).await
            }
            (_, Err(_)) => Err(PortError::new(
                PUT_ITEM,
                Failure::Permanent,
                format!("ledger entry {:?} is not a Komet PO id", entry.po_id),
            )),
        }
    }

    async fn read_outage(
        &self,
        destination: Destination,
        cause: OutageCause,
    ) -> Result<Option<OutageRecord>, PortError> {
        self.get(OutageRecord::key(destination, cause)).await
    }

    async fn write_outage(&self, record: &OutageRecord) -> Result<Written, PortError> {
        check_outage_key(record)?;
        self.compare_and_put(record, record.revision).await
    }

    async fn record(&self, attempt: &Attempt) -> Result<(), PortError> {
        match &self.history {
            Some(history) => history.record(attempt).await,
            None => Ok(()),
        }
    }

    async fn history(&self, po_id: u64, limit: usize) -> Result<Vec<Attempt>, PortError> {
        match &self.history {
            Some(history) => history.list(po_id, limit).await,
            None => Ok(Vec::new()),
        }
    }
}

impl DynamoHistory {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, retention: chrono::Duration) -> Self {
        DynamoHistory { client, table: table.into(), retention }
    }

    /// The history `config` names, with a client of its own.
    pub fn from_config(aws: &aws_config::SdkConfig, config: &po_sync::config::HistoryConfig) -> Self {
        let retention = chrono::Duration::days(config.retention_days.into());
        DynamoHistory::new(aws_sdk_dynamodb::Client::new(aws), &config.table, retention)
    }

    /// For reading only ([`DynamoHistory::list`]): the retention is the writers' business.
    pub fn reader(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self::new(client, table, chrono::Duration::zero())
    }

    /// Appends `attempt` to its PO's history.
    pub async fn record(&self, attempt: &Attempt) -> Result<(), PortError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(attempt)
            .map_err(|e| PortError::new(PUT_ITEM, Failure::Permanent, format!("history record: {e}")))?;
        item.insert(KEY.to_owned(), AttributeValue::S(attempt.po_id.to_string()));
        item.insert(HISTORY_SORT_KEY.to_owned(), AttributeValue::S(attempt.sort_key()));
        item.insert(HISTORY_TTL.to_owned(), AttributeValue::N(attempt.expires_at(self.retention).to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| PortError::from_sdk(PUT_ITEM, e))
    }

    /// The PO's history, newest first, at most `limit` attempts.
    pub async fn list(&self, po_id: u64, limit: usize) -> Result<Vec<Attempt>, PortError> {
        let mut attempts = Vec::new();
        let mut start = None;
        while attempts.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("poId = :po")
                .expression_attribute_values(":po", AttributeValue::S(po_id.to_string()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - attempts.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| PortError::from_sdk(QUERY, e))?;
            for mut item in page.items.unwrap_or_default() {
                // The keys are the table's; the record is the rest (its `poId` a number again).
                item.remove(HISTORY_SORT_KEY);
                item.remove(HISTORY_TTL);
                item.insert(KEY.to_owned(), AttributeValue::N(po_id.to_string()));
                let attempt = serde_dynamo::from_item(item).map_err(|e| {
                    PortError::new(
                        QUERY,
                        Failure::Permanent,
                        format!("a history record of PO {po_id} is unreadable: {e}"),
                    )
                })?;
                attempts.push(attempt);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        attempts.truncate(limit);
        Ok(attempts)
    }
}

/// An in-memory ledger with the same compare-and-set rule; can be told to fail the next calls.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    entries: HashMap<String, LedgerEntry>,
    outages: HashMap<String, OutageRecord>,
    attempts: Vec<Attempt>,
    failures: Vec<Failure>,
}

/// An outage record is written only under the key of its destination and cause, so one destination's outage
/// never overwrites another's.
fn check_outage_key(record: &OutageRecord) -> Result<(), PortError> {
    let key = OutageRecord::key(record.destination, record.cause);
    if record.po_id == key {
        return Ok(());
    }
    let summary = format!("outage record {:?} is not keyed {key:?}", record.po_id);
    Err(PortError::new(PUT_ITEM, Failure::Permanent, summary))
}

/// The compare-and-set rule: `revision` follows the stored one (or starts at 1 where nothing is stored).
pub(crate) fn fits(stored: Option<u64>, revision: u64) -> bool {
    let expected = revision.saturating_sub(1);
    match stored {
        None => expected == 0,
        Some(stored) => stored == expected && expected > 0,
    }
}

impl MemoryLedger {
    pub fn entry(&self, po_id: u64) -> Option<LedgerEntry> {
        self.state.lock().ok().and_then(|s| s.entries.get(&po_id.to_string()).cloned())
    }

    /// AppZen's outage of `cause` ([`MemoryLedger::outage_of`] for another destination's).
    pub fn outage(&self, cause: OutageCause) -> Option<OutageRecord> {
        self.outage_of(Destination::Appzen, cause)
    }

    /// `destination`'s outage of `cause`.
    pub fn outage_of(&self, destination: Destination, cause: OutageCause) -> Option<OutageRecord> {
        self.state.lock().ok().and_then(|s| s.outages.get(&OutageRecord::key(destination, cause)).cloned())
    }

    /// Every outage record, of every destination, by key.
    pub fn outages(&self) -> std::collections::BTreeMap<String, OutageRecord> {
        self.state.lock().map(|s| s.outages.iter().map(|(k, r)| (k.clone(), r.clone())).collect()).unwrap_or_default()
    }

    /// Every attempt recorded, in the order recorded.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().map(|s| s.attempts.clone()).unwrap_or_default()
    }

    /// The next `count` reads or writes of entries and outages fail with `failure` (history is not affected).
    pub fn fail_next(&self, count: usize, failure: Failure) {
        if let Ok(mut state) = self.state.lock() {
            state.failures.extend(std::iter::repeat_n(failure, count));
        }
    }

    fn with<T>(&self, operation: &'static str, f: impl FnOnce(&mut MemoryState) -> T) -> Result<T, PortError> {
        let mut state =
            self.state.lock().map_err(|_| PortError::new(operation, Failure::Permanent, "memory ledger poisoned"))?;
        if !state.failures.is_empty() {
            let failure = state.failures.remove(0);
            return Err(PortError::new(operation, failure, "injected failure"));
        }
        Ok(f(&mut state))
    }
}

impl Ledger for MemoryLedger {
    async fn read(&self, po_id: u64) -> Result<Option<LedgerEntry>, PortError> {
        self.with(GET_ITEM, |state| state.entries.get(&po_id.to_string()).cloned())
    }

    async fn write(&self, entry: &LedgerEntry) -> Result<Written, PortError> {
        self.with(PUT_ITEM, |state| {
            if !fits(state.entries.get(&entry.po_id).map(|e| e.revision), entry.revision) {
                return Written::Conflict;
            }
            state.entries.insert(entry.po_id.clone(), entry.clone());
            Written::Stored
        })
    }

    async fn read_outage(
        &self,
        destination: Destination,
        cause: OutageCause,
    ) -> Result<Option<OutageRecord>, PortError> {
        self.with(GET_ITEM, |state| state.outages.get(&OutageRecord::key(destination, cause)).cloned())
    }

    async fn write_outage(&self, record: &OutageRecord) -> Result<Written, PortError> {
        check_outage_key(record)?;
        self.with(PUT_ITEM, |state| {
            if !fits(state.outages.get(&record.po_id).map(|r| r.revision), record.revision) {
                return Written::Conflict;
            }
            state.outages.insert(record.po_id.clone(), record.clone());
            Written::Stored
        })
    }

    async fn record(&self, attempt: &Attempt) -> Result<(), PortError> {
        let mut state =
            self.state.lock().map_err(|_| PortError::new(PUT_ITEM, Failure::Permanent, "memory ledger poisoned"))?;
        state.attempts.push(attempt.clone());
        Ok(())
    }

    async fn history(&self, po_id: u64, limit: usize) -> Result<Vec<Attempt>, PortError> {
        let state =
            self.state.lock().map_err(|_| PortError::new(QUERY, Failure::Permanent, "memory ledger poisoned"))?;
        let mut attempts: Vec<Attempt> = state.attempts.iter().filter(|a| a.po_id == po_id).cloned().collect();
        attempts.sort_by_key(|a| std::cmp::Reverse(a.sort_key()));
        attempts.truncate(limit);
        Ok(attempts)
    }
}

impl<L: Ledger> Ledger for &L {
    fn read(&self, po_id: u64) -> impl Future<Output = Result<Option<LedgerEntry>, PortError>> + Send {
        (**self).read(po_id)
    }

    fn write(&self, entry: &LedgerEntry) -> impl Future<Output = Result<Written, PortError>> + Send {
        (**self).write(entry)
    }

    fn read_outage(
        &self,
        destination: Destination,
        cause: OutageCause,
    ) -> impl Future<Output = Result<Option<OutageRecord>, PortError>> + Send {
        (**self).read_outage(destination, cause)
    }

    fn write_outage(&self, record: &OutageRecord) -> impl Future<Output = Result<Written, PortError>> + Send {
        (**self).write_outage(record)
    }

    fn record(&self, attempt: &Attempt) -> impl Future<Output = Result<(), PortError>> + Send {
        (**self).record(attempt)
    }

    fn history(&self, po_id: u64, limit: usize) -> impl Future<Output = Result<Vec<Attempt>, PortError>> + Send {
        (**self).history(po_id, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use po_sync::outage::{self, OutageRules};

    fn at(minute: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap() + chrono::Duration::minutes(minute)
    }

    const RULES: OutageRules =
        OutageRules { quiet: chrono::Duration::hours(2), mail_after: chrono::Duration::minutes(15) };

    #[tokio::test]
    async fn each_destination_reads_and_writes_only_its_own_outages() {
        let ledger = MemoryLedger::default();
        let cause = OutageCause::Credentials;
        let appzen = outage::observe(None, Destination::Appzen, cause, at(0), &RULES).write.unwrap();
        assert_eq!(ledger.write_outage(&appzen).await.unwrap(), Written::Stored);
        assert_eq!(ledger.read_outage(Destination::Exsited, cause).await.unwrap(), None, "AppZen's is not Exsited's");

        // Exsited's outage of the same cause opens as a first record (revision 1), beside AppZen's.
        let exsited = outage::observe(None, Destination::Exsited, cause, at(1), &RULES).write.unwrap();
        assert_eq!((exsited.po_id.as_str(), exsited.revision), ("outage#exsited#credentials", 1));
        assert_eq!(ledger.write_outage(&exsited).await.unwrap(), Written::Stored);
        let ended = outage::end(Some(&exsited), at(2)).unwrap();
        assert_eq!(ledger.write_outage(&ended).await.unwrap(), Written::Stored);
        assert_eq!(ledger.read_outage(Destination::Exsited, cause).await.unwrap(), Some(ended.clone()));
        assert_eq!(ledger.outage_of(Destination::Exsited, cause), Some(ended));
        assert_eq!(ledger.read_outage(Destination::Appzen, cause).await.unwrap(), Some(appzen.clone()));
        assert_eq!(ledger.outage(cause), Some(appzen), "AppZen's record untouched: open, revision 1");
        assert_eq!(ledger.outages().len(), 2);
    }

    #[tokio::test]
    async fn an_outage_record_keyed_as_another_destination_s_is_refused() {
        let ledger = MemoryLedger::default();
        let exsited = outage::observe(None, Destination::Exsited, OutageCause::Endpoint, at(0), &RULES).write.unwrap();
        let mislabelled =
            OutageRecord { po_id: OutageRecord::key(Destination::Appzen, OutageCause::Endpoint), ..exsited };
        let error = ledger.write_outage(&mislabelled).await.unwrap_err();
        assert!(!error.is_transient(), "{error}");
        assert!(ledger.outages().is_empty());
    }
}
