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

use crate::appzen_sandbox::{Credentials, RecordedRequest, RunningSandbox, Sandbox};
use crate::exsited_sandbox;
use crate::fault_proxy::{ProxyFaults, RunningProxy};
use crate::poller::{EventSourceMapping, Invocation, InvocationDeaths, LogSink, Poller};
use crate::stack_env::{self, ResolvedStack};
use po_sync_aws::metrics;
use po_sync_test_support::emf;
use po_sync_test_support::moto::{MotoServer, free_port};
use po_sync_test_support::workspace_root;

/// The functions' binaries, as `cargo lambda watch` knows them. The template may build more than one function
/// from one binary (`reconcile` and `reconcile-exsited`): each runs under its own `cargo lambda watch`.
pub const FUNCTIONS: [&str; 3] = ["ingest", "reconcile", "notify"];

/// Each destination's reconcile, by its local name ([`stack_env::ResolvedStack::function`]), AppZen's first: a
/// stack has those its `Destinations` name, so one at least. `reconcile` in a stack with AppZen,
/// `reconcile-exsited` in a stack with Exsited.
pub const RECONCILES: [&str; 2] = ["reconcile", "reconcile-exsited"];

/// The local stack's Exsited mapping for Komet's documented sample and the clean PO (the Exsited sandbox's
/// default catalogue: accounts `SUP-0001`/`SUP-0002`, items `FLOWERS`/`ADDITIONAL_CHARGES`), given to the
/// template's `ExsitedAccountMap` and `ExsitedItemMap` parameters.
pub const LOCAL_EXSITED_ACCOUNT_MAP: &str = "V-0042=SUP-0001,AV=SUP-0002";
pub const LOCAL_EXSITED_ITEM_MAP: &str = "CGEN=FLOWERS,PGEN=FLOWERS,RGEN=FLOWERS";

/// Komet's Basic-auth credentials for the local ingest (not secrets: they only open the local endpoint).
pub const WEBHOOK_USERNAME: &str = "komet";
pub const WEBHOOK_PASSWORD: &str = "local-webhook-password";
/// The verified SES sender and the people notified.
pub const NOTIFY_FROM: &str = "po-sync@example.com";
pub const NOTIFY_TO: [&str; 2] = ["accounts-payable@example.com", "purchasing@example.com"];
/// The subject prefix of the local pipeline's e-mails (the template's `NotificationSubjectPrefix`).
pub const SUBJECT_PREFIX: &str = "[po-sync local]";

/// How the local pipeline is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where each process writes its output (`functions.log`, `poller.log`).
    pub logs_dir: PathBuf,
    /// Receives before SQS moves a webhook to its dead-letter queue (the template's `MaxReceiveCount`).
    pub max_receive_count: u32,
    /// The SAM template the functions' environment, the queues, the ledger table and the event sources come
    /// from (deployed into moto's CloudFormation: `stack_env`).
    pub template: PathBuf,
    /// After a failed record, the poller makes it visible again after this many seconds (keeps retries
    /// and the road to the DLQ quick), unless the function sets it itself (reconcile, by `retry_schedule`).
    pub retry_after_seconds: Option<i32>,
    /// reconcile's `RETRY_SCHEDULE` locally, in place of the template's (which waits minutes to hours).
    pub retry_schedule: String,
    /// Let `cargo lambda watch` build, rebuild and restart a function when its code changes (`serve`). Without
    /// it, the functions are the binaries of the workspace build ([`WORKSPACE_BUILD`]: the build `make test` and
    /// `make demo` make, so nothing is compiled twice), run against `cargo lambda watch --only-lambda-apis`.
    pub reload: bool,
    /// How long to wait for the functions to compile and answer the first time.
    pub ready_timeout: Duration,
    /// Port for the Lambda emulator (0: a free one).
    pub lambda_port: u16,
    /// Port for the AppZen sandbox (0: a free one).
    pub sandbox_port: u16,
    /// Extra or overriding environment for every function (`NAME`, `value`), on top of the template's.
    pub function_env: Vec<(String, String)>,
    /// Put the fault-injecting proxy between the functions and moto (the soak); `None`: they talk to moto.
    pub aws_faults: Option<ProxyFaults>,
    /// Injected invocation deaths, per function (binary name) the poller invokes (the soak).
    pub invocation_deaths: Vec<(String, InvocationDeaths)>,
    /// Instances of ingest `cargo lambda watch` may run at once (Lambda runs one per concurrent caller).
    pub ingest_concurrency: u32,
    /// The template's `Destinations` parameter: `appzen` (default), `exsited` or `appzen,exsited`. With exsited
    /// the Exsited sandbox runs, and reconcile-exsited and notify-exsited beside the others; without appzen there
    /// is no `reconcile` (AppZen's), and nothing reaches the AppZen sandbox, which runs all the same.
    pub destinations: String,
}

impl StackOptions {
    pub fn new(logs_dir: impl Into<PathBuf>) -> Self {
        StackOptions {
            logs_dir: logs_dir.into(),
            max_receive_count: 3,
            template: stack_env::default_template(),
            retry_after_seconds: Some(1),
            retry_schedule: "1s".to_owned(),
            reload: false,
            ready_timeout: Duration::from_secs(300),
            lambda_port: 0,
            sandbox_port: 0,
            function_env: Vec::new(),
            aws_faults: None,
            invocation_deaths: Vec::new(),
            ingest_concurrency: 1,
            destinations: "appzen".to_owned(),
        }
    }
}

/// The queue URLs.
#[derive(Debug, Clone)]
pub struct Queues {
    /// AppZen's webhook queue (ingest's `QUEUE_URL`), with its DLQ and parked queue: in every stack (notify reads
    /// the DLQ), empty in a stack without AppZen.
    pub webhooks: String,
    pub webhooks_dlq: String,
    /// Where notify keeps each dead-lettered webhook for a later redrive. Not in [`Queues::all`]: it holds
    /// messages by design, so it never counts against "idle".
    pub webhooks_parked: String,
    pub notifications: String,
    pub notifications_dlq: String,
    /// Exsited's webhook queue, its dead letters and parked webhooks, when the stack has Exsited.
    pub exsited: Option<ExsitedQueues>,
}

