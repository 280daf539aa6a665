//! End to end with `Destinations=appzen,exsited`: the real binaries with the template's environment (ingest
//! filling both queues, reconcile for AppZen, reconcile-exsited, notify and notify-exsited), moto, the AppZen
//! sandbox and the Exsited sandbox, which enforces Exsited's purchase-orders v3 contract. One stack, the
//! scenarios in order, each on its own PO ids.

use std::time::{Duration, Instant};

use po_sync::Decimal;
use po_sync_local::exsited_sandbox::Failure;
use po_sync_local::local::{LocalStack, SentEmail, StackOptions};
use po_sync_local::poller::LogSink;
use po_sync_test_support::fixture;
use serde_json::Value;

mod support;
use support::{
    admin, admin_with, clean_po_numbered, dearer, decimal, exsited, exsited_orders, post_accepted, settle, total_of,
};

const SETTLE: Duration = Duration::from_secs(120);

fn appzen_totals(stack: &LocalStack, po_number: &str) -> Vec<String> {
    stack
        .appzen_upserts()
        .iter()
        .filter(|request| request.body.contains(&format!("\"{po_number}\"")))
        .map(total_of)
        .collect()
}

/// Each line's `cancel_flag` in the last upsert of `po_number` AppZen accepted (`null` where absent).
fn appzen_cancel_flags(stack: &LocalStack, po_number: &str) -> Vec<Value> {
    let upserts = stack.appzen_upserts();
    let last = upserts.iter().rfind(|r| r.body.contains(&format!("\"{po_number}\""))).expect("an upsert of it");
    let body: Value = serde_json::from_str(&last.body).unwrap();
    body["purchase_order_lines"].as_array().unwrap().iter().map(|line| line["cancel_flag"].clone()).collect()
}

