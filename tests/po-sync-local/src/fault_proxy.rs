//! A fault-injecting HTTP proxy between the functions and moto: the functions' `AWS_ENDPOINT_URL` points here,
//! and every request is passed to moto unchanged, except that, at seeded rates, a fault is answered instead:
//!
//! | kind                 | calls                                   | what the caller sees                                   |
//! |----------------------|-----------------------------------------|--------------------------------------------------------|
//! | `sqs_fail`           | `SendMessage` (any queue)               | 500 `InternalError`                                    |
//! | `sqs_throttle`       | `SendMessage` (any queue)               | 400 `RequestThrottled`                                 |
//! | `sqs_slow`           | `SendMessage` to the queue named `slow_queue` | sent to moto, answered after `slow_ms`            |
//! | `ses_fail`           | `SendRawEmail`                          | 503 `ServiceUnavailable`                               |
//! | `ses_throttle`       | `SendRawEmail`                          | 400 `Throttling` ("Maximum sending rate exceeded.")    |
//! | `ses_lost_response`  | `SendRawEmail`                          | moto sends it, the caller gets 500 `InternalFailure`   |
//! | `dynamodb_throttle`  | `GetItem`, `PutItem`                    | 400 `ThrottlingException`                              |
//!
//! Faults come in short bursts, as throttling and outages do: at a request of a kind's calls, with the kind's
//! probability a burst of 1 to `max_burst` failed answers begins (this one included). The AWS SDK retries a
//! throttled or failed call itself (3 attempts), so a burst longer than that reaches the function's own
//! handling. Each kind draws from its own generator seeded from `seed`: the schedule of faults is fixed by the
//! seed, which request meets which fault depends on how concurrent callers interleave.
//!
//! It also plays one part of SQS moto does not: a FIFO queue drops a message whose deduplication id it accepted in
//! the last five minutes *even after that message was received and deleted* (moto forgets the id once the
//! message is deleted), answering as if it had sent it. The proxy answers such a send itself, with SQS's first
//! answer, and does not pass it on.
//!
//! The proxy also keeps what the accounting needs: every `SendMessage` moto accepted (queue, body, group,
//! deduplication id, message id) and the `Message-ID` of every e-mail it passed to SES, with whether its answer
//! was withheld.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use serde::Serialize;

/// The kinds of fault the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AwsFault {
    SqsFail,
    SqsThrottle,
    SqsSlow,
    SesFail,
    SesThrottle,
    SesLostResponse,
    DynamodbThrottle,
}

impl AwsFault {
    pub const ALL: [AwsFault; 7] = [
        AwsFault::SqsFail,
        AwsFault::SqsThrottle,
        AwsFault::SqsSlow,
        AwsFault::SesFail,
        AwsFault::SesThrottle,
        AwsFault::SesLostResponse,
        AwsFault::DynamodbThrottle,
    ];

    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// What to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyFaults {
    pub seed: u64,
    /// Per kind: the probability that a burst begins at a request of its calls.
    pub rates: BTreeMap<AwsFault, f64>,
    /// Longest burst, in failed answers (at least 1).
    pub max_burst: u32,
    /// `sqs_slow` applies to `SendMessage` to the queue whose URL ends with this name; empty: the local
    /// pipeline fills in ingest's queue.
    pub slow_queue: String,
    /// How late a slow `SendMessage` is answered.
    pub slow_ms: u64,
}

impl ProxyFaults {
    /// No faults at all: the proxy only passes requests on (and records them).
    pub fn none(seed: u64) -> Self {
        ProxyFaults { seed, rates: BTreeMap::new(), max_burst: 4, slow_queue: String::new(), slow_ms: 0 }
    }
}

/// A `SendMessage` moto accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    pub queue_url: String,
    pub body: String,
    pub group_id: String,
    pub deduplication_id: String,
    pub message_id: String,
}

impl SentMessage {
    /// The queue's name (the URL's last segment).
    pub fn queue_name(&self) -> &str {
        self.queue_url.rsplit('/').next().unwrap_or_default()
    }
}

/// An e-mail passed to SES.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardedEmail {
    /// The `Message-ID` header of the MIME message (without `<>`).
    pub message_id: String,
    /// moto accepted it (2xx).
    pub accepted: bool,
    /// The caller was told it failed although moto accepted it (`ses_lost_response`).
    pub answer_withheld: bool,
}