/// Exsited's copies of the webhook queues (`webhooks-exsited.fifo`, its DLQ and its parked queue).
#[derive(Debug, Clone)]
pub struct ExsitedQueues {
    pub webhooks: String,
    pub webhooks_dlq: String,
    pub webhooks_parked: String,
}

impl Queues {
    /// Every queue that is empty when the pipeline is idle (not the parked queues).
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        let mut all = vec![
            ("webhooks", self.webhooks.as_str()),
            ("webhooks-dlq", self.webhooks_dlq.as_str()),
            ("notifications", self.notifications.as_str()),
            ("notifications-dlq", self.notifications_dlq.as_str()),
        ];
        if let Some(exsited) = &self.exsited {
            all.extend([
                ("webhooks-exsited", exsited.webhooks.as_str()),
                ("webhooks-exsited-dlq", exsited.webhooks_dlq.as_str()),
            ]);
        }
        all
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

/// One `cargo lambda watch` per function, each started with the environment the template gives that function;
/// without reload, the function's own processes beside it.
struct Emulator {
    /// The function's local name (`reconcile-exsited`).
    function: String,
    /// Its binary (`reconcile`): the name its `cargo lambda watch` runs and invokes it by.
    binary: String,
    url: String,
    process: ProcessGroup,
    instances: Vec<ProcessGroup>,
}

impl Emulator {
    /// The first of its processes that exited, and how.
    fn exited(&mut self) -> Option<String> {
        if let Some(status) = self.process.exited() {
            return Some(format!("{}'s cargo lambda watch with {status}", self.function));
        }
        self.instances.iter_mut().find_map(|p| p.exited().map(|status| format!("{} with {status}", p.name())))
    }

