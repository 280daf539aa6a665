//! The soak's accounting: from what every party recorded, where each webhook ended, and whether the claims hold.
//!
//! Evidence, each kept by a different party: the sender's log (every request and its answer), the fault proxy's
//! record of what SQS accepted (every message ingest queued, every notification reconcile raised, every dead
//! letter notify parked) and of the e-mails passed to SES, the e-mails moto's SES holds, the AppZen sandbox's
//! request log, the functions' own log lines (reconcile's `record processed`), the parked queue's contents, the
//! queues' depths and the version ledger.
//!
//! A *queued message* is one ingest put on `webhooks.fifo`, named by its send id (the request's id). The rules:
//!
//! 1. Every acknowledged webhook (200) was queued: its request id is a queued message's send id.
//! 2. Every refused webhook (4xx) left no trace: none of its requests was queued.
//! 3. Every queued message (acknowledged or not: a request the sender gave up on may have been queued) is in
//!    exactly one place: upserted, duplicate, superseded (reconcile's first final outcome for it), held /
//!    unmappable / rejected *and mailed* (an e-mail of that kind about that version exists), or parked *and
//!    mailed* (in `webhooks-parked.fifo` at the end, with its `dead_lettered` e-mail). Anything else is lost.
//!    Each outcome must fit the body (a clean body is never held, a mismatch never upserted, ...).
//! 4. No PO's state in AppZen ever moves to an older version: the sandbox's requests for a PO, in order, are
//!    attributed to the records reconcile processed for it, in its log order (each record's line says how many
//!    requests it made); the versions of the accepted ones never decrease.
//! 5. AppZen's final state of each PO is the last queued version (not parked) that AppZen can take (clean, a PO
//!    AppZen does not refuse), and the ledger says AppZen holds that one.
//! 6. No event is mailed twice: one e-mail per `Message-ID` (notify derives it from the record), one per event
//!    per webhook version and kind; a second copy is *explained* only by an injected fault that makes it
//!    inevitable (SES's answer withheld after it sent, a notify invocation that died after mailing).
//! 7. Every queue but the parked one is empty at the end.
//! 8. A PO is handed back only for itself: in every reconcile invocation (its log lines carry the invocation's
//!    request id), a record handed back unstarted is behind a handed-back record of its own PO, and what the
//!    invocation told SQS to retry (the poller's record of the answer) is exactly the records it handed back
//!    (a reason of their own in their `record processed` line) and the ones behind them. So no record of another
//!    PO waits because of the failing PO (the soak's PO whose upserts AppZen fails), or because of any other PO.
//!    A dead letter is attributed by the reasons of its own deliveries (its SQS message id's lines): no webhook
//!    but the failing PO's is parked with an AppZen failure among them.
//! 9. An AppZen outage is mailed once: every outage e-mail reconcile queued was sent; two e-mails of one cause
//!    have a verdict of AppZen between them (an upsert the sandbox took or refused, decided after the first
//!    outage began: what ends an outage for reconcile); the soak's credentials stretch (401 to everything) is
//!    mailed exactly once, with cause `credentials`, and its outage stretch (503 to everything) is covered by
//!    exactly one `unavailable` e-mail; no outage of a cause the soak never injects (`endpoint`) is mailed; and
//!    every `appzen_rejected` e-mail quotes AppZen's 400, the only verdict the soak's AppZen refuses with.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use po_sync::ledger::LedgerEntry;
use po_sync::message::{NotificationDetail, NotificationEvent, WebhookEnvelope, sha256_hex};
use po_sync::outage::OutageCause;
use serde::Serialize;

use super::appzen_faults::{AppZenFault, Decision, Stretch};
use super::sender::{Ending, WebhookLog};
use super::traffic::{Shape, Traffic};
use po_sync_local::appzen_sandbox::RecordedRequest;
use po_sync_local::fault_proxy::{ForwardedEmail, SentMessage};
use po_sync_local::poller::{INJECTED_DEATH, Invocation};

/// reconcile's `record processed` line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordLine {
    /// The reconcile invocation's request id.
    pub request_id: Option<String>,
    pub message_id: String,
    pub po_id: Option<u64>,
    pub version: Option<i64>,
    pub send_id: Option<String>,
    pub outcome: String,
    pub attempts: usize,
    pub correlation_id: Option<String>,
    pub notified: Vec<String>,
}

/// The JSON lines of `functions.log` with the given message: their fields and the invocation's request id.
fn log_lines<'a>(log: &'a str, message: &'a str) -> impl Iterator<Item = (serde_json::Value, Option<String>)> + 'a {
    log.lines().filter_map(move |line| {
        let start = line.find("{\"")?;
        let mut json = serde_json::from_str::<serde_json::Value>(&line[start..]).ok()?;
        if json.pointer("/fields/message").and_then(|m| m.as_str()) != Some(message) {
            return None;
        }
        let request_id = json
            .get("spans")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
            .chain(json.get("span"))
            .find_map(|span| span.get("requestId").and_then(|r| r.as_str()))
            .map(str::to_owned);
        Some((json.get_mut("fields")?.take(), request_id))
    })
}

/// reconcile's `record processed` lines of `functions.log` (JSON lines; anything else is skipped).
pub fn record_lines(log: &str) -> Vec<RecordLine> {
    let mut lines = Vec::new();
    for (fields, request_id) in log_lines(log, "record processed") {
        let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let notified = text("notified").unwrap_or_default();
        lines.push(RecordLine {
            request_id,
            message_id: text("message_id").unwrap_or_default(),
            po_id: fields.get("po_id").and_then(|v| v.as_u64()),
            version: fields.get("version").and_then(|v| v.as_i64()),
            send_id: text("send_id"),
            outcome: text("outcome").unwrap_or_default(),
            attempts: fields.get("attempts").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
            correlation_id: text("correlation_id"),
            notified: ["reconciliation_mismatch", "mapping_error", "appzen_rejected", "poison_message"]
                .iter()
                .filter(|k| notified.contains(*k))
                .map(|k| (*k).to_owned())
                .collect(),
        });
    }
    lines
}

/// reconcile's warning for a record it handed back unstarted, behind an earlier record of its message group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SkipLine {
    pub request_id: Option<String>,
    pub message_id: String,
    /// The message group: the PO id.
    pub group: String,
}

/// The message of reconcile's [`SkipLine`].
const SKIPPED: &str = "handed back unstarted behind an earlier record of its PO, so no update overtakes an earlier one";

