//! Exsited's token shared between clients (reconcile's concurrent instances, the operator CLI) through a token
//! store: against a real HTTP server (wiremock on 127.0.0.1) with the memory store, and the DynamoDB store
//! against a real moto server.

use aws_sdk_dynamodb::types::AttributeValue;
use po_sync_aws::exsited::token::{self, DynamoTokenStore, MemoryTokenStore, TokenRecord, TokenStore};
use po_sync_aws::exsited::{ExsitedClient, ExsitedError};
use po_sync_aws::ledger::{DynamoLedger, Written};
use po_sync_moto::{MotoServer, create_table};
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::{client, order};

fn token(access: &str) -> ResponseTemplate {
    common::token(access, 3600)
}

/// Exsited's token endpoint, answering `access`; slow enough that a racing client finds the lease taken.
async fn token_endpoint(server: &MockServer, access: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path(po_sync_aws::exsited::TOKEN_PATH))
        .respond_with(token(access).set_delay(Duration::from_millis(300)))
        .expect(times)
        .mount(server)
        .await;
}

fn tokens_requested(requests: &[wiremock::Request]) -> usize {
    requests.iter().filter(|r| r.url.path() == po_sync_aws::exsited::TOKEN_PATH).count()
}

#[tokio::test]
async fn two_clients_sharing_a_store_fetch_one_token_between_them() {
    let server = MockServer::start().await;
    token_endpoint(&server, "t-1", 1).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer t-1"))
        .respond_with(order("PO-1"))
        .expect(6)
        .mount(&server)
        .await;
    let store = MemoryTokenStore::default();
    let (a, b) = (client(&server).with_token_store(store.clone()), client(&server).with_token_store(store.clone()));
    // At the same time: one takes the lease and fetches, the other waits for the token it stores.
    let (x, y) = tokio::join!(a.get("PO-1"), b.get("PO-1"));
    assert_eq!((x.unwrap().unwrap().id, y.unwrap().unwrap().id), ("PO-1".to_owned(), "PO-1".to_owned()));
    for _ in 0..2 {
        a.get("PO-1").await.unwrap();
        b.get("PO-1").await.unwrap();
    }
    assert_eq!(a.tokens_fetched() + b.tokens_fetched(), 1);
    let records = store.records();
    assert_eq!(records.len(), 1);
    // Written twice: the lease, then the token over it.
    assert_eq!(records[0].revision, 2);
    assert!(records[0].refreshing_until.is_none() && records[0].holder.is_none());
    assert!(!format!("{a:?}{b:?}{store:?}").contains("t-1"), "the token is never in Debug output");
}

#[tokio::test]
async fn after_a_401_the_clients_sharing_a_store_fetch_exactly_one_new_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(po_sync_aws::exsited::TOKEN_PATH))
        .respond_with(token("old").set_delay(Duration::from_millis(300)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(po_sync_aws::exsited::TOKEN_PATH))
        .respond_with(token("new").set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    // "old" serves each client's first request, then Exsited has ended it.
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer old"))
        .respond_with(order("PO-1"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer old"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer new"))
        .respond_with(order("PO-1"))
        .expect(4)
        .mount(&server)
        .await;
    let store = MemoryTokenStore::default();
    let (a, b) = (client(&server).with_token_store(store.clone()), client(&server).with_token_store(store.clone()));
    a.get("PO-1").await.unwrap();
    b.get("PO-1").await.unwrap();
    assert_eq!(tokens_requested(&server.received_requests().await.unwrap()), 1);
    // Both refused with "old" at the same time: one fetches "new", the other takes it from the store.
    let (x, y) = tokio::join!(a.get("PO-1"), b.get("PO-1"));
    x.unwrap();
    y.unwrap();
    a.get("PO-1").await.unwrap();
    b.get("PO-1").await.unwrap();
    assert_eq!(tokens_requested(&server.received_requests().await.unwrap()), 2, "one new token, not one per client");
    assert_eq!(a.tokens_fetched() + b.tokens_fetched(), 2);
    assert_eq!(store.records()[0].revision, 4);
}

#[tokio::test]
async fn while_another_client_renews_the_token_a_request_waits_then_gives_up_without_asking_exsited() {
    let server = MockServer::start().await;
    token_endpoint(&server, "t-1", 0).await;
    let store = MemoryTokenStore::default();
    let key = token::key(&server.uri(), "id-1");
    let now = chrono::Utc::now();
    let lease = TokenRecord {
        po_id: key.clone(),
        revision: 1,
        access_token: None,
        expires_at: None,
        refreshing_until: Some(now + chrono::TimeDelta::seconds(15)),
        holder: Some("another-instance".to_owned()),
        updated_at: now,
    };
    assert_eq!(store.write(&lease).await.unwrap(), Written::Stored);
    let started = std::time::Instant::now();
    let error = client(&server).with_token_store(store.clone()).get("PO-1").await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(error, ExsitedError::Unreachable(_)) && error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("renewing the shared Exsited token"), "{error}");
    assert!(waited >= Duration::from_millis(2_500) && waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(store.records()[0].revision, 1, "the lease is left to its holder");
}

#[tokio::test]
async fn a_failed_token_request_releases_the_lease_for_the_next_client() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(po_sync_aws::exsited::TOKEN_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    token_endpoint(&server, "t-2", 1).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .respond_with(order("PO-1"))
        .mount(&server)
        .await;
    let store = MemoryTokenStore::default();
    let (a, b) = (client(&server).with_token_store(store.clone()), client(&server).with_token_store(store.clone()));
    let error = a.get("PO-1").await.unwrap_err();
    assert!(matches!(error, ExsitedError::Refused { status: 503, .. }), "{error:?}");
    let released = &store.records()[0];
    assert_eq!((released.revision, released.holder.as_deref()), (2, None));
    // The next client does not wait out the lease: it takes one of its own at once.
    let started = std::time::Instant::now();
    b.get("PO-1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(store.records()[0].revision, 4);
}

#[tokio::test]
async fn a_token_that_claims_to_live_forever_is_stored_and_used() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(po_sync_aws::exsited::TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "t", "expires_in": u64::MAX})),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .respond_with(order("PO-1"))
        .mount(&server)
        .await;
    let store = MemoryTokenStore::default();
    let shared = client(&server).with_token_store(store.clone());
    shared.get("PO-1").await.unwrap();
    shared.get("PO-1").await.unwrap();
    assert!(store.records()[0].expires_at.is_some());
    // Without a store, the same.
    let own = client(&server);
    own.get("PO-1").await.unwrap();
    own.get("PO-1").await.unwrap();
    assert_eq!((shared.tokens_fetched(), own.tokens_fetched()), (1, 1));
}

