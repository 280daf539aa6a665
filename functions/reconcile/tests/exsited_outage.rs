//! Exsited's outages (DESTINATION=exsited, Exsited a wiremock, the ports in memory): an answer that is no
//! verdict on the PO hands the record back, the outage is recorded under Exsited's own keys and mailed once as
//! `exsited_outage`, and Exsited's next verdict ends it. AppZen's outage records are never touched.

use chrono::Utc;
use po_sync::destination::Destination;
use po_sync::message::{NotificationDetail, NotificationEvent, NotificationKind};
use po_sync::outage::{self, OutageCause, OutageRecord, OutageRules};
use po_sync_aws::ledger::{Ledger, MemoryLedger, Written};
use po_sync_aws::objects::MemoryObjectStore;
use po_sync_aws::queue::{MemoryFifoQueue, MemoryRedelivery};
use po_sync_test_support::{CLEAN_PO, envelope};
use reconcile::{Outcome, Reconciler};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

type MemoryReconciler = Reconciler<MemoryFifoQueue, MemoryLedger, MemoryObjectStore, MemoryRedelivery>;

mod common;
use common::{
    EXSITED_ORDERS_PATH as ORDERS_PATH, EXSITED_TOKEN_PATH as TOKEN_PATH, batch, exsited_accepts, exsited_config,
    exsited_reconciler, failures, later, notifications,
};

/// reconcile for Exsited at `exsited`, a retry schedule of `7s,30s,2m` and `extra` on top.
async fn reconciler(exsited: &MockServer, extra: &[(&str, &str)]) -> MemoryReconciler {
    let env: Vec<(&str, &str)> = [("RETRY_SCHEDULE", "7s,30s,2m")].iter().chain(extra).copied().collect();
    exsited_reconciler(exsited_config(exsited, &env)).await.with_redelivery(MemoryRedelivery::default())
}

/// The clean PO as PO `id`, numbered `P-<id>`.
fn po(id: u64) -> String {
    let text = String::from_utf8(CLEAN_PO.to_vec()).unwrap();
    let body = text.replacen("\"id\": 48213,", &format!("\"id\": {id},"), 1).replacen(
        "\"poNumber\": \"P004410\"",
        &format!("\"poNumber\": \"P-{id}\""),
        1,
    );
    envelope(body.as_bytes()).to_json()
}

/// An SQS record as Lambda delivers it from Exsited's webhook queue: group = PO id, its receive count.
fn record(message_id: &str, po_id: u64, receive_count: u32) -> serde_json::Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("receipt-{message_id}"),
        "body": po(po_id),
        "attributes": {
            "ApproximateReceiveCount": receive_count.to_string(),
            "MessageGroupId": po_id.to_string(),
            "SentTimestamp": "1795280400050",
        },
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:po-sync-exsited-webhooks.fifo",
        "awsRegion": "us-east-1"
    })
}

/// AppZen's own outages, open, as AppZen's reconcile function left them in the same ledger table.
async fn appzen_outages(ledger: &MemoryLedger) -> Vec<OutageRecord> {
    let rules = OutageRules { quiet: chrono::Duration::hours(2), mail_after: chrono::Duration::minutes(15) };
    let mut records = Vec::new();
    for cause in [OutageCause::Credentials, OutageCause::Unavailable] {
        let record = outage::observe(None, Destination::Appzen, cause, Utc::now(), &rules).write.unwrap();
        assert_eq!(ledger.write_outage(&record).await.unwrap(), Written::Stored);
        records.push(record);
    }
    records
}

