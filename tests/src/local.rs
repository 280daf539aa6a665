//! The whole pipeline on one machine, without AWS or Docker: moto server (SQS, SES), the AppZen sandbox,
//! the three real function binaries under `cargo lambda watch`, and the local SQS event-source poller.
//!
//! Used by `po-sync-local run|serve` and by the end-to-end tests, so both exercise the same machinery.
//! Everything started here is stopped by PID when the [`LocalStack`] is dropped (also on panic).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine;

use crate::appzen_sandbox::{Credentials, RecordedRequest, RunningSandbox, Sandbox};
use crate::moto::{MotoServer, free_port};
use crate::poller::{EventSourceMapping, Invocation, LogSink, Poller};
use crate::workspace_root;

/// The functions, as `cargo lambda watch` knows them (their binary names).
pub const FUNCTIONS: [&str; 3] = ["ingest", "reconcile", "notify"];

/// Komet's Basic-auth credentials for the local ingest (not secrets: they only open the local endpoint).
pub const WEBHOOK_USERNAME: &str = "komet";
pub const WEBHOOK_PASSWORD: &str = "local-webhook-password";
/// The verified SES sender and the people notified.
pub const NOTIFY_FROM: &str = "po-sync@example.com";
pub const NOTIFY_TO: [&str; 2] = ["accounts-payable@example.com", "purchasing@example.com"];
/// The version ledger table the local pipeline creates in moto.
pub const LEDGER_TABLE: &str = "po-sync-ledger";

/// How the local pipeline is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where each process writes its output (`functions.log`, `poller.log`).
    pub logs_dir: PathBuf,
    /// Receives before SQS moves a webhook to its dead-letter queue.
    pub max_receive_count: u32,
    /// The queues' visibility timeout, in seconds: how long a batch may take before SQS hands it out again.
    pub visibility_timeout: u32,
    /// After a failed record, the poller makes it visible again after this many seconds (keeps retries
    /// and the road to the DLQ quick).
    pub retry_after_seconds: Option<i32>,
    /// Let `cargo lambda watch` rebuild and restart a function when its code changes (`serve`).
    pub reload: bool,
    /// How long to wait for the functions to compile and answer the first time.
    pub ready_timeout: Duration,
    /// Port for the Lambda emulator (0: a free one).
    pub lambda_port: u16,
    /// Port for the AppZen sandbox (0: a free one).
    pub sandbox_port: u16,
    /// Extra or overriding function environment (`NAME`, `value`).
    pub function_env: Vec<(String, String)>,
}

impl StackOptions {
    pub fn new(logs_dir: impl Into<PathBuf>) -> Self {
        StackOptions {
            logs_dir: logs_dir.into(),
            max_receive_count: 3,
            visibility_timeout: 30,
            retry_after_seconds: Some(1),
            reload: false,
            ready_timeout: Duration::from_secs(300),
            lambda_port: 0,
            sandbox_port: 0,
            function_env: Vec::new(),
        }
    }
}

/// The queue URLs.
#[derive(Debug, Clone)]
pub struct Queues {
    pub webhooks: String,
    pub webhooks_dlq: String,
    /// Where notify keeps each dead-lettered webhook for a later redrive. Not in [`Queues::all`]: it holds
    /// messages by design, so it never counts against "idle".
    pub webhooks_parked: String,
    pub notifications: String,
    pub notifications_dlq: String,
}

