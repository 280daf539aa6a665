//! Test support shared by every crate's integration tests: a moto server per test, on a free 127.0.0.1
//! port, stopped by its own PID when the test ends (even if the test panics).

pub mod moto;

/// The workspace root (where `Cargo.toml`, `.venv/` and `shared/tests/fixtures/` are).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}

/// A fixture from `shared/tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = workspace_root().join("shared/tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub mod appzen_sandbox;
pub mod fault_proxy;
pub mod local;
pub mod poller;
pub mod soak;
pub mod stack_env;
pub mod support;