/// reconcile's [`SkipLine`]s in `functions.log`.
pub fn skip_lines(log: &str) -> Vec<SkipLine> {
    log_lines(log, SKIPPED)
        .map(|(fields, request_id)| {
            let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            SkipLine { request_id, message_id: text("message_id"), group: text("group") }
        })
        .collect()
}

/// reconcile's outcomes that hand the record back to SQS (`Fate::Retry`).
pub const HANDED_BACK: [&str; 6] =
    ["appzen_unavailable", "ledger_busy", "ledger_unavailable", "notify_failed", "body_unavailable", "not_attempted"];

/// Everything the accounting reads.
pub struct Evidence<'a> {
    pub traffic: &'a Traffic,
    pub webhooks: &'a [WebhookLog],
    /// What the proxy saw SQS accept, in order.
    pub sent: &'a [SentMessage],
    pub webhook_queue: &'a str,
    pub notification_queue: &'a str,
    pub parked_queue: &'a str,
    pub forwarded_emails: &'a [ForwardedEmail],
    /// The `Message-ID` of every e-mail moto's SES accepted, in order.
    pub mailed: &'a [String],
    /// The sandbox's requests (upserts), in order.
    pub appzen: &'a [RecordedRequest],
    pub records: &'a [RecordLine],
    pub skips: &'a [SkipLine],
    /// The AppZen fault hook's decision for every upsert, in order, and the stretches it was switched to.
    pub decisions: &'a [Decision],
    pub stretches: &'a [Stretch],
    /// The PO id of the PO whose upserts AppZen fails for a stretch (rule 8).
    pub failing_po: Option<u64>,
    /// The bodies in `webhooks-parked.fifo` at the end.
    pub parked: &'a [String],
    /// (queue, messages) of every queue but the parked one, at the end.
    pub depths: &'a [(String, u64)],
    pub ledger: &'a BTreeMap<u64, Option<LedgerEntry>>,
    pub invocations: &'a [Invocation],
    /// The domain of the sender address (notify's `Message-ID`s end with it).
    pub mail_domain: &'a str,
}

/// Where a queued message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Upserted,
    Duplicate,
    Superseded,
    HeldMailed,
    UnmappableMailed,
    RejectedMailed,
    ParkedMailed,
    // Not a place a person can see: each is counted as lost.
    HeldNotMailed,
    UnmappableNotMailed,
    RejectedNotMailed,
    ParkedNotMailed,
    Poison,
    Nowhere,
}

impl Place {
    pub fn is_lost(self) -> bool {
        matches!(
            self,
            Place::HeldNotMailed
                | Place::UnmappableNotMailed
                | Place::RejectedNotMailed
                | Place::ParkedNotMailed
                | Place::Poison
                | Place::Nowhere
        )
    }
}

/// The accounting's figures; every `*_violations`, `lost` and `unexplained_*` must be zero.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Accounting {
    pub offered: usize,
    pub acknowledged: usize,
    pub refused: usize,
    pub gave_up: usize,
    pub sender_requests: usize,
    pub sender_retries: usize,
    pub sender_timeouts: usize,
    pub answers_5xx: usize,
    pub queued: usize,
    /// Queued although the sender did not get a 200 for that request (it timed out, or gave up).
    pub queued_unacknowledged: usize,
    pub places: BTreeMap<Place, usize>,
    /// Queued messages that were dead-lettered (mailed) and later settled by reconcile after a redrive.
    pub dead_lettered_then_settled: usize,
    pub appzen_requests: usize,
    pub appzen_accepted: usize,
    pub emails: usize,
    pub emails_by_kind: BTreeMap<String, usize>,
    pub duplicate_emails_explained: usize,
    /// The messages parked (and mailed) at the end: PO, version, send, and what reconcile said of it.
    pub parked_at_end: Vec<String>,
    /// Dead letters (parkings) of the failing PO, and of other POs by the last reason of their deliveries.
    pub dead_lettered_failing_po: usize,
    pub dead_lettered_other: BTreeMap<String, usize>,
    /// reconcile invocations checked against what the poller told SQS (rule 8), and those that died (injected).
    pub batches_checked: usize,
    pub batches_died: usize,
    /// Invocations in which the failing PO was handed back; the records of other POs in them; of those, the
    /// ones handed back (each for a reason of its own or of its own PO).
    pub failing_po_batches: usize,
    pub failing_po_batch_others: usize,
    pub failing_po_batch_others_handed_back: usize,
    /// Outage e-mails sent, by cause.
    pub outage_emails: BTreeMap<String, usize>,
    // ---- must all be zero
    pub lost: usize,
    pub acknowledged_not_queued: usize,
    pub refused_with_trace: usize,
    pub in_two_places: usize,
    pub unexpected_outcomes: usize,
    pub upserted_without_appzen: usize,
    pub order_violations: usize,
    pub attribution_mismatches: usize,
    pub final_state_violations: usize,
    pub ledger_disagreements: usize,
    pub unexplained_duplicate_emails: usize,
    pub queues_not_empty: usize,
    pub unreadable: usize,
    /// Records handed back (or skipped) without a reason of their own or of their own PO (rule 8).
    pub held_back_by_other_pos: usize,
    /// Webhooks other than the failing PO's dead-lettered with an AppZen failure among their reasons (rule 8).
    pub parked_by_appzen: usize,
    /// Outage e-mails not sent, sent twice for one outage, or not one per stretch (rule 9).
    pub outage_email_violations: usize,
    /// `appzen_rejected` e-mails about an answer that was not AppZen's 400 (rule 9).
    pub rejections_without_a_verdict: usize,
    /// What each non-zero failure figure is made of (at most 40 lines).
    pub problems: Vec<String>,
}

