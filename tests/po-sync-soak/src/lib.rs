//! The soak: the whole local pipeline (the three functions under `cargo lambda watch`, moto behind a
//! fault-injecting proxy, the AppZen sandbox with seeded faults, the SQS poller with invocation deaths) driven
//! like a busy Komet account, then an exact accounting of where every webhook ended (`accounting`).
//!
//! **Time is compressed** `time_scale` times (default 720: AWS's hour is 5 s). reconcile gets the template's
//! default retry schedule (`1m,2m,5m,15m,30m,1h`) with each step divided by it (whole seconds, at least 1 s:
//! `1s,1s,1s,1s,3s,5s`) as its `RETRY_SCHEDULE`, and `OUTAGE_EMAIL_AFTER` (15 minutes) divided by it; the
//! stretches below are given in minutes of AWS time and compressed the same way. With `max_receive_count`
//! (default 9) that sets the *horizon*: how long a webhook that fails on every delivery waits before SQS
//! dead-letters it (27 s here, 5.4 hours on AWS's clock). The old horizon, 5 receives of the queue's 720-s
//! visibility timeout (1 hour), would be 5 s.
//!
//! The run, in order:
//! 1. **Phase 1**: about half the webhooks, POs concurrently, each PO's steps in order. From the start, AppZen
//!    answers 500 to every upsert of one PO (the *failing PO*, chosen by the seed among the first POs sent)
//!    until one of its webhooks is dead-lettered (or `failing_po_seconds` have passed): it outlasts the horizon,
//!    so its versions are dead-lettered, parked and mailed by notify, while every other PO flows past it.
//!    Once `outage_at` of the phase is offered, AppZen answers 503 to everything for `outage_minutes` (90: longer
//!    than the old horizon, shorter than the new one): every webhook waits it out, none is dead-lettered.
//! 2. The pipeline drains (every queue but the parked one empty).
//! 3. **Phase 2**, the other half (new POs, and later versions of some phase-1 POs), while the operator CLI
//!    (`po-sync-admin redrive`, the library, reading the stack's outputs from moto's CloudFormation as it would
//!    on AWS) moves the parked webhooks back: they meet newer versions of their POs. Once `credentials_at` of the
//!    phase is offered, AppZen answers 401 to everything for `credentials_minutes` (refused credentials, fixed
//!    after a while): nothing is rejected or lost, and the outage is mailed once.
//! 4. The pipeline drains again; the evidence is read and accounted, rules 1-9 of `accounting`: nothing lost,
//!    no order violations, no unexplained duplicate e-mail, AppZen on the last version it can take, no record
//!    handed back for another PO, nothing but the failing PO parked by AppZen, one e-mail per AppZen outage.
//!
//! A stretch with no verdict from AppZen must stay shorter than `OUTAGE_EMAIL_AFTER` plus twice the longest
//! retry step (11 s at 720x; 135 s at 60x) for rule 9 to hold: reconcile writes an outage's `last_seen_at` at
//! most once a minute (`po_sync::outage`), so with a compressed schedule an outage not re-written for twice the
//! longest step is taken as over, opened again and mailed again. On AWS's schedule (longest step 1 h) this
//! cannot happen; the soak's defaults stay inside it.

pub mod accounting;
pub mod appzen_faults;
pub mod sender;
pub mod traffic;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use po_sync::message::WebhookEnvelope;
use po_sync::retry::{RetrySchedule, parse_duration};
use po_sync_aws::ledger::Ledger;
use serde::Serialize;

use accounting::{Accounting, Evidence};
use appzen_faults::{AppZenFault, AppZenFaultOptions, AppZenFaults};
use po_sync_local::fault_proxy::{AwsFault, ProxyFaults, RunningProxy};
use po_sync_local::local::{LocalStack, NOTIFY_FROM, StackOptions, WEBHOOK_PASSWORD, WEBHOOK_USERNAME};
use po_sync_local::poller::{INJECTED_DEATH, InvocationDeaths, LogSink};
use sender::{SenderOptions, WebhookLog};
use traffic::{Traffic, TrafficOptions};

