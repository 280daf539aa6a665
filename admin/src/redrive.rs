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
use po_sync::ledger::{LedgerEntry, LedgerOutcome};
use po_sync::message::{BodyRef, QueueMessage, WebhookEnvelope};
use po_sync_aws::ledger::{DynamoLedger, Ledger};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

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
        return Ok(RedriveReport { snapshot, movement: None, waited: None });
    }

    let (movement, tracked) = match options.method {
        Method::Copy => {
            let (movement, moved) =
                copy(sqs, parked_url, webhook_url, "--method copy".to_owned(), &snapshot, options, progress).await;
            (movement, moved)
        }
        Method::Auto if !snapshot.unreadable.is_empty() => {
            let why = format!(
                "{} unreadable message(s) are parked, and a move task would move them too; a copy leaves them parked",
                snapshot.unreadable.len()
            );
            copy(sqs, parked_url, webhook_url, why, &snapshot, options, progress).await
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
                    copy(sqs, parked_url, webhook_url, why, &snapshot, options, progress).await
                }
                Started::Unsupported(reason) => {
                    return Err(Error::Failed(format!(
                        "StartMessageMoveTask is not available on this endpoint ({reason}); use --method copy"
                    )));
                }
            }
        }
    };

    let waited = if let (Some(table), true) = (table, movement.moved > 0 || !tracked.is_empty()) {
        let ledger = DynamoLedger::new(clients.dynamodb.clone(), table);
        Some(wait_for_reconcile(sqs, webhook_url, &ledger, &tracked, options, progress).await?)
    } else {
        None
    };
    Ok(RedriveReport { snapshot, movement: Some(movement), waited })
}

/// Receives every parked message (hidden for `visibility` seconds), reads it, and makes it visible again.
pub async fn snapshot(sqs: &aws_sdk_sqs::Client, parked_url: &str, visibility: i32) -> Result<Snapshot, Error> {
    let (visible, _in_flight) = counts(sqs, parked_url).await?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut receipts: Vec<String> = Vec::new();
    let mut snapshot = Snapshot::default();
    // SQS allows at most 20,000 in-flight messages on a FIFO queue.
    while seen.len() < 20_000 {
        let messages = receive(sqs, parked_url, visibility).await?;
        let mut new = 0;
        for message in &messages {
            let id = message.message_id().unwrap_or_default().to_owned();
            if !seen.insert(id.clone()) {
                continue;
            }
            new += 1;
            if let Some(receipt) = message.receipt_handle() {
                receipts.push(receipt.to_owned());
            }
            match read(message) {
                Ok(webhook) => snapshot.webhooks.push(webhook),
                Err(reason) => snapshot.unreadable.push(Unreadable { message_id: id, reason }),
            }
        }
        if new == 0 {
            break;
        }
    }
    release(sqs, parked_url, &receipts).await?;
    snapshot.not_seen = visible.saturating_sub(seen.len() as u64);
    Ok(snapshot)
}

async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, visibility: i32) -> Result<Vec<Message>, Error> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        // A short long-poll: short polling samples only some SQS hosts and can answer "empty" too early.
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(aws("sqs:ReceiveMessage"))?;
    Ok(output.messages.unwrap_or_default())
}

/// Makes the received messages visible again (ChangeMessageVisibility 0, ten at a time).
async fn release(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipts: &[String]) -> Result<(), Error> {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .map_err(|e| Error::Failed(format!("ChangeMessageVisibilityBatch entry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(aws("sqs:ChangeMessageVisibilityBatch"))?;
        if let Some(failed) = output.failed().first() {
            return Err(Error::Failed(format!(
                "could not make {} parked message(s) visible again after reading them ({}: {}); they come back \
                 by themselves within the visibility timeout, then run redrive again",
                output.failed().len(),
                failed.code(),
                failed.message().unwrap_or_default()
            )));
        }
    }
    Ok(())
}

fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    message.attributes().and_then(|a| a.get(&name)).map(String::as_str).filter(|v| !v.is_empty())
}

/// What a parked webhook says of itself: an envelope, or the claim check of one stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedIdentity {
    pub po_id: u64,
    pub po_number: String,
    /// `receivedAt` in milliseconds.
    pub version: i64,
    /// The webhook's own deduplication id (its `sendId`, else its body digest).
    pub deduplication_id: String,
}

impl ParkedIdentity {
    pub fn of_envelope(envelope: &WebhookEnvelope) -> Self {
        ParkedIdentity {
            po_id: envelope.po.id,
            po_number: envelope.po.po_number.as_str().to_owned(),
            version: envelope.version(),
            deduplication_id: envelope.deduplication_id().to_owned(),
        }
    }

