//! End to end: the three real function binaries under `cargo lambda watch`, moto (SQS, SES), the AppZen
//! sandbox and the local SQS poller, driven the way Komet drives ingest.
//!
//! The stack is started once and the scenarios run one after another in a single test, so it is stopped
//! (by PID) when the test ends, passes or panics. Each scenario waits until every queue is empty, which is
//! the end of processing (see `LocalStack::wait_until_idle`), then checks what AppZen received and what was
//! mailed since the scenario began. Each request is its own send (ingest deduplicates on the request id, not
//! the body), and the version ledger decides what reaches AppZen: scenarios use their own PO ids so one
//! scenario's versions do not supersede another's.

use std::time::{Duration, Instant};

use clap::Parser as _;
use po_sync_aws::ledger::Ledger;
use po_sync_local::appzen_sandbox::Failure;
use po_sync_local::local::{LocalStack, NOTIFY_TO, SentEmail, StackOptions};
use po_sync_local::poller::LogSink;
use po_sync_test_support::{fixture, workspace_root};

mod support;
use support::{admin, admin_run, clean_po_numbered, dearer, total_of};

const SETTLE: Duration = Duration::from_secs(120);

struct Scenario<'a> {
    stack: &'a LocalStack,
    emails_before: usize,
    invocations_before: usize,
}

impl<'a> Scenario<'a> {
    fn begin(stack: &'a LocalStack, name: &str) -> Self {
        eprintln!("--- scenario: {name}");
        stack.sandbox.reset();
        Scenario { stack, emails_before: stack.sent_emails().len(), invocations_before: stack.invocations().len() }
    }

    async fn post(&self, body: &[u8]) -> (u16, String) {
        self.stack.post_webhook(body).await.unwrap()
    }

