//! Agent calls authenticated by the socket peer: no token needed, a token
//! presented anyway must verify and name the caller, and the caller's
//! identity is read again on every call of a connection.

use palisade_tests::{
    DaemonProc, TestEnv, forge,
    probe::{RpcAs, rpc},
    root_or_skip,
    session::{Session, SessionOptions},
};
use serde_json::Value;

const PAYMENT: &str = r#"{"amount": 800, "currency": "USD", "customer": "c-17"}"#;

const POLICY: &str = r#"version: 1
label: peer-auth
identities:
  - id: payments
    egress:
      grantable:
        - {id: ledger-window, cidr: 127.120.0.9, ports: [9], protocol: tcp, max_ttl: 3s}
    tools:
      allow:
        - {id: payments, tool: stripe, actions: [create_payment], approval_if: params.amount > 1000}
  - id: support
    tools:
      allow:
        - {id: replies, tool: zendesk, actions: [reply]}
"#;

fn expect_ok(answer: &Value, what: &str) {
    assert_eq!(answer["ok"], true, "{what}: the call failed: {answer}");
}

fn expect_refused(answer: &Value, code: &str, what: &str) {
    assert_eq!(answer["ok"], false, "{what}: was accepted: {answer}");
    assert_eq!(answer["code"], code, "{what}: {answer}");
}

/// Wait until exactly `n` audit records match (the trail is written by a
/// thread of its own, a moment after the call returns).
fn wait_count(env: &TestEnv, n: usize, what: &str, pred: impl Fn(&Value) -> bool) {
    let seen = palisade_tests::wait_for(std::time::Duration::from_secs(5), || {
        let c = env.audit_events().iter().filter(|e| pred(e)).count();
        (c >= n).then_some(c)
    });
    assert_eq!(seen, Some(n), "{what}");
}

#[test]
fn agent_calls_need_no_token_and_a_presented_one_must_match() {
    if !root_or_skip("agent_calls_need_no_token_and_a_presented_one_must_match") {
        return;
    }
    let env = TestEnv::new("peer-token", POLICY);
    let _d = DaemonProc::start(&env);
    // The daemon refuses tokens issued in the second it started.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let payments = RpcAs::Identity("payments");

    // No token: the socket peer is the proof.
    let peer_only = rpc(
        &env,
        payments,
        &["decide", "none", "stripe", "create_payment", PAYMENT],
    );
    expect_ok(&peer_only, "Decide without a token");
    assert_eq!(peer_only["verdict"], "ALLOW", "{peer_only}");
    env.wait_audit("for the token-less decision", |e| {
        e["kind"] == "decision"
            && e["verdict"] == "allow"
            && e["identity"] == "payments"
            && e["call"]["decision_id"] == peer_only["decision_id"]
    });
    let granted = rpc(&env, payments, &["egress", "127.120.0.9", "9", "2", "none"]);
    assert_eq!(
        granted["granted"], true,
        "RequestEgress without a token: {granted}"
    );
    let asked = rpc(
        &env,
        payments,
        &[
            "decide",
            "none",
            "stripe",
            "create_payment",
            r#"{"amount": 5000}"#,
        ],
    );
    assert_eq!(asked["verdict"], "APPROVAL_REQUIRED", "{asked}");
    let id = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let polled = rpc(&env, payments, &["approval", &id, "none"]);
    assert_eq!(
        polled["state"], "PENDING",
        "GetApproval without a token: {polled}"
    );

    // A valid token of the caller's own identity is accepted on each call.
    for (what, args) in [
        (
            "Decide",
            vec!["decide", "fresh", "stripe", "create_payment", PAYMENT],
        ),
        (
            "RequestEgress",
            vec!["egress", "127.120.0.9", "9", "2", "fresh"],
        ),
        ("GetApproval", vec!["approval", &id, "fresh"]),
    ] {
        expect_ok(
            &rpc(&env, payments, &args),
            &format!("{what} with a valid token"),
        );
    }

    // Another identity's genuine token: refused on every call, recorded.
    for what in ["Decide", "RequestEgress", "GetApproval"] {
        let issued = rpc(&env, RpcAs::Identity("support"), &["issue"]);
        let token = issued["token"].as_str().unwrap_or_default();
        let args = match what {
            "Decide" => vec!["decide", token, "stripe", "create_payment", PAYMENT],
            "RequestEgress" => vec!["egress", "127.120.0.9", "9", "2", token],
            _ => vec!["approval", &id, token],
        };
        let answer = rpc(&env, payments, &args);
        expect_refused(
            &answer,
            "PermissionDenied",
            &format!("{what} with support's token"),
        );
    }
    wait_count(&env, 3, "each stolen-token call recorded", |e| {
        e["reason"] == "token-wrong-identity" && e["identity"] == "payments"
    });

    // A tampered token of the right identity: refused, and nothing happens.
    let genuine = rpc(&env, payments, &["issue"]);
    let tampered = forge::tamper_signature(genuine["token"].as_str().unwrap_or_default());
    expect_refused(
        &rpc(
            &env,
            payments,
            &["decide", &tampered, "stripe", "create_payment", PAYMENT],
        ),
        "Unauthenticated",
        "Decide with a tampered token",
    );
    expect_refused(
        &rpc(
            &env,
            payments,
            &["egress", "127.120.0.9", "9", "2", &tampered],
        ),
        "Unauthenticated",
        "RequestEgress with a tampered token",
    );
    expect_refused(
        &rpc(&env, payments, &["approval", &id, &tampered]),
        "Unauthenticated",
        "GetApproval with a tampered token",
    );
    wait_count(&env, 3, "each tampered-token call recorded", |e| {
        e["reason"] == "token-signature"
    });
    let grants = env
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "grant" && e["verdict"] == "granted")
        .count();
    assert_eq!(
        grants, 2,
        "only the two accepted RequestEgress calls granted"
    );

    // A process that is not enrolled gets nothing, token or not.
    expect_refused(
        &rpc(
            &env,
            RpcAs::Unenrolled,
            &["decide", "none", "stripe", "create_payment", PAYMENT],
        ),
        "Unauthenticated",
        "unenrolled Decide without a token",
    );
}

