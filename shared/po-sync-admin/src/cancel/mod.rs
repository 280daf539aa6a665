//! `cancel <id> [--reason TEXT]` and `reactivate <id>`: an operator cancels a PO at every destination the stack
//! has, each recorded in that destination's ledger item (`po_sync::ledger::Cancellation`). While it is
//! recorded, reconcile holds every newer version Komet sends instead of sending it, and mails
//! `cancelled_at_destination` once per version.
//!
//! - **Exsited**: the PO the ledger names (Exsited's id, kept once a version created it) is cancelled in Exsited
//!   (`POST …/{id}/cancel`, `…/reactivate`), with the settings and credentials of Exsited's reconcile function
//!   and the token it shares through the ledger table; the ledger records it only once Exsited has done it.
//!   With no id yet, the cancellation is recorded and nothing is sent: the first version to arrive is held, not
//!   created.
//! - **AppZen**: its API keeps a cancellation per line of its one upsert (`cancel_flag`, `cancel_date`,
//!   `cancel_reason`). The cancellation is recorded first, so reconcile sends AppZen no newer version from then
//!   on; then the version the ledger says AppZen holds is sent again with every line cancelled (see
//!   [`appzen`]), and the record names AppZen as told. If AppZen cannot be told, the record stays and says so, and
//!   running `cancel` again tells it.
//!
//! `reactivate` reactivates the PO at the destination (Exsited's endpoint; for AppZen, the version it holds sent
//! again with `cancel_flag: false` on every line), then clears the cancellation; it sends no newer version: one
//! held meanwhile is sent by `replay --po <id> --latest`, which the report names.
//!
//! A destination the stack does not have (no `ReconcileFunctionName` / `ReconcileExsitedFunctionName` output,
//! nor flag) is skipped; one that fails does not stop the other, and makes the exit code 1.

use crate::Clients;
use crate::error::Error;
use crate::po::version_time;
use crate::readback::reconcile_config_of;
use crate::resources::{Resource, Resources};
use chrono::{DateTime, SecondsFormat, Utc};
use po_sync::config::reconcile::{DestinationConfig, ExsitedDestinationConfig};
use po_sync::destination::Destination;
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::ledger::{self, Cancellation, LedgerEntry};
use po_sync_aws::exsited::token::DynamoTokenStore;
use po_sync_aws::exsited::{ExsitedClient, PURCHASE_ORDERS_PATH};
use po_sync_aws::ledger::{DynamoHistory, DynamoLedger, Ledger, Written};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

mod appzen;

/// The longest `--reason`: it goes into the ledger, the e-mail and a history record (whose details are cut at
/// 300 characters), so it stays a short line.
pub const MAX_REASON_CHARS: usize = 200;

/// How many times a ledger write that lost a race with reconcile is derived again from what was read.
const RACE_ROUNDS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Cancel,
    Reactivate,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Reactivate => "reactivate",
        }
    }
}

