//! `redrive`: moves the parked webhooks back to the webhook queue, waits for reconcile, and reports what became
//! of each.
//!
//! 1. **Snapshot**: every parked message is received (the parked queue has no redrive policy, so receive counts
//!    do not matter there), read as a [`WebhookEnvelope`] or its claim check ([`BodyRef`], a PO too large for one
//!    SQS message: reconcile fetches the stored body) for its PO and version, and made visible again.
//! 2. **Move**: SQS's own move task (`StartMessageMoveTask`), or, where the endpoint does not implement it (moto)
//!    or with `--method copy`, a client-side copy: send to the webhook queue in the same group, then delete from
//!    the parked queue (at least once: reconcile's version ledger makes a second delivery harmless).
//! 3. **Wait**: until the webhook queue is empty, then each moved version is looked up in the ledger:
//!    applied, superseded by a newer version, or still pending.

use crate::Clients;
use crate::error::{Error, aws, port_error};
use crate::po::version_time;
use crate::resources::{Resource, Resources};
use crate::status::counts;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use chrono::{DateTime, Utc};
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::ledger::{LedgerEntry, LedgerOutcome};
use po_sync::message::{BodyRef, QueueMessage, WebhookEnvelope};
use po_sync_aws::ledger::{DynamoLedger, Ledger};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

mod copy;
mod fates;
mod move_task;
mod snapshot;

pub use copy::copy_deduplication_id;
use copy::copy_messages;
use fates::wait_for_reconcile;
pub use fates::{fate, fates};
pub use move_task::unsupported_reason;
use move_task::{Started, follow_move_task, queue_arn, start_move_task};
pub use snapshot::{ParkedIdentity, parked_identity, snapshot};
use snapshot::{receive, system_attribute};

/// How the messages are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The move task where the endpoint has it, else copy.
    Auto,
    /// SQS's StartMessageMoveTask.
    MoveTask,
    /// Receive from the parked queue, send to the webhook queue, delete from the parked queue.
    Copy,
}

#[derive(Debug, Clone)]
pub struct RedriveOptions {
    pub method: Method,
    /// Bounds the move, and then separately the wait for reconcile.
    pub timeout: Duration,
    /// Wait for reconcile and report each version's fate.
    pub wait: bool,
    /// How often progress is polled (1 s on the command line).
    pub poll_interval: Duration,
    /// How long a received parked message stays hidden (snapshot and copy); it is released at once after the
    /// snapshot, and comes back by itself after this if the release fails.
    pub visibility_timeout_seconds: i32,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        RedriveOptions {
            method: Method::Auto,
            timeout: Duration::from_secs(300),
            wait: true,
            poll_interval: Duration::from_secs(1),
            visibility_timeout_seconds: 60,
        }
    }
}

/// A readable parked webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedWebhook {
    pub message_id: String,
    pub po_id: u64,
    pub po_number: String,
    /// `receivedAt` in milliseconds.
    pub version: i64,
    pub group_id: String,
}

/// A parked message that is not a webhook envelope this build can read; it is not moved by a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    pub message_id: String,
    pub reason: String,
}

/// What the parked queue held when the redrive began.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub webhooks: Vec<ParkedWebhook>,
    pub unreadable: Vec<Unreadable>,
    /// Messages the queue reported but the snapshot could not see: a FIFO queue shows only the first messages
    /// of each group while they are received, and messages received by someone else are hidden.
    pub not_seen: u64,
}

