//! The read-back against a real HTTP server (wiremock on 127.0.0.1): the GET AppZen documents, with the
//! upsert's three headers, a PO number as one path segment, and each kind of answer.

use po_sync::config::reconcile::{AppZenConfig, AppZenCredentials, CredentialsSource};
use po_sync_aws::appzen::{AppZenClient, ReadError};
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn credentials() -> AppZenCredentials {
    AppZenCredentials {
        api_key: "k".to_owned().into(),
        customer_id: "c".to_owned().into(),
        customer_key: "ck".to_owned().into(),
    }
}

fn client(server: &MockServer) -> AppZenClient {
    client_of(server.uri())
}

fn client_of(base_url: String) -> AppZenClient {
    let config = AppZenConfig {
        base_url,
        credentials: CredentialsSource::Inline(credentials()),
        request_timeout: Duration::from_secs(2),
        max_attempts: 1,
        backoff: Default::default(),
        deadline_margin: Duration::ZERO,
        credential_renewal_interval: Duration::ZERO,
    };
    AppZenClient::new(&config, &credentials()).unwrap()
}

const PATH: &str = "/dictionary-data-services/purchase-order/purchase-order-number/";

#[tokio::test]
async fn a_held_po_is_read_with_the_upserts_headers_and_exact_amounts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{PATH}193-994K")))
        .and(header("x-api-key", "k"))
        .and(header("customer-id", "c"))
        .and(header("customer-key", "ck"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"purchase_order_number":"193-994K","entity_id":"1002","entity_name":"Acme Inc",
                "total_amount":{"amount":1234567.89,"currency":"USD"},"purchase_order_lines":[]}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let held = client(&server).read("193-994K", Duration::from_secs(2)).await.unwrap().unwrap();
    assert_eq!(held.purchase_order_number.as_deref(), Some("193-994K"));
    assert_eq!(held.total_amount.unwrap().amount.map(|a| a.to_string()).as_deref(), Some("1234567.89"));
}

#[tokio::test]
async fn a_po_number_with_a_slash_or_a_space_stays_one_path_segment() {
    let server = MockServer::start().await;
    let client = client(&server);
    let url = client.read_url("PO 7/2026?x#y");
    assert_eq!(url.path(), format!("{PATH}PO%207%2F2026%3Fx%23y"));
    assert_eq!(url.query(), None);
    // A base URL with a trailing path keeps it.
    assert!(client.read_url("A").as_str().starts_with(&server.uri()));
}

#[tokio::test]
async fn not_found_is_none_and_other_answers_are_errors_that_say_what_came_back() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{PATH}missing")))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            r#"{"timestamp":"t","status":404,"error":"Not Found","message":"no purchase order missing"}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{PATH}refused")))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-correlation-id", "abc")
                .set_body_raw(r#"{"status":403,"error":"Forbidden","message":"no permission"}"#, "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{PATH}garbled")))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>login</html>", "text/html"))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(client.read("missing", Duration::from_secs(2)).await, Ok(None));
    let refused = client.read("refused", Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(refused, ReadError::Refused { .. }), "{refused:?}");
    assert_eq!(refused.to_string(), "AppZen answered HTTP 403 (correlation id abc): Forbidden: no permission");
    let garbled = client.read("garbled", Duration::from_secs(2)).await.unwrap_err();
    assert!(garbled.to_string().contains("not a purchase order"), "{garbled}");
}

#[tokio::test]
async fn an_appzen_that_does_not_answer_is_unreachable() {
    // A port nothing listens on (wiremock keeps a dropped server alive in its pool).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = client_of(format!("http://127.0.0.1:{port}"));
    let error = client.read("P1", Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(error, ReadError::Unreachable(_)), "{error:?}");
}
