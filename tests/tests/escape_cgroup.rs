//! Leaving the cgroup: a root agent writes itself into the cgroup v2 root's
//! `cgroup.procs` and is no longer in an enrolled cgroup. Its identity must
//! follow it and everything it starts: children, a thread that outlives the
//! thread group's leader, a thread that execs, and all of that while the
//! daemon is down. A capture in the namespace counts the SYNs that reach
//! the denied host; the same connection from a process that is not
//! enrolled gets there. An agent started with `palisade exec` cannot write
//! to cgroupfs at all, and keeps neither the capabilities nor the bpffs
//! view it would need to undo its guard.
//!
//! The daemon attaches at the cgroup root here, as deployed (the default).
//! Addresses: namespace `10.102.0.0/24` (and `10.107.0.0/24`), denied host
//! `.2`, ports 92xx.

use std::path::PathBuf;

use palisade_tests::{
    DaemonProc, Probe, TestEnv, capture::Capture, netns::NetNs, palisade_bin, root_or_skip,
};

const DENIED: &str = "10.102.0.2";

fn setup(tag: &str, octet: u8) -> (NetNs, TestEnv, DaemonProc, PathBuf) {
    let ns = NetNs::new(tag, octet);
    let env = TestEnv::new(tag, "version: 1\n");
    env.make_cgroup("sel");
    env.write_policy(&format!(
        "version: 1
identities:
  - id: agent
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow: [{{cidr: 10.102.0.9/32}}]
",
        sel = env.selector_path("sel")
    ));
    env.write_config_at_root("");
    let d = DaemonProc::start(&env);
    let root_procs = env.cgroup_root.join("cgroup.procs");
    (ns, env, d, root_procs)
}

#[test]
fn identity_follows_a_root_agent_out_of_its_cgroup() {
    if !root_or_skip("identity_follows_a_root_agent_out_of_its_cgroup") {
        return;
    }
    let (ns, env, mut daemon, root_procs) = setup("leave", 102);
    let root = root_procs.to_str().unwrap_or_default();
    let sel = env.attach.join("sel");
    let ports = ["9201", "9202", "9203", "9204", "9205", "9206"];
    let markers: Vec<String> = ports.iter().map(|p| format!("port:{p}")).collect();
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    let cap = Capture::start(&ns, 6000, &[DENIED], &markers);
    let escape = |args: &[&str]| {
        let mut full = vec!["move-to", root];
        full.extend_from_slice(args);
        Probe::in_cgroup(&sel, &full)
    };
    // Out of the cgroup, then connect; and a child forked outside.
    let o = escape(&["tcp", DENIED, ports[0]]);
    o.expect_eperm("connect after moving to the root cgroup");
    let o = escape(&["fork-tcp", DENIED, ports[1]]);
    assert!(!o.ok(), "a child forked after the move connected: {}", o.0);
    // The leader thread exits; another thread of the process connects.
    escape(&["thread-leader-exits", "tcp", DENIED, ports[2]])
        .expect_eperm("connect from a thread that outlived its leader");
    // A non-leader thread execs (the kernel gives it the leader's id).
    escape(&["exec-from-thread", "tcp", DENIED, ports[3]])
        .expect_eperm("connect after exec from a thread");
    // An escaped agent is still an agent to the daemon, too.
    let revoke = Probe::in_cgroup_cmd(
        &sel,
        &Probe::bin(),
        &[
            "move-to",
            root,
            "run",
            palisade_bin().to_str().unwrap_or_default(),
            "revoke",
            "agent",
            "--socket",
            env.socket.to_str().unwrap_or_default(),
        ],
    );
    assert!(
        !revoke.status.success(),
        "an escaped agent revoked as an operator"
    );
    assert!(
        String::from_utf8_lossy(&revoke.stderr).contains("agent `agent`"),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    // Tracking and enforcement go on without the daemon.
    daemon.kill9();
    let o = escape(&["fork-tcp", DENIED, ports[4]]);
    assert!(
        !o.ok(),
        "with the daemon down, an escaped child connected: {}",
        o.0
    );
    // The control.
    let _ = Probe::plain(&["tcp", DENIED, ports[5]]);
    let counts = cap.finish();
    assert!(
        counts["port:9206"] >= 1,
        "the control SYN never arrived: {counts:?}"
    );
    for m in &markers[..5] {
        assert_eq!(counts[*m], 0, "an escaped agent reached {m}: {counts:?}");
    }
}

#[test]
fn exec_agents_cannot_move_and_hold_nothing_to_undo_their_guard() {
    if !root_or_skip("exec_agents_cannot_move_and_hold_nothing_to_undo_their_guard") {
        return;
    }
    let (_ns, env, _d, root_procs) = setup("nomove", 107);
    let root = root_procs.to_str().unwrap_or_default();
    let moved = Probe::enrolled(&env, "agent", &["move-to", root, "pid"]);
    assert!(
        !moved.ok(),
        "an exec'd root agent moved itself: {}",
        moved.0
    );
    assert_eq!(
        moved.0["errno"],
        i64::from(libc::EROFS),
        "cgroupfs is read-only for it: {}",
        moved.0
    );
    let c = Probe::enrolled(&env, "agent", &["confinement"]);
    let bnd = c.0["cap_bnd"].as_u64().unwrap_or(u64::MAX);
    for (name, bit) in [
        ("sys_admin", 21),
        ("bpf", 39),
        ("net_admin", 12),
        ("net_raw", 13),
        ("sys_ptrace", 19),
        ("sys_module", 16),
    ] {
        assert_eq!(
            bnd & (1 << bit),
            0,
            "CAP_{name} left in the bounding set: {}",
            c.0
        );
    }
    assert_eq!(c.0["no_new_privs"], "1", "{}", c.0);
    assert_eq!(c.0["bpffs_visible"], false, "bpffs visible: {}", c.0);
    assert_eq!(c.0["cgroup"], "/", "not in a cgroup namespace: {}", c.0);
    // The control: the same probe outside sees all of it.
    let plain = Probe::plain(&["confinement"]);
    assert_ne!(plain.0["cap_bnd"].as_u64().unwrap_or(0) & (1 << 21), 0);
    assert_eq!(plain.0["bpffs_visible"], true, "{}", plain.0);
}
