//! The version ledger around a record: claim before the work, settle or release after, races decided again.

use crate::{Outcome, Reconciler};
use po_sync::ledger::{self, Arrival, LedgerEntry, Settlement, Verdict};
use po_sync_aws::ledger::{Ledger, Written};
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::port::{Failure, PortError};
use po_sync_aws::queue::{FifoQueue, Redelivery};
use std::time::Duration;
use tokio::time::Instant;

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// Reads the ledger and decides; on a lost race, reads again and decides again.
    pub(crate) async fn admit(&self, arrival: &Arrival<'_>, deadline: Option<Instant>) -> Admission {
        let lease = claim_lease(deadline);
        for _round in 0..LEDGER_RACE_ROUNDS {
            let current = match self.ledger.read(arrival.po_id).await {
                Ok(current) => current,
                Err(error) => return Admission::Done(Outcome::LedgerUnavailable(error)),
            };
            let (write, done) = match ledger::judge(current.as_ref(), arrival, chrono::Utc::now(), lease) {
                Verdict::Superseded { newer_version } => return Admission::Done(Outcome::Superseded { newer_version }),
                Verdict::Busy { claimed_by, .. } => return Admission::Done(Outcome::LedgerBusy { claimed_by }),
                Verdict::Duplicate { record: None } => return Admission::Done(Outcome::Duplicate),
                Verdict::Duplicate { record: Some(record) } => (record, Some(Outcome::Duplicate)),
                Verdict::Proceed { claim } => (claim, None),
            };
            match self.ledger.write(&write).await {
                Ok(Written::Stored) => {
                    return done.map_or_else(|| Admission::Claimed(Box::new(write)), Admission::Done);
                }
                Ok(Written::Conflict) => continue,
                Err(error) => return Admission::Done(Outcome::LedgerUnavailable(error)),
            }
        }
        Admission::Done(Outcome::LedgerBusy { claimed_by: "(a writer that kept winning the race)".to_owned() })
    }

    /// Records the final outcome of a claimed version. A claim that was taken over (its lease ran out, so this
    /// invocation was far slower than its own deadline) is logged, not forced.
    pub(crate) async fn settle(
        &self,
        mut current: LedgerEntry,
        arrival: &Arrival<'_>,
        settlement: &Settlement,
    ) -> Result<(), PortError> {
        for _round in 0..LEDGER_RACE_ROUNDS {
            let Some(settled) = ledger::settle(&current, arrival, settlement, chrono::Utc::now()) else {
                tracing::error!(
                    version = arrival.version(),
                    "the claim on this PO was taken over before it was settled; the newer claim decides"
                );
                return Ok(());
            };
            match self.ledger.write(&settled).await? {
                Written::Stored => return Ok(()),
                Written::Conflict => {
                    current = self.ledger.read(arrival.po_id).await?.ok_or_else(|| {
                        PortError::new("dynamodb:GetItem", Failure::Permanent, "the ledger item disappeared")
                    })?;
                }
            }
        }
        Err(PortError::new("dynamodb:PutItem", Failure::Transient, "kept losing the race to settle the claim"))
    }

    /// Notes in the ledger that a notification of `kind` was queued for the claimed version; `claim` follows
    /// what was written. Best effort: without the note, a redelivery more than five minutes later queues the
    /// notification again (the one duplicate e-mail this can cost), so a failure is logged, not fatal.
    pub(crate) async fn note_notified(&self, claim: &mut LedgerEntry, arrival: &Arrival<'_>, kind: &str) {
        for _round in 0..LEDGER_RACE_ROUNDS {
            let Some(noted) = ledger::note_notified(claim, arrival, kind, chrono::Utc::now()) else { return };
            match self.ledger.write(&noted).await {
                Ok(Written::Stored) => {
                    *claim = noted;
                    return;
                }
                Ok(Written::Conflict) => match self.ledger.read(arrival.po_id).await {
                    Ok(Some(current)) => *claim = current,
                    _ => break,
                },
                Err(_) => break,
            }
        }
        tracing::warn!(kind, "the notification is queued but could not be noted in the ledger");
    }

    /// Gives a claim back after a transient failure, so the ledger is as it was. Best effort: an unreleased
    /// claim expires by itself, and its own redelivery may take it again at once.
    pub(crate) async fn release(&self, claim: LedgerEntry, arrival: &Arrival<'_>) {
        if let Some(released) = ledger::release(&claim, arrival, chrono::Utc::now())
            && let Err(error) = self.ledger.write(&released).await
        {
            tracing::warn!(error = %error, "the claim could not be released; it expires by itself");
        }
    }
}

/// What the ledger said about a record before any work on it.
pub(crate) enum Admission {
    /// Ours to process; the claim as written (boxed: an entry is much larger than an outcome).
    Claimed(Box<LedgerEntry>),
    Done(Outcome),
}

/// How long a claim lasts: past the invocation's deadline, so a live invocation never loses its claim.
fn claim_lease(deadline: Option<Instant>) -> chrono::Duration {
    let remaining = deadline.map_or(LAMBDA_MAX_RUNTIME, |d| d.saturating_duration_since(Instant::now()));
    chrono::Duration::from_std(remaining + CLAIM_MARGIN).unwrap_or(chrono::Duration::minutes(16))
}

/// How many times a ledger write that lost a race is decided again before the record is handed back.
pub(crate) const LEDGER_RACE_ROUNDS: usize = 5;

/// How long a claim outlives its invocation's deadline (or, without a deadline, Lambda's 15-minute maximum).
const CLAIM_MARGIN: Duration = Duration::from_secs(60);

const LAMBDA_MAX_RUNTIME: Duration = Duration::from_secs(15 * 60);
