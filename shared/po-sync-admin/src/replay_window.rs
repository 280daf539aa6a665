//! `replay --since T [--until U] [--outcome O,…]`: every kept webhook received in a window, optionally only the
//! versions whose last attempt came to one of the outcomes (the history table), sent again from the archive
//! bucket with the version each had, oldest first, through the path `replay --po P --version V` sends one by.
//!
//! The window is read from the keys of `webhooks/` (which say PO and version), so it lists every kept body once:
//! one `ListObjectsV2` page per 1,000 kept bodies in the bucket. A version's outcome is its newest attempt that is
//! not itself a replay: after a fix, `--outcome held` re-sends what is still held, and a second run finds nothing
//! left to send once reconcile has taken them.

use crate::Clients;
use crate::error::Error;
use crate::history::MAX_ATTEMPTS;
use crate::replay::{ReplayReport, replay_chosen};
use crate::resources::{Resource, Resources};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::message::{KeptWebhook, WEBHOOK_ARCHIVE_PREFIX};
use po_sync_aws::ledger::DynamoHistory;
use po_sync_aws::objects::{ObjectStore, S3ObjectStore};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The most kept bodies one window replays (a larger window is refused before anything is sent).
pub const MAX_WINDOW: usize = 10_000;

/// Which kept webhooks to send again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub since: DateTime<Utc>,
    /// Exclusive; `None`: up to now.
    pub until: Option<DateTime<Utc>>,
    /// Only versions whose last attempt came to one of these; empty: every version in the window.
    pub outcomes: Vec<AttemptOutcome>,
}

impl Window {
    fn contains(&self, at: DateTime<Utc>) -> bool {
        at >= self.since && self.until.is_none_or(|until| at < until)
    }
}