#[tokio::test]
async fn refused_exsited_credentials_hand_every_record_back_and_are_mailed_once_until_exsited_answers() {
    let exsited = MockServer::start().await;
    // A wrong client secret: Exsited refuses every token request.
    let refused = Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "errors": [{ "code": "INVALID_CLIENT", "message": "invalid client_id or client_secret" }]
        })))
        .mount_as_scoped(&exsited)
        .await;
    let reconciler = reconciler(&exsited, &[]).await;
    let appzen = appzen_outages(reconciler.ledger()).await;

    let report = reconciler.process(&batch(vec![record("a", 1, 1)]).records[0], None).await;
    let Outcome::ExsitedUnavailable(error) = &report.outcome else { panic!("{report:?}") };
    assert_eq!(error.outage_cause(), Some(OutageCause::Credentials), "{error:?}");
    assert!(report.notified.is_empty(), "nothing is mailed about the PO itself: {report:?}");

    let first = batch(vec![record("a", 1, 2), record("b", 2, 1), record("c", 3, 1)]);
    let response = reconciler.handle_batch(first, later()).await;
    assert_eq!(failures(&response), ["a", "b", "c"], "nothing is consumed: the POs are not at fault");
    let second = batch(vec![record("a", 1, 3), record("d", 4, 1)]);
    assert_eq!(failures(&reconciler.handle_batch(second, later()).await), ["a", "d"]);
    let asked: Vec<String> =
        exsited.received_requests().await.unwrap().iter().map(|r| r.url.path().to_owned()).collect();
    assert!(asked.iter().all(|p| p == TOKEN_PATH), "no PO request without a token: {asked:?}");

    let events = notifications(&reconciler);
    assert_eq!(events.len(), 1, "one e-mail for the outage, not one per PO or batch: {events:#?}");
    let event = &events[0];
    assert_eq!((event.kind(), event.destination), (NotificationKind::ExsitedOutage, Destination::Exsited));
    assert_eq!(event.group_id(), "exsited-outage");
    let NotificationDetail::ExsitedOutage { cause, last_failure, exsited: answer, .. } = &event.detail else {
        panic!("{events:#?}")
    };
    assert_eq!((*cause, last_failure.as_str()), (OutageCause::Credentials, "HTTP 401 from the token endpoint"));
    let answer = answer.as_ref().unwrap();
    assert_eq!(answer.http_status, 401);
    assert!(answer.message.as_deref().unwrap().contains("INVALID_CLIENT: invalid client_id or client_secret"));
    let email = po_sync::email::render(event, &po_sync::email::EmailSettings::default()).unwrap();
    assert_eq!(email.subject, "[po-sync] Exsited refuses po-sync's credentials: purchase orders are waiting");
    assert!(email.text.contains("ExsitedSecretArn"), "{}", email.text);

    let outage = reconciler.ledger().outage_of(Destination::Exsited, OutageCause::Credentials).unwrap();
    assert_eq!(outage.po_id, "outage#exsited#credentials");
    assert!(outage.mailed_at.is_some() && outage.ended_at.is_none(), "{outage:?}");
    for id in 1..=4 {
        assert_eq!(reconciler.ledger().entry(id).and_then(|e| e.latest), None, "PO {id} has no final outcome");
    }
    assert_eq!(reconciler.ledger().outage(OutageCause::Credentials).as_ref(), Some(&appzen[0]), "AppZen's untouched");

    // The secret is fixed: the waiting POs go through as they come back, and Exsited's outage is over.
    drop(refused);
    exsited_accepts(&exsited).await;
    let back = batch(vec![record("a", 1, 4), record("b", 2, 2)]);
    assert!(failures(&reconciler.handle_batch(back, later()).await).is_empty());
    for id in [1, 2] {
        let entry = reconciler.ledger().entry(id).unwrap();
        assert_eq!(entry.holds.and_then(|held| held.uuid).as_deref(), Some("PO-1"), "PO {id} is in Exsited");
    }
    let ended = reconciler.ledger().outage_of(Destination::Exsited, OutageCause::Credentials).unwrap();
    assert!(ended.ended_at.is_some(), "{ended:?}");
    assert_eq!(notifications(&reconciler).len(), 1, "no e-mail about the POs either");

    // AppZen's outages are AppZen's: Exsited's verdict ends none of them, and nothing else was written.
    assert_eq!(reconciler.ledger().outage(OutageCause::Credentials).as_ref(), Some(&appzen[0]));
    assert_eq!(reconciler.ledger().outage(OutageCause::Unavailable).as_ref(), Some(&appzen[1]));
    let keys: Vec<String> = reconciler.ledger().outages().into_keys().collect();
    assert_eq!(keys, ["outage#appzen#credentials", "outage#appzen#unavailable", "outage#exsited#credentials"]);
}

