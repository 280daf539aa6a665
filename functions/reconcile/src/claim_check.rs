//! Claim checks: the envelope of a PO too large for one SQS message, read back from the bucket.

use crate::Reconciler;
use po_sync::message::{BodyRef, WebhookEnvelope};
use po_sync_aws::ledger::Ledger;
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::port::{Failure, PortError};
use po_sync_aws::queue::{FifoQueue, Redelivery};

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// The envelope a claim check points at. The ledger and everything after it then treat it exactly as an
    /// envelope that came inline.
    pub(crate) async fn resolve(&self, pointer: &BodyRef) -> Result<WebhookEnvelope, Unresolved> {
        let location = pointer.location();
        let unavailable =
            |summary: String| Unresolved::Unavailable(PortError::new(GET_OBJECT, Failure::Permanent, summary));
        let Some(store) = &self.bodies else {
            return Err(unavailable(format!("{location}: reconcile has no bucket for claim checks (ARCHIVE_BUCKET)")));
        };
        if store.bucket() != pointer.bucket {
            return Err(unavailable(format!(
                "{location}: reconcile reads bucket {:?} (ARCHIVE_BUCKET)",
                store.bucket()
            )));
        }
        let poison = |what: String| {
            Unresolved::Poison(format!(
                "the claim check for PO {} (id {}, received {}) points to {location}, {what}",
                pointer.po_number,
                pointer.po_id,
                pointer.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
        };
        let bytes = match store.get(&pointer.key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(poison("which does not exist (deleted, or expired by the bucket's lifecycle rule)".into()));
            }
            Err(error) => return Err(Unresolved::Unavailable(error)),
        };
        let read = std::str::from_utf8(&bytes)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|json| WebhookEnvelope::from_json(json).map_err(|e| e.to_string()));
        drop(bytes);
        let mut envelope = read.map_err(|why| poison(format!("which is not a webhook envelope: {why}")))?;
        if !pointer.names(&envelope) {
            return Err(poison(format!(
                "which holds another webhook (PO id {}, body {})",
                envelope.po.id, envelope.body_sha256
            )));
        }
        // The version is the one SQS delivered: the claim check's (see `BodyRef::names`).
        envelope.received_at = pointer.received_at;
        envelope.send_id = pointer.send_id.clone();
        Ok(envelope)
    }
}

/// Why a claim check did not give its envelope.
pub(crate) enum Unresolved {
    /// The stored body is gone or is not the envelope it should be: a person is told, the record consumed.
    Poison(String),
    /// The body could not be read now (or reconcile cannot read that bucket): the record comes back.
    Unavailable(PortError),
}

const GET_OBJECT: &str = "s3:GetObject";