/// Everything a soak run is told.
#[derive(Debug, Clone, Serialize)]
pub struct SoakOptions {
    pub webhooks: usize,
    pub seed: u64,
    /// POs sent at once.
    pub concurrency: usize,
    /// AppZen: per request, 500/502/503; 429 with Retry-After; an answer later than reconcile waits.
    pub appzen_5xx: f64,
    pub appzen_429: f64,
    pub appzen_slow: f64,
    /// Share of POs AppZen refuses (400).
    pub appzen_refused_pos: f64,
    /// The AWS faults (fault proxy): per call, the chance a burst begins.
    pub sqs_fail: f64,
    pub sqs_throttle: f64,
    pub sqs_slow: f64,
    pub ses_fail: f64,
    pub ses_throttle: f64,
    pub ses_lost_response: f64,
    pub dynamodb_throttle: f64,
    /// Per batch, the chance the invocation dies after some of its records.
    pub reconcile_deaths: f64,
    pub notify_deaths: f64,
    /// How many times faster than on AWS time runs: reconcile's retry schedule and `OUTAGE_EMAIL_AFTER`, and the
    /// stretches given in minutes, are divided by it ([`TimeScale`]).
    pub time_scale: u32,
    /// AppZen answers 503 to everything for this many minutes of AWS time, starting once `outage_at` of phase 1
    /// is offered (0: no outage).
    pub outage_minutes: f64,
    pub outage_at: f64,
    /// AppZen answers 401 to everything for this many minutes of AWS time, starting once `credentials_at` of
    /// phase 2 is offered (0: never).
    pub credentials_minutes: f64,
    pub credentials_at: f64,
    /// AppZen answers 500 to the failing PO's upserts from the start until one of its webhooks is dead-lettered,
    /// for at most this many seconds of the run (0: no failing PO).
    pub failing_po_seconds: f64,
    /// Run the operator's redrive at the start of phase 2.
    pub redrive: bool,
    /// The template's `MaxReceiveCount`.
    pub max_receive_count: u32,
    /// reconcile's `APPZEN_TIMEOUT_MS` (a slow AppZen answer comes 500 ms later than this).
    pub appzen_timeout_ms: u64,
    /// The sender's per-request timeout (a slow SQS answer to ingest comes 1 s later than this).
    pub sender_timeout_ms: u64,
    pub sender_attempts: u32,
    pub ingest_concurrency: u32,
    /// How long each drain may take.
    pub settle_seconds: u64,
    pub logs_dir: PathBuf,
    pub template: PathBuf,
}

/// How many times faster than on AWS the soak's clock runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeScale(pub u32);

/// The horizon before reconcile had a retry schedule: `MaxReceiveCount` 5 x the webhook queue's 720-s visibility.
pub const OLD_HORIZON: Duration = Duration::from_secs(5 * 720);
/// reconcile's default `OUTAGE_EMAIL_AFTER`.
pub const OUTAGE_EMAIL_AFTER: Duration = Duration::from_secs(15 * 60);

impl TimeScale {
    /// AWS's `duration` on the soak's clock.
    pub fn compress(self, duration: Duration) -> Duration {
        duration / self.0.max(1)
    }

    /// `minutes` of AWS time on the soak's clock.
    pub fn minutes(self, minutes: f64) -> Duration {
        self.compress(Duration::from_secs_f64((minutes * 60.0).max(0.0)))
    }

    /// A compressed step as `RETRY_SCHEDULE` and `OUTAGE_EMAIL_AFTER` take it: whole seconds, at least one.
    fn step(self, duration: Duration) -> Duration {
        Duration::from_secs((self.compress(duration).as_secs_f64().round() as u64).max(1))
    }

    /// The template's default retry schedule, each step compressed.
    pub fn retry_schedule(self) -> RetrySchedule {
        let steps: Vec<String> = RetrySchedule::default()
            .describe()
            .split(',')
            .map(|step| format!("{}s", self.step(parse_duration(step).unwrap_or_default()).as_secs()))
            .collect();
        RetrySchedule::parse(&steps.join(",")).unwrap_or_default()
    }

    /// reconcile's default `OUTAGE_EMAIL_AFTER`, compressed.
    pub fn outage_email_after(self) -> Duration {
        self.step(OUTAGE_EMAIL_AFTER)
    }
}

/// A fault kind, its rate, and how often it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultCount {
    pub kind: String,
    pub injected: u64,
}

