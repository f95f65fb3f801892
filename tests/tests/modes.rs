//! Audit (shadow) mode and the kill switch.

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, root_or_skip};

#[test]
fn audit_mode_allows_and_records_would_deny() {
    if !root_or_skip("audit_mode_allows_and_records_would_deny") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let other = TcpServer::start("127.0.0.1");
    let text = format!(
        "version: 1\nidentities:\n  - id: shadow\n    mode: audit\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{}]}}\n",
        allowed.port()
    );
    let env = TestEnv::new("audit", &text);
    let _d = DaemonProc::start(&env);
    Probe::enrolled(&env, "shadow", &["tcp", "127.0.0.1", &other.port()])
        .expect_ok("audit mode allows");
    let port: u64 = other.addr.port().into();
    let ev = env.wait_audit("would-deny", |e| {
        e["verdict"] == "audit" && e["dst_port"] == port
    });
    assert_eq!(ev["identity"], "shadow");
    assert_eq!(ev["reason"], "default-deny");
    assert_eq!(ev["mode"], "audit");
    // Allowed traffic produces no event at all.
    Probe::enrolled(&env, "shadow", &["tcp", "127.0.0.1", &allowed.port()]).expect_ok("allowed");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let allowed_port: u64 = allowed.addr.port().into();
    assert!(
        !env.audit_events()
            .iter()
            .any(|e| e["dst_port"] == allowed_port),
        "an allowed connection was recorded as a would-deny"
    );
}

#[test]
fn kill_switch_denies_everything_at_once_and_lifts() {
    if !root_or_skip("kill_switch_denies_everything_at_once_and_lifts") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let text = format!(
        "version: 1\nidentities:\n  - id: finance\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{}]}}\n",
        allowed.port()
    );
    let env = TestEnv::new("kill", &text);
    let _d = DaemonProc::start(&env);
    Probe::enrolled(&env, "finance", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("before revoke");

    let out = env.cli(&["revoke", "finance", "--reason", "incident-42"]);
    assert!(
        out.status.success(),
        "revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Probe::enrolled(&env, "finance", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_eperm("after revoke");
    env.wait_audit("kill-switch on", |e| {
        e["kind"] == "kill_switch" && e["verdict"] == "on" && e["reason"] == "incident-42"
    });
    env.wait_audit("kill-switch deny", |e| {
        e["reason"] == "kill-switch" && e["verdict"] == "deny"
    });

    let out = env.cli(&["restore", "finance"]);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Probe::enrolled(&env, "finance", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("after restore");

    let out = env.cli(&["revoke", "nobody"]);
    assert!(
        !out.status.success(),
        "revoking an unknown identity must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown identity `nobody`"));
}
