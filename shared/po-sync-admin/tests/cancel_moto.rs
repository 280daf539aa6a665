//! `cancel` and `reactivate` against moto (the ledger and history tables, the archive bucket, Secrets Manager,
//! Lambda functions and a CloudFormation stack naming them) with AppZen and Exsited stood in by wiremock: both
//! destinations, then reactivated; Exsited refusing (nothing recorded, exit code 1, through the built binary);
//! AppZen refusing (recorded, not told, told on the next run); an AppZen-only stack; `verify` reading AppZen's
//! cancel flags.

use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Parser;
use po_sync::destination::Destination;
use po_sync::history::AttemptOutcome;
use po_sync::ledger::{Claim, DestinationHolds, LedgerEntry, LedgerOutcome, SettledVersion};
use po_sync::message::kept_key;
use po_sync_admin::cancel::State;
use po_sync_admin::{Cli, Clients, execute};
use po_sync_aws::ledger::{DynamoHistory, DynamoLedger, Ledger, Written};
use po_sync_test_support::moto::{MotoServer, create_history_table, create_ledger_table};
use serde_json::{Value, json};
use std::process::Command;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const LEDGER: &str = "c-ledger";
const HISTORY: &str = "c-history";
const ARCHIVE: &str = "c-archive";
/// The PO Komet sent (id 48213, P004410, invoices 01-P004410 and 01-P004411), kept for the version from :10.
const KOMET_BODY: &[u8] = include_bytes!("../../po-sync/tests/fixtures/komet-clean-po.json");
/// Where reconcile archived invoice 01-P004410's PDF, as AppZen's copy of the PO notes it.
const ARCHIVED_PDF: &str = "s3://c-archive/invoices/48213/01-P004410/ab12.pdf";
const PO_ID: u64 = 48213;
const EXSITED_ID: &str = "PO-LHROM9-0024";

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, second).unwrap()
}

async fn start() -> (MotoServer, Clients) {
    let moto = MotoServer::start();
    let clients = Clients::new(&moto.sdk_config().await);
    create_ledger_table(&clients.dynamodb, LEDGER).await.unwrap();
    create_history_table(&clients.dynamodb, HISTORY).await.unwrap();
    clients.s3.create_bucket().bucket(ARCHIVE).send().await.unwrap();
    let key = kept_key(PO_ID, at(10), "req-10");
    clients.s3.put_object().bucket(ARCHIVE).key(key).body(KOMET_BODY.to_vec().into()).send().await.unwrap();
    (moto, clients)
}

