//! The promise of a suggestion, checked before it is printed: merged with
//! the current policy (its deny rules still winning), it allows every
//! observed connection, lookup and call. What a deny rule of the current
//! policy still refuses is reported, since no added allow can change it;
//! anything else the suggestion fails to allow is a bug and stops the
//! command.

use super::{
    evidence::Evidence,
    suggest::{Options, edge_params, tool_verdict},
};
use crate::policy::{
    EgressVerdict, Policy, ToolVerdict, decide::EgressTarget, suite::parse_destination,
};

/// Observed behaviour the merged policy would not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub what: String,
    /// The current policy's deny rule that refuses it; `None` when the
    /// suggestion itself falls short.
    pub denied_by: Option<String>,
}

/// Merged verdict on a destination: a deny of either policy wins, an
/// allow of either admits. Returns the verdict and the denying rule.
pub fn merged_egress(
    current: Option<&Policy>,
    fragment: &Policy,
    identity: &str,
    t: &EgressTarget,
) -> (bool, Option<String>) {
    for p in current.into_iter().chain([fragment]) {
        let (v, reason, rule) = p.judge_egress(identity, t);
        if matches!(v, EgressVerdict::Deny | EgressVerdict::Audit) && reason == "deny-rule" {
            return (false, rule);
        }
    }
    let allowed = current
        .into_iter()
        .chain([fragment])
        .any(|p| p.judge_egress(identity, t).0 == EgressVerdict::Allow);
    (allowed, None)
}

/// Merged verdict on a call: a deny rule of either policy wins; otherwise
/// the better of the two verdicts.
pub fn merged_tool(
    current: Option<&Policy>,
    fragment: &Policy,
    identity: &str,
    call: (&str, &str, &str),
    params: &serde_json::Map<String, serde_json::Value>,
) -> ToolVerdict {
    let (tool, action, resource) = call;
    let verdicts: Vec<ToolVerdict> = current
        .into_iter()
        .chain([fragment])
        .filter(|p| p.identity(identity).is_some())
        .map(|p| tool_verdict(p, identity, tool, action, resource, params))
        .collect();
    if verdicts.contains(&ToolVerdict::Allow) {
        ToolVerdict::Allow
    } else if verdicts.contains(&ToolVerdict::ApprovalRequired) {
        ToolVerdict::ApprovalRequired
    } else {
        ToolVerdict::Deny
    }
}

pub fn check(e: &Evidence, opts: &Options<'_>, fragment: &Policy) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let id = opts.identity;
    for (flow, seen) in &e.flows {
        let names: Vec<&str> = e.answers.get(&flow.ip).map_or_else(Vec::new, |v| {
            v.iter()
                .filter(|(_, first)| *first <= seen.last + 5)
                .map(|(n, _)| n.as_str())
                .collect()
        });
        let target = |host: Option<&str>| EgressTarget {
            ip: Some(flow.ip),
            host: host.map(str::to_string),
            port: flow.port,
            protocol: flow.proto,
        };
        let mut verdicts = vec![merged_egress(opts.current, fragment, id, &target(None))];
        // A name admits the address only if it, and every name on its
        // CNAME chain, is allowed.
        for n in &names {
            let chain: Vec<&str> = std::iter::once(*n)
                .chain(
                    e.lookups
                        .get(*n)
                        .into_iter()
                        .flat_map(|l| l.cnames.iter().map(String::as_str)),
                )
                .collect();
            let all: Vec<(bool, Option<String>)> = chain
                .iter()
                .map(|c| merged_egress(opts.current, fragment, id, &target(Some(c))))
                .collect();
            verdicts.push((
                all.iter().all(|(ok, _)| *ok),
                all.iter().find_map(|(_, r)| r.clone()),
            ));
        }
        if verdicts.iter().any(|(ok, _)| *ok) {
            continue;
        }
        gaps.push(Gap {
            what: format!(
                "{} connections to {}:{}/{}{}",
                seen.count,
                flow.ip,
                flow.port,
                flow.proto.name(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            ),
            denied_by: verdicts.into_iter().find_map(|(_, r)| r),
        });
    }
    for (key, c, want) in e
        .calls
        .iter()
        .map(|(k, c)| (k, c, ToolVerdict::Allow))
        .chain(
            e.approved
                .iter()
                .map(|(k, c)| (k, c, ToolVerdict::ApprovalRequired)),
        )
    {
        let (tool, action) = key;
        let resource = c.resources.iter().next().map_or("", String::as_str);
        let bounds = super::suggest::bounds_for_check(c);
        for params in edge_params(&bounds) {
            let got = merged_tool(
                opts.current,
                fragment,
                id,
                (tool, action, resource),
                &params,
            );
            let ok = got == ToolVerdict::Allow || got == want;
            if !ok {
                let denied_by = opts.current.and_then(|p| {
                    let d = p.decide_tool(&crate::policy::ToolCall {
                        identity: id,
                        tool,
                        action,
                        resource,
                        params: &params,
                        context: &serde_json::Map::new(),
                        now: std::time::SystemTime::now(),
                    });
                    (d.reason == "denied-by-rule").then(|| d.rules.first().cloned())?
                });
                gaps.push(Gap {
                    what: format!(
                        "{} calls of {tool}.{action} with {} ({})",
                        c.seen.count,
                        serde_json::Value::Object(params),
                        got.name()
                    ),
                    denied_by,
                });
                break;
            }
        }
    }
    gaps
}

/// A destination case of a test suite, judged by the merged policy.
pub fn merged_destination(
    current: Option<&Policy>,
    fragment: &Policy,
    identity: &str,
    dest: &str,
    protocol: crate::policy::Protocol,
) -> bool {
    parse_destination(dest, protocol)
        .is_some_and(|t| merged_egress(current, fragment, identity, &t).0)
}