    pub fn of_ref(pointer: &BodyRef) -> Self {
        ParkedIdentity {
            po_id: pointer.po_id,
            po_number: pointer.po_number.clone(),
            version: pointer.version(),
            deduplication_id: pointer.deduplication_id().to_owned(),
        }
    }
}

/// Reads a parked body: a webhook envelope or its claim check; anything else (a notification event included)
/// is unreadable here.
pub fn parked_identity(body: &str) -> Result<ParkedIdentity, String> {
    match QueueMessage::from_json(body).map_err(|e| e.to_string())? {
        QueueMessage::Webhook(envelope) => Ok(ParkedIdentity::of_envelope(&envelope)),
        QueueMessage::WebhookRef(pointer) => Ok(ParkedIdentity::of_ref(&pointer)),
        QueueMessage::Notification(_) => Err("a notification event, not a webhook".to_owned()),
    }
}

fn read(message: &Message) -> Result<ParkedWebhook, String> {
    let identity = parked_identity(message.body().unwrap_or_default())?;
    Ok(ParkedWebhook {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        group_id: system_attribute(message, MessageSystemAttributeName::MessageGroupId)
            .map_or_else(|| identity.po_id.to_string(), str::to_owned),
        po_id: identity.po_id,
        po_number: identity.po_number,
        version: identity.version,
    })
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<String, Error> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(aws("sqs:GetQueueAttributes"))?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| Error::Failed(format!("SQS returned no QueueArn for {queue_url}")))
}

enum Started {
    Task(String),
    /// The endpoint does not implement the action; why, in words.
    Unsupported(String),
}

/// Error codes with which a service says it does not know or support an action.
const UNSUPPORTED_CODES: [&str; 6] = [
    "InvalidAction",
    "UnknownOperationException",
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "NotImplemented",
    "NotImplementedException",
];

/// Whether an error means "this endpoint does not implement the action", and why. moto 5.2.5 answers
/// StartMessageMoveTask with HTTP 500 and an HTML page (its NotImplementedError), so no AWS error code; an AWS
/// service always names its error, so a 500 without a code, or a 501, is read as "not implemented".
pub fn unsupported_reason(status: Option<u16>, code: Option<&str>) -> Option<String> {
    match (status, code) {
        (_, Some(code)) if UNSUPPORTED_CODES.contains(&code) => Some(format!("it answered {code}")),
        (Some(501), _) => Some("it answered HTTP 501 Not Implemented".to_owned()),
        (Some(500), None) => Some(
            "it answered HTTP 500 with no AWS error code, as moto does for an action it does not implement".to_owned(),
        ),
        _ => None,
    }
}

fn classify_start<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<String> {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = match error {
        SdkError::ServiceError(_) => error.code(),
        _ => None,
    };
    match error {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => unsupported_reason(status, code),
        _ => None,
    }
}

/// Starts the move task, without the SDK's retries (an unimplemented action would be retried as a 500), but
/// trying again twice on throttling.
async fn start_move_task(sqs: &aws_sdk_sqs::Client, source: &str, destination: &str) -> Result<Started, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = sqs
            .start_message_move_task()
            .source_arn(source)
            .destination_arn(destination)
            .customize()
            .config_override(aws_sdk_sqs::config::Config::builder().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match result {
            Ok(output) => return Ok(Started::Task(output.task_handle().unwrap_or_default().to_owned())),
            Err(e) => {
                if let Some(reason) = classify_start(&e) {
                    return Ok(Started::Unsupported(reason));
                }
                let error = port_error("sqs:StartMessageMoveTask", e);
                if error.is_transient() && attempt < 3 {
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    continue;
                }
                return Err(Error::Failed(format!("{error} (--method copy moves the messages client-side instead)")));
            }
        }
    }
}

