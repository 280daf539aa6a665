//! `replay`: sends a Komet webhook body to the webhook queue again, validated first as ingest validates it.
//!
//! - `replay <file>`: a saved body, queued as a NEW send: a new version (received now), so reconcile treats it
//!   as the PO's latest.
//! - `replay --po <id> [--version V | --latest]`: a body ingest kept in the archive bucket, queued with the
//!   version it had and marked as a replay. The version ledger decides as for any send: a version AppZen already
//!   holds is a duplicate, an older one is superseded, and the PO's latest version that never reached AppZen
//!   (held, rejected, unmappable) is processed again: the way to re-send it once its cause is fixed.
//!
//! Each replay has its own send id (`replay-` and 32 random hex digits), also its SQS deduplication id. An
//! envelope too large for one SQS message is stored under `bodies/` and queued as a claim check, as ingest does.

use crate::Clients;
use crate::error::Error;
use crate::history::kept_versions;
use crate::resources::{Resource, Resources};
use chrono::{DateTime, SecondsFormat, Utc};
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::komet::{PurchaseOrder, parse_webhook};
use po_sync::message::{BodyRef, KeptWebhook, WebhookEnvelope, body_key};
use po_sync_aws::objects::{Bytes, NewObject, ObjectStore, S3ObjectStore, location};
use po_sync_aws::queue::{FifoMessage, FifoQueue, SQS_MAX_MESSAGE_BYTES, SqsFifoQueue};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// A webhook body read from disk and validated.
#[derive(Debug, Clone)]
pub struct SavedWebhook {
    pub bytes: Vec<u8>,
    pub po: PurchaseOrder,
}

/// Reads and validates a saved body; the error names the file and every field at fault. Nothing is sent.
pub fn read_webhook(path: &Path) -> Result<SavedWebhook, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    validate(&bytes, &path.display().to_string())
}

/// Validates a body as ingest does (`parse_webhook`); `source` names it in the error.
pub fn validate(bytes: &[u8], source: &str) -> Result<SavedWebhook, Error> {
    match parse_webhook(bytes) {
        Ok(po) => Ok(SavedWebhook { bytes: bytes.to_vec(), po }),
        Err(e) => Err(Error::Usage(format!("{source} is not a valid Komet webhook body, nothing was queued: {e}"))),
    }
}

/// Which kept version `replay --po` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Latest,
    /// The version: `receivedAt` in milliseconds.
    Version(i64),
}

