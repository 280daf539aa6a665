//! `po-sync-soak`: proves that nothing is lost. Runs the real local pipeline under load and seeded faults, then
//! accounts for every webhook (docs/reliability.md; `po_sync_soak`).
//!
//! ```sh
//! # the short run of `make test`: time 720x faster than AWS, MaxReceiveCount 9
//! cargo run -p po-sync-soak -- --webhooks 300 --seed 7 --require-each-fault 2
//! # the long run of `make soak`: a minute is a second, the template's MaxReceiveCount
//! cargo run -p po-sync-soak -- --webhooks 2000 --seed 7 --time-scale 60 \
//!     --max-receive-count 30 --failing-po-seconds 240 --settle-seconds 1200 --json target/soak-report.json
//! ```
//!
//! Exits 0 when nothing was lost, no PO's state in AppZen went backwards, no e-mail was sent twice without an
//! injected fault to explain it, and every accounting rule held; 1 otherwise; 2 on a usage or setup error.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use po_sync_local::poller::LogSink;
use po_sync_soak::{self as soak, SoakOptions};
use po_sync_test_support::workspace_root;

/// A fault-injection soak of the whole local pipeline, with an exact accounting.
// An option given twice takes its last value, so `make soak SOAK_ARGS=...` can override the Makefile's.
#[derive(Debug, Parser)]
#[command(name = "po-sync-soak", args_override_self = true)]
struct Args {
    /// Webhooks to offer (every step of every PO; at least this many)
    #[arg(long, default_value_t = 300)]
    webhooks: usize,
    /// Seed of the traffic and of every fault schedule
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// POs sent at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// AppZen: per request, the chance of a 500, 502 or 503
    #[arg(long, default_value_t = 0.05)]
    appzen_5xx: f64,
    /// AppZen: per request, the chance of a 429 with Retry-After: 1
    #[arg(long, default_value_t = 0.04)]
    appzen_429: f64,
    /// AppZen: per request, the chance the upsert is applied but answered after reconcile's timeout
    #[arg(long, default_value_t = 0.03)]
    appzen_slow: f64,
    /// Share of POs AppZen refuses with a 400
    #[arg(long, default_value_t = 0.05)]
    appzen_refused_pos: f64,
    /// SQS SendMessage (every queue): per call, the chance a burst of 500s begins
    #[arg(long, default_value_t = 0.01)]
    sqs_fail: f64,
    /// SQS SendMessage: per call, the chance a burst of RequestThrottled begins
    #[arg(long, default_value_t = 0.01)]
    sqs_throttle: f64,
    /// SQS SendMessage from ingest: per call, the chance it is answered after the sender's timeout
    #[arg(long, default_value_t = 0.01)]
    sqs_slow: f64,
    /// SES SendRawEmail: per call, the chance a burst of 503s begins
    #[arg(long, default_value_t = 0.03)]
    ses_fail: f64,
    /// SES SendRawEmail: per call, the chance a burst of Throttling begins
    #[arg(long, default_value_t = 0.03)]
    ses_throttle: f64,
    /// SES SendRawEmail: per call, the chance SES sends but the answer is lost
    #[arg(long, default_value_t = 0.02)]
    ses_lost_response: f64,
    /// DynamoDB GetItem/PutItem (the ledger): per call, the chance a burst of ThrottlingException begins
    #[arg(long, default_value_t = 0.003)]
    dynamodb_throttle: f64,
    /// Per reconcile batch, the chance the invocation dies after some of its records
    #[arg(long, default_value_t = 0.05)]
    reconcile_deaths: f64,
    /// Per notify batch, the chance the invocation dies after some of its records
    #[arg(long, default_value_t = 0.05)]
    notify_deaths: f64,
    /// Time runs this many times faster than on AWS: reconcile's retry schedule (the template's default) and
    /// OUTAGE_EMAIL_AFTER are divided by it (whole seconds, at least 1), and so are the minutes below
    #[arg(long, default_value_t = 720)]
    time_scale: u32,
    /// AppZen answers 503 to everything for this many minutes of AWS time (0: no outage)...
    #[arg(long, default_value_t = 90.0)]
    outage_minutes: f64,
    /// ...starting once this share of the first half is offered
    #[arg(long, default_value_t = 0.3)]
    outage_at: f64,
    /// AppZen answers 401 to everything (refused credentials) for this many minutes of AWS time (0: never)...
    #[arg(long, default_value_t = 60.0)]
    credentials_minutes: f64,
    /// ...starting once this share of the second half is offered
    #[arg(long, default_value_t = 0.2)]
    credentials_at: f64,
    /// AppZen answers 500 to one PO's upserts (chosen by the seed) from the start until one of its webhooks is
    /// dead-lettered, for at most this many seconds (0: no failing PO)
    #[arg(long, default_value_t = 120.0)]
    failing_po_seconds: f64,
    /// Do not run the operator's redrive halfway
    #[arg(long)]
    no_redrive: bool,
    /// The template's MaxReceiveCount (with the compressed schedule: how long a webhook waits before it is
    /// dead-lettered)
    #[arg(long, default_value_t = 9)]
    max_receive_count: u32,
    /// reconcile's APPZEN_TIMEOUT_MS
    #[arg(long, default_value_t = 1500)]
    appzen_timeout_ms: u64,
    /// The sender's per-request timeout, in ms
    #[arg(long, default_value_t = 3000)]
    sender_timeout_ms: u64,
    /// Requests per webhook, the first included
    #[arg(long, default_value_t = 5)]
    sender_attempts: u32,
    /// ingest instances at once (cargo lambda watch --concurrency)
    #[arg(long, default_value_t = 2)]
    ingest_concurrency: u32,
    /// How long each drain of the pipeline may take, in seconds
    #[arg(long, default_value_t = 300)]
    settle_seconds: u64,
    /// Fail unless every enabled fault kind was injected at least this many times
    #[arg(long, default_value_t = 0)]
    require_each_fault: u64,
    /// Also write the report (options, faults, accounting, problems) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the processes' logs go (default target/soak-logs)
    #[arg(long)]
    logs: Option<PathBuf>,
    /// The SAM template to deploy (default infra/template.yaml)
    #[arg(long)]
    template: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let root = workspace_root();
    let options = SoakOptions {
        webhooks: args.webhooks,
        seed: args.seed,
        concurrency: args.concurrency,
        appzen_5xx: args.appzen_5xx,
        appzen_429: args.appzen_429,
        appzen_slow: args.appzen_slow,
        appzen_refused_pos: args.appzen_refused_pos,
        sqs_fail: args.sqs_fail,
        sqs_throttle: args.sqs_throttle,
        sqs_slow: args.sqs_slow,
        ses_fail: args.ses_fail,
        ses_throttle: args.ses_throttle,
        ses_lost_response: args.ses_lost_response,
        dynamodb_throttle: args.dynamodb_throttle,
        reconcile_deaths: args.reconcile_deaths,
        notify_deaths: args.notify_deaths,
        time_scale: args.time_scale,
        outage_minutes: args.outage_minutes,
        outage_at: args.outage_at,
        credentials_minutes: args.credentials_minutes,
        credentials_at: args.credentials_at,
        failing_po_seconds: args.failing_po_seconds,
        redrive: !args.no_redrive,
        max_receive_count: args.max_receive_count,
        appzen_timeout_ms: args.appzen_timeout_ms,
        sender_timeout_ms: args.sender_timeout_ms,
        sender_attempts: args.sender_attempts,
        ingest_concurrency: args.ingest_concurrency,
        settle_seconds: args.settle_seconds,
        logs_dir: args.logs.clone().unwrap_or_else(|| root.join("target/soak-logs")),
        template: args.template.clone().unwrap_or_else(po_sync_local::stack_env::default_template),
    };
    if let Err(message) = prepare() {
        eprintln!("po-sync-soak: {message}");
        return ExitCode::from(2);
    }
    let _ = std::fs::remove_dir_all(&options.logs_dir);
    if let Err(e) = std::fs::create_dir_all(&options.logs_dir) {
        eprintln!("po-sync-soak: create {}: {e}", options.logs_dir.display());
        return ExitCode::from(2);
    }
    let log = LogSink::stderr();
    // Ctrl-C or SIGTERM drop the run, which stops every process it started by PID.
    let report = tokio::select! {
        report = soak::run(options, &log) => report,
        _ = tokio::signal::ctrl_c() => Err("interrupted: stopped everything".to_owned()),
    };
    let report = match report {
        Ok(report) => report,
        Err(message) => {
            eprintln!("po-sync-soak: {message}");
            return ExitCode::from(2);
        }
    };
    println!();
    println!(
        "po-sync soak, seed {}: {} webhooks of {} requested, {} at once",
        report.options.seed, report.accounting.offered, report.options.webhooks, report.options.concurrency
    );
    print!("{}", soak::table(&report));
    if !report.accounting.parked_at_end.is_empty() {
        println!("Parked at the end (mailed, waiting for an operator's redrive):");
        for line in report.accounting.parked_at_end.iter().take(20) {
            println!("  {line}");
        }
    }
    if let Some(path) = &args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("po-sync-soak: write {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("po-sync-soak: report JSON: {e}"),
        }
    }
    let failures = report.failures(args.require_each_fault);
    if failures.is_empty() {
        println!("PASS: every acknowledged webhook is accounted for; logs in {}", report.options.logs_dir.display());
        ExitCode::SUCCESS
    } else {
        println!("FAIL: {}", failures.join("; "));
        for problem in &report.accounting.problems {
            println!("  - {problem}");
        }
        println!("logs in {}", report.options.logs_dir.display());
        ExitCode::FAILURE
    }
}

/// Installs the Python tools if needed. The functions are the workspace build's binaries (`LocalStack::start`).
fn prepare() -> Result<(), String> {
    let root = workspace_root();
    let status = Command::new(root.join("scripts/bootstrap")).current_dir(&root).status();
    if !status.map(|s| s.success()).unwrap_or(false) {
        return Err("scripts/bootstrap failed (it needs Python 3 with venv)".to_owned());
    }
    Ok(())
}
