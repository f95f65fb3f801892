//! `cargo xtask bench decide`, second part: what the Python client's
//! `@guard` costs an agent, next to a bare grpcio call to `Ping`, measured
//! from Python in one process (`clients/python/bench/guard_bench.py`, run
//! enrolled against a daemon with the decide benchmark's policy).

use std::{path::Path, process::Command};

use palisade_tests::{DaemonProc, TestEnv, client_python, palisade_bin};
use serde_json::Value;

/// The decide benchmark's policy (`palisade-decide-bench`): a payments
/// agent with a schema, a condition, an approval condition and two budgets.
const POLICY: &str = r#"version: 1
label: bench-guard
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string, customer: string}
roles:
  - id: payments-operator
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
      deny:
        - id: no-refunds
          tool: stripe
          actions: [refund, "payout*"]
    budgets:
      - {id: daily-spend, tool: stripe, actions: [create_payment], limit: 1000000000, per: day, sum: params.amount, unit: USD}
      - {id: stripe-rate, tool: stripe, limit: 100000000, per: minute}
identities:
  - id: bench-agent
    roles: [payments-operator]
"#;

fn main() {
    assert!(palisade_tests::root_or_skip("bench guard"), "needs root");
    let env = TestEnv::new("bench-guard", POLICY);
    let _daemon = DaemonProc::start(&env);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python/bench/guard_bench.py");
    let python = client_python();
    let out = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "bench-agent", "--"])
        .arg(&python)
        .arg(&script)
        .env("PALISADE_SOCKET", &env.socket)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "guard_bench.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "guard_bench.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let version = Command::new(&python)
        .args([
            "-c",
            "import sys, grpc; print(sys.version.split()[0], grpc.__version__)",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "\nPython client, one thread, one channel (Python, grpcio: {version}); {} calls per kind, interleaved rounds; latency in µs",
        r["ping"]["calls"]
    );
    println!("| call | p50 | p99 | mean | calls/s | ÷ Ping (p50 / p99 / mean) |");
    println!("|---|---|---|---|---|---|");
    let ping = &r["ping"];
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for (kind, label) in [
        ("ping", "bare grpcio `Ping`"),
        ("decide", "bare grpcio `Decide`"),
        ("guard", "`@guard`-ed function, allowed"),
    ] {
        let v = &r[kind];
        let ratio = if kind == "ping" {
            String::new()
        } else {
            format!(
                "{:.2}× / {:.2}× / {:.2}×",
                f(v, "p50_us") / f(ping, "p50_us"),
                f(v, "p99_us") / f(ping, "p99_us"),
                f(v, "mean_us") / f(ping, "mean_us")
            )
        };
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {ratio} |",
            f(v, "p50_us"),
            f(v, "p99_us"),
            f(v, "mean_us"),
            f(v, "calls_per_s")
        );
    }
    // What @guard adds on top of the call it makes, against Ping's cost.
    let added = f(&r["guard"], "mean_us") - f(ping, "mean_us");
    println!(
        "\n@guard costs {:.0} µs per allowed call on average, {:.0} µs more than a bare Ping ({:.2}× Ping's cost); \
         of that, the decision itself (bare Decide − Ping) is {:.0} µs and the client's own work {:.0} µs",
        f(&r["guard"], "mean_us"),
        added,
        f(&r["guard"], "mean_us") / f(ping, "mean_us"),
        f(&r["decide"], "mean_us") - f(ping, "mean_us"),
        f(&r["guard"], "mean_us") - f(&r["decide"], "mean_us"),
    );
}
