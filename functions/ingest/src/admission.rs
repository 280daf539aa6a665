//! The request → decision logic: what a webhook request is worth, without any I/O.
//!
//! Checked in this order: method, credentials, content type, size, payload. Credentials come before
//! anything about the body, so an unauthenticated caller learns nothing about what would be accepted.

use crate::auth::{AuthFailure, Verifier};
use chrono::{DateTime, Utc};
use lambda_http::http::{HeaderMap, Method, StatusCode, header::CONTENT_TYPE};
use po_sync::komet::{PayloadError, parse_webhook};
use po_sync::message::{BodyRef, WebhookEnvelope, body_key, kept_key};
use po_sync_aws::objects::Bytes;
pub use po_sync_aws::queue::{FifoMessage, SQS_MAX_MESSAGE_BYTES};

/// Why a request is refused. Each is answered with a 4xx (or 500) and never queued. Its snake_case name is the
/// `outcome` in the request's log line and the `reason` of the refusal metric.
#[derive(Debug, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Rejection {
    MethodNotAllowed,
    Unauthorized(AuthFailure),
    UnsupportedMediaType,
    PayloadTooLarge {
        limit: usize,
    },
    InvalidPayload(PayloadError),
    /// The envelope could not be written; a bug, not the sender's fault.
    #[strum(serialize = "internal_error")]
    Internal(String),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            Rejection::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The outcome label in the request's log line.
    pub fn outcome(&self) -> &'static str {
        self.into()
    }

    /// What Komet shows its user: enough to fix the setup or the payload, nothing about our secrets.
    pub fn message(&self) -> String {
        match self {
            Rejection::MethodNotAllowed => "method not allowed: send the webhook with POST".to_owned(),
            Rejection::Unauthorized(AuthFailure::Missing) => "authentication required".to_owned(),
            Rejection::Unauthorized(AuthFailure::WrongScheme) => {
                "wrong authentication type for this endpoint (check Basic or Bearer in the webhook setup)".to_owned()
            }
            Rejection::Unauthorized(_) => "invalid credentials".to_owned(),
            Rejection::UnsupportedMediaType => "unsupported content type: send application/json".to_owned(),
            Rejection::PayloadTooLarge { limit } => format!("payload too large: the limit is {limit} bytes"),
            Rejection::InvalidPayload(e) => format!("invalid payload: {e}"),
            Rejection::Internal(_) => "internal error: the webhook was not accepted, please retry later".to_owned(),
        }
    }
}

/// A webhook that passed every check, and the message that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub po_id: u64,
    pub po_number: String,
    pub body_sha256: String,
    /// The envelope itself, or (with `claim_check`) the claim check pointing at it.
    pub message: FifoMessage,
    /// With a bucket: the body exactly as Komet sent it, kept before the answer (`webhooks/…`, [`kept_key`]).
    pub kept: Option<Upload>,
    /// For a PO too large for one SQS message: the envelope to store before `message` is sent (`bodies/…`).
    pub claim_check: Option<Upload>,
}

/// An object to store in the bucket before the message is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    /// The body as Komet sent it, or the envelope's JSON (exactly what the queue message would have been); the
    /// upload shares this buffer.
    pub bytes: Bytes,
    /// The object's user metadata (`po-id`, `po-number`, `send-id`, and for a kept body `received-at` and
    /// `body-sha256`), ASCII, for anyone browsing the bucket.
    pub metadata: Vec<(&'static str, String)>,
}

/// The checks for one deployment: who may call, and how much they may send.
#[derive(Debug, Clone)]
pub struct Admission {
    pub verifier: Verifier,
    pub max_body_bytes: usize,
    /// The bucket every admitted body is kept in, and a PO too large for one SQS message is stored in; `None`:
    /// nothing is kept, and such a PO is refused (413).
    pub bucket: Option<String>,
}

/// `application/json`, in any case, with or without parameters such as `charset`.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

