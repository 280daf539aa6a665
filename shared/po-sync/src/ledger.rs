//! The version ledger: for each Komet PO, the latest version reconcile has seen and what it did with it, so
//! AppZen always ends on what Komet last sent and never goes back to an older version.
//!
//! A *version* is the instant ingest received the webhook (`receivedAt`, in milliseconds): two sends of the
//! same body are two versions, and a revert (A, B, A) makes the second A the newest. Per record, in order:
//!
//! 1. **Superseded**: a newer version is already final and reached AppZen (or AppZen holds a version at least as
//!    new), or a newer version is being processed → consumed, not sent to AppZen. A newer version that never
//!    reached AppZen (held, rejected, unmappable) does not supersede an older one AppZen can take: otherwise the
//!    order of failures would decide what AppZen ends on (an older version parked, redriven after a newer one
//!    that does not add up, would be dropped, where without the fault it would have been sent first).
//! 2. **Duplicate**: this exact version is already final, or its body is what AppZen already holds → consumed
//!    without a second upsert (the ledger notes the newer version).
//! 3. **Busy**: another record of this PO holds a live claim → retried later, so two writers never race.
//! 4. Otherwise the record **claims** the PO, is processed as usual, and **settles** the claim once its outcome
//!    is final; a transient failure **releases** the claim, leaving the ledger as it was.
//!
//! Every write is a compare-and-set on [`LedgerEntry::revision`] (the `Ledger` port in po-sync-aws): of two
//! concurrent writers one wins, and the other reads again and decides again. A claim is a lease that outlives
//! the claiming invocation (its deadline plus a margin), so an expired claim means its holder is gone.
//!
//! An operator may **cancel** a PO at a destination (`po-sync-admin cancel`): the entry then carries a
//! [`Cancellation`], and a version that would be sent is held instead (reconcile's business, not [`judge`]'s: the
//! version is claimed and settled as held, so a replay after [`reactivated`] sends it).
//!
//! Everything here is pure: entries in, entries out.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// One ledger item per Komet PO (DynamoDB key `poId`): an operator reads "what happened to PO 12345?" with
/// one `GetItem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Komet's PO id, as text (the table's partition key).
    pub po_id: String,
    pub po_number: String,
    /// Incremented by every write; the compare-and-set token.
    pub revision: u64,
    /// The latest version whose outcome is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<SettledVersion>,
    /// What the destination holds: the last version it accepted, and its id for the PO (AppZen's uuid,
    /// Exsited's `PO-…`). Stored as `appzen`, its name from before Exsited, so existing items still read.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "appzen")]
    pub holds: Option<DestinationHolds>,
    /// A version being processed right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// The notifications already queued for the version last processed, so a redelivery (after the ledger
    /// could not be settled) does not queue them again once SQS's five-minute deduplication window is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<Notified>,
    /// An operator cancelled the PO at this destination: newer versions are held, not sent, until it is
    /// reactivated. Every other derivation here keeps it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancellation>,
    pub updated_at: DateTime<Utc>,
}

/// An operator's cancellation of a PO at one destination (`po-sync-admin cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    pub at: DateTime<Utc>,
    /// The operator's words (`--reason`), for whoever reads the ledger or the e-mail later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The destination's id of the PO that was cancelled there (Exsited's `PO-…`); `None` when nothing was
    /// cancelled at the destination itself (AppZen has no cancel; no version had reached Exsited yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
}

/// A version and what was done with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettledVersion {
    pub version: i64,
    /// The SQS sequence number that ordered it among versions of the same millisecond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    pub received_at: DateTime<Utc>,
    pub body_sha256: String,
    pub sqs_message_id: String,
    pub outcome: LedgerOutcome,
    pub settled_at: DateTime<Utc>,
}

/// What reconcile did with the latest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum LedgerOutcome {
    /// AppZen accepted it.
    Upserted,
    /// AppZen already held this body; not sent again.
    Duplicate,
    /// Not sent: it does not reconcile and the policy is `block`, or the PO is cancelled at the destination (a
    /// person was notified).
    Held,
    /// AppZen refused it (a person was notified).
    Rejected,
    /// It cannot be expressed as an AppZen PO (a person was notified).
    Unmappable,
}

/// Which notifications (by kind) were queued for one version of the PO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notified {
    pub version: i64,
    pub body_sha256: String,
    pub kinds: Vec<String>,
}

/// The version the destination last accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationHolds {
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    pub body_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// AppZen's `CREATED` or `UPDATED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub http_status: u16,
    pub upserted_at: DateTime<Utc>,
}

/// A lease on the PO while one record is processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    pub body_sha256: String,
    pub sqs_message_id: String,
    pub until: DateTime<Utc>,
}

