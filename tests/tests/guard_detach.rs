//! Switching the guard off: a root agent selected by cgroup (full
//! capabilities, the pin directory in view) opens the daemon's pinned links
//! and detaches them with `BPF_LINK_DETACH`, or removes a pin. The daemon
//! finds it within a second, attaches again and says so in the trail; a
//! daemon started over severed links replaces them instead of refusing.
//! A capture in the namespace counts the SYNs that reach the denied host;
//! the same connection from an unenrolled process gets there, and so does
//! the agent's while no daemon is running to put the guard back.
//!
//! Addresses: namespace `10.232.0.0/24`, denied host `.2`, ports 93xx.

use std::time::{Duration, Instant};

use palisade_tests::{DaemonProc, Probe, TestEnv, capture::Capture, netns::NetNs, root_or_skip};

const DENIED: &str = "10.232.0.2";
const CGROUP_LINKS: &[&str] = &[
    "connect4",
    "connect6",
    "sendmsg4",
    "sendmsg6",
    "sock_create",
    "setsockopt",
    "egress",
];

fn guard_records(env: &TestEnv) -> Vec<serde_json::Value> {
    env.audit_events()
        .into_iter()
        .filter(|e| e["reason"] == "guard-detached")
        .collect()
}

/// Wait until every link in `links` has a `guard-detached` record beyond
/// the first `skip` ones.
fn wait_reattached(env: &TestEnv, skip: usize, links: &[&str], finding: &str) -> Duration {
    let t0 = Instant::now();
    let found = palisade_tests::wait_for(Duration::from_secs(5), || {
        let recs = guard_records(env);
        let recs = &recs[skip.min(recs.len())..];
        links
            .iter()
            .all(|l| {
                recs.iter().any(|r| {
                    r["hook"] == *l
                        && r["verdict"] == "reattached"
                        && r["detail"].as_str().is_some_and(|d| d.contains(finding))
                })
            })
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no guard-detached ({finding}) record for each of {links:?}: {:#?}",
        guard_records(env)
    );
    t0.elapsed()
}

#[test]
fn a_root_agent_cannot_switch_the_guard_off() {
    if !root_or_skip("a_root_agent_cannot_switch_the_guard_off") {
        return;
    }
    let ns = NetNs::new("nf-detach", 232);
    let env = TestEnv::new("nf-detach", "version: 1\n");
    let sel = env.make_cgroup("sel");
    env.write_policy(&format!(
        "version: 1
identities:
  - id: agent
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow: [{{cidr: 10.232.0.9/32}}]
",
        sel = env.selector_path("sel")
    ));
    env.write_config("");
    let mut daemon = DaemonProc::start(&env);
    let pins = env.bpffs.to_str().unwrap_or_default().to_string();
    let ports = ["9311", "9312", "9313", "9314", "9315", "9316", "9317"];
    let markers: Vec<String> = ports.iter().map(|p| format!("port:{p}")).collect();
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    let cap = Capture::start(&ns, 30_000, &[DENIED], &markers);
    let agent = |args: &[&str]| Probe::in_cgroup(&sel, args);
    let mut detach = vec!["detach-links", pins.as_str()];
    detach.extend_from_slice(CGROUP_LINKS);

    // Unprivileged, the agent cannot even open a pin.
    let mut unpriv = vec!["as-user", "65534"];
    unpriv.extend_from_slice(&detach);
    let o = agent(&unpriv);
    assert!(!o.ok(), "an unprivileged agent detached links: {}", o.0);
    agent(&["tcp", DENIED, ports[0]]).expect_eperm("connect before the attack");

    // Root detaches every cgroup link; the watchdog puts them back.
    let o = agent(&detach);
    assert!(o.ok(), "the root agent could not detach: {}", o.0);
    let took = wait_reattached(&env, 0, CGROUP_LINKS, "detached");
    eprintln!("re-attached {took:?} after the detach");
    assert!(took < Duration::from_secs(3), "re-attachment took {took:?}");
    agent(&["tcp", DENIED, ports[1]]).expect_eperm("connect after re-attachment");
    agent(&["udp", DENIED, ports[2]]).expect_eperm("sendto after re-attachment");
    let status = env.status();
    assert!(
        status["health"]["guard_repairs"].as_u64().unwrap_or(0) >= CGROUP_LINKS.len() as u64,
        "status does not report the repairs: {status}"
    );

    // Tracepoint links (lineage) cannot be detached by their holders.
    let o = agent(&["detach-links", pins.as_str(), "lineage_fork"]);
    assert!(!o.ok(), "a lineage link was detached: {}", o.0);
    eprintln!("detaching lineage_fork: {}", o.0);

    // Removing a pin releases nothing (the daemon holds the link) and the
    // pin comes back.
    let before = guard_records(&env).len();
    let pin = env.bpffs.join("link_connect4");
    let rm = Probe::in_cgroup_cmd(
        &sel,
        std::path::Path::new("/bin/rm"),
        &[pin.to_str().unwrap_or_default()],
    );
    assert!(
        rm.status.success(),
        "rm: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
    wait_reattached(&env, before, &["connect4"], "pin-removed");
    assert!(pin.exists(), "the pin was not restored");
    agent(&["tcp", DENIED, ports[3]]).expect_eperm("connect after the pin was removed");

    // No daemon: detaching works (the residual while the daemon is down);
    // the next start replaces the severed links instead of refusing.
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    let o = agent(&detach);
    assert!(o.ok(), "detach with the daemon down: {}", o.0);
    let _ = agent(&["tcp", DENIED, ports[4]]);
    let before = guard_records(&env).len();
    let _daemon = DaemonProc::start(&env);
    wait_reattached(&env, before, CGROUP_LINKS, "found at start");
    agent(&["tcp", DENIED, ports[5]]).expect_eperm("connect after a restart over severed links");

    // The control: an unenrolled process reaches the host.
    let _ = Probe::plain(&["tcp", DENIED, ports[6]]);
    let counts = cap.finish();
    assert!(
        counts["port:9317"] >= 1,
        "the control SYN never arrived: {counts:?}"
    );
    assert!(
        counts["port:9315"] >= 1,
        "with the links detached and no daemon the agent should have got through (the attack is real): {counts:?}"
    );
    for p in ["9311", "9312", "9313", "9314", "9316"] {
        assert_eq!(
            counts[&format!("port:{p}")],
            0,
            "SYN to {p} arrived: {counts:?}"
        );
    }
}
