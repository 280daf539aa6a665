//! The `reconcile` function: for each queued webhook, consult the version ledger, reconcile the PO, apply the
//! policy, upsert it into AppZen, and raise a notification when a person must act.
//!
//! Every record ends in one [`Fate`]: consumed (done, superseded by a newer version, a duplicate of what AppZen
//! holds, or handed to a person through `notifications.fifo`) or retried (SQS redelivers it; after
//! `maxReceiveCount` it goes to the DLQ, which notify reports). The side effects are ports: the notification
//! queue ([`FifoQueue`]) and the ledger ([`Ledger`]); AppZen is an HTTP client tested with wiremock.

pub use destination::Sender;
use po_sync::config::reconcile::{CredentialsSource, DestinationConfig, ReconcileConfig};
use po_sync::message::NotificationKind;
use po_sync::outage::OutageCause;
use po_sync::retry::GiveUpReason;
use po_sync_aws::appzen::{
    Accepted, AppZenClient, AppZenSetupError, Outage, Rejected, SecretRenewal, resolve_credentials,
};
use po_sync_aws::exsited::ExsitedError;
use po_sync_aws::invoices::{InvoiceArchiver, InvoiceFetcher};
use po_sync_aws::ledger::{DynamoLedger, Ledger};
use po_sync_aws::metrics::RecordOutcome;
use po_sync_aws::objects::{ObjectStore, S3ObjectStore};
use po_sync_aws::port::PortError;
use po_sync_aws::queue::{FifoQueue, Redelivery, SqsFifoQueue, SqsRedelivery};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

mod claim_check;
mod destination;
mod history;
mod log;
mod outages;
mod partial_batch;
mod record;
mod versions;

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
    /// Exsited refused the PO; a person was notified.
    #[strum(serialize = "exsited_rejected")]
    ExsitedRejected { http_status: u16, detail: String },
    /// Exsited gave no verdict on the PO (an outage of Exsited or of po-sync's setup: refused credentials, a
    /// wrong address, throttling, down): the record comes back, and the outage is mailed once
    /// (`exsited_outage`).
    #[strum(serialize = "exsited_unavailable")]
    ExsitedUnavailable(ExsitedError),
    /// The PO is cancelled at the destination: the version was not sent; a person was notified.
    Cancelled { exsited_id: String },
    /// An operator cancelled the PO for this destination (`po-sync-admin cancel`, at `at`): the version was not
    /// sent, nor was the destination asked; a person was notified. A replay sends it once the PO is reactivated.
    CancelledByOperator { destination_id: Option<String>, at: chrono::DateTime<chrono::Utc> },
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
            | Outcome::ExsitedRejected { .. }
            | Outcome::Cancelled { .. }
            | Outcome::CancelledByOperator { .. }
            | Outcome::Held
            | Outcome::Superseded { .. }
            | Outcome::Duplicate
            | Outcome::Poison => Fate::Consumed,
            Outcome::AppZenUnavailable { .. }
            | Outcome::ExsitedUnavailable(_)
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
            Outcome::Rejected(_) | Outcome::ExsitedRejected { .. } => RecordOutcome::Rejected,
            Outcome::Held if unmappable => RecordOutcome::Unmappable,
            Outcome::Held | Outcome::Cancelled { .. } | Outcome::CancelledByOperator { .. } => RecordOutcome::Held,
            Outcome::Superseded { .. } => RecordOutcome::Superseded,
            Outcome::Duplicate => RecordOutcome::Duplicate,
            Outcome::Poison => RecordOutcome::Poison,
            Outcome::AppZenUnavailable { .. }
            | Outcome::ExsitedUnavailable(_)
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
    /// HTTP requests made to the destination for this record.
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
    #[error(transparent)]
    Exsited(#[from] po_sync_aws::exsited::ExsitedSetupError),
}

