//! Bad policy never gets in, and says exactly where it is wrong.

use palisade_tests::{DaemonProc, Probe, Scratch, TcpServer, TestEnv, palisade_bin, root_or_skip};

#[test]
fn policy_check_reports_file_line_column_and_exits_nonzero() {
    let dir = Scratch::new("check");
    let good = dir.join("good.yaml");
    let bad = dir.join("bad.yaml");
    std::fs::write(&good, "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - cidr: 10.0.0.0/8\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&bad, "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - cidr: 10.0.0.0/33\n        - cidr: 10.0.0.1\n          prots: [443]\n").unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(palisade_bin())
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(palisade_bin())
        .args(["policy", "check"])
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:8:11: unknown field `prots`", bad.display());
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn a_rejected_reload_keeps_the_last_good_policy_enforcing() {
    if !root_or_skip("a_rejected_reload_keeps_the_last_good_policy_enforcing") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let denied = TcpServer::start("127.0.0.1");
    let good = format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{}]}}\n",
        allowed.port()
    );
    let env = TestEnv::new("badreload", &good);
    let d = DaemonProc::start(&env);
    // A broken file that would have opened everything had it been half-applied.
    env.write_policy(&format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 0.0.0.0/0}}\n        - {{cidr: 127.0.0.1, ports: [{}], protocol: tcpp}}\n",
        denied.port()
    ));
    let out = env.cli(&["reload"]);
    assert!(!out.status.success(), "a broken policy must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy.yaml:7:") && stderr.contains("unknown variant `tcpp`"),
        "{stderr}"
    );
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &denied.port()])
        .expect_eperm("old policy still denies");
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &allowed.port()])
        .expect_ok("old policy still allows");
    env.wait_audit("reload rejection", |e| {
        e["kind"] == "policy" && e["verdict"] == "rejected"
    });

    // SIGHUP takes the same path.
    d.hup();
    std::thread::sleep(std::time::Duration::from_millis(300));
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &denied.port()])
        .expect_eperm("after SIGHUP too");

    // A daemon refuses to start on a broken policy, with the position.
    let mut restarted = std::process::Command::new(palisade_bin())
        .args(["daemon", "--config"])
        .arg(&env.config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    drop(d);
    let status = restarted.wait().unwrap_or_else(|e| panic!("{e}"));
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut s) = restarted.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(!status.success());
    assert!(err.contains("policy.yaml:7:"), "{err}");
    // …and the pinned enforcement of the last good policy is untouched.
    Probe::in_cgroup(
        &env.attach.join("palisade/agent"),
        &["tcp", "127.0.0.1", &denied.port()],
    )
    .expect_eperm("pins of the last good policy");
}
