//! What the Exsited client's tests share: a client of a local server, and Exsited's answers.
// Each test binary uses a part of it.
#![allow(dead_code)]

use po_sync_aws::exsited::{ExsitedClient, ExsitedConfig};
use std::time::Duration;
use wiremock::{MockServer, ResponseTemplate};

pub const REDIRECT_URI: &str = "https://po-sync.example.com/callback";

/// A client of `server` with the client credentials `id-1` / `secret-1`.
pub fn client(server: &MockServer) -> ExsitedClient {
    ExsitedClient::new(ExsitedConfig {
        base_url: server.uri(),
        client_id: "id-1".to_owned().into(),
        client_secret: "secret-1".to_owned().into(),
        redirect_uri: REDIRECT_URI.to_owned(),
        request_timeout: Duration::from_secs(2),
    })
    .unwrap()
}

/// The token endpoint's answer: `access`, valid for `expires_in` seconds.
pub fn token(access: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "access_token": access, "refresh_token": "r", "expires_in": expires_in
    }))
}

/// A GET of PO `id`'s answer.
pub fn order(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "purchase_order": {"id": id, "status": "ACTIVE", "total": "1284.81", "lines": [{"uuid": "l-1", "item_id": "CGEN"}]}
    }))
}