/// Everything an invocation needs, built once at cold start.
pub struct Reconciler<Q, L, S = S3ObjectStore, R = SqsRedelivery> {
    config: ReconcileConfig,
    /// The one destination this function sends to (`DESTINATION`).
    sender: Sender,
    notifications: Q,
    ledger: L,
    /// Sets when handed-back records come back (`WEBHOOK_QUEUE_URL`); `None`: after the queue's visibility timeout.
    redelivery: Option<R>,
    /// The outage causes of its destination this instance saw and has not seen end: the destination's next
    /// verdict ends them.
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
        let sender = match &config.destination {
            DestinationConfig::AppZen(appzen_config) => {
                let credentials = resolve_credentials(&appzen_config.credentials, aws).await?;
                let mut appzen = AppZenClient::new(appzen_config, &credentials)?;
                if let CredentialsSource::Secret { arn } = &appzen_config.credentials {
                    appzen = appzen.with_renewal(SecretRenewal::new(aws, arn));
                }
                Sender::AppZen(appzen)
            }
            DestinationConfig::Exsited(exsited) => Sender::exsited(exsited, Some(&config.ledger_table), aws).await?,
        };
        let redelivery =
            config.batch.webhook_queue_url.as_ref().map(|url| SqsRedelivery::new(aws_sdk_sqs::Client::new(aws), url));
        if redelivery.is_none() {
            tracing::warn!(
                "WEBHOOK_QUEUE_URL is not set: records handed back come back after the queue's visibility timeout, not by RETRY_SCHEDULE"
            );
        }
        let notifications = SqsFifoQueue::new(aws_sdk_sqs::Client::new(aws), config.notify_queue_url.clone());
        if config.history.is_none() {
            tracing::warn!(
                "HISTORY_TABLE_NAME is not set: no PO history is recorded (po-sync-admin history shows kept bodies only)"
            );
        }
        let ledger = dynamo_ledger(&config, aws_sdk_dynamodb::Client::new(aws)).for_destination(sender.destination());
        let archiver = match &config.archive {
            Some(archive) => {
                // One fetcher, so one budget of PDF bytes held at once, for every record of every invocation.
                let fetcher = InvoiceFetcher::new(archive.policy.clone(), archive.timeout)
                    .map_err(|e| StartupError::AppZen(AppZenSetupError::Client(e)))?
                    .with_buffer(archive.buffer_bytes);
                if archive.buffer_bytes < archive.policy.max_bytes {
                    tracing::warn!(
                        "INVOICE_BUFFER_MIB ({} bytes) is less than INVOICE_MAX_BYTES ({}): larger PDFs are not archived",
                        archive.buffer_bytes,
                        archive.policy.max_bytes
                    );
                }
                Some(InvoiceArchiver::new(fetcher, S3ObjectStore::new(aws, &archive.bucket), archive.concurrency))
            }
            None => None,
        };
        let bodies = config.archive.as_ref().map(|archive| S3ObjectStore::new(aws, &archive.bucket));
        Ok(Reconciler { archiver, bodies, redelivery, ..Reconciler::new(config, sender, notifications, ledger) })
    }
}

impl<Q: FifoQueue, L: Ledger, S: ObjectStore> Reconciler<Q, L, S, SqsRedelivery> {
    pub fn new(config: ReconcileConfig, sender: impl Into<Sender>, notifications: Q, ledger: L) -> Self {
        Reconciler {
            config,
            sender: sender.into(),
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
            sender: self.sender,
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

/// The version ledger at `LEDGER_TABLE_NAME`, with the PO history at `HISTORY_TABLE_NAME` if one is named.
pub fn dynamo_ledger(config: &ReconcileConfig, client: aws_sdk_dynamodb::Client) -> DynamoLedger {
    let ledger = DynamoLedger::new(client, config.ledger_table.clone());
    match &config.history {
        Some(history) => ledger.with_history(&history.table, chrono::Duration::days(history.retention_days.into())),
        None => ledger,
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