    async fn post_accepted(&self, body: &[u8]) {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 200, "ingest refused a valid webhook: {answer}");
        assert!(answer.contains("\"status\":\"1\""), "{answer}");
    }

    async fn settle(&self) {
        self.stack.wait_until_idle(SETTLE).await.unwrap_or_else(|e| panic!("{e}"));
    }

    fn new_emails(&self) -> Vec<SentEmail> {
        self.stack.sent_emails().iter().skip(self.emails_before).map(SentEmail::from_moto).collect()
    }

    fn new_invocations(&self) -> usize {
        self.stack.invocations().len() - self.invocations_before
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_end_to_end() {
    let started = Instant::now();
    let since = chrono::Utc::now().timestamp_millis().to_string();
    // In the target directory this test was built in (`target/`, or `CARGO_TARGET_DIR`), so two runs from two
    // target directories at once do not delete and interleave each other's logs (the metrics check reads them).
    let target =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("CARGO_TARGET_TMPDIR is <target>/tmp");
    let logs = target.join("e2e-logs");
    let _ = std::fs::remove_dir_all(&logs);
    let options = StackOptions::new(&logs);
    let stack = LocalStack::start(options, &LogSink::stderr()).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("stack ready after {:.1} s", started.elapsed().as_secs_f64());

    komets_doc_sample_is_mailed_as_a_mismatch_and_not_sent(&stack).await;
    a_clean_po_reaches_appzen_as_the_golden_body(&stack).await;
    appzen_failing_twice_is_retried_and_forwarded_once(&stack).await;
    appzen_refusing_is_mailed_with_its_message(&stack).await;
    the_refused_po_is_kept_and_replayed_from_the_archive_once_fixed(&stack).await;
    two_versions_of_a_po_reach_appzen_in_order(&stack).await;
    a_revert_a_b_a_ends_with_appzen_on_a(&stack).await;
    history_lists_a_b_a_newest_first(&stack).await;
    a_window_replays_exactly_its_held_versions(&stack, &since).await;
    a_pause_holds_every_webhook_and_resume_delivers_them_in_order(&stack).await;
    verify_reports_no_drift_then_each_po_changed_behind_po_syncs_back(&stack).await;
    invoices_are_archived_before_the_upsert_and_attached_to_the_e_mail(&stack).await;
    the_same_body_sent_twice_is_upserted_once(&stack).await;
    a_bad_payload_is_refused_and_nothing_moves(&stack).await;
    a_record_that_keeps_failing_is_dead_lettered_and_mailed(&stack).await;
    a_parked_version_redriven_after_a_newer_one_is_superseded(&stack).await;
    a_po_appzen_keeps_failing_does_not_hold_back_the_others_of_its_batch(&stack).await;
    refused_credentials_hand_the_po_back_mail_the_outage_once_and_it_goes_through_when_fixed(&stack).await;
    nine_pos_of_nine_groups_go_to_appzen_together_in_one_invocation(&stack).await;
    // Every EMF line the functions printed is valid, agrees with the poller and SES, and shows the above.
    stack
        .check_emitted_metrics(&[
            ("ingest", "WebhooksAccepted", &[]),
            ("ingest", "WebhooksRefused", &["reason=invalid_payload"]),
            ("ingest", "WebhooksRefused", &["reason=unauthorized"]),
            ("reconcile", "Records", &["outcome=held"]),
            ("reconcile", "Records", &["outcome=upserted"]),
            ("reconcile", "Records", &["outcome=rejected"]),
            ("reconcile", "Records", &["outcome=duplicate"]),
            ("reconcile", "Records", &["outcome=retried"]),
            ("reconcile", "Discrepancies", &[]),
            ("reconcile", "AppZenLatency", &[]),
            ("reconcile", "AppZenAttempts", &[]),
            ("reconcile", "InvoicesArchived", &[]),
            ("reconcile", "InvoicesNotArchived", &[]),
            ("notify", "EmailsSent", &["kind=reconciliation_mismatch"]),
            ("notify", "EmailsSent", &["kind=appzen_rejected"]),
            ("notify", "EmailsSent", &["kind=dead_lettered"]),
            ("notify", "EmailsSent", &["kind=appzen_outage"]),
            ("reconcile", "AppZenFailures", &["cause=unavailable"]),
            ("reconcile", "AppZenFailures", &["cause=credentials"]),
            ("notify", "WebhooksParked", &[]),
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    stack.shutdown().await;
    eprintln!("end-to-end scenarios done in {:.1} s", started.elapsed().as_secs_f64());
}

async fn komets_doc_sample_is_mailed_as_a_mismatch_and_not_sent(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "Komet's doc sample");
    scenario.post_accepted(&fixture("komet-doc-sample.json")).await;
    scenario.settle().await;

    assert!(stack.appzen_upserts().is_empty(), "a PO that does not add up is not sent: {:?}", stack.appzen_upserts());
    let emails = scenario.new_emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    let email = &emails[0];
    assert!(email.subject.contains("P002271"), "{}", email.subject);
    assert!(email.mentions("01-P002272"), "the mismatching invoice is named: {email:#?}");
    assert_eq!(email.recipients, NOTIFY_TO);
}

async fn a_clean_po_reaches_appzen_as_the_golden_body(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "a clean PO");
    scenario.post_accepted(&fixture("komet-clean-po.json")).await;
    scenario.settle().await;

    let upserts = stack.appzen_upserts();
    assert_eq!(upserts.len(), 1, "{upserts:#?}");
    // The fixture's invoice links are on Komet's domain, which the local pipeline does not reach (only the
    // sandbox's address is allowed): each invoice carries that note, and the rest is the golden body, number
    // text for number text.
    use po_sync::json::Value;
    let mut sent = po_sync::json::parse(upserts[0].body.as_bytes()).unwrap();
    let note = "host files.kometsales.com is not on the invoice host allow-list (INVOICE_HOSTS)";
    let mut notes = 0;
    if let Value::Object(members) = &mut sent {
        for (key, value) in members.iter_mut() {
            let (Value::Object(custom), "custom_json") = (value, key.as_ref()) else { continue };
            for (key, invoices) in custom.iter_mut() {
                let (Value::Array(invoices), "komet_invoices") = (invoices, key.as_ref()) else { continue };
                for invoice in invoices.iter_mut() {
                    if let Value::Object(fields) = invoice {
                        let before = fields.len();
                        fields.retain(|(k, v)| {
                            !(k == "archive_incomplete" && matches!(v, Value::String(s) if s == note))
                        });
                        notes += before - fields.len();
                    }
                }
            }
        }
    }
    assert_eq!(notes, 2, "each invoice says why its PDF was not kept: {}", upserts[0].body);
    let golden = std::fs::read(workspace_root().join("shared/po-sync/tests/golden/appzen-clean-po.json")).unwrap();
    assert_eq!(sent, po_sync::json::parse(&golden).unwrap(), "AppZen received:\n{}", upserts[0].body);
    assert_eq!(upserts[0].response_status, Some(201));
    assert!(scenario.new_emails().is_empty(), "{:#?}", scenario.new_emails());
}

async fn appzen_failing_twice_is_retried_and_forwarded_once(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "AppZen answers 500 twice, then accepts");
    stack.sandbox.fail_next(Failure { times: Some(2), status: Some(500), ..Failure::default() });
    scenario.post_accepted(&clean_po_numbered(48220, "P004420")).await;
    scenario.settle().await;

    let statuses: Vec<Option<u16>> = stack.appzen_upserts().iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(201)]);
    assert!(stack.appzen_upserts().iter().all(|r| r.json().unwrap()["purchase_order_number"] == "P004420"));
    assert!(
        scenario.new_emails().is_empty(),
        "a transient failure that recovers mails nobody: {:#?}",
        scenario.new_emails()
    );
}

async fn appzen_refusing_is_mailed_with_its_message(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "AppZen answers 400");
    let message = "Error code : 5e1f2a3b - entity_id 2 is not an entity of this customer";
    stack.sandbox.fail_next(Failure {
        times: Some(1),
        status: Some(400),
        message: Some(message.to_owned()),
        ..Failure::default()
    });
    scenario.post_accepted(&clean_po_numbered(48230, "P004430")).await;
    scenario.settle().await;

    let statuses: Vec<Option<u16>> = stack.appzen_upserts().iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [Some(400)], "a refusal is not retried");
    let emails = scenario.new_emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert!(emails[0].subject.contains("P004430"), "{}", emails[0].subject);
    assert!(emails[0].mentions("entity_id 2 is not an entity of this customer"), "{:#?}", emails[0]);
}