    fn stop(&mut self) {
        for instance in &mut self.instances {
            instance.stop(Duration::from_secs(3));
        }
        self.process.stop(Duration::from_secs(3));
    }
}

/// The running local pipeline.
pub struct LocalStack {
    // Field order is drop order: the poller stops before the functions, the functions before moto.
    lambda_control: Option<crate::lambda_control::RunningLambdaControl>,
    poller: Option<Poller>,
    lambdas: Vec<Emulator>,
    proxy: Option<RunningProxy>,
    pub sandbox: RunningSandbox,
    /// The Exsited sandbox, when the stack has Exsited (`StackOptions::destinations`).
    pub exsited: Option<exsited_sandbox::RunningSandbox>,
    pub moto: MotoServer,
    pub sqs: aws_sdk_sqs::Client,
    pub queues: Queues,
    /// The version ledger (moto DynamoDB), read the way reconcile writes it.
    pub ledger: po_sync_aws::ledger::DynamoLedger,
    /// The template as deployed into moto: each function's resolved environment and event sources.
    pub stack: ResolvedStack,
    http: reqwest::Client,
    lambda_url: String,
    options: StackOptions,
}

impl LocalStack {
    /// Starts everything and waits until the three functions answer. `log` receives progress lines.
    pub async fn start(options: StackOptions, log: &LogSink) -> Result<LocalStack, StackError> {
        std::fs::create_dir_all(&options.logs_dir).map_err(|e| setup("create the logs directory")(e.to_string()))?;

        log.line("starting moto server (SQS, SES, DynamoDB, CloudFormation)");
        let moto = MotoServer::start();
        let config = moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        log.line(format!(
            "deploying {} into moto's CloudFormation (translated by aws-sam-translator)",
            options.template.display()
        ));
        let stack = stack_env::deploy(&config, &options.template, &stack_parameters(&options))
            .await
            .map_err(|e| setup(&format!("deploy {}", options.template.display()))(e))?;
        let queues = stack_queues(&sqs, &stack).await?;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let ledger_table =
            stack.required_var(first_reconcile(&stack)?, "LEDGER_TABLE_NAME").map_err(setup("the ledger table"))?;
        let ledger = po_sync_aws::ledger::DynamoLedger::new(dynamodb, ledger_table);
        let ses = aws_sdk_ses::Client::new(&config);
        ses.verify_email_identity()
            .email_address(NOTIFY_FROM)
            .send()
            .await
            .map_err(|e| setup("verify the SES sender")(aws_sdk_ses::Error::from(e).to_string()))?;
        log.line(format!(
            "moto on {} (pid {}): stack {} ({} resources left to the local pipeline: {}), the ledger table {}, SES sender {NOTIFY_FROM} verified",
            moto.endpoint_url(),
            moto.pid(),
            stack.stack_name,
            stack.left_out.len(),
            stack.left_out.join(", "),
            ledger.table()
        ));

        let sandbox = Sandbox::new(Credentials::default())
            .spawn(options.sandbox_port)
            .await
            .map_err(|e| setup("start the AppZen sandbox")(e.to_string()))?;
        log.line(format!("AppZen sandbox on {}", sandbox.base_url()));
        let exsited = match stack.functions.iter().any(|f| f.var("EXSITED_BASE_URL").is_some()) {
            true => {
                let exsited = exsited_sandbox::Sandbox::new(exsited_sandbox::Config::default())
                    .spawn(0)
                    .await
                    .map_err(|e| setup("start the Exsited sandbox")(e.to_string()))?;
                log.line(format!("Exsited sandbox on {}", exsited.base_url()));
                Some(exsited)
            }
            false => None,
        };

        let proxy = match &options.aws_faults {
            Some(faults) => {
                let mut faults = faults.clone();
                if faults.slow_queue.is_empty() {
                    faults.slow_queue = queues.webhooks.rsplit('/').next().unwrap_or_default().to_owned();
                }
                let proxy = RunningProxy::start(&moto.endpoint_url(), faults)
                    .await
                    .map_err(|e| setup("start the fault proxy")(e.to_string()))?;
                log.line(format!("fault proxy on {} in front of moto", proxy.endpoint_url()));
                Some(proxy)
            }
            None => None,
        };
        let aws_endpoint = proxy.as_ref().map_or_else(|| moto.endpoint_url(), RunningProxy::endpoint_url);
        let envs = function_envs(&stack, &aws_endpoint, &sandbox, exsited.as_ref(), &options)?;

        // Every emulator writes to the one functions.log, each appending.
        std::fs::File::create(options.logs_dir.join("functions.log"))
            .map_err(|e| setup("create functions.log")(e.to_string()))?;
        let binaries = match options.reload {
            true => None,
            false => {
                log.line("building the functions (the workspace build: nothing to do after make test or make demo)");
                Some(build_function_binaries(&options.logs_dir.join("functions.log")).await?)
            }
        };
        let mut lambdas = Vec::with_capacity(envs.len());
        for (function, env) in &envs {
            let binary_name = stack.function(function).map_err(setup("the functions"))?.binary.clone();
            let env_file = options.logs_dir.join(format!("{function}.env"));
            let env_text: String =
                env.iter().map(|(name, value)| format!("{name}={}\n", env_file_value(value))).collect();
            std::fs::write(&env_file, env_text).map_err(|e| setup("write a function's env file")(e.to_string()))?;
            let port = match (function.as_str(), options.lambda_port) {
                ("ingest", port) if port != 0 => port,
                _ => free_port(),
            };
            let mut process = start_cargo_lambda(port, &env_file, &options, function)?;
            let url = format!("http://127.0.0.1:{port}");
            let mut instances = Vec::new();
            if let Some(binaries) = &binaries {
                // A function exits when its runtime API does not answer: start it once cargo lambda listens.
                let deadline = Instant::now() + options.ready_timeout;
                while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                    if let Some(status) = process.exited() {
                        return Err(setup("cargo lambda watch")(format!("{function}'s exited with {status}")));
                    }
                    if Instant::now() > deadline {
                        return Err(StackError::Timeout(format!("cargo lambda watch did not listen on {url}")));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let binary =
                    binaries.iter().find(|(name, _)| *name == binary_name).map(|(_, path)| path).ok_or_else(|| {
                        setup("the functions")(format!("cargo build made no binary named {binary_name}"))
                    })?;
                let count = if function == "ingest" { options.ingest_concurrency.max(1) } else { 1 };
                for instance in 0..count {
                    instances.push(start_function(binary, (function, &binary_name), instance, port, env, &options)?);
                }
            }
            let pids: Vec<String> = instances.iter().map(|p| p.pid().to_string()).collect();
            log.line(format!(
                "{function}: cargo lambda watch on {url} (pid {}{}), environment {}",
                process.pid(),
                if pids.is_empty() { String::new() } else { format!("; the function: pid {}", pids.join(", ")) },
                env_file.display()
            ));
            lambdas.push(Emulator { function: function.clone(), binary: binary_name, url, process, instances });
        }
        let lambda_url = lambdas
            .iter()
            .find(|e| e.function == "ingest")
            .map(|e| e.url.clone())
            .ok_or_else(|| setup("the template")("it has no ingest function".to_owned()))?;

        let http = reqwest::Client::builder()
            .timeout(options.ready_timeout)
            .build()
            .map_err(|e| setup("build an HTTP client")(e.to_string()))?;
        let mut stack = LocalStack {
            lambda_control: None,
            poller: None,
            lambdas,
            proxy,
            sandbox,
            exsited,
            moto,
            sqs,
            queues,
            ledger,
            stack,
            http,
            lambda_url,
            options,
        };
        stack.wait_until_functions_answer(log).await?;

        let poller_log = std::fs::File::create(stack.options.logs_dir.join("poller.log"))
            .map_err(|e| setup("create poller.log")(e.to_string()))?;
        // The template's own event sources (its functions' `Events`), played by the local poller.
        let mut mappings = Vec::new();
        for source in &stack.stack.event_sources {
            // A function the template gives the queue's URL spaces its own retries (each reconcile's RetrySchedule).
            let queue_name = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
            let function_sets_visibility = stack.stack.functions.iter().any(|f| {
                f.name == source.function
                    && f.var("WEBHOOK_QUEUE_URL").is_some_and(|url| queue_name(url) == queue_name(&source.queue_url))
            });
            mappings.push(EventSourceMapping {
                batch_size: source.batch_size,
                retry_after_seconds: stack.options.retry_after_seconds,
                function_sets_visibility,
                invoke_base_url: Some(stack.emulator_url(&source.function)?.to_owned()),
                binary: Some(source.binary.clone()),
                deaths: stack
                    .options
                    .invocation_deaths
                    .iter()
                    .find(|(f, _)| *f == source.function)
                    .map(|(_, d)| d.clone()),
                ..EventSourceMapping::new(&source.queue_url, &source.function)
            });
        }
        let described: Vec<String> = stack
            .stack
            .event_sources
            .iter()
            .map(|s| format!("{} -> {}", s.queue_url.rsplit('/').next().unwrap_or_default(), s.function))
            .collect();
        let poller =
            Poller::start(stack.sqs.clone(), &stack.lambda_url, "us-east-1", mappings, LogSink::new(poller_log))
                .await
                .map_err(|e| setup("start the SQS poller")(e.to_string()))?;
        let control = crate::lambda_control::spawn(poller.controls(), std::sync::Arc::new(envs))
            .await
            .map_err(|e| setup("start the Lambda control stand-in")(e.to_string()))?;
        stack.poller = Some(poller);
        log.line(format!("poller (the template's event sources): {}", described.join(", ")));
        log.line(format!(
            "Lambda's event-source-mapping and function-configuration API for them (pause, resume, verify): {} (AWS_ENDPOINT_URL_LAMBDA)",
            control.url
        ));
        stack.lambda_control = Some(control);
        Ok(stack)
    }

    /// Where `po-sync-admin pause`/`resume`/`status` reach the mappings the poller plays (`AWS_ENDPOINT_URL_LAMBDA`).
    pub fn lambda_control_url(&self) -> Option<&str> {
        self.lambda_control.as_ref().map(|c| c.url.as_str())
    }

    /// The local id of AppZen's reconcile's mapping (the stack output `ReconcileEventSourceMappingId` on AWS);
    /// `None` in a stack without AppZen.
    pub fn reconcile_event_source(&self) -> Option<String> {
        self.has_function("reconcile").then(|| crate::poller::mapping_uuid("reconcile", &self.queues.webhooks))
    }

    /// Whether the deployed stack has the function `name` (`reconcile`, `reconcile-exsited`, …).
    pub fn has_function(&self, name: &str) -> bool {
        self.stack.function(name).is_ok()
    }

    /// The flags that point `po-sync-admin` at this pipeline's resources (the stack's outputs on AWS), for
    /// every command; `make serve` prints them and the end-to-end test runs the CLI with them. A destination the
    /// stack lacks has no flags, as its outputs are missing on AWS.
    pub fn admin_flags(&self) -> Vec<String> {
        let var = |function: &str, name: &str| {
            self.stack.required_var(function, name).map(str::to_owned).unwrap_or_else(|e| format!("({e})"))
        };
        let reconcile = first_reconcile(&self.stack).unwrap_or("reconcile");
        let q = &self.queues;
        [
            ("--webhook-queue-url", q.webhooks.clone()),
            ("--webhook-dlq-url", q.webhooks_dlq.clone()),
            ("--parked-queue-url", q.webhooks_parked.clone()),
            ("--notification-queue-url", q.notifications.clone()),
            ("--notification-dlq-url", q.notifications_dlq.clone()),
            ("--ledger-table", self.ledger.table().to_owned()),
            ("--history-table", var(reconcile, "HISTORY_TABLE_NAME")),
            ("--archive-bucket", var("ingest", "ARCHIVE_BUCKET")),
        ]
        .into_iter()
        // AppZen's reconcile: its mapping (ReconcileEventSourceMappingId on AWS) and the local function's name, as
        // GetFunctionConfiguration knows it here (ReconcileFunctionName).
        .chain(self.reconcile_event_source().map(|mapping| ("--event-source-mapping", mapping)))
        .chain(self.has_function("reconcile").then(|| ("--reconcile-function", "reconcile".to_owned())))
        // Exsited's reconcile, where cancel and reactivate read Exsited's settings (ReconcileExsitedFunctionName).
        .chain(
            self.has_function("reconcile-exsited")
                .then(|| ("--reconcile-exsited-function", "reconcile-exsited".to_owned())),
        )
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
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

    /// The PID of ingest's `cargo lambda watch`.
    pub fn lambda_pid(&self) -> u32 {
        self.lambdas.iter().find(|e| e.function == "ingest").map_or(0, |e| e.process.pid())
    }

    /// `http://127.0.0.1:PORT` of the `cargo lambda watch` that runs `function`.
    pub fn emulator_url(&self, function: &str) -> Result<&str, StackError> {
        self.lambdas.iter().find(|e| e.function == function).map(|e| e.url.as_str()).ok_or_else(|| {
            setup("the template")(format!("an event source feeds {function}, which is not a function of the template"))
        })
    }

    /// The fault proxy between the functions and moto, when [`StackOptions::aws_faults`] asked for one.
    pub fn proxy(&self) -> Option<&RunningProxy> {
        self.proxy.as_ref()
    }

    /// Invokes each function once with a harmless event, so `cargo lambda watch` builds and starts them.
    async fn wait_until_functions_answer(&mut self, log: &LogSink) -> Result<(), StackError> {
        let started = Instant::now();
        let deadline = started + self.options.ready_timeout;
        for emulator in &mut self.lambdas {
            while tokio::net::TcpStream::connect(emulator.url.trim_start_matches("http://")).await.is_err() {
                if let Some(exit) = emulator.exited() {
                    return Err(setup("cargo lambda watch")(format!(
                        "{exit}; see {}",
                        self.options.logs_dir.join("functions.log").display()
                    )));
                }
                if Instant::now() > deadline {
                    return Err(StackError::Timeout(format!("cargo lambda watch did not listen on {}", emulator.url)));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let names: Vec<String> = self.lambdas.iter().map(|e| e.function.clone()).collect();
        log.line(match self.options.reload {
            true => format!("cargo lambda watch builds and starts {} (the first time compiles them)", names.join(", ")),
            false => format!("waiting for {} to answer", names.join(", ")),
        });
        let empty_batch = r#"{"Records":[]}"#;
        let ingest = self.http.get(self.ingest_url()).send();
        // Every function but ingest takes SQS batches: each is invoked once with an empty one.
        let batch_functions: Vec<(String, String)> = self
            .lambdas
            .iter()
            .filter(|e| e.function != "ingest")
            .map(|e| (e.function.clone(), format!("{}/2015-03-31/functions/{}/invocations", e.url, e.binary)))
            .collect();
        let invocations = batch_functions.iter().map(|(_, url)| {
            self.http.post(url.as_str()).header("content-type", "application/json").body(empty_batch).send()
        });
        let warm_up = async { tokio::join!(ingest, futures_util::future::join_all(invocations)) };
        let functions_log = self.functions_log();
        let (ingest, batches) = tokio::select! {
            answers = warm_up => answers,
            status = wait_for_any_exit(&mut self.lambdas) => {
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
        for ((function, _), answer) in batch_functions.iter().zip(batches) {
            check_answer(function, answer, empty_batch_ok, &functions_log).await?;
        }
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
            request = request.header("authorization", po_sync_test_support::basic_authorization(user, password));
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

    /// Stops (or restarts) delivering to `function` (its event sources): messages gather on its queue.
    pub async fn pause_delivery(&self, function: &str, paused: bool) {
        if let Some(poller) = &self.poller {
            poller.pause(function, paused).await;
        }
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
        for emulator in &mut self.lambdas {
            emulator.stop();
        }
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

/// Resolves when any of the emulators exits.
async fn wait_for_any_exit(emulators: &mut [Emulator]) -> String {
    loop {
        for emulator in emulators.iter_mut() {
            if let Some(exit) = emulator.exited() {
                return exit;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The template's parameters, as the local pipeline deploys it.
fn stack_parameters(options: &StackOptions) -> Vec<(String, String)> {
    [
        ("WebhookAuth", "basic".to_owned()),
        ("NotificationSender", NOTIFY_FROM.to_owned()),
        ("NotificationRecipients", NOTIFY_TO.join(",")),
        ("NotificationSubjectPrefix", SUBJECT_PREFIX.to_owned()),
        ("MaxReceiveCount", options.max_receive_count.to_string()),
        ("Destinations", options.destinations.clone()),
    ]
    .into_iter()
    .chain(
        options
            .destinations
            .contains("exsited")
            .then(|| {
                [
                    // Replaced by the Exsited sandbox's address in the function's environment, as APPZEN_BASE_URL is.
                    ("ExsitedBaseUrl", "https://po-sync-local.exsited.invalid".to_owned()),
                    ("ExsitedAccountMap", LOCAL_EXSITED_ACCOUNT_MAP.to_owned()),
                    ("ExsitedItemMap", LOCAL_EXSITED_ITEM_MAP.to_owned()),
                ]
            })
            .into_iter()
            .flatten(),
    )
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The first of [`RECONCILES`] the deployed stack has (AppZen's, else Exsited's): where the local pipeline reads
/// what every reconcile is given alike (the ledger and history tables, the notification queue).
fn first_reconcile(stack: &ResolvedStack) -> Result<&'static str, StackError> {
    RECONCILES.into_iter().find(|name| stack.function(name).is_ok()).ok_or_else(|| {
        let known: Vec<&str> = stack.functions.iter().map(|f| f.name.as_str()).collect();
        setup("the template")(format!("it deploys no reconcile (none of {RECONCILES:?}; it has {known:?})"))
    })
}

/// The queues as the deployed template wires them: ingest's `QUEUE_URL`, the reconciles' `NOTIFY_QUEUE_URL`,
/// notify's `PARKED_QUEUE_URL`, and the dead-letter queues their redrive policies name.
async fn stack_queues(sqs: &aws_sdk_sqs::Client, stack: &ResolvedStack) -> Result<Queues, StackError> {
    let wired =
        |function: &str, name: &str| stack.required_var(function, name).map(str::to_owned).map_err(setup("the queues"));
    // AppZen's queue is in every stack, so ingest has its URL even when Destinations leaves AppZen out.
    let webhooks = wired("ingest", "QUEUE_URL")?;
    let notifications = wired(first_reconcile(stack)?, "NOTIFY_QUEUE_URL")?;
    for other in RECONCILES.into_iter().filter(|name| stack.function(name).is_ok()) {
        if wired(other, "NOTIFY_QUEUE_URL")? != notifications {
            return Err(setup("the queues")(format!(
                "{other}'s NOTIFY_QUEUE_URL is not {}'s: the local pipeline has one notification queue",
                first_reconcile(stack)?
            )));
        }
    }
    let webhooks_parked = wired("notify", "PARKED_QUEUE_URL")?;
    let webhooks_dlq = dead_letter_queue(sqs, &webhooks).await?;
    let notifications_dlq = dead_letter_queue(sqs, &notifications).await?;
    let exsited = match stack.function("reconcile-exsited") {
        Err(_) => None,
        Ok(_) => {
            let webhooks = wired("reconcile-exsited", "WEBHOOK_QUEUE_URL")?;
            let webhooks_parked = wired("notify-exsited", "PARKED_QUEUE_URL")?;
            let webhooks_dlq = dead_letter_queue(sqs, &webhooks).await?;
            Some(ExsitedQueues { webhooks, webhooks_dlq, webhooks_parked })
        }
    };
    Ok(Queues { webhooks, webhooks_dlq, webhooks_parked, notifications, notifications_dlq, exsited })
}

/// The URL of the queue `queue_url`'s redrive policy sends dead letters to.
async fn dead_letter_queue(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<String, StackError> {
    let fail = |detail: String| setup(&format!("the dead-letter queue of {queue_url}"))(detail);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| fail(aws_sdk_sqs::Error::from(e).to_string()))?;
    let policy = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .ok_or_else(|| fail("the template gives it no RedrivePolicy".to_owned()))?;
    let policy: serde_json::Value = serde_json::from_str(policy).map_err(|e| fail(format!("RedrivePolicy: {e}")))?;
    let arn = policy.get("deadLetterTargetArn").and_then(|v| v.as_str()).unwrap_or_default();
    let name =
        arn.rsplit(':').next().filter(|n| !n.is_empty()).ok_or_else(|| fail(format!("RedrivePolicy {policy}")))?;
    // The same account and region as the source queue: its URL with the dead-letter queue's name, in the form
    // the stack's outputs (and so the event sources) give queue URLs.
    let (prefix, _) = queue_url.rsplit_once('/').ok_or_else(|| fail("not a queue URL".to_owned()))?;
    Ok(format!("{prefix}/{name}"))
}

/// What the local pipeline puts in place of a template variable that refers to a Secrets Manager secret (moto
/// resolves such a `Ref` to nothing): the same credentials, inline, through the variables each function reads
/// when no secret is named.
fn inline_credentials(
    variable: &str,
    env: &[(String, String)],
    sandbox: &RunningSandbox,
    exsited: Option<&exsited_sandbox::RunningSandbox>,
) -> Option<Vec<(String, String)>> {
    let pairs: Vec<(&str, String)> = match variable {
        "WEBHOOK_SECRET_ARN" => {
            let auth = env.iter().find(|(n, _)| n == "WEBHOOK_AUTH").map(|(_, v)| v.to_ascii_lowercase());
            if auth.as_deref() == Some("bearer") {
                vec![("WEBHOOK_TOKEN", WEBHOOK_PASSWORD.to_owned())]
            } else {
                vec![
                    ("WEBHOOK_USERNAME", WEBHOOK_USERNAME.to_owned()),
                    ("WEBHOOK_PASSWORD", WEBHOOK_PASSWORD.to_owned()),
                ]
            }
        }
        "APPZEN_SECRET_ARN" => {
            let credentials = sandbox.credentials();
            vec![
                ("APPZEN_API_KEY", credentials.api_key.clone()),
                ("APPZEN_CUSTOMER_ID", credentials.customer_id.clone()),
                ("APPZEN_CUSTOMER_KEY", credentials.customer_key.clone()),
            ]
        }
        "EXSITED_SECRET_ARN" => {
            let config = exsited?.config();
            vec![
                ("EXSITED_CLIENT_ID", config.client_id.clone()),
                ("EXSITED_CLIENT_SECRET", config.client_secret.clone()),
            ]
        }
        _ => return None,
    };
    Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A function's environment, in order (`NAME`, `value`).
type Env = Vec<(String, String)>;

/// Shorter AppZen waits than on AWS (defaults 10 s and 4 attempts), so a failing AppZen reaches the DLQ in
/// seconds; given to the functions that talk to AppZen, unless the template sets them.
const LOCAL_APPZEN_TUNING: [(&str, &str); 2] = [("APPZEN_TIMEOUT_MS", "5000"), ("APPZEN_MAX_ATTEMPTS", "3")];

/// Each function's environment: the AWS SDK's variables pointing at moto (or the fault proxy), then what the
/// template gives the function, resolved by CloudFormation, with local replacements: inline credentials where
/// the template names a secret, the AppZen sandbox as `APPZEN_BASE_URL`, [`LOCAL_APPZEN_TUNING`], the local
/// invoice host and `StackOptions::retry_schedule`;
/// then `options.function_env`. Each is read by the function's own configuration reader before anything
/// starts, so a variable the template forgot or renamed stops the pipeline here, named.
fn function_envs(
    stack: &ResolvedStack,
    aws_endpoint: &str,
    sandbox: &RunningSandbox,
    exsited: Option<&exsited_sandbox::RunningSandbox>,
    options: &StackOptions,
) -> Result<Vec<(String, Env)>, StackError> {
    let template = options.template.display().to_string();
    let mut envs = Vec::with_capacity(stack.functions.len());
    for function in &stack.functions {
        let problem = |detail: String| {
            setup(&format!("{template}: {} (binary {})", function.logical_id, function.binary))(detail)
        };
        let mut env: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".to_owned(), aws_endpoint.to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ];
        env.extend(function.env.iter().cloned());
        for (variable, secret) in &function.secrets {
            let inline = inline_credentials(variable, &function.env, sandbox, exsited).ok_or_else(|| {
                problem(format!(
                    "{variable} refers to the secret {secret}, and the local pipeline does not know which variables \
                     carry those credentials inline (tests/src/local.rs, inline_credentials)"
                ))
            })?;
            env.extend(inline);
        }
        // The sandbox also serves Komet's invoice PDFs, on a local address: allowed by address, locally only
        // (the template's InvoiceHosts parameter accepts domains only).
        if let Some(hosts) = env.iter_mut().find(|(n, _)| n == "INVOICE_HOSTS") {
            hosts.1 = "127.0.0.1".to_owned();
        }
        if let Some(schedule) = env.iter_mut().find(|(n, _)| n == "RETRY_SCHEDULE") {
            schedule.1 = options.retry_schedule.clone();
        }
        if let Some(base_url) = env.iter_mut().find(|(n, _)| n == "APPZEN_BASE_URL") {
            base_url.1 = sandbox.base_url();
            for (name, value) in LOCAL_APPZEN_TUNING {
                if !env.iter().any(|(n, _)| n == name) {
                    env.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        if let (Some(base_url), Some(exsited)) = (env.iter_mut().find(|(n, _)| n == "EXSITED_BASE_URL"), exsited) {
            base_url.1 = exsited.base_url();
            if !env.iter().any(|(n, _)| n == "EXSITED_TIMEOUT_MS") {
                env.push(("EXSITED_TIMEOUT_MS".to_owned(), "5000".to_owned()));
            }
        }
        for (name, value) in &options.function_env {
            env.retain(|(existing, _)| existing != name);
            env.push((name.clone(), value.clone()));
        }
        stack_env::check_function_env(&function.binary, &env)
            .map_err(|e| problem(format!("the function would not start: {e}")))?;
        envs.push((function.name.clone(), env));
    }
    // AppZen's reconcile (a stack whose Destinations names appzen) must reach the AppZen sandbox.
    let appzen = envs.iter().find(|(name, _)| name == "reconcile");
    if appzen.is_some_and(|(_, env)| !env.iter().any(|(n, v)| n == "APPZEN_BASE_URL" && *v == sandbox.base_url())) {
        return Err(setup(&template)(
            "reconcile has no APPZEN_BASE_URL, so it cannot be pointed at the AppZen sandbox".to_owned(),
        ));
    }
    Ok(envs)
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
        if let Some(name) = name.to_str().filter(|n| is_set_for_a_crate(n)) {
            command.env_remove(name);
        }
    }
    command
}

fn is_set_for_a_crate(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || name.starts_with("CARGO_BIN_")
        || matches!(
            name,
            "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// Where cargo-lambda is: `$CARGO_LAMBDA`, else the project's `.venv`, else `PATH`.
fn cargo_lambda_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_LAMBDA") {
        return path.into();
    }
    let venv = workspace_root().join(".venv/bin/cargo-lambda");
    if venv.exists() { venv } else { PathBuf::from("cargo-lambda") }
}

fn start_cargo_lambda(
    port: u16,
    env_file: &Path,
    options: &StackOptions,
    function: &str,
) -> Result<ProcessGroup, StackError> {
    let log_path = options.logs_dir.join("functions.log");
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log_path)
        .map_err(|e| setup("open functions.log")(e.to_string()))?;
    let log_err = log.try_clone().map_err(|e| setup("open functions.log")(e.to_string()))?;
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
        // The functions are started by `start_function`, from the workspace build's binaries.
        command.arg("--only-lambda-apis");
    }
    if function == "ingest" && options.ingest_concurrency > 1 && options.reload {
        command.args(["--concurrency", &options.ingest_concurrency.to_string()]);
    }
    without_crate_env(&mut command);
    command.env_remove("RUST_LOG");
    ProcessGroup::spawn(&format!("cargo lambda watch ({function})"), command).map_err(|e| {
        setup("start cargo lambda watch")(format!(
            "{e}: is cargo-lambda installed? `scripts/bootstrap` installs it into .venv ({})",
            cargo_lambda_binary().display()
        ))
    })
}

/// The workspace build: every target but the benchmarks, the build `make test` and `make demo` make (the
/// Makefile's `TARGETS`), so features are resolved once and nothing is compiled twice.
pub const WORKSPACE_BUILD: [&str; 6] = ["build", "--workspace", "--lib", "--bins", "--tests", "--examples"];

/// Runs [`WORKSPACE_BUILD`] and returns the paths of the functions' binaries it made. Its diagnostics go to `log`.
async fn build_function_binaries(log: &Path) -> Result<Vec<(String, PathBuf)>, StackError> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| setup("open functions.log")(e.to_string()))?;
    let mut command = tokio::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .args(WORKSPACE_BUILD)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stderr(log);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str().filter(|n| is_set_for_a_crate(n)) {
            command.env_remove(name);
        }
    }
    let output = command.output().await.map_err(|e| setup("cargo build")(e.to_string()))?;
    if !output.status.success() {
        return Err(setup(&format!("cargo {}", WORKSPACE_BUILD.join(" ")))(format!(
            "exited with {}; its errors are in functions.log",
            output.status
        )));
    }
    let mut binaries = Vec::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let is_bin = message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin"));
        let test = message["profile"]["test"].as_bool().unwrap_or(true);
        if let (true, false, true, Some(path)) =
            (FUNCTIONS.contains(&name), test, is_bin, message["executable"].as_str())
        {
            binaries.push((name.to_owned(), PathBuf::from(path)));
        }
    }
    Ok(binaries)
}

/// One process of a function, from its binary, polling the runtime API of its `cargo lambda watch
/// --only-lambda-apis` on `port`, with the environment the template gives it.
fn start_function(
    binary: &Path,
    (function, binary_name): (&str, &str),
    instance: u32,
    port: u16,
    env: &Env,
    options: &StackOptions,
) -> Result<ProcessGroup, StackError> {
    let log_path = options.logs_dir.join("functions.log");
    let open = || std::fs::OpenOptions::new().append(true).create(true).open(&log_path);
    let (log, log_err) = match (open(), open()) {
        (Ok(log), Ok(log_err)) => (log, log_err),
        (Err(e), _) | (_, Err(e)) => return Err(setup("open functions.log")(e.to_string())),
    };
    let mut command = Command::new(binary);
    without_crate_env(&mut command);
    command
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(name, value)| (name.as_str(), value.as_str())))
        // What cargo lambda watch tells a function it does not start itself (`--only-lambda-apis`).
        // Its own cargo lambda watch knows it by its binary's name, as with reload (`serve`), where it builds it.
        .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt/{binary_name}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    ProcessGroup::spawn(&format!("{function} #{instance}"), command)
        .map_err(|e| setup("start a function")(format!("{}: {e}", binary.display())))
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

// ---------------------------------------------------------------- metrics: the functions' EMF lines

/// A (service, metric, dimensions as `name=value`) that must have been emitted at least once.
pub type ExpectedSeries<'a> = (&'a str, &'a str, &'a [&'a str]);

impl LocalStack {
    /// The CloudWatch namespace the local functions write their metrics to.
    pub fn metrics_namespace(&self) -> String {
        self.options
            .function_env
            .iter()
            .find(|(name, _)| name == metrics::NAMESPACE_VARIABLE)
            .map_or_else(|| metrics::DEFAULT_NAMESPACE.to_owned(), |(_, value)| value.clone())
    }

    /// Every EMF document the functions printed so far (`functions.log`), each checked against the EMF
    /// specification and the metrics catalogue, added up per series; or every bad line with its problems.
    pub fn emitted_metrics(&self) -> Result<emf::Summary, String> {
        let path = self.functions_log();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
        emf::read_log(&text, &self.metrics_namespace()).map_err(|problems| {
            format!("{path} holds EMF lines CloudWatch would drop or misread:\n  {}", problems.join("\n  "))
        })
    }

    /// Checks the metrics against what the run did, waiting up to 15 s for the last lines to land: every EMF
    /// line is valid; each function counted its cold start; each reconcile's `Records` (service `reconcile` for
    /// AppZen's, `reconcile_exsited` for Exsited's) add up to the records the poller delivered from its
    /// destination's queue, and its `retried` ones to the records it got back as failures; notify's
    /// `EmailsSent` add up to the e-mails SES (moto) accepted; and each of `at_least_once` was emitted. Returns
    /// the summary.
    pub async fn check_emitted_metrics(&self, at_least_once: &[ExpectedSeries<'_>]) -> Result<emf::Summary, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // An invalid line fails at once: waiting cannot mend it.
            let summary = self.emitted_metrics()?;
            let disagreements = self.disagreements(&summary, at_least_once);
            if disagreements.is_empty() {
                return Ok(summary);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the metrics in {} do not match what happened:\n  {}",
                    self.functions_log(),
                    disagreements.join("\n  ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The `service` dimension of a deployed function's metrics: its binary's name, but `reconcile_exsited` for
    /// reconcile sending to Exsited (`DESTINATION=exsited`), as reconcile's `main` chooses it.
    fn service_of(function: &stack_env::ResolvedFunction) -> String {
        match (function.binary.as_str(), function.var("DESTINATION")) {
            ("reconcile", Some(destination)) if destination.eq_ignore_ascii_case("exsited") => {
                metrics::Service::ReconcileExsited.as_str().to_owned()
            }
            (binary, _) => binary.to_owned(),
        }
    }

    fn disagreements(&self, summary: &emf::Summary, at_least_once: &[ExpectedSeries<'_>]) -> Vec<String> {
        let mut found = Vec::new();
        // Every function the stack deploys was invoked (warm-up) and counted its cold start, under its service:
        // notify and notify-exsited both as notify.
        let mut functions_per_service: std::collections::BTreeMap<String, usize> = Default::default();
        for function in &self.stack.functions {
            *functions_per_service.entry(Self::service_of(function)).or_default() += 1;
        }
        for (service, functions) in &functions_per_service {
            let cold_starts = summary.total(service, metrics::COLD_START.name, &[]);
            if cold_starts < *functions as f64 {
                found.push(format!("{service}: {cold_starts} ColdStart for {functions} function(s)"));
            }
        }
        // Each reconcile the stack has, against what the poller delivered from its destination's queue.
        let reconciles = [
            ("reconcile", Some(self.queues.webhooks.as_str())),
            ("reconcile-exsited", self.queues.exsited.as_ref().map(|e| e.webhooks.as_str())),
        ];
        let invocations = self.invocations();
        for (name, queue) in reconciles {
            let Ok(function) = self.stack.function(name) else { continue };
            let Some(queue) = queue else {
                found.push(format!("{name} is deployed but its queue is unknown"));
                continue;
            };
            let service = Self::service_of(function);
            found.extend(Self::records_disagreements(summary, &service, queue, &invocations));
        }
        let emails: f64 = metrics::EMAIL_KINDS
            .iter()
            .map(|kind| summary.total("notify", metrics::EMAILS_SENT.name, &[&format!("kind={kind}")]))
            .sum();
        let sent = self.sent_emails().len();
        if emails != sent as f64 {
            found.push(format!("notify: EmailsSent add up to {emails}, SES accepted {sent} e-mails"));
        }
        for (service, name, dimensions) in at_least_once {
            if summary.values(service, name, dimensions).is_empty() {
                found.push(format!("{service}: {name} {dimensions:?} was never emitted"));
            }
        }
        found
    }

    /// A reconcile's `Records` (service `service`) against the poller's invocations on its queue `queue`: all of
    /// them add up to the records delivered, the `retried` ones to the failures handed back.
    fn records_disagreements(
        summary: &emf::Summary,
        service: &str,
        queue: &str,
        invocations: &[Invocation],
    ) -> Vec<String> {
        let mut found = Vec::new();
        let reconciled: Vec<&Invocation> =
            invocations.iter().filter(|i| i.queue_url == queue && i.error.is_none()).collect();
        let delivered: usize = reconciled.iter().map(|i| i.message_ids.len()).sum();
        let failed: usize = reconciled.iter().map(|i| i.failed_ids.len()).sum();
        let records = |outcome: &str| summary.total(service, metrics::RECORDS.name, &[&format!("outcome={outcome}")]);
        let all_records: f64 =
            metrics::RECORDS.dimension.map_or(&[][..], |d| d.values).iter().map(|o| records(o)).sum();
        if all_records != delivered as f64 {
            found.push(format!("{service}: Records add up to {all_records}, the poller delivered {delivered} records"));
        }
        if records("retried") != failed as f64 {
            found.push(format!(
                "{service}: {} Records retried, the poller got {failed} failures back",
                records("retried")
            ));
        }
        found
    }
}

/// The metrics of a run, one line per series: service, metric and dimensions, then a counter's total or a
/// histogram's values (all of them up to 5, else min, median and max).
pub fn describe_metrics(summary: &emf::Summary) -> Vec<String> {
    const SERVICES: [&str; 4] = ["ingest", "reconcile", "reconcile_exsited", "notify"];
    // In the pipeline's order, then the catalogue's.
    let rank = |key: &emf::SeriesKey| {
        let service = SERVICES.iter().position(|f| *f == key.service).unwrap_or(SERVICES.len());
        let metric = metrics::CATALOGUE.iter().position(|m| m.name == key.name).unwrap_or(metrics::CATALOGUE.len());
        (service, metric, key.dimensions.clone())
    };
    let mut series: Vec<_> = summary.series.iter().collect();
    series.sort_by_key(|(key, _)| rank(key));
    series
        .into_iter()
        .map(|(key, series)| {
            let name = std::iter::once(key.name.as_str()).chain(key.dimensions.iter().map(String::as_str));
            let name = name.collect::<Vec<_>>().join(" ");
            format!("{:<17} {:<45} {}", key.service, name, describe_values(&key.name, series))
        })
        .collect()
}

fn describe_values(name: &str, series: &emf::Series) -> String {
    let unit = if series.unit.as_deref() == Some("Milliseconds") { " ms" } else { "" };
    let number = |v: f64| if v.fract() == 0.0 { format!("{v}{unit}") } else { format!("{v:.1}{unit}") };
    if metrics::spec(name).is_none_or(|spec| spec.kind == metrics::Kind::Counter) {
        return number(series.total());
    }
    let mut values = series.values.clone();
    values.sort_by(f64::total_cmp);
    let count = format!("{} value{}", values.len(), if values.len() == 1 { "" } else { "s" });
    if values.len() <= 5 {
        format!("{count}: {}", values.iter().map(|v| number(*v)).collect::<Vec<_>>().join(", "))
    } else {
        let median = values[values.len() / 2];
        format!(
            "{count}: min {}, median {}, max {}",
            number(values[0]),
            number(median),
            number(values[values.len() - 1])
        )
    }
}

/// One EMF document on one line, as `make serve` prints it: `service Metric dim=value = value(s)`, comma-separated.
pub fn describe_document(document: &emf::Document) -> String {
    let mut summary = emf::Summary::default();
    summary.add(document);
    summary
        .series
        .iter()
        .map(|(key, series)| {
            let mut name = vec![key.name.clone()];
            name.extend(key.dimensions.iter().cloned());
            format!("{} {} = {}", key.service, name.join(" "), describe_values(&key.name, series))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a growing log from where it was last read, a whole line at a time (`make serve` follows
/// `functions.log` with it).
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    line: usize,
    partial: Vec<u8>,
}

impl LogTail {
    /// Follows `path` from its start.
    pub fn from_start(path: impl Into<PathBuf>) -> Self {
        LogTail { path: path.into(), offset: 0, line: 0, partial: Vec::new() }
    }

    /// The lines completed since the last call, with their line numbers (1-based).
    pub fn new_lines(&mut self) -> Vec<(usize, String)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&self.path)
            .and_then(|mut file| file.seek(SeekFrom::Start(self.offset)).and_then(|_| file.read_to_end(&mut bytes)));
        if read.is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line += 1;
            lines.push((self.line, String::from_utf8_lossy(&line).trim_end().to_owned()));
        }
        lines
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
