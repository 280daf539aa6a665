//! po-sync's operator CLI (`po-sync-admin`): the state of the queues, one PO's ledger entry and its kept
//! history, a redrive of the parked webhooks, a replay of a kept or saved Komet webhook, and a PO's cancellation
//! (and reactivation) at its destinations.
//!
//! Each command is a function taking the AWS [`Clients`] and the [`Resources`] it works on, returning a report
//! that prints as text (`Display`) or JSON (`Serialize`); [`run`] is the command line around them.

pub mod cancel;
pub mod delivery;
pub mod error;
pub mod history;
pub mod po;
pub mod readback;
pub mod redrive;
pub mod replay;
pub mod replay_window;
pub mod resources;
pub mod status;
pub mod verify;

pub use error::Error;
pub use resources::{Resource, Resources};

use aws_config::SdkConfig;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The AWS clients the commands use, built from one configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub s3: aws_sdk_s3::Client,
    pub lambda: aws_sdk_lambda::Client,
    /// The configuration itself, for a client built when a command needs it (Secrets Manager, for AppZen's
    /// credentials).
    pub aws: SdkConfig,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Clients {
            aws: config.clone(),
            sqs: aws_sdk_sqs::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            cloudformation: aws_sdk_cloudformation::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            s3: po_sync_aws::objects::s3_client(config),
            lambda: aws_sdk_lambda::Client::new(config),
        }
    }
}

