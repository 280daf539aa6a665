//! reconcile with `DESTINATION=exsited`, as its Lambda runs it (the real function crate, configured from the
//! environment), against the Exsited sandbox over HTTP: a PO is created with Komet's exact amounts, a later
//! version changes that PO instead of creating another, a create whose answer was lost is found rather than
//! made twice, a cancelled PO is held and mailed, a refusal is mailed, and one token serves until it ends.

use aws_lambda_events::event::sqs::SqsEvent;
use po_sync::Decimal;
use po_sync::config::reconcile::ReconcileConfig;
use po_sync::destination::Destination;
use po_sync::komet::parse_webhook;
use po_sync::message::{NotificationDetail, NotificationEvent, NotificationKind, WebhookEnvelope, sha256_hex};
use po_sync_aws::exsited::ExsitedClient;
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::queue::MemoryFifoQueue;
use po_sync_local::exsited_sandbox::{Config, RunningSandbox, Sandbox};
use po_sync_test_support::{env_map, fixture};
use reconcile::{Outcome, Reconciler};
use serde_json::{Value, json};

const KOMET_TOTAL: &str = "1284.81";

async fn sandbox() -> RunningSandbox {
    Sandbox::new(Config::default()).spawn(0).await.unwrap()
}

fn config(sandbox: &RunningSandbox, extra: &[(&str, &str)]) -> ReconcileConfig {
    let base_url = sandbox.base_url();
    let mut env = env_map(&[
        ("NOTIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/notifications.fifo"),
        ("LEDGER_TABLE_NAME", "po-sync-ledger"),
        ("DESTINATION", "exsited"),
        ("DESTINATIONS", "appzen,exsited"),
        ("EXSITED_BASE_URL", &base_url),
        ("EXSITED_CLIENT_ID", "local-exsited-client"),
        ("EXSITED_CLIENT_SECRET", "local-exsited-secret"),
        ("EXSITED_ACCOUNT_MAP", "V-0042=SUP-0001"),
        ("EXSITED_ITEM_MAP", "CGEN=FLOWERS,PGEN=FLOWERS,RGEN=FLOWERS"),
        ("EXSITED_TIMEOUT_MS", "500"),
    ]);
    env.extend(env_map(extra));
    ReconcileConfig::from_env(&env).unwrap()
}

async fn reconciler(config: ReconcileConfig) -> Reconciler<MemoryFifoQueue, MemoryLedger> {
    let aws = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    let po_sync::config::reconcile::DestinationConfig::Exsited(exsited) = &config.destination else { unreachable!() };
    let sender = reconcile::Sender::exsited(exsited, None, &aws).await.unwrap();
    Reconciler::new(config, sender, MemoryFifoQueue::default(), MemoryLedger::default())
}

/// The clean PO as Komet sent it at `at_ms`, with `edit` applied to its JSON.
fn version(at_ms: i64, edit: impl FnOnce(&mut Value)) -> String {
    let mut komet: Value = serde_json::from_slice(&fixture("komet-clean-po.json")).unwrap();
    edit(&mut komet);
    let body = serde_json::to_vec(&komet).unwrap();
    let received = chrono::DateTime::from_timestamp_millis(at_ms).unwrap();
    WebhookEnvelope::new(parse_webhook(&body).unwrap(), &body, received).to_json()
}

async fn deliver(reconciler: &Reconciler<MemoryFifoQueue, MemoryLedger>, id: &str, body: &str, at_ms: i64) -> Outcome {
    let record = json!({
        "messageId": id,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": (at_ms + 5).to_string(),
            "SequenceNumber": (at_ms as u128 * 1000).to_string(),
            "MessageGroupId": "48213",
            "MessageDeduplicationId": sha256_hex(body.as_bytes()),
        },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    });
    let event: SqsEvent = serde_json::from_value(json!({ "Records": [record] })).unwrap();
    reconciler.process(&event.records[0], None).await.outcome
}

