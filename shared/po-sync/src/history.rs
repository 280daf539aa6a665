//! A PO's history: one small record per attempt at a destination (reconcile's every delivery of a version,
//! notify's parking of a dead-lettered one, the operator's replays, redrives, cancels and reactivations), kept
//! beside the version ledger for the webhook retention and read newest first by `po-sync-admin history`. The
//! ledger keeps only a PO's latest state; this is what happened on the way.
//!
//! A record is bounded whatever the PO holds: its texts from Komet or AppZen are cut like log fields
//! ([`log_field`]), so one is well under a kilobyte (DynamoDB's item limit is 400 KB).

use crate::text::log_field;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a record is kept unless configured (`HISTORY_RETENTION_DAYS`; the template's `WebhookRetentionDays`).
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// The one destination so far; a field of every record, so a second destination's attempts sit beside it.
pub const APPZEN: &str = "appzen";

/// What one attempt came to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display, strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AttemptOutcome {
    /// The destination took the version.
    Upserted,
    /// The destination already held exactly this body: not sent again.
    Duplicate,
    /// A newer version was already processed: this one is not sent.
    Superseded,
    /// Not sent: it does not reconcile and the policy is `block` (a person was notified).
    Held,
    /// Not sent: it cannot be expressed as the destination's PO (a person was notified).
    Unmappable,
    /// The destination refused it (a person was notified).
    Rejected,
    /// No verdict (an outage, a busy or unavailable ledger, a notification not queued): the record comes back.
    Retried,
    /// An operator re-sent a kept body (`po-sync-admin replay`); reconcile's attempt follows as its own record.
    Replayed,
    /// Dead-lettered after its retries, and put on the parked queue by notify for a redrive (a person was
    /// notified).
    Parked,
    /// An operator moved it from the parked queue back to the webhook queue (`po-sync-admin redrive`);
    /// reconcile's attempt follows as its own record.
    Redriven,
    /// An operator cancelled the PO at the destination (`po-sync-admin cancel`): newer versions are held, not
    /// sent. Recorded against the latest version po-sync knew (0 when none had arrived).
    Cancelled,
    /// An operator reactivated the PO cancelled at the destination (`po-sync-admin reactivate`): the next version
    /// is sent; a version held meanwhile is sent by a replay.
    Reactivated,
}

impl AttemptOutcome {
    /// An operator's action (replay, redrive, cancel, reactivate), not what became of a version.
    pub fn is_operator_action(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Replayed
                | AttemptOutcome::Redriven
                | AttemptOutcome::Cancelled
                | AttemptOutcome::Reactivated
        )
    }
}

