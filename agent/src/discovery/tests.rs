//! Discovery against trails written the way the daemon writes them
//! (sealed records, several files), checked with the policy tools
//! themselves: `check --strict`, `policy test`, the decision engine.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use super::*;
use crate::{
    audit::{
        AuditEvent, CallDetail, DnsDetail, EventKind,
        chain::{ChainHead, seal},
    },
    policy::{EgressVerdict, ToolVerdict, decide::EgressTarget, suite::Suite},
};

const T0: u64 = 1_790_000_000;

struct Trail {
    dir: PathBuf,
    events: Vec<AuditEvent>,
}

impl Trail {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("palisade-discovery-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Self {
            dir,
            events: Vec::new(),
        }
    }

    fn at(&mut self, secs: u64, kind: EventKind, verdict: &str, reason: &str) -> &mut AuditEvent {
        let mut ev = AuditEvent::at(
            std::time::UNIX_EPOCH + Duration::from_secs(T0 + secs),
            kind,
            verdict,
            reason,
        );
        ev.identity = Some("agent".into());
        self.events.push(ev);
        self.events.last_mut().unwrap_or_else(|| panic!("pushed"))
    }

    fn connect(&mut self, secs: u64, verdict: &str, ip: &str, port: u16, proto: &str) {
        let ev = self.at(secs, EventKind::Network, verdict, "default-deny");
        ev.dst_ip = ip.parse().ok();
        ev.dst_port = Some(port);
        ev.protocol = Some(proto.into());
    }

    fn lookup(&mut self, secs: u64, name: &str, cnames: &[&str], answer: &[&str]) {
        let ev = self.at(secs, EventKind::Dns, "audit", "no-host-rule");
        ev.dns = Some(DnsDetail {
            query: name.into(),
            qtype: "A".into(),
            rcode: Some("NOERROR".into()),
            cnames: cnames.iter().map(|c| c.to_string()).collect(),
            answer: answer.iter().filter_map(|a| a.parse().ok()).collect(),
            ..DnsDetail::default()
        });
    }

    fn call(&mut self, secs: u64, verdict: &str, reason: &str, action: &str, amount: f64) {
        let ev = self.at(secs, EventKind::Decision, verdict, reason);
        let mut numbers = std::collections::BTreeMap::new();
        numbers.insert(
            "amount".to_string(),
            serde_json::Number::from_f64(amount).unwrap_or_else(|| panic!("finite")),
        );
        ev.call = Some(CallDetail {
            tool: "stripe".into(),
            action: action.into(),
            params: vec!["amount".into(), "currency".into()],
            numbers,
            ..CallDetail::default()
        });
    }

    /// Seal into two files, given to the reader newest first.
    fn write(&mut self) -> Vec<PathBuf> {
        let mut head = ChainHead::genesis();
        let lines: Vec<String> = self
            .events
            .iter_mut()
            .map(|ev| {
                let (line, next) = seal(ev, &head).unwrap_or_else(|e| panic!("{e}"));
                head = next;
                line
            })
            .collect();
        let half = lines.len() / 2;
        let files = [
            (self.dir.join("audit.jsonl.1"), &lines[..half]),
            (self.dir.join("audit.jsonl"), &lines[half..]),
        ];
        for (p, l) in &files {
            std::fs::write(p, l.iter().map(|x| format!("{x}\n")).collect::<String>())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        vec![files[1].0.clone(), files[0].0.clone()]
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An agent in audit mode: looks up api.test (a CNAME to edge.test) and
/// connects to it, reaches an address without a lookup over UDP, makes
/// payments; one exfiltration attempt was denied.
fn observed(name: &str) -> (Trail, Vec<PathBuf>) {
    let mut t = Trail::new(name);
    t.at(0, EventKind::Enrolment, "enrolled", "exec");
    t.lookup(1, "api.test", &["edge.test"], &["10.1.0.1"]);
    t.connect(2, "audit", "10.1.0.1", 443, "tcp");
    t.connect(3, "audit", "10.1.0.1", 443, "tcp");
    t.connect(4, "audit", "10.1.0.1", 8443, "tcp");
    t.lookup(5, "unused.test", &[], &["10.1.0.9"]);
    t.connect(6, "audit", "10.2.0.7", 9000, "udp");
    t.connect(7, "deny", "203.0.113.5", 443, "tcp");
    t.call(8, "audit", "no-matching-rule", "create_payment", 120.0);
    t.call(9, "audit", "no-matching-rule", "create_payment", 4200.0);
    t.call(10, "deny", "no-matching-rule", "refund", 50.0);
    let files = t.write();
    (t, files)
}

fn target(ip: &str, host: Option<&str>, port: u16, proto: crate::policy::Protocol) -> EgressTarget {
    EgressTarget {
        ip: ip.parse::<IpAddr>().ok(),
        host: host.map(str::to_string),
        port,
        protocol: proto,
    }
}

#[test]
fn the_suggestion_allows_what_happened_and_nothing_else() {
    use crate::policy::Protocol::{Tcp, Udp};
    let (t, files) = observed("suggest");
    let out = suggest_from_trail(&files, "agent", None, None, Some(None))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = &out.policy;
    // Hosts over addresses, the CNAME target too, ports as seen.
    assert!(
        text.contains("host: api.test, ports: [443, 8443], protocol: tcp"),
        "{text}"
    );
    assert!(
        text.contains("host: edge.test, ports: [443, 8443]"),
        "{text}"
    );
    assert!(
        text.contains("cidr: 10.2.0.7/32, ports: [9000], protocol: udp"),
        "{text}"
    );
    assert!(
        !text.contains("203.0.113.5/32"),
        "a denied attempt is not evidence: {text}"
    );
    assert!(text.contains("1 denied connections"), "{text}");
    assert!(
        text.contains("unused.test"),
        "the unconnected lookup is mentioned: {text}"
    );
    assert!(text.contains("exec_only: true"), "{text}");
    // Evidence comments.
    assert!(text.contains("# 3 connections to 10.1.0.1"), "{text}");
    assert!(text.contains("looked up once"), "{text}");
    // The tool rule: the action seen, a bound from what was seen.
    assert!(
        text.contains("when: \"params.amount >= 0 && params.amount <= 4200\""),
        "{text}"
    );
    assert!(!text.contains("refund"), "{text}");

    // It is a strict-clean policy file.
    let path = t.dir.join("suggested.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let p = crate::policy::load_strict(&path)
        .unwrap_or_else(|e| panic!("{}\n{text}", e.diagnostics[0]))
        .policy;
    let judge = |ip, host, port, proto| p.judge_egress("agent", &target(ip, host, port, proto)).0;
    assert_eq!(
        judge("10.1.0.1", Some("api.test"), 443, Tcp),
        EgressVerdict::Allow
    );
    assert_eq!(
        judge("10.1.0.1", None, 443, Tcp),
        EgressVerdict::Deny,
        "by name only"
    );
    assert_eq!(judge("", Some("api.test"), 444, Tcp), EgressVerdict::Deny);
    assert_eq!(judge("", Some("x.api.test"), 443, Tcp), EgressVerdict::Deny);
    assert_eq!(judge("10.2.0.7", None, 9000, Udp), EgressVerdict::Allow);
    assert_eq!(judge("10.2.0.7", None, 9000, Tcp), EgressVerdict::Deny);
    assert_eq!(judge("10.2.0.8", None, 9000, Udp), EgressVerdict::Deny);
    assert_eq!(judge("203.0.113.5", None, 443, Tcp), EgressVerdict::Deny);
    let pay = |action: &str, amount: i64| {
        let params: serde_json::Map<String, serde_json::Value> =
            [("amount".to_string(), serde_json::Value::from(amount))]
                .into_iter()
                .collect();
        suggest::tool_verdict(&p, "agent", "stripe", action, "", &params)
    };
    assert_eq!(pay("create_payment", 4200), ToolVerdict::Allow);
    assert_eq!(pay("create_payment", 4201), ToolVerdict::Deny);
    assert_eq!(pay("create_payment", -1), ToolVerdict::Deny);
    assert_eq!(pay("refund", 10), ToolVerdict::Deny);

    // The test matrix passes against it.
    let suite_path = t.dir.join("suite.yaml");
    let suite_text = out.suite.unwrap_or_default();
    std::fs::write(&suite_path, &suite_text).unwrap_or_else(|e| panic!("{e}"));
    let suite = Suite::load(&suite_path).unwrap_or_else(|e| panic!("{}", e.diagnostics[0]));
    let results = suite.run(&p);
    assert!(results.len() >= 12, "{suite_text}");
    for r in &results {
        assert!(
            r.passed,
            "{}: expected {}, got {}\n{suite_text}",
            r.name, r.expected, r.got
        );
    }
    for near in [
        "the next port",
        "over udp",
        "neighbouring address",
        "name below it",
        "just over its bound",
    ] {
        assert!(suite_text.contains(near), "{near}: {suite_text}");
    }
    // And it fails on a policy that allows more.
    let wide = text
        .replace("ports: [9000]", "ports: [9000, 9001]")
        .replace("10.2.0.7/32", "10.2.0.0/24");
    let wide = crate::policy::load_str("wide.yaml", &wide)
        .unwrap_or_else(|e| panic!("{}", e.diagnostics[0]))
        .policy;
    assert!(suite.run(&wide).iter().any(|r| !r.passed));
}

#[test]
fn with_the_current_policy_only_what_it_lacks_is_suggested() {
    let (_t, files) = observed("current");
    let current = crate::policy::load_str(
        "current.yaml",
        r#"version: 1
identities:
  - id: agent
    mode: audit
    selectors: [{cgroup: /agents/agent.service}]
    egress:
      allow:
        - {id: api, host: api.test, ports: [443, 8443], protocol: tcp}
        - {id: edge, host: edge.test, ports: [443, 8443], protocol: tcp}
      deny:
        - {id: no-udp-9000, cidr: 10.2.0.0/16, ports: [9000], protocol: udp}
"#,
    )
    .unwrap_or_else(|e| panic!("{}", e.diagnostics[0]))
    .policy;
    let out = suggest_from_trail(&files, "agent", None, Some(&current), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let text = &out.policy;
    assert!(!text.contains("host: api.test"), "already allowed: {text}");
    assert!(
        text.contains("Already allowed by the current policy (not repeated): 3 connections"),
        "{text}"
    );
    assert!(!text.contains("never connected to: api.test"), "{text}");
    assert!(
        text.contains("cgroup: /agents/agent.service"),
        "selectors kept: {text}"
    );
    assert!(
        text.contains("stay denied by rule `no-udp-9000` of the current policy"),
        "a current deny rule is reported: {text}"
    );
    assert!(matches!(
        suggest_from_trail(&files, "nobody", None, Some(&current), None),
        Err(DiscoveryError::UnknownIdentity(_))
    ));
}

#[test]
fn since_limits_the_window_and_approvals_stay_behind_approval() {
    let mut t = Trail::new("approvals");
    t.call(1, "allow", "allowed", "create_payment", 300.0);
    t.call(2, "allow", "approved-override", "create_payment", 9000.0);
    t.call(3, "allow", "approved-override", "payout", 100.0);
    let files = t.write();
    let out = suggest_from_trail(&files, "agent", None, None, Some(None))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = &out.policy;
    assert!(
        text.contains("approval_if: \"params.amount > 300\""),
        "{text}"
    );
    assert!(text.contains("require_approval:"), "{text}");
    let p = load_generated(text).unwrap_or_else(|e| panic!("{e}"));
    let pay = |action: &str, amount: i64| {
        let params: serde_json::Map<String, serde_json::Value> =
            [("amount".to_string(), serde_json::Value::from(amount))]
                .into_iter()
                .collect();
        suggest::tool_verdict(&p, "agent", "stripe", action, "", &params)
    };
    assert_eq!(pay("create_payment", 300), ToolVerdict::Allow);
    assert_eq!(pay("create_payment", 9000), ToolVerdict::ApprovalRequired);
    assert_eq!(pay("payout", 1), ToolVerdict::ApprovalRequired);

    let since = (T0 + 3) as i64;
    let out = suggest_from_trail(&files, "agent", Some(since), None, None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.policy.contains("create_payment"), "{}", out.policy);
    assert_eq!(out.span.in_window, 1);
}

#[test]
fn unused_names_what_decided_nothing() {
    let mut t = Trail::new("unused");
    for (i, (rule, action)) in [
        ("pay", "create_payment"),
        ("pay", "create_payment"),
        ("ehr", ""),
    ]
    .iter()
    .enumerate()
    {
        let ev = t.at(i as u64, EventKind::Decision, "allow", "allowed");
        ev.rule = Some(rule.to_string());
        ev.call = Some(CallDetail {
            tool: "stripe".into(),
            action: action.to_string(),
            ..CallDetail::default()
        });
    }
    let files = t.write();
    let p = crate::policy::load_str(
        "p.yaml",
        r#"version: 1
roles:
  - id: payments
    egress:
      allow:
        - {id: ledger, cidr: 10.0.0.0/8, ports: [5432], protocol: tcp}
        - {id: ehr, host: ehr.test}
    tools:
      allow:
        - {id: pay, tool: stripe, actions: [create_payment, refund]}
        - {id: payout, tool: stripe, actions: [payout]}
  - id: idle
    tools:
      allow:
        - {id: idle-rule, tool: crm, actions: [read]}
identities:
  - id: agent
    roles: [payments, idle]
    exec_only: true
"#,
    )
    .unwrap_or_else(|e| panic!("{}", e.diagnostics[0]))
    .policy;
    let r = unused_from_trail(&files, &p, None).unwrap_or_else(|e| panic!("{e}"));
    let rule = |id: &str| {
        r.rules
            .iter()
            .find(|x| x.id == id)
            .unwrap_or_else(|| panic!("rule {id}"))
    };
    assert_eq!(rule("pay").status, unused::Status::Used);
    assert_eq!(rule("pay").uses, 2);
    assert_eq!(rule("pay").actions_unused, vec!["refund".to_string()]);
    assert_eq!(rule("payout").status, unused::Status::Unused);
    assert_eq!(rule("ledger").status, unused::Status::NoEvidence);
    assert_eq!(rule("ehr").status, unused::Status::Used);
    let idle = r
        .roles
        .iter()
        .find(|x| x.id == "idle")
        .unwrap_or_else(|| panic!("idle"));
    assert_eq!(idle.status, unused::Status::Unused);
    let agent = &r.identities[0];
    assert_eq!(agent.unused_role_rules, vec!["idle-rule", "payout"]);
    let text = unused::human(&r);
    assert!(text.contains("rule `pay` allows actions refund"), "{text}");
    assert!(
        text.contains("5 rules: 2 used, 2 unused, 1 without evidence"),
        "{text}"
    );
}

#[test]
fn a_parameter_sent_sometimes_is_bounded_when_sent() {
    let mut t = Trail::new("sometimes");
    t.call(1, "audit", "no-matching-rule", "create_payment", 10.5);
    let ev = t.at(2, EventKind::Decision, "audit", "no-matching-rule");
    ev.call = Some(CallDetail {
        tool: "stripe".into(),
        action: "create_payment".into(),
        params: vec!["currency".into()],
        ..CallDetail::default()
    });
    let files = t.write();
    let out = suggest_from_trail(&files, "agent", None, None, Some(None))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.policy
            .contains("(!has(params.amount) || (params.amount >= 0 && params.amount <= 10.5))"),
        "{}",
        out.policy
    );
    let p = load_generated(&out.policy).unwrap_or_else(|e| panic!("{e}"));
    let call = |params: serde_json::Value| {
        let serde_json::Value::Object(m) = params else {
            panic!("object")
        };
        suggest::tool_verdict(&p, "agent", "stripe", "create_payment", "", &m)
    };
    assert_eq!(
        call(serde_json::json!({"currency": "USD"})),
        ToolVerdict::Allow
    );
    assert_eq!(
        call(serde_json::json!({"amount": 10.5})),
        ToolVerdict::Allow
    );
    assert_eq!(
        call(serde_json::json!({"amount": 10.51})),
        ToolVerdict::Deny
    );
    assert_eq!(
        call(serde_json::json!({"memo": "x"})),
        ToolVerdict::Deny,
        "undeclared"
    );
}