#[derive(Default)]
struct Record {
    injected: BTreeMap<AwsFault, u64>,
    bursts: BTreeMap<AwsFault, u64>,
    sent: Vec<SentMessage>,
    emails: Vec<ForwardedEmail>,
    forwarded: u64,
    /// (queue name, deduplication id) -> when SQS accepted it, and its answer.
    accepted: HashMap<(String, String), (Instant, StatusCode, HeaderMap, Bytes)>,
    deduplicated: u64,
}

/// SQS FIFO's deduplication interval.
const DEDUPLICATION_INTERVAL: Duration = Duration::from_secs(300);

struct Injector {
    rng: fastrand::Rng,
    remaining: u32,
}

struct Shared {
    upstream: String,
    faults: ProxyFaults,
    http: reqwest::Client,
    injectors: Mutex<BTreeMap<AwsFault, Injector>>,
    record: Mutex<Record>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Whether this call of `kind` fails (starting or continuing a burst); counts it.
    fn strikes(&self, kind: AwsFault) -> bool {
        let rate = self.faults.rates.get(&kind).copied().unwrap_or(0.0);
        if rate <= 0.0 {
            return false;
        }
        let mut injectors = lock(&self.injectors);
        let injector = injectors.entry(kind).or_insert_with(|| Injector {
            rng: fastrand::Rng::with_seed(self.faults.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(kind as u64 + 1))),
            remaining: 0,
        });
        let strikes = if injector.remaining > 0 {
            injector.remaining -= 1;
            true
        } else if injector.rng.f64() < rate {
            // A slow answer is one slow answer; the other kinds come in bursts.
            let longest = if kind == AwsFault::SqsSlow { 1 } else { self.faults.max_burst.max(1) };
            injector.remaining = injector.rng.u32(1..=longest) - 1;
            lock(&self.record).bursts.entry(kind).and_modify(|n| *n += 1).or_insert(1);
            true
        } else {
            false
        };
        if strikes {
            lock(&self.record).injected.entry(kind).and_modify(|n| *n += 1).or_insert(1);
        }
        strikes
    }
}

