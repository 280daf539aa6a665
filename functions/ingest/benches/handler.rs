//! Time per webhook request through the whole handler (auth, checks, parse, envelope, response, log
//! macros), for Komet's doc sample, with an in-memory queue so the SQS round trip is excluded.
//!
//! `cargo bench -p ingest --bench handler`

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ingest::{Ingest, MemoryFifoQueue};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use po_sync::config::ingest::Credentials;
use std::hint::black_box;

use po_sync_test_support::DOC_SAMPLE;

fn request() -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://abc123.lambda-url.us-east-1.on.aws/")
        .header("content-type", "application/json")
        // base64("komet:s3cret")
        .header("authorization", "Basic a29tZXQ6czNjcmV0")
        .body(Body::from(DOC_SAMPLE.to_vec()))
        .unwrap()
}

fn handler(c: &mut Criterion) {
    let credentials = Credentials::Basic { username: "komet".into(), password: "s3cret".into() };
    let ingest = Ingest::new(&credentials, 1 << 20, MemoryFifoQueue::default());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(runtime.block_on(ingest.handle(request())).status(), StatusCode::OK);
    c.bench_function("ingest handle doc sample (in-memory queue)", |b| {
        b.iter_batched(request, |request| runtime.block_on(ingest.handle(black_box(request))), BatchSize::SmallInput)
    });
}

criterion_group!(benches, handler);
criterion_main!(benches);
