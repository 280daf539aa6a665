//! Renders the notification e-mail of each kind from the shared fixtures (Komet's documented sample for the
//! mismatch) and writes the HTML part to `docs/email-<kind>.html`, the samples the README links to.
//!
//! `cargo run -p po-sync --example render-email [OUT_DIR]` (default: the workspace's `docs/`). With
//! `--text` it prints each subject and text part instead. Same code path as notify: `po_sync::email::render`.

#[path = "../tests/email_samples.rs"]
mod email_samples;

use po_sync::email::{EmailSettings, render};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let print_text = args.iter().any(|a| a == "--text");
    let out_dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs")));
    for (name, event) in email_samples::all() {
        let email = match render(&event, &EmailSettings::default()) {
            Ok(email) => email,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if print_text {
            println!("Subject: {}\n\n{}\n", email.subject, email.text);
            continue;
        }
        let path = out_dir.join(format!("email-{name}.html"));
        if let Err(e) = std::fs::write(&path, format!("{}\n", email.html)) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}  ({})", path.display(), email.subject);
    }
    ExitCode::SUCCESS
}