/// The record being decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival<'a> {
    pub po_id: u64,
    pub po_number: &'a str,
    /// When ingest received the webhook, as far as it can be trusted ([`trusted_received_at`]).
    pub received_at: DateTime<Utc>,
    pub body_sha256: &'a str,
    pub sqs_message_id: &'a str,
    /// The SQS FIFO `SequenceNumber` of the delivery: orders two versions received in the same millisecond.
    pub sequence: Option<u128>,
    /// An operator's replay of a kept body (`po-sync-admin replay --po`), not a send from Komet.
    pub replay: bool,
    /// A replay to send even if the ledger says AppZen holds it (`replay --resend`, `verify --repair`: AppZen
    /// was found not to). Still superseded by a newer version that reached AppZen.
    pub resend: bool,
}

impl Arrival<'_> {
    /// The version: when ingest received the webhook, in milliseconds.
    pub fn version(&self) -> i64 {
        self.received_at.timestamp_millis()
    }

    fn order(&self) -> Order {
        Order(self.version(), self.sequence.unwrap_or(0))
    }
}

/// How far ahead of SQS's own clock a `receivedAt` may be: ingest stamps it before it sends the message, so it
/// is earlier than SQS's `SentTimestamp` but for the difference between two NTP-synchronised AWS clocks
/// (milliseconds; Amazon Time Sync). Two seconds is a thousand times that and still too short for a clock that
/// runs fast to hide a real later send.
pub const CLOCK_SKEW: Duration = Duration::seconds(2);

/// A version can be stamped in the future (a clock running fast, a hand-made or replayed message); one that
/// reached AppZen would make every later real send "superseded". So a `receivedAt` later than the message's
/// SQS `SentTimestamp` plus [`CLOCK_SKEW`] counts as the `SentTimestamp`.
pub fn trusted_received_at(stamped: DateTime<Utc>, sent: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match sent {
        Some(sent) if stamped > sent + CLOCK_SKEW => sent,
        _ => stamped,
    }
}

/// Versions in order: the time, then the SQS sequence number (0 where a record, or an entry written before
/// sequences were kept, has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order(i64, u128);

fn order_of(version: i64, sequence: Option<&str>) -> Order {
    Order(version, sequence.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// What to do with an arrival, given the ledger as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Process it: first write `claim` (compare-and-set on the entry read).
    Proceed { claim: LedgerEntry },
    /// Consume it, not sent to AppZen: a newer version exists.
    Superseded { newer_version: i64 },
    /// Consume it without a second upsert; write `record` first when there is one (compare-and-set).
    Duplicate { record: Option<LedgerEntry> },
    /// Another record of this PO is being processed: retry later.
    Busy { claimed_by: String, until: DateTime<Utc> },
}

/// Decides what an arrival is worth against the ledger entry read for its PO (`None`: never seen).
pub fn judge(current: Option<&LedgerEntry>, arrival: &Arrival<'_>, now: DateTime<Utc>, lease: Duration) -> Verdict {
    let version = arrival.version();
    let Some(entry) = current else {
        return Verdict::Proceed { claim: claimed(new_entry(arrival, now), arrival, now, lease) };
    };
    let holds = entry.holds.as_ref();
    if let Some(latest) = &entry.latest {
        let is_this = |other: i64, sha: &str| other == version && sha == arrival.body_sha256;
        let reached_appzen = matches!(latest.outcome, LedgerOutcome::Upserted | LedgerOutcome::Duplicate);
        // An operator's replay of a version that never reached AppZen asks for it to be tried again (after the
        // fix); anything else seen again is a redelivery of a version already final.
        let tried_again = arrival.replay && (!reached_appzen || arrival.resend);
        if (is_this(latest.version, &latest.body_sha256) && !tried_again)
            || (holds.is_some_and(|h| is_this(h.version, &h.body_sha256)) && !arrival.resend)
        {
            return Verdict::Duplicate { record: None };
        }
        let older = |version: i64, sequence: &Option<String>| arrival.order() < order_of(version, sequence.as_deref());
        // A replay of the latest version itself is that version, whatever SQS sequence number its new message got.
        if older(latest.version, &latest.sequence)
            && !is_this(latest.version, &latest.body_sha256)
            && (reached_appzen || holds.is_some_and(|h| older(h.version, &h.sequence)))
        {
            return Verdict::Superseded { newer_version: latest.version };
        }
    }
    if let Some(claim) = entry.claim.as_ref().filter(|c| c.sqs_message_id != arrival.sqs_message_id && c.until > now) {
        if order_of(claim.version, claim.sequence.as_deref()) > arrival.order() {
            return Verdict::Superseded { newer_version: claim.version };
        }
        return Verdict::Busy { claimed_by: claim.sqs_message_id.clone(), until: claim.until };
    }
    if !arrival.resend && entry.holds.as_ref().is_some_and(|holds| holds.body_sha256 == arrival.body_sha256) {
        let mut record = entry.clone();
        record.latest = Some(latest_after(entry, arrival, LedgerOutcome::Duplicate, now));
        // A claim left by this same message (it died before settling) is done with too.
        record.claim = None;
        record.revision += 1;
        record.updated_at = now;
        return Verdict::Duplicate { record: Some(record) };
    }
    Verdict::Proceed { claim: claimed(entry.clone(), arrival, now, lease) }
}

/// Whether a notification of `kind` was already queued for this very version (an earlier delivery of it).
pub fn already_notified(entry: &LedgerEntry, arrival: &Arrival<'_>, kind: &str) -> bool {
    entry.notified.as_ref().is_some_and(|n| {
        n.version == arrival.version() && n.body_sha256 == arrival.body_sha256 && n.kinds.iter().any(|k| k == kind)
    })
}

/// The entry noting that a notification of `kind` was queued for the arrival; `None` when the arrival no longer
/// holds its claim (the noting is then left to the newer claim's holder).
pub fn note_notified(
    current: &LedgerEntry,
    arrival: &Arrival<'_>,
    kind: &str,
    now: DateTime<Utc>,
) -> Option<LedgerEntry> {
    if !holds_claim(current, arrival) {
        return None;
    }
    let mut entry = current.clone();
    let this_version = |n: &Notified| n.version == arrival.version() && n.body_sha256 == arrival.body_sha256;
    match entry.notified.as_mut().filter(|n| this_version(n)) {
        Some(notified) => notified.kinds.push(kind.to_owned()),
        None => {
            entry.notified = Some(Notified {
                version: arrival.version(),
                body_sha256: arrival.body_sha256.to_owned(),
                kinds: vec![kind.to_owned()],
            })
        }
    }
    entry.revision += 1;
    entry.updated_at = now;
    Some(entry)
}

/// What became of a claimed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub outcome: LedgerOutcome,
    /// AppZen's answer when it accepted the PO.
    pub accepted: Option<Accepted>,
}

