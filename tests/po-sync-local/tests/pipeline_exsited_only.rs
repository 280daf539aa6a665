//! End to end with `Destinations=exsited`: a stack without AppZen's side (no reconcile for AppZen, its secret or
//! alarms; the template's condition HasAppZen), the real binaries with the template's environment (ingest filling
//! Exsited's queue only, reconcile-exsited, notify and notify-exsited), moto, and the Exsited sandbox. The AppZen
//! sandbox runs all the same, to show that nothing reaches it.

use std::time::{Duration, Instant};

use po_sync::Decimal;
use po_sync_local::local::{LocalStack, NOTIFY_TO, SentEmail, StackOptions};
use po_sync_local::poller::LogSink;
use po_sync_test_support::fixture;

mod support;
use support::{admin, clean_po_numbered, decimal, exsited, exsited_orders, post_accepted, settle};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exsited_only_end_to_end() {
    let started = Instant::now();
    // In the target directory this test was built in, as pipeline_e2e's: two runs from two target directories
    // at once do not delete each other's logs.
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-exsited-only-logs");
    let _ = std::fs::remove_dir_all(&logs);
    let options = StackOptions { destinations: "exsited".to_owned(), ..StackOptions::new(&logs) };
    let stack = LocalStack::start(options, &LogSink::stderr()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<&str> = stack.stack.functions.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ingest", "notify", "notify-exsited", "reconcile-exsited"], "no reconcile for AppZen");
    // po-sync-admin is pointed at Exsited's reconcile only, as the stack's outputs would (no AppZen mapping or
    // reconcile: ReconcileEventSourceMappingId and ReconcileFunctionName are HasAppZen's).
    let flags = stack.admin_flags();
    assert!(flags.iter().any(|f| f == "--reconcile-exsited-function"), "{flags:?}");
    for absent in ["--reconcile-function", "--event-source-mapping"] {
        assert!(!flags.iter().any(|f| f == absent), "{absent} in {flags:?}");
    }
    assert_eq!(stack.reconcile_event_source(), None);

    a_clean_po_reaches_exsited_with_its_exact_total_and_nothing_reaches_appzen(&stack).await;
    komets_doc_sample_is_one_mismatch_e_mail_from_exsited_s_reconcile(&stack).await;

    let summary = stack
        .check_emitted_metrics(&[
            ("reconcile_exsited", "Records", &["outcome=upserted"]),
            ("reconcile_exsited", "Records", &["outcome=held"]),
            ("notify", "EmailsSent", &["kind=reconciliation_mismatch"]),
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let appzen_series: Vec<_> = summary.series.keys().filter(|key| key.service == "reconcile").collect();
    assert!(appzen_series.is_empty(), "no AppZen reconcile, no series of its: {appzen_series:?}");
    stack.shutdown().await;
    eprintln!("Exsited-only scenarios done in {:.1} s", started.elapsed().as_secs_f64());
}

async fn a_clean_po_reaches_exsited_with_its_exact_total_and_nothing_reaches_appzen(stack: &LocalStack) {
    eprintln!("--- scenario: a clean PO reaches Exsited, and nothing AppZen");
    post_accepted(stack, &clean_po_numbered(62001, "P062001")).await;
    settle(stack, SETTLE).await;
    let orders = exsited_orders(stack, "P062001");
    assert_eq!(orders.len(), 1, "{orders:#?}");
    let order = &orders[0];
    assert_eq!(decimal(&order["total"]), "1284.81".parse::<Decimal>().unwrap(), "{order:#}");
    assert_eq!(order["account_id"], "SUP-0001");
    assert_eq!(order["status"], "ACTIVE");
    let lines = order["lines"].as_array().unwrap();
    let line_total: Decimal = lines.iter().map(|line| decimal(&line["subtotal"])).sum();
    assert_eq!(line_total, decimal(&order["total"]), "the lines add up to the total, to the cent");
    assert!(stack.appzen_upserts().is_empty(), "nothing reaches AppZen: {:#?}", stack.appzen_upserts());
    // ingest filled Exsited's queue only: AppZen's (in every stack) was never delivered from.
    let appzen_queue = &stack.queues.webhooks;
    assert!(stack.invocations().iter().all(|i| i.queue_url != *appzen_queue), "AppZen's queue was delivered from");
    // The operator sees it through po-sync-admin, with the flags of a stack without AppZen.
    let history = admin(stack, &["history", "62001"]).await;
    let versions = history["versions"].as_array().expect("history lists versions");
    assert_eq!(versions.len(), 1, "{history:#}");
    assert_eq!(versions[0]["outcomes"], serde_json::json!(["upserted"]), "Exsited's one attempt: {history:#}");
}

async fn komets_doc_sample_is_one_mismatch_e_mail_from_exsited_s_reconcile(stack: &LocalStack) {
    eprintln!("--- scenario: Komet's documented sample (a mismatch), Exsited the only (so first) destination");
    let before = stack.sent_emails().len();
    let created = exsited(stack).purchase_orders().len();
    post_accepted(stack, &fixture("komet-doc-sample.json")).await;
    settle(stack, SETTLE).await;
    let emails: Vec<SentEmail> = stack.sent_emails().iter().skip(before).map(SentEmail::from_moto).collect();
    assert_eq!(emails.len(), 1, "one mismatch e-mail, from reconcile-exsited: {emails:#?}");
    let email = &emails[0];
    assert!(email.subject.contains("P002271"), "{}", email.subject);
    assert!(email.mentions("01-P002272"), "the mismatching invoice is named: {email:#?}");
    assert_eq!(email.recipients, NOTIFY_TO);
    assert_eq!(exsited(stack).purchase_orders().len(), created, "held from Exsited (policy block)");
    assert!(stack.appzen_upserts().is_empty(), "{:#?}", stack.appzen_upserts());
}
