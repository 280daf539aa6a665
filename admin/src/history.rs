//! `history <id>`: every version of one PO Komet sent that is still kept in the archive bucket (`webhooks/`),
//! newest first, each with what the version ledger says became of it.
//!
//! The ledger keeps a PO's latest state only: the latest settled version, what AppZen holds and any claim. So
//! the fate of the versions in between is told as far as that state allows ("older than the latest").

use crate::Clients;
use crate::error::Error;
use crate::po::{answer, version_time};
use crate::resources::{Resource, Resources};
use chrono::Utc;
use po_sync::ledger::{LedgerEntry, LedgerOutcome};
use po_sync::message::{KeptWebhook, kept_prefix};
use po_sync_aws::ledger::{DynamoLedger, Ledger};
use po_sync_aws::objects::{ObjectStore, S3ObjectStore};
use serde::Serialize;
use std::fmt;

/// The most versions one PO's history lists (S3 lists 1,000 keys a page; a PO sent this often is not usual).
pub const MAX_VERSIONS: usize = 10_000;

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
}

/// The PO's kept versions and its ledger entry.
pub async fn history(clients: &Clients, resources: &Resources, po_id: u64) -> Result<HistoryReport, Error> {
    let bucket = resources.require(Resource::ArchiveBucket)?;
    let table = resources.require(Resource::LedgerTable)?;
    let store = S3ObjectStore::with_client(clients.s3.clone(), bucket);
    let (listed, truncated) = kept_versions(&store, po_id).await?;
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), table).read(po_id).await?;
    Ok(report(po_id, bucket, listed, truncated, ledger))
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
) -> HistoryReport {
    let mut versions: Vec<KeptVersion> = listed
        .into_iter()
        .map(|(kept, bytes)| {
            let ledger = ledger_says(ledger.as_ref(), kept.version);
            KeptVersion { kept, bytes, ledger }
        })
        .collect();
    versions.reverse();
    let answer = answer(po_id, ledger.as_ref(), Utc::now());
    HistoryReport { po_id, bucket: bucket.to_owned(), versions, truncated, ledger, answer }
}

fn ledger_says(entry: Option<&LedgerEntry>, version: i64) -> Vec<&'static str> {
    let Some(entry) = entry else { return vec!["pending"] };
    let mut said = Vec::new();
    let latest = entry.latest.as_ref();
    if let Some(latest) = latest.filter(|l| l.version == version) {
        said.push(outcome_name(latest.outcome));
    }
    if entry.appzen.as_ref().is_some_and(|h| h.version == version) {
        said.push("appzen_holds");
    }
    if entry.claim.as_ref().is_some_and(|c| c.version == version) {
        said.push("processing");
    }
    if said.is_empty() {
        let newest_known = latest.map(|l| l.version).max(entry.appzen.as_ref().map(|h| h.version));
        said.push(if newest_known.is_none_or(|known| version > known) { "pending" } else { "older" });
    }
    said
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
            writeln!(
                f,
                "  {}  {:>9} bytes  {:<22}  {}",
                version_time(version.kept.version),
                version.bytes,
                version.ledger.join(", "),
                version.kept.send_segment
            )?;
        }
        writeln!(f, "{}", self.answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use po_sync::ledger::{AppZenHolds, SettledVersion};
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
            appzen: Some(AppZenHolds {
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
            updated_at: at(3_500),
        };
        let report = report(7, "archive", vec![kept(1_000), kept(2_000), kept(3_000), kept(4_000)], false, Some(entry));
        let said: Vec<(i64, Vec<&str>)> = report.versions.iter().map(|v| (v.kept.version, v.ledger.clone())).collect();
        assert_eq!(
            said,
            [(4_000, vec!["pending"]), (3_000, vec!["held"]), (2_000, vec!["appzen_holds"]), (1_000, vec!["older"]),]
        );
        let text = report.to_string();
        assert!(text.starts_with("PO 7 (P7): 4 version(s) kept in s3://archive/webhooks/7/, newest first\n"), "{text}");
        // Never processed: every kept version is pending.
        let unseen = super::report(7, "archive", vec![kept(1_000)], false, None);
        assert_eq!(unseen.versions[0].ledger, ["pending"]);
    }
}
