//! The Exsited client against a real HTTP server (wiremock on 127.0.0.1): the token it fetches and keeps, the
//! refresh after a 401, the requests it sends and how it reads each kind of answer.

use po_sync::exsited::{ExsitedSettings, IdRule, map_purchase_order};
use po_sync::komet::parse_webhook;
use po_sync_aws::exsited::ExsitedError;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;
use common::{REDIRECT_URI, client, order, token};

const CLEAN_PO: &[u8] = include_bytes!("../../po-sync/tests/fixtures/komet-clean-po.json");

async fn token_endpoint(server: &MockServer, access: &str, expires_in: u64, times: u64) {
    Mock::given(method("POST"))
        .and(path("/api/v1/oauth2/token"))
        .and(body_json(serde_json::json!({
            "grant_type": "client_credentials", "client_id": "id-1", "client_secret": "secret-1",
            "redirect_uri": REDIRECT_URI
        })))
        .respond_with(token(access, expires_in))
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn one_token_serves_every_request_until_it_expires() {
    let server = MockServer::start().await;
    token_endpoint(&server, "t-1", 3600, 1).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer t-1"))
        .respond_with(order("PO-1"))
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&server);
    for _ in 0..3 {
        let found = client.get("PO-1").await.unwrap().unwrap();
        assert_eq!((found.id.as_str(), found.status.as_deref()), ("PO-1", Some("ACTIVE")));
    }
    assert_eq!(client.tokens_fetched(), 1);
}

#[tokio::test]
async fn a_token_about_to_expire_is_renewed_before_it_is_used() {
    let server = MockServer::start().await;
    // 61 s of life, renewed a minute early: due after one second.
    token_endpoint(&server, "t-short", 61, 2).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .respond_with(order("PO-1"))
        .mount(&server)
        .await;
    let client = client(&server);
    client.get("PO-1").await.unwrap();
    client.get("PO-1").await.unwrap();
    assert_eq!(client.tokens_fetched(), 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client.get("PO-1").await.unwrap();
    assert_eq!(client.tokens_fetched(), 2);
}

#[tokio::test]
async fn a_401_fetches_one_new_token_and_sends_the_request_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oauth2/token"))
        .respond_with(token("old", 3600))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/api/v1/oauth2/token")).respond_with(token("new", 3600)).mount(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-1/cancel"))
        .and(header("authorization", "Bearer old"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "token ended"}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-1/cancel"))
        .and(header("authorization", "Bearer new"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let first = client(&server);
    first.cancel("PO-1").await.unwrap();
    assert_eq!(first.tokens_fetched(), 2, "one refresh, not one per attempt");

    // Refused again with the new token: no third token, the 401 is the answer.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oauth2/token"))
        .respond_with(token("t", 3600))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-1/reactivate"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let error = client(&server).reactivate("PO-1").await.unwrap_err();
    assert!(matches!(error, ExsitedError::Refused { status: 401, .. }) && !error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn a_created_po_is_sent_with_string_amounts_and_its_id_is_read_back() {
    let server = MockServer::start().await;
    token_endpoint(&server, "t-1", 3600, 1).await;
    let po = parse_webhook(CLEAN_PO).unwrap();
    let settings = ExsitedSettings {
        currency: "USD".into(),
        accounts: IdRule::parse("V-0042=SUP-0001").unwrap(),
        items: IdRule::SameAsKomet,
        charges_item_id: "ADDITIONAL_CHARGES".into(),
    };
    let request = map_purchase_order(&po, &settings).unwrap();
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders"))
        .and(header("content-type", "application/json"))
        .and(body_json(serde_json::to_value(&request).unwrap()))
        .respond_with(order("PO-LHROM9-0024"))
        .expect(1)
        .mount(&server)
        .await;
    let created = client(&server).create(&request).await.unwrap();
    assert_eq!(created.id, "PO-LHROM9-0024");
    assert_eq!(created.total.as_deref(), Some("1284.81"));
    let sent = &server.received_requests().await.unwrap()[1];
    let body = String::from_utf8_lossy(&sent.body);
    assert!(body.contains("\"price\":\"500.10\"") && body.contains("\"item_quantity\":\"1\""), "{body}");
}

#[tokio::test]
async fn answers_are_read_as_exsited_documents_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/api/v1/oauth2/token")).respond_with(token("t", 3600)).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/busy"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "2"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/bad"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "errors": [{"code": "VALIDATION", "message": "account_id SUP-9 does not exist"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/odd%2Fid"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>", "text/html"))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(client.get("gone").await, Ok(None));
    let busy = client.get("busy").await.unwrap_err();
    assert!(busy.is_transient(), "{busy:?}");
    assert!(
        matches!(busy, ExsitedError::Refused { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(2))
    );
    let bad = client.get("bad").await.unwrap_err();
    assert!(!bad.is_transient());
    assert_eq!(bad.to_string(), "Exsited answered HTTP 400: VALIDATION: account_id SUP-9 does not exist");
    let odd = client.get("odd/id").await.unwrap_err();
    assert!(matches!(odd, ExsitedError::Unreadable { status: 200, .. }), "an id stays one path segment: {odd:?}");
}

#[tokio::test]
async fn a_refused_token_request_is_the_answer_and_the_secret_is_not_in_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(
                serde_json::json!({"errors": [{"code": "INVALID_CLIENT", "message": "bad credentials"}]}),
            ),
        )
        .mount(&server)
        .await;
    let error = client(&server).get("PO-1").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Exsited's token endpoint refused the client credentials (HTTP 401): INVALID_CLIENT: bad credentials"
    );
    assert!(!format!("{error:?}{:?}", client(&server)).contains("secret-1"));
}

#[tokio::test]
async fn credentials_the_token_endpoint_refuses_are_a_credentials_outage_whatever_the_4xx() {
    for (status, outage) in [(400, true), (401, true), (403, true), (404, false), (429, false)] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/oauth2/token"))
            .respond_with(ResponseTemplate::new(status).set_body_json(serde_json::json!({
                "errors": [{"code": "invalid_client", "message": "Client authentication failed"}]
            })))
            .mount(&server)
            .await;
        let error = client(&server).cancel("PO-1").await.unwrap_err();
        let credentials = error.outage_cause() == Some(po_sync::outage::OutageCause::Credentials);
        assert_eq!(credentials, outage, "HTTP {status}: {error:?}");
        assert!(error.outage_cause().is_some(), "HTTP {status} from the token endpoint is never a verdict on a PO");
        assert_eq!(error.http_status(), Some(status));
        assert!(!error.to_string().contains("secret-1"), "{error}");
    }
}
