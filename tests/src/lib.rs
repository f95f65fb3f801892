//! Test harness for Palisade's integration tests: every test gets its own
//! cgroup subtree, bpffs pin directory, socket, audit file and daemon, all
//! removed by guards that run on panic too.
//!
//! These tests load the real eBPF programs into the running kernel; they need
//! root. Without root they fail loudly, unless `PALISADE_SKIP_ROOT_TESTS=1`
//! is set on purpose.

pub mod daemon;
pub mod dns;
pub mod env;
pub mod forge;
pub mod gateway;
pub mod gateway_fixture;
pub mod http;
pub mod kernel;
pub mod netns;
pub mod probe;
pub mod servers;

pub use daemon::DaemonProc;
pub use env::TestEnv;
pub use probe::{Outcome, Probe};
pub use servers::{TcpServer, UdpServer};

/// True when the test may run; false (with a note) only on explicit opt-out.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PALISADE_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root (PALISADE_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!(
        "{test} loads eBPF programs and needs root; run `sudo cargo xtask test`, or set PALISADE_SKIP_ROOT_TESTS=1 to skip it knowingly"
    );
}

/// The `palisade` binary under test: `$PALISADE_BIN`, or the release build
/// in this workspace (`cargo xtask test` builds it first).
pub fn palisade_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release/palisade");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p agent` (or `cargo xtask test`)",
        bin.display()
    );
    bin
}

/// The Python interpreter that has the Python client's dependencies:
/// `$PALISADE_PYTHON`, or the virtualenv `cargo xtask setup` makes.
pub fn client_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_PYTHON") {
        return p.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let venv = std::path::Path::new(&home).join(".cache/palisade/python-client/bin/python3");
    assert!(
        venv.exists(),
        "{} is missing: run `cargo xtask setup` (it installs clients/python/requirements.txt)",
        venv.display()
    );
    venv
}

/// Poll `f` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
