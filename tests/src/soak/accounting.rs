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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use po_sync::ledger::LedgerEntry;
use po_sync::message::{NotificationEvent, WebhookEnvelope, sha256_hex};
use serde::Serialize;

use super::sender::{Ending, WebhookLog};
use super::traffic::{Shape, Traffic};
use crate::appzen_sandbox::RecordedRequest;
use crate::fault_proxy::{ForwardedEmail, SentMessage};
use crate::poller::{INJECTED_DEATH, Invocation};

/// reconcile's `record processed` line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordLine {
    pub message_id: String,
    pub po_id: Option<u64>,
    pub version: Option<i64>,
    pub send_id: Option<String>,
    pub outcome: String,
    pub attempts: usize,
    pub correlation_id: Option<String>,
    pub notified: Vec<String>,
}

/// The lines of `functions.log` the accounting reads (JSON lines; anything else is skipped).
pub fn record_lines(log: &str) -> Vec<RecordLine> {
    let mut lines = Vec::new();
    for line in log.lines() {
        let Some(start) = line.find("{\"") else { continue };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line[start..]) else { continue };
        let Some(fields) = json.get("fields") else { continue };
        if fields.get("message").and_then(|m| m.as_str()) != Some("record processed") {
            continue;
        }
        let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let notified = text("notified").unwrap_or_default();
        lines.push(RecordLine {
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
            e.ledger.get(&po.po_id).cloned().flatten().and_then(|entry| entry.appzen).map(|h| h.body_sha256);
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
    a
}
