//! The operator CLI against a real moto server, through the real SDK: resources from a CloudFormation stack and
//! from flags, `status`, `po`, `replay`, `redrive` (the copy fallback, as moto has no StartMessageMoveTask), and
//! the built binary's wiring.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::{DateTime, Duration, TimeZone, Utc};
use po_sync::destination::Destination;
use po_sync::history::{Attempt, AttemptOutcome};
use po_sync::komet::parse_webhook;
use po_sync::ledger::{DestinationHolds, LedgerEntry, LedgerOutcome, SettledVersion};
use po_sync::message::{BodyRef, WebhookEnvelope, body_key, kept_key, sha256_hex};
use po_sync_admin::redrive::{Fate, Method, RedriveOptions, redrive, snapshot};
use po_sync_admin::{Clients, Error, Resource, Resources, history, po, replay, status};
use po_sync_aws::ledger::{DynamoHistory, DynamoLedger, Ledger, Written};
use po_sync_test_support::fixture;
use po_sync_test_support::moto::{MotoServer, create_fifo_queue};
use std::process::Command;
use std::time::Duration as StdDuration;

const TABLE: &str = "po-sync-ledger";
const BUCKET: &str = "t-archive";
const HISTORY: &str = "t-history";

/// A po-sync-shaped set of queues and the ledger table in moto, named by flags.
async fn deploy(clients: &Clients) -> Resources {
    let sqs = &clients.sqs;
    let parked = create_fifo_queue(sqs, "t-webhooks-parked.fifo", None, None).await.unwrap();
    let dlq = create_fifo_queue(sqs, "t-webhooks-dlq.fifo", Some((&parked, 3)), Some(30)).await.unwrap();
    let webhooks = create_fifo_queue(sqs, "t-webhooks.fifo", Some((&dlq, 3)), Some(30)).await.unwrap();
    let notification_dlq = create_fifo_queue(sqs, "t-notifications-dlq.fifo", None, None).await.unwrap();
    let notifications =
        create_fifo_queue(sqs, "t-notifications.fifo", Some((&notification_dlq, 3)), None).await.unwrap();
    clients
        .dynamodb
        .create_table()
        .table_name(TABLE)
        .key_schema(KeySchemaElement::builder().attribute_name("poId").key_type(KeyType::Hash).build().unwrap())
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("poId")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    po_sync_test_support::moto::create_history_table(&clients.dynamodb, HISTORY).await.unwrap();
    clients.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    Resources::default()
        .with(Resource::WebhookQueue, webhooks)
        .with(Resource::WebhookDeadLetterQueue, dlq)
        .with(Resource::ParkedQueue, parked)
        .with(Resource::NotificationQueue, notifications)
        .with(Resource::NotificationDeadLetterQueue, notification_dlq)
        .with(Resource::LedgerTable, TABLE)
        .with(Resource::HistoryTable, HISTORY)
        .with(Resource::ArchiveBucket, BUCKET)
}

async fn start() -> (MotoServer, Clients) {
    let moto = MotoServer::start();
    let clients = Clients::new(&moto.sdk_config().await);
    (moto, clients)
}

fn url(resources: &Resources, resource: Resource) -> String {
    resources.get(resource).unwrap().to_owned()
}

async fn send(clients: &Clients, queue: &str, body: &str, group: &str, dedup: &str) {
    clients
        .sqs
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .message_group_id(group)
        .message_deduplication_id(dedup)
        .send()
        .await
        .unwrap();
}

