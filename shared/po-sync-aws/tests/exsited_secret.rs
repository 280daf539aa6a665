//! Exsited's client credentials from Secrets Manager (moto): read at start, and read again when the token
//! endpoint (wiremock) refuses them, so a rotated client secret takes effect without a restart; at most once
//! per `RENEWAL_INTERVAL`.

mod common;

use common::{REDIRECT_URI, order, token};
use po_sync::config::reconcile::{ExsitedCredentialsSource, ExsitedDestinationConfig};
use po_sync::exsited::{ExsitedSettings, IdRule};
use po_sync_aws::exsited::{ExsitedClient, ExsitedError, TOKEN_PATH};
use po_sync_moto::MotoServer;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Exsited that takes only the client secret `new`, and answers PO-1 to its token.
async fn exsited_taking_only_the_new_secret() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(body_string_contains(r#""client_secret":"new""#))
        .respond_with(token("t-new", 3600))
        .with_priority(1)
        .mount(&server)
        .await;
    let invalid_client = json!({ "errors": [{ "code": "invalid_client", "message": "Client authentication failed" }] });
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(invalid_client))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/purchase-orders/PO-1"))
        .and(header("authorization", "Bearer t-new"))
        .respond_with(order("PO-1"))
        .mount(&server)
        .await;
    server
}

struct Secret {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl Secret {
    async fn create(aws: &aws_config::SdkConfig, client_secret: &str) -> Secret {
        let client = aws_sdk_secretsmanager::Client::new(aws);
        let created = client
            .create_secret()
            .name("exsited")
            .secret_string(json!({ "client_id": "id-1", "client_secret": client_secret }).to_string())
            .send()
            .await
            .unwrap();
        Secret { client, arn: created.arn().unwrap().to_owned() }
    }

    async fn rotate(&self, client_secret: &str) {
        let value = json!({ "client_id": "id-1", "client_secret": client_secret }).to_string();
        self.client.put_secret_value().secret_id(&self.arn).secret_string(value).send().await.unwrap();
    }

    fn config(&self, server: &MockServer) -> ExsitedDestinationConfig {
        ExsitedDestinationConfig {
            base_url: server.uri(),
            credentials: ExsitedCredentialsSource::Secret { arn: self.arn.clone() },
            redirect_uri: REDIRECT_URI.to_owned(),
            request_timeout: Duration::from_secs(2),
            mapping: ExsitedSettings {
                currency: "USD".into(),
                accounts: IdRule::SameAsKomet,
                items: IdRule::SameAsKomet,
                charges_item_id: "ADDITIONAL_CHARGES".into(),
            },
        }
    }
}

fn token_requests(requests: &[wiremock::Request]) -> usize {
    requests.iter().filter(|r| r.url.path() == TOKEN_PATH).count()
}

#[tokio::test]
async fn a_client_secret_rotated_after_the_start_is_read_again_when_exsited_refuses_the_old_one() {
    let moto = MotoServer::start();
    let aws = moto.sdk_config().await;
    let server = exsited_taking_only_the_new_secret().await;
    let secret = Secret::create(&aws, "old").await;
    let client = ExsitedClient::from_config(&secret.config(&server), &aws).await.unwrap();
    secret.rotate("new").await;

    assert_eq!(client.get("PO-1").await.unwrap().unwrap().id, "PO-1");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(token_requests(&requests), 2, "refused with the old secret, then one token with the new");
    assert_eq!(client.tokens_fetched(), 1);
    assert!(!format!("{client:?}").contains("new"), "no credential in Debug output");
}

#[tokio::test]
async fn a_refused_secret_is_read_again_at_most_once_per_interval() {
    let moto = MotoServer::start();
    let aws = moto.sdk_config().await;
    let server = exsited_taking_only_the_new_secret().await;
    let secret = Secret::create(&aws, "old").await;
    let client = ExsitedClient::from_config(&secret.config(&server), &aws).await.unwrap();

    // Refused; the secret, read again, holds the same credentials.
    let refused = client.get("PO-1").await.unwrap_err();
    assert!(matches!(refused, ExsitedError::CredentialsRefused { status: 400, .. }), "{refused:?}");
    // Fixed now, but within the interval the secret is not read again: still refused.
    secret.rotate("new").await;
    let refused = client.get("PO-1").await.unwrap_err();
    assert!(matches!(refused, ExsitedError::CredentialsRefused { .. }), "{refused:?}");
    assert!(po_sync_aws::exsited::RENEWAL_INTERVAL >= Duration::from_secs(30));
    // A client starting now reads the fixed secret.
    let fresh = ExsitedClient::from_config(&secret.config(&server), &aws).await.unwrap();
    assert_eq!(fresh.get("PO-1").await.unwrap().unwrap().id, "PO-1");
}
