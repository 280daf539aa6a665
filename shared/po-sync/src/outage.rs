//! When AppZen cannot give a verdict on a PO, the fault is po-sync's or AppZen's, not the PO's: an *outage*.
//!
//! - [`classify_status`] splits AppZen's answers into the PO is wrong (400, 409, 413, 422: a person fixes the PO)
//!   and an outage ([`OutageCause`]): the record comes back later, nothing is consumed.
//! - An outage is mailed once, not once per PO: one [`OutageRecord`] per cause (an item of the ledger table)
//!   says when it began, when it was last seen and whether it was mailed; [`observe`] and [`end`] are its rules,
//!   and every write is a compare-and-set on its revision, as the ledger's are, so two instances that see the
//!   same outage mail it once.
//!
//! Pure: records in, records out; the caller supplies the clock.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Why AppZen did not take or refuse a PO. The names are the `cause` of the `AppZenFailures` metric.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantNames,
    strum::EnumString,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OutageCause {
    /// 401 or 403: AppZen refuses po-sync's credentials (expired, rotated, or without permission).
    Credentials,
    /// A redirect, 404, 405, 407 or another 4xx that says nothing about the PO: the requests do not reach
    /// AppZen's purchase-order API (a wrong `APPZEN_BASE_URL`, a proxy).
    Endpoint,
    /// 429: AppZen asks po-sync to slow down.
    Throttled,
    /// 408, 5xx, a timeout or a connection error: AppZen or the network is down.
    Unavailable,
}

impl OutageCause {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Only a person can end it (a key, a URL): alarmed at once, and not retried within the invocation.
    pub fn needs_a_fix(self) -> bool {
        matches!(self, OutageCause::Credentials | OutageCause::Endpoint)
    }

    /// What is wrong, in one sentence, for the outage e-mail.
    pub fn explanation(self) -> &'static str {
        match self {
            OutageCause::Credentials => {
                "AppZen refuses po-sync's credentials (HTTP 401 or 403): the API key, customer id or customer key is wrong, expired or without permission."
            }
            OutageCause::Endpoint => {
                "po-sync's requests do not reach AppZen's purchase-order API: AppZen answers as if the address were wrong (a redirect, 404, 405 or 407)."
            }
            OutageCause::Throttled => "AppZen asks po-sync to slow down (HTTP 429).",
            OutageCause::Unavailable => {
                "AppZen is not answering, or answers with server errors (HTTP 5xx, timeouts or connection errors)."
            }
        }
    }

    /// What to do about it, one sentence each, for the outage e-mail.
    pub fn fix(self) -> &'static [&'static str] {
        match self {
            OutageCause::Credentials => &[
                "Put AppZen's current API key, customer id and customer key in the secret named by APPZEN_SECRET_ARN (the stack output AppZenSecretArn). reconcile reads the secret again when AppZen refuses it, so no deploy is needed.",
                "Every waiting purchase order then goes through at its next retry, in order; nothing needs to be resent from Komet or redriven.",
            ],
            OutageCause::Endpoint => &[
                "Check the stack parameter AppZenBaseUrl (APPZEN_BASE_URL): it must be the address AppZen gave you, such as https://api.appzen.com, without a path.",
                "Every waiting purchase order then goes through at its next retry, in order; nothing needs to be resent from Komet or redriven.",
            ],
            OutageCause::Throttled | OutageCause::Unavailable => &[
                "Nothing needs to be done in Komet: po-sync keeps every waiting purchase order and retries it, waiting longer each time, until AppZen answers.",
                "If it lasts, check AppZen's status with AppZen support; the purchase orders go through in order once AppZen is back.",
            ],
        }
    }
}

/// What an AppZen HTTP status means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: done.
    Accepted,
    /// 400, 409, 413, 422: AppZen's verdict on this PO; resending it cannot help, a person fixes the PO.
    Rejected,
    /// Anything else: not a verdict on the PO. The record comes back.
    Outage(OutageCause),
}

/// Only the statuses AppZen (or HTTP) defines as a problem of the request's content consume a record; any other
/// answer keeps it, since consuming is the one step that cannot be undone.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Accepted,
        400 | 409 | 413 | 422 => StatusClass::Rejected,
        401 | 403 => StatusClass::Outage(OutageCause::Credentials),
        429 => StatusClass::Outage(OutageCause::Throttled),
        408 | 500..=599 => StatusClass::Outage(OutageCause::Unavailable),
        // 1xx never reaches here; a redirect is not followed (a redirected POST loses its body).
        _ => StatusClass::Outage(OutageCause::Endpoint),
    }
}

