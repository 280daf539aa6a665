//! `po-sync-admin`: see the library for the commands. Exit codes: 0 done, 1 failed (AWS, an incomplete
//! redrive, an unreadable queue), 2 a bad argument or input (clap's own usage errors included).

use clap::Parser;
use po_sync_admin::{Cli, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("po-sync-admin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut progress = |line: &str| eprintln!("{line}");
    match runtime.block_on(run(&cli, &mut stdout, &mut progress)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("po-sync-admin: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
