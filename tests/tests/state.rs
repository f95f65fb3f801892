//! Decision state that outlives the daemon, against the real daemon killed
//! with SIGKILL: a budget's remainder, an approval and its single-use
//! override, used tokens and a just-in-time grant come back as they were; a
//! damaged state journal is kept aside and the daemon starts fail-closed;
//! one identity filling its quotas leaves the others alone.

use std::time::Duration;

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv,
    probe::{RpcAs, rpc},
    root_or_skip, wait_for,
};
use serde_json::Value;

const PAY_800: &str = r#"{"amount": 800, "currency": "USD", "customer": "c-1"}"#;
const PAY_4200: &str = r#"{"amount": 4200, "currency": "USD", "customer": "c-2"}"#;

fn policy(env: &TestEnv, ledger: u16) -> String {
    format!(
        r#"version: 1
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {{amount: number, currency: string, customer: string}}
identities:
  - id: payments
    selectors:
      - cgroup: {sel}
    egress:
      grantable:
        - {{id: ledger-window, cidr: 127.130.0.2, ports: [{ledger}], protocol: tcp, max_ttl: 1h}}
    tools:
      allow:
        - id: pay
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
    budgets:
      - {{id: daily-spend, tool: stripe, actions: [create_payment], limit: 3000, per: day, sum: params.amount, unit: USD}}
  - id: support
    tools:
      allow:
        - {{id: replies, tool: zendesk, actions: [reply]}}
      require_approval:
        - {{id: refunds, tool: zendesk, actions: [refund]}}
"#,
        sel = env.selector_path("payments.service"),
    )
}

fn start(name: &str, ledger: u16) -> (TestEnv, DaemonProc) {
    let env = TestEnv::new(name, "version: 1\n");
    env.make_cgroup("payments.service");
    env.write_policy(&policy(&env, ledger));
    let d = DaemonProc::start(&env);
    (env, d)
}

fn pay(env: &TestEnv, params: &str) -> Value {
    rpc(
        env,
        RpcAs::Identity("payments"),
        &["decide", "fresh", "stripe", "create_payment", params],
    )
}

fn expect_verdict(answer: &Value, verdict: &str, what: &str) {
    assert_eq!(answer["ok"], true, "{what}: the call failed: {answer}");
    assert_eq!(answer["verdict"], verdict, "{what}: {answer}");
}

fn expect_refused(answer: &Value, code: &str, what: &str) {
    assert_eq!(answer["ok"], false, "{what}: was accepted: {answer}");
    assert_eq!(answer["code"], code, "{what}: {answer}");
}

fn remaining(answer: &Value) -> f64 {
    answer["obligations"][0]["remaining"]
        .as_f64()
        .unwrap_or_else(|| panic!("no budget remainder in {answer}"))
}

fn approve(env: &TestEnv, params: &str) -> (String, String) {
    let asked = pay(env, params);
    expect_verdict(&asked, "APPROVAL_REQUIRED", "a large payment");
    let id = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    env.cli_ok(&["approve", &id, "--reason", "checked"]);
    let approved = rpc(env, RpcAs::Identity("payments"), &["approval", &id]);
    let token = approved["override_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!token.is_empty(), "{approved}");
    (id, token)
}

fn use_override(env: &TestEnv, token: &str, params: &str) -> Value {
    rpc(
        env,
        RpcAs::Identity("payments"),
        &["override", token, "stripe", "create_payment", params],
    )
}

fn issue(env: &TestEnv) -> String {
    let issued = rpc(env, RpcAs::Identity("payments"), &["issue"]);
    issued["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"))
        .to_string()
}

fn decide_with(env: &TestEnv, token: &str) -> Value {
    rpc(
        env,
        RpcAs::Identity("payments"),
        &["decide", token, "stripe", "create_payment", PAY_800],
    )
}

