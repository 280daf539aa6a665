//! One record: read it, consult the ledger, reconcile, upsert, notify, settle.

use crate::claim_check::Unresolved;
use crate::destination;
use crate::log::log_report;
use crate::outages::Sighting;
use crate::versions::Admission;
use crate::{Outcome, Reconciler, RecordReport};
use aws_lambda_events::event::sqs::SqsMessage;
use po_sync::archive::InvoiceArchive;
use po_sync::ledger::{self, Arrival, LedgerEntry, LedgerOutcome, Settlement};
use po_sync::message::{BodyRef, NotificationEvent, NotificationKind, QueueMessage, WebhookEnvelope};
use po_sync::text::log_field;
use po_sync_aws::ledger::Ledger;
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::port::PortError;
use po_sync_aws::queue::{FifoMessage, FifoQueue, Redelivery};
use tokio::time::Instant;
use tracing::Instrument;

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// Processes one record and writes its log line.
    pub async fn process(&self, record: &SqsMessage, deadline: Option<Instant>) -> RecordReport {
        let started = Instant::now();
        let message_id = record.message_id.clone().unwrap_or_default();
        let envelope = read_envelope(record.body.as_deref());
        self.process_read(message_id, Delivered::of(record), envelope, started, deadline).await
    }

    /// [`Reconciler::process`] for a record the batch hands over, so its body does not outlive parsing.
    pub(crate) async fn process_owned(&self, mut record: SqsMessage, deadline: Option<Instant>) -> RecordReport {
        let started = Instant::now();
        let message_id = record.message_id.take().unwrap_or_default();
        let delivered = Delivered::of(&record);
        let envelope = read_envelope(record.body.as_deref());
        drop(record);
        self.process_read(message_id, delivered, envelope, started, deadline).await
    }

    async fn process_read(
        &self,
        message_id: String,
        delivered: Delivered,
        received: Result<Received, String>,
        started: Instant,
        deadline: Option<Instant>,
    ) -> RecordReport {
        let envelope = match received {
            Ok(Received::Envelope(envelope)) => envelope,
            Ok(Received::Ref(pointer)) => match self.resolve(&pointer).await {
                Ok(envelope) => envelope,
                Err(Unresolved::Poison(detail)) => return self.poison(message_id, detail, started).await,
                Err(Unresolved::Unavailable(error)) => {
                    let span = tracing::info_span!("po", po_id = pointer.po_id, po_number = %log_field(&pointer.po_number), message_id = %message_id);
                    let mut report = RecordReport::not_attempted(&message_id);
                    report.outcome = Outcome::BodyUnavailable { location: pointer.location(), error };
                    span.in_scope(|| log_report(&report, None, self.sender.destination(), started.elapsed()));
                    return report;
                }
            },
            Err(detail) => return self.poison(message_id, detail, started).await,
        };
        let mut envelope = envelope;
        let trusted = ledger::trusted_received_at(envelope.received_at, delivered.sent_at);
        if trusted != envelope.received_at {
            tracing::warn!(
                po_id = envelope.po.id,
                message_id = %message_id,
                stamped = %envelope.received_at,
                sent = %trusted,
                "the webhook's version is stamped later than SQS received it; SQS's time is its version"
            );
            envelope.received_at = trusted;
        }
        let span = tracing::info_span!("po", po_id = envelope.po.id, po_number = %log_field(&envelope.po.po_number), message_id = %message_id);
        let report =
            self.process_envelope(message_id, delivered.sequence, &envelope, deadline).instrument(span.clone()).await;
        let latency = started.elapsed();
        span.in_scope(|| log_report(&report, Some(&envelope), self.sender.destination(), latency));
        self.record_attempt(&report, &envelope, latency).instrument(span).await;
        report
    }

    async fn process_envelope(
        &self,
        message_id: String,
        sequence: Option<u128>,
        envelope: &WebhookEnvelope,
        deadline: Option<Instant>,
    ) -> RecordReport {
        let mut report = RecordReport::not_attempted(&message_id);
        let arrival = Arrival {
            po_id: envelope.po.id,
            po_number: &envelope.po.po_number,
            received_at: envelope.received_at,
            body_sha256: &envelope.body_sha256,
            sqs_message_id: &message_id,
            sequence,
            replay: envelope.replay,
            resend: envelope.replay && envelope.resend,
        };
        let mut claim = match self.admit(&arrival, deadline).await {
            Admission::Claimed(claim) => *claim,
            Admission::Done(outcome) => {
                report.outcome = outcome;
                return report;
            }
        };
        // Before the upsert, and whatever becomes of it: Komet's links die in six hours.
        let archives = match &self.archiver {
            Some(archiver) => archiver.archive(&envelope.po, deadline).await,
            None => Vec::new(),
        };
        report.invoices_archived = archives.iter().filter(|a| a.outcome.is_ok()).count();
        report.invoices_not_archived = archives.len() - report.invoices_archived;
        let (outcome, settlement) =
            self.reconcile_and_upsert(envelope, (&arrival, &mut claim), &archives, deadline, &mut report).await;
        report.outcome = outcome;
        match settlement {
            Some(settlement) => {
                if let Err(error) = self.settle(claim, &arrival, &settlement).await {
                    // AppZen and the notifications are done, but the ledger does not say so: the redelivery
                    // does it again (AppZen's upsert is idempotent; the notifications already queued are noted
                    // in the ledger and not queued again).
                    report.outcome = Outcome::LedgerUnavailable(error);
                }
            }
            None => self.release(claim, &arrival).await,
        }
        report
    }

    /// Reconciles, upserts and notifies; returns the outcome and, when it is final, what the ledger records.
    async fn reconcile_and_upsert(
        &self,
        envelope: &WebhookEnvelope,
        (arrival, claim): (&Arrival<'_>, &mut LedgerEntry),
        archives: &[InvoiceArchive],
        deadline: Option<Instant>,
        report: &mut RecordReport,
    ) -> (Outcome, Option<Settlement>) {
        let config = &self.config;
        let checks = (config.policy, config.tolerance);
        let mut planned = self.sender.plan(envelope, checks, config.mails_mismatch, &config.mapping);
        report.discrepancy_count = planned.discrepancy_count();
        let unmappable = planned.notifications().iter().any(|e| e.kind() == NotificationKind::MappingError);
        let mut ledger_outcome = if unmappable { LedgerOutcome::Unmappable } else { LedgerOutcome::Held };
        let mut accepted = None;
        let mut outcome = Outcome::Held;
        if let Some(cancellation) = claim.cancelled.as_ref().filter(|_| planned.sends()) {
            // Nothing is asked of the destination, so this is no verdict of its: an outage it is in stays open.
            let held = destination::cancelled_by_operator(self.sender.destination(), envelope, cancellation);
            (outcome, ledger_outcome) = (held.outcome, held.ledger_outcome);
            planned.notifications().extend(held.notification);
        } else if planned.sends() {
            let (attempts, sent) =
                self.sender.send(&mut planned, envelope, archives, claim, (deadline, config.deadline_margin())).await;
            report.attempts = attempts;
            match sent {
                Ok(sent) => {
                    (outcome, ledger_outcome, accepted) = (sent.outcome, sent.ledger_outcome, sent.accepted);
                    planned.notifications().extend(sent.notification);
                    self.outages_over().await;
                }
                // Nobody is notified about the PO yet: the redelivery raises its events once it is done
                // with. The destination's outage itself is mailed once, whatever the number of POs waiting.
                Err(retry) => {
                    let seen = match retry.as_ref() {
                        Outcome::AppZenUnavailable { last, .. } => Some(Sighting::appzen(last)),
                        Outcome::ExsitedUnavailable(error) => Sighting::exsited(error),
                        _ => None,
                    };
                    if let Some(seen) = seen {
                        self.outage_seen(&seen).await;
                    }
                    return (*retry, None);
                }
            }
        }
        let mut notifications = std::mem::take(planned.notifications());
        for event in &mut notifications {
            let kind = event.kind();
            // Queued by an earlier delivery of this version (whose ledger write then failed): not again, even
            // past SQS's five-minute deduplication window.
            if ledger::already_notified(claim, arrival, kind.as_str()) {
                continue;
            }
            if let Some(webhook) = event.webhook.as_mut() {
                webhook.note_archive(archives);
            }
            if let Err(error) = self.notify(event).await {
                return (Outcome::NotifyFailed(error), None);
            }
            report.notified.push(kind);
            self.note_notified(claim, arrival, kind.as_str()).await;
        }
        (outcome, Some(Settlement { outcome: ledger_outcome, accepted }))
    }

    async fn poison(&self, message_id: String, detail: String, started: Instant) -> RecordReport {
        let event = NotificationEvent::poison(detail, message_id.clone());
        let mut report = RecordReport::not_attempted(&message_id);
        report.outcome = match self.notify(&event).await {
            Ok(()) => {
                report.notified.push(event.kind());
                Outcome::Poison
            }
            Err(error) => Outcome::NotifyFailed(error),
        };
        log_report(&report, None, self.sender.destination(), started.elapsed());
        report
    }

    /// Queues a notification event on `notifications.fifo`.
    pub(crate) async fn notify(&self, event: &NotificationEvent) -> Result<(), PortError> {
        self.notifications.send(&FifoMessage::notification(event)).await.map(|_| ())
    }
}

