//! The soak's webhook sender: sends each PO's steps in order (POs concurrently), retries like a webhook sender
//! does (on 5xx, timeouts and connection errors, with exponential backoff and jitter, a bounded number of
//! times), and records every answer.
//!
//! Each HTTP request carries its own request id (`lambda-runtime-aws-request-id`, which `cargo lambda watch`
//! uses as the Function URL event's `requestContext.requestId`, as API Gateway assigns one per request), so
//! the send ingest queued for it can be found: ingest makes it the envelope's `sendId` and the SQS
//! deduplication id.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::traffic::{Change, PoScript, Shape};

#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// ingest's Function URL.
    pub url: String,
    pub username: String,
    pub password: String,
    /// Per request: a slower answer counts as a timeout and is retried.
    pub timeout: Duration,
    /// Requests per webhook, the first included.
    pub max_attempts: u32,
    /// Before the first retry; doubles for each next one (with jitter), capped at 2 s.
    pub backoff: Duration,
    /// Pause between two steps of one PO, drawn from 0..=this.
    pub think: Duration,
    pub seed: u64,
}

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    Status { status: u16, body: String },
    Timeout,
    Error { error: String },
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether a webhook sender tries again after this answer.
    pub fn retryable(&self) -> bool {
        match self {
            Answer::Status { status, .. } => *status >= 500,
            Answer::Timeout | Answer::Error { .. } => true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub request_id: String,
    /// Milliseconds since the sender started.
    pub sent_at_ms: u64,
    pub took_ms: u64,
    pub answer: Answer,
}

/// How a webhook ended for its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// 200 `{"status":"1"}`.
    Acknowledged,
    /// A 4xx: the sender does not retry.
    Refused,
    /// Still 5xx or no answer after the last attempt.
    GaveUp,
}

/// Every request for one step of one PO.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookLog {
    pub po_id: u64,
    pub po_number: String,
    pub step: usize,
    pub change: Change,
    pub shape: Shape,
    pub sha256: String,
    pub phase: u8,
    pub attempts: Vec<Attempt>,
    pub ending: Ending,
}

impl WebhookLog {
    pub fn retries(&self) -> usize {
        self.attempts.len().saturating_sub(1)
    }

    /// The request id of the acknowledged request.
    pub fn acknowledged_by(&self) -> Option<&str> {
        (self.ending == Ending::Acknowledged).then(|| self.attempts.last().map(|a| a.request_id.as_str())).flatten()
    }
}

/// Sends the steps of `phase` of every PO with `concurrency` workers (each takes the next PO and sends its steps
/// of the phase in order); `offered` counts webhooks as they are started. Returns the logs, in no given order.
pub async fn send_phase(
    options: &SenderOptions,
    pos: &[PoScript],
    phase: u8,
    concurrency: usize,
    offered: Arc<AtomicUsize>,
    started: Instant,
) -> Vec<WebhookLog> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let pos: Arc<Vec<PoScript>> = Arc::new(pos.to_vec());
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (http, next, pos, offered, options) =
            (http.clone(), next.clone(), pos.clone(), offered.clone(), options.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(options.seed ^ ((phase as u64) << 32) ^ worker as u64);
            let mut logs = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(po) = pos.get(index) else { break };
                for (step_index, step) in po.steps.iter().enumerate().filter(|(_, s)| s.phase == phase) {
                    offered.fetch_add(1, Ordering::SeqCst);
                    let wrong_password = step.change == Change::WrongPassword;
                    let mut attempts = Vec::new();
                    let ending = loop {
                        let attempt_no = attempts.len() + 1;
                        let request_id = format!("soak-{}-{}-{step_index}-{attempt_no}", options.seed, po.po_id);
                        let attempt =
                            send_once(&http, &options, &request_id, &step.body, wrong_password, started).await;
                        let answer = attempt.answer.clone();
                        attempts.push(attempt);
                        match answer.status() {
                            Some(200..=299) => break Ending::Acknowledged,
                            Some(400..=499) => break Ending::Refused,
                            _ if attempts.len() as u32 >= options.max_attempts => break Ending::GaveUp,
                            _ => {}
                        }
                        let doubling = options.backoff * 2u32.saturating_pow(attempts.len() as u32 - 1);
                        let wait = doubling.mul_f64(0.5 + rng.f64()).min(Duration::from_secs(2));
                        tokio::time::sleep(wait).await;
                    };
                    logs.push(WebhookLog {
                        po_id: po.po_id,
                        po_number: po.po_number.clone(),
                        step: step_index,
                        change: step.change,
                        shape: step.shape,
                        sha256: step.sha256.clone(),
                        phase,
                        attempts,
                        ending,
                    });
                    if !options.think.is_zero() {
                        let think = options.think.mul_f64(rng.f64());
                        tokio::time::sleep(think).await;
                    }
                }
            }
            logs
        }));
    }
    let mut logs = Vec::new();
    for worker in workers {
        if let Ok(mut done) = worker.await {
            logs.append(&mut done);
        }
    }
    logs
}

async fn send_once(
    http: &reqwest::Client,
    options: &SenderOptions,
    request_id: &str,
    body: &[u8],
    wrong_password: bool,
    started: Instant,
) -> Attempt {
    let password = if wrong_password { "not-the-password" } else { options.password.as_str() };
    let sent_at = Instant::now();
    let sent = http
        .post(&options.url)
        .header("content-type", "application/json")
        .header("authorization", po_sync_test_support::basic_authorization(&options.username, password))
        .header("lambda-runtime-aws-request-id", request_id)
        .timeout(options.timeout)
        .body(body.to_vec())
        .send()
        .await;
    let answer = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(body) => Answer::Status { status, body },
                Err(e) if e.is_timeout() => Answer::Timeout,
                Err(e) => Answer::Error { error: e.to_string() },
            }
        }
        Err(e) if e.is_timeout() => Answer::Timeout,
        Err(e) => Answer::Error { error: e.to_string() },
    };
    Attempt {
        request_id: request_id.to_owned(),
        sent_at_ms: sent_at.duration_since(started).as_millis() as u64,
        took_ms: sent_at.elapsed().as_millis() as u64,
        answer,
    }
}
