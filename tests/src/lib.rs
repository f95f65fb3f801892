//! Test harness for Palisade's integration tests: every test gets its own
//! cgroup subtree, bpffs pin directory, socket, audit file and daemon, all
//! removed by guards that run on panic too.
//!
//! These tests load the real eBPF programs into the running kernel; they need
//! root. Without root they fail loudly, unless `PALISADE_SKIP_ROOT_TESTS=1`
//! is set on purpose.

pub mod capture;
pub mod daemon;
pub mod dns;
pub mod env;
pub mod forge;
pub mod gateway;
pub mod gateway_fixture;
pub mod hooks;
pub mod http;
pub mod kernel;
pub mod launcher;
pub mod netns;
pub mod operator;
pub mod probe;
pub mod servers;
pub mod session;
pub mod systemd;

pub use daemon::DaemonProc;
pub use env::TestEnv;
pub use probe::{Outcome, Probe};
pub use servers::{TcpServer, UdpServer};

/// `<tag>-` when `cargo xtask test` runs the suite (it sets
/// `PALISADE_TEST_RUN`), else empty. It goes into the name of everything a
/// test creates on the host (cgroups, pin directories, network namespaces,
/// directories) so the run can check at its end that none of it is left.
pub fn run_tag() -> String {
    std::env::var("PALISADE_TEST_RUN")
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|t| format!("{t}-"))
        .unwrap_or_default()
}

/// A temporary directory `palisade-<name>-…` (tagged with the run), removed
/// on drop, panics included.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "palisade-{}{name}-{}",
            run_tag(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("PALISADE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

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

/// A client test environment `cargo xtask setup` made, linked from
/// `target/client-envs/<name>` of this checkout. Panics with the fix.
pub fn client_env(name: &str) -> std::path::PathBuf {
    let link = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/client-envs")
        .join(name);
    assert!(
        link.exists(),
        "{} is missing: run `cargo xtask setup` (it prepares the client test environments)",
        link.display()
    );
    link
}

/// The Python interpreter that has the Python client's test dependencies
/// (`clients/python/requirements-dev.txt`): `$PALISADE_PYTHON`, or the
/// virtualenv `cargo xtask setup` makes.
pub fn client_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_PYTHON") {
        return p.into();
    }
    client_env("python-dev").join("bin/python3")
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
