//! Export to an OpenTelemetry collector survives the collector being down
//! and the daemon restarting: records wait in the trail and every one of
//! them arrives exactly once, in order, as the sealed line.

use std::time::Duration;

use nix::sys::signal::Signal;
use palisade_tests::{
    DaemonProc, Probe, TestEnv,
    http::{Collector, Scrape},
    root_or_skip, wait_for,
};

const POLICY: &str = "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.99.0.0/16}\n";

fn trail_lines(env: &TestEnv) -> Vec<String> {
    env.audit_lines()
}

/// `n` denied connects to `n` ports from `first` (each its own record).
fn deny(env: &TestEnv, first: u16, n: u32) {
    let r = Probe::enrolled(
        env,
        "agent",
        &["tcp-ports", "127.0.0.1", &first.to_string(), &n.to_string()],
    );
    assert_eq!(r.0["eperm"], n, "{}", r.0);
}

/// Wait until the collector holds exactly the trail, then check it.
fn wait_delivered(env: &TestEnv, collector: &Collector, what: &str) {
    let done = wait_for(Duration::from_secs(20), || {
        let lines = trail_lines(env);
        (collector.seqs().len() >= lines.len() && !lines.is_empty()).then_some(())
    });
    let lines = trail_lines(env);
    let got = collector
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(
        done.is_some(),
        "{what}: collector has {} of {} records",
        got.len(),
        lines.len()
    );
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    let want: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(seqs, want, "{what}: every record once, in order");
    for (r, line) in got.iter().zip(&lines) {
        assert_eq!(&r.line, line, "{what}: the body is the sealed trail line");
    }
}

#[test]
fn records_wait_in_the_trail_while_the_collector_is_down() {
    if !root_or_skip("records_wait_in_the_trail_while_the_collector_is_down") {
        return;
    }
    let mut collector = Collector::start();
    let env = TestEnv::new("otlp", POLICY);
    env.write_config_with(
        &format!(
            "  otlp:\n    endpoint: http://{}\n    batch: 7\n    max_backoff_ms: 400\n",
            collector.addr
        ),
        "",
    );
    let mut d = DaemonProc::start(&env);
    deny(&env, 20000, 5);
    wait_delivered(&env, &collector, "collector up");

    // Outage: records keep being written; the exporter retries.
    collector.stop();
    deny(&env, 21000, 20);
    // The denies reach the trail as the kernel's aggregates are flushed,
    // so the backlog is looked at until all of them have been written.
    let errors = wait_for(Duration::from_secs(15), || {
        let m = Scrape::fetch(&env.metrics_address());
        (m.value("palisade_sink_errors_total{sink=\"otlp\"}")
            .is_some_and(|e| e > 0.0)
            && m.value("palisade_sink_backlog{sink=\"otlp\"}")
                .is_some_and(|b| b >= 20.0))
        .then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "no delivery errors with a backlog of 20 during the outage:\n{}",
            Scrape::fetch(&env.metrics_address()).0
        )
    });
    errors.expect("palisade_sink_up{sink=\"otlp\"}", 0.0);
    let status = env.status();
    let sink = &status["health"]["sinks"][0];
    assert_eq!(sink["up"], false, "{status}");
    assert!(
        sink["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connecting")),
        "{status}"
    );

    // The daemon restarts during the outage: the cursor is on disk.
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));
    let _d = DaemonProc::start(&env);
    deny(&env, 22000, 4);

    collector.restart();
    wait_delivered(&env, &collector, "after the outage and a restart");
    let m = Scrape::fetch(&env.metrics_address());
    m.expect("palisade_sink_backlog{sink=\"otlp\"}", 0.0);
    m.expect("palisade_sink_up{sink=\"otlp\"}", 1.0);
    m.expect("palisade_events_lost_total{stage=\"sink_otlp\"}", 0.0);
    let lost: Vec<String> = trail_lines(&env)
        .into_iter()
        .filter(|l| l.contains("\"kind\":\"loss\""))
        .collect();
    assert!(lost.is_empty(), "nothing lost: {lost:?}");
}