/// A stretch of AppZen faults, in seconds since the start of the run.
#[derive(Debug, Clone, Serialize)]
pub struct StretchReport {
    pub kind: String,
    pub from_seconds: f64,
    /// `None`: it did not end.
    pub to_seconds: Option<f64>,
}

/// The run's report: what the table shows, and the full accounting.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub options: SoakOptions,
    /// reconcile's `RETRY_SCHEDULE` and `OUTAGE_EMAIL_AFTER` (compressed), the horizon they make with
    /// `max_receive_count`, and the old horizon compressed alike, in seconds.
    pub retry_schedule: String,
    pub outage_email_after_seconds: u64,
    pub horizon_seconds: f64,
    pub old_horizon_seconds: f64,
    /// The PO AppZen failed (its PO number).
    pub failing_po: Option<String>,
    pub stretches: Vec<StretchReport>,
    pub faults: Vec<FaultCount>,
    pub dead_lettered: usize,
    pub redriven: u64,
    /// Sends SQS dropped as repeats of a deduplication id it accepted in the last five minutes.
    pub sqs_deduplicated: u64,
    pub parked_at_end: usize,
    pub accounting: Accounting,
    pub wall_seconds: f64,
    pub webhooks_per_second: f64,
    pub timeline: Vec<String>,
}

impl SoakReport {
    /// Why the run failed (empty: it passed).
    pub fn failures(&self, require_each_fault: u64) -> Vec<String> {
        let mut failures: Vec<String> =
            self.accounting.failures().into_iter().map(|(name, n)| format!("{name}: {n}")).collect();
        for fault in &self.faults {
            if fault.injected < require_each_fault && self.enabled(&fault.kind) {
                failures.push(format!(
                    "fault {} injected {} time(s), fewer than {require_each_fault}",
                    fault.kind, fault.injected
                ));
            }
        }
        failures
    }

    fn enabled(&self, kind: &str) -> bool {
        let o = &self.options;
        let rate = match kind {
            "appzen_5xx" => o.appzen_5xx,
            "appzen_429" => o.appzen_429,
            "appzen_slow" => o.appzen_slow,
            "appzen_400" => o.appzen_refused_pos,
            "appzen_outage_503" => o.outage_minutes,
            "appzen_401" => o.credentials_minutes,
            "appzen_po_500" if self.failing_po.is_some() => o.failing_po_seconds,
            "sqs_fail" => o.sqs_fail,
            "sqs_throttle" => o.sqs_throttle,
            "sqs_slow" => o.sqs_slow,
            "ses_fail" => o.ses_fail,
            "ses_throttle" => o.ses_throttle,
            "ses_lost_response" => o.ses_lost_response,
            "dynamodb_throttle" => o.dynamodb_throttle,
            "reconcile_died" => o.reconcile_deaths,
            "notify_died" => o.notify_deaths,
            _ => 0.0,
        };
        rate > 0.0
    }
}

fn stamp(started: Instant, timeline: &mut Vec<String>, log: &LogSink, text: impl Into<String>) {
    let text = format!("{:>7.1} s  {}", started.elapsed().as_secs_f64(), text.into());
    log.line(&text);
    timeline.push(text);
}