/// Each kept version's attempts, newest version first, newest attempt first (`history --json`).
fn attempt_words(history: &serde_json::Value) -> Vec<Vec<String>> {
    let versions = history["versions"].as_array().expect("history lists versions");
    versions
        .iter()
        .map(|v| v["outcomes"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect())
        .collect()
}

fn ledger_words(history: &serde_json::Value) -> Vec<Vec<String>> {
    let versions = history["versions"].as_array().expect("history lists versions");
    versions
        .iter()
        .map(|v| v["ledger"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect())
        .collect()
}

async fn the_refused_po_is_kept_and_replayed_from_the_archive_once_fixed(stack: &LocalStack) {
    let scenario =
        Scenario::begin(stack, "the refused PO, from the archive: history, then replay once AppZen is fixed");
    // AppZen refused P004430 (id 48230) above; ingest kept its body before answering Komet.
    let history = admin(stack, &["history", "48230"]).await;
    assert_eq!(ledger_words(&history), [vec!["rejected".to_owned()]], "{history:#}");
    assert_eq!(attempt_words(&history), [vec!["rejected".to_owned()]], "{history:#}");
    assert_eq!(history["attempts"][0]["httpStatus"], 400, "{history:#}");
    assert_eq!(history["versions"][0]["bytes"], clean_po_numbered(48230, "P004430").len());

    // The cause is fixed (the sandbox accepts again): the operator replays the kept version.
    let replayed = admin(stack, &["replay", "--po", "48230", "--latest"]).await;
    assert_eq!(replayed["version"], history["versions"][0]["version"], "sent with the version it had");
    scenario.settle().await;
    let statuses: Vec<Option<u16>> = stack.appzen_upserts().iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [Some(201)], "the refused version reached AppZen");
    let entry = stack.ledger.read(48230).await.unwrap().expect("the ledger has the PO");
    assert_eq!(entry.holds.map(|h| h.version), history["versions"][0]["version"].as_i64());

    // Replayed once more, it is a duplicate: AppZen is not called again.
    admin(stack, &["replay", "--po", "48230"]).await;
    scenario.settle().await;
    assert_eq!(stack.appzen_upserts().len(), 1, "a version AppZen holds is not sent again");
    assert!(scenario.new_emails().is_empty(), "{:#?}", scenario.new_emails());
    // The version's whole story, newest first: refused, replayed, upserted, replayed, a duplicate.
    let history = admin(stack, &["history", "48230"]).await;
    assert_eq!(
        attempt_words(&history),
        [["duplicate", "replayed", "upserted", "replayed", "rejected"].map(str::to_owned).to_vec()],
        "{history:#}"
    );
}

async fn history_lists_a_b_a_newest_first(stack: &LocalStack) {
    let history = admin(stack, &["history", "48280"]).await;
    let words = ledger_words(&history);
    assert_eq!(words.len(), 3, "A, B and A are kept: {history:#}");
    assert_eq!(words[0], ["upserted", "appzen_holds"]);
    assert_eq!(words[1..], [vec!["older".to_owned()], vec!["older".to_owned()]]);
    // What became of each version at AppZen, from the history table: all three reached it.
    assert!(attempt_words(&history).iter().all(|outcomes| outcomes.contains(&"upserted".to_owned())), "{history:#}");
    let versions: Vec<i64> =
        history["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] > w[1]), "newest first: {versions:?}");
}

async fn a_window_replays_exactly_its_held_versions(stack: &LocalStack, since: &str) {
    let scenario = Scenario::begin(stack, "replay --since: the held versions of the run so far");
    // Of everything sent so far, only Komet's doc sample (a mismatch under `block`) is still held; the refused
    // PO was replayed and taken, A, B, A reached AppZen.
    let sample = po_sync::komet::parse_webhook(&fixture("komet-doc-sample.json")).unwrap();
    let dry = admin(stack, &["replay", "--since", since, "--outcome", "held", "--dry-run"]).await;
    let chosen: Vec<(u64, &str)> = dry["replayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["poId"].as_u64().unwrap(), r["lastOutcome"].as_str().unwrap()))
        .collect();
    assert_eq!(chosen, [(sample.id, "held")], "{dry:#}");
    assert!(dry["inWindow"].as_u64().unwrap() > 5, "the whole run is in the window: {dry:#}");

    // Sent for real, the sample is judged again: it still does not add up, so it is held again, AppZen is not
    // called and the mismatch e-mail of that version is not sent a second time.
    let sent = admin(stack, &["replay", "--since", since, "--outcome", "held"]).await;
    assert_eq!(sent["replayed"].as_array().unwrap().len(), 1, "{sent:#}");
    scenario.settle().await;
    assert!(stack.appzen_upserts().is_empty(), "{:?}", stack.appzen_upserts());
    assert!(scenario.new_emails().is_empty(), "{:#?}", scenario.new_emails());
    let history = admin(stack, &["history", &sample.id.to_string()]).await;
    assert_eq!(attempt_words(&history), [["held", "replayed", "held"].map(str::to_owned).to_vec()], "{history:#}");
}

async fn verify_reports_no_drift_then_each_po_changed_behind_po_syncs_back(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "verify: AppZen read back, then changed behind po-sync's back");
    // The scenarios before reset the sandbox (AppZen forgot their POs): verify what this one sends.
    let since = chrono::Utc::now().timestamp_millis().to_string();
    let changed = clean_po_numbered(48390, "P004590");
    let a = clean_po_numbered(48391, "P004591");
    let b = dearer(&a);
    let lost = clean_po_numbered(48392, "P004592");
    for body in [&changed, &a, &lost] {
        scenario.post_accepted(body).await;
    }
    scenario.settle().await;
    scenario.post_accepted(&b).await;
    scenario.settle().await;
    assert_eq!(stack.appzen_upserts().len(), 4);

    let clean = admin(stack, &["verify", "--since", &since]).await;
    let states: Vec<(&str, &str)> = clean["pos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["poId"].as_str().unwrap(), p["appzen"]["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("48390", "matches"), ("48391", "matches"), ("48392", "matches")], "{clean:#}");
    let po = admin(stack, &["po", "48391"]).await;
    assert_eq!(po["appzen"]["state"], "matches", "{po:#}");
    assert_eq!(po["appzen"]["version"], po["entry"]["appzen"]["version"], "{po:#}");

    // Behind po-sync's back: someone edits P004590's total in AppZen, someone sends P004591's first version
    // again, and AppZen loses P004592.
    let upserts = stack.appzen_upserts();
    let first_of = |number: &str| {
        let needle = format!("\"purchase_order_number\":\"{number}\"");
        upserts.iter().find(|r| r.body.contains(&needle)).map(|r| r.body.clone()).expect("upserted")
    };
    let sent = first_of("P004590");
    let edited = sent.replacen("\"amount\":1284.81", "\"amount\":1.00", 1);
    assert_ne!(edited, sent, "the total is in the body as sent");
    for body in [edited, first_of("P004591")] {
        let answer = reqwest::Client::new()
            .post(format!("{}/dictionary-data-services/purchase-order", stack.sandbox.base_url()))
            .header("x-api-key", "local-api-key")
            .header("customer-id", "local-customer")
            .header("customer-key", "local-customer-key")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "updated behind po-sync's back");
    }
    assert!(stack.sandbox.forget("P004592"));

    let (clean_run, drift) = admin_run(stack, &[], &["verify", "--since", &since]).await;
    assert!(!clean_run, "verify fails (exit code 1) on drift: {drift:#}");
    let pos = drift["pos"].as_array().unwrap();
    assert_eq!(pos[0]["appzen"]["state"], "differs", "{drift:#}");
    assert_eq!(
        pos[0]["appzen"]["differences"],
        serde_json::json!([{"field": "total_amount.amount", "expected": "1284.81", "held": "1.00"}]),
        "{drift:#}"
    );
    let entry_a = stack.ledger.read(48391).await.unwrap().unwrap();
    assert_eq!(pos[1]["appzen"]["state"], "older", "{drift:#}");
    assert_eq!(pos[1]["appzen"]["version"], entry_a.holds.as_ref().unwrap().version);
    assert!(pos[1]["appzen"]["holdsVersion"].as_i64().unwrap() < entry_a.holds.unwrap().version, "{drift:#}");
    assert_eq!(pos[2]["appzen"]["state"], "missing", "{drift:#}");
    let po = admin(stack, &["po", "48390"]).await;
    assert_eq!(po["appzen"]["state"], "differs", "po shows it too: {po:#}");
    assert_eq!(stack.appzen_upserts().len(), 6, "verify reads; it sends nothing");

    // --repair sends po-sync's version of each again, though the ledger believes AppZen holds it; then verify
    // runs clean.
    let (repaired_run, repaired) = admin_run(stack, &[], &["verify", "--since", &since, "--repair"]).await;
    assert!(!repaired_run, "still exit code 1: the repairs are queued, not yet seen");
    let queued: Vec<&str> =
        repaired["pos"].as_array().unwrap().iter().map(|p| p["repair"]["outcome"].as_str().unwrap()).collect();
    assert!(queued.iter().all(|o| o.starts_with("queued as SQS message")), "{repaired:#}");
    scenario.settle().await;
    let resent: Vec<(String, String)> = stack.appzen_upserts()[6..]
        .iter()
        .map(|r| (r.json().unwrap()["purchase_order_number"].as_str().unwrap().to_owned(), total_of(r)))
        .collect();
    let mut resent_sorted = resent.clone();
    resent_sorted.sort();
    assert_eq!(
        resent_sorted,
        [("P004590", "1284.81"), ("P004591", "1294.81"), ("P004592", "1284.81")]
            .map(|(n, t)| (n.to_owned(), t.to_owned())),
        "each PO got po-sync's version again, B for the PO whose A was sent behind its back: {resent:?}"
    );
    let after = admin(stack, &["verify", "--since", &since]).await;
    assert!(after["pos"].as_array().unwrap().iter().all(|p| p["appzen"]["state"] == "matches"), "{after:#}");
    let history = admin(stack, &["history", "48391"]).await;
    assert_eq!(attempt_words(&history)[0], ["upserted", "replayed", "upserted"], "{history:#}");
    assert!(scenario.new_emails().is_empty(), "{:#?}", scenario.new_emails());
}

