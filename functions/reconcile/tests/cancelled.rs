//! A PO an operator cancelled for this function's destination (`po-sync-admin cancel`, a `cancelled` ledger
//! entry): a newer version is held without asking the destination, mailed once as `cancelled_at_destination`,
//! recorded as held, and sent by a replay once the PO is reactivated. For AppZen and for Exsited (both wiremock),
//! with in-memory queue and ledger.

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Duration, TimeZone, Utc};
use po_sync::destination::Destination;
use po_sync::history::AttemptOutcome;
use po_sync::komet::parse_webhook;
use po_sync::ledger::{self, Arrival, Cancellation, LedgerOutcome, Verdict};
use po_sync::message::{NotificationDetail, OperatorCancellation, WebhookEnvelope};
use po_sync_aws::ledger::{Ledger, MemoryLedger, Written};
use po_sync_aws::queue::MemoryFifoQueue;
use po_sync_test_support::{appzen_client, fixture, reconcile_config, sqs_record};
use reconcile::{Outcome, Reconciler};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::accept_everything;
use common::{exsited_accepts, exsited_config, exsited_po_1, notifications};

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger>;

const PO_ID: u64 = 48213;

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap() + Duration::minutes(minute)
}

/// The clean PO received at `minute`, with another arrival day for each version.
fn send(minute: i64, arrival_day: u32) -> WebhookEnvelope {
    let text = String::from_utf8(fixture("komet-clean-po.json")).unwrap();
    let body =
        text.replace("\"arrivalDate\": \"2026-02-11\"", &format!("\"arrivalDate\": \"2026-02-{arrival_day:02}\""));
    WebhookEnvelope::new(parse_webhook(body.as_bytes()).unwrap(), body.as_bytes(), at(minute))
        .with_send_id(format!("req-{minute}"))
}

fn replay_of(envelope: &WebhookEnvelope) -> WebhookEnvelope {
    let mut replay = envelope.clone();
    replay.replay = true;
    replay.send_id = Some("replay-1".into());
    replay
}

fn record(message_id: &str, envelope: &WebhookEnvelope) -> SqsMessage {
    let mut record = sqs_record(message_id, envelope.to_json());
    record.attributes.insert("MessageGroupId".to_owned(), envelope.po.id.to_string());
    record
}

fn operator_cancellation(destination_id: Option<&str>) -> Cancellation {
    Cancellation {
        at: at(30),
        reason: Some("ordered twice".to_owned()),
        destination_id: destination_id.map(Into::into),
    }
}

/// Writes what `po-sync-admin cancel` writes.
async fn cancel(reconciler: &MemoryReconciler, destination_id: Option<&str>) {
    let current = reconciler.ledger().entry(PO_ID);
    let entry = ledger::cancelled(current.as_ref(), PO_ID, operator_cancellation(destination_id), at(30));
    assert_eq!(reconciler.ledger().write(&entry).await.unwrap(), Written::Stored);
}

/// Writes what `po-sync-admin reactivate` writes.
async fn reactivate(reconciler: &MemoryReconciler) {
    let current = reconciler.ledger().entry(PO_ID).unwrap();
    let entry = ledger::reactivated(&current, at(40)).expect("the PO was cancelled");
    assert_eq!(reconciler.ledger().write(&entry).await.unwrap(), Written::Stored);
}