impl Queues {
    pub fn all(&self) -> [(&'static str, &str); 4] {
        [
            ("webhooks", self.webhooks.as_str()),
            ("webhooks-dlq", self.webhooks_dlq.as_str()),
            ("notifications", self.notifications.as_str()),
            ("notifications-dlq", self.notifications_dlq.as_str()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error("{0}")]
    Timeout(String),
}

fn setup(what: &str) -> impl FnOnce(String) -> StackError + '_ {
    move |detail| StackError::Setup { what: what.to_owned(), detail }
}

/// A process started in its own process group, stopped (group and descendants) when dropped.
pub struct ProcessGroup {
    name: String,
    child: Child,
}

impl ProcessGroup {
    pub fn spawn(name: &str, mut command: Command) -> std::io::Result<ProcessGroup> {
        command.process_group(0);
        // If this process dies without unwinding, the kernel stops the group's leader.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(ProcessGroup { name: name.to_owned(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is still running (`Some(status)` once it exited).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the group, then SIGKILL to the group and every descendant still alive after `grace`.
    /// Descendants are collected first: a tool such as cargo-lambda starts its children in groups of their own.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as i32;
        // (pid, process group) now, while the tree is intact; after the leader exits its children are orphans.
        let before: Vec<(i32, i32)> =
            descendants(pid as u32).into_iter().map(|p| (p as i32, unsafe { libc::getpgid(p as i32) })).collect();
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.exited().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (descendant, group) in before {
            // Only a process still in the group it had: a PID reused since then is left alone.
            if unsafe { libc::getpgid(descendant) } != group {
                continue;
            }
            unsafe {
                if group > 1 && group != own_process_group() {
                    libc::kill(-group, libc::SIGKILL);
                }
                libc::kill(descendant, libc::SIGKILL);
            }
        }
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn own_process_group() -> i32 {
    unsafe { libc::getpgrp() }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Every process whose ancestry leads to `root` (from `/proc`), children before grandchildren.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
            let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) else { continue };
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// The running local pipeline.
pub struct LocalStack {
    // Field order is drop order: the poller stops before the functions, the functions before moto.
    poller: Option<Poller>,
    lambda: ProcessGroup,
    pub sandbox: RunningSandbox,
    pub moto: MotoServer,
    pub sqs: aws_sdk_sqs::Client,
    pub queues: Queues,
    /// The version ledger (moto DynamoDB), read the way reconcile writes it.
    pub ledger: po_sync_aws::ledger::DynamoLedger,
    http: reqwest::Client,
    lambda_url: String,
    options: StackOptions,
}

impl LocalStack {
    /// Starts everything and waits until the three functions answer. `log` receives progress lines.
    pub async fn start(options: StackOptions, log: &LogSink) -> Result<LocalStack, StackError> {
        std::fs::create_dir_all(&options.logs_dir).map_err(|e| setup("create the logs directory")(e.to_string()))?;

        log.line("starting moto server (SQS, SES)");
        let moto = MotoServer::start();
        let config = moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let queues = create_queues(&sqs, &options).await?;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let ledger_table = crate::moto::create_ledger_table(&dynamodb, LEDGER_TABLE)
            .await
            .map_err(|e| setup("create the ledger table")(e.to_string()))?;
        let ledger = po_sync_aws::ledger::DynamoLedger::new(dynamodb, ledger_table);
        let ses = aws_sdk_ses::Client::new(&config);
        ses.verify_email_identity()
            .email_address(NOTIFY_FROM)
            .send()
            .await
            .map_err(|e| setup("verify the SES sender")(aws_sdk_ses::Error::from(e).to_string()))?;
        log.line(format!(
            "moto on {} (pid {}): 5 FIFO queues (webhooks, notifications, their DLQs, parked), the ledger table {LEDGER_TABLE}, SES sender {NOTIFY_FROM} verified",
            moto.endpoint_url(),
            moto.pid()
        ));

        let sandbox = Sandbox::new(Credentials::default())
            .spawn(options.sandbox_port)
            .await
            .map_err(|e| setup("start the AppZen sandbox")(e.to_string()))?;
        log.line(format!("AppZen sandbox on {}", sandbox.base_url()));

        let env_file = options.logs_dir.join("functions.env");
        let env = function_env(&moto, &sandbox, &queues, &options);
        let env_text: String = env.iter().map(|(name, value)| format!("{name}={}\n", env_file_value(value))).collect();
        std::fs::write(&env_file, env_text).map_err(|e| setup("write the functions' env file")(e.to_string()))?;

        let lambda_port = if options.lambda_port == 0 { free_port() } else { options.lambda_port };
        let lambda = start_cargo_lambda(lambda_port, &env_file, &options)?;
        let lambda_url = format!("http://127.0.0.1:{lambda_port}");
        log.line(format!(
            "cargo lambda watch on {lambda_url} (pid {}), output in {}",
            lambda.pid(),
            options.logs_dir.join("functions.log").display()
        ));

        let http = reqwest::Client::builder()
            .timeout(options.ready_timeout)
            .build()
            .map_err(|e| setup("build an HTTP client")(e.to_string()))?;
        let mut stack =
            LocalStack { poller: None, lambda, sandbox, moto, sqs, queues, ledger, http, lambda_url, options };
        stack.wait_until_functions_answer(log).await?;

        let poller_log = std::fs::File::create(stack.options.logs_dir.join("poller.log"))
            .map_err(|e| setup("create poller.log")(e.to_string()))?;
        let mapping = |queue: &str, function: &str| EventSourceMapping {
            retry_after_seconds: stack.options.retry_after_seconds,
            ..EventSourceMapping::new(queue, function)
        };
        let mappings = vec![
            mapping(&stack.queues.webhooks, "reconcile"),
            mapping(&stack.queues.notifications, "notify"),
            mapping(&stack.queues.webhooks_dlq, "notify"),
        ];
        let poller =
            Poller::start(stack.sqs.clone(), &stack.lambda_url, "us-east-1", mappings, LogSink::new(poller_log))
                .await
                .map_err(|e| setup("start the SQS poller")(e.to_string()))?;
        stack.poller = Some(poller);
        log.line("poller: webhooks -> reconcile, notifications -> notify, webhooks-dlq -> notify");
        Ok(stack)
    }

    /// `http://127.0.0.1:PORT` of the Lambda emulator.
    pub fn lambda_url(&self) -> &str {
        &self.lambda_url
    }

    /// The Function URL of ingest, where Komet posts.
    pub fn ingest_url(&self) -> String {
        format!("{}/lambda-url/ingest/", self.lambda_url)
    }

    pub fn logs_dir(&self) -> &Path {
        &self.options.logs_dir
    }

    pub fn lambda_pid(&self) -> u32 {
        self.lambda.pid()
    }

    /// Invokes each function once with a harmless event, so `cargo lambda watch` builds and starts them.
    async fn wait_until_functions_answer(&mut self, log: &LogSink) -> Result<(), StackError> {
        let started = Instant::now();
        let deadline = started + self.options.ready_timeout;
        while tokio::net::TcpStream::connect(self.lambda_url.trim_start_matches("http://")).await.is_err() {
            if let Some(status) = self.lambda.exited() {
                return Err(setup("cargo lambda watch")(format!("exited with {status}; see {}", self.functions_log())));
            }
            if Instant::now() > deadline {
                return Err(StackError::Timeout(format!("cargo lambda watch did not listen on {}", self.lambda_url)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log.line("building and starting ingest, reconcile and notify (the first time compiles them)");
        let empty_batch = r#"{"Records":[]}"#;
        let ingest = self.http.get(self.ingest_url()).send();
        let invoke = |function: &str| {
            self.http
                .post(format!("{}/2015-03-31/functions/{function}/invocations", self.lambda_url))
                .header("content-type", "application/json")
                .body(empty_batch)
                .send()
        };
        let warm_up = async { tokio::join!(ingest, invoke("reconcile"), invoke("notify")) };
        let functions_log = self.functions_log();
        let (ingest, reconcile, notify) = tokio::select! {
            answers = warm_up => answers,
            status = wait_for_exit(&mut self.lambda) => {
                return Err(setup("cargo lambda watch")(format!("exited with {status}{}", log_tail(&functions_log))));
            }
            // A function that does not compile or dies at start never takes its invocation: fail now, not at the deadline.
            failure = build_or_start_failure(&functions_log) => {
                return Err(setup("starting the functions")(format!("{failure}{}", log_tail(&functions_log))));
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                return Err(StackError::Timeout(format!(
                    "the functions did not answer within {} s{}",
                    self.options.ready_timeout.as_secs(),
                    log_tail(&functions_log)
                )));
            }
        };
        // ingest answers a GET without credentials with a 4xx of its own; the batch functions accept an empty batch.
        check_answer("ingest", ingest, |s, _| (400..500).contains(&s) && s != 404, &functions_log).await?;
        let empty_batch_ok =
            |s: u16, body: &str| s == 200 && crate::poller::batch_item_failures(body).is_ok_and(|f| f.is_empty());
        check_answer("reconcile", reconcile, empty_batch_ok, &functions_log).await?;
        check_answer("notify", notify, empty_batch_ok, &functions_log).await?;
        log.line(format!("functions ready after {:.1} s", started.elapsed().as_secs_f64()));
        Ok(())
    }

    fn functions_log(&self) -> String {
        self.options.logs_dir.join("functions.log").display().to_string()
    }

    /// POSTs a webhook body to ingest as Komet does (Basic auth); returns the status and body.
    pub async fn post_webhook(&self, body: &[u8]) -> Result<(u16, String), reqwest::Error> {
        self.post_webhook_as(body, Some((WEBHOOK_USERNAME, WEBHOOK_PASSWORD))).await
    }

    pub async fn post_webhook_as(
        &self,
        body: &[u8],
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, String), reqwest::Error> {
        let mut request = self
            .http
            .post(self.ingest_url())
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(60))
            .body(body.to_vec());
        if let Some((user, password)) = basic {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header("authorization", format!("Basic {token}"));
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Messages on each queue: visible + in flight + delayed.
    pub async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, StackError> {
        let mut depths = Vec::with_capacity(4);
        for (name, url) in self.queues.all() {
            let attributes = self
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(|e| setup("read queue depth")(aws_sdk_sqs::Error::from(e).to_string()))?;
            let count: u64 = attributes
                .attributes()
                .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
                .unwrap_or_default();
            depths.push((name, count));
        }
        Ok(depths)
    }

    /// Waits until every message has been handled: all queues empty and no batch in the poller's hands.
    /// A webhook's journey always leaves a message somewhere (ingest → webhooks → notifications or DLQ) until
    /// the last function has answered and the poller deleted it, so this is the end of processing.
    pub async fn wait_until_idle(&self, timeout: Duration) -> Result<(), StackError> {
        let deadline = Instant::now() + timeout;
        loop {
            let depths = self.queue_depths().await?;
            let busy = self.poller.as_ref().is_some_and(Poller::busy);
            if !busy && depths.iter().all(|(_, n)| *n == 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StackError::Timeout(format!(
                    "queues not empty after {} s: {depths:?}, poller busy: {busy}; logs in {}",
                    timeout.as_secs(),
                    self.options.logs_dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `condition` holds, checking every 100 ms until `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> Result<(), StackError> {
        let deadline = Instant::now() + timeout;
        while !condition(self) {
            if Instant::now() > deadline {
                return Err(StackError::Timeout(format!("{what}: not after {} s", timeout.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The upserts AppZen received, oldest first.
    pub fn appzen_upserts(&self) -> Vec<RecordedRequest> {
        self.sandbox.upserts()
    }

    /// The e-mails SES accepted, oldest first (moto's record).
    pub fn sent_emails(&self) -> Vec<serde_json::Value> {
        self.moto.sent_emails()
    }

    /// The poller's invocations so far.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.poller.as_ref().map(Poller::invocations).unwrap_or_default()
    }

    /// Stops the poller (letting its batch in hand finish), then everything else by PID.
    pub async fn shutdown(mut self) {
        if let Some(poller) = self.poller.take() {
            poller.stop().await;
        }
        self.lambda.stop(Duration::from_secs(3));
    }
}

async fn check_answer(
    name: &str,
    answer: Result<reqwest::Response, reqwest::Error>,
    ok: impl Fn(u16, &str) -> bool,
    functions_log: &str,
) -> Result<(), StackError> {
    let answer = answer.map_err(|e| setup(name)(format!("no answer ({e}){}", log_tail(functions_log))))?;
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_default();
    if ok(status, &body) {
        Ok(())
    } else {
        Err(setup(name)(format!("answered {status} {body}{}", log_tail(functions_log))))
    }
}

/// The last lines of a log, to put in an error message.
fn log_tail(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
    format!("; last lines of {path}:\n  {tail}")
}

/// Resolves when cargo-lambda's output shows a function that failed to build or exited.
async fn build_or_start_failure(functions_log: &str) -> String {
    loop {
        let text = std::fs::read_to_string(functions_log).unwrap_or_default();
        if let Some(line) =
            text.lines().find(|l| l.starts_with("error: could not compile") || l.contains("ERROR command exited"))
        {
            return line.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for_exit(process: &mut ProcessGroup) -> std::process::ExitStatus {
    loop {
        if let Some(status) = process.exited() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_queues(sqs: &aws_sdk_sqs::Client, options: &StackOptions) -> Result<Queues, StackError> {
    let webhooks_parked = create_fifo_queue(sqs, "po-sync-webhooks-parked.fifo", options, None).await?;
    let webhooks_dlq = create_fifo_queue(sqs, "po-sync-webhooks-dlq.fifo", options, None).await?;
    let webhooks = create_fifo_queue(sqs, "po-sync-webhooks.fifo", options, Some(&webhooks_dlq)).await?;
    let notifications_dlq = create_fifo_queue(sqs, "po-sync-notifications-dlq.fifo", options, None).await?;
    let notifications = create_fifo_queue(sqs, "po-sync-notifications.fifo", options, Some(&notifications_dlq)).await?;
    Ok(Queues { webhooks, webhooks_dlq, webhooks_parked, notifications, notifications_dlq })
}

async fn create_fifo_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    options: &StackOptions,
    dead_letter_queue_url: Option<&str>,
) -> Result<String, StackError> {
    let dead_letter = dead_letter_queue_url.map(|url| (url, options.max_receive_count));
    crate::moto::create_fifo_queue(sqs, name, dead_letter, Some(options.visibility_timeout))
        .await
        .map_err(|e| setup(name)(e.to_string()))
}

/// The functions' environment (the contract in the README), pointing at moto and the sandbox.
fn function_env(
    moto: &MotoServer,
    sandbox: &RunningSandbox,
    queues: &Queues,
    options: &StackOptions,
) -> Vec<(String, String)> {
    let credentials = sandbox.credentials();
    let mut env: Vec<(String, String)> = moto.aws_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let ours = [
        ("RUST_LOG", "info".to_owned()),
        ("WEBHOOK_AUTH", "basic".to_owned()),
        ("WEBHOOK_USERNAME", WEBHOOK_USERNAME.to_owned()),
        ("WEBHOOK_PASSWORD", WEBHOOK_PASSWORD.to_owned()),
        ("QUEUE_URL", queues.webhooks.clone()),
        ("NOTIFY_QUEUE_URL", queues.notifications.clone()),
        ("PARKED_QUEUE_URL", queues.webhooks_parked.clone()),
        ("LEDGER_TABLE_NAME", LEDGER_TABLE.to_owned()),
        ("APPZEN_BASE_URL", sandbox.base_url()),
        ("APPZEN_API_KEY", credentials.api_key.clone()),
        ("APPZEN_CUSTOMER_ID", credentials.customer_id.clone()),
        ("APPZEN_CUSTOMER_KEY", credentials.customer_key.clone()),
        ("APPZEN_TIMEOUT_MS", "5000".to_owned()),
        ("APPZEN_MAX_ATTEMPTS", "3".to_owned()),
        ("NOTIFY_FROM", NOTIFY_FROM.to_owned()),
        ("NOTIFY_TO", NOTIFY_TO.join(",")),
        ("NOTIFY_SUBJECT_PREFIX", "[po-sync local]".to_owned()),
    ];
    env.extend(ours.into_iter().map(|(k, v)| (k.to_owned(), v)));
    for (name, value) in &options.function_env {
        env.retain(|(existing, _)| existing != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

/// A value for cargo-lambda's env file (dotenv syntax): double-quoted, with `\`, `"` and `$` escaped.
fn env_file_value(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Removes the variables cargo sets for the crate it runs (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …) from a
/// command's environment. Under `cargo run` / `cargo test` they describe this crate; a nested cargo that
/// inherits them sees "changed" values for build scripts watching them (ring's does) and rebuilds half the
/// dependency tree, then the next plain `cargo build` rebuilds it back.
pub fn without_crate_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_a_crate = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_a_crate {
            command.env_remove(name);
        }
    }
    command
}

/// Where cargo-lambda is: `$CARGO_LAMBDA`, else the project's `.venv`, else `PATH`.
fn cargo_lambda_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_LAMBDA") {
        return path.into();
    }
    let venv = workspace_root().join(".venv/bin/cargo-lambda");
    if venv.exists() { venv } else { PathBuf::from("cargo-lambda") }
}

fn start_cargo_lambda(port: u16, env_file: &Path, options: &StackOptions) -> Result<ProcessGroup, StackError> {
    let log_path = options.logs_dir.join("functions.log");
    let log = std::fs::File::create(&log_path).map_err(|e| setup("create functions.log")(e.to_string()))?;
    let log_err = log.try_clone().map_err(|e| setup("create functions.log")(e.to_string()))?;
    let root = workspace_root();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![root.join(".venv/bin")];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(cargo_lambda_binary());
    command
        .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string(), "--env-file"])
        .arg(env_file)
        .current_dir(&root)
        .env("PATH", std::env::join_paths(paths).unwrap_or(path))
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if !options.reload {
        command.arg("--ignore-changes");
    }
    without_crate_env(&mut command);
    command.env_remove("RUST_LOG");
    ProcessGroup::spawn("cargo lambda watch", command).map_err(|e| {
        setup("start cargo lambda watch")(format!(
            "{e}: is cargo-lambda installed? `scripts/bootstrap` installs it into .venv ({})",
            cargo_lambda_binary().display()
        ))
    })
}

/// An e-mail as moto's SES recorded it, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub subject: String,
    pub recipients: Vec<String>,
    /// The plain-text part, decoded (`SendEmail` with HTML: moto keeps only the HTML, so this is empty).
    pub text: String,
    /// The HTML part, decoded (empty when there is none).
    pub html: String,
    /// The whole MIME message for `SendRawEmail`; empty for `SendEmail`.
    pub raw: String,
}

impl SentEmail {
    /// Reads moto's `ses.Message` / `ses.RawMessage` entries.
    pub fn from_moto(entry: &serde_json::Value) -> SentEmail {
        if let Some(raw) = entry.get("raw_data").and_then(|v| v.as_str()) {
            let recipients = entry
                .get("destinations")
                .and_then(|d| d.as_array())
                .map(|d| d.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let message = mail_parser::MessageParser::default().parse(raw.as_bytes());
            let part = |html: bool| {
                message
                    .as_ref()
                    .and_then(|m| if html { m.body_html(0) } else { m.body_text(0) })
                    .map(|body| body.replace("\r\n", "\n"))
                    .unwrap_or_default()
            };
            let subject = message.as_ref().and_then(|m| m.subject()).unwrap_or_default().to_owned();
            let (text, html) = (part(false), part(true));
            return SentEmail { subject, recipients, text, html, raw: raw.to_owned() };
        }
        let recipients = ["ToAddresses", "CcAddresses", "BccAddresses"]
            .iter()
            .filter_map(|kind| entry.pointer(&format!("/destinations/{kind}")).and_then(|v| v.as_array()))
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let text_of = |key: &str| entry.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let body = text_of("body");
        let (text, html) =
            if body.trim_start().starts_with('<') { (String::new(), body) } else { (body, String::new()) };
        SentEmail { subject: text_of("subject"), recipients, text, html, raw: String::new() }
    }

    /// Whether the text or the HTML part mentions `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.text.contains(needle) || self.html.contains(needle)
    }
}

/// One line about an AppZen upsert: PO number, line count, total (exact digits), answer.
pub fn describe_upsert(request: &RecordedRequest) -> String {
    let answer = match (request.response_status, request.response_body.as_deref()) {
        (Some(status), Some(body)) => {
            let detail = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("status")
                        .and_then(|s| s.as_str())
                        .map(str::to_owned)
                        .or_else(|| v.get("message").map(|m| m.to_string()))
                })
                .unwrap_or_default();
            format!("{status} {detail}")
        }
        _ => "no answer".to_owned(),
    };
    match po_sync::json::parse(request.body.as_bytes()) {
        Ok(body) => {
            let text = |value: Option<&po_sync::json::Value<'_>>| match value {
                Some(po_sync::json::Value::String(s)) => s.to_string(),
                Some(po_sync::json::Value::Number(n)) => (*n).to_owned(),
                Some(other) => other.describe(),
                None => "?".to_owned(),
            };
            let lines = match body.get("purchase_order_lines") {
                Some(po_sync::json::Value::Array(lines)) => lines.len().to_string(),
                _ => "?".to_owned(),
            };
            let total = body.get("total_amount");
            format!(
                "PO {}: {lines} line(s), total {} {} -> {answer}",
                text(body.get("purchase_order_number")),
                text(total.and_then(|t| t.get("amount"))),
                text(total.and_then(|t| t.get("currency"))),
            )
        }
        Err(e) => format!("a body that is not JSON ({e}) -> {answer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_mail_is_decoded_part_by_part() {
        let raw = "From: <a@example.com>\r\nSubject: =?utf-8?q?PO_P1_=E2=80=94_check?=\r\n =?utf-8?b?IGl0?=\r\n\
                   Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\r\n\
                   --b1\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                   Invoice 01-P0=\r\n02272 is off by =2410.00\r\n\
                   --b1\r\nContent-Type: text/html; charset=\"utf-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                   PHA+MDEtUDAwMjI3MjwvcD4=\r\n--b1--\r\n";
        let email = SentEmail::from_moto(&serde_json::json!({ "raw_data": raw, "destinations": ["x@example.com"] }));
        assert_eq!(email.subject, "PO P1 — check it");
        assert_eq!(email.recipients, ["x@example.com"]);
        assert_eq!(email.text.trim_end(), "Invoice 01-P002272 is off by $10.00");
        assert_eq!(email.html.trim_end(), "<p>01-P002272</p>");
        assert!(email.mentions("01-P002272"));
    }

    #[test]
    fn send_email_entries_keep_their_recipients_and_html() {
        let entry = serde_json::json!({
            "subject": "S", "body": "<html>x</html>",
            "destinations": { "ToAddresses": ["a@example.com"], "CcAddresses": ["b@example.com"], "BccAddresses": [] }
        });
        let email = SentEmail::from_moto(&entry);
        assert_eq!((email.subject.as_str(), email.recipients.len(), email.html.as_str()), ("S", 2, "<html>x</html>"));
    }

    #[test]
    fn env_file_values_are_quoted_for_dotenv() {
        assert_eq!(env_file_value("[po-sync local]"), "\"[po-sync local]\"");
        assert_eq!(env_file_value("a\"b$c\\d"), "\"a\\\"b\\$c\\\\d\"");
    }

    #[test]
    fn describes_an_upsert_with_exact_digits() {
        let request = RecordedRequest {
            seq: 1,
            received_at: String::new(),
            method: "POST".to_owned(),
            path: crate::appzen_sandbox::UPSERT_PATH.to_owned(),
            headers: Default::default(),
            body: r#"{"purchase_order_number":"P1","total_amount":{"amount":500.10,"currency":"USD"},"purchase_order_lines":[{},{}]}"#.to_owned(),
            response_status: Some(201),
            response_body: Some(r#"{"uuid":"u","status":"CREATED"}"#.to_owned()),
        };
        assert_eq!(describe_upsert(&request), "PO P1: 2 line(s), total 500.10 USD -> 201 CREATED");
    }
}
