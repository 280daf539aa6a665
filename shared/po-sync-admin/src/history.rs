//! `history <id>`: every version of one PO Komet sent that is still kept in the archive bucket (`webhooks/`),
//! newest first, each with what the version ledger says became of it and what each attempt at it came to; then
//! every attempt (the history table: reconcile's deliveries and the operator's replays), newest first.
//!
//! The ledger keeps a PO's latest state only: the latest settled version, what AppZen holds and any claim. The
//! attempts tell the rest, for as long as they are kept (`WebhookRetentionDays`, like the bodies).

use crate::Clients;
use crate::error::Error;
use crate::po::{answer, version_time};
use crate::resources::{Resource, Resources};
use chrono::Utc;
use po_sync::destination::Destination;
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::ledger::{LedgerEntry, LedgerOutcome};
use po_sync::message::{KeptWebhook, kept_prefix};
use po_sync_aws::ledger::{DynamoHistory, DynamoLedger, Ledger};
use po_sync_aws::objects::{ObjectStore, S3ObjectStore};
use serde::Serialize;
use std::fmt;

/// Writes to the history table for the CLI's own actions (replay, redrive). They are kept for the default
/// retention: the CLI does not know the stack's `WebhookRetentionDays`.
pub fn writer(clients: &Clients, table: &str) -> DynamoHistory {
    DynamoHistory::new(
        clients.dynamodb.clone(),
        table,
        chrono::Duration::days(po_sync::history::DEFAULT_RETENTION_DAYS.into()),
    )
}

/// The most versions one PO's history lists (S3 lists 1,000 keys a page; a PO sent this often is not usual).
pub const MAX_VERSIONS: usize = 10_000;

/// The most attempts one PO's history lists (a PO retried hourly through a day's outage has about 30).
pub const MAX_ATTEMPTS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReport {
    pub po_id: u64,
    pub bucket: String,
    /// Newest first.
    pub versions: Vec<KeptVersion>,
    /// More than [`MAX_VERSIONS`] were kept; the oldest are left out.
    pub truncated: bool,
    pub ledger: Option<LedgerEntry>,
    /// Every attempt kept, newest first (at most [`MAX_ATTEMPTS`]).
    pub attempts: Vec<Attempt>,
    /// The `po` command's one-line answer.
    pub answer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptVersion {
    #[serde(flatten)]
    pub kept: KeptWebhook,
    pub bytes: u64,
    /// What the ledger says of this version: `upserted`, `duplicate`, `held`, `rejected`, `unmappable` (the
    /// latest settled version), `appzen_holds`, `processing`, `pending` (newer than anything settled: on the
    /// queue, waiting to be retried, or parked) or `older` (an earlier version: superseded, or settled before
    /// the latest).
    pub ledger: Vec<&'static str>,
    /// What each attempt at this version came to, newest first (the history table).
    pub outcomes: Vec<AttemptOutcome>,
}

/// The PO's kept versions and its ledger entry.
pub async fn history(clients: &Clients, resources: &Resources, po_id: u64) -> Result<HistoryReport, Error> {
    let bucket = resources.require(Resource::ArchiveBucket)?;
    let table = resources.require(Resource::LedgerTable)?;
    let store = S3ObjectStore::with_client(clients.s3.clone(), bucket);
    let (listed, truncated) = kept_versions(&store, po_id).await?;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), table)
        .for_destination(resources.ledger_destination())
        .read(po_id)
        .await?;
    let history_table = resources.require(Resource::HistoryTable)?;
    let attempts = DynamoHistory::reader(clients.dynamodb.clone(), history_table).list(po_id, MAX_ATTEMPTS).await?;
    Ok(report(po_id, bucket, listed, truncated, ledger, attempts, resources.ledger_destination()))
}