/// AppZen's acceptance, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub http_status: u16,
    pub uuid: Option<String>,
    pub status: Option<String>,
}

/// The entry once the arrival's claim is settled; `None` when the claim is no longer this arrival's (its lease
/// expired and another record took the PO).
pub fn settle(
    current: &LedgerEntry,
    arrival: &Arrival<'_>,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Option<LedgerEntry> {
    if !holds_claim(current, arrival) {
        return None;
    }
    let mut entry = current.clone();
    entry.latest = Some(latest_after(current, arrival, settlement.outcome, now));
    if let Some(accepted) = &settlement.accepted {
        entry.holds = Some(DestinationHolds {
            version: arrival.version(),
            sequence: arrival.sequence.map(|s| s.to_string()),
            body_sha256: arrival.body_sha256.to_owned(),
            uuid: accepted.uuid.clone(),
            status: accepted.status.clone(),
            http_status: accepted.http_status,
            upserted_at: now,
        });
    }
    entry.po_number = arrival.po_number.to_owned();
    entry.claim = None;
    entry.revision += 1;
    entry.updated_at = now;
    Some(entry)
}

/// The entry with the arrival's claim removed (a transient failure: the redelivery decides afresh); `None`
/// when there is nothing of this arrival's to release.
pub fn release(current: &LedgerEntry, arrival: &Arrival<'_>, now: DateTime<Utc>) -> Option<LedgerEntry> {
    if !holds_claim(current, arrival) {
        return None;
    }
    let mut entry = current.clone();
    entry.claim = None;
    entry.revision += 1;
    entry.updated_at = now;
    Some(entry)
}

/// The claim of a record being processed right now, if any: an operator's cancel or reactivate waits for it, so
/// it cannot cross a version on its way to the destination (a create whose id the ledger does not know yet).
pub fn live_claim(entry: &LedgerEntry, now: DateTime<Utc>) -> Option<&Claim> {
    entry.claim.as_ref().filter(|claim| claim.until > now)
}

/// The entry recording `cancellation` (`po-sync-admin cancel`), derived from `current` (`None`: po-sync has not
/// seen the PO yet, so its first version will be held). Everything else in the entry is kept.
pub fn cancelled(
    current: Option<&LedgerEntry>,
    po_id: u64,
    cancellation: Cancellation,
    now: DateTime<Utc>,
) -> LedgerEntry {
    let mut entry = current.cloned().unwrap_or_else(|| LedgerEntry {
        po_id: po_id.to_string(),
        // Not known until Komet sends a version; the claim of that version sets it.
        po_number: String::new(),
        revision: 0,
        latest: None,
        holds: None,
        claim: None,
        notified: None,
        cancelled: None,
        updated_at: now,
    });
    entry.cancelled = Some(cancellation);
    entry.revision += 1;
    entry.updated_at = now;
    entry
}

/// The entry without its cancellation (`po-sync-admin reactivate`): the next version is sent again. `None` when
/// the entry records no cancellation (nothing to write).
pub fn reactivated(current: &LedgerEntry, now: DateTime<Utc>) -> Option<LedgerEntry> {
    current.cancelled.as_ref()?;
    let mut entry = current.clone();
    entry.cancelled = None;
    entry.revision += 1;
    entry.updated_at = now;
    Some(entry)
}

/// The entry whose cancellation names the destination's id of the PO, once the destination itself holds it
/// cancelled (`po-sync-admin cancel` records before it tells AppZen). `None` when the entry records no
/// cancellation any more, or already names that id (nothing to write).
pub fn cancellation_told(current: &LedgerEntry, destination_id: &str, now: DateTime<Utc>) -> Option<LedgerEntry> {
    let cancellation = current.cancelled.as_ref()?;
    if cancellation.destination_id.as_deref() == Some(destination_id) {
        return None;
    }
    let mut entry = current.clone();
    if let Some(cancellation) = entry.cancelled.as_mut() {
        cancellation.destination_id = Some(destination_id.to_owned());
    }
    entry.revision += 1;
    entry.updated_at = now;
    Some(entry)
}