fn emails_since(stack: &LocalStack, before: usize) -> Vec<SentEmail> {
    stack.sent_emails().iter().skip(before).map(SentEmail::from_moto).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_destinations_end_to_end() {
    let started = Instant::now();
    // In the target directory this test was built in, as pipeline_e2e's: two runs from two target directories
    // at once do not delete each other's logs.
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-two-destinations-logs");
    let _ = std::fs::remove_dir_all(&logs);
    let options = StackOptions { destinations: "appzen,exsited".to_owned(), ..StackOptions::new(&logs) };
    let stack = LocalStack::start(options, &LogSink::stderr()).await.unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = stack.stack.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for name in ["ingest", "reconcile", "reconcile-exsited", "notify", "notify-exsited"] {
        assert!(names.contains(&name), "{name} is not deployed: {names:?}");
    }

    a_clean_po_reaches_both_with_exact_amounts_on_one_token(&stack).await;
    a_mismatch_is_one_e_mail_not_one_per_destination(&stack).await;
    a_newer_version_changes_the_exsited_po_instead_of_creating_another(&stack).await;
    exsited_down_does_not_delay_appzen_and_catches_up_once_back(&stack).await;
    a_401_gets_one_new_token_and_the_po_through(&stack).await;
    cancel_holds_and_mails_a_newer_version_until_reactivate_and_replay(&stack).await;
    pausing_exsited_holds_its_webhooks_while_appzen_goes_on(&stack).await;
    stack
        .check_emitted_metrics(&[
            ("reconcile", "Records", &["outcome=upserted"]),
            ("reconcile_exsited", "Records", &["outcome=upserted"]),
            ("reconcile_exsited", "Records", &["outcome=held"]),
            ("reconcile_exsited", "Records", &["outcome=retried"]),
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stack.shutdown().await;
    eprintln!("two-destination scenarios done in {:.1} s", started.elapsed().as_secs_f64());
}

async fn a_clean_po_reaches_both_with_exact_amounts_on_one_token(stack: &LocalStack) {
    eprintln!("--- scenario: a clean PO reaches AppZen and Exsited");
    post_accepted(stack, &clean_po_numbered(61001, "P061001")).await;
    settle(stack, SETTLE).await;
    assert_eq!(appzen_totals(stack, "P061001"), ["1284.81"]);
    let orders = exsited_orders(stack, "P061001");
    assert_eq!(orders.len(), 1, "{orders:#?}");
    let order = &orders[0];
    assert_eq!(decimal(&order["total"]), "1284.81".parse::<Decimal>().unwrap(), "{order:#}");
    assert_eq!(order["account_id"], "SUP-0001");
    assert_eq!(order["status"], "ACTIVE");
    let lines = order["lines"].as_array().unwrap();
    let line_total: Decimal = lines.iter().map(|line| decimal(&line["subtotal"])).sum();
    assert_eq!(line_total, decimal(&order["total"]), "the lines add up to the total, to the cent");
    let ledger = stack.ledger.clone().for_destination(po_sync::destination::Destination::Exsited);
    let entry = po_sync_aws::ledger::Ledger::read(&ledger, 61001).await.unwrap().expect("Exsited's ledger item");
    assert_eq!(entry.holds.as_ref().and_then(|held| held.uuid.as_deref()), order["id"].as_str(), "{entry:?}");
    assert_eq!(exsited(stack).tokens_issued(), 1, "one token for every request");
}

async fn a_mismatch_is_one_e_mail_not_one_per_destination(stack: &LocalStack) {
    eprintln!("--- scenario: Komet's documented sample (a mismatch) with both destinations");
    let before = stack.sent_emails().len();
    let created = exsited(stack).purchase_orders().len();
    post_accepted(stack, &fixture("komet-doc-sample.json")).await;
    settle(stack, SETTLE).await;
    let emails = emails_since(stack, before);
    let subjects: Vec<&str> = emails.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects.len(), 1, "one e-mail for the PO, not one per destination: {subjects:?}");
    assert!(appzen_totals(stack, "P002271").is_empty(), "held from AppZen (policy block)");
    assert_eq!(exsited(stack).purchase_orders().len(), created, "held from Exsited too");
}

async fn a_newer_version_changes_the_exsited_po_instead_of_creating_another(stack: &LocalStack) {
    eprintln!("--- scenario: A then B: Exsited's PO is changed, not created twice");
    let a = clean_po_numbered(61002, "P061002");
    post_accepted(stack, &a).await;
    settle(stack, SETTLE).await;
    let id = exsited_orders(stack, "P061002")[0]["id"].as_str().unwrap().to_owned();
    post_accepted(stack, &dearer(&a)).await;
    settle(stack, SETTLE).await;
    let orders = exsited_orders(stack, "P061002");
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(orders[0]["id"], id.as_str(), "the same Exsited PO");
    assert_eq!(decimal(&orders[0]["total"]), "1294.81".parse::<Decimal>().unwrap());
    assert_eq!(appzen_totals(stack, "P061002"), ["1284.81", "1294.81"]);
}

async fn exsited_down_does_not_delay_appzen_and_catches_up_once_back(stack: &LocalStack) {
    eprintln!("--- scenario: Exsited unavailable: AppZen is not held back");
    let sandbox = exsited(stack);
    sandbox.fail_next(Failure { status: Some(503), message: Some("maintenance".to_owned()), ..Failure::default() });
    let posted = Instant::now();
    for (id, number) in [(61003, "P061003"), (61004, "P061004")] {
        post_accepted(stack, &clean_po_numbered(id, number)).await;
    }
    // AppZen gets both while Exsited answers every request with a 503.
    let deadline = posted + Duration::from_secs(60);
    while appzen_totals(stack, "P061003").is_empty() || appzen_totals(stack, "P061004").is_empty() {
        assert!(Instant::now() < deadline, "AppZen did not get the POs while Exsited was down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("AppZen had both POs {:.1} s after they were posted, Exsited down", posted.elapsed().as_secs_f64());
    let exsited_queue = &stack.queues.exsited.as_ref().unwrap().webhooks;
    assert!(
        exsited_orders(stack, "P061003").is_empty() && exsited_orders(stack, "P061004").is_empty(),
        "Exsited was down"
    );
    assert!(stack.invocations().iter().any(|i| i.queue_url == *exsited_queue && !i.failed_ids.is_empty()));
    // Exsited back: each PO arrives once, and nothing was dead-lettered.
    sandbox.reset();
    settle(stack, SETTLE).await;
    for number in ["P061003", "P061004"] {
        assert_eq!(exsited_orders(stack, number).len(), 1, "{number} reaches Exsited once it is back");
        assert_eq!(appzen_totals(stack, number), ["1284.81"], "{number}: AppZen got it once");
    }
}

async fn a_401_gets_one_new_token_and_the_po_through(stack: &LocalStack) {
    eprintln!("--- scenario: Exsited's token expires: one new token, and the PO goes through");
    let sandbox = exsited(stack);
    post_accepted(stack, &clean_po_numbered(61005, "P061005")).await;
    settle(stack, SETTLE).await;
    let issued = sandbox.tokens_issued();
    assert!(sandbox.expire_tokens() >= 1, "a live token to expire");
    post_accepted(stack, &clean_po_numbered(61006, "P061006")).await;
    settle(stack, SETTLE).await;
    assert_eq!(exsited_orders(stack, "P061006").len(), 1);
    assert_eq!(sandbox.tokens_issued(), issued + 1, "one refresh after the 401");
}

async fn cancel_holds_and_mails_a_newer_version_until_reactivate_and_replay(stack: &LocalStack) {
    eprintln!("--- scenario: cancel, a newer Komet version is held and mailed; reactivate and replay send it");
    let a = clean_po_numbered(61007, "P061007");
    post_accepted(stack, &a).await;
    settle(stack, SETTLE).await;
    let id = exsited_orders(stack, "P061007")[0]["id"].as_str().unwrap().to_owned();

    let report = admin(stack, &["cancel", "61007", "--reason", "duplicate of P061001"]).await;
    eprintln!("cancel: {report}");
    assert_eq!(exsited(stack).purchase_order(&id).unwrap()["status"], "INACTIVE", "cancelled in Exsited");
    assert_eq!(report["destinations"][0]["state"], "done", "{report:#}");
    assert_eq!(appzen_totals(stack, "P061007"), ["1284.81", "1284.81"], "the version AppZen holds, sent again");
    let flags = appzen_cancel_flags(stack, "P061007");
    assert!(flags.len() > 1 && flags.iter().all(|f| *f == Value::Bool(true)), "cancelled in AppZen: {flags:?}");

    let before = stack.sent_emails().len();
    post_accepted(stack, &dearer(&a)).await;
    settle(stack, SETTLE).await;
    assert_eq!(appzen_totals(stack, "P061007"), ["1284.81", "1284.81"], "AppZen is not sent the newer version");
    let order = exsited(stack).purchase_order(&id).unwrap();
    assert_eq!((order["status"].as_str(), decimal(&order["total"])), (Some("INACTIVE"), "1284.81".parse().unwrap()));
    let emails = emails_since(stack, before);
    let subjects: Vec<&str> = emails.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects.len(), 2, "one e-mail per destination holding it: {subjects:?}");
    assert!(subjects.iter().all(|s| s.contains("P061007") && s.to_lowercase().contains("cancel")), "{subjects:?}");

    admin(stack, &["reactivate", "61007"]).await;
    assert_eq!(exsited(stack).purchase_order(&id).unwrap()["status"], "ACTIVE");
    assert!(appzen_cancel_flags(stack, "P061007").iter().all(|f| *f == Value::Bool(false)), "active in AppZen again");
    admin(stack, &["replay", "--po", "61007", "--latest"]).await;
    let exsited_queue = stack.queues.exsited.as_ref().unwrap().webhooks.clone();
    admin_with(stack, &[("--webhook-queue-url", &exsited_queue)], &["replay", "--po", "61007", "--latest"]).await;
    settle(stack, SETTLE).await;
    assert_eq!(
        appzen_totals(stack, "P061007"),
        ["1284.81", "1284.81", "1284.81", "1294.81"],
        "cancelled, active again, then the held version once released"
    );
    let order = exsited(stack).purchase_order(&id).unwrap();
    assert_eq!(decimal(&order["total"]), "1294.81".parse::<Decimal>().unwrap(), "Exsited's PO changed, not another");
    assert_eq!(exsited_orders(stack, "P061007").len(), 1);
}

async fn pausing_exsited_holds_its_webhooks_while_appzen_goes_on(stack: &LocalStack) {
    eprintln!("--- scenario: po-sync-admin pause on Exsited's mapping: AppZen goes on, Exsited waits for resume");
    let exsited_queue = stack.queues.exsited.as_ref().unwrap().webhooks.clone();
    let mapping = po_sync_local::poller::mapping_uuid("reconcile-exsited", &exsited_queue);
    let flags = [("--event-source-mapping", mapping.as_str()), ("--webhook-queue-url", exsited_queue.as_str())];
    let paused = admin_with(stack, &flags, &["pause"]).await;
    assert_eq!(paused["state"], "Disabled", "{paused:#}");
    post_accepted(stack, &clean_po_numbered(61008, "P061008")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while appzen_totals(stack, "P061008").is_empty() {
        assert!(Instant::now() < deadline, "AppZen did not get the PO while Exsited was paused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(exsited_orders(stack, "P061008").is_empty(), "paused: nothing reaches Exsited");
    let resumed = admin_with(stack, &flags, &["resume"]).await;
    assert_eq!(resumed["state"], "Enabled", "{resumed:#}");
    settle(stack, SETTLE).await;
    assert_eq!(exsited_orders(stack, "P061008").len(), 1, "delivered once resumed");
    assert_eq!(appzen_totals(stack, "P061008"), ["1284.81"]);
}
