//! When a destination (AppZen, Exsited) cannot give a verdict on a PO, the fault is po-sync's or the
//! destination's, not the PO's: an *outage*.
//!
//! - [`classify_status`] splits AppZen's answers into the PO is wrong (400, 409, 413, 422: a person fixes the PO)
//!   and an outage ([`OutageCause`]): the record comes back later, nothing is consumed.
//!   [`classify_exsited_status`] does the same for Exsited's.
//! - An outage is mailed once, not once per PO: one [`OutageRecord`] per destination and cause (an item of the
//!   ledger table) says when it began, when it was last seen and whether it was mailed; [`observe`] and [`end`]
//!   are its rules, and every write is a compare-and-set on its revision, as the ledger's are, so two instances
//!   that see the same outage mail it once. One destination's outages never touch the other's records.
//!
//! Pure: records in, records out; the caller supplies the clock.

use crate::destination::Destination;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Why a destination did not take or refuse a PO. The names are the `cause` of the `AppZenFailures` metric.
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
    /// 401 or 403: the destination refuses po-sync's credentials (expired, rotated, or without permission).
    Credentials,
    /// A redirect, 404, 405, 407 (for AppZen also another 4xx that says nothing about the PO): the requests do
    /// not reach the destination's purchase-order API (a wrong `APPZEN_BASE_URL` or `EXSITED_BASE_URL`, a proxy).
    Endpoint,
    /// 429: the destination asks po-sync to slow down.
    Throttled,
    /// 408, 5xx, a timeout or a connection error: the destination or the network is down.
    Unavailable,
}

/// The outage e-mail's last step once a person fixed po-sync's setup (credentials or address), at either
/// destination.
const GOES_THROUGH_ONCE_FIXED: &str = "Every waiting purchase order then goes through at its next retry, in order; nothing needs to be resent from Komet or redriven.";

impl OutageCause {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Only a person can end it (a key, a URL): alarmed at once, and not retried within the invocation.
    pub fn needs_a_fix(self) -> bool {
        matches!(self, OutageCause::Credentials | OutageCause::Endpoint)
    }

