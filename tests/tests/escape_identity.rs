//! Becoming another identity: an agent creates a cgroup below its own
//! whose name matches another identity's selector and moves into it, or
//! moves into the other identity's own cgroup; either way it would get the
//! other's rules. A cgroup below an enrolled one is never selected for a
//! different identity, and a process keeps the identity it descends from.
//! A capture counts the SYNs that reach the host only `b` may reach;
//! `b`'s own process gets there.
//!
//! Addresses: namespace `10.103.0.0/24`, `b`'s host `.2` port 9301.

use std::time::Duration;

use palisade_tests::{DaemonProc, Probe, TestEnv, capture::Capture, netns::NetNs, root_or_skip};

const B_HOST: &str = "10.103.0.2";
const B_PORT: &str = "9301";
const NOBODY: u32 = 65534;

#[test]
fn an_agent_never_becomes_another_identity_by_cgroup() {
    if !root_or_skip("an_agent_never_becomes_another_identity_by_cgroup") {
        return;
    }
    let ns = NetNs::new("ident", 103);
    let env = TestEnv::new("ident", "version: 1\n");
    env.make_cgroup("a");
    env.make_cgroup("b/evil-b");
    env.write_policy(&format!(
        "version: 1
identities:
  - id: a
    selectors: [{{cgroup: {a}}}]
    egress:
      allow: [{{cidr: 10.103.0.9/32}}]
  - id: b
    selectors: [{{cgroup: '{b}'}}]
    egress:
      allow: [{{cidr: {B_HOST}/32, ports: [{B_PORT}]}}]
",
        a = env.selector_path("a"),
        b = env.selector_path("**/evil-b"),
    ));
    env.write_config_at_root("");
    let _d = DaemonProc::start(&env);
    let a = env.attach.join("a");
    let sub = a.join("evil-b");
    let b_procs = env.attach.join("b/evil-b/cgroup.procs");

    let cap = Capture::start(&ns, 7000, &[B_HOST], &["port:9301"]);
    // A sub-cgroup named like b's selector; connect at once, and again once
    // the daemon has seen the new cgroup (resync is 1 s here).
    let o = Probe::in_cgroup(
        &a,
        &[
            "mkdir-move",
            sub.to_str().unwrap_or_default(),
            "tcp",
            B_HOST,
            B_PORT,
        ],
    );
    o.expect_eperm("connect from a sub-cgroup named like b's selector");
    let o = Probe::in_cgroup(
        &a,
        &[
            "mkdir-move",
            sub.to_str().unwrap_or_default(),
            "sleep",
            "1500",
            "tcp",
            B_HOST,
            B_PORT,
        ],
    );
    o.expect_eperm("the same, after the daemon saw the cgroup");
    // Straight into b's own cgroup.
    let o = Probe::in_cgroup(
        &a,
        &[
            "move-to",
            b_procs.to_str().unwrap_or_default(),
            "tcp",
            B_HOST,
            B_PORT,
        ],
    );
    o.expect_eperm("connect after moving into b's cgroup");
    // Unprivileged, in a slice delegated to it (as systemd's `Delegate=`
    // does): it may create and enter cgroups below its own, nothing more.
    let slice = env.make_cgroup("a/user");
    for p in [
        slice.clone(),
        slice.join("cgroup.procs"),
        slice.join("cgroup.threads"),
        slice.join("cgroup.subtree_control"),
    ] {
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY))
            .unwrap_or_else(|e| panic!("delegating {}: {e}", p.display()));
    }
    let user_sub = slice.join("evil-b");
    let o = Probe::in_cgroup(
        &slice,
        &[
            "as-user",
            "65534",
            "mkdir-move",
            user_sub.to_str().unwrap_or_default(),
            "sleep",
            "1500",
            "tcp",
            B_HOST,
            B_PORT,
        ],
    );
    assert_ne!(o.0["step"], "move", "the delegated move failed: {}", o.0);
    o.expect_eperm("unprivileged, from a delegated sub-cgroup named like b's selector");
    let o = Probe::in_cgroup(
        &slice,
        &[
            "as-user",
            "65534",
            "move-to",
            b_procs.to_str().unwrap_or_default(),
            "pid",
        ],
    );
    assert!(
        !o.ok(),
        "an unprivileged agent moved into b's cgroup: {}",
        o.0
    );
    let counts = cap.finish();
    assert_eq!(
        counts["port:9301"], 0,
        "agent a reached b's host: {counts:?}"
    );

    // The daemon did not select a's sub-cgroup for b.
    let status = env.status();
    let b = status["identities"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["id"] == "b"))
        .unwrap_or_else(|| panic!("no b in {status}"))
        .clone();
    assert_eq!(b["cgroups"], 1, "b has only its own cgroup: {status}");

    // The control: b's own process reaches its host.
    let cap = Capture::start(&ns, 1500, &[B_HOST], &["port:9301"]);
    std::thread::sleep(Duration::from_millis(100));
    let _ = Probe::in_cgroup(&env.attach.join("b/evil-b"), &["tcp", B_HOST, B_PORT]);
    let counts = cap.finish();
    assert!(
        counts["port:9301"] >= 1,
        "b never reached its host: {counts:?}"
    );
}
