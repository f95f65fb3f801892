//! Restart and upgrade without a gap: an agent connecting in a loop while
//! the daemon is stopped with SIGTERM and started again (the second time
//! from a different binary file, as an upgrade) never gets through to a
//! denied destination, and is never cut off from an allowed one.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, palisade_bin, root_or_skip};

fn policy(allowed: u16) -> String {
    format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{allowed}]}}\n"
    )
}

#[test]
fn sigterm_restart_and_upgrade_keep_verdicts_throughout() {
    if !root_or_skip("sigterm_restart_and_upgrade_keep_verdicts_throughout") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("upgrade", &policy(allowed.addr.port()));
    let mut d = DaemonProc::start(&env);

    // Two agents loop for 8 s while the daemon goes down and up twice.
    let spawn = |port: String| {
        Command::new(palisade_bin())
            .arg("exec")
            .arg("--socket")
            .arg(&env.socket)
            .args(["--identity", "agent", "--"])
            .arg(Probe::bin())
            .args(["tcp-for", "127.0.0.1", &port, "8000"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let bad = spawn(denied.port());
    let good = spawn(allowed.port());
    std::thread::sleep(Duration::from_millis(1000));

    // Stop: pins stay, enforcement continues with no daemon at all.
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));
    std::thread::sleep(Duration::from_millis(1000));
    let mut d = DaemonProc::start(&env);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));

    // Upgrade: a new binary (another file) adopts the pins.
    let new_bin = env.dir.join("palisade-new");
    std::fs::copy(palisade_bin(), &new_bin).unwrap_or_else(|e| panic!("{e}"));
    let log =
        std::fs::File::create(env.dir.join("new-daemon.log")).unwrap_or_else(|e| panic!("{e}"));
    let mut upgraded = Command::new(&new_bin)
        .arg("daemon")
        .arg("--config")
        .arg(&env.config)
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let bad = bad.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let good = good.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let parse = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    };
    let (bad, good) = (parse(&bad), parse(&good));
    let adopted = palisade_tests::wait_for(Duration::from_secs(20), || {
        let n = env
            .audit_events()
            .iter()
            .filter(|e| e["reason"] == "adopted-pins")
            .count();
        (n == 2).then_some(())
    });
    assert!(adopted.is_some(), "the upgraded daemon did not start");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(upgraded.id() as i32),
        Signal::SIGTERM,
    );
    let _ = upgraded.wait();

    assert!(
        bad["count"].as_u64().unwrap_or(0) > 200,
        "the loop ran: {bad}"
    );
    assert_eq!(
        bad["connected"], 0,
        "a denied destination got through: {bad}"
    );
    assert_eq!(
        bad["eperm"], bad["count"],
        "every attempt denied by the kernel: {bad}"
    );
    assert!(good["count"].as_u64().unwrap_or(0) > 200, "{good}");
    assert_eq!(
        good["connected"], good["count"],
        "an allowed destination was cut off: {good}"
    );

    let starts: Vec<String> = env
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "daemon" && e["verdict"] == "started")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        starts,
        ["fresh-attach", "adopted-pins", "adopted-pins"],
        "the restarts adopted the pins"
    );
    let (code, out) = {
        let o = Command::new(palisade_bin())
            .args(["audit", "verify"])
            .arg(&env.audit)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "one chain across the restarts: {out}");
}
