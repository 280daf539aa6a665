//! `verify [--since T]`: every PO in the ledger (or those it changed since T), read back from AppZen and
//! compared with what po-sync sent (`readback`). Drift is AppZen missing a PO po-sync upserted, holding an
//! older version's body, or holding fields (amounts, lines, supplier…, a line's cancel flag) po-sync never sent
//! (a PO `cancel` told AppZen of is compared with every line cancelled). The exit code is 1
//! on drift, or when a PO could not be checked, so a scheduled run can alarm.
//!
//! Reads the whole ledger table (a `Scan`, page by page) and makes one AppZen GET per PO, a few at a time.
//!
//! `--repair` queues, for each PO with drift, the kept version AppZen should hold as a replay marked `resend`
//! (`replay --po <id> --version <v> --resend`): reconcile sends it to AppZen although the ledger says AppZen
//! holds it, and a newer version of the PO still wins. The exit code stays 1: the repair is queued, not yet
//! seen; run verify again once the queue is empty.

use crate::Clients;
use crate::error::Error;
use crate::readback::{AppZenCopy, AppZenReader, check};
use crate::replay::{Pick, replay_kept};
use crate::resources::{Resource, Resources};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use po_sync::ledger::{LedgerEntry, LedgerOutcome};
use po_sync_aws::ledger::DynamoLedger;
use po_sync_aws::objects::S3ObjectStore;
use serde::Serialize;
use std::fmt;

/// POs read back at once: AppZen's rate limits are not documented, so a few, not a flood.
pub const CONCURRENT_READS: usize = 4;

/// A progress line every this many POs.
const PROGRESS_EVERY: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Every PO checked, by PO id.
    pub pos: Vec<PoCheck>,
    /// Ledger items po-sync cannot read (edited by hand): not checked.
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoCheck {
    pub po_id: String,
    pub po_number: String,
    pub appzen: AppZenCopy,
    /// With `--repair`, for a PO with drift: what was queued, or why nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    /// The version queued to be sent again (`None`: nothing to send).
    pub version: Option<i64>,
    /// `queued as SQS message …`, or why not.
    pub outcome: String,
}

/// The version to send again to set AppZen right: the ledger's latest if it reached AppZen (a duplicate
/// carries the body AppZen should hold), else the version AppZen should hold (a newer one was held or refused).
pub fn repair_version(entry: &LedgerEntry) -> Option<i64> {
    match &entry.latest {
        Some(latest) if matches!(latest.outcome, LedgerOutcome::Upserted | LedgerOutcome::Duplicate) => {
            Some(latest.version)
        }
        _ => entry.holds.as_ref().map(|holds| holds.version),
    }
}

impl VerifyReport {
    pub fn drift(&self) -> impl Iterator<Item = &PoCheck> {
        self.pos.iter().filter(|p| p.appzen.is_drift())
    }

    pub fn not_checked(&self) -> impl Iterator<Item = &PoCheck> {
        self.pos.iter().filter(|p| matches!(p.appzen, AppZenCopy::Unknown { .. }))
    }

    /// No drift, and every PO was checked.
    pub fn is_clean(&self) -> bool {
        self.drift().next().is_none() && self.not_checked().next().is_none() && self.unreadable.is_empty()
    }
}

/// The ledger's POs to check: those changed at or after `since` (all without it), by PO id. An entry only an
/// operator's cancellation wrote (no version seen yet) has no PO number to read AppZen by, and nothing sent.
pub fn choose(entries: Vec<LedgerEntry>, since: Option<DateTime<Utc>>) -> Vec<LedgerEntry> {
    let mut chosen: Vec<LedgerEntry> = entries
        .into_iter()
        .filter(|e| since.is_none_or(|since| e.updated_at >= since) && !e.po_number.is_empty())
        .collect();
    chosen.sort_by_key(|e| (e.po_id.parse::<u64>().unwrap_or(u64::MAX), e.po_id.clone()));
    chosen
}

