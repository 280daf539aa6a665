//! The local AppZen sandbox on its own: `cargo run -p po-sync-local --bin appzen-sandbox -- [--port N]`.
//!
//! Credentials come from `APPZEN_API_KEY`, `APPZEN_CUSTOMER_ID`, `APPZEN_CUSTOMER_KEY` (default: the local
//! pipeline's). See `po_sync_local::appzen_sandbox` for the contract and the `/_sandbox/*` control endpoints.

use po_sync_local::appzen_sandbox::{Credentials, Sandbox};
use po_sync_local::sandbox_kit;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut port = 0u16;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--port", Some(value)) => port = value,
            _ => {
                eprintln!("usage: appzen-sandbox [--port N]");
                return ExitCode::from(2);
            }
        }
    }
    let defaults = Credentials::default();
    let from_env = |name: &str, default: String| std::env::var(name).unwrap_or(default);
    let credentials = Credentials {
        api_key: from_env("APPZEN_API_KEY", defaults.api_key),
        customer_id: from_env("APPZEN_CUSTOMER_ID", defaults.customer_id),
        customer_key: from_env("APPZEN_CUSTOMER_KEY", defaults.customer_key),
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("appzen-sandbox: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("AppZen sandbox on http://{address} (upsert: POST /dictionary-data-services/purchase-order)");
    println!("  recorded requests: curl -s http://{address}/_sandbox/requests");
    println!("  fail the next two: curl -s -X POST http://{address}/_sandbox/fail -d '{{\"times\":2,\"status\":500}}'");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match sandbox_kit::serve(Sandbox::new(credentials).router(), listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appzen-sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}