#[tokio::test]
async fn appzen_a_cancelled_po_holds_newer_versions_until_it_is_reactivated_and_replayed() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let config = reconcile_config(&appzen.uri(), &[("APPZEN_MAX_ATTEMPTS", "1")]);
    let reconciler =
        Reconciler::new(config.clone(), appzen_client(&config), MemoryFifoQueue::default(), MemoryLedger::default());
    let (a, b) = (send(0, 24), send(10, 25));
    let first = reconciler.process(&record("m-1", &a), None).await;
    assert!(matches!(first.outcome, Outcome::Upserted(_)), "{first:?}");
    cancel(&reconciler, None).await;

    let held = reconciler.process(&record("m-2", &b), None).await;
    assert!(
        matches!(&held.outcome, Outcome::CancelledByOperator { destination_id: None, at: when } if *when == at(30)),
        "{held:?}"
    );
    assert_eq!((held.attempts, appzen.received_requests().await.unwrap().len()), (0, 1), "AppZen is not asked");
    let mailed = notifications(&reconciler);
    assert_eq!(mailed.len(), 1, "{mailed:?}");
    assert_eq!(mailed[0].destination, Destination::Appzen);
    assert_eq!(
        mailed[0].detail,
        NotificationDetail::CancelledAtDestination {
            id: None,
            operator: Some(OperatorCancellation { at: at(30), reason: Some("ordered twice".to_owned()) }),
        }
    );
    let entry = reconciler.ledger().entry(PO_ID).unwrap();
    let latest = entry.latest.as_ref().unwrap();
    assert_eq!((latest.version, latest.outcome), (b.version(), LedgerOutcome::Held));
    assert_eq!(entry.holds.as_ref().unwrap().version, a.version(), "AppZen keeps what it has");
    assert!(entry.cancelled.is_some(), "settling keeps the cancellation");
    assert_eq!(ledger::held_version(&entry), Some(b.version()));
    let history: Vec<AttemptOutcome> = reconciler.ledger().attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(history, [AttemptOutcome::Upserted, AttemptOutcome::Held]);

    // SQS delivers it again: done with, not mailed again. A replay while still cancelled is held again, unmailed.
    let again = reconciler.process(&record("m-2-again", &b), None).await;
    assert!(matches!(again.outcome, Outcome::Duplicate), "{again:?}");
    let replayed = reconciler.process(&record("m-2-replay", &replay_of(&b)), None).await;
    assert!(matches!(replayed.outcome, Outcome::CancelledByOperator { .. }), "{replayed:?}");
    assert_eq!(notifications(&reconciler).len(), 1, "one e-mail per version");
    assert_eq!(appzen.received_requests().await.unwrap().len(), 1);

    // Reactivated: a replay of the held version goes to AppZen, and the next version from Komet too.
    reactivate(&reconciler).await;
    let sent = reconciler.process(&record("m-2-replay-2", &replay_of(&b)), None).await;
    assert!(matches!(sent.outcome, Outcome::Upserted(_)), "{sent:?}");
    let entry = reconciler.ledger().entry(PO_ID).unwrap();
    assert_eq!(entry.holds.as_ref().unwrap().version, b.version());
    assert_eq!(entry.cancelled, None);
    let c = send(50, 26);
    assert!(matches!(reconciler.process(&record("m-3", &c), None).await.outcome, Outcome::Upserted(_)));
    assert_eq!(appzen.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_po_cancelled_before_its_first_version_holds_that_version() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let config = reconcile_config(&appzen.uri(), &[]);
    let reconciler =
        Reconciler::new(config.clone(), appzen_client(&config), MemoryFifoQueue::default(), MemoryLedger::default());
    cancel(&reconciler, None).await;
    let first = send(0, 24);
    let report = reconciler.process(&record("m-1", &first), None).await;
    assert!(matches!(report.outcome, Outcome::CancelledByOperator { .. }), "{report:?}");
    assert!(appzen.received_requests().await.unwrap().is_empty());
    let entry = reconciler.ledger().entry(PO_ID).unwrap();
    assert_eq!(entry.po_number, first.po.po_number.as_str(), "the entry learns the PO number");
}