pub async fn verify(
    clients: &Clients,
    resources: &Resources,
    since: Option<DateTime<Utc>>,
    repair: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<VerifyReport, Error> {
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), resources.require(Resource::LedgerTable)?);
    let store = S3ObjectStore::with_client(clients.s3.clone(), resources.require(Resource::ArchiveBucket)?);
    let reader = AppZenReader::of_function(clients, resources.require(Resource::ReconcileFunction)?).await?;
    let (entries, unreadable) = ledger.entries().await?;
    let chosen = choose(entries, since);
    let total = chosen.len();
    progress(&format!("verify: {total} PO(s) to read back from AppZen"));
    let mut checks = futures_util::stream::iter(chosen.iter())
        .map(|entry| async {
            PoCheck {
                po_id: entry.po_id.clone(),
                po_number: entry.po_number.clone(),
                appzen: check(&reader, &store, entry).await,
                repair: None,
            }
        })
        .buffered(CONCURRENT_READS);
    let mut pos = Vec::with_capacity(total);
    while let Some(checked) = checks.next().await {
        pos.push(checked);
        if pos.len() % PROGRESS_EVERY == 0 {
            let drift = pos.iter().filter(|p| p.appzen.is_drift()).count();
            progress(&format!("verify: {}/{total} checked, {drift} with drift", pos.len()));
        }
    }
    if repair {
        for (po, entry) in pos.iter_mut().zip(&chosen).filter(|(po, _)| po.appzen.is_drift()) {
            po.repair = Some(send_again(clients, resources, entry).await);
            progress(&format!("verify --repair: PO {}: {}", po.po_id, po.repair.as_ref().map_or("", |r| &r.outcome)));
        }
    }
    Ok(VerifyReport { since, pos, unreadable })
}

/// Queues the version AppZen should hold again, marked `resend`.
async fn send_again(clients: &Clients, resources: &Resources, entry: &LedgerEntry) -> Repair {
    if let Some(cancellation) = &entry.cancelled {
        return Repair { version: None, outcome: cancelled_repair(&entry.po_id, cancellation) };
    }
    let (Ok(po_id), Some(version)) = (entry.po_id.parse::<u64>(), repair_version(entry)) else {
        return Repair { version: None, outcome: "nothing to send: the ledger names no version AppZen holds".into() };
    };
    let outcome = match replay_kept(clients, resources, po_id, Pick::Version(version), false, true).await {
        Ok(report) => format!("queued as SQS message {}", report.sqs_message_id.unwrap_or_default()),
        Err(e) => format!("not queued: {e}"),
    };
    Repair { version: Some(version), outcome }
}