async fn a_pause_holds_every_webhook_and_resume_delivers_them_in_order(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "pause, two versions of a PO, resume");
    let paused = admin(stack, &["pause"]).await;
    assert_eq!((paused["stateBefore"].as_str(), paused["state"].as_str()), (Some("Enabled"), Some("Disabled")));

    // Komet is still answered and every webhook queued, but nothing reaches AppZen.
    let first = clean_po_numbered(48290, "P004490");
    let second = String::from_utf8(first.clone()).unwrap().replacen(
        "\"arrivalDate\": \"2026-02-11\"",
        "\"arrivalDate\": \"2026-02-12\"",
        1,
    );
    assert_ne!(second.as_bytes(), first.as_slice());
    scenario.post_accepted(&first).await;
    scenario.post_accepted(second.as_bytes()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stack.appzen_upserts().is_empty(), "paused: {:?}", stack.appzen_upserts());
    let again = admin(stack, &["pause"]).await;
    assert_eq!(again["webhooksWaiting"], 2, "{again:#}");

    let resumed = admin(stack, &["resume"]).await;
    assert_eq!(resumed["state"], "Enabled", "{resumed:#}");
    scenario.settle().await;
    let dates: Vec<String> = stack
        .appzen_upserts()
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["end_date"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dates, ["2026-02-11", "2026-02-12"], "both versions, in the order Komet sent them");
    assert!(scenario.new_emails().is_empty(), "nothing parked, nobody mailed: {:#?}", scenario.new_emails());
    let entry = stack.ledger.read(48290).await.unwrap().expect("the ledger has the PO");
    assert_eq!(entry.latest.map(|l| l.outcome), Some(po_sync::ledger::LedgerOutcome::Upserted));
}

