//! Claim checks: a PO too large for one SQS message reaches reconcile as a pointer to its envelope in the bucket.
//! reconcile resolves it and then treats it exactly as an inline envelope; a body it cannot read now comes back
//! later, and one that is gone or is not the envelope named is poison. In-memory queue, ledger and bucket; AppZen
//! on wiremock. (The S3 adapter and a 3 MB PO end to end: `functions/ingest/tests/moto_claim_check.rs`.)

use aws_lambda_events::event::sqs::SqsEvent;
use po_sync::ledger::LedgerOutcome;
use po_sync::message::{BodyRef, NotificationDetail, NotificationKind, WebhookEnvelope, body_key};
use po_sync_aws::ledger::{Ledger, MemoryLedger};
use po_sync_aws::objects::{MemoryObjectStore, NewObject, ObjectStore};
use po_sync_aws::port::Failure;
use po_sync_aws::queue::MemoryFifoQueue;
use po_sync_test_support::{self as support, CLEAN_PO, appzen_client, reconcile_config, sqs_record as record};
use reconcile::{Fate, Outcome, Reconciler};
use serde_json::json;
use wiremock::MockServer;

mod common;
use common::{accept_everything, notifications};

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger, MemoryObjectStore>;

fn reconciler_for(appzen: &MockServer) -> MemoryReconciler {
    let config = reconcile_config(&appzen.uri(), &[("APPZEN_MAX_ATTEMPTS", "2"), ("APPZEN_TIMEOUT_MS", "2000")]);
    let client = appzen_client(&config);
    Reconciler::new(config, client, MemoryFifoQueue::default(), MemoryLedger::default())
}

fn with_bucket(reconciler: MemoryReconciler) -> MemoryReconciler {
    reconciler.with_bodies(MemoryObjectStore::default())
}

fn envelope() -> WebhookEnvelope {
    let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 22, 9, 0, 0).unwrap();
    support::envelope_at(CLEAN_PO, at).with_send_id("req-big")
}

/// Stores `envelope` as ingest would and returns its claim check.
async fn store(reconciler: &MemoryReconciler, envelope: &WebhookEnvelope) -> BodyRef {
    let bodies = reconciler.bodies().unwrap();
    let key = body_key(envelope.po.id, envelope.deduplication_id());
    let json = envelope.to_json();
    let object = NewObject { key: &key, bytes: json.into(), content_type: "application/json", metadata: &[] };
    bodies.put(&object).await.unwrap();
    BodyRef::of(envelope, bodies.bucket(), key)
}

#[tokio::test]
async fn a_claim_check_is_upserted_like_its_envelope_and_the_ledger_holds_its_version() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let reconciler = with_bucket(reconciler_for(&appzen));
    let envelope = envelope();
    let pointer = store(&reconciler, &envelope).await;

    let report = reconciler.process(&record("m-ref", pointer.to_json()), None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{:?}", report.outcome);
    let inline = reconciler_for(&appzen);
    inline.process(&record("m-inline", envelope.to_json()), None).await;
    let bodies: Vec<Vec<u8>> = appzen.received_requests().await.unwrap().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1], "AppZen gets what the inline envelope would have given it");

    let entry = reconciler.ledger().read(envelope.po.id).await.unwrap().unwrap();
    let latest = entry.latest.unwrap();
    assert_eq!((latest.version, latest.outcome), (pointer.version(), LedgerOutcome::Upserted));
    assert_eq!((latest.sqs_message_id.as_str(), latest.body_sha256.as_str()), ("m-ref", pointer.body_sha256.as_str()));
    // The same claim check again: a duplicate of what AppZen holds, by the ledger.
    let again = reconciler.process(&record("m-ref-2", pointer.to_json()), None).await;
    assert!(matches!(again.outcome, Outcome::Duplicate), "{:?}", again.outcome);
}

#[tokio::test]
async fn the_claim_checks_arrival_time_is_the_version_even_if_a_retry_stored_the_body_again() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let reconciler = with_bucket(reconciler_for(&appzen));
    let first = envelope();
    let pointer = store(&reconciler, &first).await;
    // A retry of the same request inside AWS: the same body and key, a later arrival; SQS kept the first message.
    let mut retried = first.clone();
    retried.received_at += chrono::Duration::seconds(3);
    store(&reconciler, &retried).await;

    let report = reconciler.process(&record("m-1", pointer.to_json()), None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{:?}", report.outcome);
    let latest = reconciler.ledger().read(first.po.id).await.unwrap().unwrap().latest.unwrap();
    assert_eq!(latest.version, pointer.version());
}