/// Everything on a queue, received and deleted: (body, group, deduplication id).
async fn drain(clients: &Clients, queue: &str) -> Vec<(String, String, String)> {
    let mut drained = Vec::new();
    loop {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        if received.messages().is_empty() {
            return drained;
        }
        for m in received.messages() {
            let attribute = |name| m.attributes().and_then(|a| a.get(&name)).cloned().unwrap_or_default();
            drained.push((
                m.body().unwrap().to_owned(),
                attribute(MessageSystemAttributeName::MessageGroupId),
                attribute(MessageSystemAttributeName::MessageDeduplicationId),
            ));
            clients
                .sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, second).unwrap()
}

/// A ledger entry as reconcile leaves it after upserting the version received at `received_at`.
fn upserted(po_id: u64, po_number: &str, received_at: DateTime<Utc>, sha: &str, revision: u64) -> LedgerEntry {
    let settled = received_at + Duration::seconds(2);
    LedgerEntry {
        po_id: po_id.to_string(),
        po_number: po_number.to_owned(),
        revision,
        latest: Some(SettledVersion {
            version: received_at.timestamp_millis(),
            sequence: None,
            received_at,
            body_sha256: sha.to_owned(),
            sqs_message_id: "0b0c1e6a-reconcile".to_owned(),
            outcome: LedgerOutcome::Upserted,
            settled_at: settled,
        }),
        holds: Some(DestinationHolds {
            version: received_at.timestamp_millis(),
            sequence: None,
            body_sha256: sha.to_owned(),
            uuid: Some("5f0c2d7e-appzen".to_owned()),
            status: Some("CREATED".to_owned()),
            http_status: 201,
            upserted_at: settled,
        }),
        claim: None,
        notified: None,
        cancelled: None,
        updated_at: settled,
    }
}

/// An envelope of `body` received at `received_at`, parked as notify parks it (group = PO id, deduplication id =
/// the dead letter's message id, here `dead-<send>`). Returns (envelope, the parked body).
async fn park(
    clients: &Clients,
    resources: &Resources,
    body: &[u8],
    received_at: DateTime<Utc>,
    send: &str,
) -> (WebhookEnvelope, String) {
    let envelope = WebhookEnvelope::new(parse_webhook(body).unwrap(), body, received_at).with_send_id(send);
    let json = envelope.to_json();
    let parked = url(resources, Resource::ParkedQueue);
    self::send(clients, &parked, &json, &envelope.po.id.to_string(), &format!("dead-{send}")).await;
    (envelope, json)
}

#[tokio::test]
async fn resources_come_from_a_cloudformation_stack_and_flags_override_them() {
    let (_moto, clients) = start().await;
    let queue = |name: &str, dlq: Option<&str>| {
        let mut properties = serde_json::json!({ "QueueName": name, "FifoQueue": true });
        if let Some(dlq) = dlq {
            properties["RedrivePolicy"] =
                serde_json::json!({ "deadLetterTargetArn": { "Fn::GetAtt": [dlq, "Arn"] }, "maxReceiveCount": 3 });
        }
        serde_json::json!({ "Type": "AWS::SQS::Queue", "Properties": properties })
    };
    let template = serde_json::json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "WebhookParkedQueue": queue("cf-webhooks-parked.fifo", None),
            "WebhookDeadLetterQueue": queue("cf-webhooks-dlq.fifo", Some("WebhookParkedQueue")),
            "WebhookQueue": queue("cf-webhooks.fifo", Some("WebhookDeadLetterQueue")),
            "NotificationDeadLetterQueue": queue("cf-notifications-dlq.fifo", None),
            "NotificationQueue": queue("cf-notifications.fifo", Some("NotificationDeadLetterQueue")),
            "LedgerTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": "cf-ledger",
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{ "AttributeName": "poId", "AttributeType": "S" }],
                    "KeySchema": [{ "AttributeName": "poId", "KeyType": "HASH" }]
                }
            },
            "HistoryTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": "cf-history",
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        { "AttributeName": "poId", "AttributeType": "S" },
                        { "AttributeName": "attemptKey", "AttributeType": "S" }
                    ],
                    "KeySchema": [
                        { "AttributeName": "poId", "KeyType": "HASH" },
                        { "AttributeName": "attemptKey", "KeyType": "RANGE" }
                    ]
                }
            },
            "ArchiveBucket": { "Type": "AWS::S3::Bucket", "Properties": { "BucketName": "cf-archive" } }
        },
        "Outputs": {
            "WebhookQueueUrl": { "Value": { "Ref": "WebhookQueue" } },
            "WebhookDeadLetterQueueUrl": { "Value": { "Ref": "WebhookDeadLetterQueue" } },
            "WebhookParkedQueueUrl": { "Value": { "Ref": "WebhookParkedQueue" } },
            "NotificationQueueUrl": { "Value": { "Ref": "NotificationQueue" } },
            "NotificationDeadLetterQueueUrl": { "Value": { "Ref": "NotificationDeadLetterQueue" } },
            "LedgerTableName": { "Value": { "Ref": "LedgerTable" } },
            "HistoryTableName": { "Value": { "Ref": "HistoryTable" } },
            "ReconcileEventSourceMappingId": { "Value": "cf-mapping-uuid" },
            "ReconcileFunctionName": { "Value": "cf-reconcile" },
            "ReconcileExsitedFunctionName": { "Value": "cf-reconcile-exsited" },
            "ArchiveBucketName": { "Value": { "Ref": "ArchiveBucket" } }
        }
    });
    clients
        .cloudformation
        .create_stack()
        .stack_name("po-sync-cf")
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();

    let all = Resource::ALL;
    let resolved = Resources::resolve(&clients.cloudformation, "po-sync-cf", Resources::default(), &all).await.unwrap();
    for (resource, name) in [
        (Resource::WebhookQueue, "/cf-webhooks.fifo"),
        (Resource::WebhookDeadLetterQueue, "cf-webhooks-dlq.fifo"),
        (Resource::ParkedQueue, "cf-webhooks-parked.fifo"),
        (Resource::NotificationQueue, "cf-notifications.fifo"),
        (Resource::NotificationDeadLetterQueue, "cf-notifications-dlq.fifo"),
    ] {
        assert!(resolved.get(resource).unwrap().ends_with(name), "{resource:?}: {resolved:?}");
    }
    assert_eq!(resolved.get(Resource::LedgerTable), Some("cf-ledger"));
    assert_eq!(resolved.get(Resource::HistoryTable), Some("cf-history"));
    assert_eq!(resolved.get(Resource::ReconcileEventSource), Some("cf-mapping-uuid"));
    assert_eq!(resolved.get(Resource::ReconcileFunction), Some("cf-reconcile"));
    assert_eq!(resolved.get(Resource::ReconcileExsitedFunction), Some("cf-reconcile-exsited"));
    assert_eq!(resolved.get(Resource::ArchiveBucket), Some("cf-archive"));

    // The stack's resources work: its queues through `status`, its ledger table through `po`.
    let report = status::status(&clients, &resolved).await.unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.queues[0].queue, "cf-webhooks.fifo");
    let report = po::po(&clients, &resolved, 1).await.unwrap();
    assert!(report.answer.starts_with("no record"), "{}", report.answer);

    // A flag overrides its output, the others still come from the stack.
    let given = Resources::default().with(Resource::LedgerTable, "other-ledger");
    let mixed = Resources::resolve(&clients.cloudformation, "po-sync-cf", given, &all).await.unwrap();
    assert_eq!(mixed.get(Resource::LedgerTable), Some("other-ledger"));
    assert_eq!(mixed.get(Resource::WebhookQueue), resolved.get(Resource::WebhookQueue));

    // A stack without an output: the error names the output and the flag.
    let partial = serde_json::json!({
        "Resources": { "Q": queue("cf-only.fifo", None) },
        "Outputs": { "WebhookQueueUrl": { "Value": { "Ref": "Q" } } }
    });
    clients
        .cloudformation
        .create_stack()
        .stack_name("partial")
        .template_body(partial.to_string())
        .send()
        .await
        .unwrap();
    let error = Resources::resolve(&clients.cloudformation, "partial", Resources::default(), &[Resource::ParkedQueue])
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Usage(_)) && error.exit_code() == 2);
    assert!(message.contains("WebhookParkedQueueUrl") && message.contains("--parked-queue-url"), "{message}");

    // No such stack: the error says so and how to do without it.
    let error = Resources::resolve(&clients.cloudformation, "nope", Resources::default(), &[Resource::LedgerTable])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"nope\"") && error.contains("--stack") && error.contains("--ledger-table"), "{error}");
}