async fn two_versions_of_a_po_reach_appzen_in_order(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "the same PO twice, with different totals");
    let first = clean_po_numbered(48240, "P004440");
    // The second version: one item costs 10.00 more, and its invoice, the subtotal and the total say so.
    let second = String::from_utf8(first.clone())
        .unwrap()
        .replacen("\"totalCost\": 400.20", "\"totalCost\": 410.20", 1)
        .replacen("\"invoiceAmount\": 400.50", "\"invoiceAmount\": 410.50", 1)
        .replacen("\"subTotal\": 1234.56", "\"subTotal\": 1244.56", 1)
        .replacen("\"total\": 1284.81", "\"total\": 1294.81", 1);
    assert_ne!(second.as_bytes(), first.as_slice());
    scenario.post_accepted(&first).await;
    scenario.post_accepted(second.as_bytes()).await;
    scenario.settle().await;

    let upserts = stack.appzen_upserts();
    let seen: Vec<(String, Option<u16>)> = upserts.iter().map(|r| (total_of(r), r.response_status)).collect();
    assert_eq!(seen, [("1284.81".to_owned(), Some(201)), ("1294.81".to_owned(), Some(200))], "in Komet's order");
    assert!(scenario.new_emails().is_empty(), "{:#?}", scenario.new_emails());
}

async fn a_revert_a_b_a_ends_with_appzen_on_a(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "A, B, then A again within a minute");
    let a = clean_po_numbered(48280, "P004480");
    let b = dearer(&a);
    for body in [&a, &b, &a] {
        scenario.post_accepted(body).await;
    }
    scenario.settle().await;

    let totals: Vec<String> = stack.appzen_upserts().iter().map(total_of).collect();
    assert_eq!(totals, ["1284.81", "1294.81", "1284.81"], "Komet's last word was A, and AppZen ends on it");
    let entry = stack.ledger.read(48280).await.unwrap().expect("the ledger has the PO");
    let holds = entry.holds.expect("AppZen holds a version");
    assert_eq!(holds.body_sha256, po_sync::message::sha256_hex(&a));
    assert_eq!(entry.latest.map(|l| l.version), Some(holds.version), "AppZen holds the latest version");
}

/// The clean PO under `id` with its two invoice links on the sandbox's file server, at `paths`.
fn with_invoice_links(body: &[u8], stack: &LocalStack, paths: [&str; 2]) -> Vec<u8> {
    let base = stack.sandbox.base_url();
    String::from_utf8(body.to_vec())
        .unwrap()
        .replacen("https://files.kometsales.com/invoices/01-P004410.pdf", &format!("{base}{}", paths[0]), 1)
        .replacen("https://files.kometsales.com/invoices/01-P004411.pdf", &format!("{base}{}", paths[1]), 1)
        .into_bytes()
}

