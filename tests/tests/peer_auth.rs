//! Agent calls authenticated by the socket peer: no token needed, and a
//! token presented anyway must verify and name the caller.

use palisade_tests::{
    DaemonProc, TestEnv, forge,
    probe::{RpcAs, rpc},
    root_or_skip,
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
    let stolen = env
        .audit_events()
        .into_iter()
        .filter(|e| e["reason"] == "token-wrong-identity" && e["identity"] == "payments")
        .count();
    assert_eq!(stolen, 3, "each stolen-token call is recorded");

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
    let signature_refusals = env
        .audit_events()
        .into_iter()
        .filter(|e| e["reason"] == "token-signature")
        .count();
    assert_eq!(
        signature_refusals, 3,
        "each tampered-token call is recorded"
    );
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