/// Runs the soak; `log` gets progress lines.
pub async fn run(options: SoakOptions, log: &LogSink) -> Result<SoakReport, String> {
    let traffic = traffic::generate(&TrafficOptions {
        seed: options.seed,
        webhooks: options.webhooks,
        appzen_refuses: options.appzen_refused_pos,
        first_po_id: 700_000,
    });
    let scale = TimeScale(options.time_scale);
    let mut stack_options = StackOptions::new(&options.logs_dir);
    stack_options.template = options.template.clone();
    stack_options.max_receive_count = options.max_receive_count;
    stack_options.ingest_concurrency = options.ingest_concurrency;
    stack_options.retry_schedule = scale.retry_schedule().describe();
    stack_options.function_env = vec![
        ("APPZEN_TIMEOUT_MS".to_owned(), options.appzen_timeout_ms.to_string()),
        ("OUTAGE_EMAIL_AFTER".to_owned(), format!("{}s", scale.outage_email_after().as_secs())),
    ];
    let rates = BTreeMap::from([
        (AwsFault::SqsFail, options.sqs_fail),
        (AwsFault::SqsThrottle, options.sqs_throttle),
        (AwsFault::SqsSlow, options.sqs_slow),
        (AwsFault::SesFail, options.ses_fail),
        (AwsFault::SesThrottle, options.ses_throttle),
        (AwsFault::SesLostResponse, options.ses_lost_response),
        (AwsFault::DynamodbThrottle, options.dynamodb_throttle),
    ]);
    stack_options.aws_faults =
        Some(ProxyFaults { rates, slow_ms: options.sender_timeout_ms + 1000, ..ProxyFaults::none(options.seed) });
    stack_options.invocation_deaths = vec![
        ("reconcile".to_owned(), InvocationDeaths { seed: options.seed ^ 0x7EC0, rate: options.reconcile_deaths }),
        ("notify".to_owned(), InvocationDeaths { seed: options.seed ^ 0x4071, rate: options.notify_deaths }),
    ];
    let stack = LocalStack::start(stack_options, log).await.map_err(|e| e.to_string())?;
    let result = drive(&stack, &options, &traffic, log).await;
    stack.shutdown().await;
    result
}

/// AppZen answers everything with `fault` for `length`, once `offered` reaches `threshold`; when it began and
/// ended (`None`: no stretch).
async fn everything_fails(
    appzen: Arc<AppZenFaults>,
    fault: AppZenFault,
    offered: Arc<AtomicUsize>,
    threshold: usize,
    length: Duration,
) -> Option<(Instant, Instant)> {
    if length.is_zero() {
        return None;
    }
    // Bounded: the threshold is at most the phase's size, which the sender reaches.
    let wait_from = Instant::now();
    while offered.load(Ordering::SeqCst) < threshold && wait_from.elapsed() < Duration::from_secs(3600) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    appzen.set_everything(Some(fault));
    let on = Instant::now();
    tokio::time::sleep(length).await;
    appzen.set_everything(None);
    Some((on, Instant::now()))
}

/// How many webhooks of the PO `po_id` notify parked so far.
fn parked_of(proxy: &RunningProxy, parked_queue: &str, po_id: u64) -> usize {
    proxy
        .sent_messages()
        .iter()
        .filter(|m| m.queue_name() == parked_queue)
        .filter(|m| WebhookEnvelope::from_json(&m.body).is_ok_and(|e| e.po.id == po_id))
        .count()
}