/// The version the destination should hold and does not, because it was held while the PO was cancelled: the
/// latest version, when it was held and is newer than what the destination holds. A replay of it
/// (`po-sync-admin replay --po <id> --latest`) sends it once the PO is reactivated.
pub fn held_version(entry: &LedgerEntry) -> Option<i64> {
    let latest = entry.latest.as_ref().filter(|latest| latest.outcome == LedgerOutcome::Held)?;
    let holds = entry.holds.as_ref().map(|h| order_of(h.version, h.sequence.as_deref()));
    let newer = holds.is_none_or(|holds| order_of(latest.version, latest.sequence.as_deref()) > holds);
    newer.then_some(latest.version)
}

/// The ledger's latest version once `arrival` is final: the arrival, unless a newer version is already final (an
/// older version AppZen could still take went through after newer ones it could not: `latest` stays the newest).
fn latest_after(
    entry: &LedgerEntry,
    arrival: &Arrival<'_>,
    outcome: LedgerOutcome,
    now: DateTime<Utc>,
) -> SettledVersion {
    let is_this =
        |latest: &SettledVersion| latest.version == arrival.version() && latest.body_sha256 == arrival.body_sha256;
    match &entry.latest {
        Some(latest) if order_of(latest.version, latest.sequence.as_deref()) > arrival.order() && !is_this(latest) => {
            latest.clone()
        }
        _ => settled(arrival, outcome, now),
    }
}

fn holds_claim(entry: &LedgerEntry, arrival: &Arrival<'_>) -> bool {
    entry.claim.as_ref().is_some_and(|c| c.sqs_message_id == arrival.sqs_message_id && c.version == arrival.version())
}

fn new_entry(arrival: &Arrival<'_>, now: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        po_id: arrival.po_id.to_string(),
        po_number: arrival.po_number.to_owned(),
        // The first write expects no item, then stores revision 1.
        revision: 0,
        latest: None,
        holds: None,
        claim: None,
        notified: None,
        cancelled: None,
        updated_at: now,
    }
}

fn claimed(mut entry: LedgerEntry, arrival: &Arrival<'_>, now: DateTime<Utc>, lease: Duration) -> LedgerEntry {
    entry.claim = Some(Claim {
        version: arrival.version(),
        sequence: arrival.sequence.map(|s| s.to_string()),
        body_sha256: arrival.body_sha256.to_owned(),
        sqs_message_id: arrival.sqs_message_id.to_owned(),
        until: now + lease,
    });
    entry.po_number = arrival.po_number.to_owned();
    entry.revision += 1;
    entry.updated_at = now;
    entry
}