/// One outage per cause, as the ledger table keeps it (key `poId` = [`OutageRecord::key`], beside the POs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutageRecord {
    /// `outage#appzen#<cause>`: never a Komet PO id, which is a number.
    pub po_id: String,
    pub cause: OutageCause,
    /// Incremented by every write; the compare-and-set token.
    pub revision: u64,
    pub opened_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When the outage e-mail was queued; `None` while it is not due yet (or could not be queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailed_at: Option<DateTime<Utc>>,
    /// When AppZen answered again; `None` while the outage lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

impl OutageRecord {
    /// The ledger key of the outage of `cause`.
    pub fn key(cause: OutageCause) -> String {
        format!("outage#appzen#{}", cause.as_str())
    }

    fn is_open(&self, now: DateTime<Utc>, rules: &OutageRules) -> bool {
        self.ended_at.is_none() && now - self.last_seen_at < rules.quiet
    }
}

/// How outages are told apart and when they are mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageRules {
    /// An outage not seen for this long is over; the next failure opens a new one (and mails again). Twice the
    /// retry schedule's longest step: while records keep coming back, some record sees it at least that often.
    pub quiet: Duration,
    /// A throttling or unavailability outage is mailed once it has lasted this long (a blip that the next
    /// retry gets through is not worth an e-mail); credentials and endpoint outages are mailed at once.
    pub mail_after: Duration,
}

impl OutageRules {
    fn mail_after(&self, cause: OutageCause) -> Duration {
        if cause.needs_a_fix() { Duration::zero() } else { self.mail_after }
    }
}

/// What seeing an outage changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The record to write (compare-and-set), if anything changed.
    pub write: Option<OutageRecord>,
    /// This write makes the e-mail due: queue it once the write is stored.
    pub mail: bool,
}

/// How often an open outage's `last_seen_at` is written again (every sighting would be a write per record): at
/// most once a minute, and at least four times per quiet period, so a short retry schedule (seconds, as in
/// tests) never lets an outage that is still going look quiet.
fn last_seen_granularity(rules: &OutageRules) -> Duration {
    Duration::minutes(1).min(rules.quiet / 4)
}

/// po-sync saw `cause` at `now`: opens an outage (none open), keeps it open, or makes its e-mail due.
pub fn observe(
    current: Option<&OutageRecord>,
    cause: OutageCause,
    now: DateTime<Utc>,
    rules: &OutageRules,
) -> Observation {
    let open = current.filter(|record| record.is_open(now, rules));
    let Some(open) = open else {
        let mail = rules.mail_after(cause) <= Duration::zero();
        let record = OutageRecord {
            po_id: OutageRecord::key(cause),
            cause,
            revision: current.map_or(0, |r| r.revision) + 1,
            opened_at: now,
            last_seen_at: now,
            mailed_at: mail.then_some(now),
            ended_at: None,
        };
        return Observation { write: Some(record), mail };
    };
    let mail = open.mailed_at.is_none() && now - open.opened_at >= rules.mail_after(cause);
    if !mail && now - open.last_seen_at < last_seen_granularity(rules) {
        return Observation { write: None, mail: false };
    }
    let mut record = open.clone();
    record.revision += 1;
    record.last_seen_at = now.max(open.last_seen_at);
    if mail {
        record.mailed_at = Some(now);
    }
    Observation { write: Some(record), mail }
}

/// The e-mail of `mailed` could not be queued: forget that it was, so the next sighting mails it.
pub fn unmail(mailed: &OutageRecord) -> OutageRecord {
    OutageRecord { revision: mailed.revision + 1, mailed_at: None, ..mailed.clone() }
}