const MOVES: &str = r#"version: 1
label: peer-moves
identities:
  - id: payments
    selectors:
      - cgroup: {payments}
    tools:
      allow:
        - {id: payments, tool: stripe, actions: [create_payment]}
  - id: support
    selectors:
      - cgroup: {support}
    tools:
      allow:
        - {id: replies, tool: zendesk, actions: [reply]}
"#;

/// Move process `pid` into `cgroup`, as an operator (or a runtime) would.
fn move_to(pid: u32, cgroup: &std::path::Path) {
    std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("moving {pid} to {}: {e}", cgroup.display()));
}

/// The same call on the session's old connection and on a new one: the old
/// one must not remember who the process was when it connected.
fn both(s: &mut Session, cmd: &Value) -> (Value, Value) {
    let old = s.call(cmd);
    let mut fresh = cmd.clone();
    fresh["fresh"] = serde_json::json!(true);
    (old, s.call(&fresh))
}

fn same_answer(old: &Value, fresh: &Value, what: &str) {
    for k in ["ok", "code", "verdict", "reason", "rules"] {
        assert_eq!(
            old[k], fresh[k],
            "{what}: old connection {old}, new connection {fresh}"
        );
    }
}

#[test]
fn identity_is_read_again_on_every_call_of_a_connection() {
    if !root_or_skip("identity_is_read_again_on_every_call_of_a_connection") {
        return;
    }
    let env = TestEnv::new("peer-moves", "version: 1\n");
    let payments = env.make_cgroup("payments.service");
    let support = env.make_cgroup("support.service");
    let host = env.make_cgroup("host.scope");
    env.write_policy(
        &MOVES
            .replace("{payments}", &env.selector_path("payments.service"))
            .replace("{support}", &env.selector_path("support.service")),
    );
    let _d = DaemonProc::start(&env);
    let pay = serde_json::json!({"op": "decide", "tool": "stripe", "action": "create_payment", "params": {}});
    let list = serde_json::json!({"op": "list_approvals"});

    // A host process (root, not enrolled) connects: an operator, no agent.
    let mut s = Session::start(
        &env.socket,
        &SessionOptions {
            cgroup: Some(&host),
            ..SessionOptions::default()
        },
    );
    expect_ok(&s.call(&list), "an operator lists approvals");
    expect_refused(
        &s.call(&pay),
        "Unauthenticated",
        "Decide from a host process",
    );

    // Moved into an agent's cgroup with the connection open: from the next
    // call on it is that agent, and no longer an operator.
    move_to(s.caller_pid, &payments);
    let (old, fresh) = both(&mut s, &list);
    expect_refused(&old, "PermissionDenied", "an operator call after enrolment");
    same_answer(&old, &fresh, "listing approvals after enrolment");
    let (old, fresh) = both(&mut s, &pay);
    assert_eq!(old["verdict"], "ALLOW", "Decide after enrolment: {old}");
    same_answer(&old, &fresh, "Decide after enrolment");

    // Revoked with the connection open: refused on the next call.
    env.cli_ok(&["revoke", "payments", "--reason", "test"]);
    let (old, fresh) = both(&mut s, &pay);
    expect_refused(&old, "PermissionDenied", "Decide after revocation");
    same_answer(&old, &fresh, "Decide after revocation");
    env.cli_ok(&["restore", "payments"]);
    assert_eq!(s.call(&pay)["verdict"], "ALLOW", "after the restore");

    // Moved out of its identity's cgroup (to another identity's, then to
    // an unenrolled one): the old connection answers exactly as a new one
    // from the same process would, whatever the daemon makes of the move.
    for (to, what) in [
        (&support, "support's cgroup"),
        (&host, "an unenrolled cgroup"),
    ] {
        move_to(s.caller_pid, to);
        let (old, fresh) = both(&mut s, &pay);
        same_answer(&old, &fresh, &format!("Decide after a move to {what}"));
        let (old, fresh) = both(&mut s, &list);
        same_answer(
            &old,
            &fresh,
            &format!("an operator call after a move to {what}"),
        );
    }
}
