//! `ingest`: Komet's PO Reconciliation webhook in, one SQS FIFO message out.
//!
//! - [`admission`] decides (method, credentials, content type, size, payload) without I/O;
//! - the queue is a [`FifoQueue`] port (po-sync-aws): SQS in Lambda, memory in tests and benchmarks;
//! - with `ARCHIVE_BUCKET` set, every admitted body is kept through an [`ObjectStore`] port (S3's `webhooks/`)
//!   before it is queued, and a PO too large for one SQS message is stored there too (`bodies/`), its message a
//!   claim check pointing at it (without a bucket nothing is kept and such a PO is a 413);
//! - [`Ingest::handle`] ties them together, answers in Komet's convention and logs one line per request;
//! - [`Ingest::start`] is the cold start: credentials (from Secrets Manager if configured) and the SQS client.

pub mod admission;
pub mod auth;

use admission::{Admission, Admitted, Rejection, Upload};
use auth::Verifier;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use po_sync::config::ConfigError;
use po_sync::config::ingest::{CredentialSource, Credentials, IngestConfig};
use po_sync::text::log_field;
pub use po_sync_aws::objects::{MemoryObjectStore, NewObject, ObjectStore, S3ObjectStore};
use po_sync_aws::port::{Failure, PortError};
pub use po_sync_aws::queue::{FanOutQueue, FifoMessage, FifoQueue, MemoryFifoQueue, SqsFifoQueue};
use po_sync_aws::secrets::{SecretError, read_json_secret};
use std::time::Instant;

/// The function, built once per cold start.
#[derive(Debug)]
pub struct Ingest<Q, S = S3ObjectStore> {
    pub admission: Admission,
    pub queue: Q,
    /// Where every admitted body is kept and a PO too large for one SQS message is stored (`ARCHIVE_BUCKET`);
    /// `None`: nothing is kept, and such a PO is a 413.
    pub bucket: Option<S>,
}

/// Why the function could not start; Lambda reports it as an init error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // Boxed: the SDK error inside is large, and this is returned once per cold start at most.
    #[error("configuration WEBHOOK_SECRET_ARN: {0}")]
    Secret(Box<SecretError>),
}

/// ingest's queues in Lambda: one SQS FIFO queue per destination.
pub type SqsQueues = FanOutQueue<SqsFifoQueue>;

impl Ingest<SqsQueues> {
    /// The cold start: reads the credentials (once, from Secrets Manager when `WEBHOOK_SECRET_ARN` is set)
    /// and builds the SQS client.
    pub async fn start(config: IngestConfig, aws: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let credentials = match config.credentials {
            CredentialSource::Environment(credentials) => credentials,
            CredentialSource::Secret { arn } => {
                let client = aws_sdk_secretsmanager::Client::new(aws);
                let secret = read_json_secret(&client, &arn).await.map_err(|e| StartupError::Secret(Box::new(e)))?;
                Credentials::from_secret(config.auth, &secret)?
            }
        };
        let sqs = aws_sdk_sqs::Client::new(aws);
        let queue =
            FanOutQueue::new(config.queues.into_iter().map(|(_, url)| SqsFifoQueue::new(sqs.clone(), url)).collect());
        let ingest = Ingest::new(&credentials, config.max_body_bytes, queue);
        Ok(match config.archive_bucket {
            Some(bucket) => ingest.with_bucket(S3ObjectStore::new(aws, bucket)),
            None => ingest,
        })
    }
}

const PUT_OBJECT: &str = "s3:PutObject";

