//! `/metrics` after known traffic: the counts match exactly, and every
//! metric the Grafana dashboard uses exists.

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv,
    http::{Scrape, get},
    root_or_skip,
};

fn policy(allowed: u16) -> String {
    format!(
        "version: 1\nidentities:\n  - id: enf\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{allowed}], protocol: tcp}}\n  - id: shadow\n    mode: audit\n    egress:\n      allow:\n        - {{cidr: 10.99.0.0/16}}\n"
    )
}

fn tcp_loop(env: &TestEnv, identity: &str, port: &str, n: u32) -> serde_json::Value {
    Probe::enrolled(
        env,
        identity,
        &["tcp-loop", "127.0.0.1", port, &n.to_string()],
    )
    .0
}

#[test]
fn metrics_count_known_traffic_exactly() {
    if !root_or_skip("metrics_count_known_traffic_exactly") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("metrics", &policy(allowed.addr.port()));
    env.write_config("kernel:\n  aggregate_ms: 200\n");
    let _d = DaemonProc::start(&env);
    let addr = env.metrics_address();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    assert_eq!(tcp_loop(&env, "enf", &allowed.port(), 7)["failures"], 0);
    assert_eq!(tcp_loop(&env, "enf", &denied.port(), 5)["failures"], 5);
    // Shadow mode: would-deny, yet allowed.
    assert_eq!(tcp_loop(&env, "shadow", &denied.port(), 3)["failures"], 0);

    let m = Scrape::fetch(&addr);
    m.expect(
        "palisade_verdicts_total{identity=\"enf\",verdict=\"allow\"}",
        7.0,
    );
    m.expect(
        "palisade_verdicts_total{identity=\"enf\",verdict=\"deny\"}",
        5.0,
    );
    m.expect(
        "palisade_verdicts_total{identity=\"enf\",verdict=\"audit\"}",
        0.0,
    );
    m.expect(
        "palisade_verdicts_total{identity=\"shadow\",verdict=\"allow\"}",
        0.0,
    );
    m.expect(
        "palisade_verdicts_total{identity=\"shadow\",verdict=\"audit\"}",
        3.0,
    );
    m.expect(
        "palisade_verdicts_total{identity=\"shadow\",verdict=\"deny\"}",
        0.0,
    );
    m.expect(
        "palisade_shadow_drift_total{identity=\"shadow\",source=\"kernel\"}",
        3.0,
    );
    m.expect(
        "palisade_shadow_drift_total{identity=\"enf\",source=\"kernel\"}",
        0.0,
    );
    m.expect(
        "palisade_events_lost_total{stage=\"kernel_ring_buffer\"}",
        0.0,
    );
    m.expect("palisade_events_lost_total{stage=\"pipeline_queue\"}", 0.0);
    m.expect("palisade_events_lost_total{stage=\"trail_write\"}", 0.0);
    m.expect("palisade_enrolled_cgroups{identity=\"enf\"}", 1.0);
    m.expect("palisade_identity_kill_switch{identity=\"enf\"}", 0.0);
    m.expect("palisade_kpi_identities", 2.0);
    m.expect("palisade_scrape_errors", 0.0);
    m.expect("palisade_policy_last_reload_success", 1.0);
    m.expect("palisade_decision_duration_seconds_count", 0.0);
    m.expect("palisade_approvals_pending", 0.0);
    let status = env.status();
    let version = status["policy_version"].as_str().unwrap_or_default();
    m.expect(
        &format!("palisade_policy_info{{version=\"{version}\"}}"),
        1.0,
    );
    // Start, 3 enrolments, and the 5 denies and 3 would-denies as two
    // kinds: the first of each recorded at once, the rest with their count.
    let seq = status["health"]["audit_seq"].as_u64().unwrap_or(0);
    let events = palisade_tests::wait_for(std::time::Duration::from_secs(5), || {
        let n = env.audit_events().len() as u64;
        (n >= 8).then_some(n)
    })
    .unwrap_or_else(|| panic!("audit records: {:?}", env.audit_events()));
    let m = Scrape::fetch(&addr);
    let chain = m
        .value("palisade_audit_chain_seq")
        .unwrap_or_else(|| panic!("no chain seq:\n{}", m.0));
    assert!(
        chain as u64 >= seq && chain as u64 <= events,
        "{chain} vs {seq}/{events}"
    );

    // A rejected reload shows, and so does the next good one. The daemon
    // watches the policy, so writing the file is itself a reload; the
    // explicit `palisade reload` that follows is a second one.
    let reloads = |result: &str, want: f64| {
        palisade_tests::wait_for(std::time::Duration::from_secs(5), || {
            let m = Scrape::fetch(&addr);
            (m.value(&format!(
                "palisade_policy_reloads_total{{result=\"{result}\"}}"
            )) == Some(want))
            .then_some(m)
        })
        .unwrap_or_else(|| {
            panic!(
                "reloads_total{{result={result}}} never reached {want}:\n{}",
                Scrape::fetch(&addr).0
            )
        })
    };
    env.write_policy(
        "version: 1\nidentities:\n  - id: enf\n    egress: {allow: [{cidr: 300.0.0.1}]}\n",
    );
    reloads("rejected", 1.0);
    assert!(!env.cli(&["reload"]).status.success());
    let m = reloads("rejected", 2.0);
    m.expect("palisade_policy_last_reload_success", 0.0);
    assert!(
        m.value("palisade_policy_last_reload_timestamp_seconds")
            .is_some_and(|t| t > 1.6e9),
        "{}",
        m.0
    );
    // Back to the policy in force: the watch sees no new content (no
    // reload); the explicit reload applies it.
    env.write_policy(&policy(allowed.addr.port()));
    env.cli_ok(&["reload"]);
    let m = reloads("applied", 1.0);
    m.expect("palisade_policy_last_reload_success", 1.0);
    // Counters live in the kernel: a reload does not reset them.
    m.expect(
        "palisade_verdicts_total{identity=\"enf\",verdict=\"allow\"}",
        7.0,
    );

    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(get(&addr, "/nope").0, 404);

    // Every metric the Grafana dashboard queries exists.
    let families = m.families();
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/palisade.json"),
    )
    .unwrap_or_else(|e| panic!("deploy/grafana/palisade.json: {e}"));
    let doc: serde_json::Value =
        serde_json::from_str(&dashboard).unwrap_or_else(|e| panic!("dashboard JSON: {e}"));
    let mut exprs = Vec::new();
    collect_exprs(&doc, &mut exprs);
    assert!(exprs.len() >= 8, "dashboard has {} queries", exprs.len());
    for expr in &exprs {
        for name in metric_names(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| families.iter().any(|f| f == b))
                .unwrap_or(&name);
            assert!(
                families.iter().any(|f| f == base),
                "dashboard uses `{name}` (in `{expr}`), which /metrics does not expose"
            );
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "expr"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_string());
                }
                collect_exprs(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `palisade_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("palisade_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}
