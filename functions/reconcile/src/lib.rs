//! The `reconcile` function: for each queued webhook, consult the version ledger, reconcile the PO, apply the
//! policy, upsert it into AppZen, and raise a notification when a person must act.
//!
//! Every record ends in one [`Fate`]: consumed (done, superseded by a newer version, a duplicate of what AppZen
//! holds, or handed to a person through `notifications.fifo`) or retried (SQS redelivers it; after
//! `maxReceiveCount` it goes to the DLQ, which notify reports). The side effects are ports: the notification
//! queue ([`FifoQueue`]) and the ledger ([`Ledger`]); AppZen is an HTTP client tested with wiremock.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use po_sync::archive::InvoiceArchive;
use po_sync::batch::{self, Handled};
use po_sync::config::reconcile::CredentialsSource;
use po_sync::config::reconcile::ReconcileConfig;
use po_sync::decision;
use po_sync::ledger::{self, Arrival, LedgerEntry, LedgerOutcome, Settlement, Verdict};
use po_sync::message::{
    AppZenAnswer, BodyRef, NotificationEvent, NotificationKind, QueueMessage, WebhookEnvelope,
};
use po_sync::outage::{self, OutageCause, OutageRules};
use po_sync::retry::GiveUpReason;
use po_sync_aws::appzen::{
    Accepted, AppZenClient, AppZenSetupError, Outage, Rejected, SecretRenewal, UpsertOutcome, resolve_credentials,
};
use po_sync_aws::invoices::{InvoiceArchiver, InvoiceFetcher};
use po_sync_aws::ledger::{DynamoLedger, Ledger, Written};
use po_sync_aws::metrics::RecordOutcome;
use po_sync_aws::objects::{ObjectStore, S3ObjectStore};
use po_sync_aws::port::{Failure, PortError};
use po_sync_aws::queue::{FifoMessage, FifoQueue, Postponed, Redelivery, SqsFifoQueue, SqsRedelivery};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::Instrument;

/// What became of one SQS record.
#[derive(Debug, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// AppZen took the PO.
    Upserted(Accepted),
    /// AppZen refused the PO; a person was notified.
    #[strum(serialize = "appzen_rejected")]
    Rejected(Rejected),
    /// Not sent (a mismatch under `block`, or a mapping error); a person was notified.
    Held,
    /// A newer version of this PO was already processed (or is being processed): not sent, consumed.
    Superseded { newer_version: i64 },
    /// AppZen already holds exactly this body: not sent again, consumed.
    Duplicate,
    /// Not a po-sync envelope (or a claim check whose stored body is gone or is not one); a person was notified.
    Poison,
    /// A claim check's stored body could not be read (S3 failed, or reconcile has no or another bucket): the
    /// record comes back, and after `maxReceiveCount` it is parked like any dead letter.
    BodyUnavailable { location: String, error: PortError },
    /// AppZen gave no verdict on the PO (an outage of AppZen or of po-sync's setup): the record comes back.
    #[strum(serialize = "appzen_unavailable")]
    AppZenUnavailable { last: Outage, reason: GiveUpReason },
    /// Another record of this PO is being processed right now; this one comes back later.
    LedgerBusy { claimed_by: String },
    /// The ledger could not be read or written: never upsert blind, so the record comes back.
    LedgerUnavailable(PortError),
    /// A notification could not be queued, so the record must come back rather than be lost.
    NotifyFailed(PortError),
    /// Not started: an earlier record of its message group must be retried, or the invocation is out of time.
    NotAttempted,
}

/// Whether SQS may delete the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Consumed,
    Retry,
}

