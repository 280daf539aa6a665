//! Times po-sync's three hot paths on any Komet webhook body and prints one JSON line:
//! `{"bytes":…,"ingest_median_us":…,"reconcile_median_us":…,"notify_median_us":…}`.
//!
//! `cargo run --release --bin po-bench -- FILE ITERATIONS`
//! `cargo run --release --bin po-bench -- --print envelope|appzen FILE` (the queue message, or AppZen's body)
//!
//! - ingest: parse + validate the body, build the SQS message (what ingest does besides SendMessage);
//! - reconcile: read that message, reconcile, map and serialise AppZen's body (besides the POST);
//! - notify: render the mismatch e-mail (subject, text, HTML) for the PO (besides SendEmail).
//!
//! Each figure is the median of ITERATIONS timed runs after a short warm-up. For confidence intervals and
//! regressions use the criterion benches (`cargo bench -p po-sync-bench`).

use po_sync_bench::hot_paths;

use po_sync::appzen::MappingSettings;
use po_sync::email::EmailSettings;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, what, path] = args.as_slice()
        && flag == "--print"
    {
        return print(what, path);
    }
    let (Some(path), Some(Ok(iterations))) = (args.first(), args.get(1).map(|n| n.parse::<usize>())) else {
        eprintln!("usage: po-bench FILE ITERATIONS | po-bench --print envelope|appzen FILE");
        return ExitCode::from(2);
    };
    if iterations == 0 {
        eprintln!("ITERATIONS must be at least 1");
        return ExitCode::from(2);
    }
    let body = match std::fs::read(path) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Refuse up front, with the reason, what a function would refuse: the timed paths assume success.
    let settings = MappingSettings::default();
    match po_sync::komet::parse_webhook(&body).map(|po| po_sync::appzen::map_purchase_order(&po, &settings).err()) {
        Err(e) => {
            eprintln!("ingest would refuse {path} (400): {e}");
            return ExitCode::FAILURE;
        }
        Ok(Some(e)) => {
            eprintln!("reconcile cannot map {path} to one AppZen PO: {e}");
            return ExitCode::FAILURE;
        }
        Ok(None) => {}
    }
    let at = hot_paths::received_at();
    let message = hot_paths::ingest(&body, at);
    let event = hot_paths::mismatch_event(&message);
    let email_settings = EmailSettings::default();

    let ingest = median_ns(iterations, || drop(black_box(hot_paths::ingest(black_box(&body), at))));
    let reconcile =
        median_ns(iterations, || drop(black_box(hot_paths::reconcile_path(black_box(&message), &settings))));
    let notify = median_ns(iterations, || drop(black_box(hot_paths::notify(black_box(&event), &email_settings))));
    println!(
        r#"{{"bytes":{},"ingest_median_us":{},"reconcile_median_us":{},"notify_median_us":{}}}"#,
        body.len(),
        Micros(ingest),
        Micros(reconcile),
        Micros(notify)
    );
    ExitCode::SUCCESS
}

/// Writes what the timed paths produce for FILE: the queue message (`envelope`) or AppZen's body (`appzen`), so
/// another implementation of the same work (`python_peer.py`) can be checked byte for byte.
fn print(what: &str, path: &str) -> ExitCode {
    let body = match std::fs::read(path) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let message = hot_paths::ingest(&body, hot_paths::received_at());
    let text = match what {
        "envelope" => message,
        "appzen" => hot_paths::reconcile_path(&message, &MappingSettings::default()).1,
        _ => {
            eprintln!("usage: po-bench --print envelope|appzen FILE");
            return ExitCode::from(2);
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// Median wall time of `iterations` runs, in nanoseconds, after warming caches and the allocator.
fn median_ns(iterations: usize, mut run: impl FnMut()) -> u128 {
    for _ in 0..iterations.div_ceil(10).min(20) {
        run();
    }
    let mut times: Vec<u128> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_nanos()
        })
        .collect();
    times.sort_unstable();
    let mid = times.len() / 2;
    if times.len().is_multiple_of(2) { (times[mid - 1] + times[mid]) / 2 } else { times[mid] }
}

/// Nanoseconds shown as microseconds with one decimal (a JSON number).
struct Micros(u128);

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0 + 50) / 100;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}
