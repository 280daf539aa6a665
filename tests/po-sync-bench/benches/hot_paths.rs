//! `cargo bench -p po-sync-bench --bench hot_paths`: the three hot paths on Komet's documented sample and on
//! generated POs of 300 invoices × 10 items (~280 KB) and 1,000 × 10 (~1 MB, the largest the reader takes).
//! Throughput is the Komet body's size in bytes for every path, so criterion's MiB/s compares time per input
//! byte across sizes.

use po_sync_bench::hot_paths;
use po_sync_bench::po_generator;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use po_sync::appzen::MappingSettings;
use std::hint::black_box;
use std::time::Duration;

struct Input {
    name: &'static str,
    body: Vec<u8>,
}

fn inputs() -> Vec<Input> {
    vec![
        Input {
            name: "doc-sample",
            body: include_bytes!("../../../shared/po-sync/tests/fixtures/komet-doc-sample.json").to_vec(),
        },
        Input { name: "300x10", body: po_generator::generate(po_generator::MEDIUM, po_generator::DEFAULT_SEED) },
        Input { name: "1000x10", body: po_generator::generate(po_generator::SQS_LARGEST, po_generator::DEFAULT_SEED) },
    ]
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, input: &Input) {
    group.throughput(Throughput::Bytes(input.body.len() as u64));
    if input.body.len() > 1_000_000 {
        // ~10-30 ms per iteration: fewer samples keep the run short without losing the median.
        group.sample_size(20).measurement_time(Duration::from_secs(6));
    } else {
        group.sample_size(50).measurement_time(Duration::from_secs(4));
    }
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    for input in inputs() {
        configure(&mut group, &input);
        let at = hot_paths::received_at();
        group.bench_with_input(BenchmarkId::from_parameter(input.name), &input.body, |b, body| {
            b.iter(|| hot_paths::ingest(black_box(body), at))
        });
    }
    group.finish();
}

fn reconcile(c: &mut Criterion) {
    let mut group = c.benchmark_group("reconcile");
    let settings = MappingSettings::default();
    for input in inputs() {
        configure(&mut group, &input);
        let message = hot_paths::ingest(&input.body, hot_paths::received_at());
        group.bench_with_input(BenchmarkId::from_parameter(input.name), &message, |b, message| {
            b.iter(|| hot_paths::reconcile_path(black_box(message), &settings))
        });
    }
    group.finish();
}

fn notify(c: &mut Criterion) {
    let mut group = c.benchmark_group("notify");
    let settings = po_sync::email::EmailSettings::default();
    for input in inputs() {
        configure(&mut group, &input);
        let event = hot_paths::mismatch_event(&hot_paths::ingest(&input.body, hot_paths::received_at()));
        group.bench_with_input(BenchmarkId::from_parameter(input.name), &event, |b, event| {
            b.iter(|| hot_paths::notify(black_box(event), &settings))
        });
    }
    group.finish();
}

criterion_group!(benches, ingest, reconcile, notify);
criterion_main!(benches);
