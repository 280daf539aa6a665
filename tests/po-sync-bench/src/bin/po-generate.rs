//! Writes a generated Komet webhook body to stdout, for `po-bench` and for trying a function by hand.
//!
//! `cargo run --release --bin po-generate -- INVOICES ITEMS_PER_INVOICE [SEED] > po.json`
//! (300 10 → ~280 KB; 2000 20 → ~3 MB). The same arguments always give the same bytes.

use po_sync_bench::po_generator;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
    let (Some(invoices), Some(items)) = (number(0), number(1)) else {
        eprintln!("usage: po-generate INVOICES ITEMS_PER_INVOICE [SEED]");
        return ExitCode::from(2);
    };
    let seed = if args.len() > 2 {
        match number(2) {
            Some(seed) => seed,
            None => {
                eprintln!("SEED must be a whole number");
                return ExitCode::from(2);
            }
        }
    } else {
        po_generator::DEFAULT_SEED
    };
    let shape = po_generator::Shape { invoices: invoices as usize, items_per_invoice: items as usize };
    let body = po_generator::generate(shape, seed);
    match std::io::stdout().lock().write_all(&body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}