/// Polls ListMessageMoveTasks until the task ends or the timeout passes (the task then goes on in SQS).
async fn follow_move_task(
    sqs: &aws_sdk_sqs::Client,
    source: &str,
    handle: &str,
    why: String,
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Movement, Error> {
    let deadline = Instant::now() + options.timeout;
    let mut movement =
        Movement { method: Method::MoveTask, why, moved: 0, to_move: None, complete: false, problem: None };
    loop {
        tokio::time::sleep(options.poll_interval).await;
        let listed = sqs.list_message_move_tasks().source_arn(source).max_results(10).send().await.map_err(|e| {
            Error::Failed(format!(
                "move task {handle} started, but following it failed: {}; check with aws sqs list-message-move-tasks \
                 --source-arn {source}",
                port_error("sqs:ListMessageMoveTasks", e)
            ))
        })?;
        // The most recent task is ours (only a RUNNING task shows its handle).
        let task = listed
            .results()
            .iter()
            .find(|t| t.task_handle() == Some(handle))
            .or_else(|| listed.results().iter().max_by_key(|t| t.started_timestamp()));
        if let Some(task) = task {
            movement.moved = task.approximate_number_of_messages_moved().max(0) as u64;
            movement.to_move = task.approximate_number_of_messages_to_move().map(|n| n.max(0) as u64);
            let of = movement.to_move.map_or_else(|| "?".to_owned(), |n| n.to_string());
            let status = task.status().unwrap_or("UNKNOWN");
            progress(&format!("moved {} of {of} ({status})", movement.moved));
            match status {
                "COMPLETED" => {
                    movement.complete = true;
                    return Ok(movement);
                }
                "FAILED" | "CANCELLED" => {
                    movement.problem = Some(format!(
                        "the move task {}{}",
                        status.to_lowercase(),
                        task.failure_reason().map(|r| format!(": {r}")).unwrap_or_default()
                    ));
                    return Ok(movement);
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            movement.problem = Some(format!(
                "still running after {} s; it goes on in SQS (aws sqs list-message-move-tasks --source-arn {source})",
                options.timeout.as_secs()
            ));
            return Ok(movement);
        }
    }
}

/// The deduplication id a copied webhook is sent with: the parked message's own (notify parks with the dead
/// letter's message id; SQS's own redrive keeps ingest's), so a second copy of the same message within SQS's
/// five-minute window (a redrive retried after a crash) is dropped. If another message of this run already used
/// that id (parked by an older notify with the body digest, so two versions of one body share it: a revert
/// A, B, A), the webhook's own id (its `sendId`) is used instead, or SQS would drop the newer A and leave
/// AppZen on B.
pub fn copy_deduplication_id(parked: Option<&str>, webhook: &ParkedIdentity, used: &mut HashSet<String>) -> String {
    let id = match parked {
        Some(id) if !used.contains(id) => id.to_owned(),
        _ => webhook.deduplication_id.clone(),
    };
    used.insert(id.clone());
    id
}

/// Receives parked messages and, for each readable webhook, sends it to the webhook queue (same body, group
/// and message attributes), then deletes it from the parked queue. Unreadable messages stay parked.
async fn copy(
    sqs: &aws_sdk_sqs::Client,
    parked_url: &str,
    webhook_url: &str,
    why: String,
    snapshot: &Snapshot,
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> (Movement, Vec<ParkedWebhook>) {
    let total = (snapshot.webhooks.len() as u64) + snapshot.not_seen;
    let mut movement =
        Movement { method: Method::Copy, why, moved: 0, to_move: Some(total), complete: false, problem: None };
    let mut moved: Vec<ParkedWebhook> = Vec::new();
    let deadline = Instant::now() + options.timeout;
    let mut unreadable: HashSet<String> = HashSet::new();
    let mut used: HashSet<String> = HashSet::new();
    let result: Result<(), String> = async {
        loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "stopped after {} s (--timeout); the rest are still parked",
                    options.timeout.as_secs()
                ));
            }
            let messages =
                receive(sqs, parked_url, options.visibility_timeout_seconds).await.map_err(|e| e.to_string())?;
            let mut progressed = false;
            for message in &messages {
                let id = message.message_id().unwrap_or_default().to_owned();
                let body = message.body().unwrap_or_default();
                let webhook = match parked_identity(body) {
                    Ok(webhook) => webhook,
                    Err(_) => {
                        // Left parked; hidden until its visibility timeout ends, so not received again now.
                        progressed |= unreadable.insert(id);
                        continue;
                    }
                };
                let group = system_attribute(message, MessageSystemAttributeName::MessageGroupId)
                    .map_or_else(|| webhook.po_id.to_string(), str::to_owned);
                sqs.send_message()
                    .queue_url(webhook_url)
                    .message_body(body)
                    .message_group_id(&group)
                    .message_deduplication_id(copy_deduplication_id(
                        system_attribute(message, MessageSystemAttributeName::MessageDeduplicationId),
                        &webhook,
                        &mut used,
                    ))
                    .set_message_attributes(message.message_attributes.clone())
                    .send()
                    .await
                    .map_err(|e| format!("{}; the rest are still parked", port_error("sqs:SendMessage", e)))?;
                sqs.delete_message()
                    .queue_url(parked_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "message {id} was copied but not deleted from the parked queue ({}); a second redrive \
                             delivers it again, which reconcile's ledger makes harmless",
                            port_error("sqs:DeleteMessage", e)
                        )
                    })?;
                progressed = true;
                movement.moved += 1;
                moved.push(ParkedWebhook {
                    message_id: id,
                    po_id: webhook.po_id,
                    po_number: webhook.po_number,
                    version: webhook.version,
                    group_id: group,
                });
                progress(&format!("moved {} of {total}", movement.moved));
            }
            if messages.is_empty() || !progressed {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => movement.complete = true,
        Err(problem) => movement.problem = Some(problem),
    }
    (movement, moved)
}

