//! Helpers the reconcile integration tests share (`mod common;` in each); AppZen is a wiremock server.

use po_sync::appzen::UPSERT_PATH;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// AppZen answering every upsert with success.
pub async fn accept_everything(appzen: &MockServer) {
    Mock::given(method("POST"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "uuid": "uuid-1", "status": "UPDATED" })))
        .mount(appzen)
        .await;
}
