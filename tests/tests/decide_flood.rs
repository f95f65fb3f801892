//! Flooding the trail through the decision API: an enrolled agent that
//! asks `Decide` again and again costs the trail a bounded number of
//! records (past its per-identity budget, decisions are counted per kind
//! and written as aggregate records with their count), every decision is
//! accounted for, and another identity's decisions keep their own records.

use std::time::Duration;

use palisade_tests::{
    DaemonProc, TestEnv,
    probe::{RpcAs, rpc},
    root_or_skip, wait_for,
};
use serde_json::Value;

const POLICY: &str = r#"version: 1
identities:
  - id: flooder
    tools:
      allow:
        - {id: reads, tool: data, actions: [read]}
  - id: steady
    tools:
      allow:
        - {id: steady-reads, tool: data, actions: [read]}
"#;

/// The default `audit.calls.per_identity` and the kinds written past it.
const PER_IDENTITY: u64 = 1000;
const KINDS: u64 = 64;

fn decisions(env: &TestEnv, identity: &str) -> Vec<Value> {
    env.audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "decision" && e["identity"] == identity)
        .collect()
}

fn counted(records: &[Value]) -> u64 {
    records
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn a_decide_flood_costs_a_bounded_number_of_records_and_every_decision_is_counted() {
    if !root_or_skip("a_decide_flood_costs_a_bounded_number_of_records") {
        return;
    }
    let env = TestEnv::new("decide-flood", POLICY);
    let _d = DaemonProc::start(&env);
    let flood = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            rpc(
                &env,
                RpcAs::Identity("flooder"),
                &["decide-loop", "4000", "8", "data", "write", "{}"],
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        for _ in 0..3 {
            let r = rpc(
                &env,
                RpcAs::Identity("steady"),
                &["decide", "fresh", "data", "read", "{}"],
            );
            assert_eq!(r["verdict"], "ALLOW", "{r}");
        }
        flood.join().unwrap_or_else(|_| panic!("flooder"))
    });
    let sent = flood["count"].as_u64().unwrap_or(0);
    let bound = 2 * (PER_IDENTITY + 2 * KINDS);
    assert!(
        sent > 2 * bound,
        "the flood must be large enough to mean something: {flood}"
    );
    let records = wait_for(Duration::from_secs(25), || {
        let r = decisions(&env, "flooder");
        (counted(&r) >= sent).then_some(r)
    })
    .unwrap_or_else(|| {
        let r = decisions(&env, "flooder");
        panic!(
            "{flood}: the records account for {} ({} records)",
            counted(&r),
            r.len()
        )
    });
    eprintln!(
        "{sent} decisions: {} records ({} aggregate)",
        records.len(),
        records.iter().filter(|e| e["count"].is_u64()).count()
    );
    assert_eq!(counted(&records), sent, "no decision counted twice");
    assert!(
        records.len() as u64 <= bound,
        "{} records for {sent} decisions",
        records.len()
    );
    assert!(
        records.iter().any(|e| e["count"].is_u64()
            && e["reason"] == "no-matching-rule"
            && e["call"]["action"] == "write"),
        "{records:?}"
    );
    // The other identity, in the same period: a record per decision.
    let steady = decisions(&env, "steady");
    assert_eq!(steady.len(), 3, "{steady:?}");
    assert!(steady.iter().all(|e| e["count"].is_null()));
}
