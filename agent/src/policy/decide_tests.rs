//! Tool-call and egress verdicts.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::{EgressTarget, EgressVerdict, ToolCall, ToolVerdict};
use crate::policy::{Policy, Protocol, load_str};

const FINANCE: &str = "\
version: 1
context: {ticket: string}
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string}
identities:
  - id: finance-agent
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.amount <= 5000 && context.hour >= 9 && context.hour < 18
          approval_if: params.amount > 1000
      require_approval:
        - id: large-payments
          tool: stripe
          actions: [create_payment]
          when: params.amount > 5000
      deny:
        - id: no-refunds
          tool: stripe
          actions: [refund]
    budgets:
      - {id: daily-spend, tool: stripe, actions: [create_payment], limit: 20000, per: day, sum: params.amount, unit: USD}
      - {id: rate, tool: stripe, limit: 100, per: minute}
";

fn policy() -> Policy {
    load_str("p.yaml", FINANCE)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy
}

/// 2026-11-23T10:00:00Z, a Monday.
fn ten_am() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000)
}

fn call<'a>(p: &'a Map<String, Value>, c: &'a Map<String, Value>, action: &'a str) -> ToolCall<'a> {
    ToolCall {
        identity: "finance-agent",
        tool: "stripe",
        action,
        resource: "acct_1",
        params: p,
        context: c,
        now: ten_am(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn parameter_conditions_decide_allow_approval_and_deny() {
    let p = policy();
    let none = Map::new();
    let small = obj(json!({"amount": 800, "currency": "USD"}));
    let d = p.decide_tool(&call(&small, &none, "create_payment"));
    assert_eq!(
        (d.verdict, d.reason, d.rules.clone()),
        (ToolVerdict::Allow, "allowed", vec!["payments".to_string()])
    );
    assert_eq!(d.charges.len(), 2);
    assert_eq!(d.charges[0].amount, 800.0);
    assert_eq!(d.charges[1].amount, 1.0);

    let medium = obj(json!({"amount": 4200}));
    let d = p.decide_tool(&call(&medium, &none, "create_payment"));
    assert_eq!(
        (d.verdict, d.reason),
        (ToolVerdict::ApprovalRequired, "approval-condition")
    );

    let large = obj(json!({"amount": 7200}));
    let d = p.decide_tool(&call(&large, &none, "create_payment"));
    assert_eq!(
        (d.verdict, d.reason, d.rules.clone()),
        (
            ToolVerdict::ApprovalRequired,
            "approval-required-by-rule",
            vec!["large-payments".to_string()]
        )
    );

    let d = p.decide_tool(&call(&small, &none, "refund"));
    assert_eq!((d.verdict, d.reason), (ToolVerdict::Deny, "denied-by-rule"));
    let d = p.decide_tool(&call(&small, &none, "delete_account"));
    assert_eq!(
        (d.verdict, d.reason),
        (ToolVerdict::Deny, "no-matching-rule")
    );
}

#[test]
fn the_clock_is_an_input() {
    let p = policy();
    let none = Map::new();
    let small = obj(json!({"amount": 800}));
    let mut c = call(&small, &none, "create_payment");
    c.now = ten_am() + Duration::from_secs(9 * 3600); // 19:00
    assert_eq!(p.decide_tool(&c).verdict, ToolVerdict::Deny);
}

#[test]
fn unknown_or_mistyped_inputs_and_errors_deny() {
    let p = policy();
    let none = Map::new();
    let extra = obj(json!({"amount": 10, "note": "hi"}));
    let d = p.decide_tool(&call(&extra, &none, "create_payment"));
    assert_eq!(
        (d.verdict, d.reason),
        (ToolVerdict::Deny, "unknown-parameter")
    );
    let typed = obj(json!({"amount": "10"}));
    assert_eq!(
        p.decide_tool(&call(&typed, &none, "create_payment")).reason,
        "parameter-type"
    );
    let missing = obj(json!({"currency": "USD"}));
    let d = p.decide_tool(&call(&missing, &none, "create_payment"));
    assert_eq!(
        (d.verdict, d.reason),
        (ToolVerdict::Deny, "evaluation-error"),
        "a missing parameter never allows"
    );
    let ctx = obj(json!({"hour": 10}));
    let small = obj(json!({"amount": 1}));
    assert_eq!(
        p.decide_tool(&call(&small, &ctx, "create_payment")).reason,
        "unknown-context-field"
    );
    let ctx = obj(json!({"ticket": "T-1"}));
    assert_eq!(
        p.decide_tool(&call(&small, &ctx, "create_payment")).verdict,
        ToolVerdict::Allow
    );
    let mut c = call(&small, &none, "create_payment");
    c.identity = "nobody";
    assert_eq!(p.decide_tool(&c).reason, "unknown-identity");
}

#[test]
fn budgets_turn_allow_into_deny_when_exceeded() {
    let p = policy();
    let none = Map::new();
    let small = obj(json!({"amount": 900}));
    let mut d = p.decide_tool(&call(&small, &none, "create_payment"));
    d.check_budgets(|b| if b == "daily-spend" { 19_000.0 } else { 0.0 });
    assert_eq!(d.verdict, ToolVerdict::Allow);
    let mut d = p.decide_tool(&call(&small, &none, "create_payment"));
    d.check_budgets(|b| if b == "daily-spend" { 19_500.0 } else { 0.0 });
    assert_eq!(
        (d.verdict, d.reason),
        (ToolVerdict::Deny, "budget-exceeded")
    );
    assert!(d.message.contains("20000 USD per day"), "{}", d.message);
}

#[test]
fn egress_verdicts_follow_rules_hosts_and_modes() {
    let p = load_str(
        "p.yaml",
        "version: 1
identities:
  - id: a
    egress:
      allow:
        - {id: ehr, host: internal-ehr.myorg, ports: [443]}
        - {id: net, cidr: 10.0.0.0/8}
      deny:
        - {id: db, cidr: 10.5.0.0/16, ports: [5432]}
      require_approval:
        - {id: prod, cidr: 192.168.10.0/24, ports: [22], max_ttl: 30m}
  - id: shadow
    mode: audit
",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .policy;
    let t = |ip: &str, port: u16| EgressTarget {
        ip: ip.parse().ok(),
        host: None,
        port,
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        p.judge_egress("a", &t("10.1.2.3", 80)).0,
        EgressVerdict::Allow
    );
    assert_eq!(
        p.judge_egress("a", &t("10.5.0.9", 5432)),
        (EgressVerdict::Deny, "deny-rule", Some("db".into()))
    );
    assert_eq!(
        p.judge_egress("a", &t("192.168.10.4", 22)).0,
        EgressVerdict::ApprovalRequired
    );
    assert_eq!(
        p.judge_egress("a", &t("203.0.113.9", 443)).0,
        EgressVerdict::Deny
    );
    assert_eq!(
        p.judge_egress("a", &t("::ffff:10.1.2.3", 80)).0,
        EgressVerdict::Allow,
        "mapped IPv6 is IPv4"
    );
    let host = EgressTarget {
        ip: None,
        host: Some("INTERNAL-EHR.myorg.".into()),
        port: 443,
        protocol: Protocol::Tcp,
    };
    assert_eq!(p.judge_egress("a", &host).0, EgressVerdict::Allow);
    assert_eq!(
        p.judge_egress("shadow", &t("10.1.2.3", 80)).0,
        EgressVerdict::Audit
    );
}

#[test]
fn restrictions_cover_every_letter_case_and_allows_only_their_own() {
    let p = load_str(
        "p.yaml",
        "\
version: 1
identities:
  - id: ops
    tools:
      allow:
        - {id: accounts, tool: bank, actions: ['*'], resources: ['account/*']}
        - {id: exact, tool: bank, actions: [read], resources: ['ledger/main']}
      deny:
        - {id: treasury, tool: bank, actions: [close], resources: ['account/acct_root']}
",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .policy;
    let none = Map::new();
    let decide = |action: &str, resource: &str| {
        p.decide_tool(&ToolCall {
            identity: "ops",
            tool: "bank",
            action,
            resource,
            params: &none,
            context: &none,
            now: ten_am(),
        })
    };
    for (action, resource) in [
        ("close", "account/acct_root"),
        ("close", "account/ACCT_ROOT"),
        ("CLOSE", "Account/Acct_Root"),
    ] {
        let d = decide(action, resource);
        assert_eq!(
            (d.verdict, d.reason),
            (ToolVerdict::Deny, "denied-by-rule"),
            "{action} {resource}"
        );
    }
    assert_eq!(
        decide("close", "account/acct_ops").verdict,
        ToolVerdict::Allow
    );
    assert_eq!(decide("read", "ledger/main").verdict, ToolVerdict::Allow);
    let d = decide("read", "LEDGER/MAIN");
    assert_eq!(
        (d.verdict, d.reason),
        (ToolVerdict::Deny, "no-matching-rule")
    );
}
