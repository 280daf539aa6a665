//! A local stand-in for Lambda's SQS event source mapping, for functions running under `cargo lambda watch`.
//!
//! Per queue it does what the mapping does with `ReportBatchItemFailures` on:
//! long-polls the queue for up to 10 messages, invokes the function through the Lambda Invoke API
//! (`POST /2015-03-31/functions/<name>/invocations`) with an SQS event whose records look like Lambda's,
//! deletes the records the function did not report in `batchItemFailures`, and leaves the failed ones on the
//! queue so they reappear after the visibility timeout (and reach the dead-letter queue after
//! `maxReceiveCount` receives). A failed invocation (function error, no answer) fails the whole batch.
//!
//! Order: one batch per queue is in flight at a time, and SQS FIFO never hands out a message group that has
//! messages in flight, so each group's messages reach the function in order, as with Lambda. (Failed
//! group-mates after the first are released at once rather than left to time out together: moto would
//! otherwise hand the last of them out first.)

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};

/// Where the local tools write their log lines (a file under `.local/logs/`, or stderr).
#[derive(Clone)]
pub struct LogSink(Arc<Mutex<Box<dyn Write + Send>>>);

impl LogSink {
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        LogSink(Arc::new(Mutex::new(Box::new(writer))))
    }

    pub fn stderr() -> Self {
        LogSink::new(std::io::stderr())
    }

    pub fn line(&self, text: impl AsRef<str>) {
        let mut writer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(writer, "{} {}", chrono::Utc::now().format("%H:%M:%S%.3f"), text.as_ref());
        let _ = writer.flush();
    }
}

/// One queue feeding one function.
#[derive(Debug, Clone)]
pub struct EventSourceMapping {
    pub queue_url: String,
    pub function_name: String,
    /// 1 to 10, as SQS allows per receive.
    pub batch_size: i32,
    /// Long-poll wait per receive, in seconds (0 to 20).
    pub wait_time_seconds: i32,
    /// After a failure, make the failed records visible again after this many seconds instead of waiting
    /// out the queue's visibility timeout (`None`: leave them, as Lambda does).
    pub retry_after_seconds: Option<i32>,
    /// The function sets when the records it reports as failed come back (reconcile's retry schedule): the
    /// poller leaves them as the function set them, as Lambda does; `retry_after_seconds` then applies only
    /// to a batch whose invocation failed.
    pub function_sets_visibility: bool,
    /// Where this function is invoked (`http://127.0.0.1:PORT` of its `cargo lambda watch`); `None`: the
    /// `invoke_base_url` given to [`Poller::start`].
    pub invoke_base_url: Option<String>,
    /// The name the function is invoked by there (its binary, when several functions share one); `None`:
    /// `function_name`.
    pub binary: Option<String>,
    /// Invocations that die mid-batch, injected (the soak); `None` in normal use.
    pub deaths: Option<InvocationDeaths>,
}

/// Injected invocation deaths: with probability `rate` per batch, the function handles only the first `k` of
/// the batch's `n` records (`k` drawn from 1..=n) and then "dies": the poller reports an invocation error, as
/// Lambda does for a function that crashed or timed out, so all `n` records become visible again (their
/// receive counts go up) while the first `k` have had their effects. Seeded: the same seed, the same draws.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationDeaths {
    pub seed: u64,
    pub rate: f64,
}

/// How an injected death is reported in [`Invocation::error`].
pub const INJECTED_DEATH: &str = "injected: the invocation died";

impl EventSourceMapping {
    pub fn new(queue_url: impl Into<String>, function_name: impl Into<String>) -> Self {
        EventSourceMapping {
            queue_url: queue_url.into(),
            function_name: function_name.into(),
            batch_size: 10,
            wait_time_seconds: 1,
            retry_after_seconds: None,
            function_sets_visibility: false,
            invoke_base_url: None,
            binary: None,
            deaths: None,
        }
    }
}

/// What one invocation did, kept for tests and summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub queue_url: String,
    pub function_name: String,
    pub message_ids: Vec<String>,
    pub failed_ids: Vec<String>,
    /// `None` when the function answered; else why the whole batch failed.
    pub error: Option<String>,
    /// How long the invocation took, from the request to the function's answer.
    pub duration: Duration,
}

/// The running poller: one task per mapping. Stops when dropped or on [`Poller::stop`].
pub struct Poller {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    /// Per mapping: whether it is asked to pause, and whether it holds (nothing received).
    controls: EventSourceControls,
}

