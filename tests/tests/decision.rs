//! The decision API over the real Unix socket of the real daemon: tool-call
//! verdicts, approvals and their override tokens, just-in-time egress
//! grants in the kernel, the kill switch, and forged or misused tokens.

use std::{path::Path, process::Command, time::Duration};

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv, forge, palisade_bin,
    probe::{RpcAs, rpc, rpc_at},
    root_or_skip,
};
use serde_json::{Value, json};

const PAYMENT: &str = r#"{"amount": 800, "currency": "USD", "customer": "c-17"}"#;

/// Ports of the loopback servers a policy names.
struct Ports {
    open: u16,
    ledger: u16,
    partner: u16,
}

fn policy(env: &TestEnv, p: &Ports) -> String {
    format!(
        r#"version: 1
label: decisions
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {{amount: number, currency: string, customer: string}}
identities:
  - id: payments
    selectors:
      - cgroup: {sel}
    egress:
      allow:
        - {{id: always, cidr: 127.0.0.1, ports: [{open}], protocol: tcp}}
      grantable:
        - {{id: ledger-window, cidr: 127.0.0.1, ports: [{ledger}], protocol: tcp, max_ttl: 3s}}
      require_approval:
        - {{id: partner, cidr: 127.0.0.1, ports: [{partner}], protocol: tcp, max_ttl: 1h}}
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
      deny:
        - {{id: no-refunds, tool: stripe, actions: [refund]}}
    budgets:
      - {{id: daily-spend, tool: stripe, actions: [create_payment], limit: 3000, per: day, sum: params.amount, unit: USD}}
  - id: support
    tools:
      allow:
        - {{id: replies, tool: zendesk, actions: [reply]}}
"#,
        sel = env.selector_path("payments.service"),
        open = p.open,
        ledger = p.ledger,
        partner = p.partner,
    )
}

/// A daemon with the test policy; `p` are unused ports unless a test
/// starts servers on them.
fn start(name: &str, p: &Ports, extra_config: &str) -> (TestEnv, DaemonProc) {
    let env = TestEnv::new(name, "version: 1\n");
    env.make_cgroup("payments.service");
    env.write_policy(&policy(&env, p));
    env.write_config(extra_config);
    let d = DaemonProc::start(&env);
    (env, d)
}

fn no_ports() -> Ports {
    Ports {
        open: 1,
        ledger: 2,
        partner: 3,
    }
}

