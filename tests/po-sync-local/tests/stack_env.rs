//! The local pipeline's wiring comes from `infra/template.yaml`, deployed into moto's CloudFormation
//! (`po_sync_local::stack_env`): each function's environment and event sources as the template declares them,
//! and a template that forgets or renames a variable stops the pipeline before anything starts, naming it.

use std::path::PathBuf;

use po_sync_local::local::{LocalStack, NOTIFY_FROM, NOTIFY_TO, StackOptions};
use po_sync_local::poller::LogSink;
use po_sync_local::stack_env::{self, ResolvedStack};
use po_sync_test_support::moto::MotoServer;

fn parameters() -> Vec<(String, String)> {
    vec![
        ("NotificationSender".to_owned(), NOTIFY_FROM.to_owned()),
        ("NotificationRecipients".to_owned(), NOTIFY_TO.join(",")),
        ("MaxReceiveCount".to_owned(), "4".to_owned()),
    ]
}

fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_gives_each_function_its_environment_and_its_event_sources() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;
    let stack: ResolvedStack = stack_env::deploy(&config, &stack_env::default_template(), &parameters())
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut binaries: Vec<&str> = stack.functions.iter().map(|f| f.binary.as_str()).collect();
    binaries.sort();
    assert_eq!(binaries, ["ingest", "notify", "reconcile"]);

    let ingest = stack.function("ingest").unwrap();
    assert_eq!(queue_name(ingest.var("QUEUE_URL").unwrap()), "po-sync-webhooks.fifo");
    assert_eq!(ingest.var("WEBHOOK_AUTH"), Some("basic"));
    assert_eq!(ingest.secrets, [("WEBHOOK_SECRET_ARN".to_owned(), "WebhookSecret".to_owned())]);
    // What Lambda sets from LoggingConfig comes with it.
    assert_eq!((ingest.var("AWS_LAMBDA_LOG_FORMAT"), ingest.var("AWS_LAMBDA_LOG_LEVEL")), (Some("JSON"), Some("INFO")));

    let reconcile = stack.function("reconcile").unwrap();
    assert_eq!(queue_name(reconcile.var("NOTIFY_QUEUE_URL").unwrap()), "po-sync-notifications.fifo");
    assert_eq!(reconcile.var("RECONCILE_POLICY"), Some("block"));
    assert!(reconcile.secrets.iter().any(|(name, _)| name == "APPZEN_SECRET_ARN"));
    // The table CloudFormation created (the template gives it no name): reconcile's variable names it.
    let table = reconcile.var("LEDGER_TABLE_NAME").unwrap();
    aws_sdk_dynamodb::Client::new(&config)
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the ledger table {table}: {}", aws_sdk_dynamodb::Error::from(e)));

    let notify = stack.function("notify").unwrap();
    assert_eq!(notify.var("NOTIFY_FROM"), Some(NOTIFY_FROM));
    assert_eq!(notify.var("NOTIFY_TO"), Some(NOTIFY_TO.join(",").as_str()));
    assert_eq!(queue_name(notify.var("PARKED_QUEUE_URL").unwrap()), "po-sync-webhooks-parked.fifo");

    let mut sources: Vec<(&str, &str, i32)> =
        stack.event_sources.iter().map(|s| (queue_name(&s.queue_url), s.function.as_str(), s.batch_size)).collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            ("po-sync-notifications.fifo", "notify", 10),
            ("po-sync-webhooks-dlq.fifo", "notify", 10),
            ("po-sync-webhooks.fifo", "reconcile", 10),
        ]
    );
    // What the local pipeline plays itself is not deployed: no function, no event source mapping, no HTTP API.
    for left_out in ["IngestFunction", "ReconcileFunctionWebhooks", "WebhookApi"] {
        assert!(stack.left_out.iter().any(|r| r == left_out), "{left_out}: {:?}", stack.left_out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exsited_only_stack_deploys_no_reconcile_for_appzen_and_feeds_exsited_s() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;
    let mut parameters = parameters();
    parameters.push(("Destinations".to_owned(), "exsited".to_owned()));
    parameters.push(("ExsitedBaseUrl".to_owned(), "https://po-sync-local.exsited.invalid".to_owned()));
    let stack: ResolvedStack =
        stack_env::deploy(&config, &stack_env::default_template(), &parameters).await.unwrap_or_else(|e| panic!("{e}"));

    let mut names: Vec<&str> = stack.functions.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ingest", "notify", "notify-exsited", "reconcile-exsited"]);
    let ingest = stack.function("ingest").unwrap();
    assert_eq!(ingest.var("DESTINATIONS"), Some("exsited"));
    assert_eq!(queue_name(ingest.var("EXSITED_QUEUE_URL").unwrap()), "po-sync-webhooks-exsited.fifo");
    let reconcile = stack.function("reconcile-exsited").unwrap();
    assert_eq!((reconcile.var("DESTINATION"), reconcile.var("DESTINATIONS")), (Some("exsited"), Some("exsited")));
    assert_eq!(queue_name(reconcile.var("NOTIFY_QUEUE_URL").unwrap()), "po-sync-notifications.fifo");
    assert!(reconcile.var("LEDGER_TABLE_NAME").is_some_and(|table| !table.is_empty()));

    let mut sources: Vec<(&str, &str)> =
        stack.event_sources.iter().map(|s| (queue_name(&s.queue_url), s.function.as_str())).collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            ("po-sync-notifications.fifo", "notify"),
            ("po-sync-webhooks-dlq.fifo", "notify"),
            ("po-sync-webhooks-exsited-dlq.fifo", "notify-exsited"),
            ("po-sync-webhooks-exsited.fifo", "reconcile-exsited"),
        ]
    );
    // AppZen's webhook queue is in every stack (notify reads its DLQ), fed by nobody here.
    let queues = aws_sdk_sqs::Client::new(&config).list_queues().send().await.unwrap();
    assert!(queues.queue_urls().iter().any(|url| queue_name(url) == "po-sync-webhooks.fifo"), "{queues:?}");
}

