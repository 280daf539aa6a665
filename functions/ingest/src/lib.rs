//! `ingest`: Komet's PO Reconciliation webhook in, one SQS FIFO message out.
//!
//! - [`admission`] decides (method, credentials, content type, size, payload) without I/O;
//! - the queue is a [`FifoQueue`] port (po-sync-aws): SQS in Lambda, memory in tests and benchmarks;
//! - a PO too large for one SQS message is stored first through an [`ObjectStore`] port (S3's `bodies/`), and
//!   its message is a claim check pointing at it (when `ARCHIVE_BUCKET` is set; otherwise it is a 413);
//! - [`Ingest::handle`] ties them together, answers in Komet's convention and logs one line per request;
//! - [`Ingest::start`] is the cold start: credentials (from Secrets Manager if configured) and the SQS client.

pub mod admission;
pub mod auth;

use admission::{Admission, Rejection};
use auth::Verifier;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use po_sync::config::ConfigError;
use po_sync::config::ingest::{CredentialSource, Credentials, IngestConfig};
pub use po_sync_aws::objects::{MemoryObjectStore, NewObject, ObjectStore, S3ObjectStore};
use po_sync_aws::port::{Failure, PortError};
pub use po_sync_aws::queue::{FifoMessage, FifoQueue, MemoryFifoQueue, SqsFifoQueue};
use po_sync_aws::secrets::{SecretError, read_json_secret};
use std::time::Instant;

/// The function, built once per cold start.
#[derive(Debug)]
pub struct Ingest<Q, S = S3ObjectStore> {
    pub admission: Admission,
    pub queue: Q,
    /// Where a PO too large for one SQS message is stored (`ARCHIVE_BUCKET`); `None`: such a PO is a 413.
    pub bodies: Option<S>,
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

impl Ingest<SqsFifoQueue> {
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
        let queue = SqsFifoQueue::new(aws_sdk_sqs::Client::new(aws), config.queue_url);
        let ingest = Ingest::new(&credentials, config.max_body_bytes, queue);
        Ok(match config.archive_bucket {
            Some(bucket) => ingest.with_bodies(S3ObjectStore::new(aws, bucket)),
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
    /// Without a bucket: a PO too large for one SQS message is refused (413); see [`Ingest::with_bodies`].
    pub fn new(credentials: &Credentials, max_body_bytes: usize, queue: Q) -> Self {
        let admission = Admission { verifier: Verifier::new(credentials), max_body_bytes, claim_check_bucket: None };
        Ingest { admission, queue, bodies: None }
    }
}

impl<Q: FifoQueue, S: ObjectStore> Ingest<Q, S> {
    /// Stores each PO too large for one SQS message in `store` (under `bodies/`) and queues a claim check.
    pub fn with_bodies<T: ObjectStore>(self, store: T) -> Ingest<Q, T> {
        let admission = Admission { claim_check_bucket: Some(store.bucket().to_owned()), ..self.admission };
        Ingest { admission, queue: self.queue, bodies: Some(store) }
    }

    /// Answers one webhook request. Success only once the queue has accepted the message (and, for a claim
    /// check, once the bucket has stored the envelope it points at, before the message is sent).
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        // Milliseconds: the envelope and the `receivedAt` attribute then say exactly the same instant.
        let received_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        let send_id = send_id(&request);
        let (parts, body) = request.into_parts();
        let body: &[u8] = body.as_ref();
        let admitted = match self.admission.admit(&parts.method, &parts.headers, body, received_at, &send_id) {
            Ok(admitted) => admitted,
            Err(rejection) => {
                let mut response = reply(rejection.status(), &rejection.message());
                po_sync_aws::metrics::webhook_refused(rejection.outcome());
                match &rejection {
                    Rejection::Unauthorized(failure) => {
                        response.headers_mut().insert(header::WWW_AUTHENTICATE, self.admission.verifier.challenge());
                        tracing::warn!(
                            outcome = rejection.outcome(),
                            status = rejection.status().as_u16(),
                            auth = failure.label(),
                            method = %parts.method,
                            body_bytes = body.len(),
                            latency_us = started.elapsed().as_micros() as u64,
                            "webhook refused"
                        );
                    }
                    Rejection::Internal(detail) => tracing::error!(
                        outcome = rejection.outcome(),
                        status = rejection.status().as_u16(),
                        detail = %detail,
                        body_bytes = body.len(),
                        latency_us = started.elapsed().as_micros() as u64,
                        "webhook not accepted"
                    ),
                    _ => {
                        if matches!(rejection, Rejection::MethodNotAllowed) {
                            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
                        }
                        // The error names fields and quotes at most 40 characters of a value: never the body.
                        tracing::warn!(
                            outcome = rejection.outcome(),
                            status = rejection.status().as_u16(),
                            error = %rejection.message(),
                            method = %parts.method,
                            body_bytes = body.len(),
                            latency_us = started.elapsed().as_micros() as u64,
                            "webhook refused"
                        );
                    }
                }
                return response;
            }
        };
        // A claim check is sent only once the envelope it points at is stored: never a pointer to nothing.
        let claim_check = admitted.claim_check.as_ref().map(|check| check.key.as_str());
        if let Some(check) = &admitted.claim_check {
            let stored = match &self.bodies {
                Some(store) => {
                    let object = NewObject {
                        key: &check.key,
                        bytes: check.envelope_json.as_bytes(),
                        content_type: "application/json",
                        metadata: &check.metadata,
                    };
                    store.put(&object).await
                }
                // Not reached: admission makes claim checks only with the bucket `with_bodies` gives it.
                None => Err(PortError::new(PUT_OBJECT, Failure::Permanent, "no store for webhook bodies")),
            };
            if let Err(e) = stored {
                // Counted with the queue's failures: either way the webhook was not queued and Komet retries.
                po_sync_aws::metrics::webhook_refused("queue_unavailable");
                tracing::error!(
                    outcome = "body_not_stored",
                    status = 503u16,
                    po_id = admitted.po_id,
                    po_number = %admitted.po_number,
                    request_id = %send_id,
                    claim_check,
                    error = %e,
                    body_bytes = body.len(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "webhook not queued: its body could not be stored"
                );
                return reply(StatusCode::SERVICE_UNAVAILABLE, "the webhook could not be queued: please retry later");
            }
        }
        match self.queue.send(&admitted.message).await {
            Ok(message_id) => {
                po_sync_aws::metrics::webhook_accepted();
                tracing::info!(
                    outcome = "queued",
                    status = 200u16,
                    po_id = admitted.po_id,
                    po_number = %admitted.po_number,
                    request_id = %send_id,
                    body_sha256 = %admitted.body_sha256,
                    sqs_message_id = %message_id,
                    claim_check,
                    body_bytes = body.len(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "webhook queued"
                );
                reply(
                    StatusCode::OK,
                    &format!("purchase order {} (id {}) received", admitted.po_number, admitted.po_id),
                )
            }
            Err(e) => {
                po_sync_aws::metrics::webhook_refused("queue_unavailable");
                tracing::error!(
                    outcome = "queue_unavailable",
                    status = 503u16,
                    po_id = admitted.po_id,
                    po_number = %admitted.po_number,
                    request_id = %send_id,
                    // A stored body without its claim check is left to the bucket's lifecycle rule.
                    claim_check,
                    error = %e,
                    body_bytes = body.len(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "webhook not queued"
                );
                reply(StatusCode::SERVICE_UNAVAILABLE, "the webhook could not be queued: please retry later")
            }
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
