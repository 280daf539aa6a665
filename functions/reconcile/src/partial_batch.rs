//! A batch: split by message group, each group in order, groups at once; what comes back, and when.

use crate::{Fate, Outcome, Reconciler, RecordReport};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use po_sync::batch::{self, Handled};
use po_sync_aws::exsited::ExsitedError;
use po_sync_aws::ledger::Ledger;
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::queue::{FifoQueue, Postponed, Redelivery};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// Handles an SQS batch: each message group (PO) in order, different groups at once (`GROUP_CONCURRENCY`).
    /// At a group's first record that must be retried, that record and the group's later records are handed
    /// back (the later ones unstarted); the other groups' records are processed and consumed. A handed-back
    /// record waits by the retry schedule, its later group-mates come back at once behind it (SQS hands out
    /// none of a group while its first is waiting).
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Option<SystemTime>) -> SqsBatchResponse {
        let deadline = deadline.map(|at| Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default());
        let deliveries: Vec<Delivery> = event.records.iter().map(Delivery::of).collect();
        // By value: each record's body (a whole PO as JSON) is freed as soon as it is parsed.
        let records = event.records.into_iter().zip(&deliveries).map(|(r, d)| (d.group.clone(), r)).collect();
        let handled = batch::by_group(
            records,
            self.config.batch.group_concurrency,
            |record| self.process_in_batch(record, deadline),
            |report: &RecordReport| report.outcome.fate() == Fate::Retry,
        )
        .await;
        let mut failures = Vec::new();
        let mut postponed = Vec::new();
        for (delivery, handled) in deliveries.iter().zip(&handled) {
            let delay = match handled {
                Handled::Processed(report) if report.outcome.fate() == Fate::Consumed => continue,
                Handled::Processed(report) => self.retry_delay(&report.outcome, delivery.receive_count),
                Handled::Skipped => {
                    tracing::warn!(
                        message_id = %delivery.message_id,
                        group = %delivery.group,
                        "handed back unstarted behind an earlier record of its PO, so no update overtakes an earlier one"
                    );
                    Duration::ZERO
                }
            };
            // A record without a message id cannot be named; an empty identifier makes Lambda retry the whole
            // batch, which is the safe reading.
            failures.push(delivery.message_id.as_str());
            if let Some(receipt_handle) = &delivery.receipt_handle {
                postponed.push(Postponed {
                    message_id: delivery.message_id.clone(),
                    receipt_handle: receipt_handle.clone(),
                    delay,
                });
            }
        }
        po_sync_aws::metrics::records_retried(failures.len());
        if let (Some(redelivery), false) = (&self.redelivery, postponed.is_empty())
            && let Err(error) = redelivery.postpone(&postponed).await
        {
            tracing::warn!(error = %error, records = postponed.len(), "could not set when the handed-back records come back; they come back after the queue's visibility timeout");
        }
        let mut response = SqsBatchResponse::default();
        response.set_failures(failures);
        response
    }

    /// How long a handed-back record waits: by the schedule for its receive count, never less than the
    /// destination's `Retry-After` (AppZen's, or Exsited's, e.g. with a 429 or 503; at most SQS's longest visibility
    /// timeout); at once when it was not attempted (the invocation ran out of time before it).
    fn retry_delay(&self, outcome: &Outcome, receive_count: u32) -> Duration {
        let scheduled = self.config.batch.retry_schedule.delay(receive_count);
        let asked = match outcome {
            Outcome::NotAttempted => return Duration::ZERO,
            Outcome::AppZenUnavailable { last, .. } => last.retry_after,
            Outcome::ExsitedUnavailable(ExsitedError::Refused { retry_after, .. }) => *retry_after,
            _ => None,
        };
        asked.map_or(scheduled, |asked| asked.max(scheduled).min(po_sync::retry::MAX_VISIBILITY))
    }

    /// A record of the batch: processed, unless the invocation has no time left for it.
    async fn process_in_batch(&self, record: SqsMessage, deadline: Option<Instant>) -> RecordReport {
        let out_of_time =
            deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) <= self.config.deadline_margin());
        if out_of_time {
            return RecordReport::not_attempted(record.message_id.as_deref().unwrap_or_default());
        }
        self.process_owned(record, deadline).await
    }
}

/// What the batch needs of a record once its body is gone.
struct Delivery {
    message_id: String,
    receipt_handle: Option<String>,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    receive_count: u32,
    /// `MessageGroupId` (the PO id, as ingest sends it).
    group: String,
}

impl Delivery {
    fn of(record: &SqsMessage) -> Self {
        let attribute = |name: &str| record.attributes.get(name).map(String::as_str);
        Delivery {
            message_id: record.message_id.clone().unwrap_or_default(),
            receipt_handle: record.receipt_handle.clone(),
            receive_count: attribute("ApproximateReceiveCount").and_then(|n| n.trim().parse().ok()).unwrap_or(1),
            group: batch::group_key(attribute("MessageGroupId")).to_owned(),
        }
    }
}