fn decide(env: &TestEnv, who: &str, tool: &str, action: &str, params: &str) -> Value {
    rpc(
        env,
        RpcAs::Identity(who),
        &["decide", "fresh", tool, action, params],
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

fn rules(answer: &Value) -> Vec<String> {
    answer["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tool_calls_are_judged_by_rule_parameters_and_budget() {
    if !root_or_skip("tool_calls_are_judged_by_rule_parameters_and_budget") {
        return;
    }
    let (env, _d) = start("decide", &no_ports(), "");

    let small = decide(&env, "payments", "stripe", "create_payment", PAYMENT);
    expect_verdict(&small, "ALLOW", "a small USD payment");
    assert_eq!(rules(&small), ["payments"], "{small}");
    assert!(!small["decision_id"].as_str().unwrap_or_default().is_empty());
    assert!(
        !small["policy_version"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        small["obligations"],
        json!([{"budget": "daily-spend", "remaining": 2200.0, "limit": 3000.0}]),
        "the budget's remainder is reported"
    );

    let euro = decide(
        &env,
        "payments",
        "stripe",
        "create_payment",
        r#"{"amount": 800, "currency": "EUR", "customer": "c-17"}"#,
    );
    expect_verdict(&euro, "DENY", "a condition that does not hold");

    let refund = decide(&env, "payments", "stripe", "refund", r#"{}"#);
    expect_verdict(&refund, "DENY", "a deny rule");
    assert_eq!(rules(&refund), ["no-refunds"], "{refund}");

    let big = decide(
        &env,
        "payments",
        "stripe",
        "create_payment",
        r#"{"amount": 1500, "currency": "USD", "customer": "c-17"}"#,
    );
    expect_verdict(&big, "APPROVAL_REQUIRED", "approval_if");
    assert!(
        !big["approval_id"].as_str().unwrap_or_default().is_empty(),
        "{big}"
    );

    // Wrong types and unknown parameters are denied, never guessed at.
    let typed = decide(
        &env,
        "payments",
        "stripe",
        "create_payment",
        r#"{"amount": "800", "currency": "USD", "customer": "c-17"}"#,
    );
    expect_verdict(&typed, "DENY", "a string where the schema says number");
    let unknown = decide(
        &env,
        "payments",
        "stripe",
        "create_payment",
        r#"{"amount": 10, "currency": "USD", "customer": "c-17", "memo": "x"}"#,
    );
    expect_verdict(&unknown, "DENY", "a parameter the schema does not know");

    // Another identity's rules are its own.
    expect_verdict(
        &decide(&env, "support", "stripe", "create_payment", PAYMENT),
        "DENY",
        "support may not pay",
    );
    expect_verdict(
        &decide(&env, "support", "zendesk", "reply", "{}"),
        "ALLOW",
        "support may reply",
    );

    // The budget: 800 spent; 2000 more fits (approval aside), 900 does not.
    expect_verdict(
        &decide(
            &env,
            "payments",
            "stripe",
            "create_payment",
            r#"{"amount": 1000, "currency": "USD", "customer": "c-17"}"#,
        ),
        "ALLOW",
        "1000 more (1800 of 3000)",
    );
    let over = decide(
        &env,
        "payments",
        "stripe",
        "create_payment",
        r#"{"amount": 1000, "currency": "USD", "customer": "c-17"}"#,
    );
    expect_verdict(&over, "ALLOW", "1000 more (2800 of 3000)");
    let exceeded = decide(&env, "payments", "stripe", "create_payment", PAYMENT);
    expect_verdict(&exceeded, "DENY", "800 more would exceed 3000");
    assert_eq!(exceeded["reason"], "budget-exceeded", "{exceeded}");

    // A negative amount does not refill the budget: it is denied, and the
    // next payment is still over the limit.
    let refill = decide(
        &env,
        "payments",
        "stripe",
        "create_payment",
        r#"{"amount": -100000, "currency": "USD", "customer": "c-17"}"#,
    );
    expect_verdict(&refill, "DENY", "a negative charge");
    assert_eq!(refill["reason"], "evaluation-error", "{refill}");
    assert!(
        refill["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be negative")),
        "{refill}"
    );
    let still = decide(&env, "payments", "stripe", "create_payment", PAYMENT);
    expect_verdict(&still, "DENY", "800 more still exceeds 3000");
    assert_eq!(still["reason"], "budget-exceeded", "{still}");

    // Every verdict is in the audit trail with the call.
    let ev = env.wait_audit("for the refund deny", |e| {
        e["kind"] == "decision" && e["verdict"] == "deny" && e["call"]["action"] == "refund"
    });
    assert_eq!(ev["identity"], "payments");
    assert_eq!(ev["rule"], "no-refunds", "{ev}");
    env.wait_audit("for an allow", |e| {
        e["kind"] == "decision" && e["verdict"] == "allow" && e["call"]["tool"] == "zendesk"
    });

    // A tool no rule covers is denied, and the coverage KPI shows the gap:
    // three tools asked about (stripe, zendesk, github), two covered.
    expect_verdict(
        &decide(&env, "support", "github", "merge", "{}"),
        "DENY",
        "no rule covers github",
    );
    let m = palisade_tests::http::Scrape::fetch(&env.metrics_address());
    m.expect("palisade_kpi_tools", 3.0);
    m.expect("palisade_kpi_tools_covered", 2.0);
    m.expect("palisade_kpi_identities", 2.0);
    m.expect("palisade_kpi_identities_elevated", 0.0);
}

#[test]
fn an_approved_call_is_allowed_once_with_its_override_token() {
    if !root_or_skip("an_approved_call_is_allowed_once_with_its_override_token") {
        return;
    }
    let (env, _d) = start("approvals", &no_ports(), "");
    let params = r#"{"amount": 4200, "currency": "USD", "customer": "c-9"}"#;
    let asked = decide(&env, "payments", "stripe", "create_payment", params);
    expect_verdict(&asked, "APPROVAL_REQUIRED", "4200 USD");
    let id = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The agent can see its approval but can never approve it itself.
    let pending = rpc(&env, RpcAs::Identity("payments"), &["approval", &id]);
    assert_eq!(pending["state"], "PENDING", "{pending}");
    expect_refused(
        &rpc(
            &env,
            RpcAs::Identity("payments"),
            &["resolve", &id, "approve"],
        ),
        "PermissionDenied",
        "an agent approving its own call",
    );
    let listed = env.cli_ok(&["approvals", "--json"]);
    assert!(
        listed.contains(&id),
        "`palisade approvals` lists it: {listed}"
    );

    env.cli_ok(&["approve", &id, "--reason", "invoice 2291 checked"]);
    let approved = rpc(&env, RpcAs::Identity("payments"), &["approval", &id]);
    assert_eq!(approved["state"], "APPROVED", "{approved}");
    let token = approved["override_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!token.is_empty(), "{approved}");

    // The override is bound to that call: other parameters are refused...
    let other = rpc(
        &env,
        RpcAs::Identity("payments"),
        &[
            "override",
            &token,
            "stripe",
            "create_payment",
            r#"{"amount": 4900, "currency": "USD", "customer": "c-9"}"#,
        ],
    );
    expect_refused(
        &other,
        "FailedPrecondition",
        "an override for other parameters",
    );
    assert!(
        other["message"]
            .as_str()
            .unwrap_or_default()
            .contains("parameters"),
        "{other}"
    );
    // ...another identity cannot use it...
    expect_refused(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["override", &token, "stripe", "create_payment", params],
        ),
        "PermissionDenied",
        "another identity's override",
    );
    // ...and the call itself is allowed exactly once.
    let used = rpc(
        &env,
        RpcAs::Identity("payments"),
        &["override", &token, "stripe", "create_payment", params],
    );
    expect_verdict(&used, "ALLOW", "the approved call");
    assert_eq!(used["reason"], "approved-override", "{used}");
    expect_refused(
        &rpc(
            &env,
            RpcAs::Identity("payments"),
            &["override", &token, "stripe", "create_payment", params],
        ),
        "Unauthenticated",
        "the same override twice",
    );
    env.wait_audit("for the approval", |e| {
        e["kind"] == "approval" && e["verdict"] == "approved" && e["call"]["approval_id"] == id
    });

    // A rejected approval yields nothing to use.
    let again = decide(&env, "payments", "stripe", "create_payment", params);
    let rejected_id = again["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(rejected_id, id, "a used approval is not handed out again");
    env.cli_ok(&["reject", &rejected_id, "--reason", "not today"]);
    let rejected = rpc(
        &env,
        RpcAs::Identity("payments"),
        &["approval", &rejected_id],
    );
    assert_eq!(rejected["state"], "REJECTED", "{rejected}");
    assert_eq!(rejected["override_token"], "", "{rejected}");
    env.wait_audit("for the rejection", |e| {
        e["kind"] == "approval" && e["verdict"] == "rejected"
    });
}

#[test]
fn approvals_asked_under_an_earlier_policy_are_withdrawn_when_it_changes() {
    if !root_or_skip("approvals_asked_under_an_earlier_policy_are_withdrawn_when_it_changes") {
        return;
    }
    let (env, _d) = start("approvals-stale", &no_ports(), "");
    let params = r#"{"amount": 4200, "currency": "USD", "customer": "c-9"}"#;
    let other = r#"{"amount": 4300, "currency": "USD", "customer": "c-9"}"#;
    let ask = |params: &str| {
        let a = decide(&env, "payments", "stripe", "create_payment", params);
        expect_verdict(&a, "APPROVAL_REQUIRED", params);
        a["approval_id"].as_str().unwrap_or_default().to_string()
    };
    let state =
        |id: &str| rpc(&env, RpcAs::Identity("payments"), &["approval", id])["state"].clone();
    let pending = ask(params);
    let approved = ask(other);
    assert_ne!(pending, approved);
    env.cli_ok(&["approve", &approved, "--reason", "checked"]);

    // A reload of the same policy changes nothing.
    env.cli_ok(&["reload"]);
    assert_eq!(
        state(&pending),
        "PENDING",
        "after reloading the same policy"
    );
    assert_eq!(
        state(&approved),
        "APPROVED",
        "after reloading the same policy"
    );

    // Another policy: neither can be spent any more (an override names the
    // policy it was asked under), so both end now, recorded.
    let policy = std::fs::read_to_string(env.dir.join("policy.yaml")).unwrap_or_default();
    env.write_policy(&policy.replace("label: decisions", "label: decisions-v2"));
    env.cli_ok(&["reload"]);
    assert_eq!(
        state(&pending),
        "EXPIRED",
        "a pending approval of the earlier policy"
    );
    assert_eq!(
        state(&approved),
        "EXPIRED",
        "an unused approval of the earlier policy"
    );
    let listed = env.cli_ok(&["approvals", "--json"]);
    assert!(!listed.contains(&pending), "still listed: {listed}");
    let refused = env.cli(&["approve", &pending, "--reason", "late"]);
    assert!(
        !refused.status.success(),
        "an operator approved a withdrawn approval"
    );
    for id in [&pending, &approved] {
        env.wait_audit("for the withdrawal", |e| {
            e["kind"] == "approval"
                && e["verdict"] == "withdrawn"
                && e["reason"] == "policy-changed"
                && e["call"]["approval_id"] == id.as_str()
        });
    }
    // Control: the same call asked under the new policy gets a new
    // approval, which works.
    let fresh = ask(params);
    assert!(
        fresh != pending && fresh != approved,
        "an old approval came back"
    );
    env.cli_ok(&["approve", &fresh, "--reason", "checked again"]);
    let token = rpc(&env, RpcAs::Identity("payments"), &["approval", &fresh])["override_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let used = rpc(
        &env,
        RpcAs::Identity("payments"),
        &["override", &token, "stripe", "create_payment", params],
    );
    expect_verdict(&used, "ALLOW", "the call approved under the new policy");
}

#[test]
fn a_just_in_time_grant_opens_the_kernel_path_and_closes_at_expiry() {
    if !root_or_skip("a_just_in_time_grant_opens_the_kernel_path_and_closes_at_expiry") {
        return;
    }
    let ledger = TcpServer::start("127.0.0.1");
    let partner = TcpServer::start("127.0.0.1");
    let ports = Ports {
        open: 1,
        ledger: ledger.addr.port(),
        partner: partner.addr.port(),
    };
    let (env, d) = start("grants", &ports, "");
    let agent = env.make_cgroup("payments.service");
    let as_agent = RpcAs::Cgroup(&agent);
    let ledger_port = ledger.port();
    let connect_ledger = || Probe::in_cgroup(&agent, &["tcp", "127.0.0.1", &ledger_port]);
    connect_ledger().expect_eperm("before any grant");

    // Longer than the rule allows: refused, nothing opened.
    expect_refused(
        &rpc(&env, as_agent, &["egress", "127.0.0.1", &ledger_port, "60"]),
        "InvalidArgument",
        "a TTL above max_ttl",
    );
    // Not grantable at all: refused and recorded.
    expect_refused(
        &rpc(&env, as_agent, &["egress", "127.0.0.1", "9", "2"]),
        "PermissionDenied",
        "a destination no rule makes grantable",
    );
    env.wait_audit("for the refused grant", |e| {
        e["kind"] == "grant" && e["verdict"] == "deny"
    });

    let granted = rpc(&env, as_agent, &["egress", "127.0.0.1", &ledger_port, "3"]);
    assert_eq!(granted["granted"], true, "{granted}");
    assert_eq!(granted["rule"], "ledger-window", "{granted}");
    connect_ledger().expect_ok("inside the grant");
    env.wait_audit("for the grant", |e| {
        e["kind"] == "grant" && e["verdict"] == "granted" && e["rule"] == "ledger-window"
    });

    // The kernel ends the grant by itself: with the daemon frozen, the
    // path still closes on time.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap_or_else(|e| panic!("SIGSTOP: {e}"));
    std::thread::sleep(Duration::from_millis(3500));
    let after = connect_ledger();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap_or_else(|e| panic!("SIGCONT: {e}"));
    after.expect_eperm("after the grant expired, daemon frozen");
    env.wait_audit("for the expiry", |e| {
        e["kind"] == "grant" && e["verdict"] == "expired" && e["rule"] == "ledger-window"
    });

    // A require_approval destination opens only once an operator approves.
    let partner_port = partner.port();
    let asked = rpc(
        &env,
        as_agent,
        &["egress", "127.0.0.1", &partner_port, "600"],
    );
    assert_eq!(asked["granted"], false, "{asked}");
    let id = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Probe::in_cgroup(&agent, &["tcp", "127.0.0.1", &partner_port])
        .expect_eperm("while the approval is pending");
    env.cli_ok(&["approve", &id, "--reason", "partner sync"]);
    Probe::in_cgroup(&agent, &["tcp", "127.0.0.1", &partner_port]).expect_ok("after approval");
    env.wait_audit("for the approved grant", |e| {
        e["kind"] == "grant" && e["verdict"] == "granted" && e["reason"] == "approved"
    });
}

#[test]
fn an_egress_approval_asked_under_an_earlier_policy_opens_nothing() {
    if !root_or_skip("an_egress_approval_asked_under_an_earlier_policy_opens_nothing") {
        return;
    }
    let partner = TcpServer::start("127.0.0.1");
    let ports = Ports {
        open: 1,
        ledger: 2,
        partner: partner.addr.port(),
    };
    let (env, _d) = start("egress-stale", &ports, "");
    let agent = env.make_cgroup("payments.service");
    let as_agent = RpcAs::Cgroup(&agent);
    let partner_port = partner.port();
    let connect = || Probe::in_cgroup(&agent, &["tcp", "127.0.0.1", &partner_port]);
    let ask = || {
        let asked = rpc(
            &env,
            as_agent,
            &["egress", "127.0.0.1", &partner_port, "600"],
        );
        assert_eq!(asked["granted"], false, "{asked}");
        asked["approval_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let id = ask();
    // The security team takes the partner off the list of destinations an
    // operator may open.
    let with_rule = std::fs::read_to_string(env.dir.join("policy.yaml")).unwrap_or_default();
    let without: String = with_rule
        .lines()
        .filter(|l| !l.contains("id: partner") && !l.contains("require_approval:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, with_rule);
    env.write_policy(&without);
    env.cli_ok(&["reload"]);
    let state = rpc(&env, as_agent, &["approval", &id]);
    assert_eq!(state["state"], "EXPIRED", "{state}");
    let approved = env.cli(&["approve", &id, "--reason", "looked fine yesterday"]);
    assert!(
        !approved.status.success(),
        "an operator opened a destination the policy no longer lists"
    );
    connect().expect_eperm("after the refused approval");
    assert_eq!(
        partner.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the partner was reached"
    );
    env.wait_audit("for the withdrawal", |e| {
        e["kind"] == "approval"
            && e["verdict"] == "withdrawn"
            && e["call"]["approval_id"] == id.as_str()
    });
    // Control: with the rule back, a new request opens once approved.
    env.write_policy(&with_rule);
    env.cli_ok(&["reload"]);
    let again = ask();
    assert_ne!(again, id);
    env.cli_ok(&["approve", &again, "--reason", "partner sync"]);
    connect().expect_ok("after approval under the active policy");
    assert!(partner.wait_accepted(1) >= 1, "the control never arrived");
}

#[test]
fn revoking_an_identity_closes_kernel_and_api_at_once() {
    if !root_or_skip("revoking_an_identity_closes_kernel_and_api_at_once") {
        return;
    }
    let open = TcpServer::start("127.0.0.1");
    let ledger = TcpServer::start("127.0.0.1");
    let ports = Ports {
        open: open.addr.port(),
        ledger: ledger.addr.port(),
        partner: 3,
    };
    let (env, _d) = start("revoke", &ports, "");
    let agent = env.make_cgroup("payments.service");
    let as_agent = RpcAs::Cgroup(&agent);
    let connect_open = || Probe::in_cgroup(&agent, &["tcp", "127.0.0.1", &open.port()]);
    connect_open().expect_ok("before the revocation");
    let held = rpc(&env, as_agent, &["issue"]);
    let held = held["token"].as_str().unwrap_or_default().to_string();
    assert!(!held.is_empty());
    let granted = rpc(
        &env,
        as_agent,
        &["egress", "127.0.0.1", &ledger.port(), "3"],
    );
    assert_eq!(granted["granted"], true, "{granted}");

    env.cli_ok(&["revoke", "payments", "--reason", "suspicious payouts"]);
    connect_open().expect_eperm("kernel, revoked");
    expect_refused(
        &rpc(
            &env,
            as_agent,
            &["decide", &held, "stripe", "create_payment", PAYMENT],
        ),
        "PermissionDenied",
        "a token held from before, while revoked",
    );
    expect_refused(
        &rpc(&env, as_agent, &["issue"]),
        "PermissionDenied",
        "a new token, while revoked",
    );
    env.wait_audit("for the kill switch", |e| {
        e["kind"] == "kill_switch" && e["verdict"] == "on" && e["identity"] == "payments"
    });
    env.wait_audit("for the withdrawn grant", |e| {
        e["kind"] == "grant" && e["verdict"] == "withdrawn" && e["reason"] == "revoked"
    });

    env.cli_ok(&["restore", "payments"]);
    connect_open().expect_ok("kernel, restored");
    Probe::in_cgroup(&agent, &["tcp", "127.0.0.1", &ledger.port()])
        .expect_eperm("a grant from before the revocation stays withdrawn");
    // Tokens issued before the revocation stay dead; new ones work.
    let stale = rpc(
        &env,
        as_agent,
        &["decide", &held, "stripe", "create_payment", PAYMENT],
    );
    expect_refused(
        &stale,
        "Unauthenticated",
        "a token from before the revocation",
    );
    assert!(
        stale["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{stale}"
    );
    expect_verdict(
        &rpc(
            &env,
            as_agent,
            &["decide", "fresh", "stripe", "create_payment", PAYMENT],
        ),
        "ALLOW",
        "a fresh token after the restore",
    );
}

/// One attack: the token presented, and the status and audit reason expected.
struct Attack {
    name: &'static str,
    token: String,
    code: &'static str,
    reason: &'static str,
}

#[test]
fn forged_stale_and_misused_tokens_are_refused_and_recorded() {
    if !root_or_skip("forged_stale_and_misused_tokens_are_refused_and_recorded") {
        return;
    }
    let (env, mut daemon) = start("attacks", &no_ports(), "");
    // Claims are in whole seconds and the daemon refuses tokens issued
    // before its start cutoff: forge only after it.
    forge::wait_past_start_cutoff();
    let keys = env.dir.join("keys.yaml");
    let now = |c: &mut Value, k: &str, delta: i64| {
        let base = c["iat"].as_i64().unwrap_or_default();
        c[k] = json!(base + delta);
    };
    let genuine = forge::claims("payments");
    let mut expired = genuine.clone();
    now(&mut expired, "iat", -600);
    now(&mut expired, "nbf", -600);
    now(&mut expired, "exp", -60);
    let mut early = genuine.clone();
    now(&mut early, "nbf", 120);
    let mut wrong_aud = genuine.clone();
    wrong_aud["aud"] = json!("billing-service");
    let mut wrong_iss = genuine.clone();
    wrong_iss["iss"] = json!("someone-else");
    let mut no_exp = genuine.clone();
    no_exp.as_object_mut().map(|o| o.remove("exp"));
    let mut string_exp = genuine.clone();
    string_exp["exp"] = json!(format!("{}", u64::MAX));

    let well_signed = forge::sign(&keys, &genuine, "at+jwt");
    let attacks = [
        Attack {
            name: "tampered signature",
            token: forge::tamper_signature(&well_signed),
            code: "Unauthenticated",
            reason: "token-signature",
        },
        Attack {
            name: "alg none",
            token: forge::alg_none(&genuine),
            code: "Unauthenticated",
            reason: "token-algorithm",
        },
        Attack {
            name: "HS256 keyed with the public key",
            token: forge::hs256_with_public_key(&keys, &genuine),
            code: "Unauthenticated",
            reason: "token-algorithm",
        },
        Attack {
            name: "expired",
            token: forge::sign(&keys, &expired, "at+jwt"),
            code: "Unauthenticated",
            reason: "token-expired",
        },
        Attack {
            name: "not yet valid",
            token: forge::sign(&keys, &early, "at+jwt"),
            code: "Unauthenticated",
            reason: "token-not-yet-valid",
        },
        Attack {
            name: "wrong audience",
            token: forge::sign(&keys, &wrong_aud, "at+jwt"),
            code: "Unauthenticated",
            reason: "token-audience",
        },
        Attack {
            name: "wrong issuer",
            token: forge::sign(&keys, &wrong_iss, "at+jwt"),
            code: "Unauthenticated",
            reason: "token-issuer",
        },
        Attack {
            name: "no exp",
            token: forge::sign(&keys, &no_exp, "at+jwt"),
            code: "Unauthenticated",
            reason: "token-missing-claim",
        },
        Attack {
            name: "exp as a string",
            token: forge::sign(&keys, &string_exp, "at+jwt"),
            code: "Unauthenticated",
            reason: "token-malformed",
        },
        Attack {
            name: "an approval token used as access token",
            token: forge::sign(&keys, &genuine, "approval+jwt"),
            code: "Unauthenticated",
            reason: "token-type",
        },
        Attack {
            name: "untyped JWT",
            token: forge::sign(&keys, &genuine, "JWT"),
            code: "Unauthenticated",
            reason: "token-type",
        },
        Attack {
            name: "garbage",
            token: "not.a.token".into(),
            code: "Unauthenticated",
            reason: "token-malformed",
        },
    ];
    // The genuine claims, well signed, are accepted: the attacks fail for
    // what they change, not for something the forger got wrong.
    expect_verdict(
        &rpc(
            &env,
            RpcAs::Identity("payments"),
            &["decide", &well_signed, "stripe", "create_payment", PAYMENT],
        ),
        "ALLOW",
        "the unmodified forged-claims token",
    );
    for a in &attacks {
        let answer = rpc(
            &env,
            RpcAs::Identity("payments"),
            &["decide", &a.token, "stripe", "create_payment", PAYMENT],
        );
        expect_refused(&answer, a.code, a.name);
        env.wait_audit(a.name, |e| {
            e["kind"] == "decision" && e["verdict"] == "deny" && e["reason"] == a.reason
        });
    }

    // Replay: the same token twice.
    let replay = rpc(
        &env,
        RpcAs::Identity("payments"),
        &["replay", "stripe", "create_payment", PAYMENT],
    );
    expect_verdict(&replay["first"], "ALLOW", "first use");
    expect_refused(&replay["second"], "Unauthenticated", "second use");
    env.wait_audit("for the replay", |e| e["reason"] == "token-replayed");

    // A's token presented by B.
    let issued = rpc(&env, RpcAs::Identity("payments"), &["issue"]);
    let a_token = issued["token"].as_str().unwrap_or_default().to_string();
    expect_refused(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", &a_token, "zendesk", "reply", "{}"],
        ),
        "PermissionDenied",
        "payments' token presented by support",
    );
    env.wait_audit("for the stolen token", |e| {
        e["reason"] == "token-wrong-identity" && e["identity"] == "support"
    });

    // A process that is not enrolled gets nothing.
    expect_refused(
        &rpc(&env, RpcAs::Unenrolled, &["issue"]),
        "Unauthenticated",
        "unenrolled IssueToken",
    );
    expect_refused(
        &rpc(
            &env,
            RpcAs::Unenrolled,
            &["decide", &a_token, "zendesk", "reply", "{}"],
        ),
        "Unauthenticated",
        "unenrolled Decide with a stolen token",
    );
    env.wait_audit("for the unenrolled caller", |e| {
        e["reason"] == "caller-not-enrolled"
    });

    // The replay cache outlives the daemon (the state journal): a token
    // used before a restart is refused after it; one never used works.
    let used = rpc(&env, RpcAs::Identity("support"), &["issue"]);
    let used = used["token"].as_str().unwrap_or_default().to_string();
    let unused = rpc(&env, RpcAs::Identity("support"), &["issue"]);
    let unused = unused["token"].as_str().unwrap_or_default().to_string();
    expect_verdict(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", &used, "zendesk", "reply", "{}"],
        ),
        "ALLOW",
        "a token before the restart",
    );
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    let _restarted = DaemonProc::start(&env);
    expect_refused(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", &used, "zendesk", "reply", "{}"],
        ),
        "Unauthenticated",
        "a token used before the restart",
    );
    env.wait_audit("for the replayed token", |e| {
        e["reason"] == "token-replayed"
    });
    expect_verdict(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", &unused, "zendesk", "reply", "{}"],
        ),
        "ALLOW",
        "a token issued before the restart and never used",
    );
    // Without its journal, the daemon cannot know which tokens were used,
    // and refuses every one issued before it started.
    let before = rpc(&env, RpcAs::Identity("support"), &["issue"]);
    let before = before["token"].as_str().unwrap_or_default().to_string();
    drop(_restarted);
    std::fs::remove_file(&env.state).unwrap_or_else(|e| panic!("{e}"));
    let _fresh = DaemonProc::start(&env);
    expect_refused(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", &before, "zendesk", "reply", "{}"],
        ),
        "Unauthenticated",
        "a token from before a start without state",
    );
    env.wait_audit("for the pre-restart token", |e| {
        e["reason"] == "token-before-restart"
    });
    expect_verdict(
        &rpc(
            &env,
            RpcAs::Identity("support"),
            &["decide", "fresh", "zendesk", "reply", "{}"],
        ),
        "ALLOW",
        "a fresh token after the restart",
    );
}

#[test]
fn operator_calls_policy_push_health_and_the_tcp_listener() {
    if !root_or_skip("operator_calls_policy_push_health_and_the_tcp_listener") {
        return;
    }
    let (env, _d) = start("operator", &no_ports(), "api:\n  tcp: 127.0.0.1:0\n");
    let health = rpc(&env, RpcAs::Unenrolled, &["health"]);
    assert_eq!(health["status"], 1, "health SERVING: {health}");

    // An agent cannot widen its own scope: push, revoke, approve are operator calls.
    let version = env.status()["policy_version"].clone();
    let wider = env.dir.join("wider.yaml");
    std::fs::write(&wider, "version: 1\nidentities:\n  - id: payments\n    tools:\n      allow:\n        - {tool: stripe}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let as_agent = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "payments", "--"])
        .arg(palisade_bin())
        .args(["policy", "push"])
        .arg(&wider)
        .arg("--socket")
        .arg(&env.socket)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !as_agent.status.success(),
        "an enrolled agent pushed a policy"
    );
    assert!(
        String::from_utf8_lossy(&as_agent.stderr).contains("operator"),
        "{}",
        String::from_utf8_lossy(&as_agent.stderr)
    );
    assert_eq!(
        env.status()["policy_version"],
        version,
        "the policy did not change"
    );

    // Operators push; a bad policy is refused with where it is wrong, and
    // the last good one keeps enforcing.
    let bad = env.dir.join("bad.yaml");
    std::fs::write(&bad, "version: 1\nidentities:\n  - id: payments\n    tools:\n      allow:\n        - {tool: stripe, when: 'params.amount >'}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = env.cli(&["policy", "push", bad.to_str().unwrap_or_default()]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("bad.yaml") || why.contains("line"),
        "no location: {why}"
    );
    assert_eq!(env.status()["policy_version"], version);
    expect_verdict(
        &decide(&env, "payments", "stripe", "create_payment", PAYMENT),
        "ALLOW",
        "the old policy still decides",
    );
    env.cli_ok(&["policy", "push", wider.to_str().unwrap_or_default()]);
    assert_ne!(env.status()["policy_version"], version, "the push applied");
    expect_verdict(
        &decide(&env, "payments", "stripe", "refund", "{}"),
        "ALLOW",
        "the pushed policy decides",
    );

    // Over loopback TCP the kernel cannot attest a caller: agent calls are
    // refused, operator calls need an operator token.
    let tcp = env.status()["health"]["api_tcp_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no TCP listener in status"))
        .to_string();
    let url = format!("http://{tcp}");
    let endpoint = Path::new(&url);
    expect_refused(
        &rpc_at(endpoint, RpcAs::Unenrolled, &["issue"]),
        "Unauthenticated",
        "IssueToken over TCP",
    );
    let list = |token: Option<&str>| {
        let mut cmd = Command::new(palisade_bin());
        cmd.args(["approvals", "--json", "--socket", &url]);
        cmd.env_remove("PALISADE_OPERATOR_TOKEN");
        if let Some(t) = token {
            cmd.env("PALISADE_OPERATOR_TOKEN", t);
        }
        cmd.output().unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(
        !list(None).status.success(),
        "operator call over TCP without a token"
    );
    let minted = Command::new(palisade_bin())
        .args(["keys", "operator-token", "--name", "oncall", "--file"])
        .arg(env.dir.join("keys.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8_lossy(&minted.stdout).into_owned();
    let with = list(Some(token.trim()));
    assert!(
        with.status.success(),
        "operator call over TCP with a token: {}",
        String::from_utf8_lossy(&with.stderr)
    );
    let forged = forge::tamper_signature(token.trim());
    assert!(
        !list(Some(&forged)).status.success(),
        "a tampered operator token over TCP"
    );
}

/// A flood of calls with huge names cannot fill the trail: each is refused
/// (`InvalidArgument`, saying which field and how long) and recorded with
/// its names clipped. Twenty 60 KB calls add well under 60 KB to the trail.
#[test]
fn oversized_calls_are_refused_and_cost_the_trail_little() {
    if !root_or_skip("oversized_calls_are_refused_and_cost_the_trail_little") {
        return;
    }
    let (env, _d) = start("decide-size", &no_ports(), "");
    let before = std::fs::metadata(&env.audit).map_or(0, |m| m.len());
    let big = "x".repeat(60_000);
    for _ in 0..20 {
        let a = rpc(
            &env,
            RpcAs::Identity("payments"),
            &["decide", "none", &big, "create_payment", PAYMENT],
        );
        expect_refused(&a, "InvalidArgument", "a 60 KB tool name");
        assert!(
            a["message"]
                .as_str()
                .unwrap_or_default()
                .contains("60000 bytes"),
            "{a}"
        );
    }
    env.wait_audit("for the refusals", |e| {
        e["kind"] == "decision" && e["reason"] == "invalid-request"
    });
    let grown = std::fs::metadata(&env.audit).map_or(0, |m| m.len()) - before;
    assert!(
        grown < 60_000,
        "the trail grew {grown} bytes for 20 refused calls"
    );
    // The control: an ordinary call is judged as before.
    expect_verdict(
        &decide(&env, "payments", "stripe", "create_payment", PAYMENT),
        "ALLOW",
        "an ordinary call",
    );
}