impl Accounting {
    /// The failure figures that are not zero, by name.
    pub fn failures(&self) -> Vec<(&'static str, usize)> {
        [
            ("lost", self.lost),
            ("order violations", self.order_violations),
            ("unexplained duplicate e-mails", self.unexplained_duplicate_emails),
            ("final-state violations", self.final_state_violations),
            ("refused but left a trace", self.refused_with_trace),
            ("in two places", self.in_two_places),
            ("unexpected outcomes", self.unexpected_outcomes),
            ("upserted without an AppZen request", self.upserted_without_appzen),
            ("AppZen requests not attributable", self.attribution_mismatches),
            ("ledger disagrees with AppZen", self.ledger_disagreements),
            ("queues not empty", self.queues_not_empty),
            ("unreadable evidence", self.unreadable),
            ("records held back by another PO", self.held_back_by_other_pos),
            ("webhooks parked by an AppZen outage", self.parked_by_appzen),
            ("outage e-mails not one per outage", self.outage_email_violations),
            ("rejections without AppZen's verdict", self.rejections_without_a_verdict),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 40 {
            self.problems.push(text);
        }
    }

    pub fn place(&self, place: Place) -> usize {
        self.places.get(&place).copied().unwrap_or(0)
    }
}

struct Queued {
    envelope: WebhookEnvelope,
    send_id: String,
    sqs_message_id: String,
    body: String,
}

/// notify's `Message-ID` for a record body and kind.
pub fn message_id_for(body: &str, kind: &str, domain: &str) -> String {
    let digest = sha256_hex(body.as_bytes());
    format!("po-sync.{}.{kind}@{domain}", &digest[..32])
}

/// Applies the rules to the evidence.
pub fn account(e: &Evidence<'_>) -> Accounting {
    let mut a = Accounting { offered: e.webhooks.len(), ..Accounting::default() };

    // ---- the sender
    for w in e.webhooks {
        a.sender_requests += w.attempts.len();
        a.sender_retries += w.retries();
        a.sender_timeouts += w.attempts.iter().filter(|x| matches!(x.answer, super::sender::Answer::Timeout)).count();
        a.answers_5xx += w.attempts.iter().filter(|x| x.answer.status().is_some_and(|s| s >= 500)).count();
        match w.ending {
            Ending::Acknowledged => a.acknowledged += 1,
            Ending::Refused => a.refused += 1,
            Ending::GaveUp => a.gave_up += 1,
        }
    }

    // ---- what ingest queued
    let mut queued: Vec<Queued> = Vec::new();
    for sent in e.sent.iter().filter(|s| s.queue_name() == e.webhook_queue) {
        match WebhookEnvelope::from_json(&sent.body) {
            Ok(envelope) => queued.push(Queued {
                send_id: envelope.send_id.clone().unwrap_or_else(|| sent.deduplication_id.clone()),
                envelope,
                sqs_message_id: sent.message_id.clone(),
                body: sent.body.clone(),
            }),
            Err(error) => {
                a.unreadable += 1;
                a.problem(format!("a message ingest queued is not an envelope: {error}"));
            }
        }
    }
    a.queued = queued.len();
    let by_send: HashMap<&str, usize> = queued.iter().enumerate().map(|(i, q)| (q.send_id.as_str(), i)).collect();

    // Rules 1 and 2.
    for w in e.webhooks {
        match w.ending {
            Ending::Acknowledged => {
                let id = w.acknowledged_by().unwrap_or_default();
                if !by_send.contains_key(id) {
                    a.acknowledged_not_queued += 1;
                    a.problem(format!("PO {} step {}: acknowledged by {id} but never queued", w.po_number, w.step));
                }
            }
            Ending::Refused => {
                let status = w.attempts.last().and_then(|x| x.answer.status()).unwrap_or(0);
                let traces: Vec<&str> =
                    w.attempts.iter().map(|x| x.request_id.as_str()).filter(|id| by_send.contains_key(id)).collect();
                if !(400..500).contains(&status) || !traces.is_empty() {
                    a.refused_with_trace += 1;
                    a.problem(format!(
                        "PO {} step {}: refused with {status}, queued as {traces:?}",
                        w.po_number, w.step
                    ));
                }
            }
            Ending::GaveUp => {}
        }
        let acknowledged = w.acknowledged_by();
        a.queued_unacknowledged += w
            .attempts
            .iter()
            .filter(|x| Some(x.request_id.as_str()) != acknowledged && by_send.contains_key(x.request_id.as_str()))
            .count();
    }

    // ---- e-mails and the events behind them
    let mut mail_count: HashMap<&str, usize> = HashMap::new();
    for id in e.mailed {
        *mail_count.entry(id.as_str()).or_insert(0) += 1;
        let kind = id.split('@').next().and_then(|local| local.rsplit('.').next()).unwrap_or("?");
        *a.emails_by_kind.entry(kind.to_owned()).or_insert(0) += 1;
    }
    a.emails = e.mailed.len();
    // (po id, version, kind) -> the Message-IDs of its events that were mailed.
    let mut mailed_events: HashMap<(u64, i64, String), BTreeSet<String>> = HashMap::new();
    // SQS message id of a record notify reads -> the Message-ID of its e-mail.
    let mut mail_of_record: HashMap<&str, String> = HashMap::new();
    for sent in e.sent.iter().filter(|s| s.queue_name() == e.notification_queue) {
        let Ok(event) = NotificationEvent::from_json(&sent.body) else {
            a.unreadable += 1;
            a.problem("a notification reconcile raised is not readable".to_owned());
            continue;
        };
        let kind = event.kind().as_str();
        let id = message_id_for(&sent.body, kind, e.mail_domain);
        mail_of_record.insert(sent.message_id.as_str(), id.clone());
        if let Some(webhook) = &event.webhook
            && mail_count.contains_key(id.as_str())
        {
            mailed_events
                .entry((webhook.po.id, webhook.received_at.timestamp_millis(), kind.to_owned()))
                .or_default()
                .insert(id);
        }
    }
    for q in &queued {
        mail_of_record.insert(q.sqs_message_id.as_str(), message_id_for(&q.body, "dead_lettered", e.mail_domain));
    }
    // Parkings per envelope (notify deduplicates each by the dead letter's message id).
    let mut parkings: HashMap<String, BTreeSet<&str>> = HashMap::new();
    for sent in e.sent.iter().filter(|s| s.queue_name() == e.parked_queue) {
        parkings.entry(sent.body.clone()).or_default().insert(sent.deduplication_id.as_str());
    }

    // ---- rule 3: one place per queued message
    let mut lines_by_send: HashMap<&str, Vec<&RecordLine>> = HashMap::new();
    for line in e.records {
        if let Some(send_id) = &line.send_id {
            lines_by_send.entry(send_id.as_str()).or_default().push(line);
        }
    }
    let mut parked_sends: HashMap<String, usize> = HashMap::new();
    for body in e.parked {
        match WebhookEnvelope::from_json(body) {
            Ok(envelope) => *parked_sends.entry(envelope.send_id.unwrap_or(envelope.body_sha256)).or_insert(0) += 1,
            Err(error) => {
                a.unreadable += 1;
                a.problem(format!("a parked message is not an envelope: {error}"));
            }
        }
    }
    let shape_of = |po_id: u64, sha: &str| -> Option<(Shape, bool)> {
        let po = e.traffic.po(po_id)?;
        po.steps.iter().find(|s| s.sha256 == sha).map(|s| (s.shape, po.appzen_refuses))
    };
    const CONSUMED: [&str; 6] = ["upserted", "duplicate", "superseded", "held", "appzen_rejected", "poison"];
    let mut place_of: HashMap<&str, Place> = HashMap::new();
    for q in &queued {
        let po_id = q.envelope.po.id;
        let version = q.envelope.version();
        let lines = lines_by_send.get(q.send_id.as_str()).cloned().unwrap_or_default();
        let settled = lines.iter().find(|l| CONSUMED.contains(&l.outcome.as_str()));
        let parked = parked_sends.get(&q.send_id).copied().unwrap_or(0);
        let dead_letter_mail = message_id_for(&q.body, "dead_lettered", e.mail_domain);
        let dead_letter_mailed = mail_count.contains_key(dead_letter_mail.as_str());
        let mailed = |kind: &str| mailed_events.get(&(po_id, version, kind.to_owned())).is_some_and(|s| !s.is_empty());
        let place =
            match settled.map(|l| (l.outcome.as_str(), l)) {
                Some(("upserted", _)) => Place::Upserted,
                Some(("duplicate", _)) => Place::Duplicate,
                Some(("superseded", _)) => Place::Superseded,
                Some(("held", line)) if line.notified.iter().any(|k| k == "mapping_error") => {
                    if mailed("mapping_error") { Place::UnmappableMailed } else { Place::UnmappableNotMailed }
                }
                Some(("held", _)) => {
                    if mailed("reconciliation_mismatch") {
                        Place::HeldMailed
                    } else {
                        Place::HeldNotMailed
                    }
                }
                Some(("appzen_rejected", _)) => {
                    if mailed("appzen_rejected") {
                        Place::RejectedMailed
                    } else {
                        Place::RejectedNotMailed
                    }
                }
                Some(_) => Place::Poison,
                None if parked > 0 && dead_letter_mailed => Place::ParkedMailed,
                None if parked > 0 => Place::ParkedNotMailed,
                None => Place::Nowhere,
            };
        *a.places.entry(place).or_insert(0) += 1;
        place_of.insert(q.send_id.as_str(), place);
        if place == Place::ParkedMailed {
            a.parked_at_end.push(format!(
                "PO {} version {version} (send {}): reconcile said {:?}",
                q.envelope.po.po_number,
                q.send_id,
                lines.iter().map(|l| l.outcome.as_str()).collect::<Vec<_>>()
            ));
        }
        if place.is_lost() {
            a.lost += 1;
            a.problem(format!(
                "PO {} version {version} (send {}): {place:?}; reconcile said {:?}",
                q.envelope.po.po_number,
                q.send_id,
                lines.iter().map(|l| l.outcome.as_str()).collect::<Vec<_>>()
            ));
        }
        if settled.is_some() && parked > 0 {
            a.in_two_places += 1;
            a.problem(format!("PO {} version {version}: settled ({place:?}) and also parked", q.envelope.po.po_number));
        }
        if settled.is_some() && dead_letter_mailed {
            a.dead_lettered_then_settled += 1;
        }
        match shape_of(po_id, &q.envelope.body_sha256) {
            None => {
                a.unreadable += 1;
                a.problem(format!("PO {po_id}: a queued body the traffic never sent"));
            }
            Some((shape, refuses)) => {
                let fits = match (shape, refuses) {
                    _ if matches!(place, Place::Superseded | Place::ParkedMailed) || place.is_lost() => true,
                    (Shape::Clean, false) => matches!(place, Place::Upserted | Place::Duplicate),
                    (Shape::Clean, true) => place == Place::RejectedMailed,
                    (Shape::Mismatch, _) => place == Place::HeldMailed,
                    (Shape::MultiVendor, _) => place == Place::UnmappableMailed,
                    (Shape::Refused, _) => false,
                };
                if !fits {
                    a.unexpected_outcomes += 1;
                    a.problem(format!(
                        "PO {} version {version}: a {shape:?} body (AppZen refuses the PO: {refuses}) ended {place:?}",
                        q.envelope.po.po_number
                    ));
                }
            }
        }
    }

    // ---- rule 4: AppZen's requests, attributed, in order
    let number_to_id: HashMap<&str, u64> = e.traffic.pos.iter().map(|p| (p.po_number.as_str(), p.po_id)).collect();
    let mut requests_by_po: BTreeMap<u64, Vec<&RecordedRequest>> = BTreeMap::new();
    for request in e.appzen {
        a.appzen_requests += 1;
        if request.accepted() {
            a.appzen_accepted += 1;
        }
        let number =
            request.json().and_then(|j| j.get("purchase_order_number").and_then(|n| n.as_str()).map(str::to_owned));
        match number.as_deref().and_then(|n| number_to_id.get(n)) {
            Some(po_id) => requests_by_po.entry(*po_id).or_default().push(request),
            None => {
                a.unreadable += 1;
                a.problem(format!("AppZen request {} names no PO of the traffic", request.seq));
            }
        }
    }
    let mut lines_by_po: BTreeMap<u64, Vec<&RecordLine>> = BTreeMap::new();
    for line in e.records.iter().filter(|l| l.attempts > 0) {
        if let Some(po_id) = line.po_id {
            lines_by_po.entry(po_id).or_default().push(line);
        }
    }
    // po id -> send id of the last version AppZen accepted.
    let mut appzen_holds: BTreeMap<u64, String> = BTreeMap::new();
    let mut upserted_sends: HashSet<String> = HashSet::new();
    for po in &e.traffic.pos {
        let requests = requests_by_po.get(&po.po_id).cloned().unwrap_or_default();
        let lines = lines_by_po.get(&po.po_id).cloned().unwrap_or_default();
        let needed: usize = lines.iter().map(|l| l.attempts).sum();
        if needed != requests.len() {
            a.attribution_mismatches += 1;
            a.problem(format!(
                "PO {}: reconcile logged {needed} AppZen request(s), the sandbox received {}",
                po.po_number,
                requests.len()
            ));
            continue;
        }
        let mut next = 0;
        let mut highest: Option<(i64, String)> = None;
        for line in lines {
            let run = &requests[next..next + line.attempts];
            next += line.attempts;
            if let Some(id) = &line.correlation_id
                && run.last().map(|r| format!("sandbox-{}", r.seq)).as_deref() != Some(id.as_str())
            {
                a.attribution_mismatches += 1;
                a.problem(format!("PO {}: reconcile's {id} is not the last request of its run", po.po_number));
            }
            let (Some(version), Some(send_id)) = (line.version, line.send_id.clone()) else { continue };
            for request in run.iter().filter(|r| r.accepted()) {
                if let Some((previous, previous_send)) = &highest
                    && version < *previous
                {
                    a.order_violations += 1;
                    a.problem(format!(
                        "PO {}: AppZen accepted version {version} (send {send_id}, request {}) after version {previous} (send {previous_send})",
                        po.po_number, request.seq
                    ));
                }
                if highest.as_ref().is_none_or(|(v, _)| version >= *v) {
                    highest = Some((version, send_id.clone()));
                }
                appzen_holds.insert(po.po_id, send_id.clone());
                upserted_sends.insert(send_id.clone());
            }
        }
    }
    for q in &queued {
        if place_of.get(q.send_id.as_str()) == Some(&Place::Upserted) && !upserted_sends.contains(&q.send_id) {
            a.upserted_without_appzen += 1;
            a.problem(format!(
                "PO {}: send {} upserted, but AppZen accepted no request of it",
                q.envelope.po.po_number, q.send_id
            ));
        }
    }

    // ---- rule 5: AppZen's final state, and the ledger's word for it
    let queued_by_po = {
        let mut map: BTreeMap<u64, Vec<&Queued>> = BTreeMap::new();
        for q in &queued {
            map.entry(q.envelope.po.id).or_default().push(q);
        }
        map
    };
    for po in &e.traffic.pos {
        let candidates = queued_by_po.get(&po.po_id).cloned().unwrap_or_default();
        let expected = candidates
            .iter()
            .filter(|q| place_of.get(q.send_id.as_str()) != Some(&Place::ParkedMailed))
            .filter(|q| {
                !po.appzen_refuses
                    && shape_of(po.po_id, &q.envelope.body_sha256).is_some_and(|(s, _)| s == Shape::Clean)
            })
            .max_by_key(|q| q.envelope.version())
            .map(|q| (q.envelope.body_sha256.clone(), q.envelope.version()));
        let actual = appzen_holds.get(&po.po_id).and_then(|send| by_send.get(send.as_str())).map(|i| {
            let q = &queued[*i];
            (q.envelope.body_sha256.clone(), q.envelope.version())
        });
        if expected.as_ref().map(|x| &x.0) != actual.as_ref().map(|x| &x.0) {
            a.final_state_violations += 1;
            a.problem(format!(
                "PO {}: AppZen ends on {:?}, the last version it can take is {:?}",
                po.po_number,
                actual.as_ref().map(|x| x.1),
                expected.as_ref().map(|x| x.1)
            ));
        }
        let ledger_holds =
            e.ledger.get(&po.po_id).cloned().flatten().and_then(|entry| entry.holds).map(|h| h.body_sha256);
        if ledger_holds.as_deref() != actual.as_ref().map(|x| x.0.as_str()) {
            a.ledger_disagreements += 1;
            a.problem(format!(
                "PO {}: the ledger says AppZen holds {:?}, the sandbox says {:?}",
                po.po_number,
                ledger_holds.map(|s| s[..12].to_owned()),
                actual.map(|x| x.0[..12].to_owned())
            ));
        }
    }

    // ---- rule 6: no event mailed twice
    let mut withheld: HashMap<&str, usize> = HashMap::new();
    for email in e.forwarded_emails.iter().filter(|m| m.answer_withheld) {
        *withheld.entry(email.message_id.as_str()).or_insert(0) += 1;
    }
    let mut died: HashMap<&str, usize> = HashMap::new();
    for invocation in e.invocations.iter().filter(|i| i.error.as_deref().is_some_and(|x| x.starts_with(INJECTED_DEATH)))
    {
        if invocation.function_name != "notify" {
            continue;
        }
        for id in &invocation.message_ids {
            if let Some(mail) = mail_of_record.get(id.as_str()) {
                *died.entry(mail.as_str()).or_insert(0) += 1;
            }
        }
    }
    for (id, count) in &mail_count {
        let expected = if id.contains(".dead_lettered@") {
            parkings
                .iter()
                .find(|(body, _)| message_id_for(body, "dead_lettered", e.mail_domain) == *id)
                .map_or(1, |(_, ids)| ids.len().max(1))
        } else {
            1
        };
        let extra = count.saturating_sub(expected);
        let explained = withheld.get(id).copied().unwrap_or(0) + died.get(id).copied().unwrap_or(0);
        a.duplicate_emails_explained += extra.min(explained);
        if extra > explained {
            a.unexplained_duplicate_emails += extra - explained;
            a.problem(format!("e-mail {id} sent {count} times ({explained} explained by injected faults)"));
        }
    }
    for ((po_id, version, kind), ids) in &mailed_events {
        if ids.len() > 1 {
            a.unexplained_duplicate_emails += ids.len() - 1;
            a.problem(format!("PO {po_id} version {version}: {} different {kind} e-mails: {ids:?}", ids.len()));
        }
    }
    if let Some(poison) = a.emails_by_kind.get("poison_message").copied().filter(|n| *n > 0) {
        a.unexpected_outcomes += poison;
        a.problem(format!("{poison} poison_message e-mail(s): po-sync could not read one of its own messages"));
    }

    // ---- rule 7: every queue but the parked one is empty
    for (queue, depth) in e.depths {
        if *depth > 0 {
            a.queues_not_empty += 1;
            a.problem(format!("{queue} still holds {depth} message(s)"));
        }
    }

    hand_backs(e, &mut a);
    dead_letters(e, &mut a);
    outages(e, &mut a);
    a
}

/// Rule 8: a PO is handed back only for itself (see the module's docs).
fn hand_backs(e: &Evidence<'_>, a: &mut Accounting) {
    /// One reconcile invocation as its log lines show it.
    #[derive(Default)]
    struct Batch<'a> {
        lines: Vec<&'a RecordLine>,
        skips: Vec<&'a SkipLine>,
    }
    impl Batch<'_> {
        fn key(&self) -> Vec<&str> {
            let mut ids: Vec<&str> = self.lines.iter().map(|l| l.message_id.as_str()).collect();
            ids.extend(self.skips.iter().map(|s| s.message_id.as_str()));
            ids.sort_unstable();
            ids
        }
    }
    /// The invocation `id`'s batch, noted in `order` when first seen.
    fn batch<'m, 'a>(
        batches: &'m mut HashMap<&'a str, Batch<'a>>,
        order: &mut Vec<&'a str>,
        id: &'a str,
    ) -> &'m mut Batch<'a> {
        batches.entry(id).or_insert_with(|| {
            order.push(id);
            Batch::default()
        })
    }
    let mut order: Vec<&str> = Vec::new();
    let mut batches: HashMap<&str, Batch<'_>> = HashMap::new();
    for line in e.records {
        let Some(id) = line.request_id.as_deref() else { continue };
        batch(&mut batches, &mut order, id).lines.push(line);
    }
    for skip in e.skips {
        let Some(id) = skip.request_id.as_deref() else { continue };
        batch(&mut batches, &mut order, id).skips.push(skip);
    }
    let failing = e.failing_po.map(|id| id.to_string());
    let handed_back = |line: &RecordLine| HANDED_BACK.contains(&line.outcome.as_str());
    let mut by_key: HashMap<Vec<&str>, VecDeque<&str>> = HashMap::new();
    for id in &order {
        let batch = &batches[id];
        by_key.entry(batch.key()).or_default().push_back(id);
        // The POs the invocation handed back a record of, for a reason of that record's own.
        let pos_handed_back: HashSet<String> =
            batch.lines.iter().filter(|l| handed_back(l)).filter_map(|l| l.po_id.map(|p| p.to_string())).collect();
        for skip in &batch.skips {
            if !pos_handed_back.contains(&skip.group) {
                a.held_back_by_other_pos += 1;
                a.problem(format!(
                    "reconcile invocation {id}: record {} of PO {} handed back unstarted, but no record of its PO was handed back",
                    skip.message_id, skip.group
                ));
            }
        }
        if let Some(failing) = &failing
            && pos_handed_back.contains(failing)
        {
            a.failing_po_batches += 1;
            let other_lines: Vec<&&RecordLine> =
                batch.lines.iter().filter(|l| l.po_id.map(|p| p.to_string()).as_ref() != Some(failing)).collect();
            let other_skips = batch.skips.iter().filter(|s| &s.group != failing).count();
            a.failing_po_batch_others += other_lines.len() + other_skips;
            a.failing_po_batch_others_handed_back +=
                other_lines.iter().filter(|l| handed_back(l)).count() + other_skips;
        }
    }
    // What each invocation told SQS, as the poller recorded it, against its log lines.
    for invocation in e.invocations.iter().filter(|i| i.function_name == "reconcile") {
        if let Some(error) = &invocation.error {
            // An injected death: the function was given the first `handled` records, and all came back.
            if let Some(handled) = error
                .strip_prefix(INJECTED_DEATH)
                .and_then(|rest| rest.trim().strip_prefix("after "))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
            {
                let mut key: Vec<&str> = invocation.message_ids.iter().take(handled).map(String::as_str).collect();
                key.sort_unstable();
                by_key.get_mut(&key).and_then(VecDeque::pop_front);
            }
            a.batches_died += 1;
            continue;
        }
        let mut key: Vec<&str> = invocation.message_ids.iter().map(String::as_str).collect();
        key.sort_unstable();
        let Some(id) = by_key.get_mut(&key).and_then(VecDeque::pop_front) else {
            a.unreadable += 1;
            a.problem(format!("a reconcile invocation of {} record(s) has no log lines", key.len()));
            continue;
        };
        a.batches_checked += 1;
        let batch = &batches[id];
        let expected: BTreeSet<&str> = batch
            .lines
            .iter()
            .filter(|l| handed_back(l))
            .map(|l| l.message_id.as_str())
            .chain(batch.skips.iter().map(|s| s.message_id.as_str()))
            .collect();
        let told: BTreeSet<&str> = invocation.failed_ids.iter().map(String::as_str).collect();
        for message_id in told.difference(&expected) {
            a.held_back_by_other_pos += 1;
            a.problem(format!("reconcile invocation {id} handed back {message_id} without a reason of its own"));
        }
        for message_id in expected.difference(&told) {
            a.unexpected_outcomes += 1;
            a.problem(format!("reconcile invocation {id} logged {message_id} as handed back, but let SQS delete it"));
        }
    }
}

