//! The local SQS event-source poller on its own:
//!
//! `sqs-poller --invoke-url http://127.0.0.1:9000 QUEUE_URL=FUNCTION [QUEUE_URL=FUNCTION ...]`
//!
//! SQS is reached through the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials), so
//! it works against moto. Log lines go to stderr. Stops on Ctrl-C.

use po_sync_local::poller::{EventSourceMapping, LogSink, Poller};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut invoke_url = None;
    let mut mappings = Vec::new();
    let mut retry_after_seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--invoke-url" => invoke_url = args.next(),
            "--retry-after" => retry_after_seconds = args.next().and_then(|v| v.parse().ok()),
            mapping => match mapping.rsplit_once('=') {
                Some((queue, function)) => mappings.push(EventSourceMapping::new(queue, function)),
                None => invoke_url = None,
            },
        }
    }
    let (Some(invoke_url), false) = (invoke_url, mappings.is_empty()) else {
        eprintln!("usage: sqs-poller --invoke-url URL [--retry-after SECONDS] QUEUE_URL=FUNCTION...");
        return ExitCode::from(2);
    };
    for mapping in &mut mappings {
        mapping.retry_after_seconds = retry_after_seconds;
    }
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .load()
        .await;
    let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".to_owned());
    let sqs = aws_sdk_sqs::Client::new(&config);
    let poller = match Poller::start(sqs, &invoke_url, &region, mappings, LogSink::stderr()).await {
        Ok(poller) => poller,
        Err(e) => {
            eprintln!("sqs-poller: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = tokio::signal::ctrl_c().await;
    poller.stop().await;
    ExitCode::SUCCESS
}
