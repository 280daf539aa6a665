//! Helpers the reconcile integration tests share (`mod common;` in each); AppZen and Exsited are wiremock
//! servers.
// Each test binary uses a part of it.
#![allow(dead_code)]

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use po_sync::appzen::UPSERT_PATH;
use po_sync::config::reconcile::{DestinationConfig, ReconcileConfig};
use po_sync::message::NotificationEvent;
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::queue::{MemoryFifoQueue, Redelivery};
use po_sync_test_support::reconcile_config;
use reconcile::Reconciler;
use serde_json::json;
use std::time::{Duration, SystemTime};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Exsited's token endpoint and purchase orders (v3), as its documentation spells them.
pub const EXSITED_TOKEN_PATH: &str = "/api/v1/oauth2/token";
pub const EXSITED_ORDERS_PATH: &str = "/api/v3/purchase-orders";

/// AppZen answering every upsert with success.
pub async fn accept_everything(appzen: &MockServer) {
    Mock::given(method("POST"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "uuid": "uuid-1", "status": "UPDATED" })))
        .mount(appzen)
        .await;
}

/// reconcile's configuration for Exsited at `exsited` (a wiremock): `DESTINATION=exsited`, the fixtures' codes
/// mapped to the catalogue's, 2 s per request, with `extra` on top (a variable named again wins).
pub fn exsited_config(exsited: &MockServer, extra: &[(&str, &str)]) -> ReconcileConfig {
    let uri = exsited.uri();
    let base = [
        ("DESTINATION", "exsited"),
        ("DESTINATIONS", "appzen,exsited"),
        ("EXSITED_BASE_URL", uri.as_str()),
        ("EXSITED_CLIENT_ID", "id"),
        ("EXSITED_CLIENT_SECRET", "secret"),
        ("EXSITED_ACCOUNT_MAP", "V-0042=SUP-0001"),
        ("EXSITED_ITEM_MAP", "CGEN=FLOWERS,PGEN=FLOWERS,RGEN=FLOWERS"),
        ("EXSITED_TIMEOUT_MS", "2000"),
    ];
    let env: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
    reconcile_config("https://appzen.invalid", &env)
}

/// reconcile for Exsited as `config` says, its ports in memory and its token the process's own.
pub async fn exsited_reconciler<S: ObjectStore>(
    config: ReconcileConfig,
) -> Reconciler<MemoryFifoQueue, MemoryLedger, S> {
    let aws = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
    let DestinationConfig::Exsited(settings) = &config.destination else { panic!("DESTINATION=exsited") };
    let sender = reconcile::Sender::exsited(settings, None, &aws).await.unwrap();
    Reconciler::new(config, sender, MemoryFifoQueue::default(), MemoryLedger::default())
}

/// Exsited's token endpoint answering every request with a token.
pub async fn exsited_token(exsited: &MockServer) {
    Mock::given(method("POST"))
        .and(path(EXSITED_TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "access_token": "t", "expires_in": 3600 })))
        .mount(exsited)
        .await;
}

/// Exsited taking every PO: a token, no PO to find by its note, and a create that answers `PO-1`.
pub async fn exsited_accepts(exsited: &MockServer) {
    exsited_token(exsited).await;
    Mock::given(method("GET"))
        .and(path(EXSITED_ORDERS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "purchase_orders": [] })))
        .mount(exsited)
        .await;
    Mock::given(method("POST"))
        .and(path(EXSITED_ORDERS_PATH))
        .respond_with(ResponseTemplate::new(201).set_body_json(exsited_po_1()))
        .mount(exsited)
        .await;
}

/// Exsited's answer about the PO it created, `PO-1`.
pub fn exsited_po_1() -> serde_json::Value {
    json!({ "purchase_order": { "id": "PO-1", "status": "ACTIVE", "lines": [] } })
}

/// The message ids a batch response hands back.
pub fn failures(response: &SqsBatchResponse) -> Vec<&str> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
}

/// A batch of SQS records (as Lambda delivers them, built from JSON: the event structs are non-exhaustive).
pub fn batch(records: Vec<serde_json::Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// An invocation deadline two minutes away.
pub fn later() -> Option<SystemTime> {
    Some(SystemTime::now() + Duration::from_secs(120))
}

/// Every notification event `reconciler` queued so far.
pub fn notifications<S: ObjectStore, R: Redelivery>(
    reconciler: &Reconciler<MemoryFifoQueue, MemoryLedger, S, R>,
) -> Vec<NotificationEvent> {
    reconciler.notifications().messages().iter().map(|m| NotificationEvent::from_json(&m.body).unwrap()).collect()
}
