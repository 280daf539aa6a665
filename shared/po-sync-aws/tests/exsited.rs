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

/// Komet moved the PO to another vendor: Exsited holds it, `status` (`ACTIVE`, `INACTIVE`), under `SUP-OLD`, and
/// the version names `SUP-0001`.
async fn exsited_holding_the_po_under_another_account(status: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/api/v1/oauth2/token")).respond_with(token("t-1", 3600)).mount(&server).await;
    let old = serde_json::json!({ "purchase_order": {
        "id": "PO-OLD", "status": status, "account_id": "SUP-OLD", "lines": [{ "uuid": "l-old", "item_id": "CGEN" }]
    } });
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-OLD"))
        .respond_with(ResponseTemplate::new(200).set_body_json(old))
        .mount(&server)
        .await;
    server
}

fn moved_request() -> (po_sync::exsited::CreateRequest, String) {
    let po = parse_webhook(CLEAN_PO).unwrap();
    let settings = ExsitedSettings {
        currency: "USD".into(),
        accounts: IdRule::parse("V-0042=SUP-0001").unwrap(),
        items: IdRule::SameAsKomet,
        charges_item_id: "ADDITIONAL_CHARGES".into(),
    };
    (map_purchase_order(&po, &settings).unwrap(), po_sync::exsited::note_prefix(po.id, &po.po_number))
}

/// Each request's method and path, in order, past the token's.
async fn requests_made(server: &MockServer) -> Vec<String> {
    let requests = server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.url.path() != "/api/v1/oauth2/token")
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect()
}

#[tokio::test]
async fn a_po_moved_to_another_vendor_is_created_under_the_new_account_before_the_old_one_is_cancelled() {
    let server = exsited_holding_the_po_under_another_account("ACTIVE").await;
    let (request, prefix) = moved_request();
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders"))
        .and(wiremock::matchers::query_param("account_id", "SUP-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "purchase_orders": [] })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders"))
        .and(body_json(serde_json::to_value(&request).unwrap()))
        .respond_with(order("PO-NEW"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-OLD/cancel"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let delivery = client(&server).deliver(Some("PO-OLD"), &request, &prefix, None).await;
    let Ok(po_sync_aws::exsited::Delivered::Moved { order, cancelled }) = delivery.result else {
        panic!("{:?}", delivery.result)
    };
    assert_eq!((order.id.as_str(), cancelled.as_str()), ("PO-NEW", "PO-OLD"));
    assert_eq!(delivery.operations, 4);
    assert_eq!(
        requests_made(&server).await,
        [
            "GET /api/v3/purchase-orders/PO-OLD",
            "GET /api/v3/purchase-orders",
            "POST /api/v3/purchase-orders",
            "POST /api/v3/purchase-orders/PO-OLD/cancel"
        ]
    );
}

#[tokio::test]
async fn a_move_whose_cancel_failed_is_finished_by_the_retry_without_a_second_create() {
    let server = exsited_holding_the_po_under_another_account("ACTIVE").await;
    let (request, prefix) = moved_request();
    let listed = |orders: serde_json::Value| {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({ "purchase_orders": orders }))
    };
    // Nothing under the new account the first time; the PO the first try created the second.
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders"))
        .respond_with(listed(serde_json::json!([])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let created = serde_json::json!([
        { "id": "PO-GONE", "status": "INACTIVE", "account_id": "SUP-0001", "purchase_order_note": format!("{prefix} older") },
        { "id": "PO-NEW", "status": "ACTIVE", "account_id": "SUP-0001", "purchase_order_note": format!("{prefix} x"),
          "lines": [{ "uuid": "l-new", "item_id": "CGEN" }] }
    ]);
    Mock::given(method("GET")).and(path("/api/v3/purchase-orders")).respond_with(listed(created)).mount(&server).await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders"))
        .respond_with(order("PO-NEW"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-OLD/cancel"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/purchase-orders/PO-OLD/cancel"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    for change in ["information", "change"] {
        Mock::given(wiremock::matchers::path(format!("/api/v3/purchase-orders/PO-NEW/{change}")))
            .respond_with(order("PO-NEW"))
            .expect(1)
            .mount(&server)
            .await;
    }
    let client = client(&server);

    let first = client.deliver(Some("PO-OLD"), &request, &prefix, None).await;
    assert!(first.result.as_ref().is_err_and(ExsitedError::is_transient), "{:?}", first.result);
    // The ledger still names PO-OLD: the retry finds the PO the first try created, and changes it.
    let retry = client.deliver(Some("PO-OLD"), &request, &prefix, None).await;
    let Ok(po_sync_aws::exsited::Delivered::Moved { order, cancelled }) = retry.result else {
        panic!("{:?}", retry.result)
    };
    assert_eq!((order.id.as_str(), cancelled.as_str()), ("PO-NEW", "PO-OLD"));
}

/// Exsited holds the old account's PO cancelled, `PO-OLD`, which the ledger still names, and `new_account`'s POs
/// under `SUP-0001`; nothing is created or cancelled.
async fn exsited_holding_the_old_po_cancelled(new_account: serde_json::Value) -> MockServer {
    let server = exsited_holding_the_po_under_another_account("INACTIVE").await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders"))
        .and(wiremock::matchers::query_param("account_id", "SUP-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "purchase_orders": new_account })))
        .mount(&server)
        .await;
    for creates_or_cancels in ["/api/v3/purchase-orders", "/api/v3/purchase-orders/PO-OLD/cancel"] {
        Mock::given(method("POST"))
            .and(path(creates_or_cancels))
            .respond_with(order("X"))
            .expect(0)
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn a_finished_move_whose_ledger_write_was_lost_changes_the_new_account_s_po_and_is_not_held() {
    let (request, prefix) = moved_request();
    let server = exsited_holding_the_old_po_cancelled(serde_json::json!([
        { "id": "PO-NEW", "status": "ACTIVE", "account_id": "SUP-0001", "purchase_order_note": format!("{prefix} x"),
          "lines": [{ "uuid": "l-new", "item_id": "CGEN" }] }
    ]))
    .await;
    for change in ["information", "change"] {
        Mock::given(path(format!("/api/v3/purchase-orders/PO-NEW/{change}")))
            .respond_with(order("PO-NEW"))
            .expect(1)
            .mount(&server)
            .await;
    }

    let delivery = client(&server).deliver(Some("PO-OLD"), &request, &prefix, None).await;
    let Ok(po_sync_aws::exsited::Delivered::Changed(order)) = delivery.result else { panic!("{:?}", delivery.result) };
    assert_eq!(order.id, "PO-NEW");
    assert_eq!(delivery.operations, 4);
}

#[tokio::test]
async fn a_po_cancelled_in_exsited_stays_held_when_komet_moves_it_and_nothing_holds_it_under_the_new_account() {
    let (request, prefix) = moved_request();
    let server = exsited_holding_the_old_po_cancelled(serde_json::json!([
        { "id": "PO-OTHER", "status": "ACTIVE", "account_id": "SUP-0001", "purchase_order_note": "PO P-1 of another order" }
    ]))
    .await;

    let delivery = client(&server).deliver(Some("PO-OLD"), &request, &prefix, None).await;
    let Ok(po_sync_aws::exsited::Delivered::Inactive(order)) = delivery.result else { panic!("{:?}", delivery.result) };
    assert_eq!(order.id, "PO-OLD");
}
