//! The plumbing the local sandboxes (`appzen_sandbox`, `exsited_sandbox`) share: failures injected into the
//! next requests and counted down, requests recorded without their secrets, and serving on 127.0.0.1 in the
//! background. Each sandbox keeps its contract, its answers and which requests a failure applies to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Defines a sandbox's `Failure`: the fields every sandbox takes (`times`, `status`, `retry_after`, `delay_ms`,
/// `delay_after_ms`, `message`), then the sandbox's own, which say which requests it applies to. A macro
/// rather than a generic struct so that callers keep writing `Failure { po_number: …, ..Failure::default() }`.
macro_rules! injected_failure {
    ($(#[$attribute:meta])* pub struct $name:ident { $($own_fields:tt)* }) => {
        $(#[$attribute])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            /// How many requests fail this way; `None` means every request until reset.
            pub times: Option<u32>,
            /// Status to answer instead of processing (429, 500, 503, 400…). `None` with a delay: answer
            /// normally, late.
            pub status: Option<u16>,
            /// `Retry-After` header, in seconds (gateways send it with 429).
            pub retry_after: Option<u32>,
            /// Wait this long before answering (before processing).
            pub delay_ms: Option<u64>,
            /// Process the request as usual, then hold the answer back this long: an answer the client may have
            /// given up on although the sandbox acted on the request.
            pub delay_after_ms: Option<u64>,
            /// The `message` of the error.
            pub message: Option<String>,
            $($own_fields)*
        }

        impl $crate::sandbox_kit::Countdown for $name {
            fn times_mut(&mut self) -> &mut Option<u32> {
                &mut self.times
            }
        }
    };
}
pub(crate) use injected_failure;

/// Defines a sandbox's `RecordedRequest`: what every sandbox records of a request and its answer, with the
/// sandbox's own fields after `path`. A macro rather than a generic struct so that callers keep building one
/// with a plain struct literal.
macro_rules! recorded_request {
    (
        $(#[$attribute:meta])*
        pub struct $name:ident {
            $( $(#[$field_attribute:meta])* pub $field:ident: $field_type:ty, )*
        }
    ) => {
        $(#[$attribute])*
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        pub struct $name {
            /// 1, 2, … in arrival order.
            pub seq: u64,
            pub received_at: String,
            pub method: String,
            pub path: String,
            $( $(#[$field_attribute])* pub $field: $field_type, )*
            /// Lower-case names; the credential headers are left out.
            pub headers: ::std::collections::HashMap<String, String>,
            /// The body as sent (lossy only if it was not UTF-8), but for the secrets the sandbox redacts.
            pub body: String,
            /// The answer's status, `None` while the answer is still being prepared (a slow call).
            pub response_status: Option<u16>,
            /// The answer's body, redacted like the request's.
            pub response_body: Option<String>,
        }

        impl $name {
            /// The body as JSON (numbers as `f64`: for exact comparisons use `po_sync::json::parse(body)`).
            pub fn json(&self) -> Option<::serde_json::Value> {
                ::serde_json::from_str(&self.body).ok()
            }
        }

        impl $crate::sandbox_kit::Recorded for $name {
            fn received(
                seq: u64,
                method: String,
                path: String,
                headers: ::std::collections::HashMap<String, String>,
                body: String,
            ) -> Self {
                $name {
                    seq,
                    received_at: ::chrono::Utc::now().to_rfc3339(),
                    method,
                    path,
                    $( $field: Default::default(), )*
                    headers,
                    body,
                    response_status: None,
                    response_body: None,
                }
            }

            fn seq(&self) -> u64 {
                self.seq
            }

            fn answered(&mut self, status: u16, body: String) {
                self.response_status = Some(status);
                self.response_body = Some(body);
            }
        }
    };
}
pub(crate) use recorded_request;

/// A failure that fails a number of requests (a sandbox's `Failure`, defined with `injected_failure!`).
pub trait Countdown {
    /// How many requests are still to fail; `None`: every one until reset.
    fn times_mut(&mut self) -> &mut Option<u32>;
}

/// The first queued failure that `applies` to this request, counted down (and dropped once spent).
pub fn take_failure<F: Countdown + Clone>(queue: &mut Vec<F>, applies: impl Fn(&F) -> bool) -> Option<F> {
    // `times: Some(0)` queued from outside fails nothing.
    queue.retain_mut(|failure| *failure.times_mut() != Some(0));
    let index = queue.iter().position(applies)?;
    let failure = &mut queue[index];
    let current = failure.clone();
    match failure.times_mut() {
        Some(1) => {
            queue.remove(index);
        }
        Some(n) => *n -= 1,
        None => {}
    }
    Some(current)
}

/// A request record (a sandbox's `RecordedRequest`, defined with `recorded_request!`).
pub trait Recorded {
    /// The record of a request just received, its answer still to come; the sandbox's own fields empty.
    fn received(seq: u64, method: String, path: String, headers: HashMap<String, String>, body: String) -> Self;
    fn seq(&self) -> u64;
    fn answered(&mut self, status: u16, body: String);
}

/// The headers to record: lower-case names, values as text passed through `redact`, `secret_headers` left out.
pub fn recorded_headers(
    headers: &HeaderMap,
    secret_headers: &[&str],
    redact: impl Fn(String) -> String,
) -> HashMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| !secret_headers.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), redact(String::from_utf8_lossy(value.as_bytes()).into_owned())))
        .collect()
}

/// Appends the request to `requests`, numbered after the last; the new record, for the sandbox's own fields.
pub fn record<'a, R: Recorded>(
    requests: &'a mut Vec<R>,
    method: &Method,
    uri: &Uri,
    headers: HashMap<String, String>,
    body: String,
) -> &'a mut R {
    let seq = requests.len() as u64 + 1;
    requests.push(R::received(seq, method.to_string(), uri.path().to_owned(), headers, body));
    let last = requests.len() - 1;
    &mut requests[last]
}

/// Notes the answer given to request `seq` (nothing if a reset forgot the request meanwhile).
pub fn record_answer<R: Recorded>(requests: &mut [R], seq: u64, status: u16, body: String) {
    if let Some(request) = requests.iter_mut().find(|r| r.seq() == seq) {
        request.answered(status, body);
    }
}

/// The control endpoints every sandbox has, over the sandbox's own methods:
/// - `GET /_sandbox/requests`: `requests`, as JSON;
/// - `POST /_sandbox/fail` with a failure as JSON: `fail_next`, answering `{"queued": failure}`, or `refuse`
///   (the sandbox's 400 in its own error shape) naming what it expected;
/// - `POST /_sandbox/reset`: `reset`, answering `{"reset": true}`.
pub fn control_routes<S, R, F>(
    requests: fn(&S) -> Vec<R>,
    fail_next: fn(&S, F),
    reset: fn(&S),
    refuse: fn(String) -> Response,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    R: Serialize + Send + 'static,
    F: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    Router::new()
        .route(
            "/_sandbox/requests",
            get(move |State(sandbox): State<S>| async move { axum::Json(requests(&sandbox)).into_response() }),
        )
        .route(
            "/_sandbox/fail",
            post(move |State(sandbox): State<S>, body: Bytes| async move {
                match serde_json::from_slice::<F>(&body) {
                    Ok(failure) => {
                        fail_next(&sandbox, failure.clone());
                        axum::Json(json!({ "queued": failure })).into_response()
                    }
                    Err(e) => refuse(format!("expected {{\"times\":N,\"status\":S,...}}: {e}")),
                }
            }),
        )
        .route(
            "/_sandbox/reset",
            post(move |State(sandbox): State<S>| async move {
                reset(&sandbox);
                axum::Json(json!({ "reset": true })).into_response()
            }),
        )
}

/// Locks a sandbox's state even after a panic elsewhere: no lock is held across an await, and a panicking
/// handler cannot leave the state half-written in a way a test would trip on.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Starts serving `router` on 127.0.0.1 (port 0: a free one) in a background task; `sandbox` is the handle on
/// its state that the result gives access to.
pub async fn spawn<S>(sandbox: S, router: Router, port: u16) -> std::io::Result<RunningSandbox<S>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = serve(router, listener, async move {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(RunningSandbox { sandbox, address, stop: Some(stop), task })
}

/// A sandbox serving in the background; stops when dropped.
pub struct RunningSandbox<S> {
    pub sandbox: S,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl<S> RunningSandbox<S> {
    /// `http://127.0.0.1:PORT`, the client's base URL (`APPZEN_BASE_URL` for AppZen's).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl<S> std::ops::Deref for RunningSandbox<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.sandbox
    }
}

impl<S> Drop for RunningSandbox<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