#[tokio::test]
async fn flags_that_name_everything_needed_leave_the_stack_unread() {
    let (_moto, clients) = start().await;
    let given = Resources::default().with(Resource::WebhookQueue, "http://q").with(Resource::LedgerTable, "t");
    // There is no stack "absent": resolving would fail if it were read.
    let resolved = Resources::resolve(
        &clients.cloudformation,
        "absent",
        given.clone(),
        &[Resource::WebhookQueue, Resource::LedgerTable],
    )
    .await
    .unwrap();
    assert_eq!(resolved, given);
    assert!(Resources::resolve(&clients.cloudformation, "absent", given, &[Resource::ParkedQueue]).await.is_err());
}

#[tokio::test]
async fn status_counts_visible_and_in_flight_messages_and_explains_a_missing_age() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let webhooks = url(&resources, Resource::WebhookQueue);
    for group in ["1", "2", "3"] {
        send(&clients, &webhooks, "{}", group, group).await;
    }
    let received = clients.sqs.receive_message().queue_url(&webhooks).max_number_of_messages(1).send().await.unwrap();
    assert_eq!(received.messages().len(), 1);
    send(&clients, &url(&resources, Resource::ParkedQueue), "{}", "9", "9").await;

    let report = status::status(&clients, &resources).await.unwrap();
    let rows: Vec<(&str, Option<u64>, Option<u64>)> =
        report.queues.iter().map(|q| (q.queue.as_str(), q.visible, q.in_flight)).collect();
    assert_eq!(
        rows,
        [
            ("t-webhooks.fifo", Some(2), Some(1)),
            ("t-webhooks-dlq.fifo", Some(0), Some(0)),
            ("t-webhooks-parked.fifo", Some(1), Some(0)),
            ("t-notifications.fifo", Some(0), Some(0)),
            ("t-notifications-dlq.fifo", Some(0), Some(0)),
        ]
    );
    assert!(report.is_complete());
    // moto's CloudWatch has no SQS metrics: every age is n/a, explained once.
    assert!(report.queues.iter().all(|q| q.oldest_age_seconds.is_none()));
    // (moto 5.2.5 does not serve the CBOR protocol of aws-sdk-cloudwatch; either reason is given in one note.)
    let note = report.age_note.clone().unwrap();
    assert!(note.starts_with("n/a: ") && note.contains("CloudWatch"), "{note}");
    assert!(note.len() < 400, "a short reason, not a dump of the response: {note}");
    let text = report.to_string();
    assert!(text.contains("n/a*") && text.matches("* n/a:").count() == 1, "{text}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["queues"][0]["inFlight"], 1);
    assert_eq!(json["queues"][0]["oldestAgeSeconds"], serde_json::Value::Null);
}

/// Keeps `body` as ingest keeps it: under the PO's prefix and the version received at `received_at`.
async fn keep(clients: &Clients, body: &[u8], received_at: DateTime<Utc>, send: &str) -> String {
    let po_id = parse_webhook(body).unwrap().id;
    let key = kept_key(po_id, received_at, send);
    clients.s3.put_object().bucket(BUCKET).key(&key).body(body.to_vec().into()).send().await.unwrap();
    key
}

#[tokio::test]
async fn replay_since_sends_again_exactly_the_held_versions_of_the_window_oldest_first() {
    use po_sync_admin::replay_window::{Window, replay_window};
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let history = DynamoHistory::new(clients.dynamodb.clone(), HISTORY, Duration::days(90));
    let clean = fixture("komet-clean-po.json"); // PO 48213
    let sample = fixture("komet-doc-sample.json"); // another PO
    let sample_id = parse_webhook(&sample).unwrap().id;
    // Before the window: a held version of 48213. In the window: 48213 upserted, then held; the sample held.
    for (body, second, outcome) in [
        (&clean, 1, AttemptOutcome::Held),
        (&clean, 10, AttemptOutcome::Upserted),
        (&clean, 20, AttemptOutcome::Held),
        (&sample, 15, AttemptOutcome::Held),
    ] {
        keep(&clients, body, at(second), &format!("req-{second}")).await;
        let po = parse_webhook(body).unwrap();
        let attempt = Attempt::new(po.id, &po.po_number, at(second).timestamp_millis(), at(second + 1), outcome);
        history.record(&attempt).await.unwrap();
    }
    let webhooks = url(&resources, Resource::WebhookQueue);
    let window = Window { since: at(5), until: Some(at(30)), outcomes: vec![AttemptOutcome::Held] };

    let mut lines = Vec::new();
    let dry =
        replay_window(&clients, &resources, window.clone(), true, &mut |l| lines.push(l.to_owned())).await.unwrap();
    assert_eq!((dry.in_window, dry.other_outcome, dry.replayed.len()), (3, 1, 2));
    assert!(drain(&clients, &webhooks).await.is_empty(), "a dry run sends nothing");

    lines.clear();
    let report = replay_window(&clients, &resources, window, false, &mut |l| lines.push(l.to_owned())).await.unwrap();
    assert!(report.is_success(), "{report}");
    let sent: Vec<(u64, i64)> = report.replayed.iter().map(|r| (r.report.po_id, r.report.version)).collect();
    assert_eq!(sent, [(sample_id, at(15).timestamp_millis()), (48213, at(20).timestamp_millis())], "oldest first");
    assert_eq!(lines.len(), 2, "a progress line per version: {lines:?}");
    assert!(lines[1].starts_with("2 of 2: PO 48213 version 2026-11-22T09:00:20.000Z"), "{lines:?}");
    let queued = drain(&clients, &webhooks).await;
    let versions: Vec<(String, i64, bool)> = queued
        .iter()
        .map(|(body, group, _)| {
            let envelope = WebhookEnvelope::from_json(body).unwrap();
            (group.clone(), envelope.version(), envelope.replay)
        })
        .collect();
    assert_eq!(
        versions,
        [
            (sample_id.to_string(), at(15).timestamp_millis(), true),
            ("48213".to_owned(), at(20).timestamp_millis(), true)
        ]
    );
    // Each replay is in its PO's history; still held, so a second run would send them again until reconcile
    // takes them (the replay itself is not an outcome).
    let attempts = history.list(48213, 10).await.unwrap();
    assert_eq!(attempts[0].outcome, AttemptOutcome::Replayed);
    let text = report.to_string();
    assert!(text.starts_with("3 kept webhook(s) received from 2026-11-22T09:00:05.000Z until 2026-11-22T09:00:30.000Z whose last outcome is held; replayed 2, 0 failed, 1 left out by their outcome"), "{text}");
}