/// A time on the command line: milliseconds, an RFC 3339 time, or a date (midnight UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    crate::replay::parse_version(text)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| format!("{text:?} is not a time: give 2026-11-21, 2026-11-21T17:00:00Z or milliseconds"))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowReport {
    pub window: Window,
    pub dry_run: bool,
    /// Kept bodies received in the window.
    pub in_window: usize,
    /// Of those, left out by `--outcome` (another outcome, or no attempt recorded).
    pub other_outcome: usize,
    /// Sent (or, on a dry run, that would be), oldest first, each with the outcome that chose it.
    pub replayed: Vec<WindowReplay>,
    /// Those that could not be sent, with why; the others were sent all the same.
    pub failed: Vec<WindowFailure>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowReplay {
    /// The version's last outcome before this replay, when the history has one.
    pub last_outcome: Option<AttemptOutcome>,
    #[serde(flatten)]
    pub report: ReplayReport,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowFailure {
    pub po_id: u64,
    pub version: i64,
    pub error: String,
}

impl WindowReport {
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Sends every kept webhook of the window again (see the module's note); `progress` gets a line per version.
pub async fn replay_window(
    clients: &Clients,
    resources: &Resources,
    window: Window,
    dry_run: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<WindowReport, Error> {
    let bucket = resources.require(Resource::ArchiveBucket)?;
    let store = S3ObjectStore::with_client(clients.s3.clone(), bucket);
    let (listed, _) = store.list(WEBHOOK_ARCHIVE_PREFIX, usize::MAX).await?;
    let kept: Vec<KeptWebhook> = listed.iter().filter_map(|o| KeptWebhook::from_key(&o.key)).collect();
    let in_window: Vec<KeptWebhook> = kept.into_iter().filter(|k| window.contains(k.received_at)).collect();
    let histories = match window.outcomes.is_empty() {
        true => BTreeMap::new(),
        false => read_histories(clients, resources, &in_window).await?,
    };
    let chosen = choose(&in_window, &histories, &window.outcomes);
    if chosen.len() > MAX_WINDOW {
        return Err(Error::Usage(format!(
            "{} kept webhooks match, more than {MAX_WINDOW} at once: narrow the window (--since/--until) or the outcomes",
            chosen.len()
        )));
    }
    let mut report = WindowReport {
        other_outcome: in_window.len() - chosen.len(),
        in_window: in_window.len(),
        window,
        dry_run,
        replayed: Vec::new(),
        failed: Vec::new(),
    };
    let total = chosen.len();
    for (n, (kept, last_outcome)) in chosen.into_iter().enumerate() {
        let when = kept.received_at.to_rfc3339_opts(SecondsFormat::Millis, true);
        match replay_chosen(clients, resources, &store, &kept, dry_run, false).await {
            Ok(sent) => {
                progress(&format!("{} of {total}: PO {} version {when}", n + 1, kept.po_id));
                report.replayed.push(WindowReplay { last_outcome, report: sent });
            }
            Err(error) => {
                progress(&format!("{} of {total}: PO {} version {when} not sent: {error}", n + 1, kept.po_id));
                report.failed.push(WindowFailure {
                    po_id: kept.po_id,
                    version: kept.version,
                    error: error.to_string(),
                });
            }
        }
    }
    Ok(report)
}

/// Each PO's history, for the POs with a version in the window.
async fn read_histories(
    clients: &Clients,
    resources: &Resources,
    in_window: &[KeptWebhook],
) -> Result<BTreeMap<u64, Vec<Attempt>>, Error> {
    let table = resources.require(Resource::HistoryTable)?;
    let history = DynamoHistory::reader(clients.dynamodb.clone(), table);
    let po_ids: std::collections::BTreeSet<u64> = in_window.iter().map(|k| k.po_id).collect();
    let mut histories = BTreeMap::new();
    for po_id in po_ids {
        histories.insert(po_id, history.list(po_id, MAX_ATTEMPTS).await?);
    }
    Ok(histories)
}

/// The versions to send, oldest first (so each PO's versions go in the order Komet sent them), each with its last
/// outcome: pure, so the choice is tested without AWS.
pub fn choose(
    in_window: &[KeptWebhook],
    histories: &BTreeMap<u64, Vec<Attempt>>,
    outcomes: &[AttemptOutcome],
) -> Vec<(KeptWebhook, Option<AttemptOutcome>)> {
    let mut chosen: Vec<(KeptWebhook, Option<AttemptOutcome>)> = in_window
        .iter()
        .map(|kept| (kept.clone(), last_outcome(histories.get(&kept.po_id), kept.version)))
        .filter(|(_, last)| outcomes.is_empty() || last.is_some_and(|last| outcomes.contains(&last)))
        .collect();
    chosen.sort_by(|(a, _), (b, _)| (a.version, a.po_id, &a.key).cmp(&(b.version, b.po_id, &b.key)));
    chosen
}

/// The newest attempt at `version` that is not a replay (histories are newest first).
fn last_outcome(history: Option<&Vec<Attempt>>, version: i64) -> Option<AttemptOutcome> {
    history?.iter().find(|a| a.version == version && !a.outcome.is_operator_action()).map(|a| a.outcome)
}

impl fmt::Display for WindowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let until = self.window.until.map_or("now".to_owned(), |u| u.to_rfc3339_opts(SecondsFormat::Millis, true));
        let outcomes: Vec<&str> = self.window.outcomes.iter().map(|o| o.into()).collect();
        let verb = if self.dry_run { "would replay (dry run)" } else { "replayed" };
        writeln!(
            f,
            "{} kept webhook(s) received from {} until {until}{}; {verb} {}, {} failed, {} left out by their outcome",
            self.in_window,
            self.window.since.to_rfc3339_opts(SecondsFormat::Millis, true),
            if outcomes.is_empty() {
                String::new()
            } else {
                format!(" whose last outcome is {}", outcomes.join(" or "))
            },
            self.replayed.len(),
            self.failed.len(),
            self.other_outcome,
        )?;
        for replayed in &self.replayed {
            let r = &replayed.report;
            let last = replayed.last_outcome.map_or("no attempt recorded".to_owned(), |o| format!("last {o}"));
            writeln!(
                f,
                "  PO {} (id {}) version {} ({last}){}",
                r.po_number,
                r.po_id,
                r.received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                r.sqs_message_id.as_ref().map_or(String::new(), |id| format!(": SQS message {id}"))
            )?;
        }
        for failure in &self.failed {
            writeln!(f, "  PO {} version {} NOT SENT: {}", failure.po_id, failure.version, failure.error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use po_sync::message::kept_key;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn kept(po: u64, ms: i64) -> KeptWebhook {
        KeptWebhook::from_key(&kept_key(po, at(ms), "req")).unwrap()
    }

    fn attempt(po: u64, version: i64, at_ms: i64, outcome: AttemptOutcome) -> Attempt {
        Attempt::new(po, "P", version, at(at_ms), outcome)
    }

    #[test]
    fn a_version_is_chosen_by_its_last_outcome_before_any_replay_oldest_first() {
        use AttemptOutcome::{Held, Rejected, Replayed, Retried, Upserted};
        let in_window = [kept(2, 3_000), kept(1, 2_000), kept(1, 1_000), kept(3, 1_500)];
        let histories = BTreeMap::from([
            // PO 1: version 1000 upserted; version 2000 held, then replayed (still held: nothing came back yet).
            (
                1,
                vec![
                    attempt(1, 2_000, 9_000, Replayed),
                    attempt(1, 2_000, 2_100, Held),
                    attempt(1, 1_000, 1_100, Upserted),
                ],
            ),
            // PO 2: refused after a retry.
            (2, vec![attempt(2, 3_000, 3_500, Rejected), attempt(2, 3_000, 3_100, Retried)]),
            // PO 3: nothing recorded.
        ]);
        let pick = |outcomes: &[AttemptOutcome]| -> Vec<(u64, i64, Option<AttemptOutcome>)> {
            choose(&in_window, &histories, outcomes).into_iter().map(|(k, o)| (k.po_id, k.version, o)).collect()
        };
        assert_eq!(pick(&[Held]), [(1, 2_000, Some(Held))]);
        assert_eq!(pick(&[Held, Rejected]), [(1, 2_000, Some(Held)), (2, 3_000, Some(Rejected))]);
        assert_eq!(
            pick(&[]),
            [(1, 1_000, Some(Upserted)), (3, 1_500, None), (1, 2_000, Some(Held)), (2, 3_000, Some(Rejected))],
            "no filter: every version in the window, oldest first"
        );
        assert!(pick(&[Retried]).is_empty(), "a retry followed by a verdict is that verdict");
    }

    #[test]
    fn the_window_includes_since_and_excludes_until() {
        let window = Window { since: at(1_000), until: Some(at(2_000)), outcomes: Vec::new() };
        assert!(window.contains(at(1_000)) && window.contains(at(1_999)));
        assert!(!window.contains(at(999)) && !window.contains(at(2_000)));
        assert!(Window { until: None, ..window }.contains(at(5_000_000)));
    }

    #[test]
    fn times_are_dates_rfc_3339_or_milliseconds() {
        assert_eq!(parse_time("2026-11-21"), Ok(at(1_795_219_200_000)));
        assert_eq!(parse_time("2026-11-21T17:00:00.123Z"), Ok(at(1_795_280_400_123)));
        assert_eq!(parse_time("1795280400123"), Ok(at(1_795_280_400_123)));
        assert!(parse_time("yesterday").unwrap_err().contains("not a time"));
    }
}
