//! One notification event of each kind, built from the shared fixtures exactly as reconcile and notify build
//! them. Used by the golden rendering tests (`email_rendering.rs`) and by `examples/render-email.rs`, which
//! writes the reviewed HTML samples under `docs/`.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use po_sync::appzen::{MappingSettings, map_purchase_order};
use po_sync::email::dead_lettered;
use po_sync::komet::parse_webhook;
use po_sync::message::{DestinationAnswer, NotificationDetail, NotificationEvent, WebhookEnvelope};
use po_sync::outage::OutageCause;
use po_sync::reconcile::{Tolerance, reconcile};

pub const DOC_SAMPLE: &[u8] = include_bytes!("fixtures/komet-doc-sample.json");
pub const CLEAN_PO: &[u8] = include_bytes!("fixtures/komet-clean-po.json");
pub const SEVERAL_VENDORS: &[u8] = include_bytes!("fixtures/komet-several-vendors.json");

pub fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 17, 0, 0).unwrap()
}

pub fn envelope(body: &[u8]) -> WebhookEnvelope {
    WebhookEnvelope::new(parse_webhook(body).unwrap(), body, received_at())
}

/// Komet's documented sample (verbatim): two discrepancies, not forwarded (the default `block` policy).
pub fn mismatch() -> NotificationEvent {
    let envelope = envelope(DOC_SAMPLE);
    let discrepancies = reconcile(&envelope.po, Tolerance::CENT).discrepancies;
    assert_eq!(discrepancies.len(), 2, "the doc sample has two discrepancies");
    NotificationEvent::about(
        &envelope,
        NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen: false },
    )
}

/// The clean PO, refused by AppZen with a 400 as its API document shows errors.
pub fn appzen_rejected() -> NotificationEvent {
    let appzen = DestinationAnswer {
        http_status: 400,
        error: Some("Bad Request".to_owned()),
        message: Some("supplier_id V-0042 does not exist for entity 2".to_owned()),
        correlation_id: Some("7f9c2b1e-5a43-4d7e-9c1a-2f0e8b6d4a10".to_owned()),
    };
    NotificationEvent::about(&envelope(CLEAN_PO), NotificationDetail::AppzenRejected { appzen })
}

/// The clean PO, refused by Exsited (its error shape, as reconcile words it).
pub fn exsited_rejected() -> NotificationEvent {
    let exsited = DestinationAnswer {
        http_status: 400,
        error: None,
        message: Some(
            "Exsited answered HTTP 400: UNKNOWN_ACCOUNT: purchase_order.account_id: no supplier account SUP-0404"
                .to_owned(),
        ),
        correlation_id: None,
    };
    NotificationEvent::about(&envelope(CLEAN_PO), NotificationDetail::ExsitedRejected { exsited })
        .at(po_sync::destination::Destination::Exsited)
}

/// A newer version of the clean PO, which is cancelled in Exsited.
pub fn cancelled_at_destination() -> NotificationEvent {
    let detail = NotificationDetail::CancelledAtDestination { id: Some("PO-LHROM9-0024".to_owned()), operator: None };
    NotificationEvent::about(&envelope(CLEAN_PO), detail).at(po_sync::destination::Destination::Exsited)
}

/// Two vendors on one PO: reconcile's mapping error, with the mapper's own words as the detail.
pub fn mapping_error() -> NotificationEvent {
    let envelope = envelope(SEVERAL_VENDORS);
    let error = map_purchase_order(&envelope.po, &MappingSettings::default()).unwrap_err();
    NotificationEvent::about(&envelope, NotificationDetail::MappingError { problem: error.to_string() })
}

/// The doc sample, dead-lettered after five deliveries (`ApproximateReceiveCount` 6 on the DLQ record) and
/// parked by notify, as the deployed stack (which sets `PARKED_QUEUE_URL`) does.
pub fn dead_lettered_webhook() -> NotificationEvent {
    let mut event = dead_lettered(&envelope(DOC_SAMPLE), Some(5), "0b6c1f9e-3d5a-4c8b-9e2f-7a1d4b6c8e01");
    event.mark_parked();
    event
}

/// What notify builds for a body that is not a po-sync message.
pub fn poison_message() -> NotificationEvent {
    NotificationEvent::poison(
        "a message that is not a po-sync message (11 bytes, not JSON with a \"type\")",
        "5d3e2c1b-4a59-4f68-8e7d-6c5b4a392817",
    )
}

/// AppZen refusing po-sync's credentials: one e-mail for the whole outage, as reconcile raises it.
pub fn appzen_outage() -> NotificationEvent {
    let appzen = DestinationAnswer {
        http_status: 401,
        error: Some("Unauthorized".to_owned()),
        message: Some("Error code : 9a1b77c2 - The customer key is missing or invalid".to_owned()),
        correlation_id: Some("3e8d1c2a-9b7f-4e6d-8a5c-1f2e3d4c5b6a".to_owned()),
    };
    NotificationEvent::outage(OutageCause::Credentials, received_at(), "HTTP 401", Some(appzen))
}

/// Exsited refusing po-sync's OAuth client credentials: one e-mail for the whole outage, as reconcile raises it
/// (Exsited's answer worded as for a refusal).
pub fn exsited_outage() -> NotificationEvent {
    let exsited = DestinationAnswer {
        http_status: 401,
        error: None,
        message: Some("Exsited answered HTTP 401: INVALID_CLIENT: invalid client_id or client_secret".to_owned()),
        correlation_id: None,
    };
    NotificationEvent::outage_at(
        po_sync::destination::Destination::Exsited,
        OutageCause::Credentials,
        received_at(),
        "HTTP 401",
        Some(exsited),
    )
}

/// Every sample, named as its golden and docs files are.
pub fn all() -> Vec<(&'static str, NotificationEvent)> {
    vec![
        ("reconciliation-mismatch", mismatch()),
        ("appzen-rejected", appzen_rejected()),
        ("exsited-rejected", exsited_rejected()),
        ("cancelled-at-destination", cancelled_at_destination()),
        ("mapping-error", mapping_error()),
        ("dead-lettered", dead_lettered_webhook()),
        ("poison-message", poison_message()),
        ("appzen-outage", appzen_outage()),
        ("exsited-outage", exsited_outage()),
    ]
}

#[test]
fn there_is_one_sample_per_kind() {
    let mut kinds: Vec<&str> = all().iter().map(|(_, event)| event.kind().as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "appzen_outage",
            "appzen_rejected",
            "cancelled_at_destination",
            "dead_lettered",
            "exsited_outage",
            "exsited_rejected",
            "mapping_error",
            "poison_message",
            "reconciliation_mismatch"
        ]
    );
}
