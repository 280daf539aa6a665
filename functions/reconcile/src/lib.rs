//! The `reconcile` function: for each queued webhook, reconcile the PO, apply the policy, upsert it into
//! AppZen, and raise a notification when a person must act.
//!
//! Every record ends in one [`Fate`]: consumed (done, or handed to a person through `notifications.fifo`)
//! or retried (SQS redelivers it; after `maxReceiveCount` it goes to the DLQ, which notify reports).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use po_sync::config::reconcile::ReconcileConfig;
use po_sync::decision::{self, fifo_failures};
use po_sync::message::{NotificationEvent, NotificationKind, WebhookEnvelope};
use po_sync::retry::GiveUpReason;
use po_sync_aws::appzen::{
    Accepted, AppZenClient, AppZenSetupError, Rejected, Transient, UpsertOutcome, resolve_credentials,
};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::Instrument;

/// What became of one SQS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// AppZen took the PO.
    Upserted(Accepted),
    /// AppZen refused the PO; a person was notified.
    Rejected(Rejected),
    /// Not sent (a mismatch under `block`, or a mapping error); a person was notified.
    Held,
    /// Not a po-sync envelope; a person was notified.
    Poison,
    /// AppZen kept failing transiently.
    AppZenUnavailable { last: Transient, reason: GiveUpReason },
    /// A notification could not be queued, so the record must come back rather than be lost.
    NotifyFailed(String),
    /// Not started: an earlier record of this FIFO batch must be retried, or the invocation is out of time.
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
            Outcome::Upserted(_) | Outcome::Rejected(_) | Outcome::Held | Outcome::Poison => Fate::Consumed,
            Outcome::AppZenUnavailable { .. } | Outcome::NotifyFailed(_) | Outcome::NotAttempted => Fate::Retry,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Upserted(_) => "upserted",
            Outcome::Rejected(_) => "appzen_rejected",
            Outcome::Held => "held",
            Outcome::Poison => "poison",
            Outcome::AppZenUnavailable { .. } => "appzen_unavailable",
            Outcome::NotifyFailed(_) => "notify_failed",
            Outcome::NotAttempted => "not_attempted",
        }
    }
}

/// One record's outcome with what the log line and the tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordReport {
    pub message_id: String,
    pub outcome: Outcome,
    pub discrepancy_count: usize,
    /// AppZen HTTP requests made for this record.
    pub attempts: u32,
    /// Notifications queued for this record, in order.
    pub notified: Vec<NotificationKind>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    AppZen(#[from] AppZenSetupError),
}

/// Everything an invocation needs, built once at cold start.
pub struct Reconciler {
    config: ReconcileConfig,
    appzen: AppZenClient,
    sqs: aws_sdk_sqs::Client,
}

impl Reconciler {
    pub fn new(config: ReconcileConfig, appzen: AppZenClient, sqs: aws_sdk_sqs::Client) -> Self {
        Reconciler { config, appzen, sqs }
    }

    /// Reads the AppZen credentials (from Secrets Manager if configured) and builds the clients.
    pub async fn start(config: ReconcileConfig, aws: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let credentials = resolve_credentials(&config.appzen.credentials, aws).await?;
        let appzen = AppZenClient::new(&config.appzen, &credentials)?;
        Ok(Reconciler::new(config, appzen, aws_sdk_sqs::Client::new(aws)))
    }