#[tokio::test]
async fn history_lists_the_kept_versions_and_replay_sends_one_again_with_its_version() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let a = fixture("komet-clean-po.json");
    let mut edited: serde_json::Value = serde_json::from_slice(&a).unwrap();
    edited["arrivalDate"] = "2026-02-12".into();
    let b = serde_json::to_vec(&edited).unwrap();
    keep(&clients, &a, at(1), "req-a").await;
    keep(&clients, &b, at(2), "req-b").await;
    // Another PO's and a stray object do not mix in.
    keep(&clients, &fixture("komet-doc-sample.json"), at(3), "req-other").await;
    clients
        .s3
        .put_object()
        .bucket(BUCKET)
        .key("webhooks/48213/notes.txt")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), TABLE);
    ledger.write(&upserted(48213, "P004410", at(1), &sha256_hex(&a), 1)).await.unwrap();
    // reconcile's attempts: version a retried once (AppZen down), then upserted; version b not yet tried.
    let history_table = DynamoHistory::new(clients.dynamodb.clone(), HISTORY, Duration::days(90));
    for (second, outcome) in [(5, AttemptOutcome::Retried), (9, AttemptOutcome::Upserted)] {
        let attempt = Attempt {
            sqs_message_id: Some(format!("m-{second}")),
            ..Attempt::new(48213, "P004410", at(1).timestamp_millis(), at(second), outcome)
        };
        history_table.record(&attempt).await.unwrap();
    }
    history_table.record(&Attempt::new(999, "P999", 1, at(7), AttemptOutcome::Held)).await.unwrap();

    let report = history::history(&clients, &resources, 48213).await.unwrap();
    let attempts: Vec<(&str, AttemptOutcome)> =
        report.attempts.iter().map(|a| (a.sqs_message_id.as_deref().unwrap(), a.outcome)).collect();
    assert_eq!(attempts, [("m-9", AttemptOutcome::Upserted), ("m-5", AttemptOutcome::Retried)]);
    let outcomes: Vec<&[AttemptOutcome]> = report.versions.iter().map(|v| v.outcomes.as_slice()).collect();
    assert_eq!(outcomes, [&[][..], &[AttemptOutcome::Upserted, AttemptOutcome::Retried][..]]);
    let seen: Vec<(i64, Vec<&str>, u64)> =
        report.versions.iter().map(|v| (v.kept.version, v.ledger.clone(), v.bytes)).collect();
    assert_eq!(
        seen,
        [
            (at(2).timestamp_millis(), vec!["pending"], b.len() as u64),
            (at(1).timestamp_millis(), vec!["upserted", "appzen_holds"], a.len() as u64),
        ]
    );
    let text = report.to_string();
    assert!(text.starts_with("PO 48213 (P004410): 2 version(s) kept in s3://t-archive/webhooks/48213/"), "{text}");
    assert!(text.contains("2026-11-22T09:00:02.000Z") && text.contains("req-b"), "{text}");

    // A dry run reads and validates the latest, and sends nothing.
    let webhooks = url(&resources, Resource::WebhookQueue);
    let dry = replay::replay_kept(&clients, &resources, 48213, replay::Pick::Latest, true, false).await.unwrap();
    assert_eq!((dry.version, dry.sqs_message_id.as_deref(), dry.kept), (at(2).timestamp_millis(), None, true));
    assert!(dry.to_string().starts_with("would queue (dry run) PO P004410 (id 48213) with the version it had"));
    assert!(drain(&clients, &webhooks).await.is_empty());

    // A chosen version is sent with that version, marked as a replay, byte for byte the kept body.
    let sent =
        replay::replay_kept(&clients, &resources, 48213, replay::Pick::Version(at(1).timestamp_millis()), false, false)
            .await
            .unwrap();
    assert_eq!(sent.source, format!("s3://t-archive/{}", kept_key(48213, at(1), "req-a")));
    let queued = drain(&clients, &webhooks).await;
    assert_eq!(queued.len(), 1);
    let envelope = WebhookEnvelope::from_json(&queued[0].0).unwrap();
    assert!(envelope.replay);
    assert_eq!((envelope.received_at, envelope.body_sha256.as_str()), (at(1), sha256_hex(&a).as_str()));
    assert_eq!((queued[0].1.as_str(), queued[0].2.as_str()), ("48213", sent.send_id.as_str()));
    // ...and recorded in the PO's history, newest first.
    assert_eq!(sent.history.as_deref(), Some("recorded"));
    let after = history::history(&clients, &resources, 48213).await.unwrap();
    let newest = &after.attempts[0];
    assert_eq!((newest.outcome, newest.version), (AttemptOutcome::Replayed, at(1).timestamp_millis()));
    assert_eq!(newest.sqs_message_id, sent.sqs_message_id);
    assert!(after.to_string().contains("replayed"), "{after}");

    // A version that is not kept: the error says how to find the kept ones.
    let error =
        replay::replay_kept(&clients, &resources, 48213, replay::Pick::Version(5), false, false).await.unwrap_err();
    assert!(matches!(error, Error::Usage(_)) && error.to_string().contains("history 48213"), "{error}");
    let error = replay::replay_kept(&clients, &resources, 999, replay::Pick::Latest, false, false).await.unwrap_err();
    assert!(error.to_string().contains("no kept body of any version"), "{error}");
}

