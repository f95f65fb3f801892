//! Nothing is lost silently: a burst of denials larger than the kernel ring
//! buffer loses events, and the loss records in the trail (and the metric)
//! add up to exactly what was sent minus what arrived.

use std::time::Duration;

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, http::Scrape, root_or_skip, wait_for};

/// One identity that may reach nothing the tests use, and a kernel ring
/// buffer of one page: room for a few dozen events.
fn small_ring_env(name: &str) -> TestEnv {
    let env = TestEnv::new(
        name,
        "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.99.0.0/16}\n",
    );
    env.write_config_with("", "kernel:\n  event_buffer_bytes: 4096\n");
    env
}

#[test]
fn a_burst_over_the_ring_buffer_is_counted_exactly() {
    if !root_or_skip("a_burst_over_the_ring_buffer_is_counted_exactly") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let env = small_ring_env("loss");
    let _d = DaemonProc::start(&env);
    let port: u64 = target.addr.port().into();
    let sent: u64 = 20_000;
    let r = Probe::enrolled(
        &env,
        "agent",
        &["tcp-loop", "127.0.0.1", &target.port(), &sent.to_string()],
    );
    assert_eq!(r.0["failures"], sent, "every connect denied: {}", r.0);

    let tally = || {
        let events = env.audit_events();
        let arrived = events
            .iter()
            .filter(|e| e["kind"] == "network" && e["dst_port"] == port)
            .count() as u64;
        let lost: u64 = events
            .iter()
            .filter(|e| e["kind"] == "loss")
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum();
        (arrived, lost, events)
    };
    let settled = wait_for(Duration::from_secs(20), || {
        let (arrived, lost, _) = tally();
        (arrived + lost == sent).then_some((arrived, lost))
    });
    let (arrived, lost, events) = tally();
    let (arrived, lost) = settled.unwrap_or_else(|| {
        panic!(
            "sent {sent}, {arrived} arrived, {lost} reported lost; loss records: {:?}",
            events
                .iter()
                .filter(|e| e["kind"] == "loss")
                .collect::<Vec<_>>()
        )
    });
    assert!(
        lost > 0,
        "a 4 KiB ring buffer must overflow on {sent} events"
    );
    assert!(arrived > 0, "some events arrive");

    // The metrics agree with the trail, and the kernel counted every deny.
    let m = Scrape::fetch(&env.metrics_address());
    let kernel = m
        .value("palisade_events_lost_total{stage=\"kernel_ring_buffer\"}")
        .unwrap_or(-1.0) as u64;
    let queue = m
        .value("palisade_events_lost_total{stage=\"pipeline_queue\"}")
        .unwrap_or(-1.0) as u64;
    assert_eq!(kernel + queue, lost, "metrics vs loss records:\n{}", m.0);
    m.expect(
        "palisade_verdicts_total{identity=\"agent\",verdict=\"deny\"}",
        sent as f64,
    );
    let kernel_records: u64 = events
        .iter()
        .filter(|e| e["kind"] == "loss" && e["reason"] == "kernel-ring-buffer-full")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(kernel_records, kernel, "kernel loss records vs metric");
    eprintln!("sent {sent}: {arrived} arrived, {kernel} lost in the kernel, {queue} in the queue");
}

#[test]
fn losses_while_the_daemon_is_down_are_reported_by_the_next_one() {
    if !root_or_skip("losses_while_the_daemon_is_down_are_reported_by_the_next_one") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let env = small_ring_env("loss-down");
    let mut d = DaemonProc::start(&env);
    // Enrol a shell that waits, then bursts while no daemon runs.
    let go = env.dir.join("go");
    let sent: u64 = 2_000;
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; {p} tcp-loop 127.0.0.1 {port} {sent}",
        go = go.display(),
        p = Probe::bin().display(),
        port = target.port(),
    );
    let agent = std::process::Command::new(palisade_tests::palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args(["--identity", "agent", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(1500));
    d.kill9();
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let out = agent.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r["failures"], sent, "{r}");

    let _d = DaemonProc::start(&env);
    let port: u64 = target.addr.port().into();
    let settled = wait_for(Duration::from_secs(20), || {
        let events = env.audit_events();
        let arrived = events
            .iter()
            .filter(|e| e["kind"] == "network" && e["dst_port"] == port)
            .count() as u64;
        let lost: u64 = events
            .iter()
            .filter(|e| e["kind"] == "loss")
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum();
        (arrived + lost == sent && lost > 0).then_some((arrived, lost))
    });
    let (arrived, lost) = settled.unwrap_or_else(|| {
        panic!(
            "sent {sent} while the daemon was down; trail: {:?}",
            env.audit_events()
                .iter()
                .filter(|e| e["kind"] == "loss")
                .collect::<Vec<_>>()
        )
    });
    eprintln!(
        "daemon down: sent {sent}, {arrived} waited in the ring buffer, {lost} lost and reported"
    );
}