    /// Handles an SQS batch in order. At the first record that must be retried, that record and every
    /// later one are reported as failures (FIFO partial-batch rule), and the later ones are not started.
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Option<SystemTime>) -> SqsBatchResponse {
        let deadline = deadline.map(|at| Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default());
        let ids: Vec<String> = event.records.iter().map(|r| r.message_id.clone().unwrap_or_default()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut first_retry = None;
        // By value: each record's body (a whole PO as JSON) is freed as soon as it is parsed.
        for (index, record) in event.records.into_iter().enumerate() {
            let out_of_time = deadline
                .is_some_and(|d| d.saturating_duration_since(Instant::now()) <= self.config.appzen.deadline_margin);
            let report = if out_of_time {
                RecordReport::not_attempted(ids[index])
            } else {
                self.process_owned(record, deadline).await
            };
            if report.outcome.fate() == Fate::Retry {
                first_retry = Some(index);
                if index + 1 < ids.len() {
                    tracing::warn!(
                        message_id = ids[index],
                        later_records = ids.len() - index - 1,
                        "handing back this record and every later one so no PO update overtakes an earlier one"
                    );
                }
                break;
            }
        }
        let mut response = SqsBatchResponse::default();
        // A record without a message id cannot be named; an empty identifier makes Lambda retry the whole
        // batch, which is the safe reading for FIFO.
        response.set_failures(fifo_failures(&ids, first_retry));
        response
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
        envelope: Result<WebhookEnvelope, String>,
        started: Instant,
        deadline: Option<Instant>,
    ) -> RecordReport {
        let envelope = match envelope {
            Ok(envelope) => envelope,
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
        let config = &self.config;
        let plan = decision::plan(envelope, config.policy, config.tolerance, &config.mapping);
        let mut notifications = plan.notifications;
        let mut report = RecordReport {
            message_id,
            outcome: Outcome::Held,
            discrepancy_count: plan.discrepancy_count,
            attempts: 0,
            notified: Vec::new(),
        };
        if let Some(body) = plan.upsert {
            let json = match body.to_json() {
                Ok(json) => json,
                Err(error) => {
                    // Not expected (the body is plain data), but if it happens a person must look.
                    let mut event = NotificationEvent::about(NotificationKind::MappingError, envelope);
                    event.detail = Some(format!("the AppZen body could not be written: {error}"));
                    notifications.push(event);
                    String::new()
                }
            };
            // Only its JSON is sent: free the mapped body (more memory than the JSON) before the POST, and
            // hand the JSON over rather than copy it.
            drop(body);
            if !json.is_empty() {
                let upsert = self.appzen.upsert(json, deadline).await;
                report.attempts = upsert.attempts;
                report.outcome = match upsert.outcome {
                    UpsertOutcome::Accepted(accepted) => Outcome::Upserted(accepted),
                    UpsertOutcome::Rejected(rejected) => {
                        notifications.push(decision::rejected_event(
                            envelope,
                            rejected.http_status,
                            &rejected.error,
                            rejected.correlation_id.clone(),
                        ));
                        Outcome::Rejected(rejected)
                    }
                    // Nobody is notified yet: the redelivery raises the events once it is done with, and a
                    // record that never gets through reaches the DLQ, which notify reports.
                    UpsertOutcome::GaveUp { last, reason } => {
                        report.outcome = Outcome::AppZenUnavailable { last, reason };
                        return report;
                    }
                };
            }
        }
        for event in &notifications {
            if let Err(error) = self.notify(event).await {
                report.outcome = Outcome::NotifyFailed(error);
                return report;
            }
            report.notified.push(event.kind);
        }
        report
    }

    async fn poison(&self, message_id: String, detail: String, started: Instant) -> RecordReport {
        let event = NotificationEvent::poison(detail, message_id.clone());
        let mut report = RecordReport::not_attempted(&message_id);
        report.outcome = match self.notify(&event).await {
            Ok(()) => {
                report.notified.push(event.kind);
                Outcome::Poison
            }
            Err(error) => Outcome::NotifyFailed(error),
        };
        log_report(&report, None, started.elapsed());
        report
    }

    /// Queues a notification event on `notifications.fifo`: grouped per PO, deduplicated by content.
    async fn notify(&self, event: &NotificationEvent) -> Result<(), String> {
        let body = event.to_json().map_err(|e| format!("cannot write the notification: {e}"))?;
        self.sqs
            .send_message()
            .queue_url(&self.config.notify_queue_url)
            .message_body(body)
            .message_group_id(event.group_id())
            .message_deduplication_id(event.deduplication_id())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }
}

/// The record's envelope, or why it is poison.
fn read_envelope(body: Option<&str>) -> Result<WebhookEnvelope, String> {
    match body.map(WebhookEnvelope::from_json) {
        Some(Ok(envelope)) => Ok(envelope),
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
        Outcome::AppZenUnavailable {
            last: Transient { cause: po_sync_aws::appzen::TransientCause::Status(s), .. },
            ..
        } => Some(*s),
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
        Outcome::AppZenUnavailable { last, reason } => Some(format!("{} ({})", last.cause, reason.as_str())),
        Outcome::NotifyFailed(error) => Some(error.clone()),
        _ => None,
    };
    let notified: Vec<&str> = report.notified.iter().map(|k| k.as_str()).collect();
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
                outcome,
                discrepancies,
                appzen_http_status = http_status,
                appzen_status,
                uuid,
                correlation_id,
                attempts = report.attempts,
                latency_ms = latency.as_millis() as u64,
                notified = ?notified,
                detail = detail.as_deref(),
                "record processed"
            )
        };
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