/// How the move went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Movement {
    /// `move-task` or `copy`.
    pub method: Method,
    pub why: String,
    pub moved: u64,
    pub to_move: Option<u64>,
    /// Every message was moved (the task COMPLETED, or the copy emptied the queue of readable messages).
    pub complete: bool,
    /// Why not complete: the task's failure reason, a timeout, the error that stopped a copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What reconcile did with one moved version, according to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Fate {
    /// The ledger's latest version is this one; `outcome` says what reconcile did with it.
    Applied { outcome: LedgerOutcome },
    /// A newer version is settled or being processed, so this one was (or will be) consumed unsent.
    Superseded { by_version: i64 },
    /// Not settled yet: still queued, being retried, or dead-lettered again.
    Pending { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionFate {
    pub po_id: u64,
    pub po_number: String,
    pub version: i64,
    #[serde(flatten)]
    pub fate: Fate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waited {
    pub timed_out: bool,
    /// Visible + in flight on the webhook queue when the wait ended.
    pub left_on_webhook_queue: u64,
    pub fates: Vec<VersionFate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    pub snapshot: Snapshot,
    /// `None` when nothing was parked.
    pub movement: Option<Movement>,
    /// `None` with `--no-wait`, or when nothing was moved.
    pub waited: Option<Waited>,
    /// Whether each moved version's redrive was recorded in its PO's history; `None` where no history table is
    /// known (or nothing was moved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
}

impl RedriveReport {
    /// Whether the move did all it had to (what reconcile then did is reported, not judged).
    pub fn is_success(&self) -> bool {
        self.movement.as_ref().is_none_or(|m| m.complete)
    }
}

/// Runs the redrive; `progress` receives one line per step and per poll.
pub async fn redrive(
    clients: &Clients,
    resources: &Resources,
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<RedriveReport, Error> {
    let parked_url = resources.require(Resource::ParkedQueue)?;
    let webhook_url = resources.require(Resource::WebhookQueue)?;
    let table = if options.wait { Some(resources.require(Resource::LedgerTable)?) } else { None };
    let sqs = &clients.sqs;

    let snapshot = snapshot(sqs, parked_url, options.visibility_timeout_seconds).await?;
    let seen = snapshot.webhooks.len() + snapshot.unreadable.len();
    progress(&format!(
        "parked: {} webhook(s), {} unreadable{}",
        snapshot.webhooks.len(),
        snapshot.unreadable.len(),
        if snapshot.not_seen > 0 { format!(", {} more not visible", snapshot.not_seen) } else { String::new() }
    ));
    if seen == 0 && snapshot.not_seen == 0 {
        return Ok(RedriveReport { snapshot, movement: None, waited: None, history: None });
    }
    // The redrives' time in the history is before the move, so it comes before reconcile's attempts.
    let moving_at = Utc::now();

    let (movement, tracked) = match options.method {
        Method::Copy => {
            let (movement, moved) =
                copy_messages(sqs, parked_url, webhook_url, "--method copy".to_owned(), &snapshot, options, progress)
                    .await;
            (movement, moved)
        }
        Method::Auto if !snapshot.unreadable.is_empty() => {
            let why = format!(
                "{} unreadable message(s) are parked, and a move task would move them too; a copy leaves them parked",
                snapshot.unreadable.len()
            );
            copy_messages(sqs, parked_url, webhook_url, why, &snapshot, options, progress).await
        }
        Method::Auto | Method::MoveTask => {
            let source = queue_arn(sqs, parked_url).await?;
            let destination = queue_arn(sqs, webhook_url).await?;
            match start_move_task(sqs, &source, &destination).await? {
                Started::Task(handle) => {
                    let mut why = if options.method == Method::MoveTask {
                        "--method move-task".to_owned()
                    } else {
                        "the endpoint supports StartMessageMoveTask".to_owned()
                    };
                    if !snapshot.unreadable.is_empty() {
                        why.push_str(&format!(
                            "; note: it moves the {} unreadable message(s) too",
                            snapshot.unreadable.len()
                        ));
                    }
                    progress(&format!("move task started ({why})"));
                    let movement = follow_move_task(sqs, &source, &handle, why, options, progress).await?;
                    (movement, snapshot.webhooks.clone())
                }
                Started::Unsupported(reason) if options.method == Method::Auto => {
                    let why = format!("StartMessageMoveTask is not available on this endpoint ({reason})");
                    progress(&format!("falling back to copy: {why}"));
                    copy_messages(sqs, parked_url, webhook_url, why, &snapshot, options, progress).await
                }
                Started::Unsupported(reason) => {
                    return Err(Error::Failed(format!(
                        "StartMessageMoveTask is not available on this endpoint ({reason}); use --method copy"
                    )));
                }
            }
        }
    };

    let history = match resources.get(Resource::HistoryTable) {
        Some(table) if !tracked.is_empty() => Some(record_redrives(clients, table, &tracked, moving_at).await),
        _ => None,
    };
    let waited = if let (Some(table), true) = (table, movement.moved > 0 || !tracked.is_empty()) {
        let ledger = DynamoLedger::new(clients.dynamodb.clone(), table).for_destination(resources.ledger_destination());
        Some(wait_for_reconcile(sqs, webhook_url, &ledger, &tracked, options, progress).await?)
    } else {
        None
    };
    Ok(RedriveReport { snapshot, movement: Some(movement), waited, history })
}

/// Records each moved version's redrive in its PO's history; the redrive stands whatever becomes of that.
async fn record_redrives(clients: &Clients, table: &str, moved: &[ParkedWebhook], at: DateTime<Utc>) -> String {
    let history = crate::history::writer(clients, table);
    let mut failures = Vec::new();
    for webhook in moved {
        let attempt = Attempt {
            sqs_message_id: Some(webhook.message_id.clone()),
            ..Attempt::new(webhook.po_id, &webhook.po_number, webhook.version, at, AttemptOutcome::Redriven)
        }
        .with_detail(Some("moved from the parked queue back to the webhook queue by po-sync-admin redrive"));
        if let Err(e) = history.record(&attempt).await {
            failures.push(format!("PO {} version {}: {e}", webhook.po_id, webhook.version));
        }
    }
    match failures.first() {
        None => format!("recorded {} redrive(s)", moved.len()),
        Some(first) => format!("{} of {} redrive(s) not recorded (first: {first})", failures.len(), moved.len()),
    }
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Applied { outcome } => write!(f, "applied ({outcome})"),
            Fate::Superseded { by_version } => {
                write!(f, "superseded by the version from {}", version_time(*by_version))
            }
            Fate::Pending { reason } => write!(f, "pending: {reason}"),
        }
    }
}

impl fmt::Display for RedriveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.snapshot;
        let pos: HashSet<u64> = s.webhooks.iter().map(|w| w.po_id).collect();
        writeln!(f, "parked: {} webhook(s) of {} PO(s)", s.webhooks.len(), pos.len())?;
        if s.not_seen > 0 {
            writeln!(
                f,
                "  {} more parked message(s) were not visible to look at (a FIFO queue shows the first messages of \
                 each PO at a time, or someone else is receiving them)",
                s.not_seen
            )?;
        }
        if !s.unreadable.is_empty() {
            writeln!(f, "  {} unreadable message(s), not webhooks this build can read:", s.unreadable.len())?;
            for u in &s.unreadable {
                writeln!(f, "    {}: {}", u.message_id, u.reason)?;
            }
        }
        let Some(movement) = &self.movement else {
            return writeln!(f, "nothing to redrive");
        };
        let method = match movement.method {
            Method::MoveTask => "the SQS move task",
            _ => "copy",
        };
        let of = movement.to_move.map_or_else(|| "?".to_owned(), |n| n.to_string());
        writeln!(f, "moved {} of {of} with {method}: {}", movement.moved, movement.why)?;
        if let Some(problem) = &movement.problem {
            writeln!(f, "  NOT COMPLETE: {problem}")?;
        }
        if movement.method == Method::Copy && !s.unreadable.is_empty() {
            writeln!(f, "  the unreadable message(s) stay parked (hidden for up to a minute after being looked at)")?;
        }
        if let Some(history) = &self.history {
            writeln!(f, "history: {history}")?;
        }
        let Some(waited) = &self.waited else {
            return Ok(());
        };
        let count = |p: fn(&Fate) -> bool| waited.fates.iter().filter(|v| p(&v.fate)).count();
        writeln!(
            f,
            "reconcile: {} applied, {} superseded, {} pending{}",
            count(|x| matches!(x, Fate::Applied { .. })),
            count(|x| matches!(x, Fate::Superseded { .. })),
            count(|x| matches!(x, Fate::Pending { .. })),
            if waited.timed_out {
                format!(
                    " (stopped waiting after the timeout; {} message(s) on the webhook queue)",
                    waited.left_on_webhook_queue
                )
            } else {
                String::new()
            }
        )?;
        for v in &waited.fates {
            writeln!(f, "  PO {} (id {}) version from {}: {}", v.po_number, v.po_id, version_time(v.version), v.fate)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use po_sync::ledger::{Claim, SettledVersion};

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, second).unwrap()
    }

    fn entry(latest: Option<u32>, claim: Option<(u32, u32)>) -> LedgerEntry {
        LedgerEntry {
            po_id: "7".into(),
            po_number: "P7".into(),
            revision: 2,
            latest: latest.map(|s| SettledVersion {
                version: at(s).timestamp_millis(),
                sequence: None,
                received_at: at(s),
                body_sha256: "b".into(),
                sqs_message_id: "m".into(),
                outcome: LedgerOutcome::Held,
                settled_at: at(s),
            }),
            holds: None,
            claim: claim.map(|(s, until)| Claim {
                version: at(s).timestamp_millis(),
                sequence: None,
                body_sha256: "c".into(),
                sqs_message_id: "n".into(),
                until: at(until),
            }),
            notified: None,
            cancelled: None,
            updated_at: at(0),
        }
    }

    #[test]
    fn a_version_is_applied_superseded_or_pending_by_the_ledger() {
        let v = |s| at(s).timestamp_millis();
        assert_eq!(fate(Some(&entry(Some(5), None)), v(5), at(50)), Fate::Applied { outcome: LedgerOutcome::Held });
        // A newer version supersedes once it reached AppZen; a held one does not (the older one is still due).
        let mut upserted = entry(Some(5), None);
        upserted.latest.as_mut().unwrap().outcome = LedgerOutcome::Upserted;
        assert_eq!(fate(Some(&upserted), v(3), at(50)), Fate::Superseded { by_version: v(5) });
        assert!(matches!(fate(Some(&entry(Some(5), None)), v(3), at(50)), Fate::Pending { .. }));
        // AppZen holds the older version while a newer one was held: the older one was applied.
        let mut holds_older = entry(Some(5), None);
        holds_older.holds = Some(po_sync::ledger::DestinationHolds {
            version: v(3),
            sequence: None,
            body_sha256: "a".into(),
            uuid: None,
            status: None,
            http_status: 200,
            upserted_at: at(6),
        });
        assert_eq!(fate(Some(&holds_older), v(3), at(50)), Fate::Applied { outcome: LedgerOutcome::Upserted });
        assert_eq!(fate(Some(&holds_older), v(2), at(50)), Fate::Superseded { by_version: v(5) });
        assert!(matches!(fate(Some(&entry(Some(5), None)), v(7), at(50)), Fate::Pending { .. }));
        assert!(matches!(fate(None, v(7), at(50)), Fate::Pending { .. }));
        // A live claim of a newer version supersedes; an expired one says nothing.
        assert_eq!(fate(Some(&entry(Some(1), Some((9, 40)))), v(7), at(30)), Fate::Superseded { by_version: v(9) });
        assert!(matches!(fate(Some(&entry(Some(1), Some((9, 40)))), v(7), at(45)), Fate::Pending { .. }));
        let Fate::Pending { reason } = fate(Some(&entry(None, Some((7, 40)))), v(7), at(30)) else { panic!() };
        assert!(reason.starts_with("being processed"), "{reason}");
    }

    #[test]
    fn a_copy_keeps_the_parked_deduplication_id_unless_this_run_already_used_it() {
        let body = br#"{"id": 7, "poNumber": "P7", "total": 0, "vendorInvoices": []}"#;
        let po = po_sync::komet::parse_webhook(body).unwrap();
        let a1 = ParkedIdentity::of_envelope(&WebhookEnvelope::new(po.clone(), body, at(1)).with_send_id("send-1"));
        let a3 = ParkedIdentity::of_envelope(&WebhookEnvelope::new(po, body, at(3)).with_send_id("send-3"));
        let mut used = HashSet::new();
        assert_eq!(copy_deduplication_id(Some("dead-letter-1"), &a1, &mut used), "dead-letter-1");
        assert_eq!(copy_deduplication_id(Some("dead-letter-2"), &a3, &mut used), "dead-letter-2");
        // An older notify parked both versions of one body under its digest.
        let mut used = HashSet::new();
        let digest = po_sync::message::sha256_hex(body);
        assert_eq!(copy_deduplication_id(Some(&digest), &a1, &mut used), digest);
        assert_eq!(copy_deduplication_id(Some(&digest), &a3, &mut used), "send-3");
        assert_eq!(copy_deduplication_id(None, &a1, &mut HashSet::new()), "send-1");
    }

    #[test]
    fn an_endpoint_without_the_move_task_is_recognised() {
        // moto 5.2.5: HTTP 500, an HTML page, no error code.
        assert!(unsupported_reason(Some(500), None).unwrap().contains("HTTP 500 with no AWS error code"));
        assert!(unsupported_reason(Some(400), Some("InvalidAction")).is_some());
        assert!(unsupported_reason(Some(400), Some("AWS.SimpleQueueService.UnsupportedOperation")).is_some());
        assert!(unsupported_reason(Some(501), None).is_some());
        // AWS's own failures are not "unsupported": they are reported.
        assert!(unsupported_reason(Some(500), Some("InternalError")).is_none());
        assert!(unsupported_reason(Some(400), Some("InvalidParameterValue")).is_none());
        assert!(unsupported_reason(Some(403), Some("AccessDenied")).is_none());
        assert!(unsupported_reason(None, None).is_none());
    }
}