/// Files next to the journal that a damaged journal was moved to.
fn kept_aside(env: &TestEnv) -> Vec<std::path::PathBuf> {
    let name = env
        .state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_dir(&env.dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with(&format!("{name}.damaged-"))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn budget_approval_tokens_and_grants_survive_kill_9() {
    if !root_or_skip("budget_approval_tokens_and_grants_survive_kill_9") {
        return;
    }
    let ledger = TcpServer::start("127.130.0.2");
    let (env, mut d) = start("state-kill9", ledger.addr.port());
    let agent = env.make_cgroup("payments.service");
    let ledger_port = ledger.port();
    let connect_ledger = || Probe::in_cgroup(&agent, &["tcp", "127.130.0.2", &ledger_port]);

    // Spend part of the budget; approve a call; use one token, keep another;
    // grant the ledger for 6 s.
    let spent = pay(&env, PAY_800);
    expect_verdict(&spent, "ALLOW", "800 of 3000");
    assert!((remaining(&spent) - 2200.0).abs() < 1.0, "{spent}");
    let (approval, override_token) = approve(&env, PAY_4200);
    let used = issue(&env);
    let unused = issue(&env);
    expect_verdict(&decide_with(&env, &used), "ALLOW", "a token, once");
    let granted = rpc(
        &env,
        RpcAs::Cgroup(&agent),
        &["egress", "127.130.0.2", &ledger_port, "6"],
    );
    assert_eq!(granted["granted"], true, "{granted}");
    connect_ledger().expect_ok("inside the grant");

    // No shutdown at all.
    d.kill9();
    let _d = DaemonProc::start(&env);

    // The budget goes on from 1400 (2200 - 800 of the token use above),
    // not from a fresh 3000.
    let after = pay(&env, PAY_800);
    expect_verdict(&after, "ALLOW", "800 more after the restart");
    assert!(
        (remaining(&after) - 600.0).abs() < 1.0,
        "the remainder is what it was before the kill, less this call: {after}"
    );
    expect_verdict(
        &pay(&env, PAY_800),
        "DENY",
        "800 more would exceed 3000 spent across the restart",
    );

    // The approval: still approved, its override works exactly once.
    let listed = rpc(&env, RpcAs::Identity("payments"), &["approval", &approval]);
    assert_eq!(listed["state"], "APPROVED", "{listed}");
    let first = use_override(&env, &override_token, PAY_4200);
    expect_verdict(&first, "ALLOW", "the approved call after the restart");
    assert_eq!(first["reason"], "approved-override", "{first}");
    expect_refused(
        &use_override(&env, &override_token, PAY_4200),
        "Unauthenticated",
        "the same override twice",
    );

    // Tokens: the one used before the kill is refused as a replay; the one
    // issued but never used still works (the record was restored, not
    // everything from before refused).
    expect_refused(
        &decide_with(&env, &used),
        "Unauthenticated",
        "a token used before the restart",
    );
    env.wait_audit("for the replayed token", |e| {
        e["reason"] == "token-replayed"
    });
    let fresh_ok = decide_with(&env, &unused);
    assert_eq!(
        fresh_ok["ok"], true,
        "an unused token from before: {fresh_ok}"
    );

    // The grant: still open in the kernel, and ended under its own rule id
    // by the restarted daemon.
    connect_ledger().expect_ok("the grant after the restart");
    env.wait_audit("for the restored state", |e| {
        e["kind"] == "daemon" && e["verdict"] == "state-restored"
    });
    wait_for(Duration::from_secs(10), || {
        env.audit_events().into_iter().find(|e| {
            e["kind"] == "grant" && e["verdict"] == "expired" && e["rule"] == "ledger-window"
        })
    })
    .unwrap_or_else(|| panic!("the restored grant did not end as `ledger-window`"));
    connect_ledger().expect_eperm("after the grant's TTL");

    // Killed again right after the override was used: it stays used.
    let mut d = _d;
    d.kill9();
    let _d = DaemonProc::start(&env);
    expect_refused(
        &use_override(&env, &override_token, PAY_4200),
        "Unauthenticated",
        "the used override after another kill",
    );
}

/// Prepare state worth protecting, stop the daemon, damage the journal with
/// `damage`, start again: the daemon must start, say so, keep the file, and
/// refuse what it can no longer vouch for.
fn damaged_journal_starts_fail_closed(name: &str, damage: impl Fn(&mut Vec<u8>)) {
    let (env, mut d) = start(name, 9);
    expect_verdict(&pay(&env, PAY_800), "ALLOW", "800 of 3000");
    let (approval, override_token) = approve(&env, PAY_4200);
    let pending = pay(
        &env,
        r#"{"amount": 4300, "currency": "USD", "customer": "c-3"}"#,
    );
    expect_verdict(&pending, "APPROVAL_REQUIRED", "a second large payment");
    let pending_id = pending["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let unused = issue(&env);
    d.kill9();

    let mut bytes = std::fs::read(&env.state).unwrap_or_else(|e| panic!("{e}"));
    damage(&mut bytes);
    std::fs::write(&env.state, &bytes).unwrap_or_else(|e| panic!("{e}"));

    let _d = DaemonProc::start(&env);
    // Reported: in the audit trail, in health, and the file kept as it was.
    let ev = env.wait_audit("for the damage report", |e| {
        e["kind"] == "daemon" && e["verdict"] == "state-damaged"
    });
    let aside = kept_aside(&env);
    assert_eq!(aside.len(), 1, "{name}: one damaged file kept: {aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap_or_default(),
        bytes,
        "{name}: kept exactly as found"
    );
    let detail = ev["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&aside[0].display().to_string()),
        "{name}: the report names the kept file: {ev}"
    );
    let health = env.status()["health"]["warnings"].to_string();
    assert!(
        health.contains("was damaged"),
        "{name}: status warnings: {health}"
    );
    // The approved approval is dropped with a record of it; the pending one
    // is gone too (dropped, or never read back when its record was torn).
    env.wait_audit("for the dropped approval", |e| {
        e["kind"] == "approval" && e["verdict"] == "dropped" && e["call"]["approval_id"] == approval
    });
    for id in [&approval, &pending_id] {
        let gone = rpc(&env, RpcAs::Identity("payments"), &["approval", id]);
        expect_refused(&gone, "NotFound", "an approval from before the damage");
    }

    // Fail-closed: the budget counts as spent, the approval is gone, tokens
    // from before are refused.
    let after = pay(&env, PAY_800);
    expect_verdict(&after, "DENY", "a budget whose use could not be restored");
    assert_eq!(after["reason"], "budget-exceeded", "{after}");
    let used = use_override(&env, &override_token, PAY_4200);
    assert_eq!(
        used["ok"], false,
        "{name}: a dropped approval's override: {used}"
    );
    let old = decide_with(&env, &unused);
    expect_refused(&old, "Unauthenticated", "a token issued before the damage");
    env.wait_audit("for the pre-restart token", |e| {
        e["reason"] == "token-before-restart"
    });
    // What needs no memory of the past still works.
    expect_verdict(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", "fresh", "zendesk", "reply", "{}"],
        ),
        "ALLOW",
        "another call with a fresh token",
    );
    assert!(env.state.exists(), "a fresh journal is started");
}

#[test]
fn a_corrupted_state_journal_is_kept_aside_and_the_start_fails_closed() {
    if !root_or_skip("a_corrupted_state_journal_is_kept_aside_and_the_start_fails_closed") {
        return;
    }
    damaged_journal_starts_fail_closed("state-corrupt", |b| {
        // One flipped byte in the middle of the file.
        let at = b.len() / 2;
        b[at] ^= 0x01;
    });
}

#[test]
fn a_truncated_state_journal_is_kept_aside_and_the_start_fails_closed() {
    if !root_or_skip("a_truncated_state_journal_is_kept_aside_and_the_start_fails_closed") {
        return;
    }
    damaged_journal_starts_fail_closed("state-truncated", |b| {
        // Cut inside the last record, as a torn write would.
        let keep = b.len() - 12;
        b.truncate(keep);
    });
}

#[test]
fn one_identity_filling_its_quotas_leaves_the_others_alone() {
    if !root_or_skip("one_identity_filling_its_quotas_leaves_the_others_alone") {
        return;
    }
    let env = TestEnv::new("state-quota", "version: 1\n");
    env.make_cgroup("payments.service");
    env.write_policy(&policy(&env, 9));
    env.write_config_sections(
        "",
        "  replay_per_identity: 5\n",
        "approvals:\n  max_pending_per_identity: 3\n",
    );
    let _d = DaemonProc::start(&env);

    // Pending approvals: payments fills its three places...
    for n in 0..3 {
        let asked = pay(
            &env,
            &format!(
                r#"{{"amount": {}, "currency": "USD", "customer": "c-9"}}"#,
                2000 + n
            ),
        );
        expect_verdict(&asked, "APPROVAL_REQUIRED", "within the quota");
    }
    let over = pay(
        &env,
        r#"{"amount": 2999, "currency": "USD", "customer": "c-9"}"#,
    );
    expect_verdict(&over, "DENY", "a fourth pending approval");
    assert_eq!(over["reason"], "approval-quota", "{over}");
    // ...and support can still ask for its own.
    let theirs = rpc(
        &env,
        RpcAs::Identity("support"),
        &["decide", "fresh", "zendesk", "refund", "{}"],
    );
    expect_verdict(&theirs, "APPROVAL_REQUIRED", "another identity's approval");
    assert!(
        !theirs["approval_id"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    // Used token ids: payments has used 4 of its 5 (the decisions above);
    // one more fits, the next is refused.
    expect_verdict(&pay(&env, PAY_800), "ALLOW", "the fifth token");
    let full = pay(&env, PAY_800);
    expect_refused(&full, "ResourceExhausted", "a sixth live token");
    env.wait_audit("for the full replay quota", |e| {
        e["reason"] == "token-cache-full" && e["identity"] == "payments"
    });
    // Support's tokens are unaffected.
    for _ in 0..3 {
        expect_verdict(
            &rpc(
                &env,
                RpcAs::Identity("support"),
                &["decide", "fresh", "zendesk", "reply", "{}"],
            ),
            "ALLOW",
            "another identity's tokens",
        );
    }
}
