//! A stand-in human operator for client tests: a thread that watches a
//! daemon's pending approvals with the CLI (as root, not enrolled: an
//! operator) and approves those whose resource is `auto-approve`, rejects
//! those whose resource is `auto-reject`, and leaves the rest pending. A
//! client test run enrolled as the agent can so exercise "wait for a human"
//! without talking to the test in between.

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// Resource that the operator approves.
pub const AUTO_APPROVE: &str = "auto-approve";
/// Resource that the operator rejects.
pub const AUTO_REJECT: &str = "auto-reject";

pub struct AutoOperator {
    stop: Arc<AtomicBool>,
    resolved: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl AutoOperator {
    pub fn start(socket: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let resolved = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, resolved) = (stop.clone(), resolved.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    resolved.fetch_add(round(&socket), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            stop,
            resolved,
            thread: Some(thread),
        }
    }

    /// How many approvals it resolved so far.
    pub fn resolved(&self) -> usize {
        self.resolved.load(Ordering::Relaxed)
    }
}

impl Drop for AutoOperator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cli(socket: &PathBuf, args: &[&str]) -> Option<String> {
    let out = Command::new(crate::palisade_bin())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One look at the pending approvals; returns how many it resolved.
fn round(socket: &PathBuf) -> usize {
    let Some(list) = cli(socket, &["approvals", "--json"]) else {
        return 0; // the daemon is starting or gone: look again later
    };
    let Ok(serde_json::Value::Array(pending)) = serde_json::from_str(&list) else {
        return 0;
    };
    let mut n = 0;
    for a in pending.iter().filter(|a| a["state"] == "pending") {
        let Some(id) = a["id"].as_str() else { continue };
        let verb = match a["resource"].as_str() {
            Some(AUTO_APPROVE) => "approve",
            Some(AUTO_REJECT) => "reject",
            _ => continue,
        };
        if cli(socket, &[verb, id, "--reason", "test operator"]).is_some() {
            n += 1;
        }
    }
    n
}
