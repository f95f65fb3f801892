//! Hot reload: atomic in the kernel, triggered by file changes (including the
//! Kubernetes ConfigMap symlink swap), never a moment without a policy.

use std::{process::Command, time::Duration};

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, palisade_bin, root_or_skip, wait_for};

fn allow(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{}], protocol: tcp}}\n",
        list.join(", ")
    )
}

#[test]
fn a_file_change_that_narrows_a_rule_denies_the_next_connect() {
    if !root_or_skip("a_file_change_that_narrows_a_rule_denies_the_next_connect") {
        return;
    }
    let a = TcpServer::start("127.0.0.1");
    let b = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("narrow", &allow(&[a.addr.port(), b.addr.port()]));
    let _d = DaemonProc::start(&env);
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &b.port()]).expect_ok("before the change");
    let before = env.audit_events().len();

    env.write_policy(&allow(&[a.addr.port()]));
    let applied = env.wait_audit("reload on file change", |e| {
        e["kind"] == "policy" && e["verdict"] == "applied" && e["reason"] == "file-change"
    });
    assert!(env.audit_events().len() > before);
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &b.port()])
        .expect_eperm("after narrowing");
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &a.port()]).expect_ok("still allowed");
    // The version in events changes at the flip.
    let port: u64 = b.addr.port().into();
    let denied = env.wait_audit("deny under the new version", |e| e["dst_port"] == port);
    assert_eq!(denied["policy_version"], applied["policy_version"]);
}

#[test]
fn a_thousand_alternating_reloads_never_interrupt_a_connection_allowed_by_both() {
    if !root_or_skip("a_thousand_alternating_reloads") {
        return;
    }
    let both = TcpServer::start("127.0.0.1");
    let only_a = TcpServer::start("127.0.0.1");
    let only_b = TcpServer::start("127.0.0.1");
    let policy_a = allow(&[both.addr.port(), only_a.addr.port()]);
    let policy_b = allow(&[only_b.addr.port(), both.addr.port()]);
    let env = TestEnv::new("flips", &policy_a);
    let _d = DaemonProc::start(&env);

    let stop = env.dir.join("stop");
    let client = {
        let (socket, stop, port) = (env.socket.clone(), stop.clone(), both.port());
        std::thread::spawn(move || {
            let out = Command::new(palisade_bin())
                .args(["exec", "--socket"])
                .arg(&socket)
                .args(["--identity", "agent", "--"])
                .arg(Probe::bin())
                .args(["tcp-until", "127.0.0.1", &port])
                .arg(&stop)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..1000 {
        env.write_policy(if i % 2 == 0 { &policy_b } else { &policy_a });
        let out = env.cli(&["reload"]);
        assert!(
            out.status.success(),
            "reload {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(&stop, "").unwrap_or_else(|e| panic!("{e}"));
    let line = client.join().unwrap_or_else(|_| panic!("client thread"));
    let r: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(
        r["failures"], 0,
        "a connection allowed by both policies failed during reloads: {r}"
    );
    assert!(
        r["count"].as_u64().unwrap_or(0) >= 1000,
        "too few connections overlapped the reloads: {r}"
    );
    // Both policies were really in force in turn.
    let applied = env
        .audit_events()
        .iter()
        .filter(|e| e["kind"] == "policy" && e["verdict"] == "applied")
        .count();
    assert!(applied >= 1000, "only {applied} reloads applied");
}

#[test]
fn a_configmap_symlink_swap_triggers_a_reload() {
    if !root_or_skip("a_configmap_symlink_swap_triggers_a_reload") {
        return;
    }
    let a = TcpServer::start("127.0.0.1");
    let b = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("configmap", "version: 1\n");
    // The layout the kubelet writes for a mounted ConfigMap.
    let cm = env.dir.join("policy.d");
    let v1 = cm.join("..2026_11_23_10_00_00.000000001");
    std::fs::create_dir_all(&v1).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        v1.join("policy.yaml"),
        allow(&[a.addr.port(), b.addr.port()]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("..2026_11_23_10_00_00.000000001", cm.join("..data"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("..data/policy.yaml", cm.join("policy.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &env.config,
        std::fs::read_to_string(&env.config)
            .unwrap_or_default()
            .replace(&env.policy.display().to_string(), &cm.display().to_string()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _d = DaemonProc::start(&env);
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &b.port()])
        .expect_ok("first ConfigMap version");

    // The kubelet's update: new timestamped dir, then rename a new `..data`.
    let v2 = cm.join("..2026_11_23_10_05_00.000000002");
    std::fs::create_dir_all(&v2).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(v2.join("policy.yaml"), allow(&[a.addr.port()]))
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("..2026_11_23_10_05_00.000000002", cm.join("..data_tmp"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap_or_else(|e| panic!("{e}"));

    let narrowed = wait_for(Duration::from_secs(5), || {
        (!Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &b.port()]).ok()).then_some(())
    });
    assert!(
        narrowed.is_some(),
        "the ConfigMap swap did not reload the policy"
    );
    env.wait_audit("file-change reload", |e| {
        e["kind"] == "policy" && e["reason"] == "file-change"
    });
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &a.port()])
        .expect_ok("second version still allows a");
}
