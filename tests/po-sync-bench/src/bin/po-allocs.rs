//! Counts the heap allocations of po-bench's hot paths on any Komet webhook body and prints one JSON line:
//! `{"bytes":…,"ingest_allocs":…,"reconcile_allocs":…,"notify_allocs":…}`.
//!
//! `cargo run --release --bin po-allocs -- FILE`
//!
//! An allocation is a call to `alloc` or `realloc` (a growing `Vec` or `String` counts once per growth), counted
//! by a wrapper around the system allocator during one run of each path after a warm-up run. A binary of its own,
//! so the counting never slows po-bench's timings.

use po_sync_bench::hot_paths;

use po_sync::appzen::MappingSettings;
use po_sync::email::EmailSettings;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` has too.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one run of `run`, after one run to warm up (lazy statics, thread-locals).
fn allocations(mut run: impl FnMut()) -> u64 {
    run();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: po-allocs FILE");
        return ExitCode::from(2);
    };
    let body = match std::fs::read(path) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = po_sync::komet::parse_webhook(&body) {
        eprintln!("ingest would refuse {path} (400): {e}");
        return ExitCode::FAILURE;
    }
    let settings = MappingSettings::default();
    let at = hot_paths::received_at();
    let message = hot_paths::ingest(&body, at);
    let event = hot_paths::mismatch_event(&message);
    let email_settings = EmailSettings::default();

    let ingest = allocations(|| drop(black_box(hot_paths::ingest(black_box(&body), at))));
    let reconcile = allocations(|| drop(black_box(hot_paths::reconcile_path(black_box(&message), &settings))));
    let notify = allocations(|| drop(black_box(hot_paths::notify(black_box(&event), &email_settings))));
    println!(
        r#"{{"bytes":{},"ingest_allocs":{ingest},"reconcile_allocs":{reconcile},"notify_allocs":{notify}}}"#,
        body.len()
    );
    ExitCode::SUCCESS
}
