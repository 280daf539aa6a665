//! po-sync on one machine, no AWS account and no Docker:
//!
//! - `po-sync-local run` (`make demo`): starts moto, the AppZen sandbox, the three functions under
//!   `cargo lambda watch` and the SQS poller; posts Komet's documented sample and a clean PO to ingest; waits
//!   until every queue is empty; prints what happened; stops everything.
//! - `po-sync-local serve` (`make serve`): the same pipeline, left running for your own `curl`s, reloading
//!   a function when its code changes; Ctrl-C stops it.
//!
//! Logs go to `.local/logs/`, e-mails to `.local/mail/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use po_sync_local::local::{
    LocalStack, LogTail, SentEmail, StackOptions, WEBHOOK_PASSWORD, WEBHOOK_USERNAME, describe_document,
    describe_metrics, describe_upsert, without_crate_env,
};
use po_sync_local::poller::LogSink;
use po_sync_test_support::emf;
use po_sync_test_support::{fixture, workspace_root};

const SAMPLES: [&str; 2] = ["komet-doc-sample.json", "komet-clean-po.json"];

#[tokio::main]
async fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode != "run" && mode != "serve" {
        eprintln!(
            "usage: po-sync-local run|serve\n  run    post Komet's sample and a clean PO through the local pipeline, print a summary, stop\n  serve  start the local pipeline and leave it running for your own requests (Ctrl-C stops it)"
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let work = async {
        prepare(mode == "serve")?;
        let root = workspace_root();
        let mut options = StackOptions::new(root.join(".local/logs"));
        // Both destinations, so the demo shows a PO reaching AppZen and Exsited (the template's Destinations).
        options.destinations = "appzen,exsited".to_owned();
        if mode == "serve" {
            options.reload = true;
            options.lambda_port = preferred_port(9000);
            options.sandbox_port = preferred_port(9001);
        }
        let log = LogSink::stderr();
        let stack = LocalStack::start(options, &log).await.map_err(|e| e.to_string())?;
        if mode == "serve" {
            serve(&stack).await
        } else {
            let result = run(&stack, started).await;
            stack.shutdown().await;
            result
        }
    };
    // Ctrl-C or SIGTERM cancel `work`, which drops the stack: every process it started is stopped by PID.
    let outcome = tokio::select! {
        outcome = work => outcome,
        signal = interrupted() => Err(format!("{signal}: stopped everything")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("po-sync-local: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminate.recv() => "terminated",
    }
}

/// Installs the Python tools if needed; for `serve`, builds the functions as `cargo lambda watch` will (so compile
/// progress shows here, not in a log). `run` uses the workspace build's binaries (`LocalStack::start`).
fn prepare(serve: bool) -> Result<(), String> {
    let root = workspace_root();
    let status = Command::new(root.join("scripts/bootstrap")).current_dir(&root).status();
    if !status.map(|s| s.success()).unwrap_or(false) {
        return Err("scripts/bootstrap failed (it needs Python 3 with venv)".to_owned());
    }
    if !serve {
        return Ok(());
    }
    eprintln!("building ingest, reconcile and notify for cargo lambda watch");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = without_crate_env(&mut Command::new(cargo))
        // `--bin`, not `-p`: exactly how `cargo lambda watch` builds them (`cargo run --bin NAME` at the
        // workspace root), so it finds them fresh instead of rebuilding with other unified features.
        .args(["build", "--bin", "ingest", "--bin", "reconcile", "--bin", "notify"])
        .current_dir(&root)
        .status();
    if !status.map(|s| s.success()).unwrap_or(false) {
        return Err("building the functions failed".to_owned());
    }
    Ok(())
}

/// `port` if it is free on 127.0.0.1 (stable URLs for `serve`), else any free port.
fn preferred_port(port: u16) -> u16 {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => po_sync_test_support::moto::free_port(),
    }
}

async fn run(stack: &LocalStack, started: Instant) -> Result<(), String> {
    let mut answers = Vec::new();
    for name in SAMPLES {
        let (status, body) = stack.post_webhook(&fixture(name)).await.map_err(|e| format!("POST to ingest: {e}"))?;
        answers.push(format!("  {name:<24} -> {status} {body}"));
    }
    stack.wait_until_idle(Duration::from_secs(120)).await.map_err(|e| e.to_string())?;

    let mail_dir = workspace_root().join(".local/mail");
    let _ = std::fs::remove_dir_all(&mail_dir);
    let emails = save_emails(stack, &mail_dir)?;
    let upserts = stack.appzen_upserts();
    // Read from the functions' own output (EMF lines), checked and compared with what the poller and SES saw.
    let metrics = stack.check_emitted_metrics(&[]).await?;

    println!();
    println!(
        "po-sync, locally: Komet -> ingest -> webhooks.fifo -> reconcile -> AppZen sandbox\n                         \\-> webhooks-exsited.fifo -> reconcile-exsited -> Exsited sandbox\n                  needs a person -> notifications.fifo -> notify -> SES (moto)"
    );
    println!();
    println!("Ingest answered Komet:");
    answers.iter().for_each(|line| println!("{line}"));
    println!();
    println!("AppZen received {} upsert(s):", upserts.len());
    upserts.iter().for_each(|request| println!("  {}", describe_upsert(request)));
    if let Some(exsited) = &stack.exsited {
        let orders = exsited.purchase_orders();
        println!();
        println!("Exsited holds {} purchase order(s):", orders.len());
        orders.iter().for_each(|order| println!("  {}", describe_exsited_order(order)));
    }
    println!();
    println!("E-mails sent: {}", emails.len());
    emails.iter().for_each(|(email, path)| {
        println!("  \"{}\" to {} recipient(s), saved to {}", email.subject, email.recipients.len(), relative(path))
    });
    println!();
    println!(
        "Metrics the functions emitted ({} EMF documents in {}/functions.log, namespace {}; each valid, and they agree with the poller and SES):",
        metrics.documents,
        relative(stack.logs_dir()),
        stack.metrics_namespace()
    );
    describe_metrics(&metrics).iter().for_each(|line| println!("  {line}"));
    if metrics.total("ingest", "WebhooksRefused", &["reason=method_not_allowed"]) > 0.0 {
        println!("  (the GET refused with 405 is the start-up check's; README, \"Metrics and dashboard\")");
    }
    println!();
    println!(
        "Logs: {}/functions.log (every function under cargo lambda watch), {}/poller.log",
        relative(stack.logs_dir()),
        relative(stack.logs_dir())
    );
    println!("Done in {:.1} s; everything started has been stopped.", started.elapsed().as_secs_f64());
    Ok(())
}

/// One line for an Exsited PO: its id, status, supplier account, total and lines (as the sandbox answers GET).
fn describe_exsited_order(order: &serde_json::Value) -> String {
    let text = |key: &str| order[key].as_str().unwrap_or("?").to_owned();
    let lines = order["lines"].as_array().map_or(0, Vec::len);
    let note = text("purchase_order_note");
    let komet = note.split(';').next().unwrap_or_default();
    format!(
        "{} ({}) account {}, total {} {}, {lines} line(s): {komet}",
        text("id"),
        text("status"),
        text("account_id"),
        text("total"),
        order["currency"]["name"].as_str().unwrap_or("?")
    )
}

/// Saves each e-mail's HTML (or, without HTML, its text) as `N.html` / `N.txt` under `dir`.
fn save_emails(stack: &LocalStack, dir: &Path) -> Result<Vec<(SentEmail, PathBuf)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut saved = Vec::new();
    for (i, entry) in stack.sent_emails().iter().enumerate() {
        let email = SentEmail::from_moto(entry);
        let (extension, content) = if email.html.is_empty() { ("txt", &email.text) } else { ("html", &email.html) };
        let path = dir.join(format!("{}.{extension}", i + 1));
        std::fs::write(&path, content).map_err(|e| format!("write {}: {e}", path.display()))?;
        saved.push((email, path));
    }
    Ok(saved)
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

async fn serve(stack: &LocalStack) -> Result<(), String> {
    let ingest = stack.ingest_url();
    let appzen = stack.sandbox.base_url();
    let moto = stack.moto.endpoint_url();
    println!();
    println!("po-sync is running locally. Try (from the repository root):");
    println!();
    println!("  curl -i -u {WEBHOOK_USERNAME}:{WEBHOOK_PASSWORD} -H 'content-type: application/json' \\");
    println!("       --data-binary @shared/po-sync/tests/fixtures/komet-clean-po.json {ingest}");
    println!("  curl -s {appzen}/_sandbox/requests                                   # what AppZen received");
    println!(
        "  curl -s -X POST {appzen}/_sandbox/fail -d '{{\"times\":2,\"status\":500}}'   # AppZen fails the next two calls"
    );
    if let Some(exsited) = &stack.exsited {
        println!(
            "  curl -s {}/_sandbox/requests                                   # what Exsited received",
            exsited.base_url()
        );
    }
    println!("  curl -s {moto}/moto-api/data.json                                   # e-mails sent (ses.RawMessage)");
    println!();
    println!("The operator CLI against this pipeline (moto stands in for AWS):");
    println!();
    let flags: Vec<String> = stack.admin_flags().chunks(2).map(|pair| pair.join(" ")).collect();
    println!(
        "  AWS_ENDPOINT_URL={moto} AWS_ENDPOINT_URL_LAMBDA={} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \\\n  \
         cargo run -q -p po-sync-admin -- {} \\\n    status",
        stack.lambda_control_url().unwrap_or("(no Lambda stand-in)"),
        flags.join(" \\\n    "),
    );
    println!(
        "  (then `po 48213`, `history 48213`, `verify`, `replay --po 48213 --latest`, `replay --since 2026-01-01 --outcome held`, `pause`, `resume`, `redrive` or `replay FILE` in place of `status`)"
    );
    println!();
    println!(
        "New AppZen calls, e-mails and metrics (each EMF line the functions print) are listed below; e-mails are saved to .local/mail/."
    );
    println!(
        "Logs: {}/functions.log, {}/poller.log. Stop with Ctrl-C.",
        relative(stack.logs_dir()),
        relative(stack.logs_dir())
    );
    let mail_dir = workspace_root().join(".local/mail");
    let _ = std::fs::remove_dir_all(&mail_dir);
    let (mut seen_upserts, mut seen_emails) = (0, 0);
    let mut functions_log = LogTail::from_start(stack.logs_dir().join("functions.log"));
    let namespace = stack.metrics_namespace();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let upserts = stack.appzen_upserts();
        for request in upserts.iter().skip(seen_upserts).take_while(|r| r.response_status.is_some()) {
            println!("AppZen <- {}", describe_upsert(request));
            seen_upserts += 1;
        }
        let emails = save_emails(stack, &mail_dir)?;
        for (email, path) in emails.iter().skip(seen_emails) {
            println!(
                "e-mail: \"{}\" to {} recipient(s), saved to {}",
                email.subject,
                email.recipients.len(),
                relative(path)
            );
        }
        seen_emails = emails.len();
        for (line, text) in functions_log.new_lines().into_iter().filter(|(_, text)| text.contains("\"_aws\"")) {
            let json = &text[text.find('{').unwrap_or(0)..];
            match emf::parse(json).and_then(|document| emf::check(&document, &namespace).map(|()| document)) {
                Ok(document) => println!("metrics: {}", describe_document(&document)),
                Err(problems) => println!("metrics: INVALID EMF at functions.log:{line}: {}", problems.join("; ")),
            }
        }
    }
}