/// Rule 8, dead letters: each attributed by the reasons of its own deliveries.
fn dead_letters(e: &Evidence<'_>, a: &mut Accounting) {
    let mut reasons: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in e.records.iter().filter(|l| HANDED_BACK.contains(&l.outcome.as_str())) {
        reasons.entry(line.message_id.as_str()).or_default().push(line.outcome.as_str());
    }
    let mut seen = HashSet::new();
    for parking in e.sent.iter().filter(|s| s.queue_name() == e.parked_queue) {
        // One parking per dead letter: notify deduplicates them by the dead letter's SQS message id.
        if !seen.insert(parking.deduplication_id.as_str()) {
            continue;
        }
        let Ok(envelope) = WebhookEnvelope::from_json(&parking.body) else { continue };
        if Some(envelope.po.id) == e.failing_po {
            a.dead_lettered_failing_po += 1;
            continue;
        }
        let its = reasons.get(parking.deduplication_id.as_str()).cloned().unwrap_or_default();
        if its.contains(&"appzen_unavailable") {
            a.parked_by_appzen += 1;
            a.problem(format!(
                "PO {} version {} parked with AppZen failures among its deliveries: {its:?}",
                envelope.po.po_number,
                envelope.version()
            ));
        }
        let reason = its.last().copied().unwrap_or("behind an earlier record of its PO");
        *a.dead_lettered_other.entry(reason.to_owned()).or_insert(0) += 1;
    }
}