/// The running proxy; stops when dropped.
pub struct RunningProxy {
    shared: Arc<Shared>,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Starts the proxy on a free 127.0.0.1 port, in front of `upstream` (`http://127.0.0.1:PORT` of moto).
    pub async fn start(upstream: &str, faults: ProxyFaults) -> std::io::Result<RunningProxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            faults,
            http,
            injectors: Mutex::new(BTreeMap::new()),
            record: Mutex::new(Record::default()),
        });
        let app = Router::new().fallback(handle).layer(DefaultBodyLimit::disable()).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(RunningProxy { shared, address, stop: Some(stop), task })
    }

    /// `http://127.0.0.1:PORT`, the functions' `AWS_ENDPOINT_URL`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Failed answers injected so far, per kind.
    pub fn injected(&self) -> BTreeMap<AwsFault, u64> {
        lock(&self.shared.record).injected.clone()
    }

    /// Bursts begun so far, per kind.
    pub fn bursts(&self) -> BTreeMap<AwsFault, u64> {
        lock(&self.shared.record).bursts.clone()
    }

    /// Every `SendMessage` moto accepted, in order.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        lock(&self.shared.record).sent.clone()
    }

    /// How many `SendMessage`s to the queue named `queue_name` moto accepted so far.
    pub fn sent_to(&self, queue_name: &str) -> usize {
        lock(&self.shared.record).sent.iter().filter(|m| m.queue_name() == queue_name).count()
    }

    /// Every e-mail passed to SES, in order.
    pub fn emails(&self) -> Vec<ForwardedEmail> {
        lock(&self.shared.record).emails.clone()
    }

    /// `SendMessage`s answered by the proxy as SQS does for a deduplication id it accepted in the last five minutes.
    pub fn deduplicated(&self) -> u64 {
        lock(&self.shared.record).deduplicated
    }

    /// Requests passed on to moto.
    pub fn forwarded(&self) -> u64 {
        lock(&self.shared.record).forwarded
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// What a request is, as far as faults go.
enum Call {
    SendMessage { queue_url: String, body: String, group_id: String, deduplication_id: String },
    SendRawEmail { message_id: String },
    LedgerItem,
    Other,
}

fn classify(headers: &HeaderMap, body: &[u8]) -> Call {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if target == "AmazonSQS.SendMessage" {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |name: &str| json.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        return Call::SendMessage {
            queue_url: text("QueueUrl"),
            body: text("MessageBody"),
            group_id: text("MessageGroupId"),
            deduplication_id: text("MessageDeduplicationId"),
        };
    }
    if matches!(target, "DynamoDB_20120810.GetItem" | "DynamoDB_20120810.PutItem") {
        return Call::LedgerItem;
    }
    let form = form_fields(body);
    if form.iter().any(|(k, v)| k == "Action" && v == "SendRawEmail") {
        let raw = form.iter().find(|(k, _)| k == "RawMessage.Data").map(|(_, v)| v.as_str()).unwrap_or_default();
        let mime = base64::engine::general_purpose::STANDARD.decode(raw.trim()).unwrap_or_default();
        return Call::SendRawEmail { message_id: mime_message_id(&String::from_utf8_lossy(&mime)).unwrap_or_default() };
    }
    Call::Other
}

/// The fields of an `application/x-www-form-urlencoded` body (the query protocol SES speaks).
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let Ok(text) = std::str::from_utf8(body) else { return Vec::new() };
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Message-ID` header of a MIME message, without its angle brackets.
pub fn mime_message_id(mime: &str) -> Option<String> {
    let headers = mime.split("\r\n\r\n").next().unwrap_or(mime);
    headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("message-id").then(|| value.trim().to_owned())
        })
        .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_owned())
}

fn error(status: StatusCode, content_type: &'static str, body: String, query_error: Option<&str>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
    response.headers_mut().insert("x-amzn-requestid", HeaderValue::from_static("po-sync-fault-proxy"));
    if let Some(code) = query_error.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert("x-amzn-query-error", code);
    }
    response
}

/// An SQS error in the JSON protocol (with the query-compatible code header SQS sends).
fn sqs_error(status: StatusCode, code: &str, message: &str, fault: &str) -> Response {
    let body = serde_json::json!({ "__type": format!("com.amazonaws.sqs#{code}"), "message": message }).to_string();
    error(status, "application/x-amz-json-1.0", body, Some(&format!("{code};{fault}")))
}

/// An SES error in the query protocol.
fn ses_error(status: StatusCode, code: &str, message: &str, fault: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><Error><Type>{fault}</Type><Code>{code}</Code>\
         <Message>{message}</Message></Error><RequestId>po-sync-fault-proxy</RequestId></ErrorResponse>"
    );
    error(status, "text/xml", body, None)
}

fn dynamodb_error(code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message })
        .to_string();
    error(StatusCode::BAD_REQUEST, "application/x-amz-json-1.0", body, None)
}

const HOP_BY_HOP: [&str; 5] = ["host", "content-length", "connection", "transfer-encoding", "keep-alive"];

async fn forward(shared: &Shared, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = shared.http.request(method, format!("{}{path}", shared.upstream)).body(body);
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    lock(&shared.record).forwarded += 1;
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut response_headers = HeaderMap::new();
            for (name, value) in answer.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    response_headers.insert(HeaderName::from(name), value.clone());
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            *response.headers_mut() = response_headers;
            response
        }
        // moto itself failed: say so the way a gateway would.
        Err(e) => error(StatusCode::BAD_GATEWAY, "text/plain", format!("fault proxy: moto did not answer: {e}"), None),
    }
}

async fn body_text(response: Response) -> (Response, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    (Response::from_parts(parts, Body::from(bytes.clone())), bytes)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match classify(&headers, &body) {
        Call::SendMessage { queue_url, body: message_body, group_id, deduplication_id } => {
            let slow = !shared.faults.slow_queue.is_empty()
                && queue_url.ends_with(&format!("/{}", shared.faults.slow_queue))
                && shared.strikes(AwsFault::SqsSlow);
            if !slow {
                if shared.strikes(AwsFault::SqsFail) {
                    return sqs_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "injected failure",
                        "Receiver",
                    );
                }
                if shared.strikes(AwsFault::SqsThrottle) {
                    return sqs_error(StatusCode::BAD_REQUEST, "RequestThrottled", "Rate exceeded", "Sender");
                }
            }
            let key = (queue_url.rsplit('/').next().unwrap_or_default().to_owned(), deduplication_id.clone());
            let earlier = {
                let mut record = lock(&shared.record);
                let earlier =
                    record.accepted.get(&key).filter(|(at, ..)| at.elapsed() < DEDUPLICATION_INTERVAL).cloned();
                if earlier.is_some() {
                    record.deduplicated += 1;
                }
                earlier
            };
            if let Some((_, status, headers, bytes)) = earlier {
                let mut response = Response::new(Body::from(bytes));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                return response;
            }
            let response = forward(&shared, method, &uri, &headers, body).await;
            let (response, bytes) = body_text(response).await;
            if response.status().is_success() {
                lock(&shared.record)
                    .accepted
                    .insert(key, (Instant::now(), response.status(), response.headers().clone(), bytes.clone()));
                let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let message_id = answer.get("MessageId").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                lock(&shared.record).sent.push(SentMessage {
                    queue_url,
                    body: message_body,
                    group_id,
                    deduplication_id,
                    message_id,
                });
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(shared.faults.slow_ms)).await;
            }
            response
        }
        Call::SendRawEmail { message_id } => {
            if shared.strikes(AwsFault::SesFail) {
                return ses_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "Service unavailable",
                    "Receiver",
                );
            }
            if shared.strikes(AwsFault::SesThrottle) {
                return ses_error(StatusCode::BAD_REQUEST, "Throttling", "Maximum sending rate exceeded.", "Sender");
            }
            let withhold = shared.strikes(AwsFault::SesLostResponse);
            let response = forward(&shared, method, &uri, &headers, body).await;
            let accepted = response.status().is_success();
            lock(&shared.record).emails.push(ForwardedEmail {
                message_id,
                accepted,
                answer_withheld: withhold && accepted,
            });
            if withhold {
                return ses_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalFailure",
                    "injected: answer lost",
                    "Receiver",
                );
            }
            response
        }
        Call::LedgerItem => {
            if shared.strikes(AwsFault::DynamodbThrottle) {
                return dynamodb_error("ThrottlingException", "Rate of requests exceeds the allowed throughput.");
            }
            forward(&shared, method, &uri, &headers, body).await
        }
        Call::Other => forward(&shared, method, &uri, &headers, body).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_percent_decoded() {
        let fields = form_fields(b"Action=SendRawEmail&RawMessage.Data=YWJj%2Bw%3D%3D&Source=a%40b.com&X=1+2");
        assert_eq!(fields[1], ("RawMessage.Data".to_owned(), "YWJj+w==".to_owned()));
        assert_eq!(fields[2].1, "a@b.com");
        assert_eq!(fields[3].1, "1 2");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn the_message_id_header_is_read_from_the_mime_headers() {
        let mime = "From: a@b.com\r\nMessage-ID: <po-sync.abc.dead_lettered@example.com>\r\nSubject: x\r\n\r\nMessage-ID: <not-this>";
        assert_eq!(mime_message_id(mime).as_deref(), Some("po-sync.abc.dead_lettered@example.com"));
        assert_eq!(mime_message_id("Subject: x\r\n\r\nbody"), None);
    }

    #[test]
    fn bursts_follow_the_seed_and_are_counted() {
        let shared = |seed| Shared {
            upstream: String::new(),
            faults: ProxyFaults { rates: BTreeMap::from([(AwsFault::SesThrottle, 0.2)]), ..ProxyFaults::none(seed) },
            http: reqwest::Client::new(),
            injectors: Mutex::new(BTreeMap::new()),
            record: Mutex::new(Record::default()),
        };
        let (a, b) = (shared(7), shared(7));
        let run = |s: &Shared| (0..500).map(|_| s.strikes(AwsFault::SesThrottle)).collect::<Vec<_>>();
        let first = run(&a);
        assert_eq!(first, run(&b), "same seed, same schedule");
        let injected = first.iter().filter(|x| **x).count() as u64;
        assert!(injected > 20, "{injected}");
        assert_eq!(lock(&a.record).injected[&AwsFault::SesThrottle], injected);
        assert!(!shared(7).strikes(AwsFault::SqsFail), "a kind without a rate never strikes");
    }
}
