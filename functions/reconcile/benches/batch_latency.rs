//! A batch's wall time against AppZen's latency: nine POs of nine message groups (one FIFO batch), reconcile
//! with in-memory ports and a local AppZen (wiremock) that answers after a fixed delay, one PO at a time (as
//! before groups ran concurrently: `GROUP_CONCURRENCY=1`) and with the default bound (5) and the whole batch
//! (10). Prints one table; the median of `RUNS` batches per cell.
//!
//! `cargo bench -p reconcile --bench batch_latency`

// The batch future nests deeper than the default limit (128) once laid out in a debug build, which `make build`
// makes of the benchmarks so clippy lints them.
#![recursion_limit = "256"]

use aws_lambda_events::event::sqs::SqsEvent;
use po_sync_aws::ledger::MemoryLedger;
use po_sync_aws::objects::MemoryObjectStore;
use po_sync_aws::queue::{MemoryFifoQueue, MemoryRedelivery};
use po_sync_test_support::{CLEAN_PO, appzen_client, envelope, reconcile_config};
use reconcile::Reconciler;
use serde_json::json;
use std::time::{Duration, Instant, SystemTime};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const POS: u64 = 9;
const RUNS: usize = 5;
const LATENCIES_MS: [u64; 4] = [0, 50, 100, 300];
const CONCURRENCY: [&str; 3] = ["1", "5", "10"];

fn batch(round: u64) -> SqsEvent {
    let text = String::from_utf8_lossy(CLEAN_PO).into_owned();
    let records: Vec<_> = (0..POS)
        .map(|n| {
            // Each round its own POs, so the ledger never answers "duplicate".
            let id = 1_000 + round * 100 + n;
            let body = text.replacen("\"id\": 48213,", &format!("\"id\": {id},"), 1).replacen(
                "\"poNumber\": \"P004410\"",
                &format!("\"poNumber\": \"P-{id}\""),
                1,
            );
            json!({
                "messageId": format!("m-{id}"),
                "receiptHandle": format!("r-{id}"),
                "body": envelope(body.as_bytes()).to_json(),
                "attributes": { "ApproximateReceiveCount": "1", "MessageGroupId": id.to_string() },
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    println!("nine POs of nine groups in one batch: wall time (median of {RUNS}), by AppZen latency");
    println!("| AppZen latency | GROUP_CONCURRENCY=1 (sequential) | 5 (default) | 10 (whole batch) |");
    println!("| --- | --- | --- | --- |");
    let mut round = 0;
    for latency in LATENCIES_MS {
        let appzen = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({ "uuid": "u", "status": "CREATED" }))
                    .set_delay(Duration::from_millis(latency)),
            )
            .mount(&appzen)
            .await;
        let mut cells = Vec::new();
        for concurrency in CONCURRENCY {
            let config = reconcile_config(&appzen.uri(), &[("GROUP_CONCURRENCY", concurrency)]);
            let client = appzen_client(&config);
            let reconciler: Reconciler<MemoryFifoQueue, MemoryLedger, MemoryObjectStore, MemoryRedelivery> =
                Reconciler::new(config, client, MemoryFifoQueue::default(), MemoryLedger::default())
                    .with_redelivery(MemoryRedelivery::default());
            let mut times = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                round += 1;
                let event = batch(round);
                let started = Instant::now();
                let response = reconciler.handle_batch(event, Some(SystemTime::now() + Duration::from_secs(120))).await;
                times.push(started.elapsed());
                assert!(response.batch_item_failures.is_empty(), "every PO goes through");
            }
            times.sort();
            cells.push(format!("{} ms", times[RUNS / 2].as_millis()));
        }
        println!("| {latency} ms | {} |", cells.join(" | "));
    }
}