/// What SQS says of a delivery: when it got the message (its own clock) and the message's FIFO sequence number.
#[derive(Debug, Clone, Copy)]
struct Delivered {
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
    sequence: Option<u128>,
}

impl Delivered {
    fn of(record: &SqsMessage) -> Self {
        let attribute = |name: &str| record.attributes.get(name).map(|v| v.trim());
        Delivered {
            sent_at: attribute("SentTimestamp")
                .and_then(|ms| ms.parse().ok())
                .and_then(chrono::DateTime::from_timestamp_millis),
            sequence: attribute("SequenceNumber").and_then(|n| n.parse().ok()),
        }
    }
}

/// A record's message: the envelope itself, or a claim check for one ingest stored in the bucket.
enum Received {
    Envelope(WebhookEnvelope),
    Ref(BodyRef),
}

/// The record's envelope or claim check, or why it is poison (the body is read once).
fn read_envelope(body: Option<&str>) -> Result<Received, String> {
    match body.map(QueueMessage::from_json) {
        Some(Ok(QueueMessage::Webhook(envelope))) => Ok(Received::Envelope(envelope)),
        Some(Ok(QueueMessage::WebhookRef(pointer))) => Ok(Received::Ref(pointer)),
        Some(Ok(QueueMessage::Notification(_))) => Err(format!(
            "a notification event ({:?}) where a webhook was expected",
            po_sync::message::NOTIFICATION_TYPE
        )),
        Some(Err(error)) => Err(error.to_string()),
        None => Err("the SQS record has no body".to_owned()),
    }
}