/// AppZen answered again at `now`: the open outage ends (`None`: nothing open to end).
pub fn end(current: Option<&OutageRecord>, now: DateTime<Utc>) -> Option<OutageRecord> {
    let open = current.filter(|record| record.ended_at.is_none())?;
    Some(OutageRecord { revision: open.revision + 1, ended_at: Some(now), ..open.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap() + Duration::minutes(minute)
    }

    const RULES: OutageRules = OutageRules { quiet: Duration::hours(2), mail_after: Duration::minutes(15) };

    /// Applies `observe` and returns the stored record and whether it mailed.
    fn see(current: Option<OutageRecord>, cause: OutageCause, minute: i64) -> (Option<OutageRecord>, bool) {
        let observation = observe(current.as_ref(), cause, at(minute), &RULES);
        (observation.write.or(current), observation.mail)
    }

    #[test]
    fn statuses_are_split_into_verdicts_on_the_po_and_outages_by_cause() {
        use OutageCause::*;
        for status in [200, 201, 204] {
            assert_eq!(classify_status(status), StatusClass::Accepted, "{status}");
        }
        for status in [400, 409, 413, 422] {
            assert_eq!(classify_status(status), StatusClass::Rejected, "{status}");
        }
        let outages = [
            (401, Credentials),
            (403, Credentials),
            (301, Endpoint),
            (302, Endpoint),
            (307, Endpoint),
            (404, Endpoint),
            (405, Endpoint),
            (407, Endpoint),
            (415, Endpoint),
            (429, Throttled),
            (408, Unavailable),
            (500, Unavailable),
            (502, Unavailable),
            (503, Unavailable),
            (504, Unavailable),
        ];
        for (status, cause) in outages {
            assert_eq!(classify_status(status), StatusClass::Outage(cause), "{status}");
        }
    }

    #[test]
    fn a_credentials_outage_is_mailed_once_however_many_records_see_it() {
        let (record, mailed) = see(None, OutageCause::Credentials, 0);
        assert!(mailed, "credentials are mailed at once");
        let record = record.unwrap();
        assert_eq!((record.po_id.as_str(), record.revision), ("outage#appzen#credentials", 1));
        let mut current = Some(record);
        for minute in [0, 1, 5, 30, 90, 200] {
            let (next, mailed) = see(current, OutageCause::Credentials, minute);
            assert!(!mailed, "minute {minute}");
            current = next;
        }
        assert_eq!(current.unwrap().opened_at, at(0), "one outage throughout: each sighting kept it open");
    }

    #[test]
    fn an_unavailability_is_mailed_only_once_it_has_lasted() {
        let (record, mailed) = see(None, OutageCause::Unavailable, 0);
        assert!(!mailed, "a blip is not mailed");
        let (record, mailed) = see(record, OutageCause::Unavailable, 14);
        assert!(!mailed);
        let (record, mailed) = see(record, OutageCause::Unavailable, 15);
        assert!(mailed, "15 minutes on");
        let (_, mailed) = see(record, OutageCause::Unavailable, 16);
        assert!(!mailed, "once");
    }

    #[test]
    fn an_ended_or_quiet_outage_is_over_and_the_next_failure_opens_and_mails_a_new_one() {
        let (record, _) = see(None, OutageCause::Credentials, 0);
        let ended = end(record.as_ref(), at(10)).unwrap();
        assert_eq!((ended.ended_at, ended.revision), (Some(at(10)), 2));
        assert_eq!(end(Some(&ended), at(11)), None, "ending twice writes nothing");
        let (reopened, mailed) = see(Some(ended), OutageCause::Credentials, 20);
        assert!(mailed);
        let reopened = reopened.unwrap();
        assert_eq!((reopened.opened_at, reopened.ended_at, reopened.revision), (at(20), None, 3));

        // Not seen for the quiet period: over, even though nobody ended it.
        let (quiet, mailed) = see(Some(reopened), OutageCause::Credentials, 20 + 120);
        assert!(mailed);
        assert_eq!(quiet.unwrap().opened_at, at(140));
    }

    #[test]
    fn sightings_write_at_most_once_a_minute_unless_the_mail_falls_due() {
        let (record, _) = see(None, OutageCause::Throttled, 0);
        let record = record.unwrap();
        assert_eq!(observe(Some(&record), OutageCause::Throttled, at(0), &RULES).write, None);
        let later = observe(Some(&record), OutageCause::Throttled, at(1), &RULES).write.unwrap();
        assert_eq!((later.revision, later.last_seen_at, later.opened_at), (2, at(1), at(0)));
    }

    #[test]
    fn an_e_mail_that_could_not_be_queued_is_due_again() {
        let (record, mailed) = see(None, OutageCause::Endpoint, 0);
        assert!(mailed);
        let forgotten = unmail(&record.unwrap());
        assert_eq!((forgotten.mailed_at, forgotten.revision), (None, 2));
        let (_, mailed) = see(Some(forgotten), OutageCause::Endpoint, 0);
        assert!(mailed, "the next sighting mails it");
    }

    #[test]
    fn every_cause_says_what_is_wrong_and_how_to_fix_it() {
        use strum::IntoEnumIterator;
        for cause in OutageCause::iter() {
            assert!(!cause.explanation().is_empty() && !cause.fix().is_empty(), "{cause:?}");
            assert_eq!(serde_json::to_value(cause).unwrap(), cause.as_str());
        }
    }

    #[test]
    fn with_a_schedule_of_seconds_a_lasting_outage_stays_one_outage() {
        let rules = OutageRules { quiet: Duration::seconds(2), mail_after: Duration::zero() };
        let second = |n: i64| at(0) + Duration::milliseconds(n * 700);
        let first = observe(None, OutageCause::Unavailable, second(0), &rules);
        assert!(first.mail);
        let mut current = first.write;
        // Seen every 0.7 s for a while: kept open, never mailed again.
        for n in 1..20 {
            let seen = observe(current.as_ref(), OutageCause::Unavailable, second(n), &rules);
            assert!(!seen.mail, "sighting {n}");
            current = seen.write.or(current);
        }
        assert_eq!(current.unwrap().opened_at, second(0));
    }
}