/// `--reason`: one line of at most [`MAX_REASON_CHARS`] characters.
pub fn parse_reason(text: &str) -> Result<String, String> {
    let line = po_sync::text::one_line(text, usize::MAX);
    match line.chars().count() {
        0 => Err("the reason is empty: give a few words, or leave --reason out".to_owned()),
        n if n > MAX_REASON_CHARS => {
            Err(format!("the reason is {n} characters long; keep it to {MAX_REASON_CHARS} (it is kept in the ledger)"))
        }
        _ => Ok(line),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReport {
    pub po_id: u64,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One per destination po-sync has (AppZen, then Exsited), each as it came out.
    pub destinations: Vec<DestinationReport>,
}

impl CancelReport {
    /// No destination failed (skipped and unchanged ones are fine).
    pub fn is_success(&self) -> bool {
        self.destinations.iter().all(|d| d.state != State::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Sent (where there is something to send) and recorded.
    Done,
    /// Already as asked (cancelled, or not cancelled): nothing sent or recorded.
    Unchanged,
    /// The stack has no such destination.
    Skipped,
    /// Refused by the destination, or the ledger could not be read or written: see `ledger` for what stands.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationReport {
    pub destination: Destination,
    pub state: State,
    /// The reconcile function whose settings were used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The ledger item acted on (`48213`, `exsited#48213`).
    pub ledger_item: String,
    /// The destination's id of the PO, when the ledger knows it (Exsited's `PO-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
    /// The request made to the destination (`POST /api/v3/purchase-orders/PO-1/cancel`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// What was sent to the destination, in words.
    pub sent: String,
    /// Whether the ledger item was written.
    pub recorded: bool,
    /// What the ledger records now, in words.
    pub ledger: String,
    /// The history record of the action: `recorded`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// What is left for the operator to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl DestinationReport {
    fn new(destination: Destination, function: Option<&str>, po_id: u64) -> Self {
        DestinationReport {
            destination,
            state: State::Failed,
            function: function.map(str::to_owned),
            ledger_item: destination.ledger_key(po_id),
            destination_id: None,
            request: None,
            sent: "nothing".to_owned(),
            recorded: false,
            ledger: "unchanged".to_owned(),
            history: None,
            next: None,
        }
    }

    fn failed(mut self, sent: Option<String>, ledger: String) -> Self {
        self.state = State::Failed;
        if let Some(sent) = sent {
            self.sent = sent;
        }
        self.ledger = ledger;
        self
    }
}

/// Cancels (or reactivates) PO `po_id` at every destination `resources` names a reconcile function for.
/// `unread_stack` says why the stack could not be read, when it could not (the flags then name the destinations).
pub async fn cancel_or_reactivate(
    clients: &Clients,
    resources: &Resources,
    unread_stack: Option<&str>,
    po_id: u64,
    action: Action,
    reason: Option<&str>,
) -> Result<CancelReport, Error> {
    let table = resources.require(Resource::LedgerTable)?;
    let functions = [
        (Destination::Appzen, Resource::ReconcileFunction),
        (Destination::Exsited, Resource::ReconcileExsitedFunction),
    ];
    if functions.iter().all(|(_, resource)| !resources.has(*resource)) {
        return Err(Error::Usage(format!(
            "no destination is known, so nothing was {}: pass --reconcile-function (AppZen's) and/or \
             --reconcile-exsited-function (Exsited's), or --stack NAME of a stack with the output \
             ReconcileFunctionName or ReconcileExsitedFunctionName{}",
            match action {
                Action::Cancel => "cancelled",
                Action::Reactivate => "reactivated",
            },
            unread_stack.map(|why| format!(" ({why})")).unwrap_or_default()
        )));
    }
    let history = resources.get(Resource::HistoryTable).map(|table| crate::history::writer(clients, table));
    let mut destinations = Vec::new();
    for (destination, resource) in functions {
        let function = resources.get(resource).filter(|_| resources.has(resource));
        let report = match function {
            None => {
                let mut skipped = DestinationReport::new(destination, None, po_id);
                skipped.state = State::Skipped;
                skipped.sent = format!(
                    "nothing: this stack has no {} (no output {}, and {} was not given{})",
                    destination.label(),
                    resource.output_key(),
                    resource.flag(),
                    unread_stack.map(|why| format!("; {why}")).unwrap_or_default()
                );
                skipped
            }
            Some(function) => {
                let ledger = DynamoLedger::new(clients.dynamodb.clone(), table).for_destination(destination);
                let archive = resources.get(Resource::ArchiveBucket);
                let at = DestinationAt {
                    clients,
                    ledger: &ledger,
                    table,
                    history: history.as_ref(),
                    function,
                    archive,
                    po_id,
                };
                let report = DestinationReport::new(destination, Some(function), po_id);
                at.act(report, po_id, action, reason).await
            }
        };
        destinations.push(report);
    }
    Ok(CancelReport { po_id, action, reason: reason.map(str::to_owned), destinations })
}

/// One destination, as the CLI reaches it.
struct DestinationAt<'a> {
    clients: &'a Clients,
    ledger: &'a DynamoLedger,
    table: &'a str,
    history: Option<&'a DynamoHistory>,
    function: &'a str,
    /// The bucket of kept webhook bodies, from which AppZen's version is rebuilt.
    archive: Option<&'a str>,
    po_id: u64,
}

/// What the destination was asked, and what it said.
enum Asked {
    Nothing,
    Done { request: String, id: String },
}

impl DestinationAt<'_> {
    async fn act(
        &self,
        report: DestinationReport,
        po_id: u64,
        action: Action,
        reason: Option<&str>,
    ) -> DestinationReport {
        let destination = report.destination;
        let not_recorded = "nothing recorded".to_owned();
        // Exsited's settings first: a function that is not Exsited's, or reads another ledger, would make the
        // record one reconcile never reads.
        let exsited = match destination {
            Destination::Exsited => match self.exsited_settings().await {
                Ok(settings) => Some(settings),
                Err(why) => return report.failed(Some(format!("nothing: {why}")), not_recorded),
            },
            Destination::Appzen => None,
        };
        let current = match self.ledger.read(po_id).await {
            Ok(current) => current,
            Err(e) => {
                let why = format!("nothing: ledger item {} could not be read ({e})", report.ledger_item);
                return report.failed(Some(why), not_recorded);
            }
        };
        let now = Utc::now();
        // A version on its way to the destination (an Exsited create whose id the ledger does not know yet)
        // would cross the cancellation: wait for it.
        if let Some(claim) = current.as_ref().and_then(|entry| ledger::live_claim(entry, now)) {
            let why = format!(
                "nothing: a version of this PO is being processed right now (SQS message {}, its claim lasts until \
                 {}); run po-sync-admin {} again after that",
                claim.sqs_message_id,
                claim.until.to_rfc3339_opts(SecondsFormat::Secs, true),
                action.verb()
            );
            return report.failed(Some(why), not_recorded);
        }
        match (action, exsited) {
            (Action::Cancel, Some(exsited)) => self.cancel(report, po_id, current, exsited, reason, now).await,
            (Action::Reactivate, Some(exsited)) => self.reactivate(report, po_id, current, exsited, now).await,
            (Action::Cancel, None) => self.cancel_appzen(report, po_id, current, reason, now).await,
            (Action::Reactivate, None) => self.reactivate_appzen(report, po_id, current, now).await,
        }
    }

    /// Exsited: the PO cancelled in Exsited, then recorded.
    async fn cancel(
        &self,
        mut report: DestinationReport,
        po_id: u64,
        current: Option<LedgerEntry>,
        settings: ExsitedDestinationConfig,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> DestinationReport {
        let destination = report.destination;
        // Exsited's id of the PO, once a version created it there.
        let target = current.as_ref().and_then(|e| e.holds.as_ref()).and_then(|h| h.uuid.clone());
        report.destination_id = target.clone();
        if let Some(existing) = current.as_ref().and_then(|e| e.cancelled.as_ref())
            && existing.destination_id == target
        {
            report.state = State::Unchanged;
            report.sent = "nothing: already cancelled".to_owned();
            report.ledger = format!("cancelled {}", describe(existing));
            return report;
        }
        let asked = match &target {
            Some(id) => match self.ask_exsited(&settings, id, Action::Cancel).await {
                Ok(asked) => asked,
                Err(why) => {
                    let ledger = "not recorded: po-sync still sends Exsited newer versions of this PO".to_owned();
                    return report.failed(Some(why), ledger);
                }
            },
            None => Asked::Nothing,
        };
        report.sent = match &asked {
            Asked::Done { id, .. } => format!("Exsited cancelled {id} (it holds it INACTIVE)"),
            Asked::Nothing => {
                "nothing: no version of this PO has reached Exsited yet (the ledger holds no Exsited id)".to_owned()
            }
        };
        if let Asked::Done { request, .. } = &asked {
            report.request = Some(request.clone());
        }
        let cancellation = Cancellation { at: now, reason: reason.map(str::to_owned), destination_id: target.clone() };
        let derive = |entry: Option<&LedgerEntry>| Some(ledger::cancelled(entry, po_id, cancellation.clone(), now));
        let written = match self.write_derived(po_id, current, derive).await {
            Ok(written) => written,
            Err(why) => {
                let ledger = match asked {
                    Asked::Done { .. } => format!(
                        "not recorded ({why}): Exsited holds the PO cancelled, but po-sync would still send it newer \
                         versions; run po-sync-admin cancel {po_id} again (cancelling again is harmless)"
                    ),
                    Asked::Nothing => format!("not recorded ({why}): run po-sync-admin cancel {po_id} again"),
                };
                return report.failed(None, ledger);
            }
        };
        report.state = State::Done;
        report.recorded = true;
        report.ledger = match &target {
            Some(_) => format!(
                "cancelled: newer versions are held, not sent to Exsited, until po-sync-admin reactivate {po_id}"
            ),
            None => format!(
                "cancelled: the first version to arrive is held, not created in Exsited, until po-sync-admin \
                 reactivate {po_id}"
            ),
        };
        let detail = match &target {
            Some(id) => format!("cancelled by po-sync-admin: Exsited's {id} cancelled in Exsited"),
            None => "cancelled by po-sync-admin before any version reached Exsited".to_owned(),
        };
        let detail = with_reason(detail, reason);
        let requests = u32::from(matches!(asked, Asked::Done { .. }));
        report.history = self.record(&written, destination, AttemptOutcome::Cancelled, &detail, requests, now).await;
        report
    }

    /// Exsited: the PO reactivated in Exsited, then the cancellation cleared.
    async fn reactivate(
        &self,
        mut report: DestinationReport,
        po_id: u64,
        current: Option<LedgerEntry>,
        settings: ExsitedDestinationConfig,
        now: DateTime<Utc>,
    ) -> DestinationReport {
        let destination = report.destination;
        let cancellation = current.as_ref().and_then(|e| e.cancelled.clone());
        // The PO cancelled in Exsited, or else the one Exsited holds: it may have been cancelled in Exsited itself
        // (reconcile then holds its versions as INACTIVE), and reactivating an active PO changes nothing.
        let held_id = current.as_ref().and_then(|e| e.holds.as_ref()).and_then(|h| h.uuid.clone());
        let target = cancellation.as_ref().and_then(|c| c.destination_id.clone()).or(held_id);
        report.destination_id = target.clone();
        let asked = match &target {
            Some(id) => match self.ask_exsited(&settings, id, Action::Reactivate).await {
                Ok(asked) => asked,
                Err(why) => {
                    let ledger = match &cancellation {
                        Some(_) => "not changed: the cancellation stays recorded, so newer versions are still held",
                        None => "not changed (it records no cancellation)",
                    };
                    return report.failed(Some(why), ledger.to_owned());
                }
            },
            None => Asked::Nothing,
        };
        report.sent = match &asked {
            Asked::Done { id, .. } => format!("Exsited reactivated {id}"),
            Asked::Nothing => {
                "nothing: no version of this PO has reached Exsited (the ledger holds no Exsited id)".to_owned()
            }
        };
        if let Asked::Done { request, .. } = &asked {
            report.request = Some(request.clone());
        }
        let Some(cancellation) = cancellation else {
            report.ledger = "records no cancellation: nothing to clear".to_owned();
            report.state = match asked {
                Asked::Done { .. } => State::Done,
                Asked::Nothing => State::Unchanged,
            };
            if let (Asked::Done { .. }, Some(entry)) = (&asked, &current) {
                let detail = "reactivated in Exsited by po-sync-admin (po-sync had recorded no cancellation)";
                report.history = self.record(entry, destination, AttemptOutcome::Reactivated, detail, 1, now).await;
            }
            return report;
        };
        let detail = match &asked {
            Asked::Done { id, .. } => format!("reactivated by po-sync-admin: Exsited's {id} reactivated in Exsited"),
            Asked::Nothing => "reactivated by po-sync-admin: po-sync's cancellation cleared".to_owned(),
        };
        let requests = u32::from(matches!(asked, Asked::Done { .. }));
        self.clear_cancellation(report, po_id, current, &cancellation, &detail, requests, now).await
    }

    /// Clears the recorded `cancellation` (the destination was told, when it had to be), records it in the PO's
    /// history with `detail`, and reports it with what is left to do.
    #[allow(clippy::too_many_arguments)]
    async fn clear_cancellation(
        &self,
        mut report: DestinationReport,
        po_id: u64,
        current: Option<LedgerEntry>,
        cancellation: &Cancellation,
        detail: &str,
        requests: u32,
        now: DateTime<Utc>,
    ) -> DestinationReport {
        let destination = report.destination;
        let derive = |entry: Option<&LedgerEntry>| entry.and_then(|entry| ledger::reactivated(entry, now));
        let written = match self.write_derived(po_id, current, derive).await {
            Ok(written) => written,
            Err(why) => {
                return report.failed(
                    None,
                    format!(
                        "not changed ({why}): the cancellation stays recorded, so newer versions are still held; run \
                         po-sync-admin reactivate {po_id} again"
                    ),
                );
            }
        };
        report.state = State::Done;
        report.recorded = true;
        report.ledger = format!(
            "cancellation cleared (it was made {}): the next version Komet sends goes to {}",
            describe(cancellation),
            destination.label()
        );
        report.next = Some(next_after_reactivation(destination, po_id, &written));
        report.history = self.record(&written, destination, AttemptOutcome::Reactivated, detail, requests, now).await;
        report
    }

    /// Exsited's settings from its reconcile function, checked to be Exsited's and to read this ledger.
    async fn exsited_settings(&self) -> Result<ExsitedDestinationConfig, String> {
        let function = self.function;
        let config = reconcile_config_of(self.clients, function).await.map_err(|e| e.to_string())?;
        if config.ledger_table != self.table {
            return Err(format!(
                "{function} reads ledger table {}, not {}: pass --ledger-table {}",
                config.ledger_table, self.table, config.ledger_table
            ));
        }
        match config.destination {
            DestinationConfig::Exsited(settings) => Ok(settings),
            DestinationConfig::AppZen(_) => Err(format!(
                "{function} sends to AppZen, not Exsited: name Exsited's reconcile function \
                 (--reconcile-exsited-function)"
            )),
        }
    }

    /// Asks Exsited to cancel or reactivate its PO `id`; the error says what Exsited answered.
    async fn ask_exsited(
        &self,
        settings: &ExsitedDestinationConfig,
        id: &str,
        action: Action,
    ) -> Result<Asked, String> {
        let client = ExsitedClient::from_config(settings, &self.clients.aws).await.map_err(|e| {
            format!("nothing: Exsited's client cannot be built from {}'s settings ({e})", self.function)
        })?;
        // A token of the CLI's own would end reconcile's (Exsited keeps one per credentials): share theirs.
        let client = client.with_token_store(DynamoTokenStore::new(self.clients.dynamodb.clone(), self.table));
        let request = format!("POST {PURCHASE_ORDERS_PATH}/{id}/{}", action.verb());
        let answer = match action {
            Action::Cancel => client.cancel(id).await,
            Action::Reactivate => client.reactivate(id).await,
        };
        match answer {
            Ok(()) => Ok(Asked::Done { request, id: id.to_owned() }),
            Err(e) if e.is_transient() => Err(format!("{request}: no answer Exsited stood by ({e}); try again later")),
            Err(e) => Err(format!("{request}: refused ({e})")),
        }
    }

    /// Writes the entry `derive` makes of the current one, reading again after a lost race (reconcile wrote
    /// first). `derive` returning `None` means there is nothing to write any more: the current entry stands.
    async fn write_derived(
        &self,
        po_id: u64,
        mut current: Option<LedgerEntry>,
        derive: impl Fn(Option<&LedgerEntry>) -> Option<LedgerEntry>,
    ) -> Result<LedgerEntry, String> {
        for round in 0..RACE_ROUNDS {
            let Some(entry) = derive(current.as_ref()) else {
                return current.ok_or_else(|| "the ledger item disappeared".to_owned());
            };
            match self.ledger.write(&entry).await {
                Ok(Written::Stored) => return Ok(entry),
                Ok(Written::Conflict) => {
                    // reconcile's writes take milliseconds: a short pause lets the one in progress finish.
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(round + 1))).await;
                    current = self.ledger.read(po_id).await.map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("the ledger item kept changing under {RACE_ROUNDS} tries"))
    }

    /// Records the action in the PO's history; it stands whatever becomes of the record.
    async fn record(
        &self,
        entry: &LedgerEntry,
        destination: Destination,
        outcome: AttemptOutcome,
        detail: &str,
        requests: u32,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let Some(history) = self.history else {
            return Some("not recorded (no history table known: --history-table)".to_owned());
        };
        // The version the action is recorded against: the latest po-sync knows (0: none had arrived).
        let version = entry.latest.as_ref().map(|l| l.version).or(entry.holds.as_ref().map(|h| h.version));
        let attempt = Attempt {
            destination: destination.as_str().to_owned(),
            requests,
            ..Attempt::new(self.po_id, &entry.po_number, version.unwrap_or(0), now, outcome)
        }
        .with_detail(Some(detail));
        Some(match history.record(&attempt).await {
            Ok(()) => "recorded".to_owned(),
            Err(e) => format!("not recorded ({e})"),
        })
    }
}

/// What is left to do once a PO is reactivated: send the version held meanwhile, if there is one.
fn next_after_reactivation(destination: Destination, po_id: u64, written: &LedgerEntry) -> String {
    match ledger::held_version(written) {
        Some(version) => {
            let queue = match destination {
                Destination::Appzen => String::new(),
                // `replay` queues onto AppZen's webhook queue unless told otherwise (or the stack is Exsited's only).
                Destination::Exsited => " --destination exsited".to_owned(),
            };
            format!(
                "the latest version (received {}) was held, not sent: po-sync-admin replay --po {po_id} --latest{queue} \
                 sends it",
                version_time(version)
            )
        }
        None => format!("no version is waiting: {} holds the latest one po-sync sent it", destination.label()),
    }
}

/// A history detail with the operator's reason, when there is one.
fn with_reason(detail: String, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{detail}; reason: {reason}"),
        None => detail,
    }
}

/// A cancellation in words: when, of which id, why (`at 2026-11-22T09:00:00Z (id PO-1), reason: twice`).
fn describe(cancellation: &Cancellation) -> String {
    let mut text = format!("at {}", cancellation.at.to_rfc3339_opts(SecondsFormat::Secs, true));
    if let Some(id) = &cancellation.destination_id {
        text.push_str(&format!(" (id {id})"));
    }
    if let Some(reason) = &cancellation.reason {
        text.push_str(&format!(", reason: {reason}"));
    }
    text
}

impl fmt::Display for CancelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acted = self.destinations.iter().filter(|d| d.state != State::Skipped).count();
        write!(f, "{} PO {} at {acted} destination(s)", self.action.verb(), self.po_id)?;
        match &self.reason {
            Some(reason) => writeln!(f, ", reason: {reason}")?,
            None => writeln!(f)?,
        }
        for d in &self.destinations {
            let state = match d.state {
                State::Done => "done",
                State::Unchanged => "unchanged",
                State::Skipped => "skipped",
                State::Failed => "FAILED",
            };
            writeln!(f, "  {}: {state} (ledger item {})", d.destination.label(), d.ledger_item)?;
            if let Some(request) = &d.request {
                writeln!(f, "    request   {request}")?;
            }
            writeln!(f, "    sent      {}", d.sent)?;
            if d.state != State::Skipped {
                writeln!(f, "    ledger    {}", d.ledger)?;
            }
            if let Some(history) = &d.history {
                writeln!(f, "    history   {history}")?;
            }
            if let Some(next) = &d.next {
                writeln!(f, "    next      {next}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_short_line() {
        assert_eq!(parse_reason("  ordered\ntwice ").unwrap(), "ordered twice");
        assert!(parse_reason(" \n ").unwrap_err().contains("empty"));
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert!(parse_reason(&long).unwrap_err().contains("201 characters"));
        assert!(parse_reason(&"é".repeat(MAX_REASON_CHARS)).is_ok(), "characters, not bytes");
    }

    #[test]
    fn a_failed_destination_fails_the_report_and_a_skipped_one_does_not() {
        let mut report = CancelReport {
            po_id: 7,
            action: Action::Cancel,
            reason: None,
            destinations: vec![DestinationReport::new(Destination::Appzen, Some("f"), 7)],
        };
        report.destinations[0].state = State::Done;
        let mut skipped = DestinationReport::new(Destination::Exsited, None, 7);
        skipped.state = State::Skipped;
        report.destinations.push(skipped);
        assert!(report.is_success());
        assert_eq!(report.destinations[1].ledger_item, "exsited#7");
        report.destinations[1].state = State::Failed;
        assert!(!report.is_success());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["action"].as_str(), json["destinations"][1]["state"].as_str()),
            (Some("cancel"), Some("failed"))
        );
    }
}