    /// What is wrong at `destination`, in one sentence, for the outage e-mail.
    pub fn explanation(self, destination: Destination) -> &'static str {
        match (destination, self) {
            (Destination::Appzen, OutageCause::Credentials) => {
                "AppZen refuses po-sync's credentials (HTTP 401 or 403): the API key, customer id or customer key is wrong, expired or without permission."
            }
            (Destination::Appzen, OutageCause::Endpoint) => {
                "po-sync's requests do not reach AppZen's purchase-order API: AppZen answers as if the address were wrong (a redirect, 404, 405 or 407)."
            }
            (Destination::Appzen, OutageCause::Throttled) => "AppZen asks po-sync to slow down (HTTP 429).",
            (Destination::Appzen, OutageCause::Unavailable) => {
                "AppZen is not answering, or answers with server errors (HTTP 5xx, timeouts or connection errors)."
            }
            (Destination::Exsited, OutageCause::Credentials) => {
                "Exsited refuses po-sync's credentials (HTTP 401 even with a new token, or 403): the OAuth client id or client secret is wrong, revoked or without permission."
            }
            (Destination::Exsited, OutageCause::Endpoint) => {
                "po-sync's requests do not reach Exsited's purchase-order API: Exsited answers as if the address were wrong (a redirect, 404, 405 or 407)."
            }
            (Destination::Exsited, OutageCause::Throttled) => "Exsited asks po-sync to slow down (HTTP 429).",
            (Destination::Exsited, OutageCause::Unavailable) => {
                "Exsited is not answering, or answers with server errors (HTTP 408, 5xx, timeouts or connection errors), or po-sync cannot reach the Exsited token it shares in the ledger table."
            }
        }
    }

    /// What to do about it at `destination`, one sentence each, for the outage e-mail.
    pub fn fix(self, destination: Destination) -> &'static [&'static str] {
        match (destination, self) {
            (Destination::Appzen, OutageCause::Credentials) => &[
                "Put AppZen's current API key, customer id and customer key in the secret named by APPZEN_SECRET_ARN (the stack output AppZenSecretArn). reconcile reads the secret again when AppZen refuses it, so no deploy is needed.",
                GOES_THROUGH_ONCE_FIXED,
            ],
            (Destination::Appzen, OutageCause::Endpoint) => &[
                "Check the stack parameter AppZenBaseUrl (APPZEN_BASE_URL): it must be the address AppZen gave you, such as https://api.appzen.com, without a path.",
                GOES_THROUGH_ONCE_FIXED,
            ],
            (Destination::Appzen, OutageCause::Throttled | OutageCause::Unavailable) => &[
                "Nothing needs to be done in Komet: po-sync keeps every waiting purchase order and retries it, waiting longer each time, until AppZen answers.",
                "If it lasts, check AppZen's status with AppZen support; the purchase orders go through in order once AppZen is back.",
            ],
            (Destination::Exsited, OutageCause::Credentials) => &[
                "Put Exsited's current OAuth client_id and client_secret in the Exsited secret (EXSITED_SECRET_ARN, the stack output ExsitedSecretArn). Exsited's reconcile function reads the secret again when Exsited refuses the credentials, so no deploy is needed.",
                GOES_THROUGH_ONCE_FIXED,
            ],
            (Destination::Exsited, OutageCause::Endpoint) => &[
                "Check the stack parameter ExsitedBaseUrl (EXSITED_BASE_URL): it must be your Exsited tenant's address, https://<tenant>.exsited.com, without a path.",
                GOES_THROUGH_ONCE_FIXED,
            ],
            (Destination::Exsited, OutageCause::Throttled | OutageCause::Unavailable) => &[
                "Nothing needs to be done in Komet: po-sync keeps every waiting purchase order and retries it, waiting longer each time, until Exsited answers.",
                "If it lasts, check Exsited's status with Exsited support; the purchase orders go through in order once Exsited is back.",
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

/// The outage an Exsited HTTP status (after the client's one token refresh on a 401) means; `None` for a
/// success or for Exsited's verdict on the PO (any other 4xx: a refusal, mailed as `exsited_rejected`).
pub fn classify_exsited_status(status: u16) -> Option<OutageCause> {
    match status {
        401 | 403 => Some(OutageCause::Credentials),
        // A redirect is not followed (a redirected POST loses its body): a wrong address, as 404/405/407 are.
        300..=399 | 404 | 405 | 407 => Some(OutageCause::Endpoint),
        429 => Some(OutageCause::Throttled),
        408 | 500..=599 => Some(OutageCause::Unavailable),
        _ => None,
    }
}

/// One outage per destination and cause, as the ledger table keeps it (key `poId` = [`OutageRecord::key`],
/// beside the POs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutageRecord {
    /// `outage#appzen#<cause>` or `outage#exsited#<cause>`: never a Komet PO id, which is a number, nor a
    /// destination's PO item (`exsited#<PO id>`).
    pub po_id: String,
    /// Whose outage: absent for AppZen, as every record was before there was a second destination.
    #[serde(default, skip_serializing_if = "Destination::is_appzen")]
    pub destination: Destination,
    pub cause: OutageCause,
    /// Incremented by every write; the compare-and-set token.
    pub revision: u64,
    pub opened_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When the outage e-mail was queued; `None` while it is not due yet (or could not be queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailed_at: Option<DateTime<Utc>>,
    /// When the destination answered again; `None` while the outage lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

impl OutageRecord {
    /// The ledger key of `destination`'s outage of `cause`.
    pub fn key(destination: Destination, cause: OutageCause) -> String {
        format!("outage#{}#{}", destination.as_str(), cause.as_str())
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

/// po-sync saw `cause` at `destination` at `now`: opens an outage (none open), keeps it open, or makes its
/// e-mail due. `current` is that destination's record of that cause.
pub fn observe(
    current: Option<&OutageRecord>,
    destination: Destination,
    cause: OutageCause,
    now: DateTime<Utc>,
    rules: &OutageRules,
) -> Observation {
    let open = current.filter(|record| record.is_open(now, rules));
    let Some(open) = open else {
        let mail = rules.mail_after(cause) <= Duration::zero();
        let record = OutageRecord {
            po_id: OutageRecord::key(destination, cause),
            destination,
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

/// The destination answered again at `now`: the open outage ends (`None`: nothing open to end).
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
        let observation = observe(current.as_ref(), Destination::Appzen, cause, at(minute), &RULES);
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
        assert_eq!(observe(Some(&record), Destination::Appzen, OutageCause::Throttled, at(0), &RULES).write, None);
        let later = observe(Some(&record), Destination::Appzen, OutageCause::Throttled, at(1), &RULES).write.unwrap();
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
    fn every_cause_says_what_is_wrong_and_how_to_fix_it_for_each_destination() {
        use strum::IntoEnumIterator;
        for cause in OutageCause::iter() {
            for destination in Destination::iter() {
                let (explanation, fix) = (cause.explanation(destination), cause.fix(destination));
                assert!(!explanation.is_empty() && !fix.is_empty(), "{destination:?} {cause:?}");
                assert!(explanation.contains(destination.label()), "{destination:?} {cause:?}: {explanation}");
                let other = Destination::iter().find(|d| *d != destination).unwrap();
                assert!(
                    !explanation.contains(other.label()) && !fix.iter().any(|step| step.contains(other.label())),
                    "{destination:?} {cause:?} names {other:?}"
                );
            }
            assert_eq!(serde_json::to_value(cause).unwrap(), cause.as_str());
        }
    }

    #[test]
    fn exsited_statuses_are_split_into_outages_by_cause_and_refusals_of_the_po() {
        use OutageCause::*;
        let outages = [
            (401, Credentials),
            (403, Credentials),
            (301, Endpoint),
            (302, Endpoint),
            (307, Endpoint),
            (308, Endpoint),
            (404, Endpoint),
            (405, Endpoint),
            (407, Endpoint),
            (429, Throttled),
            (408, Unavailable),
            (500, Unavailable),
            (502, Unavailable),
            (503, Unavailable),
            (504, Unavailable),
        ];
        for (status, cause) in outages {
            assert_eq!(classify_exsited_status(status), Some(cause), "{status}");
        }
        // Exsited's verdicts on the PO (mailed as `exsited_rejected`), and successes: no outage.
        for status in [200, 201, 204, 400, 409, 410, 413, 415, 422] {
            assert_eq!(classify_exsited_status(status), None, "{status}");
        }
    }

    #[test]
    fn each_destination_keeps_its_own_outage_records() {
        use strum::IntoEnumIterator;
        assert_eq!(OutageRecord::key(Destination::Appzen, OutageCause::Credentials), "outage#appzen#credentials");
        assert_eq!(OutageRecord::key(Destination::Exsited, OutageCause::Credentials), "outage#exsited#credentials");
        let mut keys = std::collections::BTreeSet::new();
        for destination in Destination::iter() {
            for cause in OutageCause::iter() {
                let key = OutageRecord::key(destination, cause);
                assert!(key.parse::<u64>().is_err(), "never a Komet PO id: {key}");
                assert!(!key.starts_with("exsited#"), "never a PO item of Exsited's: {key}");
                assert!(keys.insert(key), "one key per destination and cause");
            }
        }

        // Opened, mailed and ended for Exsited, the record says whose it is; AppZen's record stays as it was.
        let appzen = observe(None, Destination::Appzen, OutageCause::Credentials, at(0), &RULES).write.unwrap();
        let opened = observe(None, Destination::Exsited, OutageCause::Credentials, at(1), &RULES);
        assert!(opened.mail, "credentials are mailed at once, for Exsited too");
        let exsited = opened.write.unwrap();
        assert_eq!((exsited.po_id.as_str(), exsited.destination), ("outage#exsited#credentials", Destination::Exsited));
        let ended = end(Some(&exsited), at(5)).unwrap();
        assert_eq!((ended.po_id.as_str(), ended.destination), ("outage#exsited#credentials", Destination::Exsited));
        assert_eq!(unmail(&exsited).po_id, exsited.po_id);
        assert_eq!(appzen.po_id, "outage#appzen#credentials");

        // AppZen's records are stored as before there was a second destination (no `destination`); Exsited's
        // say whose they are, and read back as they were written.
        let stored = serde_json::to_value(&appzen).unwrap();
        assert_eq!(stored.get("destination"), None, "{stored}");
        let stored = serde_json::to_value(&ended).unwrap();
        assert_eq!(stored["destination"], "exsited");
        assert_eq!(serde_json::from_value::<OutageRecord>(stored).unwrap(), ended);
    }

    #[test]
    fn with_a_schedule_of_seconds_a_lasting_outage_stays_one_outage() {
        let rules = OutageRules { quiet: Duration::seconds(2), mail_after: Duration::zero() };
        let second = |n: i64| at(0) + Duration::milliseconds(n * 700);
        let first = observe(None, Destination::Appzen, OutageCause::Unavailable, second(0), &rules);
        assert!(first.mail);
        let mut current = first.write;
        // Seen every 0.7 s for a while: kept open, never mailed again.
        for n in 1..20 {
            let seen = observe(current.as_ref(), Destination::Appzen, OutageCause::Unavailable, second(n), &rules);
            assert!(!seen.mail, "sighting {n}");
            current = seen.write.or(current);
        }
        assert_eq!(current.unwrap().opened_at, second(0));
    }
}