/// A copy of the template without the first line `remove` (which must be in it): AppZen's function's, where
/// Exsited's (later in the template) has the same line.
fn template_without(name: &str, remove: &str) -> PathBuf {
    let text = std::fs::read_to_string(stack_env::default_template()).unwrap();
    assert!(text.contains(remove), "the template changed: {remove:?}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stack-env").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("template.yaml");
    std::fs::write(&copy, text.replacen(remove, "", 1)).unwrap();
    copy
}

async fn start_with(template: PathBuf, name: &str) -> (String, PathBuf) {
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stack-env").join(name).join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    let options = StackOptions { template, ..StackOptions::new(&logs) };
    match LocalStack::start(options, &LogSink::stderr()).await {
        Ok(stack) => {
            stack.shutdown().await;
            panic!("the pipeline started with a broken template");
        }
        Err(e) => (e.to_string(), logs),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_the_template_forgets_stops_the_pipeline_before_it_starts_naming_it() {
    // notify needs NOTIFY_TO: the function's own configuration reader says so, before any function starts.
    let template = template_without("no-notify-to", "          NOTIFY_TO: !Ref NotificationRecipients\n");
    let (error, logs) = start_with(template, "no-notify-to").await;
    assert!(error.contains("NotifyFunction (binary notify)"), "{error}");
    assert!(error.contains("configuration NOTIFY_TO: is required but not set"), "{error}");
    assert!(!logs.join("notify.env").exists(), "nothing was started: {error}");

    // The local pipeline wires reconcile's ledger from LEDGER_TABLE_NAME: without it, it says so.
    let template = template_without("no-ledger", "          LEDGER_TABLE_NAME: !Ref LedgerTable\n");
    let (error, _) = start_with(template, "no-ledger").await;
    assert!(error.contains("ReconcileFunction") && error.contains("LEDGER_TABLE_NAME"), "{error}");
}