/// Operator commands for po-sync (Komet webhooks -> SQS -> reconcile -> AppZen).
///
/// Resources come from the CloudFormation stack's outputs (--stack, default po-sync), or from the flags, which
/// override them; when the flags name everything a command needs, the stack is not read. AWS region,
/// credentials and AWS_ENDPOINT_URL come from the standard AWS environment.
#[derive(Debug, Parser)]
#[command(name = "po-sync-admin", version)]
pub struct Cli {
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Print the result as JSON on stdout (progress still goes to stderr)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct ResourceArgs {
    /// CloudFormation stack whose outputs name the queues and the ledger table
    #[arg(long, global = true, value_name = "NAME", default_value = "po-sync")]
    pub stack: String,
    /// webhooks.fifo (output WebhookQueueUrl)
    #[arg(long, global = true, value_name = "URL")]
    pub webhook_queue_url: Option<String>,
    /// webhooks-dlq.fifo (output WebhookDeadLetterQueueUrl)
    #[arg(long, global = true, value_name = "URL")]
    pub webhook_dlq_url: Option<String>,
    /// webhooks-parked.fifo (output WebhookParkedQueueUrl)
    #[arg(long, global = true, value_name = "URL")]
    pub parked_queue_url: Option<String>,
    /// notifications.fifo (output NotificationQueueUrl)
    #[arg(long, global = true, value_name = "URL")]
    pub notification_queue_url: Option<String>,
    /// notifications-dlq.fifo (output NotificationDeadLetterQueueUrl)
    #[arg(long, global = true, value_name = "URL")]
    pub notification_dlq_url: Option<String>,
    /// The version ledger's DynamoDB table (output LedgerTableName)
    #[arg(long, global = true, value_name = "TABLE")]
    pub ledger_table: Option<String>,
    /// Each PO's attempts, for history and replay (output HistoryTableName)
    #[arg(long, global = true, value_name = "TABLE")]
    pub history_table: Option<String>,
    /// The bucket that keeps every webhook body (output ArchiveBucketName)
    #[arg(long, global = true, value_name = "BUCKET")]
    pub archive_bucket: Option<String>,
    /// reconcile's event source mapping, the UUID (output ReconcileEventSourceMappingId)
    #[arg(long, global = true, value_name = "UUID")]
    pub event_source_mapping: Option<String>,
    /// reconcile's function, whose settings `verify` and `po` read AppZen with (output ReconcileFunctionName)
    #[arg(long, global = true, value_name = "NAME")]
    pub reconcile_function: Option<String>,
    /// Exsited's reconcile function, whose settings `cancel` and `reactivate` reach Exsited with (output
    /// ReconcileExsitedFunctionName; a stack without Exsited has none)
    #[arg(long, global = true, value_name = "NAME")]
    pub reconcile_exsited_function: Option<String>,
    /// Whose webhook queues, reconcile mapping and ledger items to work on: appzen or exsited (default: appzen,
    /// or exsited in a stack that sends to Exsited only). exsited reads the stack's ExsitedWebhookQueueUrl,
    /// ExsitedWebhookDeadLetterQueueUrl, ExsitedWebhookParkedQueueUrl and ReconcileExsitedEventSourceMappingId,
    /// and Exsited's ledger items (exsited#<PO id>)
    #[arg(long, global = true, value_name = "appzen|exsited")]
    pub destination: Option<po_sync::destination::Destination>,
}

impl ResourceArgs {
    pub fn given(&self) -> Resources {
        Resources {
            webhook_queue_url: self.webhook_queue_url.clone(),
            webhook_dlq_url: self.webhook_dlq_url.clone(),
            parked_queue_url: self.parked_queue_url.clone(),
            notification_queue_url: self.notification_queue_url.clone(),
            notification_dlq_url: self.notification_dlq_url.clone(),
            ledger_table: self.ledger_table.clone(),
            history_table: self.history_table.clone(),
            archive_bucket: self.archive_bucket.clone(),
            reconcile_event_source: self.event_source_mapping.clone(),
            reconcile_function: self.reconcile_function.clone(),
            reconcile_exsited_function: self.reconcile_exsited_function.clone(),
            destination: self.destination,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Messages waiting, in flight, and the oldest message's age (CloudWatch) on po-sync's five queues.
    Status,
    /// One PO's ledger entry (latest version, what AppZen holds, any claim) and whether AppZen holds the latest.
    Po {
        /// Komet's numeric PO id (the webhook's "id", also the SQS message group), not the PO number
        #[arg(value_name = "PO_ID", value_parser = po::parse_po_id)]
        po_id: u64,
    },
    /// Move the parked (dead-lettered) webhooks back to the webhook queue, wait for reconcile, and report which
    /// versions were applied, superseded or are still pending.
    Redrive {
        /// How to move the messages
        #[arg(long, value_enum, default_value = "auto")]
        method: redrive::Method,
        /// Seconds to wait for the move, and then for reconcile
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,
        /// Do not wait for reconcile (no ledger needed)
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop delivering to AppZen (disable reconcile's event source mapping): ingest keeps accepting and queuing,
    /// no retry is used up, nothing is parked because of the pause
    Pause {
        /// Seconds to wait until Lambda says the mapping is disabled
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
        /// Do not wait for the mapping to settle
        #[arg(long)]
        no_wait: bool,
    },
    /// Deliver again (enable reconcile's event source mapping): what waited goes to AppZen in order
    Resume {
        /// Seconds to wait until Lambda says the mapping is enabled
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
        /// Do not wait for the mapping to settle
        #[arg(long)]
        no_wait: bool,
    },
    /// Read every PO the ledger knows back from AppZen and compare it with what po-sync sent: report drift
    /// (AppZen missing a PO, holding an older version, or fields po-sync never sent); exit code 1 on drift
    Verify {
        /// Only POs the ledger changed from this time (2026-11-21, 2026-11-21T17:00:00Z or milliseconds)
        #[arg(long, value_name = "TIME", value_parser = replay_window::parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// For each PO with drift, queue the version AppZen should hold again, to be sent even though the
        /// ledger says AppZen holds it (a newer version still wins); the exit code stays 1 until verify runs clean
        #[arg(long)]
        repair: bool,
    },
    /// Every version of one PO Komet sent that the archive bucket still keeps, newest first, with what the
    /// ledger says became of each.
    History {
        /// Komet's numeric PO id (the webhook's "id")
        #[arg(value_name = "PO_ID", value_parser = po::parse_po_id)]
        po_id: u64,
    },
    /// Queue a Komet webhook body again, validated first (nothing is sent if it is invalid): a PO's body kept in
    /// the archive bucket (--po), with the version it had, or a saved file, as a new version.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["file", "po", "since"])))]
    Replay {
        /// A saved body (JSON exactly as Komet sent it), queued as a new version received now
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The PO whose kept body to send again (`history PO_ID` lists them); the latest unless --version
        #[arg(long, value_name = "PO_ID", value_parser = po::parse_po_id)]
        po: Option<u64>,
        /// With --po: the version to send (milliseconds, or the time `history` prints)
        #[arg(long, value_name = "VERSION", requires = "po", conflicts_with = "latest", value_parser = replay::parse_version)]
        version: Option<i64>,
        /// With --po: the latest kept version (the default)
        #[arg(long, requires = "po")]
        latest: bool,
        /// Every kept webhook received from this time (2026-11-21, 2026-11-21T17:00:00Z or milliseconds), oldest
        /// first, each with the version it had
        #[arg(long, value_name = "TIME", value_parser = replay_window::parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// With --since: up to this time (exclusive; default now)
        #[arg(long, value_name = "TIME", requires = "since", value_parser = replay_window::parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// With --since: only versions whose last attempt came to one of these (held, rejected, unmappable,
        /// parked, retried, upserted, duplicate, superseded), from the PO's history
        #[arg(long, value_name = "OUTCOME", requires = "since", value_delimiter = ',', value_parser = parse_outcome)]
        outcome: Vec<po_sync::history::AttemptOutcome>,
        /// Read and validate, say what would be sent, send nothing
        #[arg(long)]
        dry_run: bool,
        /// With --po: send it to AppZen even if the ledger says AppZen holds it (`verify` found AppZen changed
        /// or lost it); a newer version still wins
        #[arg(long, requires = "po")]
        resend: bool,
    },
    /// Cancel a PO at every destination the stack has, in the destination itself and in po-sync's ledger. Newer
    /// versions Komet sends are then held (mailed as cancelled_at_destination), not sent. Exit code 1 if a
    /// destination failed.
    ///
    /// Exsited: the PO Exsited holds (the id the ledger keeps) is cancelled in Exsited (POST
    /// /api/v3/purchase-orders/<id>/cancel, with the settings and secret of Exsited's reconcile function), then
    /// recorded in Exsited's ledger item; if Exsited refuses, nothing is recorded. If no version has reached
    /// Exsited yet, the cancellation is recorded and nothing is sent: the first version is held.
    ///
    /// AppZen (whose API keeps a cancellation per line of its upsert): the cancellation is recorded in AppZen's
    /// ledger item first, so no newer version goes to AppZen; then the version AppZen holds is sent again, rebuilt
    /// from its kept body (archive bucket) with AppZen's reconcile settings, with cancel_flag true, cancel_date and
    /// cancel_reason on every line. If AppZen cannot be told, the record stays and the report says so: run the
    /// command again. If no version has reached AppZen yet, only the record is made: the first version is held.
    ///
    /// A destination whose reconcile function the stack lacks (ReconcileFunctionName, ReconcileExsitedFunctionName)
    /// is skipped. A PO being processed at that moment is left alone (run the command again a minute later).
    Cancel {
        /// Komet's numeric PO id (the webhook's "id")
        #[arg(value_name = "PO_ID", value_parser = po::parse_po_id)]
        po_id: u64,
        /// Why, in a line (kept in the ledger, the e-mails about held versions and the history)
        #[arg(long, value_name = "TEXT", value_parser = cancel::parse_reason)]
        reason: Option<String>,
    },
    /// Undo `cancel` at every destination the stack has: the next version Komet sends is sent again. A version
    /// held meanwhile is not sent by this command: the report names the `replay --po <id> --latest` that sends it.
    ///
    /// Exsited: the PO is reactivated in Exsited (POST /api/v3/purchase-orders/<id>/reactivate; also undoes a
    /// cancellation made in Exsited itself), then the cancellation is cleared in Exsited's ledger item; if Exsited
    /// refuses, the cancellation stays. AppZen: the version AppZen holds is sent again with cancel_flag false on
    /// every line, then the cancellation is cleared in AppZen's ledger item; if AppZen refuses, the cancellation
    /// stays. Exit code 1 if a destination failed.
    Reactivate {
        /// Komet's numeric PO id (the webhook's "id")
        #[arg(value_name = "PO_ID", value_parser = po::parse_po_id)]
        po_id: u64,
    },
}

impl Command {
    /// The resources the command cannot do without.
    pub fn needs(&self) -> Vec<Resource> {
        match self {
            Command::Status => status::QUEUES.to_vec(),
            Command::Po { .. } => vec![Resource::LedgerTable],
            Command::Pause { .. } | Command::Resume { .. } => vec![Resource::ReconcileEventSource],
            Command::Redrive { no_wait: true, .. } => vec![Resource::ParkedQueue, Resource::WebhookQueue],
            Command::Redrive { .. } => vec![Resource::ParkedQueue, Resource::WebhookQueue, Resource::LedgerTable],
            Command::History { .. } => vec![Resource::ArchiveBucket, Resource::LedgerTable, Resource::HistoryTable],
            Command::Verify { repair: false, .. } => {
                vec![Resource::LedgerTable, Resource::ArchiveBucket, Resource::ReconcileFunction]
            }
            Command::Verify { repair: true, .. } => vec![
                Resource::LedgerTable,
                Resource::ArchiveBucket,
                Resource::ReconcileFunction,
                Resource::WebhookQueue,
            ],
            Command::Replay { po: Some(_), .. } => vec![Resource::WebhookQueue, Resource::ArchiveBucket],
            Command::Replay { since: Some(_), outcome, .. } if !outcome.is_empty() => {
                vec![Resource::WebhookQueue, Resource::ArchiveBucket, Resource::HistoryTable]
            }
            Command::Replay { since: Some(_), .. } => vec![Resource::WebhookQueue, Resource::ArchiveBucket],
            Command::Replay { .. } => vec![Resource::WebhookQueue],
            Command::Cancel { .. } | Command::Reactivate { .. } => vec![Resource::LedgerTable],
        }
    }

    /// The resources the command uses when the stack (or a flag) has them: each destination's reconcile function
    /// (a stack may have one destination or both; at least one is needed) and the history table.
    pub fn optional(&self) -> Vec<Resource> {
        match self {
            Command::Cancel { .. } | Command::Reactivate { .. } => vec![
                Resource::ReconcileFunction,
                Resource::ReconcileExsitedFunction,
                Resource::HistoryTable,
                Resource::ArchiveBucket,
            ],
            _ => Vec::new(),
        }
    }
}

/// Runs a parsed command line: checks its inputs first (nothing is called for a bad file), loads the AWS
/// configuration from the environment, finds the resources, runs the command, and prints its report on `out`.
/// `progress` gets redrive's progress lines. Returns whether the command fully succeeded (exit code 1 if not).
pub async fn run(cli: &Cli, out: &mut dyn Write, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
    let saved = match &cli.command {
        Command::Replay { file: Some(file), .. } => Some(replay::read_webhook(file)?),
        _ => None,
    };
    let config = po_sync_aws::load_aws_config().await;
    if config.region().is_none() {
        return Err(Error::Usage(
            "no AWS region: set AWS_REGION (or AWS_PROFILE with a profile that has a region)".to_owned(),
        ));
    }
    let clients = Clients::new(&config);
    execute(cli, &clients, saved.as_ref(), out, progress).await
}

/// [`run`] with the clients given (and, for `replay`, the validated body).
pub async fn execute(
    cli: &Cli,
    clients: &Clients,
    saved: Option<&replay::SavedWebhook>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<bool, Error> {
    let (resources, unread_stack) = Resources::resolve_optional(
        &clients.cloudformation,
        &cli.resources.stack,
        cli.resources.given(),
        &cli.command.needs(),
        &cli.command.optional(),
    )
    .await?;
    let (text, json, ok) = match &cli.command {
        Command::Status => {
            let report = status::status(clients, &resources).await?;
            (report.to_string(), to_json(&report)?, report.is_complete())
        }
        Command::Po { po_id } => {
            let report = po::po(clients, &resources, *po_id).await?;
            (report.to_string(), to_json(&report)?, true)
        }
        Command::Redrive { method, timeout, no_wait } => {
            let options = redrive::RedriveOptions {
                method: *method,
                timeout: Duration::from_secs(*timeout),
                wait: !no_wait,
                ..redrive::RedriveOptions::default()
            };
            let report = redrive::redrive(clients, &resources, &options, progress).await?;
            (report.to_string(), to_json(&report)?, report.is_success())
        }
        Command::Pause { timeout, no_wait } | Command::Resume { timeout, no_wait } => {
            let action = match &cli.command {
                Command::Pause { .. } => delivery::Switch::Pause,
                _ => delivery::Switch::Resume,
            };
            let wait =
                (!no_wait).then(|| delivery::Wait { timeout: Duration::from_secs(*timeout), ..Default::default() });
            let report = delivery::switch(clients, &resources, action, wait, progress).await?;
            (report.to_string(), to_json(&report)?, true)
        }
        Command::Verify { since, repair } => {
            let report = verify::verify(clients, &resources, *since, *repair, progress).await?;
            (report.to_string(), to_json(&report)?, report.is_clean())
        }
        Command::History { po_id } => {
            let report = history::history(clients, &resources, *po_id).await?;
            (report.to_string(), to_json(&report)?, true)
        }
        Command::Replay { po: Some(po_id), version, dry_run, resend, .. } => {
            let pick = version.map_or(replay::Pick::Latest, replay::Pick::Version);
            let report = replay::replay_kept(clients, &resources, *po_id, pick, *dry_run, *resend).await?;
            (report.to_string(), to_json(&report)?, true)
        }
        Command::Replay { since: Some(since), until, outcome, dry_run, .. } => {
            let window = replay_window::Window { since: *since, until: *until, outcomes: outcome.clone() };
            let report = replay_window::replay_window(clients, &resources, window, *dry_run, progress).await?;
            (report.to_string(), to_json(&report)?, report.is_success())
        }
        Command::Cancel { po_id, reason } => {
            let action = cancel::Action::Cancel;
            let report = cancel::cancel_or_reactivate(
                clients,
                &resources,
                unread_stack.as_deref(),
                *po_id,
                action,
                reason.as_deref(),
            )
            .await?;
            (report.to_string(), to_json(&report)?, report.is_success())
        }
        Command::Reactivate { po_id } => {
            let action = cancel::Action::Reactivate;
            let report =
                cancel::cancel_or_reactivate(clients, &resources, unread_stack.as_deref(), *po_id, action, None)
                    .await?;
            (report.to_string(), to_json(&report)?, report.is_success())
        }
        Command::Replay { file, .. } => {
            let Some(file) = file else {
                return Err(Error::Usage("replay needs a FILE or --po PO_ID".to_owned()));
            };
            let saved = match saved {
                Some(saved) => saved.clone(),
                None => replay::read_webhook(file)?,
            };
            let source = file.display().to_string();
            let report = replay::replay(clients, &resources, &saved, &source, chrono::Utc::now()).await?;
            (report.to_string(), to_json(&report)?, true)
        }
    };
    let written = if cli.json { writeln!(out, "{json}") } else { write!(out, "{text}") };
    match written.and_then(|()| out.flush()) {
        // The reader went away (`| head`): nothing left to tell it.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ok),
        Err(e) => Err(Error::Failed(format!("cannot write the report: {e}"))),
        Ok(()) => Ok(ok),
    }
}

fn parse_outcome(text: &str) -> Result<po_sync::history::AttemptOutcome, String> {
    text.trim().parse().ok().filter(|o: &po_sync::history::AttemptOutcome| !o.is_operator_action()).ok_or_else(|| {
        format!(
            "{text:?} is not an outcome: held, rejected, unmappable, parked, retried, upserted, duplicate or superseded"
        )
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Failed(format!("cannot write JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_help_says_what_each_destination_gets() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let cancel = cli.find_subcommand_mut("cancel").unwrap();
        let short = cancel.render_help().to_string();
        assert!(short.contains("in the destination itself and in po-sync's ledger"), "{short}");
        let long = cancel.render_long_help().to_string();
        assert!(long.contains("with cancel_flag true, cancel_date and cancel_reason on every line"), "{long}");
        assert!(long.contains("if Exsited refuses, nothing is recorded"), "{long}");
        let cli = parse(&["cancel", "48213", "--reason", "ordered twice"]).unwrap();
        assert!(matches!(&cli.command, Command::Cancel { po_id: 48213, reason: Some(r) } if r == "ordered twice"));
        assert_eq!(cli.command.needs(), [Resource::LedgerTable]);
        assert!(cli.command.optional().contains(&Resource::ReconcileExsitedFunction));
        assert!(cli.command.optional().contains(&Resource::ArchiveBucket), "AppZen's version is rebuilt from it");
        assert!(parse(&["reactivate", "P004410"]).unwrap_err().contains("not a PO id"));
        assert!(parse(&["reactivate", "1", "--reason", "x"]).is_err(), "reactivate takes no reason");
    }

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from([&["po-sync-admin"], args].concat()).map_err(|e| e.to_string())
    }

    #[test]
    fn replay_takes_a_window_with_outcomes_and_knows_what_it_needs() {
        let cli = parse(&["replay", "--since", "2026-11-21", "--outcome", "held,rejected"]).unwrap();
        let Command::Replay { since: Some(since), until: None, outcome, .. } = &cli.command else { panic!("{cli:?}") };
        assert_eq!(since.to_rfc3339(), "2026-11-21T00:00:00+00:00");
        use po_sync::history::AttemptOutcome::{self, Held, Rejected};
        assert_eq!(outcome, &[Held, Rejected]);
        assert!(cli.command.needs().contains(&Resource::HistoryTable), "outcomes are read from the history");
        let without = parse(&["replay", "--since", "1795280400123"]).unwrap();
        assert!(!without.command.needs().contains(&Resource::HistoryTable));

        assert!(parse(&["replay", "--until", "2026-11-21"]).is_err(), "--until needs --since");
        assert!(parse(&["replay", "--po", "1", "--since", "2026-11-21"]).is_err(), "one of FILE, --po, --since");
        let parked = parse(&["replay", "--since", "2026-11-21", "--outcome", "parked"]).unwrap();
        assert!(matches!(&parked.command, Command::Replay { outcome, .. } if outcome == &[AttemptOutcome::Parked]));
        for not_an_outcome in ["lost", "replayed", "redriven"] {
            let error = parse(&["replay", "--since", "2026-11-21", "--outcome", not_an_outcome]).unwrap_err();
            assert!(error.contains("not an outcome"), "{not_an_outcome}: {error}");
        }
        assert!(parse(&["replay", "--since", "last week"]).unwrap_err().contains("not a time"));
    }
}