fn settled(arrival: &Arrival<'_>, outcome: LedgerOutcome, now: DateTime<Utc>) -> SettledVersion {
    SettledVersion {
        version: arrival.version(),
        sequence: arrival.sequence.map(|s| s.to_string()),
        received_at: arrival.received_at,
        body_sha256: arrival.body_sha256.to_owned(),
        sqs_message_id: arrival.sqs_message_id.to_owned(),
        outcome,
        settled_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const LEASE: Duration = Duration::minutes(17);

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, second).unwrap()
    }

    fn arrival<'a>(second: u32, sha: &'a str, message: &'a str) -> Arrival<'a> {
        Arrival {
            po_id: 7,
            po_number: "P7",
            received_at: at(second),
            body_sha256: sha,
            sqs_message_id: message,
            sequence: None,
            replay: false,
            resend: false,
        }
    }

    fn upserted() -> Settlement {
        Settlement {
            outcome: LedgerOutcome::Upserted,
            accepted: Some(Accepted { http_status: 201, uuid: Some("u-1".into()), status: Some("CREATED".into()) }),
        }
    }

    /// Claims and settles an arrival as reconcile would; returns the entry written last.
    fn process(current: Option<LedgerEntry>, arrival: &Arrival<'_>, settlement: &Settlement) -> LedgerEntry {
        let Verdict::Proceed { claim } = judge(current.as_ref(), arrival, at(50), LEASE) else {
            panic!("expected to proceed: {:?}", judge(current.as_ref(), arrival, at(50), LEASE))
        };
        assert_eq!(claim.revision, current.as_ref().map_or(0, |c| c.revision) + 1);
        settle(&claim, arrival, settlement, at(51)).expect("the claim is ours")
    }

    #[test]
    fn a_first_version_is_claimed_then_settled_with_what_appzen_holds() {
        let a = arrival(1, "A", "m1");
        let entry = process(None, &a, &upserted());
        assert_eq!(entry.revision, 2);
        assert_eq!(entry.claim, None);
        let latest = entry.latest.as_ref().unwrap();
        assert_eq!((latest.version, latest.outcome), (a.version(), LedgerOutcome::Upserted));
        let holds = entry.holds.unwrap();
        assert_eq!((holds.body_sha256.as_str(), holds.uuid.as_deref()), ("A", Some("u-1")));
    }

    #[test]
    fn a_revert_is_a_newer_version_and_goes_through() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let entry = process(Some(entry), &arrival(2, "B", "m2"), &upserted());
        let entry = process(Some(entry), &arrival(3, "A", "m3"), &upserted());
        assert_eq!(entry.holds.unwrap().body_sha256, "A");
        assert_eq!(entry.latest.unwrap().version, at(3).timestamp_millis());
    }

    #[test]
    fn an_older_version_is_superseded_by_a_settled_or_a_claimed_newer_one() {
        let entry = process(None, &arrival(5, "B", "m2"), &upserted());
        let older = arrival(1, "A", "m1");
        assert_eq!(
            judge(Some(&entry), &older, at(50), LEASE),
            Verdict::Superseded { newer_version: at(5).timestamp_millis() }
        );
        let Verdict::Proceed { claim } = judge(Some(&entry), &arrival(9, "C", "m3"), at(50), LEASE) else { panic!() };
        assert_eq!(
            judge(Some(&claim), &arrival(7, "X", "m4"), at(50), LEASE),
            Verdict::Superseded { newer_version: at(9).timestamp_millis() }
        );
    }

    #[test]
    fn a_newer_version_appzen_never_took_does_not_supersede_an_older_one_it_can_take() {
        // A (1) is parked during an outage; B (3) does not add up and is held; A is redriven.
        let held = Settlement { outcome: LedgerOutcome::Held, accepted: None };
        let entry = process(None, &arrival(3, "B", "m3"), &held);
        let a = arrival(1, "A", "m1-redriven");
        let entry = process(Some(entry), &a, &upserted());
        let latest = entry.latest.as_ref().unwrap();
        assert_eq!((latest.version, latest.outcome), (at(3).timestamp_millis(), LedgerOutcome::Held), "latest stays B");
        assert_eq!(
            entry.holds.as_ref().unwrap().version,
            a.version(),
            "AppZen takes A, as it would have without the outage"
        );
        // A's redelivery is done; a version older than what AppZen holds is superseded.
        assert_eq!(judge(Some(&entry), &a, at(50), LEASE), Verdict::Duplicate { record: None });
        assert!(matches!(judge(Some(&entry), &arrival(0, "Z", "m0"), at(50), LEASE), Verdict::Superseded { .. }));
        // A version between A and B still goes through: it is the newest AppZen can take.
        assert!(matches!(judge(Some(&entry), &arrival(2, "C", "m2"), at(50), LEASE), Verdict::Proceed { .. }));
        // Once a newer version reached AppZen, every older one is superseded.
        let entry = process(Some(entry), &arrival(4, "D", "m4"), &upserted());
        assert!(matches!(judge(Some(&entry), &arrival(2, "C", "m2"), at(50), LEASE), Verdict::Superseded { .. }));
    }

    #[test]
    fn the_same_body_again_is_a_duplicate_and_only_notes_the_newer_version() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let again = arrival(2, "A", "m2");
        let Verdict::Duplicate { record: Some(record) } = judge(Some(&entry), &again, at(50), LEASE) else { panic!() };
        assert_eq!(record.revision, entry.revision + 1);
        let latest = record.latest.as_ref().unwrap();
        assert_eq!((latest.version, latest.outcome), (again.version(), LedgerOutcome::Duplicate));
        assert_eq!(record.holds, entry.holds, "AppZen's copy is unchanged");
        // A redelivery of a version already final writes nothing.
        assert_eq!(judge(Some(&record), &again, at(50), LEASE), Verdict::Duplicate { record: None });
    }

    #[test]
    fn a_body_appzen_holds_is_a_duplicate_even_after_a_held_version() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let held = Settlement { outcome: LedgerOutcome::Held, accepted: None };
        let entry = process(Some(entry), &arrival(2, "B", "m2"), &held);
        assert!(matches!(judge(Some(&entry), &arrival(3, "A", "m3"), at(50), LEASE), Verdict::Duplicate { .. }));
    }

    #[test]
    fn a_replay_tries_a_version_that_never_reached_appzen_again_and_only_that() {
        let held = Settlement { outcome: LedgerOutcome::Held, accepted: None };
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let entry = process(Some(entry), &arrival(2, "B", "m2"), &held);
        // Komet's or SQS's second delivery of the held version is a redelivery: nothing is done again.
        assert_eq!(
            judge(Some(&entry), &arrival(2, "B", "m2-again"), at(50), LEASE),
            Verdict::Duplicate { record: None }
        );
        // The operator's replay of it (after the fix) is processed again, with its own version.
        let replay = Arrival { replay: true, ..arrival(2, "B", "m2-replay") };
        let entry = process(Some(entry), &replay, &upserted());
        let holds = entry.holds.as_ref().unwrap();
        assert_eq!((holds.version, holds.body_sha256.as_str()), (at(2).timestamp_millis(), "B"));
        // Once it reached AppZen, a replay of it is a duplicate, and a replay of an older version is superseded.
        assert_eq!(
            judge(Some(&entry), &Arrival { replay: true, ..arrival(2, "B", "m2-replay-2") }, at(50), LEASE),
            Verdict::Duplicate { record: None }
        );
        assert!(matches!(
            judge(Some(&entry), &Arrival { replay: true, ..arrival(1, "A", "m1-replay") }, at(50), LEASE),
            Verdict::Superseded { .. }
        ));
    }

    #[test]
    fn a_resend_goes_to_appzen_again_but_never_before_a_newer_version_it_holds() {
        let resend = |second, sha, message| Arrival { replay: true, resend: true, ..arrival(second, sha, message) };
        let held = Settlement { outcome: LedgerOutcome::Held, accepted: None };
        // A, then the same body again (a duplicate, AppZen holds A): verify found AppZen no longer holds it.
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let Verdict::Duplicate { record: Some(entry) } = judge(Some(&entry), &arrival(2, "A", "m2"), at(50), LEASE)
        else {
            panic!("the same body is a duplicate")
        };
        assert_eq!(entry.latest.as_ref().map(|l| l.outcome), Some(LedgerOutcome::Duplicate));
        assert_eq!(
            judge(Some(&entry), &Arrival { replay: true, ..arrival(2, "A", "m2-replay") }, at(50), LEASE),
            Verdict::Duplicate { record: None },
            "a plain replay is still a duplicate"
        );
        let entry = process(Some(entry), &resend(2, "A", "m2-resend"), &upserted());
        let holds = entry.holds.as_ref().unwrap();
        assert_eq!((holds.version, holds.body_sha256.as_str()), (at(2).timestamp_millis(), "A"), "sent again");
        assert_eq!(entry.latest.as_ref().map(|l| l.outcome), Some(LedgerOutcome::Upserted));
        // Its new SQS message may carry any sequence number (moto's are random): it is still that version, not
        // one older than itself, and its outcome is the latest's.
        let mut sequenced = entry.clone();
        sequenced.latest.as_mut().unwrap().sequence = Some("900".into());
        let low = Arrival { sequence: Some(1), ..resend(2, "A", "m2-resend-low") };
        let settled = process(Some(sequenced), &low, &upserted());
        assert_eq!(settled.latest.as_ref().map(|l| l.sqs_message_id.as_str()), Some("m2-resend-low"));
        // The version AppZen holds, behind a newer one that never reached it, is sent again too.
        let entry = process(Some(entry), &arrival(3, "B", "m3"), &held);
        assert!(matches!(judge(Some(&entry), &resend(2, "A", "m2-resend-2"), at(50), LEASE), Verdict::Proceed { .. }));
        // An older version is superseded, resend or not, and a live claim still makes it wait.
        assert!(matches!(judge(Some(&entry), &resend(1, "A", "m1-resend"), at(50), LEASE), Verdict::Superseded { .. }));
        let Verdict::Proceed { claim } = judge(Some(&entry), &arrival(4, "C", "m4"), at(50), LEASE) else { panic!() };
        assert!(matches!(
            judge(Some(&claim), &resend(2, "A", "m2-resend-3"), at(51), LEASE),
            Verdict::Superseded { .. }
        ));
    }

    #[test]
    fn a_live_claim_makes_an_equal_or_newer_arrival_wait_and_an_expired_one_does_not() {
        let Verdict::Proceed { claim } = judge(None, &arrival(1, "A", "m1"), at(10), LEASE) else { panic!() };
        let newer = arrival(2, "B", "m2");
        assert!(
            matches!(judge(Some(&claim), &newer, at(11), LEASE), Verdict::Busy { claimed_by, .. } if claimed_by == "m1")
        );
        let after_lease = at(10) + LEASE + Duration::seconds(1);
        assert!(matches!(judge(Some(&claim), &newer, after_lease, LEASE), Verdict::Proceed { .. }));
        // The claim's own message (redelivered after a crash) takes it again.
        assert!(matches!(judge(Some(&claim), &arrival(1, "A", "m1"), at(11), LEASE), Verdict::Proceed { .. }));
    }

    #[test]
    fn a_lost_claim_cannot_be_settled_or_released() {
        let a = arrival(1, "A", "m1");
        let Verdict::Proceed { claim } = judge(None, &a, at(10), LEASE) else { panic!() };
        let b = arrival(2, "B", "m2");
        let Verdict::Proceed { claim: taken } = judge(Some(&claim), &b, at(10) + LEASE * 2, LEASE) else { panic!() };
        assert_eq!(settle(&taken, &a, &upserted(), at(59)), None);
        assert_eq!(release(&taken, &a, at(59)), None);
        assert!(settle(&taken, &b, &upserted(), at(59)).is_some());
    }

    #[test]
    fn a_release_leaves_the_ledger_as_it_was_but_for_the_revision() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let b = arrival(2, "B", "m2");
        let Verdict::Proceed { claim } = judge(Some(&entry), &b, at(50), LEASE) else { panic!() };
        let released = release(&claim, &b, at(52)).unwrap();
        assert_eq!(
            (released.latest.clone(), released.holds.clone(), released.claim.clone()),
            (entry.latest, entry.holds, None)
        );
        assert_eq!(released.revision, claim.revision + 1);
    }

    #[test]
    fn the_item_reads_as_camel_case_json_with_snake_case_outcomes() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["poId"], "7");
        assert_eq!(json["latest"]["outcome"], "upserted");
        assert_eq!(json["appzen"]["uuid"], "u-1");
        assert!(json.get("claim").is_none());
        assert_eq!(serde_json::from_value::<LedgerEntry>(json).unwrap(), entry);
    }

    #[test]
    fn a_version_stamped_in_the_future_counts_as_when_sqs_got_it() {
        let sent = at(30);
        assert_eq!(trusted_received_at(at(29), Some(sent)), at(29), "earlier than SQS: as stamped");
        assert_eq!(trusted_received_at(at(31), Some(sent)), at(31), "within the clock skew");
        assert_eq!(trusted_received_at(at(32), Some(sent)), at(32), "exactly at the skew");
        assert_eq!(trusted_received_at(at(33), Some(sent)), sent, "beyond it: SQS's time");
        assert_eq!(trusted_received_at(sent + Duration::hours(2), Some(sent)), sent);
        assert_eq!(trusted_received_at(sent + Duration::hours(2), None), sent + Duration::hours(2), "no SQS time");
    }

    #[test]
    fn versions_of_the_same_millisecond_are_ordered_by_their_sqs_sequence_number() {
        let now = at(40);
        let with_sequence = |message, sha, sequence| Arrival { sequence: Some(sequence), ..arrival(1, sha, message) };
        let first = with_sequence("m-1", "a", 10);
        let Verdict::Proceed { claim } = judge(None, &first, now, LEASE) else { panic!() };
        let entry = settle(&claim, &first, &upserted(), now).unwrap();
        assert_eq!(entry.latest.as_ref().unwrap().sequence.as_deref(), Some("10"));

        // Same millisecond, sent before it: older, and AppZen has the newer one.
        let earlier = with_sequence("m-0", "b", 9);
        assert_eq!(
            judge(Some(&entry), &earlier, now, LEASE),
            Verdict::Superseded { newer_version: at(1).timestamp_millis() }
        );
        // Same millisecond, sent after it: newer, so it goes through.
        let later = with_sequence("m-2", "c", 11);
        assert!(matches!(judge(Some(&entry), &later, now, LEASE), Verdict::Proceed { .. }));
        // An entry written before sequences were kept orders below any sequence of the same millisecond.
        let mut old = entry.clone();
        old.latest.as_mut().unwrap().sequence = None;
        old.holds.as_mut().unwrap().sequence = None;
        assert!(matches!(judge(Some(&old), &earlier, now, LEASE), Verdict::Proceed { .. }));
    }

    #[test]
    fn notifications_queued_for_a_version_are_remembered_across_its_redeliveries() {
        let now = at(40);
        let a = arrival(1, "a", "m-1");
        let Verdict::Proceed { claim } = judge(None, &a, now, LEASE) else { panic!() };
        assert!(!already_notified(&claim, &a, "reconciliation_mismatch"));
        let noted = note_notified(&claim, &a, "reconciliation_mismatch", now).unwrap();
        let noted = note_notified(&noted, &a, "mapping_error", now).unwrap();
        assert_eq!(noted.revision, claim.revision + 2);
        // The settle failed; the same message comes back after its lease: claimed again, the notes kept.
        let later = now + Duration::minutes(30);
        let Verdict::Proceed { claim: again } = judge(Some(&noted), &a, later, LEASE) else { panic!() };
        assert!(
            already_notified(&again, &a, "reconciliation_mismatch") && already_notified(&again, &a, "mapping_error")
        );
        // Released after a transient failure: still noted.
        assert!(already_notified(&release(&again, &a, later).unwrap(), &a, "mapping_error"));
        // Another version starts afresh.
        let b = arrival(2, "b", "m-2");
        assert!(!already_notified(&again, &b, "reconciliation_mismatch"));
        let settled = settle(&again, &a, &upserted(), later).unwrap();
        let Verdict::Proceed { claim: b_claim } = judge(Some(&settled), &b, later, LEASE) else { panic!() };
        let b_noted = note_notified(&b_claim, &b, "reconciliation_mismatch", later).unwrap();
        assert_eq!(b_noted.notified.unwrap().kinds, ["reconciliation_mismatch"]);
        // Only the claim's holder notes.
        assert_eq!(note_notified(&settled, &a, "mapping_error", later), None);
    }

    fn cancellation(second: u32, id: Option<&str>) -> Cancellation {
        Cancellation { at: at(second), reason: Some("duplicate of P8".into()), destination_id: id.map(str::to_owned) }
    }

    #[test]
    fn a_cancellation_is_kept_by_every_other_write_until_the_po_is_reactivated() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let cancelled = cancelled(Some(&entry), 7, cancellation(40, Some("u-1")), at(40));
        assert_eq!(cancelled.revision, entry.revision + 1);
        assert_eq!(cancelled.updated_at, at(40));
        assert_eq!((&cancelled.latest, &cancelled.holds), (&entry.latest, &entry.holds), "nothing else changes");
        // A newer version is claimed and settled (held, by reconcile) with the cancellation still there.
        let held = Settlement { outcome: LedgerOutcome::Held, accepted: None };
        let b = arrival(2, "B", "m2");
        let after = process(Some(cancelled.clone()), &b, &held);
        assert_eq!(after.cancelled, cancelled.cancelled);
        let Verdict::Duplicate { record: Some(duplicate) } = judge(Some(&after), &arrival(3, "A", "m3"), at(50), LEASE)
        else {
            panic!("AppZen's body again is a duplicate")
        };
        assert_eq!(duplicate.cancelled, cancelled.cancelled);

        let reactivated = reactivated(&after, at(52)).expect("it was cancelled");
        assert_eq!((reactivated.cancelled.as_ref(), reactivated.revision), (None, after.revision + 1));
        assert_eq!(reactivated.latest, after.latest);
        assert_eq!(super::reactivated(&reactivated, at(53)), None, "nothing to clear");
        // The held version, replayed after the reactivation, goes through.
        let replay = Arrival { replay: true, ..arrival(2, "B", "m2-replay") };
        assert!(matches!(judge(Some(&reactivated), &replay, at(54), LEASE), Verdict::Proceed { .. }));
    }

    #[test]
    fn a_cancellation_names_the_destination_s_id_once_the_destination_was_told() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        assert_eq!(cancellation_told(&entry, "P7", at(41)), None, "no cancellation to name it in");
        let recorded = cancelled(Some(&entry), 7, cancellation(40, None), at(40));
        let told = cancellation_told(&recorded, "P7", at(41)).expect("recorded, not yet told");
        assert_eq!(told.cancelled.as_ref().and_then(|c| c.destination_id.as_deref()), Some("P7"));
        assert_eq!((told.revision, told.updated_at), (recorded.revision + 1, at(41)));
        let kept = Cancellation { destination_id: None, ..told.cancelled.clone().unwrap() };
        assert_eq!(kept, recorded.cancelled.clone().unwrap(), "when and why stay as recorded");
        assert_eq!(cancellation_told(&told, "P7", at(42)), None, "nothing to write");
    }

    #[test]
    fn a_po_cancelled_before_its_first_version_gets_an_entry_that_version_claims() {
        let entry = cancelled(None, 7, cancellation(10, None), at(10));
        assert_eq!((entry.po_id.as_str(), entry.po_number.as_str(), entry.revision), ("7", "", 1));
        assert_eq!((entry.latest.as_ref(), entry.holds.as_ref()), (None, None));
        let Verdict::Proceed { claim } = judge(Some(&entry), &arrival(11, "A", "m1"), at(12), LEASE) else {
            panic!("the first version is processed (and held by reconcile)")
        };
        assert_eq!((claim.po_number.as_str(), claim.revision), ("P7", 2));
        assert_eq!(claim.cancelled, entry.cancelled);
    }

    #[test]
    fn the_held_version_is_the_latest_when_held_and_newer_than_what_the_destination_holds() {
        let held = Settlement { outcome: LedgerOutcome::Held, accepted: None };
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        assert_eq!(held_version(&entry), None, "the destination holds the latest");
        let entry = process(Some(entry), &arrival(2, "B", "m2"), &held);
        assert_eq!(held_version(&entry), Some(at(2).timestamp_millis()));
        let only_held = process(None, &arrival(3, "C", "m3"), &held);
        assert_eq!(held_version(&only_held), Some(at(3).timestamp_millis()), "nothing reached the destination");
        // A newer version reached the destination since: nothing is held any more.
        let entry = process(Some(entry), &arrival(4, "D", "m4"), &upserted());
        assert_eq!(held_version(&entry), None);
    }

    #[test]
    fn a_live_claim_is_one_not_yet_expired() {
        let Verdict::Proceed { claim } = judge(None, &arrival(1, "A", "m1"), at(10), LEASE) else { panic!() };
        assert_eq!(live_claim(&claim, at(11)).map(|c| c.sqs_message_id.as_str()), Some("m1"));
        assert_eq!(live_claim(&claim, at(10) + LEASE), None);
    }

    #[test]
    fn an_entry_reads_the_same_without_a_cancellation_and_in_camel_case_with_one() {
        let entry = process(None, &arrival(1, "A", "m1"), &upserted());
        let json = serde_json::to_value(&entry).unwrap();
        assert!(json.get("cancelled").is_none(), "items written before cancellations existed are unchanged");
        let cancelled = cancelled(Some(&entry), 7, cancellation(40, Some("PO-LHROM9-0024")), at(40));
        let json = serde_json::to_value(&cancelled).unwrap();
        assert_eq!(json["cancelled"]["destinationId"], "PO-LHROM9-0024");
        assert_eq!(json["cancelled"]["reason"], "duplicate of P8");
        assert_eq!(serde_json::from_value::<LedgerEntry>(json).unwrap(), cancelled);
    }
}