/// What sets AppZen right for a PO an operator cancelled: reconcile holds every version of it, a replay too, so
/// only the CLI sends AppZen the version it holds again.
fn cancelled_repair(po_id: &str, cancellation: &po_sync::ledger::Cancellation) -> String {
    if cancellation.destination_id.is_some() {
        format!(
            "not queued: the PO is cancelled, so reconcile would hold the replay; po-sync-admin reactivate {po_id} \
             then po-sync-admin cancel {po_id} sends AppZen the version it holds again, cancelled"
        )
    } else {
        format!(
            "not queued: the PO's cancellation is recorded but AppZen was never told; po-sync-admin cancel {po_id} \
             tells it"
        )
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |pick: fn(&AppZenCopy) -> bool| self.pos.iter().filter(|p| pick(&p.appzen)).count();
        let since = self
            .since
            .map(|s| format!(" changed since {}", s.to_rfc3339_opts(SecondsFormat::Secs, true)))
            .unwrap_or_default();
        writeln!(
            f,
            "verified {} PO(s){since} against AppZen: {} match, {} with drift, {} not checked, {} never sent by \
             po-sync, {} past the retention",
            self.pos.len(),
            count(|c| matches!(c, AppZenCopy::Matches { .. })),
            count(AppZenCopy::is_drift),
            count(|c| matches!(c, AppZenCopy::Unknown { .. })),
            count(|c| matches!(c, AppZenCopy::NotSent { .. })),
            count(|c| matches!(c, AppZenCopy::NotKept { .. })),
        )?;
        for po in self.drift().chain(self.not_checked()) {
            writeln!(f, "  PO {} ({}): {}", po.po_id, po.po_number, po.appzen)?;
            if let Some(repair) = &po.repair {
                writeln!(f, "      repair: {}", repair.outcome)?;
            }
        }
        for item in &self.unreadable {
            writeln!(f, "  not checked: {item}")?;
        }
        match self.is_clean() {
            true => writeln!(f, "no drift: AppZen holds what po-sync last sent for every PO checked"),
            false if self.drift().any(|p| p.repair.is_some()) => writeln!(
                f,
                "drift found and the repairs queued: run verify again once reconcile has processed them (status)"
            ),
            false if self.drift().next().is_some() => writeln!(
                f,
                "drift found: AppZen was changed outside po-sync, or lost a PO; `verify --repair` sends po-sync's \
                 version of each again"
            ),
            false => writeln!(f, "some POs could not be checked; run verify again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(po_id: &str, minute: u32) -> LedgerEntry {
        LedgerEntry {
            po_id: po_id.into(),
            po_number: format!("P{po_id}"),
            revision: 1,
            latest: None,
            holds: None,
            claim: None,
            notified: None,
            cancelled: None,
            updated_at: Utc.with_ymd_and_hms(2026, 12, 1, 9, minute, 0).unwrap(),
        }
    }

    #[test]
    fn since_keeps_what_changed_at_or_after_it_by_po_id() {
        let entries = vec![entry("100", 5), entry("20", 1), entry("3", 9), entry("7", 4)];
        let ids = |chosen: Vec<LedgerEntry>| chosen.into_iter().map(|e| e.po_id).collect::<Vec<_>>();
        assert_eq!(ids(choose(entries.clone(), None)), ["3", "7", "20", "100"], "numeric order, not text");
        let since = Utc.with_ymd_and_hms(2026, 12, 1, 9, 4, 0).unwrap();
        assert_eq!(ids(choose(entries.clone(), Some(since))), ["3", "7", "100"]);
        // Cancelled before any version arrived: no number, nothing sent, nothing to read back.
        let unseen = po_sync::ledger::cancelled(
            None,
            9,
            po_sync::ledger::Cancellation { at: since, reason: None, destination_id: None },
            since,
        );
        assert_eq!(ids(choose([entries, vec![unseen]].concat(), None)), ["3", "7", "20", "100"]);
    }

    #[test]
    fn a_repair_sends_the_latest_if_it_reached_appzen_else_the_version_appzen_should_hold() {
        use po_sync::ledger::{DestinationHolds, SettledVersion};
        let settled = |version: i64, outcome| SettledVersion {
            version,
            sequence: None,
            received_at: Utc.timestamp_millis_opt(version).unwrap(),
            body_sha256: "s".into(),
            sqs_message_id: "m".into(),
            outcome,
            settled_at: Utc.timestamp_millis_opt(version).unwrap(),
        };
        let holds = |version: i64| DestinationHolds {
            version,
            sequence: None,
            body_sha256: "s".into(),
            uuid: None,
            status: None,
            http_status: 200,
            upserted_at: Utc.timestamp_millis_opt(version).unwrap(),
        };
        let mut e = entry("1", 0);
        assert_eq!(repair_version(&e), None);
        e.holds = Some(holds(10));
        e.latest = Some(settled(20, LedgerOutcome::Duplicate));
        assert_eq!(repair_version(&e), Some(20), "a duplicate carries the body AppZen should hold");
        e.latest = Some(settled(20, LedgerOutcome::Held));
        assert_eq!(repair_version(&e), Some(10), "a held newer version is not what AppZen should hold");
        e.latest = Some(settled(10, LedgerOutcome::Upserted));
        assert_eq!(repair_version(&e), Some(10));
    }

    #[test]
    fn drift_and_unchecked_pos_make_the_run_fail_and_are_listed() {
        let po = |id: &str, appzen| PoCheck { po_id: id.into(), po_number: format!("P{id}"), appzen, repair: None };
        let mut report = VerifyReport {
            since: None,
            pos: vec![
                po("1", AppZenCopy::Matches { version: 1 }),
                po("2", AppZenCopy::NotSent { appzen_holds_one: false }),
                po("3", AppZenCopy::NotKept { version: 1 }),
            ],
            unreadable: vec![],
        };
        assert!(report.is_clean());
        assert!(report.to_string().contains("no drift"), "{report}");
        report.pos.push(po("4", AppZenCopy::Missing { version: 1_795_280_400_123 }));
        report.pos.push(po("5", AppZenCopy::Unknown { reason: "AppZen did not answer: timeout".into() }));
        assert!(!report.is_clean());
        let text = report.to_string();
        assert!(text.starts_with("verified 5 PO(s) against AppZen: 1 match, 1 with drift, 1 not checked"), "{text}");
        assert!(text.contains("  PO 4 (P4): DRIFT, missing") && text.contains("  PO 5 (P5): not checked"), "{text}");
        assert!(!text.contains("PO 1 (P1)"), "matching POs are counted, not listed: {text}");
        report.pos.truncate(3);
        report.unreadable.push("ledger item 9 is unreadable: missing field".into());
        assert!(!report.is_clean(), "an unreadable ledger item was not checked");
    }
}
