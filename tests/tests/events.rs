//! Audit events carry who, what and why.

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, root_or_skip};

#[test]
fn deny_events_name_identity_process_destination_and_rule() {
    if !root_or_skip("deny_events_name_identity_process_destination_and_rule") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let text = "version: 1\nidentities:\n  - id: clinical-agent\n    egress:\n      deny:\n        - id: no-loopback\n          cidr: 127.0.0.0/8\n";
    let env = TestEnv::new("events", text);
    let _d = DaemonProc::start(&env);
    // `fork-tcp` prints the child's pid: the child is the process that connects.
    let r = Probe::enrolled(
        &env,
        "clinical-agent",
        &["fork-tcp", "127.0.0.1", &target.port()],
    );
    assert!(!r.ok());
    let child = r.0["child"]
        .as_u64()
        .unwrap_or_else(|| panic!("no child pid in {}", r.0));
    let port: u64 = target.addr.port().into();
    let ev = env.wait_audit("for the denied connect", |e| e["dst_port"] == port);
    for key in [
        "time",
        "kind",
        "identity",
        "verdict",
        "reason",
        "policy_version",
        "pid",
        "comm",
        "cgroup_id",
        "dst_ip",
        "dst_port",
        "protocol",
    ] {
        assert!(!ev[key].is_null(), "audit event lacks `{key}`: {ev}");
    }
    assert_eq!(ev["kind"], "network");
    assert_eq!(ev["identity"], "clinical-agent");
    assert_eq!(ev["verdict"], "deny");
    assert_eq!(ev["reason"], "deny-rule");
    assert_eq!(ev["rule"], "no-loopback");
    assert_eq!(ev["pid"].as_u64(), Some(child));
    assert_eq!(ev["comm"], "palisade-probe");
    assert_eq!(ev["dst_ip"], "127.0.0.1");
    assert_eq!(ev["protocol"], "tcp");
    assert_eq!(ev["hook"], "connect4");
    let version = ev["policy_version"].as_str().unwrap_or_default();
    assert!(version.starts_with("sha256:"), "policy version {version}");
}

/// A process name is the agent's to choose: one made of terminal control
/// sequences (erase the line, return, a forged ALLOW) is printed inert by
/// `palisade events`, on the daemon's stderr copy too.
#[test]
fn an_agents_process_name_cannot_rewrite_the_operators_screen() {
    if !root_or_skip("an_agents_process_name_cannot_rewrite_the_operators_screen") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let text = "version: 1\nidentities:\n  - id: clinical-agent\n    egress:\n      deny:\n        - id: no-loopback\n          cidr: 127.0.0.0/8\n";
    let env = TestEnv::new("evesc", text);
    let d = DaemonProc::start(&env);
    let named = env.dir.join("\x1b[2K\rALLOW\x08");
    std::os::unix::fs::symlink(Probe::bin(), &named).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(palisade_tests::palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args(["--identity", "clinical-agent", "--"])
        .arg(&named)
        .args(["tcp", "127.0.0.1", &target.port()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":false"));
    let port: u64 = target.addr.port().into();
    let ev = env.wait_audit("for the denied connect", |e| e["dst_port"] == port);
    assert_eq!(
        ev["comm"], "\x1b[2K\rALLOW\x08",
        "the trail keeps the name as it was"
    );
    let shown = env.cli(&["events", env.audit.to_str().unwrap_or_default()]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let line = shown
        .lines()
        .find(|l| l.contains("no-loopback"))
        .unwrap_or_else(|| panic!("no deny line in {shown:?}"));
    assert!(
        !line.chars().any(char::is_control),
        "control characters reach the terminal: {line:?}"
    );
    assert!(line.contains("\\u{1b}[2K\\u{d}ALLOW\\u{8}"), "{line:?}");
    let stderr = d.log_text();
    assert!(
        !stderr.contains("\x1b[2K"),
        "the daemon's readable copy prints the sequence raw"
    );
}
