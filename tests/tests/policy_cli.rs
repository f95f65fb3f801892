//! Policy as code from the command line: check, test, explain, diff, schema.
//! These run the real `palisade` binary; no root needed.

use std::{path::PathBuf, process::Command};

use palisade_tests::{Scratch, palisade_bin};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(palisade_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("palisade {args:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> Scratch {
    Scratch::new(&format!("cli-{name}"))
}

#[test]
fn the_documented_examples_pass_strict_checks_and_their_suites() {
    let dir = examples();
    let dir_s = dir.display().to_string();
    let (code, out, err) = run(&["policy", "check", "--strict", &dir_s]);
    assert_eq!(code, 0, "{out}{err}");
    let suites: Vec<String> = std::fs::read_dir(dir.join("tests"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(suites.len() >= 4, "{suites:?}");
    let mut args = vec!["policy", "test"];
    args.extend(suites.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn a_failing_case_is_reported_with_its_location_and_fails_the_run() {
    let dir = scratch("suite");
    std::fs::write(dir.join("p.yaml"), "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443]}\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("s.yaml"),
        "policy: p.yaml\ncases:\n  - name: allowed\n    identity: a\n    destination: 10.1.1.1:443\n    expect: allow\n  - name: wrongly expected\n    identity: a\n    destination: 10.1.1.1:80\n    expect: allow\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let suite = dir.join("s.yaml").display().to_string();
    let (code, out, _) = run(&["policy", "test", &suite]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PASS allowed"), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL wrongly expected ({suite}:7:11): expected allow, got deny (default-deny)"
        )),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn strict_turns_lints_into_errors() {
    let dir = scratch("strict");
    let p = dir.join("p.yaml");
    std::fs::write(&p, "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 0.0.0.0/0}\n").unwrap_or_else(|e| panic!("{e}"));
    let ps = p.display().to_string();
    let (code, _, err) = run(&["policy", "check", &ps]);
    assert_eq!(code, 0);
    assert!(
        err.contains(&format!(
            "{ps}:6:11: warning: rule `p.yaml:1` allows 0.0.0.0/0"
        )),
        "{err}"
    );
    let (code, _, err) = run(&["policy", "check", "--strict", &ps]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{ps}:6:11: rule `p.yaml:1` allows 0.0.0.0/0")),
        "{err}"
    );
}

#[test]
fn explain_names_the_deciding_rule_and_the_others() {
    let finance = examples().join("finance.yaml").display().to_string();
    let (code, out, err) = run(&[
        "policy",
        "explain",
        "--policy",
        &finance,
        "--identity",
        "finance-agent",
        "--tool",
        "stripe",
        "--action",
        "create_payment",
        "--params",
        r#"{"amount": 7200, "currency": "USD", "customer": "c"}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rule no-refunds-or-payouts: does not cover stripe.create_payment"),
        "{out}"
    );
    assert!(out.contains("rule large-payments: applies"), "{out}");
    assert!(
        out.contains("verdict: approval_required (approval-required-by-rule)"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "policy",
        "explain",
        "--policy",
        &finance,
        "--identity",
        "finance-agent",
        "--destination",
        "10.40.0.9:22",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("allow rule ledger [allow 10.40.0.0/16 tcp/5432"),
        "{out}"
    );
    assert!(out.contains("covers the address but not port 22"), "{out}");
    assert!(out.contains("verdict: deny (default-deny)"), "{out}");
}

#[test]
fn diff_says_what_becomes_allowed_or_denied() {
    let dir = scratch("diff");
    let (old, new) = (dir.join("old.yaml"), dir.join("new.yaml"));
    std::fs::write(&old, "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443], protocol: tcp}\n    tools:\n      allow:\n        - {id: read, tool: crm, actions: [read]}\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&new, "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443], protocol: tcp}\n      deny:\n        - {cidr: 10.66.0.0/16}\n    tools:\n      allow:\n        - {id: read, tool: crm, actions: [read, write]}\n").unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = run(&[
        "policy",
        "diff",
        &old.display().to_string(),
        &new.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("identity `a`: 10.66.0.0/16 tcp port 443: allow -> deny"),
        "{out}"
    );
    assert!(
        out.contains(
            "identity `a`: tool rule `read` changed: allow crm.read -> allow crm.read,write"
        ),
        "{out}"
    );
}

#[test]
fn schema_is_json_that_rejects_unknown_keys() {
    let (code, out, _) = run(&["policy", "schema"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["title"], "Palisade policy");
    assert_eq!(v["additionalProperties"], false);
    assert!(v["properties"]["identities"].is_object());
}