fn notifications(reconciler: &Reconciler<MemoryFifoQueue, MemoryLedger>) -> Vec<NotificationEvent> {
    reconciler.notifications().messages().iter().map(|m| NotificationEvent::from_json(&m.body).unwrap()).collect()
}

fn exsited_id(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Upserted(accepted) => accepted.uuid.clone().unwrap(),
        other => panic!("not taken by Exsited: {other:?}"),
    }
}

const T0: i64 = 1_795_280_400_000;

#[tokio::test]
async fn a_po_is_created_with_komets_exact_amounts_and_a_later_version_changes_it() {
    let exsited = sandbox().await;
    let reconciler = reconciler(config(&exsited, &[])).await;

    let first = deliver(&reconciler, "m-1", &version(T0, |_| {}), T0).await;
    let id = exsited_id(&first);
    let order = exsited.purchase_order(&id).unwrap();
    assert_eq!(order["total"].as_str().unwrap().parse::<Decimal>().unwrap(), KOMET_TOTAL.parse::<Decimal>().unwrap());
    assert_eq!(order["account_id"], "SUP-0001");
    assert_eq!(order["lines"].as_array().unwrap().len(), 6, "five items and one invoice's charges");
    let entry = reconciler.ledger().entry(48213).unwrap();
    assert_eq!(
        entry.holds.as_ref().and_then(|h| h.uuid.as_deref()),
        Some(id.as_str()),
        "the ledger keeps Exsited's id"
    );

    // Komet moves the ship date and sends the PO again: the same Exsited PO changes.
    let later = version(T0 + 60_000, |po| po["shipDate"] = json!("2026-02-11"));
    let second = deliver(&reconciler, "m-2", &later, T0 + 60_000).await;
    assert_eq!(exsited_id(&second), id, "changed, not created again");
    let Outcome::Upserted(accepted) = &second else { unreachable!() };
    assert_eq!(accepted.status.as_deref(), Some("UPDATED"));
    assert_eq!(exsited.purchase_orders().len(), 1);
    let order = exsited.purchase_order(&id).unwrap();
    assert_eq!(order["issue_date"], "2026-02-11");
    assert_eq!(order["lines"].as_array().unwrap().len(), 6, "the old lines replaced, not added to");
    assert_eq!(order["total"].as_str().unwrap().parse::<Decimal>().unwrap(), KOMET_TOTAL.parse::<Decimal>().unwrap());

    // The first version again, older than what Exsited holds: superseded, not sent.
    let again = deliver(&reconciler, "m-1-late", &version(T0, |_| {}), T0).await;
    assert!(matches!(again, Outcome::Superseded { .. } | Outcome::Duplicate), "{again:?}");
    assert_eq!(exsited.tokens_issued(), 1, "one token for every request");
    assert!(notifications(&reconciler).is_empty(), "a clean PO mails nobody");
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_not_made_twice() {
    let exsited = sandbox().await;
    let body = version(T0, |_| {});
    let id = exsited_id(&deliver(&reconciler(config(&exsited, &[])).await, "m-1", &body, T0).await);
    // A reconcile whose ledger never learned Exsited's id: what is left after a create whose answer was lost
    // (the timeout hands the record back before the ledger is settled).
    let after_lost_answer = reconciler(config(&exsited, &[])).await;
    let redelivered = deliver(&after_lost_answer, "m-1", &body, T0).await;
    assert_eq!(exsited_id(&redelivered), id, "found by its note and changed");
    assert_eq!(exsited.purchase_orders().len(), 1, "one PO, not two");
    let creates =
        exsited.requests().iter().filter(|r| r.method == "POST" && r.path == "/api/v3/purchase-orders").count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn a_cancelled_po_is_held_and_mailed_never_reactivated() {
    let exsited = sandbox().await;
    let config = config(&exsited, &[]);
    let reconciler = reconciler(config.clone()).await;
    let id = exsited_id(&deliver(&reconciler, "m-1", &version(T0, |_| {}), T0).await);
    let po_sync::config::reconcile::DestinationConfig::Exsited(settings) = &config.destination else { unreachable!() };
    let aws = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    ExsitedClient::from_config(settings, &aws).await.unwrap().cancel(&id).await.unwrap();

    let later = version(T0 + 60_000, |po| po["shipDate"] = json!("2026-02-11"));
    let outcome = deliver(&reconciler, "m-2", &later, T0 + 60_000).await;
    assert!(matches!(&outcome, Outcome::Cancelled { exsited_id } if *exsited_id == id), "{outcome:?}");
    let order = exsited.purchase_order(&id).unwrap();
    assert_eq!((order["status"].as_str(), order["issue_date"].as_str()), (Some("INACTIVE"), Some("2026-02-09")));
    let mailed = notifications(&reconciler);
    assert_eq!(mailed.len(), 1);
    assert_eq!(
        (mailed[0].kind(), mailed[0].destination),
        (NotificationKind::CancelledAtDestination, Destination::Exsited)
    );
}

#[tokio::test]
async fn a_refusal_and_a_missing_mapping_are_mailed_as_exsiteds() {
    let exsited = sandbox().await;
    // SUP-0404 is no supplier account of the sandbox: Exsited refuses the PO.
    let reconciler = reconciler(config(&exsited, &[("EXSITED_ACCOUNT_MAP", "V-0042=SUP-0404")])).await;
    let outcome = deliver(&reconciler, "m-1", &version(T0, |_| {}), T0).await;
    assert!(matches!(outcome, Outcome::ExsitedRejected { http_status: 400, .. }), "{outcome:?}");
    let mailed = notifications(&reconciler);
    let NotificationDetail::ExsitedRejected { exsited: answer } = &mailed[0].detail else { panic!("{mailed:?}") };
    assert!(answer.message.as_deref().unwrap().contains("SUP-0404"), "{answer:?}");

    let unmapped = reconciler_with_items(&exsited, "CGEN=FLOWERS").await;
    let outcome = deliver(&unmapped, "m-1", &version(T0, |_| {}), T0).await;
    assert!(matches!(outcome, Outcome::Held), "{outcome:?}");
    let mailed = notifications(&unmapped);
    let NotificationDetail::MappingError { problem } = &mailed[0].detail else { panic!("{mailed:?}") };
    assert!(problem.contains("\"PGEN\"") && problem.contains("EXSITED_ITEM_MAP"), "{problem}");
    assert_eq!(mailed[0].destination, Destination::Exsited);
}

async fn reconciler_with_items(exsited: &RunningSandbox, items: &str) -> Reconciler<MemoryFifoQueue, MemoryLedger> {
    reconciler(config(exsited, &[("EXSITED_ITEM_MAP", items)])).await
}

#[tokio::test]
async fn one_token_serves_until_it_ends_and_one_refresh_follows_a_401() {
    let exsited = sandbox().await;
    let reconciler = reconciler(config(&exsited, &[])).await;
    exsited_id(&deliver(&reconciler, "m-1", &version(T0, |_| {}), T0).await);
    assert_eq!(exsited.tokens_issued(), 1);
    exsited.expire_tokens();
    let later = version(T0 + 60_000, |po| po["shipDate"] = json!("2026-02-11"));
    exsited_id(&deliver(&reconciler, "m-2", &later, T0 + 60_000).await);
    assert_eq!(exsited.tokens_issued(), 2, "one new token after the 401, used for the rest");
}

#[tokio::test]
async fn a_mismatch_is_mailed_by_the_first_destination_only() {
    let exsited = sandbox().await;
    let reconciler = reconciler(config(&exsited, &[("RECONCILE_POLICY", "forward")])).await;
    let off = version(T0, |po| po["total"] = json!(1284.80));
    exsited_id(&deliver(&reconciler, "m-1", &off, T0).await);
    assert!(notifications(&reconciler).is_empty(), "AppZen's reconcile mails the mismatch, not Exsited's");
}