#[tokio::test]
async fn a_kept_body_too_large_for_sqs_is_replayed_through_a_claim_check() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    // Within the reader's limits (1,000 invoices, 1,024-character links), over SQS's 1 MiB as an envelope.
    let invoice = format!(
        r#"{{"invoiceNumber": "I", "invoiceAmount": 1, "file": "https://files.kometsales.com/{}", "purchaseOrderItems": [{{"totalCost": 1}}]}}"#,
        "x".repeat(990)
    );
    let body = format!(
        r#"{{"id": 7, "poNumber": "P7", "total": 1000, "vendorInvoices": [{}]}}"#,
        vec![invoice; 1_000].join(",")
    );
    keep(&clients, body.as_bytes(), at(4), "req-big").await;
    let sent = replay::replay_kept(&clients, &resources, 7, replay::Pick::Latest, false, false).await.unwrap();
    let queued = drain(&clients, &url(&resources, Resource::WebhookQueue)).await;
    let pointer = BodyRef::from_json(&queued[0].0).expect("a claim check");
    assert_eq!(Some(pointer.location()), sent.claim_check);
    assert_eq!(pointer.key, body_key(7, &sent.send_id));
    let stored = clients.s3.get_object().bucket(BUCKET).key(&pointer.key).send().await.unwrap();
    let stored = stored.body.collect().await.unwrap().into_bytes();
    let envelope = WebhookEnvelope::from_json(std::str::from_utf8(&stored).unwrap()).unwrap();
    assert!(pointer.names(&envelope) && envelope.replay);
    assert_eq!(envelope.received_at, at(4));
}

#[tokio::test]
async fn po_reports_a_missing_po_and_a_written_entry() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;

    let missing = po::po(&clients, &resources, 123).await.unwrap();
    assert_eq!(missing.entry, None);
    assert!(missing.answer.starts_with("no record: po-sync has never processed PO 123"), "{}", missing.answer);

    let sha = sha256_hex(b"body");
    let entry = upserted(48213, "P004410", at(1), &sha, 1);
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), TABLE);
    assert_eq!(ledger.write(&entry).await.unwrap(), Written::Stored);
    let report = po::po(&clients, &resources, 48213).await.unwrap();
    assert_eq!(report.entry.as_ref(), Some(&entry));
    assert_eq!(report.answer, "AppZen holds the latest version Komet sent (upserted 2026-11-22T09:00:03Z)");
    let text = report.to_string();
    for expected in [
        "PO 48213 (PO number P004410)",
        "2026-11-22T09:00:01.000Z",
        "upserted, settled",
        &sha[..12],
        "5f0c2d7e-appzen",
        "CREATED (HTTP 201)",
        "revision         1",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    assert!(!text.contains(&sha), "only the digest's first 12 characters are shown");

    // Without reconcile's function, AppZen is not read, and the report says how to ask for it.
    assert_eq!(report.appzen, None);
    assert!(
        text.contains("AppZen now       AppZen not read: pass --reconcile-function and --archive-bucket"),
        "{text}"
    );
    // A function Lambda does not know: the ledger part stands, the read-back says why it could not be made.
    let named = resources.clone().with(Resource::ReconcileFunction, "no-such-function");
    let report = po::po(&clients, &named, 48213).await.unwrap();
    let Some(po_sync_admin::readback::AppZenCopy::Unknown { reason }) = &report.appzen else {
        panic!("{:?}", report.appzen)
    };
    assert!(reason.contains("lambda:GetFunctionConfiguration"), "{reason}");
}

#[tokio::test]
async fn replay_queues_a_new_version_of_the_file_each_time() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let bytes = fixture("komet-clean-po.json");
    let saved = replay::validate(&bytes, "komet-clean-po.json").unwrap();

    let first = replay::replay(&clients, &resources, &saved, "f.json", Utc::now()).await.unwrap();
    let second =
        replay::replay(&clients, &resources, &saved, "f.json", Utc::now() + Duration::milliseconds(5)).await.unwrap();
    assert!(!first.kept && !first.to_string().contains("dry run"));
    assert_eq!((first.po_id, first.po_number.as_str()), (48213, "P004410"));
    assert_ne!(first.send_id, second.send_id);
    assert_ne!(first.sqs_message_id, second.sqs_message_id);

    let queued = drain(&clients, &url(&resources, Resource::WebhookQueue)).await;
    assert_eq!(queued.len(), 2, "two replays of one file are two messages");
    for ((body, group, dedup), report) in queued.iter().zip([&first, &second]) {
        let envelope = WebhookEnvelope::from_json(body).unwrap();
        assert_eq!(envelope.body_sha256, sha256_hex(&bytes), "the envelope is of the file, byte for byte");
        assert_eq!(envelope.po, parse_webhook(&bytes).unwrap());
        assert_eq!(envelope.version(), report.version);
        assert_eq!(envelope.received_at.timestamp_subsec_nanos() % 1_000_000, 0, "received at whole milliseconds");
        assert_eq!(group, "48213", "grouped by PO id");
        assert!(dedup.starts_with("replay-") && dedup.len() == "replay-".len() + 32, "{dedup}");
        assert!(dedup["replay-".len()..].chars().all(|c| c.is_ascii_hexdigit()), "{dedup}");
        assert_eq!(envelope.send_id.as_deref(), Some(dedup.as_str()));
        assert_eq!(dedup, &report.send_id);
    }

    // Komet's documented sample (trailing commas and all) is a valid body too.
    let sample = replay::validate(&fixture("komet-doc-sample.json"), "komet-doc-sample.json").unwrap();
    assert!(sample.po.id > 0);
}