/// Rule 9: one e-mail per AppZen outage, and none for a verdict.
fn outages(e: &Evidence<'_>, a: &mut Accounting) {
    let mailed: HashSet<&str> = e.mailed.iter().map(String::as_str).collect();
    // Verdict times, in order.
    let mut verdicts: Vec<DateTime<Utc>> = e.decisions.iter().filter(|d| d.is_verdict()).map(|d| d.at).collect();
    verdicts.sort_unstable();
    let verdict_between = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let first = verdicts.partition_point(|at| *at <= from);
        verdicts.get(first).is_some_and(|at| *at < to)
    };
    let mut sent_by_cause: BTreeMap<OutageCause, Vec<DateTime<Utc>>> = BTreeMap::new();
    for sent in e.sent.iter().filter(|s| s.queue_name() == e.notification_queue) {
        let Ok(event) = NotificationEvent::from_json(&sent.body) else { continue };
        match &event.detail {
            NotificationDetail::AppzenOutage { cause, since, .. } => {
                let id = message_id_for(&sent.body, event.kind().as_str(), e.mail_domain);
                if !mailed.contains(id.as_str()) {
                    a.outage_email_violations += 1;
                    a.problem(format!("the {} outage since {since} was queued but never mailed", cause.as_str()));
                    continue;
                }
                *a.outage_emails.entry(cause.as_str().to_owned()).or_insert(0) += 1;
                sent_by_cause.entry(*cause).or_default().push(*since);
            }
            NotificationDetail::AppzenRejected { appzen } if appzen.http_status != 400 => {
                a.rejections_without_a_verdict += 1;
                a.problem(format!(
                    "PO {:?}: an appzen_rejected e-mail about HTTP {}, not AppZen's verdict",
                    event.po().map(|p| p.po_number.to_string()),
                    appzen.http_status
                ));
            }
            _ => {}
        }
    }
    for (cause, since) in &mut sent_by_cause {
        since.sort_unstable();
        for pair in since.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if first == second || !verdict_between(first, second) {
                a.outage_email_violations += 1;
                a.problem(format!(
                    "a {} outage mailed again (since {second}) with no verdict from AppZen since the one mailed (since {first})",
                    cause.as_str()
                ));
            }
        }
    }
    if let Some(endpoint) = sent_by_cause.get(&OutageCause::Endpoint) {
        a.outage_email_violations += endpoint.len();
        a.problem(format!("{} endpoint outage e-mail(s), though no request was misdirected", endpoint.len()));
    }
    // The stretches: the credentials one mailed exactly once, the 503 one covered by exactly one e-mail.
    let slack = chrono::Duration::seconds(2);
    let credentials = sent_by_cause.get(&OutageCause::Credentials).cloned().unwrap_or_default();
    let unavailable = sent_by_cause.get(&OutageCause::Unavailable).cloned().unwrap_or_default();
    let mut credentials_in_stretches = 0;
    for stretch in e.stretches {
        let off = stretch.off.unwrap_or_else(Utc::now);
        let covering = match stretch.fault {
            AppZenFault::Credentials => {
                let n = credentials.iter().filter(|since| **since >= stretch.on && **since <= off + slack).count();
                credentials_in_stretches += n;
                n
            }
            // The outage open when it began (no verdict since), or one that began in it.
            AppZenFault::Outage => unavailable
                .iter()
                .filter(|since| **since <= off && (**since >= stretch.on || !verdict_between(**since, stretch.on)))
                .count(),
            _ => continue,
        };
        if covering != 1 {
            a.outage_email_violations += 1;
            a.problem(format!(
                "{} from {} to {off}: {covering} outage e-mail(s) for it, not one",
                stretch.fault.name(),
                stretch.on
            ));
        }
    }
    if credentials.len() > credentials_in_stretches {
        a.outage_email_violations += credentials.len() - credentials_in_stretches;
        a.problem(format!(
            "{} credentials outage e-mail(s) outside the credentials stretch",
            credentials.len() - credentials_in_stretches
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use po_sync_local::poller::Invocation;
    use std::time::Duration;

    const NOTIFICATIONS: &str = "https://sqs.us-east-1.amazonaws.com/1/po-sync-notifications.fifo";
    const PARKED: &str = "https://sqs.us-east-1.amazonaws.com/1/po-sync-webhooks-parked.fifo";

    fn traffic() -> Traffic {
        super::super::traffic::generate(&super::super::traffic::TrafficOptions {
            seed: 3,
            webhooks: 20,
            appzen_refuses: 0.0,
            first_po_id: 1,
        })
    }

    /// The evidence of a run in which nothing happened but what each test adds.
    struct Run {
        traffic: Traffic,
        sent: Vec<SentMessage>,
        mailed: Vec<String>,
        records: Vec<RecordLine>,
        skips: Vec<SkipLine>,
        decisions: Vec<Decision>,
        stretches: Vec<Stretch>,
        invocations: Vec<Invocation>,
        failing_po: Option<u64>,
    }

    impl Run {
        fn new() -> Self {
            Run {
                traffic: traffic(),
                sent: Vec::new(),
                mailed: Vec::new(),
                records: Vec::new(),
                skips: Vec::new(),
                decisions: Vec::new(),
                stretches: Vec::new(),
                invocations: Vec::new(),
                failing_po: None,
            }
        }

        fn accounting(&self, rule: fn(&Evidence<'_>, &mut Accounting)) -> Accounting {
            let ledger = BTreeMap::new();
            let evidence = Evidence {
                traffic: &self.traffic,
                webhooks: &[],
                sent: &self.sent,
                webhook_queue: "po-sync-webhooks.fifo",
                notification_queue: "po-sync-notifications.fifo",
                parked_queue: "po-sync-webhooks-parked.fifo",
                forwarded_emails: &[],
                mailed: &self.mailed,
                appzen: &[],
                records: &self.records,
                skips: &self.skips,
                decisions: &self.decisions,
                stretches: &self.stretches,
                failing_po: self.failing_po,
                parked: &[],
                depths: &[],
                ledger: &ledger,
                invocations: &self.invocations,
                mail_domain: "example.com",
            };
            let mut a = Accounting::default();
            rule(&evidence, &mut a);
            a
        }

        /// reconcile queued the outage e-mail of `cause` since `since`, and notify mailed it.
        fn outage_mailed(&mut self, cause: OutageCause, since: DateTime<Utc>) {
            let event = NotificationEvent::outage(cause, since, "HTTP 503", None);
            let body = event.to_json();
            self.mailed.push(message_id_for(&body, "appzen_outage", "example.com"));
            self.sent.push(SentMessage {
                queue_url: NOTIFICATIONS.to_owned(),
                body,
                group_id: "appzen-outage".to_owned(),
                deduplication_id: format!("d{}", self.sent.len()),
                message_id: format!("m{}", self.sent.len()),
            });
        }

        fn decided(&mut self, at: DateTime<Utc>, fault: Option<AppZenFault>) {
            self.decisions.push(Decision { at, po_number: None, fault });
        }

        fn line(&mut self, request: &str, message_id: &str, po_id: u64, outcome: &str) {
            self.records.push(RecordLine {
                request_id: Some(request.to_owned()),
                message_id: message_id.to_owned(),
                po_id: Some(po_id),
                outcome: outcome.to_owned(),
                ..RecordLine::default()
            });
        }

        fn skipped(&mut self, request: &str, message_id: &str, po_id: u64) {
            self.skips.push(SkipLine {
                request_id: Some(request.to_owned()),
                message_id: message_id.to_owned(),
                group: po_id.to_string(),
            });
        }

        fn invoked(&mut self, message_ids: &[&str], failed_ids: &[&str]) {
            self.invocations.push(Invocation {
                queue_url: "po-sync-webhooks.fifo".to_owned(),
                function_name: "reconcile".to_owned(),
                message_ids: message_ids.iter().map(|s| (*s).to_owned()).collect(),
                failed_ids: failed_ids.iter().map(|s| (*s).to_owned()).collect(),
                error: None,
                duration: Duration::ZERO,
            });
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn an_outage_is_mailed_once_and_again_only_after_a_verdict() {
        let mut run = Run::new();
        run.stretches.push(Stretch { fault: AppZenFault::Credentials, on: at(0), off: Some(at(5)) });
        run.decided(at(1), Some(AppZenFault::Credentials));
        run.outage_mailed(OutageCause::Credentials, at(1));
        run.decided(at(3), Some(AppZenFault::Credentials));
        run.decided(at(6), None);
        run.stretches.push(Stretch { fault: AppZenFault::Outage, on: at(10), off: Some(at(20)) });
        run.decided(at(11), Some(AppZenFault::Outage));
        run.outage_mailed(OutageCause::Unavailable, at(11));
        run.decided(at(21), None);
        // A failing PO alone, after a verdict: a new outage, mailed once.
        run.decided(at(30), Some(AppZenFault::FailingPo));
        run.outage_mailed(OutageCause::Unavailable, at(30));
        let a = run.accounting(outages);
        assert_eq!(a.outage_email_violations, 0, "{:#?}", a.problems);
        assert_eq!(a.outage_emails, BTreeMap::from([("credentials".into(), 1), ("unavailable".into(), 2)]));

        // Mailed again with no verdict since: one outage, two e-mails.
        run.outage_mailed(OutageCause::Unavailable, at(45));
        // A second e-mail in the credentials stretch, after a verdict decided before the stretch.
        run.decided(at(-1), None);
        run.outage_mailed(OutageCause::Credentials, at(4));
        let a = run.accounting(outages);
        assert_eq!(a.outage_email_violations, 3, "{:#?}", a.problems);
    }

    #[test]
    fn an_outage_stretch_must_be_mailed_and_an_endpoint_outage_never() {
        let mut run = Run::new();
        run.stretches.push(Stretch { fault: AppZenFault::Outage, on: at(10), off: Some(at(20)) });
        run.decided(at(11), Some(AppZenFault::Outage));
        let a = run.accounting(outages);
        assert_eq!(a.outage_email_violations, 1, "not mailed: {:#?}", a.problems);
        // An outage open before the stretch (no verdict since) covers it.
        run.outage_mailed(OutageCause::Unavailable, at(8));
        assert_eq!(run.accounting(outages).outage_email_violations, 0);
        run.outage_mailed(OutageCause::Endpoint, at(12));
        assert_eq!(run.accounting(outages).outage_email_violations, 1);
    }

    #[test]
    fn a_record_is_handed_back_only_for_itself_or_an_earlier_record_of_its_po() {
        let (failing, other) = (1, 2);
        let mut run = Run::new();
        run.failing_po = Some(failing);
        // [F1, O1, F2]: F1 fails, F2 waits behind it, O1 goes through.
        run.line("r1", "f1", failing, "appzen_unavailable");
        run.line("r1", "o1", other, "upserted");
        run.skipped("r1", "f2", failing);
        run.invoked(&["f1", "o1", "f2"], &["f1", "f2"]);
        // [F1, O2, O3]: O2 fails for itself, O3 waits behind it.
        run.line("r2", "f1", failing, "appzen_unavailable");
        run.line("r2", "o2", other, "ledger_busy");
        run.skipped("r2", "o3", other);
        run.invoked(&["f1", "o2", "o3"], &["f1", "o2", "o3"]);
        let a = run.accounting(hand_backs);
        assert_eq!(a.held_back_by_other_pos, 0, "{:#?}", a.problems);
        assert_eq!((a.batches_checked, a.failing_po_batches), (2, 2));
        assert_eq!((a.failing_po_batch_others, a.failing_po_batch_others_handed_back), (3, 2));

        // O4 skipped although nothing of its PO failed, and O5 handed back with no reason of its own.
        run.line("r3", "f1", failing, "appzen_unavailable");
        run.skipped("r3", "o4", other);
        run.line("r3", "o5", 3, "upserted");
        run.invoked(&["f1", "o4", "o5"], &["f1", "o4", "o5"]);
        let a = run.accounting(hand_backs);
        assert_eq!(a.held_back_by_other_pos, 2, "{:#?}", a.problems);
    }

    #[test]
    fn a_dead_letter_is_attributed_by_its_own_deliveries() {
        let mut run = Run::new();
        let envelope = |i: usize| po_sync_test_support::envelope(&run.traffic.pos[i].steps[0].body);
        let (failing, other, third) = (envelope(0), envelope(1), envelope(2));
        run.failing_po = Some(failing.po.id);
        for (message_id, envelope) in [("f1", &failing), ("o1", &other), ("t1", &third)] {
            run.sent.push(SentMessage {
                queue_url: PARKED.to_owned(),
                body: envelope.to_json(),
                group_id: envelope.po.id.to_string(),
                deduplication_id: message_id.to_owned(),
                message_id: format!("parked-{message_id}"),
            });
        }
        run.line("r1", "f1", failing.po.id, "appzen_unavailable");
        run.line("r1", "o1", other.po.id, "ledger_busy");
        run.line("r2", "t1", third.po.id, "appzen_unavailable");
        run.line("r3", "t1", third.po.id, "ledger_busy");
        // After a redrive, under another message id: not a reason of the dead letter.
        run.line("r4", "o1-redriven", other.po.id, "appzen_unavailable");
        let a = run.accounting(dead_letters);
        assert_eq!(a.dead_lettered_failing_po, 1);
        assert_eq!(a.parked_by_appzen, 1, "{:#?}", a.problems);
        assert_eq!(a.dead_lettered_other, BTreeMap::from([("ledger_busy".into(), 2)]));
    }
}