/// AppZen: its copy of P004410 (with the archive note reconcile wrote), and upserts answered `status`.
async fn appzen(status: u16) -> MockServer {
    let server = MockServer::start().await;
    let held = json!({
        "uuid": "appzen-uuid",
        "purchase_order_number": "P004410",
        "custom_json": { "komet_po_id": PO_ID, "komet_invoices": [
            { "invoice_number": "01-P004410", "archived_file": ARCHIVED_PDF }
        ] }
    });
    Mock::given(method("GET"))
        .and(path("/dictionary-data-services/purchase-order/purchase-order-number/P004410"))
        .and(header("x-api-key", "key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(held))
        .mount(&server)
        .await;
    let answer = match status {
        200 => json!({ "uuid": "appzen-uuid", "status": "UPDATED" }),
        _ => json!({ "status": status, "error": "Bad Request", "message": "purchase order is locked" }),
    };
    Mock::given(method("POST"))
        .and(path("/dictionary-data-services/purchase-order"))
        .respond_with(ResponseTemplate::new(status).set_body_json(answer))
        .mount(&server)
        .await;
    server
}

/// The upserts AppZen received, as JSON.
async fn upserts(server: &MockServer) -> Vec<Value> {
    let requests = server.received_requests().await.unwrap();
    requests.iter().filter(|r| r.method.as_str() == "POST").map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

/// Every line's (cancel_flag, cancel_date, cancel_reason) in one upsert.
fn line_marks(upsert: &Value) -> Vec<(Value, Value, Value)> {
    let lines = upsert["purchase_order_lines"].as_array().unwrap();
    lines.iter().map(|l| (l["cancel_flag"].clone(), l["cancel_date"].clone(), l["cancel_reason"].clone())).collect()
}

/// A Lambda function as CloudFormation declares it (moto keeps its environment for GetFunctionConfiguration).
fn function(name: &str, variables: Value) -> Value {
    json!({
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "FunctionName": name,
            "Runtime": "provided.al2023",
            "Handler": "bootstrap",
            "Role": { "Fn::GetAtt": ["Role", "Arn"] },
            "Code": { "ZipFile": "not run" },
            "Environment": { "Variables": variables }
        }
    })
}

/// A po-sync-shaped stack `name`: the ledger and history tables, the archive bucket, AppZen's reconcile function
/// (reaching `appzen`), and Exsited's (reading its credentials from a secret, reaching `exsited`) when given.
async fn stack(clients: &Clients, name: &str, appzen: &MockServer, exsited: Option<&MockServer>) {
    let common = json!({
        "NOTIFY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/notifications.fifo",
        "LEDGER_TABLE_NAME": LEDGER,
        "HISTORY_TABLE_NAME": HISTORY,
    });
    let with = |extra: Value| {
        let mut variables = common.clone();
        variables.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        variables
    };
    let mut resources = json!({
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": { "Service": "lambda.amazonaws.com" },
                        "Action": "sts:AssumeRole"
                    }]
                }
            }
        },
        "ReconcileFunction": function(&format!("{name}-reconcile"), with(json!({
            "DESTINATION": "appzen",
            "APPZEN_BASE_URL": appzen.uri(),
            "APPZEN_API_KEY": "key",
            "APPZEN_CUSTOMER_ID": "cid",
            "APPZEN_CUSTOMER_KEY": "ckey",
            "APPZEN_MAX_ATTEMPTS": "1"
        }))),
    });
    let mut outputs = json!({
        "LedgerTableName": { "Value": LEDGER },
        "HistoryTableName": { "Value": HISTORY },
        "ArchiveBucketName": { "Value": ARCHIVE },
        "ReconcileFunctionName": { "Value": { "Ref": "ReconcileFunction" } },
    });
    if let Some(exsited) = exsited {
        let secret = aws_sdk_secretsmanager::Client::new(&clients.aws)
            .create_secret()
            .name(format!("{name}-exsited"))
            .secret_string(json!({ "client_id": "id-from-secret", "client_secret": "s3cret" }).to_string())
            .send()
            .await
            .unwrap();
        resources["ReconcileExsitedFunction"] = function(
            &format!("{name}-reconcile-exsited"),
            with(json!({
                "DESTINATION": "exsited",
                "DESTINATIONS": "appzen,exsited",
                "EXSITED_BASE_URL": exsited.uri(),
                "EXSITED_SECRET_ARN": secret.arn().unwrap(),
            })),
        );
        outputs["ReconcileExsitedFunctionName"] = json!({ "Value": { "Ref": "ReconcileExsitedFunction" } });
    }
    let template = json!({ "AWSTemplateFormatVersion": "2010-09-09", "Resources": resources, "Outputs": outputs });
    clients.cloudformation.create_stack().stack_name(name).template_body(template.to_string()).send().await.unwrap();
}

