//! Nothing is lost silently: several identities flooding the kernel ring
//! buffer at once, or denials while no daemon runs, and every denial is
//! still accounted for in the trail — one event record each for the first
//! of its kind in a period, aggregate records with counts for the rest —
//! matching the kernel's own counters; dropped event records are reported
//! as loss records that match the metric.

use std::time::Duration;

use palisade_tests::{DaemonProc, Probe, TestEnv, http::Scrape, root_or_skip, wait_for};
use serde_json::Value;

const IDENTITIES: [&str; 4] = ["a1", "a2", "a3", "a4"];

/// Four identities that may reach nothing the tests use, and a kernel ring
/// buffer of one page: room for a few dozen events.
fn small_ring_env(name: &str) -> TestEnv {
    let mut policy = String::from("version: 1\nidentities:\n");
    for id in IDENTITIES {
        policy.push_str(&format!(
            "  - id: {id}\n    egress:\n      allow:\n        - {{cidr: 10.99.0.0/16}}\n"
        ));
    }
    let env = TestEnv::new(name, &policy);
    env.write_config_with(
        "",
        "kernel:\n  event_buffer_bytes: 4096\n  aggregate_ms: 500\n",
    );
    env
}

/// Denials of `identity` the trail accounts for: an event record is one,
/// an aggregate record its `count`.
fn denials(events: &[Value], identity: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["kind"] == "network" && e["identity"] == identity && e["verdict"] == "deny")
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum()
}

fn loss_records(events: &[Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["kind"] == "loss" && e["reason"] == "kernel-ring-buffer-full")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn several_identities_saturating_the_ring_buffer_lose_no_denial() {
    if !root_or_skip("several_identities_saturating_the_ring_buffer_lose_no_denial") {
        return;
    }
    let env = small_ring_env("loss");
    let d = DaemonProc::start(&env);
    // Each identity: 500 denied connects to 500 different ports, all four
    // at once: far more first-of-their-kind records than a page holds.
    // They start together once all four are enrolled, while the daemon is
    // stopped, so that the ring overflows however fast this host's reader.
    let per: u64 = 500;
    let go = env.dir.join("go");
    let runs: Vec<_> = IDENTITIES
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let env_socket = env.socket.clone();
            let first = (30000 + i * 1000).to_string();
            let id = id.to_string();
            let go = go.clone();
            std::thread::spawn(move || {
                std::process::Command::new(palisade_tests::palisade_bin())
                    .args(["exec", "--socket"])
                    .arg(&env_socket)
                    .args(["--identity", &id, "--"])
                    .arg(Probe::bin())
                    .arg("await")
                    .arg(&go)
                    .args(["tcp-ports", "127.0.0.1", &first, &per.to_string()])
                    .output()
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        })
        .collect();
    for id in IDENTITIES {
        env.wait_enrolments(id, 1);
    }
    let daemon = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGSTOP)
        .unwrap_or_else(|e| panic!("SIGSTOP: {e}"));
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let outs: Vec<_> = runs
        .into_iter()
        .map(|r| r.join().unwrap_or_else(|_| panic!("probe thread")))
        .collect();
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGCONT)
        .unwrap_or_else(|e| panic!("SIGCONT: {e}"));
    for out in outs {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["eperm"], per, "{v}");
    }

    // Dropped records are reported within a second or so of being seen.
    let metric = || {
        Scrape::fetch(&env.metrics_address())
            .value("palisade_events_lost_total{stage=\"kernel_ring_buffer\"}")
            .unwrap_or(-1.0) as u64
    };
    let settled = wait_for(Duration::from_secs(20), || {
        let events = env.audit_events();
        (IDENTITIES.iter().all(|id| denials(&events, id) == per)
            && loss_records(&events) == metric())
        .then_some(events)
    });
    let events = settled.unwrap_or_else(|| {
        let events = env.audit_events();
        panic!(
            "each identity was denied {per} times; the trail accounts for {:?}; {} dropped records reported, metric {}",
            IDENTITIES
                .iter()
                .map(|id| denials(&events, id))
                .collect::<Vec<_>>(),
            loss_records(&events),
            metric()
        )
    });
    let m = Scrape::fetch(&env.metrics_address());
    for id in IDENTITIES {
        m.expect(
            &format!("palisade_verdicts_total{{identity=\"{id}\",verdict=\"deny\"}}"),
            per as f64,
        );
    }
    // Records were dropped (a page holds a few dozen), each reported.
    let lost = loss_records(&events);
    assert!(lost > 0, "a 4 KiB ring buffer must overflow");
    assert_eq!(lost, metric(), "loss records vs metric");
    let network = events.iter().filter(|e| e["kind"] == "network").count();
    eprintln!(
        "4 × {per} denials: {network} network records, {lost} event records dropped and reported"
    );
}

#[test]
fn denials_while_the_daemon_is_down_are_all_accounted_for_by_the_next_one() {
    if !root_or_skip("denials_while_the_daemon_is_down_are_all_accounted_for_by_the_next_one") {
        return;
    }
    let env = small_ring_env("loss-down");
    let mut d = DaemonProc::start(&env);
    // Enrol a shell that waits, then denies itself while no daemon runs:
    // 300 kinds, 2,000 times over.
    let go = env.dir.join("go");
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; for i in 1 2 3 4 5 6; do {p} tcp-ports 127.0.0.1 40000 300 >/dev/null; done; {p} tcp-loop 127.0.0.1 40000 200",
        go = go.display(),
        p = Probe::bin().display(),
    );
    let sent: u64 = 6 * 300 + 200;
    let agent = std::process::Command::new(palisade_tests::palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args(["--identity", "a1", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(1500));
    d.kill9();
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let out = agent.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r["failures"], 200, "{r}");

    let _d = DaemonProc::start(&env);
    let settled = wait_for(Duration::from_secs(20), || {
        let events = env.audit_events();
        (denials(&events, "a1") == sent).then_some(events)
    });
    let events = settled.unwrap_or_else(|| {
        panic!(
            "{sent} denials while the daemon was down; the trail accounts for {}",
            denials(&env.audit_events(), "a1")
        )
    });
    let m = Scrape::fetch(&env.metrics_address());
    m.expect(
        "palisade_verdicts_total{identity=\"a1\",verdict=\"deny\"}",
        sent as f64,
    );
    eprintln!(
        "daemon down: {sent} denials, {} network records, {} event records dropped and reported",
        events.iter().filter(|e| e["kind"] == "network").count(),
        loss_records(&events)
    );
}
