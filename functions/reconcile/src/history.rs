//! The PO's history: one record per attempt reconcile makes (`po_sync::history`), written beside the ledger
//! once the record's outcome is known. Observability, not state: a history that cannot be written is logged
//! and never changes what becomes of the record.

use crate::{Outcome, Reconciler, RecordReport};
use chrono::{DateTime, Utc};
use po_sync::destination::Destination;
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::message::{NotificationKind, WebhookEnvelope};
use po_sync_aws::ledger::Ledger;
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::queue::{FifoQueue, Redelivery};
use std::time::Duration;

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// Records the attempt `report` tells of, if it is one (a record not started, or without a PO, is not).
    pub(crate) async fn record_attempt(&self, report: &RecordReport, envelope: &WebhookEnvelope, latency: Duration) {
        let destination = self.sender.destination();
        let Some(attempt) = attempt_of(report, envelope, destination, latency, Utc::now()) else { return };
        if let Err(error) = self.ledger.record(&attempt).await {
            tracing::warn!(po_id = attempt.po_id, error = %error, "the PO's history could not be written; the record is not affected");
        }
    }
}

/// The history record of one processed record: pure, so every outcome's record is tested without AWS.
pub fn attempt_of(
    report: &RecordReport,
    envelope: &WebhookEnvelope,
    destination: Destination,
    latency: Duration,
    now: DateTime<Utc>,
) -> Option<Attempt> {
    let outcome = match &report.outcome {
        Outcome::Upserted(_) => AttemptOutcome::Upserted,
        Outcome::Rejected(_) | Outcome::ExsitedRejected { .. } => AttemptOutcome::Rejected,
        Outcome::Cancelled { .. } | Outcome::CancelledByOperator { .. } => AttemptOutcome::Held,
        Outcome::Held if report.notified.contains(&NotificationKind::MappingError) => AttemptOutcome::Unmappable,
        Outcome::Held => AttemptOutcome::Held,
        Outcome::Superseded { .. } => AttemptOutcome::Superseded,
        Outcome::Duplicate => AttemptOutcome::Duplicate,
        Outcome::AppZenUnavailable { .. }
        | Outcome::ExsitedUnavailable(_)
        | Outcome::LedgerBusy { .. }
        | Outcome::LedgerUnavailable(_)
        | Outcome::NotifyFailed(_) => AttemptOutcome::Retried,
        Outcome::Poison | Outcome::BodyUnavailable { .. } | Outcome::NotAttempted => return None,
    };
    let detail = match &report.outcome {
        Outcome::Upserted(accepted) => {
            accepted.status.as_ref().map(|status| format!("{}: {status}", destination.label()))
        }
        other => other.detail(),
    };
    let attempt = Attempt {
        sqs_message_id: Some(report.message_id.clone()),
        http_status: report.outcome.http_status(),
        latency_ms: Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)),
        requests: report.attempts,
        destination: destination.as_str().to_owned(),
        ..Attempt::new(envelope.po.id, &envelope.po.po_number, envelope.version(), now, outcome)
    };
    Some(attempt.with_detail(detail.as_deref()).with_correlation_id(report.outcome.correlation_id()))
}