async fn drive(
    stack: &LocalStack,
    options: &SoakOptions,
    traffic: &Traffic,
    log: &LogSink,
) -> Result<SoakReport, String> {
    let scale = TimeScale(options.time_scale);
    let schedule = scale.retry_schedule();
    let horizon = schedule.horizon(options.max_receive_count);
    let appzen = AppZenFaults::new(AppZenFaultOptions {
        seed: options.seed,
        server_error: options.appzen_5xx,
        too_many_requests: options.appzen_429,
        slow: options.appzen_slow,
        slow_ms: options.appzen_timeout_ms + 500,
        refused: traffic.pos.iter().filter(|p| p.appzen_refuses).map(|p| p.po_number.clone()).collect::<HashSet<_>>(),
    });
    stack.sandbox.set_fault_hook(Some(appzen.hook()));
    let sender = SenderOptions {
        url: stack.ingest_url(),
        username: WEBHOOK_USERNAME.to_owned(),
        password: WEBHOOK_PASSWORD.to_owned(),
        timeout: Duration::from_millis(options.sender_timeout_ms),
        max_attempts: options.sender_attempts,
        backoff: Duration::from_millis(200),
        think: Duration::from_millis(50),
        seed: options.seed,
    };
    let proxy = stack.proxy().ok_or("no fault proxy")?;
    let queue_name = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
    let parked_queue = queue_name(&stack.queues.webhooks_parked);
    let failing =
        if options.failing_po_seconds > 0.0 { traffic.failing_po(options.seed, options.concurrency) } else { None };
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let mut timeline = Vec::new();
    let offered = Arc::new(AtomicUsize::new(0));
    let settle = Duration::from_secs(options.settle_seconds);
    let since = |at: Instant| at.duration_since(started).as_secs_f64();
    stamp(
        started,
        &mut timeline,
        log,
        format!(
            "{} webhooks of {} POs ({} before the redrive, {} after)",
            traffic.webhooks(),
            traffic.pos.len(),
            traffic.in_phase(1),
            traffic.in_phase(2)
        ),
    );
    stamp(
        started,
        &mut timeline,
        log,
        format!(
            "time {}x faster than AWS: RETRY_SCHEDULE {}, {} receives wait {:.0} s before a webhook is dead-lettered \
             (the old horizon, 5 x 720 s, would be {:.0} s); OUTAGE_EMAIL_AFTER {} s",
            options.time_scale,
            schedule.describe(),
            options.max_receive_count,
            horizon.as_secs_f64(),
            scale.compress(OLD_HORIZON).as_secs_f64(),
            scale.outage_email_after().as_secs()
        ),
    );

    // Phase 1: the failing PO from the start, the AppZen outage part-way.
    let outage = everything_fails(
        appzen.clone(),
        AppZenFault::Outage,
        offered.clone(),
        ((traffic.in_phase(1) as f64) * options.outage_at.clamp(0.0, 1.0)).round() as usize,
        scale.minutes(options.outage_minutes),
    );
    let failing_po = async {
        let po = failing?;
        appzen.set_failing_po(Some(po.po_number.clone()));
        let on = Instant::now();
        let longest = Duration::from_secs_f64(options.failing_po_seconds);
        let (mut parked, mut parkings) = (None, 0);
        // Until one of its webhooks is parked (after its horizon; how long that takes depends on the backlog and
        // the machine), bounded. The parked queue's sends are read only when there are new ones.
        while on.elapsed() < longest {
            let now = proxy.sent_to(&parked_queue);
            if now > parkings && parked_of(proxy, &parked_queue, po.po_id) > 0 {
                parked = Some(Instant::now());
                break;
            }
            parkings = now;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        appzen.set_failing_po(None);
        Some((on, Instant::now(), parked))
    };
    let phase1 = sender::send_phase(&sender, &traffic.pos, 1, options.concurrency, offered.clone(), started);
    let (mut webhooks, outage, failing_po): (Vec<WebhookLog>, _, _) = tokio::join!(phase1, outage, failing_po);
    stamp(started, &mut timeline, log, format!("phase 1 sent: {} webhooks", webhooks.len()));
    if let Some((on, off)) = outage {
        stamp(
            started,
            &mut timeline,
            log,
            format!(
                "AppZen answered 503 to everything from {:.1} s to {:.1} s ({} minutes of AWS time)",
                since(on),
                since(off),
                options.outage_minutes
            ),
        );
    }
    if let (Some(po), Some((on, off, parked))) = (failing, failing_po) {
        stamp(
            started,
            &mut timeline,
            log,
            format!(
                "AppZen answered 500 to PO {} from {:.1} s to {:.1} s ({})",
                po.po_number,
                since(on),
                since(off),
                parked.map_or_else(
                    || "none of its webhooks dead-lettered meanwhile".to_owned(),
                    |at| format!("its first dead letter parked at {:.1} s", since(at))
                )
            ),
        );
    }
    // A drain that does not end is not the end of the run: the accounting says what is left where.
    if let Err(e) = stack.wait_until_idle(settle).await {
        stamp(started, &mut timeline, log, format!("NOT DRAINED after phase 1: {e}"));
    }
    let parked_before = parked_count(stack).await?;
    stamp(started, &mut timeline, log, format!("drained; {parked_before} webhook(s) parked"));

    // Phase 2, with the operator's redrive and AppZen refusing po-sync's credentials part-way.
    let credentials = tokio::spawn(everything_fails(
        appzen.clone(),
        AppZenFault::Credentials,
        offered.clone(),
        offered.load(Ordering::SeqCst)
            + ((traffic.in_phase(2) as f64) * options.credentials_at.clamp(0.0, 1.0)).round() as usize,
        scale.minutes(options.credentials_minutes),
    ));
    let phase2 = {
        let (sender, pos, offered) = (sender.clone(), traffic.pos.clone(), offered.clone());
        let concurrency = options.concurrency;
        tokio::spawn(async move { sender::send_phase(&sender, &pos, 2, concurrency, offered, started).await })
    };
    let mut redriven = 0;
    if options.redrive {
        let (moved, text) = redrive(stack).await?;
        redriven = moved;
        stamp(
            started,
            &mut timeline,
            log,
            format!("redrive (po-sync-admin): {}", text.lines().next().unwrap_or_default()),
        );
        for line in text.lines().skip(1).take(3) {
            log.line(format!("  {line}"));
        }
    }
    webhooks.extend(phase2.await.map_err(|e| format!("phase 2 sender: {e}"))?);
    stamp(started, &mut timeline, log, format!("phase 2 sent: {} webhooks in all", webhooks.len()));
    if let Some((on, off)) = credentials.await.map_err(|e| format!("credentials stretch: {e}"))? {
        stamp(
            started,
            &mut timeline,
            log,
            format!(
                "AppZen answered 401 to everything from {:.1} s to {:.1} s ({} minutes of AWS time)",
                since(on),
                since(off),
                options.credentials_minutes
            ),
        );
    }
    if let Err(e) = stack.wait_until_idle(settle).await {
        stamp(started, &mut timeline, log, format!("NOT DRAINED after phase 2: {e}"));
    }
    let wall = started.elapsed();
    stamp(started, &mut timeline, log, "drained; accounting");

    // The evidence.
    let sent = proxy.sent_messages();
    let forwarded = proxy.emails();
    let mailed: Vec<String> = stack
        .sent_emails()
        .iter()
        .filter_map(|entry| entry.get("raw_data").and_then(|v| v.as_str()))
        .map(|raw| po_sync_local::fault_proxy::mime_message_id(raw).unwrap_or_default())
        .collect();
    let appzen_requests = stack.appzen_upserts();
    let functions_log = std::fs::read_to_string(stack.logs_dir().join("functions.log"))
        .map_err(|e| format!("read functions.log: {e}"))?;
    let records = accounting::record_lines(&functions_log);
    let skips = accounting::skip_lines(&functions_log);
    let parked = parked_bodies(stack).await?;
    let mut depths = Vec::new();
    for (name, depth) in stack.queue_depths().await.map_err(|e| e.to_string())? {
        depths.push((name.to_owned(), depth));
    }
    let mut ledger = BTreeMap::new();
    for po in &traffic.pos {
        ledger.insert(po.po_id, stack.ledger.read(po.po_id).await.map_err(|e| format!("ledger: {e}"))?);
    }
    let invocations = stack.invocations();
    let (webhook_queue, notification_queue) =
        (queue_name(&stack.queues.webhooks), queue_name(&stack.queues.notifications));
    let domain = NOTIFY_FROM.rsplit('@').next().unwrap_or_default();
    let decisions = appzen.decisions();
    let stretches = appzen.stretches();
    let accounting = accounting::account(&Evidence {
        traffic,
        webhooks: &webhooks,
        sent: &sent,
        webhook_queue: &webhook_queue,
        notification_queue: &notification_queue,
        parked_queue: &parked_queue,
        forwarded_emails: &forwarded,
        mailed: &mailed,
        appzen: &appzen_requests,
        records: &records,
        skips: &skips,
        decisions: &decisions,
        stretches: &stretches,
        failing_po: failing.map(|p| p.po_id),
        parked: &parked,
        depths: &depths,
        ledger: &ledger,
        invocations: &invocations,
        mail_domain: domain,
    });

    let mut faults: Vec<FaultCount> = Vec::new();
    let injected_appzen = appzen.injected();
    for kind in AppZenFault::ALL {
        faults.push(FaultCount {
            kind: kind.name().to_owned(),
            injected: injected_appzen.get(&kind).copied().unwrap_or(0),
        });
    }
    let injected_aws = proxy.injected();
    for kind in AwsFault::ALL {
        faults
            .push(FaultCount { kind: kind.name().to_owned(), injected: injected_aws.get(&kind).copied().unwrap_or(0) });
    }
    for function in ["reconcile", "notify"] {
        let died = invocations
            .iter()
            .filter(|i| {
                i.function_name == function && i.error.as_deref().is_some_and(|e| e.starts_with(INJECTED_DEATH))
            })
            .count();
        faults.push(FaultCount { kind: format!("{function}_died"), injected: died as u64 });
    }
    // Parkings, each once (notify deduplicates a parking by the dead letter's message id).
    let dead_lettered = sent
        .iter()
        .filter(|s| s.queue_name() == parked_queue)
        .map(|s| s.deduplication_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let seconds = |at: chrono::DateTime<chrono::Utc>| (at - started_at).as_seconds_f64();
    Ok(SoakReport {
        options: options.clone(),
        retry_schedule: schedule.describe(),
        outage_email_after_seconds: scale.outage_email_after().as_secs(),
        horizon_seconds: horizon.as_secs_f64(),
        old_horizon_seconds: scale.compress(OLD_HORIZON).as_secs_f64(),
        failing_po: failing.map(|p| p.po_number.clone()),
        stretches: stretches
            .iter()
            .map(|s| StretchReport {
                kind: s.fault.name().to_owned(),
                from_seconds: seconds(s.on),
                to_seconds: s.off.map(seconds),
            })
            .collect(),
        faults,
        dead_lettered,
        redriven,
        sqs_deduplicated: proxy.deduplicated(),
        parked_at_end: parked.len(),
        webhooks_per_second: webhooks.len() as f64 / wall.as_secs_f64(),
        wall_seconds: wall.as_secs_f64(),
        accounting,
        timeline,
    })
}

/// The operator's redrive, as `po-sync-admin --stack po-sync redrive --no-wait` (the stack's outputs name the
/// queues, read from moto's CloudFormation). Returns the messages moved and the report's text.
async fn redrive(stack: &LocalStack) -> Result<(u64, String), String> {
    use clap::Parser as _;
    let cli = po_sync_admin::Cli::parse_from([
        "po-sync-admin",
        "--stack",
        &stack.stack.stack_name,
        "--json",
        "redrive",
        "--no-wait",
        "--timeout",
        "120",
    ]);
    let clients = po_sync_admin::Clients::new(&stack.moto.sdk_config().await);
    let mut out = Vec::new();
    let ok = po_sync_admin::execute(&cli, &clients, None, &mut out, &mut |_| {})
        .await
        .map_err(|e| format!("po-sync-admin redrive: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| format!("po-sync-admin redrive --json: {e}"))?;
    let moved = json.pointer("/movement/moved").and_then(|v| v.as_u64()).unwrap_or(0);
    let text = format!(
        "{} moved of {} parked (complete: {ok}){}",
        moved,
        json.pointer("/snapshot/webhooks").and_then(|v| v.as_array()).map_or(0, Vec::len),
        json.pointer("/movement/why").and_then(|v| v.as_str()).map(|w| format!("; {w}")).unwrap_or_default()
    );
    Ok((moved, text))
}

async fn parked_count(stack: &LocalStack) -> Result<u64, String> {
    let attributes = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.queues.webhooks_parked)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::Error::from(e).to_string())?;
    Ok(attributes.attributes().map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0))
}

/// Every body in the parked queue: received (hidden for a minute, so each is seen once), then made visible again.
async fn parked_bodies(stack: &LocalStack) -> Result<Vec<String>, String> {
    let url = &stack.queues.webhooks_parked;
    let mut bodies = Vec::new();
    let mut receipts = Vec::new();
    // Bounded: 2,000 receives of up to 10.
    for _ in 0..2000 {
        let received = stack
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::Error::from(e).to_string())?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            bodies.push(message.body.unwrap_or_default());
            receipts.extend(message.receipt_handle);
        }
    }
    for receipt in receipts {
        let _ = stack
            .sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await;
    }
    Ok(bodies)
}

