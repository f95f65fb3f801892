//! `palisade policy explain`: which rules decide a case, and why the others
//! do not.

use super::{
    Destination, Policy,
    decide::{EgressTarget, ToolCall},
    net::norm_of,
};

/// Lines for people: the identity, each rule considered, the verdict.
pub fn tool(policy: &Policy, call: &ToolCall<'_>) -> Vec<String> {
    let mut out = header(policy, call.identity);
    out.push(format!(
        "call: {}.{} on `{}` params {} context {}",
        call.tool,
        call.action,
        call.resource,
        serde_json::Value::Object(call.params.clone()),
        serde_json::Value::Object(call.context.clone())
    ));
    let mut trace = Some(Vec::new());
    let d = policy.decide_tool_traced(call, &mut trace);
    for step in trace.unwrap_or_default() {
        let what = policy.rule_by_id(&step.rule).map_or(String::new(), |r| {
            format!(
                " [{} from {} at {}]",
                policy.summary_of(&step.rule),
                r.owner,
                r.loc
            )
        });
        out.push(format!("  rule {}: {}{what}", step.rule, step.outcome));
    }
    for c in &d.charges {
        out.push(format!(
            "  budget {}: this call counts {} against {} per {}",
            c.budget,
            c.amount,
            c.limit,
            c.per.name()
        ));
    }
    out.push(format!(
        "verdict: {} ({}): {}",
        d.verdict.name(),
        d.reason,
        d.message
    ));
    out
}

pub fn egress(policy: &Policy, identity: &str, t: &EgressTarget) -> Vec<String> {
    let mut out = header(policy, identity);
    let dest = match (&t.ip, &t.host) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(h)) => h.clone(),
        (None, None) => "?".into(),
    };
    out.push(format!(
        "destination: {dest} port {} {}",
        t.port,
        t.protocol.name()
    ));
    if let Some(ident) = policy.identity(identity) {
        let addr = t.ip.map(norm_of);
        let describe = |rule: u32| {
            policy.rule(rule).map_or(rule.to_string(), |r| {
                format!(
                    "{} [{} from {} at {}]",
                    r.id,
                    policy.summary(rule),
                    r.owner,
                    r.loc
                )
            })
        };
        let port_proto = |ports: &[super::PortRange], p: super::Protocol| {
            let port_ok = ports.iter().any(|r| r.contains(t.port));
            let proto_ok =
                p == super::Protocol::Any || t.protocol == super::Protocol::Any || p == t.protocol;
            match (port_ok, proto_ok) {
                (true, true) => "matches".to_string(),
                (false, _) => format!("covers the address but not port {}", t.port),
                (true, false) => format!("covers the address but not {}", t.protocol.name()),
            }
        };
        for (kind, rules) in [("deny", &ident.deny), ("allow", &ident.allow)] {
            for r in rules
                .iter()
                .filter(|r| addr.is_some_and(|a| r.cidr.contains_addr(&a)))
            {
                out.push(format!(
                    "  {kind} rule {}: {}",
                    describe(r.rule),
                    port_proto(&r.ports, r.protocol)
                ));
            }
        }
        for (kind, rules) in [("deny", &ident.deny_hosts), ("allow", &ident.allow_hosts)] {
            for r in rules
                .iter()
                .filter(|r| t.host.as_deref().is_some_and(|h| r.pattern.matches(h)))
            {
                out.push(format!(
                    "  {kind} rule {}: {}",
                    describe(r.rule),
                    port_proto(&r.ports, r.protocol)
                ));
            }
        }
        for g in &ident.approval_egress {
            let hit = match &g.destination {
                Destination::Cidr(c) => addr.is_some_and(|a| c.contains_addr(&a)),
                Destination::Host(h) => t.host.as_deref().is_some_and(|n| h.matches(n)),
            };
            if hit {
                out.push(format!(
                    "  require_approval rule {}: {} (grants up to {})",
                    describe(g.rule),
                    port_proto(&g.ports, g.protocol),
                    humantime::format_duration(g.max_ttl)
                ));
            }
        }
    }
    let (v, reason, rule) = policy.judge_egress(identity, t);
    out.push(format!(
        "verdict: {} ({reason}{})",
        v.name(),
        rule.map(|r| format!(", rule {r}")).unwrap_or_default()
    ));
    out
}

fn header(policy: &Policy, identity: &str) -> Vec<String> {
    match policy.identity(identity) {
        None => vec![format!(
            "identity `{identity}` is not in policy {}",
            policy.version
        )],
        Some(i) => vec![format!(
            "identity `{}` (mode {}, roles: {}) in policy {}",
            i.id,
            i.mode.name(),
            if i.effective_roles.is_empty() {
                "none".to_string()
            } else {
                i.effective_roles.join(", ")
            },
            policy.version
        )],
    }
}