/// Exsited: a token for the secret's credentials, and `cancel` / `reactivate` of its PO answering `status`.
async fn exsited(status: u16, body: Option<Value>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oauth2/token"))
        .and(body_string_contains("id-from-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "access_token": "tok", "expires_in": 3600 })))
        .mount(&server)
        .await;
    for action in ["cancel", "reactivate"] {
        let mut answer = ResponseTemplate::new(status);
        if let Some(body) = &body {
            answer = answer.set_body_json(body.clone());
        }
        Mock::given(method("POST"))
            .and(path(format!("/api/v3/purchase-orders/{EXSITED_ID}/{action}")))
            .and(header("authorization", "Bearer tok"))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    server
}

/// An entry as reconcile leaves it: `holds` upserted at the destination (its id `uuid`), then `latest`.
fn entry(holds: (u32, &str), latest: (u32, LedgerOutcome)) -> LedgerEntry {
    LedgerEntry {
        po_id: PO_ID.to_string(),
        po_number: "P004410".to_owned(),
        revision: 3,
        latest: Some(SettledVersion {
            version: at(latest.0).timestamp_millis(),
            sequence: None,
            received_at: at(latest.0),
            body_sha256: format!("sha-{}", latest.0),
            sqs_message_id: "m".to_owned(),
            outcome: latest.1,
            settled_at: at(latest.0) + Duration::seconds(1),
        }),
        holds: Some(DestinationHolds {
            version: at(holds.0).timestamp_millis(),
            sequence: None,
            body_sha256: format!("sha-{}", holds.0),
            uuid: Some(holds.1.to_owned()),
            status: Some("UPDATED".to_owned()),
            http_status: 200,
            upserted_at: at(holds.0) + Duration::seconds(1),
        }),
        claim: None,
        notified: None,
        cancelled: None,
        updated_at: at(59),
    }
}

fn ledger(clients: &Clients, destination: Destination) -> DynamoLedger {
    DynamoLedger::new(clients.dynamodb.clone(), LEDGER).for_destination(destination)
}

/// Writes `entry` as the item's first revision.
async fn seed(clients: &Clients, destination: Destination, entry: LedgerEntry) {
    let first = LedgerEntry { revision: 1, ..entry };
    assert_eq!(ledger(clients, destination).write(&first).await.unwrap(), Written::Stored);
}

async fn read(clients: &Clients, destination: Destination) -> Option<LedgerEntry> {
    ledger(clients, destination).read(PO_ID).await.unwrap()
}

/// Runs the command line in-process: (succeeded, text or JSON printed).
async fn run(clients: &Clients, args: &[&str]) -> (bool, String) {
    let cli = Cli::try_parse_from([&["po-sync-admin"], args].concat()).unwrap();
    let mut out = Vec::new();
    let ok = execute(&cli, clients, None, &mut out, &mut |_| {}).await.unwrap();
    (ok, String::from_utf8(out).unwrap())
}

async fn requests_to(server: &MockServer, suffix: &str) -> usize {
    server.received_requests().await.unwrap().iter().filter(|r| r.url.path().ends_with(suffix)).count()
}

#[tokio::test]
async fn cancel_at_both_destinations_then_reactivate() {
    let (_moto, clients) = start().await;
    let exsited = exsited(204, None).await;
    let appzen = appzen(200).await;
    stack(&clients, "both", &appzen, Some(&exsited)).await;
    // AppZen holds the version from :10, and the one from :20 was held (a mismatch); Exsited holds :20.
    seed(&clients, Destination::Appzen, entry((10, "appzen-uuid"), (20, LedgerOutcome::Held))).await;
    seed(&clients, Destination::Exsited, entry((20, EXSITED_ID), (20, LedgerOutcome::Upserted))).await;

    let (ok, text) = run(&clients, &["--stack", "both", "cancel", "48213", "--reason", "ordered\ntwice"]).await;
    assert!(ok, "{text}");
    assert!(text.starts_with("cancel PO 48213 at 2 destination(s), reason: ordered twice\n"), "{text}");
    assert!(
        text.contains(&format!(
            "  AppZen: done (ledger item 48213)\n    request   POST {}/dictionary-data-services/purchase-order (the \
             version from 2026-11-22T09:00:10.000Z, every line's cancel_flag true)\n    sent      AppZen holds PO \
             P004410 cancelled: the version from 2026-11-22T09:00:10.000Z sent again, every line's cancel_flag true\n\
             \x20   ledger    cancelled: newer versions are held, not sent to AppZen, until po-sync-admin reactivate \
             48213\n",
            appzen.uri()
        )),
        "{text}"
    );
    // The version AppZen holds (from :10, not the held :20), as reconcile sent it, every line cancelled.
    let sent = upserts(&appzen).await;
    assert_eq!(sent.len(), 1);
    let marks = line_marks(&sent[0]);
    assert!(marks.len() >= 2, "{marks:?}");
    for (flag, date, reason) in &marks {
        assert_eq!((flag, reason), (&json!(true), &json!("ordered twice")));
        let date = date.as_str().unwrap();
        assert!(date.len() == 20 && date.ends_with('Z') && DateTime::parse_from_rfc3339(date).is_ok(), "{date}");
    }
    assert_eq!(sent[0]["purchase_order_number"], "P004410");
    assert_eq!(sent[0]["custom_json"]["komet_invoices"][0]["archived_file"], ARCHIVED_PDF, "AppZen's note kept");
    let mut reconcile_sent = sent[0].clone();
    for line in reconcile_sent["purchase_order_lines"].as_array_mut().unwrap() {
        for field in ["cancel_flag", "cancel_date", "cancel_reason"] {
            line.as_object_mut().unwrap().remove(field);
        }
    }
    reconcile_sent["custom_json"]["komet_invoices"][0].as_object_mut().unwrap().remove("archived_file");
    let po = po_sync::komet::parse_webhook(KOMET_BODY).unwrap();
    let mapped = po_sync::appzen::map_purchase_order(&po, &Default::default()).unwrap().to_json();
    assert_eq!(reconcile_sent, serde_json::from_str::<Value>(&mapped).unwrap(), "nothing else differs");
    assert!(
        text.contains(&format!(
            "  Exsited: done (ledger item exsited#48213)\n    request   POST /api/v3/purchase-orders/{EXSITED_ID}/cancel\n"
        )),
        "{text}"
    );
    assert_eq!(requests_to(&exsited, "/cancel").await, 1);

    let appzen_entry = read(&clients, Destination::Appzen).await.unwrap();
    let cancelled = appzen_entry.cancelled.clone().expect("AppZen's item records it");
    assert_eq!(
        (cancelled.reason.as_deref(), cancelled.destination_id.as_deref()),
        (Some("ordered twice"), Some("P004410")),
        "recorded, then noted as told"
    );
    assert_eq!((appzen_entry.revision, appzen_entry.holds.as_ref().unwrap().version), (3, at(10).timestamp_millis()));
    let exsited_entry = read(&clients, Destination::Exsited).await.unwrap();
    assert_eq!(exsited_entry.cancelled.unwrap().destination_id.as_deref(), Some(EXSITED_ID));
    let history = DynamoHistory::reader(clients.dynamodb.clone(), HISTORY).list(PO_ID, 10).await.unwrap();
    let mut told: Vec<(String, AttemptOutcome)> = history.iter().map(|a| (a.destination.clone(), a.outcome)).collect();
    told.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        told,
        [("appzen".to_owned(), AttemptOutcome::Cancelled), ("exsited".to_owned(), AttemptOutcome::Cancelled)]
    );
    assert!(history.iter().all(|a| a.detail.as_deref().is_some_and(|d| d.ends_with("reason: ordered twice"))));

    // Again: nothing sent, nothing written.
    let (ok, text) = run(&clients, &["--stack", "both", "cancel", "48213"]).await;
    assert!(ok && text.matches(": unchanged (").count() == 2, "{text}");
    assert_eq!(requests_to(&exsited, "/cancel").await, 1);
    assert_eq!(upserts(&appzen).await.len(), 1);
    assert_eq!(read(&clients, Destination::Appzen).await.unwrap().revision, 3);

    let (ok, json) = run(&clients, &["--stack", "both", "--json", "reactivate", "48213"]).await;
    assert!(ok, "{json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["action"], "reactivate");
    let [appzen_report, exsited_report] = [&report["destinations"][0], &report["destinations"][1]];
    assert_eq!((appzen_report["state"].as_str(), appzen_report["recorded"].as_bool()), (Some("done"), Some(true)));
    let sent = upserts(&appzen).await;
    assert_eq!(sent.len(), 2, "AppZen told once more");
    assert!(line_marks(&sent[1]).iter().all(|m| *m == (json!(false), Value::Null, Value::Null)), "{:?}", sent[1]);
    assert_eq!(
        appzen_report["next"].as_str().unwrap(),
        "the latest version (received 2026-11-22T09:00:20.000Z) was held, not sent: po-sync-admin replay --po \
         48213 --latest sends it"
    );
    assert_eq!(exsited_report["request"], format!("POST /api/v3/purchase-orders/{EXSITED_ID}/reactivate"));
    assert!(exsited_report["next"].as_str().unwrap().starts_with("no version is waiting"), "{exsited_report}");
    let cleared = exsited_report["ledger"].as_str().unwrap();
    assert!(cleared.starts_with("cancellation cleared (it was made at 20"), "{cleared}");
    assert!(
        cleared.ends_with(&format!(
            "(id {EXSITED_ID}), reason: ordered twice): the next version Komet sends goes to Exsited"
        )),
        "{cleared}"
    );
    assert_eq!(requests_to(&exsited, "/reactivate").await, 1);
    assert_eq!(requests_to(&exsited, "/oauth2/token").await, 1, "the second run takes the token the first stored");
    assert_eq!(read(&clients, Destination::Appzen).await.unwrap().cancelled, None);
    assert_eq!(read(&clients, Destination::Exsited).await.unwrap().cancelled, None);
    let history = DynamoHistory::reader(clients.dynamodb.clone(), HISTORY).list(PO_ID, 10).await.unwrap();
    assert_eq!(history.iter().filter(|a| a.outcome == AttemptOutcome::Reactivated).count(), 2);
}

#[tokio::test]
async fn exsited_refusing_records_nothing_for_exsited_and_the_binary_exits_1() {
    let (moto, clients) = start().await;
    let refusal = json!({ "errors": [{ "code": "PO_LOCKED", "message": "purchase order is being invoiced" }] });
    let exsited = exsited(400, Some(refusal)).await;
    let appzen = appzen(200).await;
    stack(&clients, "refusing", &appzen, Some(&exsited)).await;
    seed(&clients, Destination::Appzen, entry((10, "appzen-uuid"), (10, LedgerOutcome::Upserted))).await;
    seed(&clients, Destination::Exsited, entry((10, EXSITED_ID), (10, LedgerOutcome::Upserted))).await;

    let output = Command::new(env!("CARGO_BIN_EXE_po-sync-admin"))
        .args(["--stack", "refusing", "cancel", "48213"])
        .envs(moto.aws_env())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("  Exsited: FAILED (ledger item exsited#48213)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "    sent      POST /api/v3/purchase-orders/{EXSITED_ID}/cancel: refused (Exsited answered HTTP 400: \
             PO_LOCKED: purchase order is being invoiced)\n    ledger    not recorded: po-sync still sends Exsited"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("  AppZen: done"), "AppZen's part stands: {stdout}");
    let untouched = read(&clients, Destination::Exsited).await.unwrap();
    assert_eq!((untouched.cancelled, untouched.revision), (None, 1));
    assert!(read(&clients, Destination::Appzen).await.unwrap().cancelled.is_some());
    let history = DynamoHistory::reader(clients.dynamodb.clone(), HISTORY).list(PO_ID, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|a| a.destination.as_str()).collect::<Vec<_>>(),
        ["appzen"],
        "no record of a refusal"
    );
}

#[tokio::test]
async fn an_appzen_only_stack_cancels_before_the_first_version_and_skips_exsited() {
    let (_moto, clients) = start().await;
    let appzen = appzen(200).await;
    stack(&clients, "appzen-only", &appzen, None).await;

    // Never seen yet: the cancellation makes the item, so its first version is held.
    let (ok, text) = run(&clients, &["--stack", "appzen-only", "cancel", "48213"]).await;
    assert!(ok, "{text}");
    assert!(text.starts_with("cancel PO 48213 at 1 destination(s)\n"), "{text}");
    assert!(
        text.contains(
            "  Exsited: skipped (ledger item exsited#48213)\n    sent      nothing: this stack has no Exsited (no output \
             ReconcileExsitedFunctionName, and --reconcile-exsited-function was not given)\n"
        ),
        "{text}"
    );
    let entry = read(&clients, Destination::Appzen).await.unwrap();
    assert_eq!((entry.revision, entry.po_number.as_str(), entry.latest.is_none()), (1, "", true));
    assert!(entry.cancelled.is_some());
    assert_eq!(read(&clients, Destination::Exsited).await, None);
    let history = DynamoHistory::reader(clients.dynamodb.clone(), HISTORY).list(PO_ID, 10).await.unwrap();
    assert_eq!((history.len(), history[0].version), (1, 0), "recorded against no version");
    assert!(text.contains("    sent      nothing: no version of this PO has reached AppZen yet\n"), "{text}");
    assert_eq!(upserts(&appzen).await.len(), 0);

    // A version being processed: left alone, and the exit code says so.
    let mut busy = entry.clone();
    busy.claim = Some(Claim {
        version: at(5).timestamp_millis(),
        sequence: None,
        body_sha256: "s".to_owned(),
        sqs_message_id: "m-busy".to_owned(),
        until: Utc::now() + Duration::minutes(3),
    });
    busy.revision += 1;
    assert_eq!(ledger(&clients, Destination::Appzen).write(&busy).await.unwrap(), Written::Stored);
    let (ok, text) = run(&clients, &["--stack", "appzen-only", "reactivate", "48213"]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("is being processed right now (SQS message m-busy"), "{text}");
    assert!(read(&clients, Destination::Appzen).await.unwrap().cancelled.is_some());

    // A stack with neither destination's function: nothing to act on, said as a usage error.
    let cli =
        Cli::try_parse_from(["po-sync-admin", "--ledger-table", LEDGER, "--stack", "absent", "cancel", "1"]).unwrap();
    let error = execute(&cli, &clients, None, &mut Vec::new(), &mut |_| {}).await.unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("no destination is known"), "{error}");
    let state: State = State::Skipped;
    assert_eq!(serde_json::to_value(state).unwrap(), "skipped");
}

#[tokio::test]
async fn appzen_refusing_leaves_the_cancellation_recorded_and_the_next_run_tells_it() {
    let (_moto, clients) = start().await;
    let refusing = appzen(400).await;
    stack(&clients, "appzen-refusing", &refusing, None).await;
    seed(&clients, Destination::Appzen, entry((10, "appzen-uuid"), (10, LedgerOutcome::Upserted))).await;

    let (ok, text) = run(&clients, &["--stack", "appzen-refusing", "cancel", "48213"]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("  AppZen: FAILED (ledger item 48213)\n"), "{text}");
    assert!(text.contains("every line's cancel_flag true): AppZen refused it (HTTP 400: "), "{text}");
    assert!(text.contains("but AppZen still shows the PO active: run po-sync-admin cancel 48213 again"), "{text}");
    let recorded = read(&clients, Destination::Appzen).await.unwrap();
    let cancellation = recorded.cancelled.clone().expect("recorded first: reconcile holds newer versions");
    assert_eq!((cancellation.destination_id, recorded.revision), (None, 2), "not noted as told");

    // AppZen takes it now (the stack's AppZen is another server: move the function's URL there).
    let accepting = appzen(200).await;
    let cli = Cli::try_parse_from([
        "po-sync-admin",
        "--stack",
        "appzen-refusing",
        "--reconcile-function",
        "appzen-refusing-reconcile-2",
        "cancel",
        "48213",
    ])
    .unwrap();
    let variables = json!({
        "LEDGER_TABLE_NAME": LEDGER,
        "NOTIFY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/notifications.fifo",
        "DESTINATION": "appzen",
        "APPZEN_BASE_URL": accepting.uri(),
        "APPZEN_API_KEY": "key",
        "APPZEN_CUSTOMER_ID": "cid",
        "APPZEN_CUSTOMER_KEY": "ckey",
    });
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Role": {
                "Type": "AWS::IAM::Role",
                "Properties": { "AssumeRolePolicyDocument": { "Version": "2012-10-17", "Statement": [] } }
            },
            "ReconcileFunction": function("appzen-refusing-reconcile-2", variables),
        }
    });
    clients
        .cloudformation
        .create_stack()
        .stack_name("second")
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    let ok = execute(&cli, &clients, None, &mut out, &mut |_| {}).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("  AppZen: done (ledger item 48213)\n"), "{text}");
    assert_eq!(upserts(&accepting).await.len(), 1);
    let told = read(&clients, Destination::Appzen).await.unwrap();
    assert_eq!(told.cancelled.unwrap().destination_id.as_deref(), Some("P004410"));
}