/// The report as one table.
pub fn table(report: &SoakReport) -> String {
    let a = &report.accounting;
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |name: &str, value: String| rows.push((name.to_owned(), value));
    row("webhooks offered", a.offered.to_string());
    row("  acknowledged (200)", a.acknowledged.to_string());
    row("  refused (4xx)", a.refused.to_string());
    row("  given up after retries", a.gave_up.to_string());
    row("sender requests / retries", format!("{} / {}", a.sender_requests, a.sender_retries));
    row("  answered 5xx / timed out", format!("{} / {}", a.answers_5xx, a.sender_timeouts));
    row("messages queued by ingest", a.queued.to_string());
    row("  queued without a 200", a.queued_unacknowledged.to_string());
    for fault in &report.faults {
        row(&format!("fault {}", fault.kind), fault.injected.to_string());
    }
    row(&format!("retry schedule ({}x faster than AWS)", report.options.time_scale), report.retry_schedule.clone());
    row(
        &format!("  horizon of {} receives / the old one", report.options.max_receive_count),
        format!("{:.0} s / {:.0} s", report.horizon_seconds, report.old_horizon_seconds),
    );
    for stretch in &report.stretches {
        let to = stretch.to_seconds.map_or_else(|| "the end".to_owned(), |t| format!("{t:.1} s"));
        row(&format!("  {} from / to", stretch.kind), format!("{:.1} s / {to}", stretch.from_seconds));
    }
    row("upserted", a.place(accounting::Place::Upserted).to_string());
    row("duplicate", a.place(accounting::Place::Duplicate).to_string());
    row("superseded", a.place(accounting::Place::Superseded).to_string());
    row("held and mailed", a.place(accounting::Place::HeldMailed).to_string());
    row("unmappable and mailed", a.place(accounting::Place::UnmappableMailed).to_string());
    row("rejected and mailed", a.place(accounting::Place::RejectedMailed).to_string());
    row("parked and mailed (at the end)", a.place(accounting::Place::ParkedMailed).to_string());
    row("AppZen requests / accepted", format!("{} / {}", a.appzen_requests, a.appzen_accepted));
    let kinds: Vec<String> = a.emails_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    row("e-mails", format!("{} ({})", a.emails, kinds.join(", ")));
    let causes: Vec<String> = a.outage_emails.iter().map(|(k, n)| format!("{k} {n}")).collect();
    row(
        "  appzen_outage: outages mailed, by cause",
        if causes.is_empty() { "0".to_owned() } else { causes.join(", ") },
    );
    row("failing PO (AppZen 500)", report.failing_po.clone().unwrap_or_else(|| "none".to_owned()));
    row("  batches it was handed back in", a.failing_po_batches.to_string());
    row(
        "  other POs' records in them / handed back",
        format!("{} / {}", a.failing_po_batch_others, a.failing_po_batch_others_handed_back),
    );
    row("  its webhooks dead-lettered", a.dead_lettered_failing_po.to_string());
    row("reconcile batches checked / died", format!("{} / {}", a.batches_checked, a.batches_died));
    row("dead-lettered (parked by notify)", report.dead_lettered.to_string());
    let others: Vec<String> = a.dead_lettered_other.iter().map(|(k, n)| format!("{k} {n}")).collect();
    row("  of other POs, by last reason", if others.is_empty() { "0".to_owned() } else { others.join(", ") });
    row("redriven (po-sync-admin)", report.redriven.to_string());
    row("  then settled by reconcile", a.dead_lettered_then_settled.to_string());
    row("parked at the end", report.parked_at_end.to_string());
    row("sends SQS deduplicated (5-minute window)", report.sqs_deduplicated.to_string());
    row("duplicate e-mails, explained by faults", a.duplicate_emails_explained.to_string());
    row("LOST", a.lost.to_string());
    row("ORDER VIOLATIONS", a.order_violations.to_string());
    row("DUPLICATE E-MAILS (unexplained)", a.unexplained_duplicate_emails.to_string());
    row("RECORDS HELD BACK BY ANOTHER PO", a.held_back_by_other_pos.to_string());
    row("PARKED BY AN APPZEN OUTAGE", a.parked_by_appzen.to_string());
    row("OUTAGE E-MAILS NOT ONE PER OUTAGE", a.outage_email_violations.to_string());
    row("final-state violations", a.final_state_violations.to_string());
    row("refused but left a trace", a.refused_with_trace.to_string());
    row("other accounting failures", {
        let other = a.acknowledged_not_queued
            + a.in_two_places
            + a.unexpected_outcomes
            + a.upserted_without_appzen
            + a.attribution_mismatches
            + a.ledger_disagreements
            + a.queues_not_empty
            + a.rejections_without_a_verdict
            + a.unreadable;
        other.to_string()
    });
    row("wall time", format!("{:.1} s", report.wall_seconds));
    row("webhooks per second", format!("{:.2}", report.webhooks_per_second));
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, value) in rows {
        text.push_str(&format!("  {name:<width$}  {value:>12}\n"));
    }
    text
}
