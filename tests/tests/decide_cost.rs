//! A condition is written by the policy but fed by the caller: a costly
//! condition over a large parameter is denied once it has used its
//! evaluation budget, and while one identity keeps sending such calls
//! another identity's decisions keep being answered (real daemon, real
//! gRPC over the Unix socket, real clients enrolled with `palisade exec`).

use std::time::Instant;

use palisade_tests::{
    DaemonProc, TestEnv,
    probe::{RpcAs, rpc},
    root_or_skip,
};

const POLICY: &str = r#"version: 1
identities:
  - id: heavy
    tools:
      allow:
        - id: dedupe
          tool: data
          actions: [check]
          when: params.items.all(x, params.items.exists(y, y == x))
  - id: light
    tools:
      allow:
        - {id: small, tool: data, actions: [check], when: "params.n < 10"}
"#;

#[test]
fn a_quadratic_condition_is_denied_quickly_and_does_not_hold_other_identities() {
    if !root_or_skip("a_quadratic_condition_is_denied_quickly_and_does_not_hold_other_identities") {
        return;
    }
    let env = TestEnv::new("decide-cost", POLICY);
    let _d = DaemonProc::start(&env);
    let items: Vec<u32> = (0..10_000).collect();
    let big = env.dir.join("items.json");
    std::fs::write(&big, serde_json::json!({ "items": items }).to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let big_arg = format!("@{}", big.display());

    // The attack, once: 10,000 × 10,000 steps, stopped by the budget.
    let started = Instant::now();
    let r = rpc(
        &env,
        RpcAs::Identity("heavy"),
        &["decide", "fresh", "data", "check", &big_arg],
    );
    let took = started.elapsed();
    assert_eq!(r["verdict"], "DENY", "{r}");
    assert_eq!(r["reason"], "evaluation-budget-exceeded", "{r}");
    assert!(
        r["message"].as_str().is_some_and(|m| m.contains("budget")),
        "the deny says why: {r}"
    );
    // Unbudgeted, this call took 11 s on this machine; the budget stops it
    // after 100,000 steps (tens of milliseconds).
    assert!(
        took.as_secs() < 5,
        "the costly call took {took:?} to be denied"
    );
    let ev = env.wait_audit("for the budget deny", |e| {
        e["kind"] == "decision" && e["reason"] == "evaluation-budget-exceeded"
    });
    assert_eq!(ev["identity"], "heavy");

    // Small inputs are judged as before.
    let ok = rpc(
        &env,
        RpcAs::Identity("heavy"),
        &[
            "decide",
            "fresh",
            "data",
            "check",
            r#"{"items": [1, 2, 3]}"#,
        ],
    );
    assert_eq!(ok["verdict"], "ALLOW", "{ok}");

    // The flood: heavy keeps 8 costly calls in flight for 6 s while light
    // asks for ordinary decisions.
    let socket = env.socket.clone();
    let flood = std::thread::spawn(move || {
        std::process::Command::new(palisade_tests::palisade_bin())
            .args(["exec", "--socket"])
            .arg(&socket)
            .args(["--identity", "heavy", "--"])
            .arg(palisade_tests::Probe::bin().with_file_name("palisade-rpc"))
            .arg(&socket)
            .args(["decide-loop", "6000", "8", "data", "check", &big_arg])
            .output()
            .unwrap_or_else(|e| panic!("flood: {e}"))
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let light = rpc(
        &env,
        RpcAs::Identity("light"),
        &["decide-loop", "3000", "1", "data", "check", r#"{"n": 3}"#],
    );
    let out = flood.join().unwrap_or_else(|_| panic!("flood thread"));
    let heavy: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("flood said {:?}: {e}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("during the flood: light {light}\nheavy {heavy}");
    assert_eq!(
        light["reasons"]
            .as_object()
            .map(|r| r.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["allowed".to_string()]),
        "light's decisions: {light}"
    );
    assert!(light["count"].as_u64().unwrap_or(0) >= 10, "{light}");
    // Before the budget and the evaluation slots, light waited 8.5 s behind
    // a single costly call.
    assert!(
        light["max_ms"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "light's slowest decision during the flood: {light}"
    );
    let heavy_reasons = heavy["reasons"].as_object().cloned().unwrap_or_default();
    assert!(
        heavy_reasons
            .keys()
            .all(|k| k == "evaluation-budget-exceeded" || k == "ResourceExhausted"),
        "heavy's calls are denied by the budget (or told to wait): {heavy}"
    );
}