/// One attempt: when, at which destination, what came of it, and what the destination answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub po_id: u64,
    pub po_number: String,
    /// The version attempted (`receivedAt` in milliseconds, as the ledger counts it).
    pub version: i64,
    /// When the attempt ended.
    pub at: DateTime<Utc>,
    pub destination: String,
    pub outcome: AttemptOutcome,
    /// The SQS message it came in; for a replay, the message it was queued as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs_message_id: Option<String>,
    /// The destination's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The destination's correlation id for the request, to quote to its support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// How long the attempt took, in milliseconds (from the record's arrival in the function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Requests made to the destination (retries within the attempt included).
    #[serde(default)]
    pub requests: u32,
    /// Why, in a line: the refusal, the outage, the newer version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Attempt {
    /// A record of `outcome` for `version` of the PO, at `at`; the optional parts are set by the caller.
    pub fn new(po_id: u64, po_number: &str, version: i64, at: DateTime<Utc>, outcome: AttemptOutcome) -> Self {
        Attempt {
            po_id,
            po_number: log_field(po_number).into_owned(),
            version,
            at,
            destination: APPZEN.to_owned(),
            outcome,
            sqs_message_id: None,
            http_status: None,
            correlation_id: None,
            latency_ms: None,
            requests: 0,
            detail: None,
        }
    }

    /// Keeps `detail`, cut like a log field.
    pub fn with_detail(mut self, detail: Option<&str>) -> Self {
        self.detail = detail.map(|d| log_field(d).into_owned());
        self
    }

    /// Keeps the destination's correlation id, cut like a log field.
    pub fn with_correlation_id(mut self, correlation_id: Option<&str>) -> Self {
        self.correlation_id = correlation_id.map(|c| log_field(c).into_owned());
        self
    }

    /// The record's sort key within the PO: the time of the attempt in microseconds (16 digits until the year
    /// 2286, so text order is time order), then the message id: a redelivery of one message is a new key.
    pub fn sort_key(&self) -> String {
        format!("{:016}#{}", self.at.timestamp_micros().max(0), self.sqs_message_id.as_deref().unwrap_or("-"))
    }

    /// When the record may be deleted (DynamoDB's TTL, in seconds since the epoch): `retention` after the attempt.
    pub fn expires_at(&self, retention: Duration) -> i64 {
        (self.at + retention).timestamp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().unwrap()
    }

    #[test]
    fn sort_keys_order_attempts_by_time() {
        let early = Attempt::new(1, "P1", 5, at(999), AttemptOutcome::Retried);
        let late = Attempt {
            sqs_message_id: Some("m".into()),
            ..Attempt::new(1, "P1", 5, at(1_000), AttemptOutcome::Upserted)
        };
        assert_eq!(early.sort_key(), "0000000000999000#-");
        assert_eq!(late.sort_key(), "0000000001000000#m");
        assert!(early.sort_key() < late.sort_key());
    }

    #[test]
    fn records_expire_after_the_retention() {
        let attempt = Attempt::new(1, "P1", 5, at(86_400_000), AttemptOutcome::Held);
        assert_eq!(attempt.expires_at(Duration::days(90)), 91 * 86_400);
    }

    #[test]
    fn outcomes_read_as_they_are_written() {
        for outcome in
            [AttemptOutcome::Held, AttemptOutcome::Retried, AttemptOutcome::Unmappable, AttemptOutcome::Parked]
        {
            assert_eq!(outcome.to_string().parse::<AttemptOutcome>(), Ok(outcome));
            assert_eq!(serde_json::to_string(&outcome).unwrap(), format!("\"{outcome}\""));
        }
        assert!("lost".parse::<AttemptOutcome>().is_err());
        let operator: Vec<bool> = [
            AttemptOutcome::Replayed,
            AttemptOutcome::Redriven,
            AttemptOutcome::Cancelled,
            AttemptOutcome::Reactivated,
            AttemptOutcome::Parked,
        ]
        .map(|o| o.is_operator_action())
        .into();
        assert_eq!(operator, [true, true, true, true, false]);
        assert_eq!("reactivated".parse::<AttemptOutcome>(), Ok(AttemptOutcome::Reactivated));
    }

    #[test]
    fn texts_from_outside_are_bounded() {
        let long = "x".repeat(300_000);
        let attempt = Attempt::new(1, &long, 5, at(0), AttemptOutcome::Rejected)
            .with_detail(Some(&long))
            .with_correlation_id(Some(&long));
        let json = serde_json::to_string(&attempt).unwrap();
        assert!(json.len() < 2_000, "{} bytes", json.len());
        assert!(attempt.po_number.ends_with("[cut: 300000 characters in all]"));
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let attempt = Attempt {
            sqs_message_id: Some("m-1".into()),
            http_status: Some(200),
            latency_ms: Some(42),
            requests: 1,
            ..Attempt::new(7, "P7", 1_700_000_000_000, at(1_700_000_000_123), AttemptOutcome::Upserted)
        }
        .with_correlation_id(Some("corr"));
        let json = serde_json::to_string(&attempt).unwrap();
        assert!(json.contains(r#""outcome":"upserted""#) && json.contains(r#""destination":"appzen""#), "{json}");
        assert_eq!(serde_json::from_str::<Attempt>(&json).unwrap(), attempt);
    }
}