#[tokio::test]
async fn the_dynamodb_store_shares_one_token_between_racing_clients_in_the_ledger_table() {
    let moto = MotoServer::start();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let table = create_table(&dynamodb, "token-ledger", po_sync_aws::ledger::KEY, None).await.unwrap();
    let server = MockServer::start().await;
    token_endpoint(&server, "t-dynamo", 1).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer t-dynamo"))
        .respond_with(order("PO-1"))
        .expect(5)
        .mount(&server)
        .await;
    // Three processes: each its own client and store, one table.
    let clients: Vec<ExsitedClient> =
        (0..3).map(|_| client(&server).with_token_store(DynamoTokenStore::new(dynamodb.clone(), &table))).collect();
    let (x, y, z) = tokio::join!(clients[0].get("PO-1"), clients[1].get("PO-1"), clients[2].get("PO-1"));
    for answer in [x, y, z] {
        assert_eq!(answer.unwrap().unwrap().id, "PO-1");
    }
    clients[0].get("PO-1").await.unwrap();
    clients[2].get("PO-1").await.unwrap();
    assert_eq!(clients.iter().map(ExsitedClient::tokens_fetched).sum::<u64>(), 1);

    // One item, keyed apart from the POs, the lease ended.
    let key = token::key(&server.uri(), "id-1");
    let item = dynamodb
        .get_item()
        .table_name(&table)
        .key("poId", AttributeValue::S(key.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item.get("revision"), Some(&AttributeValue::N("2".to_owned())));
    assert_eq!(item.get("accessToken"), Some(&AttributeValue::S("t-dynamo".to_owned())));
    assert!(item.contains_key("expiresAt") && !item.contains_key("refreshingUntil") && !item.contains_key("holder"));
    let scanned = dynamodb.scan().table_name(&table).send().await.unwrap();
    assert_eq!(scanned.count, 1);
    // Tools that list the ledger's PO entries neither read it as one nor call it unreadable.
    let (entries, unreadable) = DynamoLedger::new(dynamodb.clone(), &table).entries().await.unwrap();
    assert!(entries.is_empty() && unreadable.is_empty(), "{entries:?} {unreadable:?}");

    // Compare-and-set on the revision: a write derived from an older record is refused.
    let store = DynamoTokenStore::new(dynamodb.clone(), &table);
    let stored = store.read(&key).await.unwrap().unwrap();
    assert_eq!(stored.revision, 2);
    assert!(!format!("{stored:?}{store:?}").contains("t-dynamo"), "the token is never in Debug output");
    let stale = TokenRecord { revision: 2, ..stored.clone() };
    assert_eq!(store.write(&stale).await.unwrap(), Written::Conflict);
    let first = TokenRecord { revision: 1, ..stored.clone() };
    assert_eq!(store.write(&first).await.unwrap(), Written::Conflict);
    let next = TokenRecord { revision: 3, ..stored };
    assert_eq!(store.write(&next).await.unwrap(), Written::Stored);
}
