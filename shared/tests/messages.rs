//! The queue message and the notification event survive a serde round trip exactly, and refuse what is not theirs.

use chrono::{TimeZone, Utc};
use po_sync::komet::parse_webhook;
use po_sync::message::{
    AppZenAnswer, MessageError, NotificationEvent, NotificationKind, WebhookEnvelope, message_type, sha256_hex,
};
use po_sync::reconcile::{Tolerance, reconcile};

const DOC_SAMPLE: &[u8] = include_bytes!("fixtures/komet-doc-sample.json");

fn envelope() -> WebhookEnvelope {
    let po = parse_webhook(DOC_SAMPLE).unwrap();
    WebhookEnvelope::new(po, DOC_SAMPLE, Utc.with_ymd_and_hms(2026, 11, 21, 17, 0, 0).unwrap())
}

#[test]
fn the_envelope_round_trips_with_exact_amounts_and_the_body_digest() {
    let envelope = envelope();
    let json = envelope.to_json().unwrap();
    assert!(
        json.starts_with(r#"{"type":"komet.po_reconciliation","schemaVersion":1,"receivedAt":"2026-11-21T17:00:00Z","#),
        "{json}"
    );
    assert!(json.contains(r#""subTotal":60.0,"total":60.0"#), "normalised name, exact number: {json}");
    assert_eq!(envelope.body_sha256, sha256_hex(DOC_SAMPLE));
    assert_eq!(envelope.body_sha256.len(), 64);
    assert_eq!(WebhookEnvelope::from_json(&json).unwrap(), envelope);
    assert_eq!(message_type(&json).as_deref(), Some("komet.po_reconciliation"));
}

#[test]
fn envelopes_of_another_version_or_type_are_refused() {
    let json = envelope().to_json().unwrap();
    let v2 = json.replace(r#""schemaVersion":1"#, r#""schemaVersion":2"#);
    assert_eq!(WebhookEnvelope::from_json(&v2), Err(MessageError::UnsupportedVersion { found: 2, supported: 1 }));
    let event = NotificationEvent::poison("x", "m-1").to_json().unwrap();
    assert!(matches!(WebhookEnvelope::from_json(&event), Err(MessageError::WrongType { .. })));
    assert!(matches!(WebhookEnvelope::from_json("not json"), Err(MessageError::Malformed(_))));
    let float_total = json.replace(r#""total":60.0"#, r#""total":"60.0""#);
    assert!(matches!(WebhookEnvelope::from_json(&float_total), Err(MessageError::Malformed(_))));
}

#[test]
fn a_mismatch_event_round_trips_and_carries_what_the_e_mail_needs() {
    let envelope = envelope();
    let mut event = NotificationEvent::about(NotificationKind::ReconciliationMismatch, &envelope);
    event.discrepancies = reconcile(&envelope.po, Tolerance::CENT).discrepancies;
    let json = event.to_json().unwrap();
    assert!(json.contains(r#""kind":"reconciliation_mismatch""#), "{json}");
    assert!(
        json.contains(r#""invoice_number":"01-P002272","expected":30.0,"actual":40.0,"difference":10.0"#),
        "{json}"
    );
    let back = NotificationEvent::from_json(&json).unwrap();
    assert_eq!(back, event);
    let po = back.po.as_ref().unwrap();
    assert_eq!((po.id, po.po_number.as_str(), po.location.as_deref()), (12345, "P002271", Some("Chicago (02)")));
    assert_eq!(po.vendors, vec!["Miami L Vendor (AV)".to_owned()]);
    assert_eq!(back.invoice_links.len(), 3);
    assert_eq!(back.links_expire_at().unwrap().to_rfc3339(), "2026-11-21T23:00:00+00:00");
    assert_eq!(back.group_id(), "12345");
}

#[test]
fn rejection_and_poison_events_round_trip() {
    let mut rejected = NotificationEvent::about(NotificationKind::AppzenRejected, &envelope());
    rejected.appzen = Some(AppZenAnswer {
        http_status: 400,
        error: Some("Bad Request".into()),
        message: Some("entity_id is unknown".into()),
        correlation_id: Some("c-1".into()),
    });
    assert_eq!(NotificationEvent::from_json(&rejected.to_json().unwrap()).unwrap(), rejected);
    let poison = NotificationEvent::poison("not a po-sync message: expected value at line 1", "m-42");
    let back = NotificationEvent::from_json(&poison.to_json().unwrap()).unwrap();
    assert_eq!(back, poison);
    assert_eq!(back.group_id(), "unreadable");
}

#[test]
fn the_deduplication_id_is_stable_for_the_same_event_and_differs_otherwise() {
    let envelope = envelope();
    let a = NotificationEvent::about(NotificationKind::ReconciliationMismatch, &envelope);
    let b = NotificationEvent::about(NotificationKind::ReconciliationMismatch, &envelope);
    let c = NotificationEvent::about(NotificationKind::MappingError, &envelope);
    assert_eq!(a.deduplication_id(), b.deduplication_id());
    assert_ne!(a.deduplication_id(), c.deduplication_id());
    assert!(a.deduplication_id().len() <= 128, "SQS allows 128 characters");
}