#[tokio::test]
async fn a_body_the_bucket_cannot_give_now_is_retried_and_nothing_is_sent() {
    let appzen = MockServer::start().await;
    accept_everything(&appzen).await;
    let reconciler = with_bucket(reconciler_for(&appzen));
    let pointer = store(&reconciler, &envelope()).await;
    let body = pointer.to_json();

    reconciler.bodies().unwrap().fail_next(1, Failure::Transient);
    let report = reconciler.process(&record("m-1", body.clone()), None).await;
    let Outcome::BodyUnavailable { location, error } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(location, &pointer.location());
    assert!(error.is_transient());
    assert_eq!((report.outcome.fate(), report.outcome.as_str()), (Fate::Retry, "body_unavailable"));
    assert!(reconciler.ledger().read(pointer.po_id).await.unwrap().is_none(), "the ledger is not touched");
    assert!(reconciler.notifications().messages().is_empty());
    assert!(appzen.received_requests().await.unwrap().is_empty());

    // In a batch it is handed back with every later record; the redelivery goes through.
    let event: SqsEvent = serde_json::from_value(json!({ "Records": [
        { "messageId": "m-1", "body": body, "eventSource": "aws:sqs" },
        { "messageId": "m-2", "body": "not json", "eventSource": "aws:sqs" },
    ]}))
    .unwrap();
    reconciler.bodies().unwrap().fail_next(1, Failure::Transient);
    let response = reconciler.handle_batch(event, None).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["m-1", "m-2"]);
    let report = reconciler.process(&record("m-1", pointer.to_json()), None).await;
    assert!(matches!(report.outcome, Outcome::Upserted(_)), "{:?}", report.outcome);
}

#[tokio::test]
async fn without_a_bucket_or_with_another_one_a_claim_check_is_retried_so_it_ends_parked_not_lost() {
    let appzen = MockServer::start().await;
    let envelope = envelope();
    let key = body_key(envelope.po.id, "req-big");
    let no_bucket = reconciler_for(&appzen);
    let report = no_bucket.process(&record("m-1", BodyRef::of(&envelope, "b", &key).to_json()), None).await;
    let Outcome::BodyUnavailable { error, .. } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert!(error.to_string().contains("ARCHIVE_BUCKET"), "{error}");

    let other = with_bucket(reconciler_for(&appzen));
    let report = other.process(&record("m-1", BodyRef::of(&envelope, "elsewhere", &key).to_json()), None).await;
    let Outcome::BodyUnavailable { location, error } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(location, &format!("s3://elsewhere/{key}"));
    assert!(error.to_string().contains("\"memory-bucket\""), "{error}");
    assert_eq!(report.outcome.fate(), Fate::Retry);
}

#[tokio::test]
async fn a_claim_check_whose_body_is_gone_or_another_is_poison_naming_the_key() {
    let appzen = MockServer::start().await;
    let reconciler = with_bucket(reconciler_for(&appzen));
    let envelope = envelope();
    let missing = BodyRef::of(&envelope, "memory-bucket", "bodies/48213/expired.json");
    let mut other = envelope.clone();
    other.body_sha256 = po_sync::message::sha256_hex(b"another body");
    let mismatched = store(&reconciler, &other).await;
    let mismatched = BodyRef { body_sha256: envelope.body_sha256.clone(), ..mismatched };
    let not_an_envelope = BodyRef { key: "bodies/48213/garbage.json".into(), ..mismatched.clone() };
    let object = NewObject {
        key: &not_an_envelope.key,
        bytes: b"{\"hello\":1}".as_slice().into(),
        content_type: "application/json",
        metadata: &[],
    };
    reconciler.bodies().unwrap().put(&object).await.unwrap();

    for (pointer, says) in [
        (&missing, "which does not exist"),
        (&mismatched, "which holds another webhook"),
        (&not_an_envelope, "which is not a webhook envelope"),
    ] {
        let report = reconciler.process(&record("m-p", pointer.to_json()), None).await;
        assert!(matches!(report.outcome, Outcome::Poison), "{says}: {:?}", report.outcome);
        assert_eq!(report.notified, [NotificationKind::PoisonMessage]);
    }
    let events = notifications(&reconciler);
    assert_eq!(events.len(), 3);
    for (event, (pointer, says)) in events.iter().zip([
        (&missing, "does not exist"),
        (&mismatched, "another webhook"),
        (&not_an_envelope, "not a webhook envelope"),
    ]) {
        let NotificationDetail::PoisonMessage { problem, sqs_message_id } = &event.detail else { panic!("{event:?}") };
        assert_eq!(sqs_message_id, "m-p");
        assert!(problem.contains(&pointer.location()) && problem.contains(says), "{problem}");
        assert!(
            problem.starts_with("the claim check for PO P004410 (id 48213, received 2026-11-22T09:00:00.000Z)"),
            "{problem}"
        );
    }
    assert!(appzen.received_requests().await.unwrap().is_empty());
}