/// AppZen's GET answering `copy`, ahead of the mocks of a larger `priority` (the mock `appzen` mounted: 5).
async fn appzen_holds(server: &MockServer, copy: &Value, priority: u8) {
    Mock::given(method("GET"))
        .and(path("/dictionary-data-services/purchase-order/purchase-order-number/P004410"))
        .respond_with(ResponseTemplate::new(200).set_body_json(copy))
        .with_priority(priority)
        .mount(server)
        .await;
}

#[tokio::test]
async fn verify_holds_appzen_to_the_cancellation_it_was_told() {
    let (_moto, clients) = start().await;
    let appzen = appzen(200).await;
    stack(&clients, "verify-cancelled", &appzen, None).await;
    seed(&clients, Destination::Appzen, entry((10, "appzen-uuid"), (10, LedgerOutcome::Upserted))).await;
    let (ok, text) = run(&clients, &["--stack", "verify-cancelled", "cancel", "48213"]).await;
    assert!(ok, "{text}");

    // AppZen keeps what the CLI sent: every line cancelled. No drift.
    let cancelled = upserts(&appzen).await.remove(0);
    appzen_holds(&appzen, &cancelled, 2).await;
    let (ok, text) = run(&clients, &["--stack", "verify-cancelled", "verify"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("1 match, 0 with drift"), "{text}");

    // Someone re-opened it in AppZen (or an upsert from elsewhere cleared the flags): drift on every line, and the
    // repair names the CLI, since reconcile holds a replay of a cancelled PO.
    let mut reopened = cancelled.clone();
    for line in reopened["purchase_order_lines"].as_array_mut().unwrap() {
        line["cancel_flag"] = json!(false);
    }
    appzen_holds(&appzen, &reopened, 1).await;
    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/webhooks.fifo";
    let (ok, text) =
        run(&clients, &["--stack", "verify-cancelled", "--webhook-queue-url", queue, "verify", "--repair"]).await;
    assert!(!ok, "{text}");
    let lines = cancelled["purchase_order_lines"].as_array().unwrap();
    assert!(text.contains(&format!("in {} field(s)", lines.len())), "{text}");
    let first = lines[0]["po_line_id"].as_str().unwrap();
    assert!(
        text.contains(&format!("purchase_order_lines[{first}].cancel_flag: po-sync sent true, AppZen holds false")),
        "{text}"
    );
    assert!(text.contains("po-sync-admin reactivate 48213 then po-sync-admin cancel 48213"), "{text}");
    assert_eq!(upserts(&appzen).await.len(), 1, "verify sends nothing itself");
}