#[tokio::test]
async fn redrive_copies_parked_webhooks_back_and_reports_applied_superseded_and_pending() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let clean = fixture("komet-clean-po.json");
    let mut clean_again = clean.clone();
    clean_again.push(b'\n'); // a second send of the PO with another body digest
    let sample = fixture("komet-doc-sample.json");
    let (older, older_json) = park(&clients, &resources, &clean, at(1), "send-a").await;
    let (latest, latest_json) = park(&clients, &resources, &clean_again, at(5), "send-b").await;
    let (other, other_json) = park(&clients, &resources, &sample, at(3), "send-c").await;

    // reconcile, simulated: takes each webhook off the queue; on the latest version of PO 48213, settles it in
    // the ledger first (as reconcile does before deleting the record).
    let reconcile = {
        let clients = clients.clone();
        let webhooks = url(&resources, Resource::WebhookQueue);
        let latest_version = latest.version();
        let entry = upserted(latest.po.id, &latest.po.po_number, latest.received_at, &latest.body_sha256, 1);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let deadline = std::time::Instant::now() + StdDuration::from_secs(30);
            while seen.len() < 3 && std::time::Instant::now() < deadline {
                let received = clients
                    .sqs
                    .receive_message()
                    .queue_url(&webhooks)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .send()
                    .await
                    .unwrap();
                for m in received.messages() {
                    let body = m.body().unwrap().to_owned();
                    if WebhookEnvelope::from_json(&body).unwrap().version() == latest_version {
                        DynamoLedger::new(clients.dynamodb.clone(), TABLE).write(&entry).await.unwrap();
                    }
                    let attributes = m.attributes().unwrap();
                    let group = attributes[&MessageSystemAttributeName::MessageGroupId].clone();
                    let dedup = attributes[&MessageSystemAttributeName::MessageDeduplicationId].clone();
                    seen.push((body, group, dedup));
                    clients
                        .sqs
                        .delete_message()
                        .queue_url(&webhooks)
                        .receipt_handle(m.receipt_handle().unwrap())
                        .send()
                        .await
                        .unwrap();
                }
            }
            seen
        })
    };

    let options = RedriveOptions {
        poll_interval: StdDuration::from_millis(200),
        timeout: StdDuration::from_secs(60),
        ..RedriveOptions::default()
    };
    let mut lines = Vec::new();
    let report = redrive(&clients, &resources, &options, &mut |line| lines.push(line.to_owned())).await.unwrap();
    let seen = reconcile.await.unwrap();

    assert_eq!(report.snapshot.webhooks.len(), 3);
    assert!(report.snapshot.unreadable.is_empty());
    let movement = report.movement.clone().unwrap();
    assert_eq!(movement.method, Method::Copy, "moto 5.2.5 has no StartMessageMoveTask");
    assert!(movement.why.starts_with("StartMessageMoveTask is not available on this endpoint"), "{}", movement.why);
    assert_eq!((movement.moved, movement.to_move, movement.complete), (3, Some(3), true));
    assert!(report.is_success());
    assert!(lines.iter().any(|l| l == "moved 3 of 3"), "{lines:?}");

    // On the webhook queue: the parked bodies byte for byte, in their groups with their deduplication ids, PO
    // 48213's two versions in order.
    let mut expected = vec![
        (older_json, older.po.id.to_string(), "dead-send-a".to_owned()),
        (latest_json, latest.po.id.to_string(), "dead-send-b".to_owned()),
        (other_json, other.po.id.to_string(), "dead-send-c".to_owned()),
    ];
    let mut got = seen.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let order: Vec<i64> = seen
        .iter()
        .map(|(body, _, _)| WebhookEnvelope::from_json(body).unwrap())
        .filter(|e| e.po.id == 48213)
        .map(|e| e.version())
        .collect();
    assert_eq!(order, [older.version(), latest.version()]);
    assert_eq!(
        status::counts(&clients.sqs, &url(&resources, Resource::ParkedQueue)).await.unwrap(),
        (0, 0),
        "parked queue empty"
    );

    let waited = report.waited.clone().unwrap();
    assert!(!waited.timed_out);
    let fate_of = |version: i64| waited.fates.iter().find(|f| f.version == version).unwrap().fate.clone();
    assert_eq!(fate_of(latest.version()), Fate::Applied { outcome: LedgerOutcome::Upserted });
    assert_eq!(fate_of(older.version()), Fate::Superseded { by_version: latest.version() });
    assert!(matches!(fate_of(other.version()), Fate::Pending { .. }));
    let text = report.to_string();
    assert!(text.contains("reconcile: 1 applied, 1 superseded, 1 pending"), "{text}");
    assert!(text.contains("moved 3 of 3 with copy: StartMessageMoveTask is not available"), "{text}");
}

