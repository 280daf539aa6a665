//! Every acknowledged webhook, kept: ingest stores the body exactly as Komet sent it in the bucket, under
//! `webhooks/<PO id>/<version>-<send id>.json`, before it answers 200; the bucket's lifecycle rule expires it
//! after `WebhookRetentionDays`. The key alone says which PO and which version (zero-padded milliseconds, so
//! S3's listing of one PO's prefix is its sends in order), and the body is the evidence: its SHA-256 is the
//! envelope's `bodySha256`.

use super::key_segment;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The prefix of the kept webhook bodies (the lifecycle rule's and the IAM policies' too).
pub const WEBHOOK_ARCHIVE_PREFIX: &str = "webhooks/";

/// Where the bodies of one PO are kept: `webhooks/<PO id>/`.
pub fn kept_prefix(po_id: u64) -> String {
    format!("{WEBHOOK_ARCHIVE_PREFIX}{po_id}/")
}

/// The key of one send's body: `webhooks/<PO id>/<version, 13 digits>-<send id>.json`. A retry of the same
/// request inside AWS keeps its send id but is received again, so it is kept again under its own version (SQS
/// drops the retry's message; [`KeptWebhook::send_segment`] tells the two copies apart as one send).
pub fn kept_key(po_id: u64, received_at: DateTime<Utc>, send_id: &str) -> String {
    format!("{}{:013}-{}.json", kept_prefix(po_id), received_at.timestamp_millis(), key_segment(send_id))
}

/// A kept body, as its key describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptWebhook {
    pub po_id: u64,
    /// The version: when ingest received it, in milliseconds.
    pub version: i64,
    pub received_at: DateTime<Utc>,
    /// The send id as the key writes it ([`kept_key`]).
    pub send_segment: String,
    pub key: String,
}

impl KeptWebhook {
    /// Reads a key written by [`kept_key`]; anything else (another prefix, a hand-made object) is `None`.
    pub fn from_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(WEBHOOK_ARCHIVE_PREFIX)?;
        let (po_id, name) = rest.split_once('/')?;
        let (version, send) = name.strip_suffix(".json")?.split_once('-')?;
        if version.len() != 13 || !version.bytes().all(|b| b.is_ascii_digit()) || send.is_empty() {
            return None;
        }
        let version: i64 = version.parse().ok()?;
        Some(KeptWebhook {
            po_id: po_id.parse().ok()?,
            version,
            received_at: DateTime::from_timestamp_millis(version)?,
            send_segment: send.to_owned(),
            key: key.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_key_says_which_po_and_version_and_sorts_by_version() {
        let at: DateTime<Utc> = "2026-11-21T17:00:00.123Z".parse().unwrap();
        let key = kept_key(48213, at, "UqZ6tjK4/oAMEJ3w=");
        assert_eq!(key, "webhooks/48213/1795280400123-UqZ6tjK4_2FoAMEJ3w_3D.json");
        let kept = KeptWebhook::from_key(&key).unwrap();
        assert_eq!((kept.po_id, kept.version, kept.received_at), (48213, at.timestamp_millis(), at));
        assert_eq!(kept.send_segment, "UqZ6tjK4_2FoAMEJ3w_3D");
        // Zero-padded: an early version still sorts before a later one as text, as S3 lists keys.
        let early = kept_key(1, DateTime::from_timestamp_millis(5).unwrap(), "b");
        let late = kept_key(1, DateTime::from_timestamp_millis(40).unwrap(), "a");
        assert!(early < late, "{early} {late}");
        assert_eq!(KeptWebhook::from_key(&early).unwrap().version, 5);
    }

    #[test]
    fn keys_that_are_not_kept_webhooks_are_not_read_as_one() {
        for key in [
            "bodies/1/abc.json",
            "webhooks/1/abc.json",
            "webhooks/x/0000000000001-a.json",
            "webhooks/1/000000000001-a.json",
            "webhooks/1/0000000000001-.json",
            "webhooks/1/0000000000001-a.pdf",
            "webhooks/",
        ] {
            assert_eq!(KeptWebhook::from_key(key), None, "{key}");
        }
    }
}