/// A version on the command line: milliseconds since the epoch (as `history --json` and the ledger show it) or
/// an RFC 3339 time with milliseconds (as `history` prints it).
pub fn parse_version(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(version) = text.parse::<i64>() {
        return Ok(version);
    }
    DateTime::parse_from_rfc3339(text).map(|at| at.timestamp_millis()).map_err(|_| {
        format!(
            "{text:?} is not a version: give its milliseconds (1795280400123) or its time (2026-11-21T17:00:00.123Z)"
        )
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub po_id: u64,
    pub po_number: String,
    /// Where the body came from: the file, or the kept body's `s3://` location.
    pub source: String,
    /// A kept body sent again with its own version (`--po`), not a new version (a file).
    pub kept: bool,
    /// To be sent to AppZen even if the ledger says AppZen holds it (`--resend`, `verify --repair`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    /// The version sent: `receivedAt` in milliseconds (now for a file; the kept version's own for `--po`).
    pub version: i64,
    pub received_at: DateTime<Utc>,
    /// The envelope's `sendId`, also the SQS deduplication id: `replay-` and 32 random hex digits.
    pub send_id: String,
    /// Where the envelope was stored for a claim check, when it was too large for one SQS message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_check: Option<String>,
    /// `None` on a dry run: nothing was sent.
    pub sqs_message_id: Option<String>,
    /// Whether the replay was recorded in the PO's history: `recorded`, why not, or `None` where no history
    /// table is known (or nothing was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
}

/// Queues a saved body as a new version received at `now` (truncated to milliseconds).
pub async fn replay(
    clients: &Clients,
    resources: &Resources,
    webhook: &SavedWebhook,
    source: &str,
    now: DateTime<Utc>,
) -> Result<ReplayReport, Error> {
    let received_at = DateTime::<Utc>::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let envelope = WebhookEnvelope::new(webhook.po.clone(), &webhook.bytes, received_at).with_send_id(new_send_id());
    let bucket = resources.get(Resource::ArchiveBucket).map(|b| S3ObjectStore::with_client(clients.s3.clone(), b));
    send(clients, resources, bucket.as_ref(), envelope, source.to_owned(), false).await
}

/// Queues the PO's kept body of the version `pick` names, with that version, marked as a replay (and, with
/// `resend`, to be sent to AppZen even if the ledger says AppZen holds it); `dry_run` reads and validates it and
/// reports what would be sent, sending nothing.
pub async fn replay_kept(
    clients: &Clients,
    resources: &Resources,
    po_id: u64,
    pick: Pick,
    dry_run: bool,
    resend: bool,
) -> Result<ReplayReport, Error> {
    let bucket = resources.require(Resource::ArchiveBucket)?;
    let store = S3ObjectStore::with_client(clients.s3.clone(), bucket);
    let (kept, _) = kept_versions(&store, po_id).await?;
    let chosen = match pick {
        Pick::Latest => kept.last(),
        Pick::Version(version) => kept.iter().find(|(k, _)| k.version == version),
    };
    let Some((chosen, _)) = chosen else {
        let which = match pick {
            Pick::Latest => "any version".to_owned(),
            Pick::Version(version) => format!("version {version}"),
        };
        return Err(Error::Usage(format!(
            "PO {po_id} has no kept body of {which} in s3://{bucket}/webhooks/{po_id}/ (older than the retention, or \
             never received); `po-sync-admin history {po_id}` lists what is kept"
        )));
    };
    replay_chosen(clients, resources, &store, chosen, dry_run, resend).await
}

/// Queues one kept body (`chosen`, as listed from `store`) with its version, marked as a replay; `dry_run`
/// reads and validates it, sending nothing. `replay --po` and `replay --since` both send through here.
pub async fn replay_chosen(
    clients: &Clients,
    resources: &Resources,
    store: &S3ObjectStore,
    chosen: &KeptWebhook,
    dry_run: bool,
    resend: bool,
) -> Result<ReplayReport, Error> {
    let source = location(store.bucket(), &chosen.key);
    let bytes = store
        .get(&chosen.key)
        .await?
        .ok_or_else(|| Error::Failed(format!("{source} was listed but is gone (expired meanwhile?)")))?;
    let saved = validate(&bytes, &source)?;
    let mut envelope = WebhookEnvelope::new(saved.po, &bytes, chosen.received_at).with_send_id(new_send_id());
    envelope.replay = true;
    envelope.resend = resend;
    send(clients, resources, Some(store), envelope, source, dry_run).await
}

fn new_send_id() -> String {
    format!("replay-{:032x}", fastrand::u128(..))
}

/// Sends the envelope (through a claim check in `bucket` when it is too large for one SQS message).
async fn send(
    clients: &Clients,
    resources: &Resources,
    bucket: Option<&S3ObjectStore>,
    envelope: WebhookEnvelope,
    source: String,
    dry_run: bool,
) -> Result<ReplayReport, Error> {
    let queue_url = resources.require(Resource::WebhookQueue)?;
    let mut message = FifoMessage::webhook(&envelope, envelope.to_json());
    let mut claim_check = None;
    if message.size() > SQS_MAX_MESSAGE_BYTES {
        let Some(store) = bucket else {
            return Err(Error::Usage(format!(
                "{source} is too large for one SQS message ({} bytes): pass --archive-bucket (or --stack) so it is \
                 stored there and queued as a claim check",
                message.size()
            )));
        };
        let key = body_key(envelope.po.id, envelope.deduplication_id());
        if !dry_run {
            let metadata = [("po-id", envelope.po.id.to_string()), ("send-id", envelope.deduplication_id().to_owned())];
            let object = NewObject {
                key: &key,
                bytes: Bytes::from(std::mem::take(&mut message.body)),
                content_type: "application/json",
                metadata: &metadata,
            };
            store.put(&object).await?;
        }
        let pointer = BodyRef::of(&envelope, store.bucket(), key.as_str());
        message = FifoMessage::webhook_ref(&pointer, pointer.to_json());
        claim_check = Some(pointer.location());
    }
    // The replay's time in the history is just before it is queued, so it comes before reconcile's attempt at it.
    let queued_at = Utc::now();
    let sqs_message_id = match dry_run {
        true => None,
        false => Some(SqsFifoQueue::new(clients.sqs.clone(), queue_url).send(&message).await?),
    };
    let history = match (&sqs_message_id, resources.get(Resource::HistoryTable)) {
        (Some(message_id), Some(table)) => {
            Some(record_replay(clients, table, &envelope, (message_id, queued_at), &source).await)
        }
        _ => None,
    };
    Ok(ReplayReport {
        po_id: envelope.po.id,
        po_number: envelope.po.po_number.as_str().to_owned(),
        source,
        kept: envelope.replay,
        resend: envelope.resend,
        version: envelope.version(),
        received_at: envelope.received_at,
        send_id: envelope.deduplication_id().to_owned(),
        claim_check,
        sqs_message_id,
        history,
    })
}

/// Records the replay in the PO's history; the replay stands whatever becomes of the record (it is queued).
async fn record_replay(
    clients: &Clients,
    table: &str,
    envelope: &WebhookEnvelope,
    (message_id, queued_at): (&str, DateTime<Utc>),
    source: &str,
) -> String {
    let as_what = match (envelope.replay, envelope.resend) {
        (true, true) => "with the version it had, to be sent to AppZen even if the ledger says AppZen holds it",
        (true, false) => "with the version it had",
        (false, _) => "as a new version",
    };
    let attempt = Attempt {
        sqs_message_id: Some(message_id.to_owned()),
        ..Attempt::new(envelope.po.id, &envelope.po.po_number, envelope.version(), queued_at, AttemptOutcome::Replayed)
    }
    .with_detail(Some(&format!("queued again {as_what} from {source} by po-sync-admin replay")));
    match crate::history::writer(clients, table).record(&attempt).await {
        Ok(()) => "recorded".to_owned(),
        Err(e) => format!("not recorded ({e})"),
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.sqs_message_id.is_some() { "queued" } else { "would queue (dry run)" };
        let as_what = if self.kept { "with the version it had" } else { "as a new version" };
        writeln!(f, "{verb} PO {} (id {}) {as_what} from {}", self.po_number, self.po_id, self.source)?;
        if self.resend {
            writeln!(
                f,
                "  resend       AppZen gets it even if the ledger says AppZen holds it (a newer version wins)"
            )?;
        }
        writeln!(
            f,
            "  version      {} (received {})",
            self.version,
            self.received_at.to_rfc3339_opts(SecondsFormat::Millis, true)
        )?;
        writeln!(f, "  send id      {}", self.send_id)?;
        if let Some(claim_check) = &self.claim_check {
            writeln!(f, "  claim check  {claim_check}")?;
        }
        if let Some(id) = &self.sqs_message_id {
            writeln!(f, "  SQS message  {id}")?;
        }
        match &self.history {
            Some(history) => writeln!(f, "  history      {history}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_read_as_milliseconds_or_as_the_time_history_prints() {
        assert_eq!(parse_version("1795280400123"), Ok(1_795_280_400_123));
        assert_eq!(parse_version("2026-11-21T17:00:00.123Z"), Ok(1_795_280_400_123));
        assert!(parse_version("last tuesday").unwrap_err().contains("not a version"));
    }
}