#[tokio::test]
async fn a_wrong_exsited_address_is_an_endpoint_outage_mailed_at_once_not_a_refused_po() {
    for status in [404, 302, 405] {
        let exsited = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "access_token": "t", "expires_in": 3600 })))
            .mount(&exsited)
            .await;
        Mock::given(method("GET"))
            .and(path(ORDERS_PATH))
            .respond_with(ResponseTemplate::new(status).insert_header("location", "https://elsewhere.example.com/"))
            .mount(&exsited)
            .await;
        let reconciler = reconciler(&exsited, &[]).await;
        let response = reconciler.handle_batch(batch(vec![record("m", 1, 1)]), later()).await;
        assert_eq!(failures(&response), ["m"], "{status}");
        let kinds: Vec<_> = notifications(&reconciler).iter().map(NotificationEvent::kind).collect();
        assert_eq!(kinds, [NotificationKind::ExsitedOutage], "{status}");
        let outage = reconciler.ledger().outage_of(Destination::Exsited, OutageCause::Endpoint).unwrap();
        assert!(outage.mailed_at.is_some(), "{status}: {outage:?}");
        assert!(reconciler.ledger().outage(OutageCause::Endpoint).is_none(), "{status}: not AppZen's");
    }
}

#[tokio::test]
async fn an_exsited_unavailability_is_mailed_only_once_it_has_lasted_and_a_refusal_of_a_po_ends_it() {
    let exsited = MockServer::start().await;
    let down = Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&exsited)
        .await;
    let patient = reconciler(&exsited, &[]).await;
    assert_eq!(failures(&patient.handle_batch(batch(vec![record("m", 1, 1)]), later()).await), ["m"]);
    assert!(notifications(&patient).is_empty(), "a blip is not mailed (OUTAGE_EMAIL_AFTER 15m)");
    let opened = patient.ledger().outage_of(Destination::Exsited, OutageCause::Unavailable).unwrap();
    assert_eq!((opened.mailed_at, opened.ended_at), (None, None));

    let eager = reconciler(&exsited, &[("OUTAGE_EMAIL_AFTER", "0s")]).await;
    eager.handle_batch(batch(vec![record("m", 1, 1)]), later()).await;
    eager.handle_batch(batch(vec![record("m", 1, 2)]), later()).await;
    let kinds: Vec<_> = notifications(&eager).iter().map(NotificationEvent::kind).collect();
    assert_eq!(kinds, [NotificationKind::ExsitedOutage]);

    // Exsited is back and refuses the PO (a 400): a verdict, so the outage is over and the PO is mailed.
    drop(down);
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "access_token": "t", "expires_in": 3600 })))
        .mount(&exsited)
        .await;
    Mock::given(method("GET"))
        .and(path(ORDERS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "purchase_orders": [] })))
        .mount(&exsited)
        .await;
    Mock::given(method("POST"))
        .and(path(ORDERS_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "errors": [{ "code": "VALIDATION", "message": "account_id SUP-0001 does not exist" }]
        })))
        .mount(&exsited)
        .await;
    assert!(failures(&eager.handle_batch(batch(vec![record("m", 1, 3)]), later()).await).is_empty());
    let kinds: Vec<_> = notifications(&eager).iter().map(NotificationEvent::kind).collect();
    assert_eq!(kinds, [NotificationKind::ExsitedOutage, NotificationKind::ExsitedRejected]);
    let ended = eager.ledger().outage_of(Destination::Exsited, OutageCause::Unavailable).unwrap();
    assert!(ended.ended_at.is_some(), "{ended:?}");
}