/// The PO's kept bodies, oldest first (the newest [`MAX_VERSIONS`] when there are more).
pub async fn kept_versions(store: &impl ObjectStore, po_id: u64) -> Result<(Vec<(KeptWebhook, u64)>, bool), Error> {
    let (listed, truncated) = store.list(&kept_prefix(po_id), usize::MAX).await?;
    let mut kept: Vec<(KeptWebhook, u64)> =
        listed.into_iter().filter_map(|o| KeptWebhook::from_key(&o.key).map(|k| (k, o.size))).collect();
    let over = kept.len().saturating_sub(MAX_VERSIONS);
    kept.drain(..over);
    Ok((kept, truncated || over > 0))
}

/// The report from what was read: pure, so the ledger's word on each version is tested without AWS.
pub fn report(
    po_id: u64,
    bucket: &str,
    listed: Vec<(KeptWebhook, u64)>,
    truncated: bool,
    ledger: Option<LedgerEntry>,
    attempts: Vec<Attempt>,
    destination: Destination,
) -> HistoryReport {
    let mut versions: Vec<KeptVersion> = listed
        .into_iter()
        .map(|(kept, bytes)| {
            let ledger = ledger_says(ledger.as_ref(), kept.version);
            let outcomes = attempts.iter().filter(|a| a.version == kept.version).map(|a| a.outcome).collect();
            KeptVersion { kept, bytes, ledger, outcomes }
        })
        .collect();
    versions.reverse();
    let answer = answer(po_id, ledger.as_ref(), destination, Utc::now());
    HistoryReport { po_id, bucket: bucket.to_owned(), versions, truncated, ledger, attempts, answer }
}

fn ledger_says(entry: Option<&LedgerEntry>, version: i64) -> Vec<&'static str> {
    let Some(entry) = entry else { return vec!["pending"] };
    let mut said = Vec::new();
    let latest = entry.latest.as_ref();
    if let Some(latest) = latest.filter(|l| l.version == version) {
        said.push(outcome_name(latest.outcome));
    }
    if entry.holds.as_ref().is_some_and(|h| h.version == version) {
        said.push("appzen_holds");
    }
    if entry.claim.as_ref().is_some_and(|c| c.version == version) {
        said.push("processing");
    }
    if said.is_empty() {
        let newest_known = latest.map(|l| l.version).max(entry.holds.as_ref().map(|h| h.version));
        said.push(if newest_known.is_none_or(|known| version > known) { "pending" } else { "older" });
    }
    said
}

/// `2026-11-22T09:00:01.250Z  upserted    appzen  version 2026-11-22T09:00:00.000Z  HTTP 201  1 request(s)  212 ms  m-1  AppZen: CREATED`
fn attempt_line(attempt: &Attempt) -> String {
    let mut line = format!(
        "{}  {:<10}  {}  version {}",
        attempt.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        attempt.outcome.to_string(),
        attempt.destination,
        version_time(attempt.version)
    );
    if let Some(status) = attempt.http_status {
        line.push_str(&format!("  HTTP {status}"));
    }
    if attempt.requests > 0 {
        line.push_str(&format!("  {} request(s)", attempt.requests));
    }
    if let Some(ms) = attempt.latency_ms {
        line.push_str(&format!("  {ms} ms"));
    }
    for part in [&attempt.sqs_message_id, &attempt.correlation_id, &attempt.detail].into_iter().flatten() {
        line.push_str("  ");
        line.push_str(&po_sync::text::one_line(part, po_sync::text::LOG_FIELD_CHARS));
    }
    line
}