#[tokio::test]
async fn a_redelivery_after_the_ledger_was_not_settled_does_not_mail_again() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let config = reconcile_config(&appzen.uri(), &[]);
    let reconciler =
        Reconciler::new(config.clone(), appzen_client(&config), MemoryFifoQueue::default(), MemoryLedger::default());
    cancel(&reconciler, None).await;
    // What an earlier delivery of this message left: its claim, the e-mail queued and noted, the settle lost.
    let b = send(10, 25);
    let arrival = Arrival {
        po_id: PO_ID,
        po_number: &b.po.po_number,
        received_at: b.received_at,
        body_sha256: &b.body_sha256,
        sqs_message_id: "m-2",
        sequence: None,
        replay: false,
        resend: false,
    };
    let current = reconciler.ledger().entry(PO_ID).unwrap();
    let Verdict::Proceed { claim } = ledger::judge(Some(&current), &arrival, Utc::now(), Duration::minutes(1)) else {
        panic!("the first delivery claims the PO")
    };
    let noted = ledger::note_notified(&claim, &arrival, "cancelled_at_destination", Utc::now()).unwrap();
    for entry in [&claim, &noted] {
        assert_eq!(reconciler.ledger().write(entry).await.unwrap(), Written::Stored);
    }

    let report = reconciler.process(&record("m-2", &b), None).await;
    assert!(matches!(report.outcome, Outcome::CancelledByOperator { .. }), "{report:?}");
    assert!(report.notified.is_empty() && notifications(&reconciler).is_empty(), "{report:?}");
    assert_eq!(reconciler.ledger().entry(PO_ID).unwrap().latest.unwrap().outcome, LedgerOutcome::Held);
}

/// Exsited holding the PO once created (`PO-1`): found, and its header and lines changed.
async fn exsited_with_po(exsited: &MockServer) {
    exsited_accepts(exsited).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(exsited_po_1()))
        .mount(exsited)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/v3/purchase-orders/PO-1/information"))
        .respond_with(ResponseTemplate::new(200).set_body_json(exsited_po_1()))
        .mount(exsited)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-1/change"))
        .respond_with(ResponseTemplate::new(200).set_body_json(exsited_po_1()))
        .mount(exsited)
        .await;
}

async fn exsited_reconciler(exsited: &MockServer) -> MemoryReconciler {
    common::exsited_reconciler(exsited_config(exsited, &[])).await
}

#[tokio::test]
async fn exsited_a_cancelled_po_is_held_without_a_request_and_changed_again_once_reactivated() {
    let exsited = MockServer::start().await;
    exsited_with_po(&exsited).await;
    let reconciler = exsited_reconciler(&exsited).await;
    let a = send(0, 24);
    assert!(matches!(reconciler.process(&record("m-1", &a), None).await.outcome, Outcome::Upserted(_)));
    assert_eq!(reconciler.ledger().entry(PO_ID).unwrap().holds.unwrap().uuid.as_deref(), Some("PO-1"));
    let before = exsited.received_requests().await.unwrap().len();
    cancel(&reconciler, Some("PO-1")).await;

    let b = send(10, 25);
    let held = reconciler.process(&record("m-2", &b), None).await;
    assert!(
        matches!(&held.outcome, Outcome::CancelledByOperator { destination_id: Some(id), .. } if id == "PO-1"),
        "{held:?}"
    );
    assert_eq!(exsited.received_requests().await.unwrap().len(), before, "Exsited is not asked");
    let mailed = notifications(&reconciler);
    assert_eq!(mailed.len(), 1, "{mailed:?}");
    assert_eq!(mailed[0].destination, Destination::Exsited);
    assert!(
        matches!(&mailed[0].detail, NotificationDetail::CancelledAtDestination { id: Some(id), operator: Some(_) } if id == "PO-1"),
        "{mailed:?}"
    );
    let entry = reconciler.ledger().entry(PO_ID).unwrap();
    assert_eq!(entry.latest.as_ref().map(|l| l.outcome), Some(LedgerOutcome::Held));
    assert_eq!(reconciler.ledger().attempts().last().map(|a| a.outcome), Some(AttemptOutcome::Held));

    reactivate(&reconciler).await;
    let sent = reconciler.process(&record("m-2-replay", &replay_of(&b)), None).await;
    let Outcome::Upserted(accepted) = &sent.outcome else { panic!("{sent:?}") };
    assert_eq!((accepted.uuid.as_deref(), accepted.status.as_deref()), (Some("PO-1"), Some("UPDATED")));
    assert_eq!(reconciler.ledger().entry(PO_ID).unwrap().holds.unwrap().version, b.version());
}