#[tokio::test]
async fn a_parked_claim_check_is_read_by_the_snapshot_and_copied_back_byte_for_byte() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let parked = url(&resources, Resource::ParkedQueue);
    // A PO too large for one SQS message: the parked message is its claim check (the body stays in the bucket).
    let body = fixture("komet-clean-po.json");
    let envelope = WebhookEnvelope::new(parse_webhook(&body).unwrap(), &body, at(7)).with_send_id("send-big");
    let pointer = BodyRef::of(&envelope, "po-sync-archive", body_key(envelope.po.id, "send-big"));
    let json = pointer.to_json();
    send(&clients, &parked, &json, "48213", "dead-send-big").await;

    let seen = snapshot(&clients.sqs, &parked, 30).await.unwrap();
    assert!(seen.unreadable.is_empty(), "{:?}", seen.unreadable);
    assert_eq!(seen.webhooks.len(), 1);
    let webhook = &seen.webhooks[0];
    assert_eq!(
        (webhook.po_id, webhook.po_number.as_str(), webhook.version, webhook.group_id.as_str()),
        (48213, "P004410", at(7).timestamp_millis(), "48213")
    );
    assert_eq!(status::counts(&clients.sqs, &parked).await.unwrap(), (1, 0), "made visible again");

    let options = RedriveOptions { wait: false, ..RedriveOptions::default() };
    let report = redrive(&clients, &resources, &options, &mut |_| {}).await.unwrap();
    let movement = report.movement.clone().unwrap();
    assert_eq!((movement.method, movement.moved, movement.complete), (Method::Copy, 1, true));
    let moved = drain(&clients, &url(&resources, Resource::WebhookQueue)).await;
    assert_eq!(moved, [(json, "48213".to_owned(), "dead-send-big".to_owned())], "same body, group, dedup id");
}

#[tokio::test]
async fn redrive_leaves_unreadable_messages_parked_and_a_forced_move_task_fails_clearly_on_moto() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let parked = url(&resources, Resource::ParkedQueue);
    send(&clients, &parked, "not a webhook", "x", "poison").await;
    let (envelope, json) = park(&clients, &resources, &fixture("komet-clean-po.json"), at(1), "send-a").await;

    let forced = RedriveOptions { method: Method::MoveTask, wait: false, ..RedriveOptions::default() };
    let error = redrive(&clients, &resources, &forced, &mut |_| {}).await.unwrap_err().to_string();
    assert!(error.contains("StartMessageMoveTask is not available") && error.contains("--method copy"), "{error}");
    assert_eq!(status::counts(&clients.sqs, &parked).await.unwrap(), (2, 0), "the snapshot let go of both");

    let options = RedriveOptions { wait: false, ..RedriveOptions::default() };
    let report = redrive(&clients, &resources, &options, &mut |_| {}).await.unwrap();
    assert_eq!(report.snapshot.unreadable.len(), 1);
    assert!(report.snapshot.unreadable[0].reason.contains("not a po-sync message"), "{:?}", report.snapshot.unreadable);
    let movement = report.movement.clone().unwrap();
    assert_eq!((movement.method, movement.moved, movement.complete), (Method::Copy, 1, true));
    assert!(movement.why.contains("1 unreadable message(s) are parked"), "{}", movement.why);
    assert_eq!(report.waited, None, "--no-wait");
    let text = report.to_string();
    assert!(text.contains(&report.snapshot.unreadable[0].message_id) && text.contains("stay parked"), "{text}");

    let moved = drain(&clients, &url(&resources, Resource::WebhookQueue)).await;
    assert_eq!(moved, [(json, envelope.po.id.to_string(), "dead-send-a".to_owned())], "same body, group, dedup id");
    let (visible, in_flight) = status::counts(&clients.sqs, &parked).await.unwrap();
    assert_eq!(visible + in_flight, 1, "the unreadable message is still parked");
}