impl Outcome {
    pub fn fate(&self) -> Fate {
        match self {
            Outcome::Upserted(_)
            | Outcome::Rejected(_)
            | Outcome::Held
            | Outcome::Superseded { .. }
            | Outcome::Duplicate
            | Outcome::Poison => Fate::Consumed,
            Outcome::AppZenUnavailable { .. }
            | Outcome::LedgerBusy { .. }
            | Outcome::LedgerUnavailable(_)
            | Outcome::NotifyFailed(_)
            | Outcome::BodyUnavailable { .. }
            | Outcome::NotAttempted => Fate::Retry,
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The `outcome` of the `Records` metric for a record reconcile is done with (`unmappable`: held because it
    /// cannot become an AppZen PO); `None` for one handed back, which the batch counts as `retried`.
    pub fn metric(&self, unmappable: bool) -> Option<RecordOutcome> {
        Some(match self {
            Outcome::Upserted(_) => RecordOutcome::Upserted,
            Outcome::Rejected(_) => RecordOutcome::Rejected,
            Outcome::Held if unmappable => RecordOutcome::Unmappable,
            Outcome::Held => RecordOutcome::Held,
            Outcome::Superseded { .. } => RecordOutcome::Superseded,
            Outcome::Duplicate => RecordOutcome::Duplicate,
            Outcome::Poison => RecordOutcome::Poison,
            Outcome::AppZenUnavailable { .. }
            | Outcome::LedgerBusy { .. }
            | Outcome::LedgerUnavailable(_)
            | Outcome::NotifyFailed(_)
            | Outcome::BodyUnavailable { .. }
            | Outcome::NotAttempted => return None,
        })
    }
}

/// One record's outcome with what the log line and the tests need.
#[derive(Debug)]
pub struct RecordReport {
    pub message_id: String,
    pub outcome: Outcome,
    pub discrepancy_count: usize,
    /// AppZen HTTP requests made for this record.
    pub attempts: u32,
    /// Notifications queued for this record, in order.
    pub notified: Vec<NotificationKind>,
    /// Invoice PDFs archived, and not archived (`archive_incomplete`), for this record.
    pub invoices_archived: usize,
    pub invoices_not_archived: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    AppZen(#[from] AppZenSetupError),
}

/// How many times a ledger write that lost a race is decided again before the record is handed back.
const LEDGER_RACE_ROUNDS: usize = 5;
/// How long a claim outlives its invocation's deadline (or, without a deadline, Lambda's 15-minute maximum).
const CLAIM_MARGIN: Duration = Duration::from_secs(60);
const LAMBDA_MAX_RUNTIME: Duration = Duration::from_secs(15 * 60);

/// Everything an invocation needs, built once at cold start.
pub struct Reconciler<Q, L, S = S3ObjectStore, R = SqsRedelivery> {
    config: ReconcileConfig,
    appzen: AppZenClient,
    notifications: Q,
    ledger: L,
    /// Sets when handed-back records come back (`WEBHOOK_QUEUE_URL`); `None`: after the queue's visibility timeout.
    redelivery: Option<R>,
    /// The outage causes this instance saw and has not seen end: its next verdict from AppZen ends them.
    outages_seen: Mutex<BTreeSet<OutageCause>>,
    /// Copies invoice PDFs into the bucket (`ARCHIVE_BUCKET`); `None` leaves Komet's links as they are.
    archiver: Option<InvoiceArchiver<S>>,
    /// Where ingest stored the POs too large for one SQS message (`ARCHIVE_BUCKET`, `bodies/`): a claim check
    /// is resolved here. `None`: a claim check is retried (and so ends parked) until the bucket is configured.
    bodies: Option<S>,
}

impl Reconciler<SqsFifoQueue, DynamoLedger, S3ObjectStore, SqsRedelivery> {
    /// Reads the AppZen credentials (from Secrets Manager if configured) and builds the clients.
    pub async fn start(config: ReconcileConfig, aws: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let credentials = resolve_credentials(&config.appzen.credentials, aws).await?;
        let mut appzen = AppZenClient::new(&config.appzen, &credentials)?;
        if let CredentialsSource::Secret { arn } = &config.appzen.credentials {
            appzen = appzen.with_renewal(SecretRenewal::new(aws, arn));
        }
        let redelivery =
            config.batch.webhook_queue_url.as_ref().map(|url| SqsRedelivery::new(aws_sdk_sqs::Client::new(aws), url));
        if redelivery.is_none() {
            tracing::warn!(
                "WEBHOOK_QUEUE_URL is not set: records handed back come back after the queue's visibility timeout, not by RETRY_SCHEDULE"
            );
        }
        let notifications = SqsFifoQueue::new(aws_sdk_sqs::Client::new(aws), config.notify_queue_url.clone());
        let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(aws), config.ledger_table.clone());
        let archiver = match &config.archive {
            Some(archive) => {
                let fetcher = InvoiceFetcher::new(archive.policy.clone(), archive.timeout)
                    .map_err(|e| StartupError::AppZen(AppZenSetupError::Client(e)))?;
                Some(InvoiceArchiver::new(fetcher, S3ObjectStore::new(aws, &archive.bucket), archive.concurrency))
            }
            None => None,
        };
        let bodies = config.archive.as_ref().map(|archive| S3ObjectStore::new(aws, &archive.bucket));
        Ok(Reconciler { archiver, bodies, redelivery, ..Reconciler::new(config, appzen, notifications, ledger) })
    }
}

/// What the ledger said about a record before any work on it.
enum Admission {
    /// Ours to process; the claim as written (boxed: an entry is much larger than an outcome).
    Claimed(Box<LedgerEntry>),
    Done(Outcome),
}

impl<Q: FifoQueue, L: Ledger, S: ObjectStore> Reconciler<Q, L, S, SqsRedelivery> {
    pub fn new(config: ReconcileConfig, appzen: AppZenClient, notifications: Q, ledger: L) -> Self {
        Reconciler {
            config,
            appzen,
            notifications,
            ledger,
            archiver: None,
            bodies: None,
            redelivery: None,
            outages_seen: Mutex::default(),
        }
    }
}

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// Sets when handed-back records come back through `redelivery` (by the retry schedule).
    pub fn with_redelivery<R2: Redelivery>(self, redelivery: R2) -> Reconciler<Q, L, S, R2> {
        Reconciler {
            config: self.config,
            appzen: self.appzen,
            notifications: self.notifications,
            ledger: self.ledger,
            archiver: self.archiver,
            bodies: self.bodies,
            redelivery: Some(redelivery),
            outages_seen: self.outages_seen,
        }
    }

    pub fn redelivery(&self) -> Option<&R> {
        self.redelivery.as_ref()
    }

    /// Resolves claim checks (POs too large for one SQS message) through `store`.
    pub fn with_bodies(mut self, store: S) -> Self {
        self.bodies = Some(store);
        self
    }

    /// Archives invoice PDFs through `archiver` before each upsert.
    pub fn with_archiver(mut self, archiver: InvoiceArchiver<S>) -> Self {
        self.archiver = Some(archiver);
        self
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The store claim checks are resolved through, if any.
    pub fn bodies(&self) -> Option<&S> {
        self.bodies.as_ref()
    }

    pub fn notifications(&self) -> &Q {
        &self.notifications
    }

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

    /// How long a handed-back record waits: by the schedule for its receive count, never less than AppZen's
    /// `Retry-After`; at once when it was not attempted (the invocation ran out of time before it).
    fn retry_delay(&self, outcome: &Outcome, receive_count: u32) -> Duration {
        let scheduled = self.config.batch.retry_schedule.delay(receive_count);
        match outcome {
            Outcome::NotAttempted => Duration::ZERO,
            Outcome::AppZenUnavailable { last, .. } => {
                last.retry_after.map_or(scheduled, |asked| asked.max(scheduled).min(po_sync::retry::MAX_VISIBILITY))
            }
            _ => scheduled,
        }
    }

    /// A record of the batch: processed, unless the invocation has no time left for it.
    async fn process_in_batch(&self, record: SqsMessage, deadline: Option<Instant>) -> RecordReport {
        let out_of_time =
            deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) <= self.config.appzen.deadline_margin);
        if out_of_time {
            return RecordReport::not_attempted(record.message_id.as_deref().unwrap_or_default());
        }
        self.process_owned(record, deadline).await
    }

    /// Processes one record and writes its log line.
    pub async fn process(&self, record: &SqsMessage, deadline: Option<Instant>) -> RecordReport {
        let started = Instant::now();
        let message_id = record.message_id.clone().unwrap_or_default();
        let envelope = read_envelope(record.body.as_deref());
        self.process_read(message_id, envelope, started, deadline).await
    }

    /// [`Reconciler::process`] for a record the batch hands over, so its body does not outlive parsing.
    async fn process_owned(&self, mut record: SqsMessage, deadline: Option<Instant>) -> RecordReport {
        let started = Instant::now();
        let message_id = record.message_id.take().unwrap_or_default();
        let envelope = read_envelope(record.body.as_deref());
        drop(record);
        self.process_read(message_id, envelope, started, deadline).await
    }

    async fn process_read(
        &self,
        message_id: String,
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
                    let span = tracing::info_span!("po", po_id = pointer.po_id, po_number = %pointer.po_number, message_id = %message_id);
                    let mut report = RecordReport::not_attempted(&message_id);
                    report.outcome = Outcome::BodyUnavailable { location: pointer.location(), error };
                    span.in_scope(|| log_report(&report, None, started.elapsed()));
                    return report;
                }
            },
            Err(detail) => return self.poison(message_id, detail, started).await,
        };
        let span = tracing::info_span!("po", po_id = envelope.po.id, po_number = %envelope.po.po_number, message_id = %message_id);
        let report = self.process_envelope(message_id, &envelope, deadline).instrument(span.clone()).await;
        span.in_scope(|| log_report(&report, Some(&envelope), started.elapsed()));
        report
    }

    async fn process_envelope(
        &self,
        message_id: String,
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
        };
        let claim = match self.admit(&arrival, deadline).await {
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
        let (outcome, settlement) = self.reconcile_and_upsert(envelope, &archives, deadline, &mut report).await;
        report.outcome = outcome;
        match settlement {
            Some(settlement) => {
                if let Err(error) = self.settle(claim, &arrival, &settlement).await {
                    // AppZen and the notifications are done, but the ledger does not say so: the redelivery
                    // does it all again (AppZen's upsert is idempotent; SQS drops the same notifications).
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
        archives: &[InvoiceArchive],
        deadline: Option<Instant>,
        report: &mut RecordReport,
    ) -> (Outcome, Option<Settlement>) {
        let config = &self.config;
        let plan = decision::plan(envelope, config.policy, config.tolerance, &config.mapping);
        let mut notifications = plan.notifications;
        report.discrepancy_count = plan.discrepancy_count;
        let unmappable = notifications.iter().any(|e| e.kind() == NotificationKind::MappingError);
        let mut ledger_outcome = if unmappable { LedgerOutcome::Unmappable } else { LedgerOutcome::Held };
        let mut accepted_by_appzen = None;
        let mut outcome = Outcome::Held;
        if let Some(mut body) = plan.upsert {
            body.note_archive(archives);
            let json = body.to_json();
            // Only its JSON is sent: free the mapped body (more memory than the JSON) before the POST, and
            // hand the JSON over rather than copy it.
            drop(body);
            let upsert = self.appzen.upsert(json, deadline).await;
            report.attempts = upsert.attempts;
            outcome = match upsert.outcome {
                UpsertOutcome::Accepted(accepted) => {
                    ledger_outcome = LedgerOutcome::Upserted;
                    accepted_by_appzen = Some(ledger::Accepted {
                        http_status: accepted.http_status,
                        uuid: accepted.uuid.clone(),
                        status: accepted.status.clone(),
                    });
                    Outcome::Upserted(accepted)
                }
                UpsertOutcome::Rejected(rejected) => {
                    notifications.push(decision::rejected_event(
                        envelope,
                        rejected.http_status,
                        &rejected.error,
                        rejected.correlation_id.clone(),
                    ));
                    ledger_outcome = LedgerOutcome::Rejected;
                    Outcome::Rejected(rejected)
                }
                // Nobody is notified about the PO yet: the redelivery raises its events once it is done
                // with. The outage itself is mailed once, whatever the number of POs waiting.
                UpsertOutcome::GaveUp { last, reason } => {
                    self.outage_seen(&last).await;
                    return (Outcome::AppZenUnavailable { last, reason }, None);
                }
            };
            self.outages_over().await;
        }
        for event in &mut notifications {
            if let Some(webhook) = event.webhook.as_mut() {
                webhook.note_archive(archives);
            }
            if let Err(error) = self.notify(event).await {
                return (Outcome::NotifyFailed(error), None);
            }
            report.notified.push(event.kind());
        }
        (outcome, Some(Settlement { outcome: ledger_outcome, accepted: accepted_by_appzen }))
    }

    /// AppZen gave no verdict (after the retries the invocation allows): records the outage of its cause, and
    /// queues its one e-mail when that falls due. Best effort: the record comes back whatever happens here.
    async fn outage_seen(&self, last: &Outage) {
        let cause = last.cause;
        self.outages_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(cause);
        let rules = OutageRules {
            quiet: chrono::Duration::from_std(self.config.batch.retry_schedule.longest() * 2)
                .unwrap_or(chrono::Duration::hours(2)),
            mail_after: chrono::Duration::from_std(self.config.batch.outage_email_after)
                .unwrap_or(chrono::Duration::minutes(15)),
        };
        for _round in 0..LEDGER_RACE_ROUNDS {
            let current = match self.ledger.read_outage(cause).await {
                Ok(current) => current,
                Err(error) => {
                    return tracing::warn!(cause = cause.as_str(), error = %error, "the outage could not be recorded");
                }
            };
            let observation = outage::observe(current.as_ref(), cause, chrono::Utc::now(), &rules);
            let Some(record) = observation.write else { return };
            match self.ledger.write_outage(&record).await {
                Ok(Written::Stored) => {}
                Ok(Written::Conflict) => continue,
                Err(error) => {
                    return tracing::warn!(cause = cause.as_str(), error = %error, "the outage could not be recorded");
                }
            }
            if !observation.mail {
                return;
            }
            let event =
                NotificationEvent::outage(cause, record.opened_at, last.failure.to_string(), outage_answer(last));
            match self.notify(&event).await {
                Ok(()) => tracing::error!(
                    cause = cause.as_str(),
                    since = %record.opened_at,
                    failure = %last.failure,
                    "AppZen outage: the outage e-mail is queued; every PO waits and comes back by the retry schedule"
                ),
                Err(error) => {
                    tracing::warn!(cause = cause.as_str(), error = %error, "the outage e-mail could not be queued; the next failure tries again");
                    let _ = self.ledger.write_outage(&outage::unmail(&record)).await;
                }
            }
            return;
        }
    }

    /// AppZen gave a verdict: the outages this instance saw are over.
    async fn outages_over(&self) {
        let causes = std::mem::take(&mut *self.outages_seen.lock().unwrap_or_else(|p| p.into_inner()));
        for cause in causes {
            for _round in 0..LEDGER_RACE_ROUNDS {
                let current = match self.ledger.read_outage(cause).await {
                    Ok(current) => current,
                    Err(_) => break,
                };
                let Some(ended) = outage::end(current.as_ref(), chrono::Utc::now()) else { break };
                match self.ledger.write_outage(&ended).await {
                    Ok(Written::Conflict) => continue,
                    Ok(Written::Stored) => {
                        tracing::info!(cause = cause.as_str(), since = %ended.opened_at, "AppZen outage over: AppZen gives verdicts again");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Reads the ledger and decides; on a lost race, reads again and decides again.
    async fn admit(&self, arrival: &Arrival<'_>, deadline: Option<Instant>) -> Admission {
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
    async fn settle(
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

    /// Gives a claim back after a transient failure, so the ledger is as it was. Best effort: an unreleased
    /// claim expires by itself, and its own redelivery may take it again at once.
    async fn release(&self, claim: LedgerEntry, arrival: &Arrival<'_>) {
        if let Some(released) = ledger::release(&claim, arrival, chrono::Utc::now())
            && let Err(error) = self.ledger.write(&released).await
        {
            tracing::warn!(error = %error, "the claim could not be released; it expires by itself");
        }
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
        log_report(&report, None, started.elapsed());
        report
    }

    /// The envelope a claim check points at. The ledger and everything after it then treat it exactly as an
    /// envelope that came inline.
    async fn resolve(&self, pointer: &BodyRef) -> Result<WebhookEnvelope, Unresolved> {
        let location = pointer.location();
        let unavailable =
            |summary: String| Unresolved::Unavailable(PortError::new(GET_OBJECT, Failure::Permanent, summary));
        let Some(store) = &self.bodies else {
            return Err(unavailable(format!("{location}: reconcile has no bucket for claim checks (ARCHIVE_BUCKET)")));
        };
        if store.bucket() != pointer.bucket {
            return Err(unavailable(format!(
                "{location}: reconcile reads bucket {:?} (ARCHIVE_BUCKET)",
                store.bucket()
            )));
        }
        let poison = |what: String| {
            Unresolved::Poison(format!(
                "the claim check for PO {} (id {}, received {}) points to {location}, {what}",
                pointer.po_number,
                pointer.po_id,
                pointer.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
        };
        let bytes = match store.get(&pointer.key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(poison("which does not exist (deleted, or expired by the bucket's lifecycle rule)".into()));
            }
            Err(error) => return Err(Unresolved::Unavailable(error)),
        };
        let read = std::str::from_utf8(&bytes)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|json| WebhookEnvelope::from_json(json).map_err(|e| e.to_string()));
        drop(bytes);
        let mut envelope = read.map_err(|why| poison(format!("which is not a webhook envelope: {why}")))?;
        if !pointer.names(&envelope) {
            return Err(poison(format!(
                "which holds another webhook (PO id {}, body {})",
                envelope.po.id, envelope.body_sha256
            )));
        }
        // The version is the one SQS delivered: the claim check's (see `BodyRef::names`).
        envelope.received_at = pointer.received_at;
        envelope.send_id = pointer.send_id.clone();
        Ok(envelope)
    }

    /// Queues a notification event on `notifications.fifo`.
    async fn notify(&self, event: &NotificationEvent) -> Result<(), PortError> {
        self.notifications.send(&FifoMessage::notification(event)).await.map(|_| ())
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

/// AppZen's answer during an outage, as the outage e-mail shows it.
fn outage_answer(last: &Outage) -> Option<AppZenAnswer> {
    let http_status = last.http_status()?;
    let answer = last.answer.clone().unwrap_or_default();
    Some(AppZenAnswer {
        http_status,
        error: answer.error,
        message: answer.message,
        correlation_id: last.correlation_id.clone(),
    })
}

/// How long a claim lasts: past the invocation's deadline, so a live invocation never loses its claim.
fn claim_lease(deadline: Option<Instant>) -> chrono::Duration {
    let remaining = deadline.map_or(LAMBDA_MAX_RUNTIME, |d| d.saturating_duration_since(Instant::now()));
    chrono::Duration::from_std(remaining + CLAIM_MARGIN).unwrap_or(chrono::Duration::minutes(16))
}

/// A record's message: the envelope itself, or a claim check for one ingest stored in the bucket.
enum Received {
    Envelope(WebhookEnvelope),
    Ref(BodyRef),
}

/// Why a claim check did not give its envelope.
enum Unresolved {
    /// The stored body is gone or is not the envelope it should be: a person is told, the record consumed.
    Poison(String),
    /// The body could not be read now (or reconcile cannot read that bucket): the record comes back.
    Unavailable(PortError),
}

const GET_OBJECT: &str = "s3:GetObject";

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

impl RecordReport {
    fn not_attempted(message_id: &str) -> Self {
        RecordReport {
            message_id: message_id.to_owned(),
            outcome: Outcome::NotAttempted,
            discrepancy_count: 0,
            attempts: 0,
            notified: Vec::new(),
            invoices_archived: 0,
            invoices_not_archived: 0,
        }
    }
}

/// The one log line per record (inside the PO's span when there is a PO).
fn log_report(report: &RecordReport, envelope: Option<&WebhookEnvelope>, latency: Duration) {
    let accepted = match &report.outcome {
        Outcome::Upserted(accepted) => Some(accepted),
        _ => None,
    };
    let http_status = match &report.outcome {
        Outcome::Upserted(a) => Some(a.http_status),
        Outcome::Rejected(r) => Some(r.http_status),
        Outcome::AppZenUnavailable { last, .. } => last.http_status(),
        _ => None,
    };
    let correlation_id = match &report.outcome {
        Outcome::Upserted(a) => a.correlation_id.as_deref(),
        Outcome::Rejected(r) => r.correlation_id.as_deref(),
        Outcome::AppZenUnavailable { last, .. } => last.correlation_id.as_deref(),
        _ => None,
    };
    let detail = match &report.outcome {
        Outcome::Rejected(r) => Some(r.error.to_string()),
        Outcome::AppZenUnavailable { last, reason } => {
            Some(format!("{} ({}, {}); retried later", last.failure, last.cause.as_str(), reason.as_str()))
        }
        Outcome::NotifyFailed(error) | Outcome::LedgerUnavailable(error) => Some(error.to_string()),
        Outcome::BodyUnavailable { location, error } => {
            Some(format!("the claim check's body {location} could not be read ({error}); retried later"))
        }
        Outcome::Superseded { newer_version } => Some(format!(
            "a newer version (received {}) was already processed; this one is not sent to AppZen",
            chrono::DateTime::from_timestamp_millis(*newer_version)
                .map_or_else(|| newer_version.to_string(), |t| t.to_rfc3339())
        )),
        Outcome::Duplicate => Some("AppZen already holds exactly this body; not sent again".to_owned()),
        Outcome::LedgerBusy { claimed_by } => {
            Some(format!("record {claimed_by} of this PO is being processed; retried later"))
        }
        _ => None,
    };
    let notified: Vec<&str> = report.notified.iter().map(|k| k.as_str()).collect();
    let version = envelope.map(WebhookEnvelope::version);
    let send_id = envelope.and_then(|e| e.send_id.as_deref());
    let fields = (
        envelope.map(|e| e.po.id),
        envelope.map(|e| e.po.po_number.as_str()),
        report.outcome.as_str(),
        report.discrepancy_count,
        http_status,
        accepted.and_then(|a| a.status.as_deref()),
        accepted.and_then(|a| a.uuid.as_deref()),
        correlation_id,
    );
    let (po_id, po_number, outcome, discrepancies, http_status, appzen_status, uuid, correlation_id) = fields;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                message_id = %report.message_id,
                po_id,
                po_number,
                version,
                send_id,
                outcome,
                discrepancies,
                appzen_http_status = http_status,
                appzen_status,
                uuid,
                correlation_id,
                attempts = report.attempts,
                invoices_archived = report.invoices_archived,
                invoices_not_archived = report.invoices_not_archived,
                latency_ms = latency.as_millis() as u64,
                notified = ?notified,
                detail = detail.as_deref(),
                "record processed"
            )
        };
    }
    let metric = report.outcome.metric(report.notified.contains(&NotificationKind::MappingError));
    po_sync_aws::metrics::record_processed(metric, report.discrepancy_count, report.attempts);
    if metric.is_some() {
        po_sync_aws::metrics::invoices_archived(report.invoices_archived, report.invoices_not_archived);
    }
    match report.outcome.fate() {
        Fate::Consumed => line!(info),
        Fate::Retry => line!(warn),
    }
}

/// The invocation's deadline from the Lambda context; `None` when the runtime gave none (0) or one already
/// past on arrival (`cargo lambda watch` sends a constant 600000, i.e. 1970): the per-request timeout and
/// the attempt limit still bound the work.
pub fn deadline_of(context: &lambda_runtime::Context) -> Option<SystemTime> {
    (context.deadline != 0).then(|| context.deadline()).filter(|deadline| *deadline > SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::deadline_of;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn context_with_deadline(deadline_ms: u64) -> lambda_runtime::Context {
        let mut context = lambda_runtime::Context::default();
        context.deadline = deadline_ms;
        context
    }

    #[test]
    fn a_real_deadline_is_kept_and_a_missing_or_past_one_is_ignored() {
        let in_a_minute = SystemTime::now() + Duration::from_secs(60);
        let ms = in_a_minute.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let kept = deadline_of(&context_with_deadline(ms)).expect("a future deadline is kept");
        assert!(kept > SystemTime::now() && kept <= in_a_minute + Duration::from_millis(1));
        assert_eq!(deadline_of(&context_with_deadline(0)), None, "no deadline given");
        // What `cargo lambda watch` 1.9 sends: 600000 ms after the epoch.
        assert_eq!(deadline_of(&context_with_deadline(600_000)), None, "a deadline already past on arrival");
    }
}