async fn invoices_are_archived_before_the_upsert_and_attached_to_the_e_mail(stack: &LocalStack) {
    let scenario = Scenario::begin(
        stack,
        "invoice PDFs are archived, the expired one is noted, and a mismatch e-mail attaches them",
    );
    let clean = with_invoice_links(
        &clean_po_numbered(48300, "P004500"),
        stack,
        ["/invoices/01-P004410.pdf", "/expired/01-P004411.pdf"],
    );
    scenario.post_accepted(&clean).await;
    scenario.settle().await;
    let upserts = stack.appzen_upserts();
    assert_eq!(upserts.len(), 1, "the expired link does not hold the PO back: {upserts:#?}");
    let body = upserts[0].json().unwrap();
    let invoices = &body["custom_json"]["komet_invoices"];
    let archived = invoices[0]["archived_file"].as_str().unwrap_or_default();
    assert!(archived.starts_with("s3://") && archived.contains("/invoices/48300/01-P004410/"), "{body:#}");
    assert_eq!(invoices[1]["archive_incomplete"], "the link has expired or is gone (HTTP 403)", "{body:#}");

    // A PO that does not add up (one invoice dearer than its items): the e-mail carries that invoice's PDF.
    let mismatched = String::from_utf8(with_invoice_links(
        &clean_po_numbered(48310, "P004510"),
        stack,
        ["/invoices/01-P004410.pdf", "/not-a-pdf/01-P004411.pdf"],
    ))
    .unwrap()
    .replacen("\"invoiceAmount\": 884.31", "\"invoiceAmount\": 885.31", 1);
    scenario.post_accepted(mismatched.as_bytes()).await;
    scenario.settle().await;
    let emails = scenario.new_emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    let message = mail_parser::MessageParser::default().parse(emails[0].raw.as_bytes()).expect("a MIME message");
    let attached: Vec<(String, Vec<u8>)> = message
        .attachments()
        .map(|a| (mail_parser::MimeHeaders::attachment_name(a).unwrap_or_default().to_owned(), a.contents().to_vec()))
        .collect();
    let expected = po_sync_local::appzen_sandbox::invoice_pdf_bytes("01-P004410.pdf");
    assert_eq!(
        attached,
        [("invoice-01-P004410.pdf".to_owned(), expected)],
        "the discrepant invoice's PDF, byte for byte"
    );
    assert!(emails[0].text.contains("(attached)"), "{}", emails[0].text);
}

async fn the_same_body_sent_twice_is_upserted_once(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "the same body in two requests");
    let body = clean_po_numbered(48290, "P004490");
    scenario.post_accepted(&body).await;
    scenario.post_accepted(&body).await;
    scenario.settle().await;

    assert_eq!(stack.appzen_upserts().len(), 1, "{:#?}", stack.appzen_upserts());
    let latest = stack.ledger.read(48290).await.unwrap().and_then(|e| e.latest).expect("a settled version");
    assert_eq!(latest.outcome, po_sync::ledger::LedgerOutcome::Duplicate, "the second send was seen, not re-sent");
    let reconciled: usize = stack
        .invocations()
        .iter()
        .skip(scenario.invocations_before)
        .filter(|i| i.queue_url == stack.queues.webhooks)
        .map(|i| i.message_ids.len())
        .sum();
    assert_eq!(reconciled, 2, "both requests were queued and reconciled");
}

async fn a_bad_payload_is_refused_and_nothing_moves(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "a bad payload");
    let (status, answer) = scenario.post(br#"{"id": 77, "poNumber": "P0077", "total": "ten"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("\"status\":\"0\"") && answer.contains("total"), "the answer says what is wrong: {answer}");
    let (status, answer) =
        stack.post_webhook_as(&clean_po_numbered(48270, "P004470"), Some(("komet", "wrong"))).await.unwrap();
    assert!(status == 401 || status == 403, "wrong credentials: {status} {answer}");
    scenario.settle().await;

    assert!(stack.appzen_upserts().is_empty());
    assert!(scenario.new_emails().is_empty());
    assert_eq!(scenario.new_invocations(), 0, "nothing was queued, so no function ran");
}

