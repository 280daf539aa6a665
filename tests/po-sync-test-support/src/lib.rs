//! Test support every crate's tests use (and no production crate): a moto server per test on a free 127.0.0.1
//! port, stopped by its own PID even if the test panics, and po-sync's tables in it ([`moto`], the launcher from
//! po-sync-moto); the EMF checker ([`emf`]) and a metrics capture local to one thread ([`capture`]); and what the
//! tests build again and again: Komet fixtures, a fixed arrival time and the envelope ingest writes at it, a Basic
//! `Authorization` header, environment maps, and reconcile's configuration for in-memory tests.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use po_sync::config::reconcile::{CredentialsSource, ReconcileConfig};
use po_sync::komet::parse_webhook;
use po_sync::message::WebhookEnvelope;
use po_sync::retry::Backoff;
use po_sync_aws::appzen::AppZenClient;
use std::collections::HashMap;
use std::time::Duration;

pub mod capture;
pub mod emf;
pub mod moto;

pub use po_sync_moto::workspace_root;

/// A fixture from `shared/po-sync/tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = workspace_root().join("shared/po-sync/tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Komet's documented sample, verbatim (trailing commas, `subtotal`): two discrepancies.
pub const DOC_SAMPLE: &[u8] = include_bytes!("../../../shared/po-sync/tests/fixtures/komet-doc-sample.json");
/// A PO whose invoices add up, one vendor.
pub const CLEAN_PO: &[u8] = include_bytes!("../../../shared/po-sync/tests/fixtures/komet-clean-po.json");
/// A PO with invoices from two vendors: it reconciles but cannot become one AppZen PO.
pub const SEVERAL_VENDORS: &[u8] = include_bytes!("../../../shared/po-sync/tests/fixtures/komet-several-vendors.json");

/// The arrival time every test envelope carries, so serialised messages are the same bytes on every run.
pub fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 17, 0, 0).single().unwrap_or_default()
}

/// The envelope ingest writes for `body` (a valid Komet body) at [`received_at`].
pub fn envelope(body: &[u8]) -> WebhookEnvelope {
    envelope_at(body, received_at())
}

/// The envelope ingest writes for `body` (a valid Komet body) at `at`.
pub fn envelope_at(body: &[u8], at: DateTime<Utc>) -> WebhookEnvelope {
    let po = parse_webhook(body).unwrap_or_else(|e| panic!("a test body must be a valid Komet webhook: {e}"));
    WebhookEnvelope::new(po, body, at)
}

/// The `Authorization` value Komet sends for Basic credentials.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// An SQS record as Lambda delivers it to a function, with the message id and body the functions read.
pub fn sqs_record(message_id: &str, body: impl Into<String>) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(message_id.to_owned());
    record.body = Some(body.into());
    record
}

/// The event of one SQS batch.
pub fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// An environment for a configuration reader, from `(name, value)` pairs.
pub fn env_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

/// reconcile's configuration against an AppZen at `appzen_url` (a wiremock), with `extra` variables on top and
/// a backoff of milliseconds, so retries do not slow the tests. Queue and table names are placeholders for
/// in-memory ports.
pub fn reconcile_config(appzen_url: &str, extra: &[(&str, &str)]) -> ReconcileConfig {
    let base = [
        ("NOTIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/notifications.fifo"),
        ("LEDGER_TABLE_NAME", "ledger"),
        ("APPZEN_BASE_URL", appzen_url),
        ("APPZEN_API_KEY", "k"),
        ("APPZEN_CUSTOMER_ID", "c"),
        ("APPZEN_CUSTOMER_KEY", "ck"),
    ];
    let env = env_map(&base.iter().chain(extra).copied().collect::<Vec<_>>());
    let mut config = ReconcileConfig::from_env(&env).unwrap_or_else(|e| panic!("test configuration: {e}"));
    if let Some(appzen) = config.appzen_mut() {
        appzen.backoff = Backoff { base: Duration::from_millis(1), max: Duration::from_millis(5) };
    }
    config
}

/// The AppZen client for `config`, whose credentials are inline (as [`reconcile_config`] sets them).
pub fn appzen_client(config: &ReconcileConfig) -> AppZenClient {
    let Some(appzen) = config.appzen() else { panic!("a test configuration without DESTINATION=appzen") };
    let CredentialsSource::Inline(credentials) = &appzen.credentials else {
        panic!("test configurations carry inline AppZen credentials")
    };
    AppZenClient::new(appzen, credentials).unwrap_or_else(|e| panic!("AppZen client: {e}"))
}
