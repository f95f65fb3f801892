//! `palisade events --follow` streams the trail live, filtered; `status`
//! shows health; only operators may watch.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, palisade_bin, root_or_skip};

#[test]
fn events_follow_streams_filtered_records() {
    if !root_or_skip("events_follow_streams_filtered_records") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let env = TestEnv::new(
        "watch",
        "version: 1\nidentities:\n  - id: alpha\n    egress: {}\n  - id: beta\n    egress: {}\n",
    );
    let _d = DaemonProc::start(&env);
    let mut follow = Command::new(palisade_bin())
        .args([
            "events",
            "--follow",
            "--json",
            "--identity",
            "alpha",
            "--verdict",
            "deny",
            "--socket",
        ])
        .arg(&env.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut human = Command::new(palisade_bin())
        .args(["events", "-f", "--kind", "network", "--socket"])
        .arg(&env.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(2000));
    for id in ["beta", "alpha", "beta", "alpha"] {
        Probe::enrolled(&env, id, &["tcp", "127.0.0.1", &target.port()]).expect_eperm(id);
    }
    let read = |child: &mut std::process::Child, n: usize| {
        let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        while lines.len() < n && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                lines.push(l);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines
    };
    let lines = read(&mut follow, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let trail = std::fs::read_to_string(&env.audit).unwrap_or_default();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["identity"], "alpha");
        assert_eq!(v["verdict"], "deny");
        assert!(
            trail.lines().any(|t| t == l),
            "the streamed record is the trail's line: {l}"
        );
    }
    let lines = read(&mut human, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].contains("DENY") && lines[0].contains("network") && lines[0].contains("beta"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!("→ 127.0.0.1:{}/tcp", target.port())),
        "{lines:?}"
    );

    // Bad filters and non-operators are refused with a reason.
    let out = Command::new(palisade_bin())
        .args(["events", "-f", "--kind", "netwrk", "--socket"])
        .arg(&env.socket)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown event kind `netwrk`"),
        "{err}"
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(palisade_bin())
        .args(["events", "-f", "--socket"])
        .arg(&env.socket)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("PermissionDenied") || err.contains("Permission denied"),
        "{err}"
    );

    // Status shows the trail head and the packet guard.
    let status = env.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("trail ") && text.contains("metrics    http://127.0.0.1:"),
        "{text}"
    );
}