/// Komet's response convention, which Komet shows to its users.
fn reply(status: StatusCode, text: &str) -> Response<Body> {
    let body = if status.is_success() {
        serde_json::json!({ "status": "1", "message": text })
    } else {
        serde_json::json!({ "status": "0", "error": text })
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl<Q: FifoQueue> Ingest<Q> {
    /// Without a bucket: nothing is kept and a PO too large for one SQS message is refused (413); see
    /// [`Ingest::with_bucket`].
    pub fn new(credentials: &Credentials, max_body_bytes: usize, queue: Q) -> Self {
        let admission = Admission { verifier: Verifier::new(credentials), max_body_bytes, bucket: None };
        Ingest { admission, queue, bucket: None }
    }
}

impl<Q: FifoQueue, S: ObjectStore> Ingest<Q, S> {
    /// Keeps every admitted body in `store` (under `webhooks/`), and stores each PO too large for one SQS message
    /// there (under `bodies/`) and queues a claim check.
    pub fn with_bucket<T: ObjectStore>(self, store: T) -> Ingest<Q, T> {
        let admission = Admission { bucket: Some(store.bucket().to_owned()), ..self.admission };
        Ingest { admission, queue: self.queue, bucket: Some(store) }
    }

    /// Answers one webhook request. Success only once the bucket has kept the body (and stored the envelope a
    /// claim check points at) and then the queue has accepted the message.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        // Milliseconds: the envelope and the `receivedAt` attribute then say exactly the same instant.
        let received_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        let send_id = send_id(&request);
        let (parts, body) = request.into_parts();
        let body: &[u8] = body.as_ref();
        let admission = self.admission.admit(&parts.method, &parts.headers, body, received_at, &send_id);
        let mut line = RequestLog {
            outcome: "",
            status: StatusCode::OK,
            send_id: &send_id,
            method: &parts.method,
            body_bytes: body.len(),
            admitted: None,
            kept: None,
            claim_check: None,
            sqs_message_id: None,
            auth: None,
            error: None,
        };
        let response = match &admission {
            Ok(admitted) => self.queue_admitted(admitted, &mut line).await,
            Err(rejection) => self.refuse(rejection, &mut line),
        };
        line.status = response.status();
        line.write(started.elapsed());
        response
    }

    /// The answer to a request refused before anything was queued.
    fn refuse<'a>(&self, rejection: &'a Rejection, line: &mut RequestLog<'a>) -> Response<Body> {
        let mut response = reply(rejection.status(), &rejection.message());
        po_sync_aws::metrics::webhook_refused(rejection.outcome());
        line.outcome = rejection.outcome();
        match rejection {
            Rejection::Unauthorized(failure) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, self.admission.verifier.challenge());
                line.auth = Some(failure.label());
            }
            Rejection::Internal(detail) => line.error = Some(detail.clone()),
            Rejection::MethodNotAllowed => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
                line.error = Some(rejection.message());
            }
            // The error names fields and quotes at most 40 characters of a value: never the body.
            _ => line.error = Some(rejection.message()),
        }
        response
    }

    /// Keeps the body and stores the envelope a claim check points at (first: 200 never answers a body that is
    /// not kept, nor queues a pointer to nothing), then queues the message; 200 only once SQS has it, 503 (Komet
    /// retries) otherwise.
    async fn queue_admitted<'a>(&self, admitted: &'a Admitted, line: &mut RequestLog<'a>) -> Response<Body> {
        line.admitted = Some(admitted);
        line.kept = admitted.kept.as_ref().map(|kept| kept.key.as_str());
        line.claim_check = admitted.claim_check.as_ref().map(|check| check.key.as_str());
        let unavailable =
            || reply(StatusCode::SERVICE_UNAVAILABLE, "the webhook could not be queued: please retry later");
        for (upload, failed) in [(&admitted.kept, "body_not_kept"), (&admitted.claim_check, "body_not_stored")] {
            let Some(upload) = upload else { continue };
            if let Err(e) = self.store(upload).await {
                // Counted with the queue's failures: either way the webhook was not queued and Komet retries.
                po_sync_aws::metrics::webhook_refused("queue_unavailable");
                (line.outcome, line.error) = (failed, Some(e.to_string()));
                return unavailable();
            }
        }
        match self.queue.send(&admitted.message).await {
            Ok(message_id) => {
                po_sync_aws::metrics::webhook_accepted();
                (line.outcome, line.sqs_message_id) = ("queued", Some(message_id));
                reply(
                    StatusCode::OK,
                    &format!("purchase order {} (id {}) received", admitted.po_number, admitted.po_id),
                )
            }
            Err(e) => {
                // A stored body without its claim check is left to the bucket's lifecycle rule.
                po_sync_aws::metrics::webhook_refused("queue_unavailable");
                (line.outcome, line.error) = ("queue_unavailable", Some(e.to_string()));
                unavailable()
            }
        }
    }
}

impl<Q, S: ObjectStore> Ingest<Q, S> {
    async fn store(&self, upload: &Upload) -> Result<(), PortError> {
        let Some(store) = &self.bucket else {
            // Not reached: admission makes uploads only with the bucket `with_bucket` gives it.
            return Err(PortError::new(PUT_OBJECT, Failure::Permanent, "no bucket for webhook bodies"));
        };
        let object = NewObject {
            key: &upload.key,
            bytes: upload.bytes.clone(),
            content_type: "application/json",
            metadata: &upload.metadata,
        };
        store.put(&object).await
    }
}

/// What became of one request: its one log line (`outcome`, the PO when it was read, never credentials or the
/// body). 2xx is logged as info, 4xx as a warning, 5xx as an error.
struct RequestLog<'a> {
    outcome: &'static str,
    status: StatusCode,
    send_id: &'a str,
    method: &'a Method,
    body_bytes: usize,
    admitted: Option<&'a Admitted>,
    kept: Option<&'a str>,
    claim_check: Option<&'a str>,
    sqs_message_id: Option<String>,
    /// Which part of the credentials failed (never the credentials).
    auth: Option<&'static str>,
    error: Option<String>,
}

impl RequestLog<'_> {
    fn write(&self, latency: std::time::Duration) {
        let admitted = self.admitted;
        // Text from the request is bounded, whatever it holds.
        let po_number = admitted.map(|a| log_field(&a.po_number));
        let error = self.error.as_deref().map(log_field);
        macro_rules! line {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    outcome = self.outcome,
                    status = self.status.as_u16(),
                    po_id = admitted.map(|a| a.po_id),
                    po_number = po_number.as_deref(),
                    request_id = %log_field(self.send_id),
                    body_sha256 = admitted.map(|a| a.body_sha256.as_str()),
                    sqs_message_id = self.sqs_message_id.as_deref(),
                    kept = self.kept,
                    claim_check = self.claim_check,
                    auth = self.auth,
                    error = error.as_deref(),
                    method = %self.method,
                    body_bytes = self.body_bytes,
                    latency_us = latency.as_micros() as u64,
                    $message
                )
            };
        }
        match self.status.as_u16() {
            200..=299 => line!(info, "webhook queued"),
            400..=499 => line!(warn, "webhook refused"),
            _ => line!(error, "webhook not queued"),
        }
    }
}

/// The identity of this send: API Gateway's / the Function URL's `requestContext.requestId`, which a retry of
/// the same request inside AWS keeps. Without one (never seen from API Gateway or a Function URL), a fresh
/// random id: two requests are never taken for one.
pub fn send_id(request: &Request) -> String {
    let from_gateway = match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        #[allow(unreachable_patterns)] // other variants exist only with other lambda_http features
        _ => None,
    };
    from_gateway.filter(|id| !id.trim().is_empty()).unwrap_or_else(|| format!("{:032x}", fastrand::u128(..)))
}