fn outcome_name(outcome: LedgerOutcome) -> &'static str {
    outcome.into()
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = self.ledger.as_ref().map_or(String::new(), |e| format!(" ({})", e.po_number));
        writeln!(
            f,
            "PO {}{number}: {} version(s) kept in s3://{}/{}, newest first{}",
            self.po_id,
            self.versions.len(),
            self.bucket,
            kept_prefix(self.po_id),
            if self.truncated { " (the oldest left out)" } else { "" }
        )?;
        for version in &self.versions {
            let outcomes: Vec<&str> = version.outcomes.iter().map(|o| o.into()).collect();
            writeln!(
                f,
                "  {}  {:>9} bytes  {:<22}  {}{}",
                version_time(version.kept.version),
                version.bytes,
                version.ledger.join(", "),
                version.kept.send_segment,
                if outcomes.is_empty() { String::new() } else { format!("  attempts: {}", outcomes.join(", ")) }
            )?;
        }
        writeln!(f, "{} attempt(s), newest first:", self.attempts.len())?;
        for attempt in &self.attempts {
            writeln!(f, "  {}", attempt_line(attempt))?;
        }
        writeln!(f, "{}", self.answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use po_sync::ledger::{DestinationHolds, SettledVersion};
    use po_sync::message::kept_key;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn kept(ms: i64) -> (KeptWebhook, u64) {
        (KeptWebhook::from_key(&kept_key(7, at(ms), &format!("req-{ms}"))).unwrap(), 100)
    }

    #[test]
    fn each_version_gets_what_the_ledger_says_of_it_newest_first() {
        let entry = LedgerEntry {
            po_id: "7".into(),
            po_number: "P7".into(),
            revision: 4,
            latest: Some(SettledVersion {
                version: 3_000,
                sequence: None,
                received_at: at(3_000),
                body_sha256: "c".into(),
                sqs_message_id: "m3".into(),
                outcome: LedgerOutcome::Held,
                settled_at: at(3_500),
            }),
            holds: Some(DestinationHolds {
                version: 2_000,
                sequence: None,
                body_sha256: "b".into(),
                uuid: None,
                status: None,
                http_status: 201,
                upserted_at: at(2_500),
            }),
            claim: None,
            notified: None,
            cancelled: None,
            updated_at: at(3_500),
        };
        let attempts = vec![
            Attempt {
                http_status: Some(201),
                requests: 1,
                ..Attempt::new(7, "P7", 2_000, at(2_600), AttemptOutcome::Upserted)
            },
            Attempt::new(7, "P7", 3_000, at(3_500), AttemptOutcome::Held),
            Attempt {
                http_status: Some(503),
                requests: 2,
                ..Attempt::new(7, "P7", 2_000, at(2_100), AttemptOutcome::Retried)
            },
        ];
        let listed = vec![kept(1_000), kept(2_000), kept(3_000), kept(4_000)];
        let report = report(7, "archive", listed, false, Some(entry), attempts, Destination::Appzen);
        let said: Vec<(i64, Vec<&str>)> = report.versions.iter().map(|v| (v.kept.version, v.ledger.clone())).collect();
        assert_eq!(
            said,
            [(4_000, vec!["pending"]), (3_000, vec!["held"]), (2_000, vec!["appzen_holds"]), (1_000, vec!["older"]),]
        );
        let outcomes: Vec<&[AttemptOutcome]> = report.versions.iter().map(|v| v.outcomes.as_slice()).collect();
        use AttemptOutcome::{Held, Retried, Upserted};
        assert_eq!(outcomes, [&[][..], &[Held][..], &[Upserted, Retried][..], &[][..]]);
        let text = report.to_string();
        assert!(text.starts_with("PO 7 (P7): 4 version(s) kept in s3://archive/webhooks/7/, newest first\n"), "{text}");
        assert!(text.contains("  attempts: upserted, retried\n"), "{text}");
        assert!(
            text.contains("3 attempt(s), newest first:\n  1970-01-01T00:00:02.600Z  upserted    appzen  version 1970-01-01T00:00:02.000Z  HTTP 201  1 request(s)\n"),
            "{text}"
        );
        // Never processed: every kept version is pending.
        let unseen = super::report(7, "archive", vec![kept(1_000)], false, None, Vec::new(), Destination::Appzen);
        assert_eq!(unseen.versions[0].ledger, ["pending"]);
    }
}