/// The mappings' switches, by mapping id ([`mapping_uuid`]): what Lambda's `UpdateEventSourceMapping` (`Enabled`)
/// and `GetEventSourceMapping` (`State`) act on, for the local stand-in of that API (`lambda_control`).
#[derive(Clone, Default)]
pub struct EventSourceControls {
    mappings: Arc<Vec<ControlledMapping>>,
}

struct ControlledMapping {
    uuid: String,
    function_name: String,
    queue_arn: String,
    pause: Arc<Pause>,
}

/// The local id of the mapping of `queue_url` to `function_name`: `local-reconcile-po-sync-webhooks`.
pub fn mapping_uuid(function_name: &str, queue_url: &str) -> String {
    let queue = queue_url.rsplit('/').next().unwrap_or_default().trim_end_matches(".fifo");
    format!("local-{function_name}-{queue}")
}

impl EventSourceControls {
    /// Lambda's name for the mapping's state: `Enabled`, `Disabling` (asked to pause, a batch still in hand),
    /// `Disabled`, `Enabling` (asked to resume, not polling yet); `None` for an unknown id.
    pub fn state(&self, uuid: &str) -> Option<&'static str> {
        let mapping = self.mappings.iter().find(|m| m.uuid == uuid)?;
        let (requested, holding) =
            (mapping.pause.requested.load(Ordering::SeqCst), mapping.pause.holding.load(Ordering::SeqCst));
        Some(match (requested, holding) {
            (true, true) => "Disabled",
            (true, false) => "Disabling",
            (false, true) => "Enabling",
            (false, false) => "Enabled",
        })
    }

    /// Asks the mapping to stop (`enabled` false) or start receiving; `false` for an unknown id.
    pub fn set_enabled(&self, uuid: &str, enabled: bool) -> bool {
        match self.mappings.iter().find(|m| m.uuid == uuid) {
            Some(mapping) => {
                mapping.pause.requested.store(!enabled, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// (function name, queue ARN) of the mapping.
    pub fn describe(&self, uuid: &str) -> Option<(&str, &str)> {
        self.mappings.iter().find(|m| m.uuid == uuid).map(|m| (m.function_name.as_str(), m.queue_arn.as_str()))
    }

    /// Every mapping id.
    pub fn uuids(&self) -> Vec<String> {
        self.mappings.iter().map(|m| m.uuid.clone()).collect()
    }
}

impl Poller {
    /// Starts polling every mapping. `invoke_base_url` is `http://127.0.0.1:PORT` of `cargo lambda watch`.
    pub async fn start(
        sqs: aws_sdk_sqs::Client,
        invoke_base_url: &str,
        region: &str,
        mappings: Vec<EventSourceMapping>,
        log: LogSink,
    ) -> Result<Poller, aws_sdk_sqs::Error> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let invocations = Arc::new(Mutex::new(Vec::new()));
        // Invocations are bounded by the functions' own timeouts; this only stops a hung emulator.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(900)).build().unwrap_or_default();
        let mut tasks = Vec::with_capacity(mappings.len());
        let mut controlled = Vec::with_capacity(mappings.len());
        for mapping in mappings {
            let pause = Arc::new(Pause::default());
            let queue_arn = queue_arn(&sqs, &mapping.queue_url).await?;
            controlled.push(ControlledMapping {
                uuid: mapping_uuid(&mapping.function_name, &mapping.queue_url),
                function_name: mapping.function_name.clone(),
                queue_arn: queue_arn.clone(),
                pause: pause.clone(),
            });
            let base_url = mapping.invoke_base_url.as_deref().unwrap_or(invoke_base_url);
            let worker = Worker {
                sqs: sqs.clone(),
                http: http.clone(),
                invoke_url: format!(
                    "{}/2015-03-31/functions/{}/invocations",
                    base_url.trim_end_matches('/'),
                    mapping.binary.as_deref().unwrap_or(&mapping.function_name)
                ),
                deaths: mapping.deaths.as_ref().map(|d| Mutex::new(fastrand::Rng::with_seed(d.seed))),
                region: region.to_owned(),
                queue_arn,
                mapping,
                log: log.clone(),
                in_flight: in_flight.clone(),
                invocations: invocations.clone(),
                paused: pause,
            };
            tasks.push(tokio::spawn(worker.run(stopped.clone())));
        }
        let controls = EventSourceControls { mappings: Arc::new(controlled) };
        Ok(Poller { stop, tasks, in_flight, invocations, controls })
    }

    /// The mappings' switches (shared: a change through them is a change of the running poller).
    pub fn controls(&self) -> EventSourceControls {
        self.controls.clone()
    }

    /// Stops (or restarts) receiving for `function`'s event sources. Pausing returns once no receive or batch
    /// of theirs is in progress, so every message sent afterwards waits on the queue; on resume the next
    /// receive takes up to a whole batch of them at once.
    pub async fn pause(&self, function: &str, paused: bool) {
        let pauses: Vec<&Arc<Pause>> =
            self.controls.mappings.iter().filter(|m| m.function_name == function).map(|m| &m.pause).collect();
        for pause in &pauses {
            pause.requested.store(paused, Ordering::SeqCst);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while paused && pauses.iter().any(|p| !p.holding.load(Ordering::SeqCst)) && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a batch is being handled right now (received and not yet deleted or released).
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Every invocation so far, oldest first.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.invocations.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops polling and waits for the batches in flight to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<String, aws_sdk_sqs::Error> {
    let attributes =
        sqs.get_queue_attributes().queue_url(queue_url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    Ok(attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_else(|| queue_url.to_owned()))
}

struct Worker {
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
    invoke_url: String,
    region: String,
    queue_arn: String,
    mapping: EventSourceMapping,
    deaths: Option<Mutex<fastrand::Rng>>,
    log: LogSink,
    in_flight: Arc<AtomicUsize>,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    paused: Arc<Pause>,
}

/// A mapping's pause: asked for, and taken (the worker is between batches and receives nothing).
#[derive(Debug, Default)]
struct Pause {
    requested: AtomicBool,
    holding: AtomicBool,
}

impl Worker {
    async fn run(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let queue = self.mapping.queue_url.rsplit('/').next().unwrap_or_default().to_owned();
        self.log.line(format!("polling {queue} for {}", self.mapping.function_name));
        loop {
            if *stopped.borrow() {
                return;
            }
            let paused = self.paused.requested.load(Ordering::SeqCst);
            self.paused.holding.store(paused, Ordering::SeqCst);
            if paused {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                }
            }
            let received = tokio::select! {
                _ = stopped.changed() => return,
                received = self.receive() => received,
            };
            match received {
                Ok(messages) if !messages.is_empty() => {
                    // Received messages stay counted as "not visible" by SQS until deleted or released, so
                    // "every queue empty and no batch in hand" means the pipeline is idle.
                    self.in_flight.fetch_add(1, Ordering::SeqCst);
                    self.handle(&queue, messages).await;
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => {
                    self.log.line(format!("{queue}: receive failed: {e}"));
                    // Back off a little so a stopped moto does not spin this loop.
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn receive(&self) -> Result<Vec<Message>, String> {
        self.sqs
            .receive_message()
            .queue_url(&self.mapping.queue_url)
            .max_number_of_messages(self.mapping.batch_size.clamp(1, 10))
            .wait_time_seconds(self.mapping.wait_time_seconds.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map(|output| output.messages.unwrap_or_default())
            .map_err(|e| aws_sdk_sqs::Error::from(e).to_string())
    }

    async fn handle(&self, queue: &str, messages: Vec<Message>) {
        let message_ids: Vec<String> = messages.iter().filter_map(|m| m.message_id.clone()).collect();
        let invoked_at = std::time::Instant::now();
        let outcome = match self.death(messages.len()) {
            // The function handles the first `handled` records, then dies before answering.
            Some(handled) => {
                let _ = self.invoke(&sqs_event(&messages[..handled], &self.queue_arn, &self.region)).await;
                Err(format!("{INJECTED_DEATH} after {handled} of {} record(s)", messages.len()))
            }
            None => self.invoke(&sqs_event(&messages, &self.queue_arn, &self.region)).await,
        };
        let duration = invoked_at.elapsed();
        let failed: HashSet<String> = match &outcome {
            Ok(failures) => failures.iter().cloned().collect(),
            Err(_) => message_ids.iter().cloned().collect(),
        };
        let mut failed_ids = Vec::new();
        let mut failed_groups = HashSet::new();
        for message in &messages {
            let id = message.message_id.clone().unwrap_or_default();
            let Some(receipt) = message.receipt_handle() else { continue };
            if !failed.contains(&id) {
                if let Err(e) =
                    self.sqs.delete_message().queue_url(&self.mapping.queue_url).receipt_handle(receipt).send().await
                {
                    self.log.line(format!("{queue}: could not delete {id}: {}", aws_sdk_sqs::Error::from(e)));
                }
                continue;
            }
            failed_ids.push(id.clone());
            // The first failed record of a group waits out the retry delay; its later group-mates are released
            // at once. SQS still holds them back behind the first (the group is locked while it is in flight),
            // and moto, which would otherwise hand out the last of the group first, keeps their order.
            let group = message.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned();
            let later_in_group = group.as_ref().is_some_and(|g| !failed_groups.insert(g.clone()));
            let visibility = match (later_in_group, self.mapping.function_sets_visibility && outcome.is_ok()) {
                (_, true) => None,
                (true, false) => Some(0),
                (false, false) => self.mapping.retry_after_seconds,
            };
            if let Some(seconds) = visibility {
                let changed = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.mapping.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds)
                    .send()
                    .await;
                if let Err(e) = changed {
                    self.log
                        .line(format!("{queue}: could not change visibility of {id}: {}", aws_sdk_sqs::Error::from(e)));
                }
            }
        }
        let error = outcome.err();
        self.log.line(format!(
            "{queue} -> {}: {} record(s), {} deleted, {} failed{}",
            self.mapping.function_name,
            messages.len(),
            messages.len() - failed_ids.len(),
            failed_ids.len(),
            error.as_deref().map(|e| format!(" (invocation failed: {e})")).unwrap_or_default()
        ));
        self.invocations.lock().unwrap_or_else(|p| p.into_inner()).push(Invocation {
            queue_url: self.mapping.queue_url.clone(),
            function_name: self.mapping.function_name.clone(),
            message_ids,
            failed_ids,
            error,
            duration,
        });
    }

    /// With an injected death due for this batch of `n`: how many records the function handles first.
    fn death(&self, n: usize) -> Option<usize> {
        let rate = self.mapping.deaths.as_ref()?.rate;
        let mut rng = self.deaths.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
        (n > 0 && rng.f64() < rate).then(|| rng.usize(1..=n))
    }

    /// Invokes the function; `Ok` holds the ids it reported as failed.
    async fn invoke(&self, event: &Value) -> Result<Vec<String>, String> {
        let response = self
            .http
            .post(&self.invoke_url)
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let function_error = response.headers().get("x-amz-function-error").is_some();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() || function_error {
            return Err(format!("HTTP {status}: {}", body.chars().take(300).collect::<String>()));
        }
        batch_item_failures(&body)
    }
}

/// Reads a function's answer the way the event source mapping does: nothing, `null`, `{}` or an empty
/// list means every record succeeded; a failure without a usable `itemIdentifier` fails the whole batch.
pub fn batch_item_failures(body: &str) -> Result<Vec<String>, String> {
    let trimmed = body.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(trimmed).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if value.get("errorType").is_some() || value.get("errorMessage").is_some() {
        return Err(format!("function error: {value}"));
    }
    match value.get("batchItemFailures") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(failures)) => failures
            .iter()
            .map(|failure| match failure.get("itemIdentifier").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => Ok(id.to_owned()),
                _ => Err(format!("batchItemFailures entry without itemIdentifier: {failure}")),
            })
            .collect(),
        Some(other) => Err(format!("batchItemFailures is not a list: {other}")),
    }
}

/// The SQS event Lambda hands a function, built from received messages.
pub fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, queue_arn, region)).collect();
    json!({ "Records": records })
}

fn sqs_record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: HashMap<String, String> = message
        .attributes()
        .map(|attributes| attributes.iter().map(|(name, value)| (name.as_str().to_owned(), value.clone())).collect())
        .unwrap_or_default();
    let message_attributes: serde_json::Map<String, Value> = message
        .message_attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| {
                    let binary = value.binary_value().map(|b| base64_encode(b.as_ref()));
                    (
                        name.clone(),
                        json!({
                            "stringValue": value.string_value(),
                            "binaryValue": binary,
                            "stringListValues": value.string_list_values(),
                            "binaryListValues": value.binary_list_values().iter().map(|b| base64_encode(b.as_ref())).collect::<Vec<_>>(),
                            "dataType": value.data_type(),
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body(),
        "md5OfMessageAttributes": message.md5_of_message_attributes(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_answer_means_every_record_succeeded() {
        assert_eq!(batch_item_failures(""), Ok(vec![]));
        assert_eq!(batch_item_failures("null"), Ok(vec![]));
        assert_eq!(batch_item_failures("{}"), Ok(vec![]));
        assert_eq!(batch_item_failures(r#"{"batchItemFailures":[]}"#), Ok(vec![]));
    }

    #[test]
    fn reported_failures_are_returned_and_malformed_ones_fail_the_batch() {
        assert_eq!(
            batch_item_failures(r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"}]}"#),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(batch_item_failures(r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#).is_err());
        assert!(batch_item_failures(r#"{"batchItemFailures":[{}]}"#).is_err());
        assert!(batch_item_failures(r#"{"errorType":"Panic","errorMessage":"boom"}"#).is_err());
        assert!(batch_item_failures("not json").is_err());
    }
}