async fn a_record_that_keeps_failing_is_dead_lettered_and_mailed(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "AppZen keeps failing: the webhook is dead-lettered");
    stack.sandbox.fail_next(Failure { times: None, status: Some(503), ..Failure::default() });
    scenario.post_accepted(&clean_po_numbered(48250, "P004450")).await;
    scenario.settle().await;

    let upserts = stack.appzen_upserts();
    assert!(upserts.len() >= 3, "tried on each of the 3 receives before the DLQ: {}", upserts.len());
    assert!(upserts.iter().all(|r| r.response_status == Some(503)));
    let emails = scenario.new_emails();
    assert_eq!(
        emails.len(),
        1,
        "{emails:#?}\nthe poller's invocations since the scenario began: {:#?}\nlogs in {}",
        &stack.invocations()[scenario.invocations_before..],
        stack.logs_dir().display()
    );
    assert!(emails[0].subject.contains("P004450"), "{}", emails[0].subject);
    let reconcile_attempts: Vec<_> = stack
        .invocations()
        .into_iter()
        .skip(scenario.invocations_before)
        .filter(|i| i.queue_url == stack.queues.webhooks)
        .collect();
    assert_eq!(reconcile_attempts.len(), 3, "maxReceiveCount receives: {reconcile_attempts:#?}");
    assert!(reconcile_attempts.iter().all(|i| i.failed_ids == i.message_ids), "each reported the record as failed");
    let dead_letter_deliveries = stack
        .invocations()
        .iter()
        .skip(scenario.invocations_before)
        .filter(|i| i.queue_url == stack.queues.webhooks_dlq && i.error.is_none() && i.failed_ids.is_empty())
        .count();
    assert_eq!(dead_letter_deliveries, 1, "notify received the dead letter once: {:#?}", stack.invocations());
    // Nothing accepted is lost: the webhook waits, unchanged, in the parked queue for a redrive.
    assert!(emails[0].text.contains("kept for 14 days"), "{}", emails[0].text);
    let received = stack
        .sqs
        .receive_message()
        .queue_url(&stack.queues.webhooks_parked)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("read the parked queue");
    // Looked at, not taken: visible again at once for the operator's redrive.
    for message in received.messages() {
        stack
            .sqs
            .change_message_visibility()
            .queue_url(&stack.queues.webhooks_parked)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await
            .expect("release the parked message");
    }
    let parked: Vec<_> =
        received.messages().iter().filter_map(|m| m.body()).map(po_sync::message::WebhookEnvelope::from_json).collect();
    assert_eq!(parked.len(), 1, "one parked webhook: {parked:?}");
    let envelope = parked[0].as_ref().expect("the parked body is the envelope, unchanged");
    assert_eq!(envelope.po.po_number, "P004450");
    // The PO's history ends with the parking, after each retried attempt.
    let history = admin(stack, &["history", "48250"]).await;
    let words = attempt_words(&history);
    assert_eq!(words.len(), 1, "{history:#}");
    assert_eq!(words[0].first().map(String::as_str), Some("parked"), "{history:#}");
    assert!(words[0][1..].iter().all(|w| w == "retried") && words[0].len() == 4, "{history:#}");
    stack.sandbox.reset();
}

async fn a_parked_version_redriven_after_a_newer_one_is_superseded(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "the parked webhook is redriven after a newer version went through");
    // P004450 (id 48250) waits in the parked queue since AppZen kept failing. AppZen is back, and Komet sends
    // a newer version, which goes through.
    let newer = dearer(&clean_po_numbered(48250, "P004450"));
    scenario.post_accepted(&newer).await;
    scenario.settle().await;
    let totals: Vec<String> = stack.appzen_upserts().iter().map(total_of).collect();
    assert_eq!(totals, ["1294.81"]);

    // The operator redrives the parked webhook, as the README says.
    let cli = po_sync_admin::Cli::parse_from([
        "po-sync-admin",
        "--webhook-queue-url",
        &stack.queues.webhooks,
        "--parked-queue-url",
        &stack.queues.webhooks_parked,
        "--ledger-table",
        stack.ledger.table(),
        "--history-table",
        stack.stack.required_var("reconcile", "HISTORY_TABLE_NAME").expect("the template names a history table"),
        "redrive",
        "--timeout",
        "120",
    ]);
    let clients = po_sync_admin::Clients::new(&stack.moto.sdk_config().await);
    let mut report = Vec::new();
    let done = po_sync_admin::execute(&cli, &clients, None, &mut report, &mut |line| eprintln!("  admin: {line}"))
        .await
        .unwrap_or_else(|e| panic!("redrive failed: {e}"));
    let report = String::from_utf8(report).unwrap();
    assert!(done, "{report}");
    assert!(report.contains("0 applied, 1 superseded, 0 pending"), "{report}");
    scenario.settle().await;

    let totals: Vec<String> = stack.appzen_upserts().iter().map(total_of).collect();
    assert_eq!(totals, ["1294.81"], "the older version never reached AppZen: AppZen keeps the newer one");
    let holds = stack.ledger.read(48250).await.unwrap().and_then(|e| e.holds).expect("AppZen holds a version");
    assert_eq!(holds.body_sha256, po_sync::message::sha256_hex(&newer));
    let parked = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.queues.webhooks_parked)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("read the parked queue's depth");
    let left: u64 =
        parked.attributes().into_iter().flat_map(|a| a.values()).filter_map(|v| v.parse::<u64>().ok()).sum();
    assert_eq!(left, 0, "the parked queue is empty after the redrive");
    assert!(scenario.new_emails().is_empty(), "a superseded redrive mails nobody: {:#?}", scenario.new_emails());
    assert!(report.contains("history: recorded 1 redrive(s)"), "{report}");
    let history = admin(stack, &["history", "48250"]).await;
    let words = attempt_words(&history);
    assert_eq!(words[0], ["upserted"], "the newer version: {history:#}");
    assert_eq!(words[1][..3], ["superseded", "redriven", "parked"], "the parked version's story: {history:#}");
}