/// The built binary, configured only through the standard AWS environment and flags.
#[tokio::test]
async fn the_binary_runs_the_commands_against_moto() {
    let (moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_po-sync-admin"))
            .args(args)
            .envs(moto.aws_env())
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    };
    let flag = |resource: Resource| format!("{}={}", resource.flag(), url(&resources, resource));
    let queues: Vec<String> = status::QUEUES.iter().map(|r| flag(*r)).collect();
    let queue_args: Vec<&str> = queues.iter().map(String::as_str).collect();

    let (code, stdout, stderr) = run(&[&["status", "--json", "--stack", "absent"], queue_args.as_slice()].concat());
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["queues"].as_array().unwrap().len(), 5);
    assert_eq!(json["queues"][2]["queue"], "t-webhooks-parked.fifo");

    let (code, stdout, _) = run(&[&["status", "--stack", "absent"], queue_args.as_slice()].concat());
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("ROLE") && stdout.contains("n/a*"), "{stdout}");

    let (code, _, stderr) = run(&["po", "P004410"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a PO id"), "{stderr}");

    let ledger = flag(Resource::LedgerTable);
    let (code, stdout, stderr) = run(&["po", "777", &ledger]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("no record: po-sync has never processed PO 777"), "{stdout}");
    let (code, stdout, _) = run(&["po", "777", "--json", &ledger]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(
        (json["poId"].as_u64(), &json["entry"], &json["appzen"]),
        (Some(777), &serde_json::Value::Null, &serde_json::Value::Null)
    );

    let (code, _, stderr) = run(&["po", "777", "--stack", "absent"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--ledger-table") && stderr.contains("\"absent\""), "{stderr}");

    // A replay of an invalid body names the field and sends nothing; a valid one is queued.
    let dir = std::env::temp_dir().join(format!("po-sync-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&fixture("komet-clean-po.json")).unwrap();
    body["total"] = serde_json::json!("a lot");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, body.to_string()).unwrap();
    let webhook_queue = flag(Resource::WebhookQueue);
    let (code, stdout, stderr) = run(&["replay", bad.to_str().unwrap(), &webhook_queue]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("total") && stderr.contains("nothing was queued"), "{stderr}");
    assert_eq!(status::counts(&clients.sqs, &url(&resources, Resource::WebhookQueue)).await.unwrap(), (0, 0));

    let good = dir.join("good.json");
    std::fs::write(&good, fixture("komet-clean-po.json")).unwrap();
    let (code, stdout, stderr) = run(&["replay", good.to_str().unwrap(), &webhook_queue]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("queued PO P004410 (id 48213) as a new version"), "{stdout}");
    assert_eq!(status::counts(&clients.sqs, &url(&resources, Resource::WebhookQueue)).await.unwrap(), (1, 0));
    std::fs::remove_dir_all(&dir).ok();

    // redrive through the binary: nothing parked, nothing to do.
    let parked = flag(Resource::ParkedQueue);
    let (code, stdout, stderr) = run(&["redrive", "--no-wait", &parked, &webhook_queue]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("nothing to redrive"), "{stdout}");

    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for command in ["status", "po", "history", "redrive", "replay", "pause", "resume"] {
        assert!(stdout.contains(command), "{stdout}");
    }
}

#[tokio::test]
async fn in_a_stack_that_sends_to_exsited_only_replay_and_po_work_on_exsited_s_queue_and_ledger_items() {
    let (_moto, clients) = start().await;
    let resources = deploy(&clients).await;
    let sqs = &clients.sqs;
    let exsited_dlq = create_fifo_queue(sqs, "t-webhooks-exsited-dlq.fifo", None, None).await.unwrap();
    let exsited_queue =
        create_fifo_queue(sqs, "t-webhooks-exsited.fifo", Some((&exsited_dlq, 3)), Some(30)).await.unwrap();
    let outputs = serde_json::json!({
        // AppZen's webhook queues are in every stack (notify watches their DLQ); nothing reads them here.
        "WebhookQueueUrl": { "Value": url(&resources, Resource::WebhookQueue) },
        "ExsitedWebhookQueueUrl": { "Value": exsited_queue },
        "ExsitedWebhookDeadLetterQueueUrl": { "Value": exsited_dlq },
        "LedgerTableName": { "Value": TABLE },
        "HistoryTableName": { "Value": HISTORY },
        "ArchiveBucketName": { "Value": BUCKET },
        "ReconcileExsitedFunctionName": { "Value": "x-reconcile-exsited" },
    });
    let template = serde_json::json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": { "Placeholder": { "Type": "AWS::SQS::Queue", "Properties": { "QueueName": "x-placeholder" } } },
        "Outputs": outputs,
    });
    clients.cloudformation.create_stack().stack_name("x").template_body(template.to_string()).send().await.unwrap();
    let file = std::env::temp_dir().join(format!("exsited-only-{}.json", std::process::id()));
    std::fs::write(&file, fixture("komet-clean-po.json")).unwrap();
    let file = file.to_string_lossy().into_owned();

    let (ok, report) = run_on_stack(&clients, "x", &["replay", &file]).await;
    assert!(ok, "{report:#}");
    assert_eq!(drain(&clients, &exsited_queue).await.len(), 1, "queued where reconcile-exsited reads: {report:#}");
    assert!(drain(&clients, &url(&resources, Resource::WebhookQueue)).await.is_empty(), "not AppZen's unread queue");

    // A stack with both destinations: AppZen's path unless --destination exsited.
    let mut both = template.clone();
    both["Outputs"]["ReconcileFunctionName"] = serde_json::json!({ "Value": "x-reconcile" });
    both["Resources"]["Placeholder"]["Properties"]["QueueName"] = serde_json::json!("both-placeholder");
    clients.cloudformation.create_stack().stack_name("both").template_body(both.to_string()).send().await.unwrap();
    assert!(run_on_stack(&clients, "both", &["replay", &file]).await.0);
    assert_eq!(drain(&clients, &url(&resources, Resource::WebhookQueue)).await.len(), 1, "AppZen's queue");
    assert!(run_on_stack(&clients, "both", &["--destination", "exsited", "replay", &file]).await.0);
    assert_eq!(drain(&clients, &exsited_queue).await.len(), 1, "Exsited's queue, as asked");

    // `po` reads Exsited's ledger item.
    let entry = upserted(48213, "P004410", at(1), "s", 1);
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), TABLE).for_destination(Destination::Exsited);
    assert_eq!(ledger.write(&LedgerEntry { po_id: "48213".to_owned(), ..entry }).await.unwrap(), Written::Stored);
    let (ok, report) = run_on_stack(&clients, "x", &["po", "48213"]).await;
    assert!(ok, "{report:#}");
    assert_eq!(report["entry"]["poNumber"], "P004410", "{report:#}");
    assert!(
        report["answer"].as_str().unwrap().starts_with("Exsited holds the latest version Komet sent"),
        "{report:#}"
    );
    std::fs::remove_file(&file).ok();
}

/// Runs the command line in-process against stack `stack`, with `--json`: (succeeded, what it printed).
async fn run_on_stack(clients: &Clients, stack: &str, args: &[&str]) -> (bool, serde_json::Value) {
    use clap::Parser as _;
    let cli =
        po_sync_admin::Cli::try_parse_from([&["po-sync-admin", "--stack", stack, "--json"], args].concat()).unwrap();
    let mut out = Vec::new();
    let ok = po_sync_admin::execute(&cli, clients, None, &mut out, &mut |_| {}).await.unwrap();
    (ok, serde_json::from_slice(&out).unwrap())
}
