//! Flooding the trail through the L7 gateway: an unprivileged enrolled
//! agent that sends the gateway thousands of refused requests a second
//! costs the trail a bounded number of records (past its per-identity
//! budget, requests are counted per kind and written as aggregate records
//! with their count), every request is accounted for, and another
//! identity's requests keep their own records meanwhile. Under the budget
//! every request has its own record.

use std::path::PathBuf;
use std::time::Duration;

use palisade_tests::{
    TestEnv,
    gateway::{agent, exec_unprivileged, python_dir, request},
    gateway_fixture::start,
    wait_for,
};
use serde_json::Value;

/// The default `audit.calls.per_identity` and the kinds written past it.
const PER_IDENTITY: u64 = 1000;
const KINDS: u64 = 64;

/// Every trail file (rotated ones too).
fn trail_files(env: &TestEnv) -> Vec<PathBuf> {
    let dir = env.audit.parent().map(PathBuf::from).unwrap_or_default();
    let name = env
        .audit
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&name))
        })
        .collect()
}

fn trail_bytes(env: &TestEnv) -> u64 {
    trail_files(env)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Complete gateway records of `identity`, in every trail file.
fn gateway_records(env: &TestEnv, identity: &str) -> Vec<Value> {
    trail_files(env)
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines()
                .filter(|l| l.ends_with('}'))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter(|e| e["kind"] == "gateway" && e["identity"] == identity)
        .collect()
}

/// Requests the records stand for: one each, an aggregate its `count`.
fn requests_in(records: &[Value]) -> u64 {
    records
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn a_gateway_flood_costs_a_bounded_number_of_records_and_every_request_is_counted() {
    let Some(f) = start("gw-flood") else {
        return;
    };
    // Control: under the budget, every request has a record of its own.
    let reqs: Vec<Value> = (0..20)
        .map(|i| request("GET", &format!("/v1/admin/c{i}")))
        .collect();
    let out = agent(&f.env, "finance-agent", "requests", &f.base(), &reqs);
    assert!(out.iter().all(|o| o["status"] == 403), "{out:?}");
    let control = wait_for(Duration::from_secs(10), || {
        let r = gateway_records(&f.env, "finance-agent");
        (r.len() == 20).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "20 records of their own: {:?}",
            gateway_records(&f.env, "finance-agent")
        )
    });
    assert!(
        control
            .iter()
            .all(|e| e["count"].is_null() && e["reason"] == "no-route"),
        "{control:?}"
    );

    // The flood, as uid 65534, while another identity works.
    let before = trail_bytes(&f.env);
    let script = python_dir().join("gateway_flood.py");
    let flooder = exec_unprivileged(
        &f.env,
        "finance-agent",
        "/usr/bin/python3",
        &[&script.to_string_lossy(), &f.gateway(), "9001", "5", "4"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("flooder: {e}"));
    std::thread::sleep(Duration::from_secs(2));
    let reads: Vec<Value> = (0..5)
        .map(|i| request("GET", &format!("/v1/customers/cus_{i}")))
        .chain([request("GET", "/v1/admin/other")])
        .collect();
    let theirs = agent(&f.env, "other-agent", "requests", &f.base(), &reads);
    let out = flooder.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "flooder: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let sent = result["responses"].as_u64().unwrap_or(0);
    assert_eq!(
        result["statuses"]["403"].as_u64(),
        Some(sent),
        "every flood request is refused: {result}"
    );
    // At most two periods (of 10 s) are touched: each costs the budget,
    // the first of each kind past it, and an aggregate record per kind.
    let bound = 2 * (PER_IDENTITY + 2 * KINDS);
    assert!(
        sent > 4 * bound,
        "the flood must be large enough to mean something: {sent} requests"
    );

    // Every request is accounted for once the aggregate records are in
    // (their period ends 10 s after it began).
    let flood = wait_for(Duration::from_secs(25), || {
        let r = gateway_records(&f.env, "finance-agent");
        (requests_in(&r) >= sent + 20).then_some(r)
    })
    .unwrap_or_else(|| {
        let r = gateway_records(&f.env, "finance-agent");
        panic!(
            "{sent} flood requests + 20: the records account for {} ({} records)",
            requests_in(&r),
            r.len()
        )
    });
    assert_eq!(requests_in(&flood), sent + 20, "no request counted twice");
    let grown = trail_bytes(&f.env) - before;
    assert!(
        flood.len() as u64 <= bound + 20,
        "{} records for {sent} requests (bound {bound}); the trail grew {grown} bytes",
        flood.len()
    );
    assert!(
        grown < 2 << 20,
        "the trail grew {grown} bytes for {sent} requests"
    );
    eprintln!(
        "{sent} flood requests: {} records ({} aggregate), the trail grew {grown} bytes",
        flood.len(),
        flood.iter().filter(|e| e["count"].is_u64()).count()
    );
    let aggregates: Vec<&Value> = flood.iter().filter(|e| e["count"].is_u64()).collect();
    assert!(!aggregates.is_empty());
    for a in &aggregates {
        assert_eq!(a["verdict"], "deny", "{a}");
        assert!(a["aggregate"]["first"].is_string(), "{a}");
        assert!(
            ["no-route", "no-matching-rule"].contains(&a["reason"].as_str().unwrap_or("")),
            "{a}"
        );
    }
    // The decided refusals are counted by rule and route, not path.
    assert!(
        aggregates.iter().any(|a| a["reason"] == "no-matching-rule"
            && a["http"]["route_id"] == "create-payment"
            && a["call"]["action"] == "create_payment"),
        "{aggregates:?}"
    );

    // The other identity, in the same period: a record per request.
    assert_eq!(
        theirs.iter().filter(|o| o["status"] == 200).count(),
        5,
        "{theirs:?}"
    );
    let other = gateway_records(&f.env, "other-agent");
    assert_eq!(other.len(), 6, "{other:?}");
    assert!(other.iter().all(|e| e["count"].is_null()), "{other:?}");
    assert_eq!(
        other
            .iter()
            .filter(|e| e["verdict"] == "allow" && e["http"]["route_id"] == "get-customer")
            .count(),
        5
    );
}