/// The reconcile invocations since the scenario began.
fn reconcile_invocations(stack: &LocalStack, scenario: &Scenario<'_>) -> Vec<po_sync_local::poller::Invocation> {
    let all = stack.invocations();
    all.into_iter().skip(scenario.invocations_before).filter(|i| i.queue_url == stack.queues.webhooks).collect()
}

async fn a_po_appzen_keeps_failing_does_not_hold_back_the_others_of_its_batch(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "a batch [X, Y] with AppZen failing X only");
    // X fails on every attempt of its first delivery (LOCAL_APPZEN_TUNING: 3 attempts), then is taken.
    stack.sandbox.fail_next(Failure {
        times: Some(3),
        status: Some(500),
        po_number: Some("P004601".to_owned()),
        ..Failure::default()
    });
    stack.pause_delivery("reconcile", true).await;
    scenario.post_accepted(&clean_po_numbered(48401, "P004601")).await;
    scenario.post_accepted(&clean_po_numbered(48402, "P004602")).await;
    stack.pause_delivery("reconcile", false).await;
    scenario.settle().await;

    let invocations = reconcile_invocations(stack, &scenario);
    let first = invocations.first().expect("reconcile was invoked");
    assert_eq!(first.message_ids.len(), 2, "X and Y in one batch: {invocations:#?}");
    assert_eq!(first.failed_ids.len(), 1, "only X is handed back: {invocations:#?}");
    let upserts = stack.appzen_upserts();
    let of = |number: &str| -> Vec<Option<u16>> {
        upserts
            .iter()
            .filter(|r| r.json().unwrap()["purchase_order_number"] == number)
            .map(|r| r.response_status)
            .collect()
    };
    assert_eq!(of("P004602"), [Some(201)], "Y went through at once, once");
    assert_eq!(of("P004601"), [Some(500), Some(500), Some(500), Some(201)], "X went through on its next delivery");
    let y_taken = upserts.iter().position(|r| r.json().unwrap()["purchase_order_number"] == "P004602").unwrap();
    let x_taken = upserts.iter().rposition(|r| r.response_status == Some(201)).unwrap();
    assert!(y_taken < x_taken, "Y did not wait for X");
    assert!(scenario.new_emails().is_empty(), "{:#?}", scenario.new_emails());
}

async fn refused_credentials_hand_the_po_back_mail_the_outage_once_and_it_goes_through_when_fixed(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "AppZen answers 401 for a while, then takes the PO");
    stack.sandbox.fail_next(Failure { times: None, status: Some(401), ..Failure::default() });
    scenario.post_accepted(&clean_po_numbered(48410, "P004610")).await;
    // Two deliveries refused (local MaxReceiveCount is 3), then the key is fixed.
    stack
        .wait_for("two refused deliveries", SETTLE, |s| {
            reconcile_invocations(s, &scenario).iter().filter(|i| !i.failed_ids.is_empty()).count() >= 2
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = stack.appzen_upserts();
    assert!(refused.iter().all(|r| r.response_status == Some(401)), "{refused:#?}");
    assert_eq!(refused.len(), 2, "one request per delivery: retrying at once cannot fix a key");
    stack.sandbox.reset();
    scenario.settle().await;

    let statuses: Vec<Option<u16>> = stack.appzen_upserts().iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [Some(201)], "the waiting PO went through once the key was right");
    let emails = scenario.new_emails();
    assert_eq!(emails.len(), 1, "one e-mail for the outage, none about the PO: {emails:#?}");
    assert!(emails[0].subject.contains("AppZen refuses po-sync's credentials"), "{}", emails[0].subject);
    assert!(!emails[0].subject.contains("P004610"), "{}", emails[0].subject);
    let holds = stack.ledger.read(48410).await.unwrap().and_then(|e| e.holds).expect("AppZen holds it");
    assert_eq!(holds.http_status, 201);
}

async fn nine_pos_of_nine_groups_go_to_appzen_together_in_one_invocation(stack: &LocalStack) {
    let scenario = Scenario::begin(stack, "nine POs, AppZen answering in 300 ms");
    stack.pause_delivery("reconcile", true).await;
    for n in 0..9 {
        scenario.post_accepted(&clean_po_numbered(48420 + n, &format!("P00462{n}"))).await;
    }
    stack.sandbox.set_latency(Duration::from_millis(300));
    stack.pause_delivery("reconcile", false).await;
    scenario.settle().await;

    let invocations = reconcile_invocations(stack, &scenario);
    assert_eq!(invocations.len(), 1, "{invocations:#?}");
    assert_eq!((invocations[0].message_ids.len(), invocations[0].failed_ids.len()), (9, 0));
    assert_eq!(stack.appzen_upserts().iter().filter(|r| r.accepted()).count(), 9);
    // GROUP_CONCURRENCY (5) of the nine groups at once: two rounds of AppZen's 300 ms instead of nine.
    assert_eq!(stack.sandbox.max_in_flight(), 5, "POs of different groups are sent concurrently, five at a time");
    eprintln!("  nine POs in one invocation: {} ms", invocations[0].duration.as_millis());
    stack.sandbox.reset();
}