impl Admission {
    /// `send_id` names this request (the API Gateway / Function URL request id): the queue drops a second
    /// message with the same id, so a retry of the same request is queued once, while two requests with the
    /// same body are two versions.
    pub fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
        received_at: DateTime<Utc>,
        send_id: &str,
    ) -> Result<Admitted, Rejection> {
        if method != Method::POST {
            return Err(Rejection::MethodNotAllowed);
        }
        self.verifier.verify(headers).map_err(Rejection::Unauthorized)?;
        if !is_json(headers) {
            return Err(Rejection::UnsupportedMediaType);
        }
        if body.len() > self.max_body_bytes {
            return Err(Rejection::PayloadTooLarge { limit: self.max_body_bytes });
        }
        let po = parse_webhook(body).map_err(Rejection::InvalidPayload)?;
        let (po_id, po_number) = (po.id, po.po_number.clone());
        let envelope = WebhookEnvelope::new(po, body, received_at).with_send_id(send_id);
        let json = envelope.to_json();
        let message = FifoMessage::webhook(&envelope, json);
        let metadata = vec![
            ("po-id", po_id.to_string()),
            ("po-number", metadata_text(&po_number)),
            ("send-id", metadata_text(send_id)),
        ];
        let kept = self.bucket.as_ref().map(|_| {
            let mut metadata = metadata.clone();
            metadata.push(("received-at", received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
            metadata.push(("body-sha256", envelope.body_sha256.clone()));
            Upload { key: kept_key(po_id, received_at, send_id), bytes: Bytes::copy_from_slice(body), metadata }
        });
        if message.size() <= SQS_MAX_MESSAGE_BYTES {
            let body_sha256 = envelope.body_sha256;
            return Ok(Admitted { po_id, po_number, body_sha256, message, kept, claim_check: None });
        }
        // Too large for SQS: through the bucket when there is one. Without one it is refused here, with a 413
        // Komet will not retry, rather than a 503 it would.
        let Some(bucket) = &self.bucket else {
            return Err(Rejection::PayloadTooLarge { limit: self.max_body_bytes.min(SQS_MAX_MESSAGE_BYTES) });
        };
        let key = body_key(po_id, envelope.deduplication_id());
        let pointer = BodyRef::of(&envelope, bucket.as_str(), key.as_str());
        let pointer_json = pointer.to_json();
        let bytes = Bytes::from(message.body);
        Ok(Admitted {
            po_id,
            po_number,
            body_sha256: envelope.body_sha256,
            message: FifoMessage::webhook_ref(&pointer, pointer_json),
            kept,
            claim_check: Some(Upload { key, bytes, metadata }),
        })
    }
}

/// S3 user metadata travels as HTTP headers: printable ASCII only, anything else `?`, at most 200 characters.
fn metadata_text(value: &str) -> String {
    value.chars().take(200).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;
    use lambda_http::http::header::AUTHORIZATION;
    use po_sync::config::ingest::Credentials;
    use po_sync::message::sha256_hex;

    use po_sync_test_support::DOC_SAMPLE;

    fn admission(max_body_bytes: usize) -> Admission {
        Admission {
            verifier: Verifier::new(&Credentials::Bearer { token: "tok".into() }),
            max_body_bytes,
            bucket: None,
        }
    }

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        }
        headers
    }

    fn at() -> DateTime<Utc> {
        "2026-01-02T03:04:05.678Z".parse().unwrap()
    }

    #[test]
    fn the_doc_sample_becomes_a_fifo_message_keyed_by_po_and_request() {
        let admitted = admission(1 << 20)
            .admit(&Method::POST, &headers(Some("application/json")), DOC_SAMPLE, at(), "req-1")
            .unwrap();
        assert_eq!((admitted.po_id, admitted.po_number.as_str()), (12345, "P002271"));
        assert_eq!(admitted.body_sha256, sha256_hex(DOC_SAMPLE));
        let message = &admitted.message;
        assert_eq!(message.group_id, "12345");
        assert_eq!(message.deduplication_id, "req-1", "the request, never the body, identifies a send");
        assert!(admitted.kept.is_none(), "without a bucket nothing is kept");
        assert_eq!(
            message.attributes,
            vec![("poNumber", "P002271".to_owned()), ("receivedAt", "2026-01-02T03:04:05.678Z".to_owned())]
        );
        let envelope = WebhookEnvelope::from_json(&message.body).unwrap();
        assert_eq!(envelope.send_id.as_deref(), Some("req-1"));
        assert_eq!(envelope.body_sha256, sha256_hex(DOC_SAMPLE));
        assert_eq!(envelope.received_at, at());
        assert_eq!(envelope.po, parse_webhook(DOC_SAMPLE).unwrap());
    }

    #[test]
    fn content_type_is_json_in_any_case_with_any_parameters() {
        for accepted in [
            "application/json",
            "application/JSON",
            "Application/Json; charset=UTF-8",
            " application/json ;charset=utf-8",
        ] {
            assert!(is_json(&headers(Some(accepted))), "{accepted}");
        }
        for refused in
            [None, Some("text/plain"), Some("application/jsonp"), Some("application/x-www-form-urlencoded"), Some("")]
        {
            assert!(!is_json(&headers(refused)), "{refused:?}");
        }
    }

    #[test]
    fn checks_run_in_order_method_auth_type_size_payload() {
        let gate = admission(10);
        let big = br#"{"id": 1, "poNumber": "P1", "total": 1}"#;
        let no_auth = HeaderMap::new();
        let outcome = |method: Method, headers: &HeaderMap, body: &[u8]| {
            gate.admit(&method, headers, body, at(), "r").unwrap_err().outcome()
        };
        assert_eq!(outcome(Method::GET, &no_auth, big), "method_not_allowed");
        assert_eq!(outcome(Method::POST, &no_auth, big), "unauthorized");
        assert_eq!(outcome(Method::POST, &headers(Some("text/plain")), big), "unsupported_media_type");
        assert_eq!(outcome(Method::POST, &headers(Some("application/json")), big), "payload_too_large");
        assert_eq!(outcome(Method::POST, &headers(Some("application/json")), b"{}"), "invalid_payload");
        assert_eq!(outcome(Method::POST, &headers(Some("application/json")), b""), "invalid_payload");
    }

    #[test]
    fn a_body_of_exactly_the_limit_is_accepted_one_more_byte_is_not() {
        let limit = DOC_SAMPLE.len();
        assert!(
            admission(limit).admit(&Method::POST, &headers(Some("application/json")), DOC_SAMPLE, at(), "r").is_ok()
        );
        let e = admission(limit - 1)
            .admit(&Method::POST, &headers(Some("application/json")), DOC_SAMPLE, at(), "r")
            .unwrap_err();
        assert_eq!(
            (e.status(), e.message()),
            (StatusCode::PAYLOAD_TOO_LARGE, format!("payload too large: the limit is {} bytes", limit - 1))
        );
    }

    #[test]
    fn a_po_larger_than_sqs_takes_is_refused_not_retried() {
        // Within the reader's limits (1,000 invoices, 1,024-character links), over SQS's 1 MiB.
        let invoice = format!(
            r#"{{"invoiceNumber": "I", "invoiceAmount": 1, "file": "https://files.kometsales.com/{}", "purchaseOrderItems": [{{"totalCost": 1}}]}}"#,
            "x".repeat(990)
        );
        let invoices = vec![invoice; 1_000].join(",");
        let body = format!(r#"{{"id": 1, "poNumber": "P1", "total": 1000, "vendorInvoices": [{invoices}]}}"#);
        let e = admission(4 << 20)
            .admit(&Method::POST, &headers(Some("application/json")), body.as_bytes(), at(), "r")
            .unwrap_err();
        assert_eq!(e.outcome(), "payload_too_large");
    }

    #[test]
    fn with_a_bucket_a_po_larger_than_sqs_takes_becomes_a_claim_check_for_its_envelope() {
        // Within the reader's limits (1,000 invoices, 1,024-character links), over SQS's 1 MiB.
        let invoice = format!(
            r#"{{"invoiceNumber": "I", "invoiceAmount": 1, "file": "https://files.kometsales.com/{}", "purchaseOrderItems": [{{"totalCost": 1}}]}}"#,
            "x".repeat(990)
        );
        let invoices = vec![invoice; 1_000].join(",");
        let body = format!(r#"{{"id": 7, "poNumber": "P-é7", "total": 1000, "vendorInvoices": [{invoices}]}}"#);
        let gate = Admission { bucket: Some("archive".into()), ..admission(4 << 20) };
        let admitted =
            gate.admit(&Method::POST, &headers(Some("application/json")), body.as_bytes(), at(), "a/b+c=").unwrap();
        let kept = admitted.kept.as_ref().expect("with a bucket, every admitted body is kept");
        assert_eq!(kept.key, format!("webhooks/7/{:013}-a_2Fb_2Bc_3D.json", at().timestamp_millis()));
        assert_eq!(kept.bytes.as_ref(), body.as_bytes(), "exactly as Komet sent it");
        assert!(kept.metadata.contains(&("received-at", "2026-01-02T03:04:05.678Z".to_owned())));
        let check = admitted.claim_check.expect("a claim check");
        assert_eq!(check.key, "bodies/7/a_2Fb_2Bc_3D.json");
        let envelope = WebhookEnvelope::from_json(std::str::from_utf8(&check.bytes).unwrap()).unwrap();
        assert!(check.bytes.len() > SQS_MAX_MESSAGE_BYTES);
        assert_eq!((envelope.po.id, envelope.send_id.as_deref(), envelope.received_at), (7, Some("a/b+c="), at()));
        assert_eq!(
            check.metadata,
            vec![("po-id", "7".to_owned()), ("po-number", "P-?7".to_owned()), ("send-id", "a/b+c=".to_owned())]
        );
        let message = &admitted.message;
        assert!(message.size() < 1024, "{}", message.size());
        assert_eq!((message.group_id.as_str(), message.deduplication_id.as_str()), ("7", "a/b+c="));
        let pointer = BodyRef::from_json(&message.body).unwrap();
        assert_eq!(pointer, BodyRef::of(&envelope, "archive", "bodies/7/a_2Fb_2Bc_3D.json"));
        assert_eq!(admitted.body_sha256, sha256_hex(body.as_bytes()));
        // A PO that fits is queued as it is, bucket or not.
        let small = gate.admit(&Method::POST, &headers(Some("application/json")), DOC_SAMPLE, at(), "r").unwrap();
        assert!(small.claim_check.is_none());
        assert_eq!(small.kept.map(|kept| kept.bytes.to_vec()), Some(DOC_SAMPLE.to_vec()));
        assert!(WebhookEnvelope::from_json(&small.message.body).is_ok());
    }

    #[test]
    fn po_numbers_are_made_safe_for_sqs_attributes() {
        assert_eq!(po_sync_aws::queue::sqs_text("P-1\u{0}\u{1F}é\u{FFFE}🌹"), "P-1\u{FFFD}\u{FFFD}é\u{FFFD}🌹");
    }
}