/// What the ledger says about one version.
pub fn fate(entry: Option<&LedgerEntry>, version: i64, now: DateTime<Utc>) -> Fate {
    let Some(entry) = entry else {
        return Fate::Pending { reason: "no ledger entry yet".to_owned() };
    };
    if entry.appzen.as_ref().is_some_and(|holds| holds.version == version) {
        // AppZen holds this version (newer ones since did not reach AppZen: held, rejected, unmappable).
        return Fate::Applied { outcome: LedgerOutcome::Upserted };
    }
    if let Some(latest) = &entry.latest {
        if latest.version == version {
            return Fate::Applied { outcome: latest.outcome };
        }
        // As reconcile judges it (po_sync::ledger::judge): a newer version supersedes this one once it reached
        // AppZen, or AppZen holds a version newer than this one.
        let reached_appzen = matches!(latest.outcome, LedgerOutcome::Upserted | LedgerOutcome::Duplicate);
        if latest.version > version && (reached_appzen || entry.appzen.as_ref().is_some_and(|h| h.version > version)) {
            return Fate::Superseded { by_version: latest.version };
        }
    }
    if let Some(claim) = entry.claim.as_ref().filter(|c| c.until > now) {
        if claim.version > version {
            return Fate::Superseded { by_version: claim.version };
        }
        if claim.version == version {
            return Fate::Pending { reason: format!("being processed (claim until {})", claim.until.to_rfc3339()) };
        }
    }
    Fate::Pending { reason: "not settled yet: still queued, being retried, or dead-lettered again".to_owned() }
}

/// Each tracked version's fate, reading each PO's entry once.
pub async fn fates(ledger: &impl Ledger, tracked: &[ParkedWebhook]) -> Result<Vec<VersionFate>, Error> {
    let now = Utc::now();
    let mut entries: BTreeMap<u64, Option<LedgerEntry>> = BTreeMap::new();
    let mut fates = Vec::new();
    for webhook in tracked {
        if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(webhook.po_id) {
            slot.insert(ledger.read(webhook.po_id).await?);
        }
        let entry = entries.get(&webhook.po_id).and_then(Option::as_ref);
        fates.push(VersionFate {
            po_id: webhook.po_id,
            po_number: webhook.po_number.clone(),
            version: webhook.version,
            fate: fate(entry, webhook.version, now),
        });
    }
    Ok(fates)
}

/// Waits until the webhook queue is empty and every version is settled (or the queue stayed empty for three
/// polls, or the timeout passed), then reads the fates.
async fn wait_for_reconcile(
    sqs: &aws_sdk_sqs::Client,
    webhook_url: &str,
    ledger: &impl Ledger,
    tracked: &[ParkedWebhook],
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Waited, Error> {
    let deadline = Instant::now() + options.timeout;
    let mut last = None;
    let mut empty_polls = 0;
    loop {
        let (visible, in_flight) = counts(sqs, webhook_url).await?;
        if last != Some((visible, in_flight)) {
            progress(&format!("waiting for reconcile: {visible} visible, {in_flight} in flight on the webhook queue"));
            last = Some((visible, in_flight));
        }
        if visible + in_flight == 0 {
            empty_polls += 1;
            let fates = fates(ledger, tracked).await?;
            if empty_polls >= 3 || fates.iter().all(|f| !matches!(f.fate, Fate::Pending { .. })) {
                return Ok(Waited { timed_out: false, left_on_webhook_queue: 0, fates });
            }
        } else {
            empty_polls = 0;
        }
        if Instant::now() >= deadline {
            let fates = fates(ledger, tracked).await?;
            return Ok(Waited { timed_out: true, left_on_webhook_queue: visible + in_flight, fates });
        }
        tokio::time::sleep(options.poll_interval).await;
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
                received_at: at(s),
                body_sha256: "b".into(),
                sqs_message_id: "m".into(),
                outcome: LedgerOutcome::Held,
                settled_at: at(s),
            }),
            appzen: None,
            claim: claim.map(|(s, until)| Claim {
                version: at(s).timestamp_millis(),
                body_sha256: "c".into(),
                sqs_message_id: "n".into(),
                until: at(until),
            }),
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
        holds_older.appzen = Some(po_sync::ledger::AppZenHolds {
            version: v(3),
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
