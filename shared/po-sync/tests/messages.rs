//! The queue message and the notification event survive a serde round trip exactly, and refuse what is not theirs.

use po_sync::message::{
    BodyRef, DestinationAnswer, MessageError, NotificationDetail, NotificationEvent, NotificationKind, QueueMessage,
    WebhookEnvelope, body_key, message_type, sha256_hex,
};
use po_sync::reconcile::{Tolerance, reconcile};

#[path = "email_samples.rs"]
mod samples;

use samples::DOC_SAMPLE;

fn envelope() -> WebhookEnvelope {
    samples::envelope(DOC_SAMPLE)
}

#[test]
fn the_envelope_round_trips_with_exact_amounts_and_the_body_digest() {
    let envelope = envelope();
    let json = envelope.to_json();
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
    let json = envelope().to_json();
    let v2 = json.replace(r#""schemaVersion":1"#, r#""schemaVersion":2"#);
    assert_eq!(WebhookEnvelope::from_json(&v2), Err(MessageError::UnsupportedVersion { found: 2, supported: 1 }));
    let event = NotificationEvent::poison("x", "m-1").to_json();
    assert!(matches!(WebhookEnvelope::from_json(&event), Err(MessageError::WrongType { .. })));
    assert!(matches!(WebhookEnvelope::from_json("not json"), Err(MessageError::Malformed(_))));
    let float_total = json.replace(r#""total":60.0"#, r#""total":"60.0""#);
    assert!(matches!(WebhookEnvelope::from_json(&float_total), Err(MessageError::Malformed(_))));
}

#[test]
fn a_mismatch_event_round_trips_and_carries_what_the_e_mail_needs() {
    let envelope = envelope();
    let discrepancies = reconcile(&envelope.po, Tolerance::CENT).discrepancies;
    let detail = NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen: false };
    let event = NotificationEvent::about(&envelope, detail);
    let json = event.to_json();
    // A header, then the kind's own detail, externally tagged.
    assert!(
        json.starts_with(r#"{"type":"po_sync.notification","schemaVersion":2,"webhook":{"po":{"id":12345,"#),
        "{json}"
    );
    assert!(json.contains(r#""detail":{"reconciliationMismatch":{"discrepancies":[{"#), "{json}");
    assert!(
        json.contains(r#""invoice_number":"01-P002272","expected":30.0,"actual":40.0,"difference":10.0"#),
        "{json}"
    );
    let back = NotificationEvent::from_json(&json).unwrap();
    assert_eq!(back, event);
    assert_eq!(back.kind(), NotificationKind::ReconciliationMismatch);
    let po = back.po().unwrap();
    assert_eq!((po.id, po.po_number.as_str(), po.location.as_deref()), (12345, "P002271", Some("Chicago (02)")));
    assert_eq!(po.vendors, vec!["Miami L Vendor (AV)".to_owned()]);
    assert_eq!(back.webhook.as_ref().unwrap().invoice_links.len(), 3);
    assert_eq!(back.links_expire_at().unwrap().to_rfc3339(), "2026-11-21T23:00:00+00:00");
    assert_eq!(back.group_id(), "12345");
}

#[test]
fn rejection_and_poison_events_round_trip() {
    let appzen = DestinationAnswer {
        http_status: 400,
        error: Some("Bad Request".into()),
        message: Some("entity_id is unknown".into()),
        correlation_id: Some("c-1".into()),
    };
    let rejected = NotificationEvent::about(&envelope(), NotificationDetail::AppzenRejected { appzen });
    assert_eq!(NotificationEvent::from_json(&rejected.to_json()).unwrap(), rejected);
    let poison = NotificationEvent::poison("not a po-sync message: expected value at line 1", "m-42");
    let back = NotificationEvent::from_json(&poison.to_json()).unwrap();
    assert_eq!(back, poison);
    assert_eq!(back.group_id(), "unreadable");
}

#[test]
fn the_deduplication_id_is_stable_for_the_same_event_and_differs_otherwise() {
    let envelope = envelope();
    let mismatch = || NotificationDetail::ReconciliationMismatch { discrepancies: vec![], forwarded_to_appzen: false };
    let a = NotificationEvent::about(&envelope, mismatch());
    let b = NotificationEvent::about(&envelope, mismatch());
    let c = NotificationEvent::about(&envelope, NotificationDetail::MappingError { problem: "x".into() });
    assert_eq!(a.deduplication_id(), b.deduplication_id());
    assert_ne!(a.deduplication_id(), c.deduplication_id());
    assert!(a.deduplication_id().len() <= 128, "SQS allows 128 characters");
    // A redelivered record rejected again: AppZen's answer differs (its per-request error code), the event is
    // the same one, and SQS must drop it.
    let rejected = |message: &str| {
        NotificationEvent::about(
            &envelope,
            NotificationDetail::AppzenRejected {
                appzen: DestinationAnswer {
                    http_status: 400,
                    error: Some("Bad Request".into()),
                    message: Some(message.into()),
                    correlation_id: None,
                },
            },
        )
    };
    let (first, again) = (rejected("Error code : 1853114b - no"), rejected("Error code : 2b534e87 - no"));
    assert_ne!(first, again);
    assert_eq!(first.deduplication_id(), again.deduplication_id());
    // Another send of the webhook is another version: its event is another e-mail.
    let later =
        WebhookEnvelope { received_at: envelope.received_at + chrono::Duration::seconds(1), ..envelope.clone() };
    assert_ne!(NotificationEvent::about(&later, mismatch()).deduplication_id(), a.deduplication_id());
    let poison = |problem: &str| NotificationEvent::poison(problem, "m-1").deduplication_id();
    assert_ne!(poison("x"), poison("y"));
    // AppZen's and Exsited's e-mails about one version (each its mapping error, each its cancellation) are two
    // messages: SQS would drop the second for five minutes if they shared the id. AppZen's id is as it was.
    let mapping = || NotificationDetail::MappingError { problem: "x".into() };
    let for_exsited = NotificationEvent { destination: po_sync::destination::Destination::Exsited, ..c.clone() };
    assert_ne!(for_exsited.deduplication_id(), c.deduplication_id());
    assert_eq!(NotificationEvent::about(&envelope, mapping()).deduplication_id(), c.deduplication_id());
    let legacy = format!(
        "mapping_error:{}:{}:{}",
        envelope.po.id,
        envelope.received_at.timestamp_millis(),
        envelope.body_sha256
    );
    assert_eq!(c.deduplication_id(), po_sync::message::sha256_hex(legacy.as_bytes()));
}

#[test]
fn a_queue_body_is_read_as_whichever_message_it_is_and_anything_else_is_explained() {
    let envelope = envelope();
    let event = NotificationEvent::poison("x", "m-1");
    assert_eq!(QueueMessage::from_json(&envelope.to_json()).unwrap(), QueueMessage::Webhook(envelope));
    assert_eq!(QueueMessage::from_json(&event.to_json()).unwrap(), QueueMessage::Notification(event));
    let explain = |json: &str| QueueMessage::from_json(json).unwrap_err().to_string();
    assert_eq!(
        explain(r#"{"type":"something.else"}"#),
        r#"a message of unknown type "something.else"; po-sync reads "po_sync.notification", "komet.po_reconciliation" and "komet.po_reconciliation.ref""#
    );
    assert_eq!(
        explain(r#"{"type":"po_sync.notification","schemaVersion":1,"kind":"mapping_error"}"#),
        "schema version 1 is not supported (this build reads version 2)"
    );
    assert!(explain("not json").starts_with("not a po-sync message"), "{}", explain("not json"));
    assert!(
        explain(r#"{"type":"komet.po_reconciliation","schemaVersion":1,"po":{}}"#).starts_with("not a po-sync message")
    );
}

fn claim_check() -> (WebhookEnvelope, BodyRef) {
    let envelope = envelope().with_send_id("UqZ6tjK4/oAMEJ3w=");
    let key = body_key(envelope.po.id, envelope.deduplication_id());
    let pointer = BodyRef::of(&envelope, "po-sync-archive", key);
    (envelope, pointer)
}

#[test]
fn a_claim_check_round_trips_and_carries_its_envelopes_identity() {
    let (envelope, pointer) = claim_check();
    let json = pointer.to_json();
    assert_eq!(
        json,
        format!(
            r#"{{"type":"komet.po_reconciliation.ref","schemaVersion":1,"poId":12345,"poNumber":"P002271","receivedAt":"2026-11-21T17:00:00Z","bodySha256":"{}","sendId":"UqZ6tjK4/oAMEJ3w=","bucket":"po-sync-archive","key":"bodies/12345/UqZ6tjK4_2FoAMEJ3w_3D.json"}}"#,
            envelope.body_sha256
        )
    );
    assert_eq!(BodyRef::from_json(&json).unwrap(), pointer);
    assert_eq!(message_type(&json).as_deref(), Some("komet.po_reconciliation.ref"));
    assert_eq!((pointer.version(), pointer.deduplication_id()), (envelope.version(), envelope.deduplication_id()));
    assert_eq!(pointer.location(), "s3://po-sync-archive/bodies/12345/UqZ6tjK4_2FoAMEJ3w_3D.json");
    assert!(pointer.names(&envelope));
    // Without a send id (an envelope from before sendId), the body's digest names it, as it deduplicates it.
    let old = self::envelope();
    let old_ref = BodyRef::of(&old, "b", body_key(old.po.id, old.deduplication_id()));
    assert_eq!(old_ref.deduplication_id(), old.body_sha256);
    assert_eq!(old_ref.key, format!("bodies/12345/{}.json", old.body_sha256));
    assert!(!old_ref.to_json().contains("sendId"));
}

#[test]
fn claim_checks_of_another_version_or_type_are_refused_and_keys_never_collide() {
    let (envelope, pointer) = claim_check();
    let json = pointer.to_json();
    let v2 = json.replace(r#""schemaVersion":1"#, r#""schemaVersion":2"#);
    assert_eq!(BodyRef::from_json(&v2), Err(MessageError::UnsupportedVersion { found: 2, supported: 1 }));
    assert!(matches!(BodyRef::from_json(&envelope.to_json()), Err(MessageError::WrongType { .. })));
    assert!(matches!(WebhookEnvelope::from_json(&json), Err(MessageError::WrongType { .. })));
    assert!(matches!(BodyRef::from_json(&json.replace(r#","key":"#, r#","kee":"#)), Err(MessageError::Malformed(_))));
    // Another body under the same PO and send is not the one the claim check names.
    let mut other = envelope.clone();
    other.body_sha256 = sha256_hex(b"other");
    assert!(!pointer.names(&other));
    // Characters a key must not carry are escaped one to one: different ids, different keys.
    assert_eq!(body_key(1, "a/b"), "bodies/1/a_2Fb.json");
    assert_ne!(body_key(1, "a/b"), body_key(1, "a_b"));
    assert_eq!(body_key(1, "a_b"), "bodies/1/a_5Fb.json");
    assert_eq!(body_key(1, ".."), format!("bodies/1/{}.json", sha256_hex(b"..")));
    assert_eq!(body_key(1, &"x".repeat(300)), format!("bodies/1/{}.json", sha256_hex("x".repeat(300).as_bytes())));
}

#[test]
fn a_queue_body_is_read_as_any_of_the_three_messages_in_one_pass() {
    let (envelope, pointer) = claim_check();
    let event = NotificationEvent::poison("x", "m-1");
    assert_eq!(QueueMessage::from_json(&envelope.to_json()).unwrap(), QueueMessage::Webhook(envelope));
    assert_eq!(QueueMessage::from_json(&event.to_json()).unwrap(), QueueMessage::Notification(event));
    let json = pointer.to_json();
    assert_eq!(QueueMessage::from_json(&json).unwrap(), QueueMessage::WebhookRef(pointer));
    let v2 = json.replace(r#""schemaVersion":1"#, r#""schemaVersion":2"#);
    assert_eq!(
        QueueMessage::from_json(&v2).unwrap_err().to_string(),
        "schema version 2 is not supported (this build reads version 1)"
    );
    let broken = r#"{"type":"komet.po_reconciliation.ref","schemaVersion":1,"poId":"x"}"#;
    assert!(QueueMessage::from_json(broken).unwrap_err().to_string().starts_with("not a po-sync message"));
}
