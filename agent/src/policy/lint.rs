//! Lints: things that are allowed but usually wrong. They are warnings;
//! `palisade policy check --strict` makes them errors.

use std::collections::BTreeSet;

use super::{Diagnostic, NetRule, Policy, PortRange, Protocol};

pub fn run(policy: &Policy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    wildcard_tool_rules(policy, &mut out);
    everything_allowed(policy, &mut out);
    shadowed_allows(policy, &mut out);
    unused_roles(policy, &mut out);
    identities_without_selectors(policy, &mut out);
    out
}

fn wildcard_tool_rules(policy: &Policy, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for ident in &policy.identities {
        for rule in ident
            .tools
            .allow
            .iter()
            .chain(&ident.tools.require_approval)
        {
            if !seen.insert(rule.rule) {
                continue;
            }
            let Some(info) = policy.rule(rule.rule) else {
                continue;
            };
            if rule.actions.is_empty() || rule.actions.iter().any(|a| a.is_wildcard()) {
                out.push(
                    Diagnostic::warning(
                        info.loc.clone(),
                        format!("rule `{}` allows every action of `{}`", info.id, rule.tool),
                    )
                    .with_hint("list the actions the agent needs"),
                );
            }
            if rule.resources.iter().any(|r| r.is_wildcard()) {
                out.push(
                    Diagnostic::warning(
                        info.loc.clone(),
                        format!("rule `{}` allows every resource (`*`)", info.id),
                    )
                    .with_hint("list the resources (or resource patterns) the agent needs"),
                );
            }
            if rule.tool.is_wildcard() {
                out.push(Diagnostic::warning(
                    info.loc.clone(),
                    format!("rule `{}` applies to every tool (`tool: *`)", info.id),
                ));
            }
        }
    }
}

fn everything_allowed(policy: &Policy, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for ident in &policy.identities {
        for r in ident.allow.iter().filter(|r| r.cidr.is_everything()) {
            if seen.insert(r.rule)
                && let Some(info) = policy.rule(r.rule)
            {
                out.push(
                    Diagnostic::warning(
                        info.loc.clone(),
                        format!("rule `{}` allows {} (every address)", info.id, r.cidr),
                    )
                    .with_hint("name the networks the agent needs"),
                );
            }
        }
    }
}

fn covers(d: &NetRule, a: &NetRule) -> bool {
    let proto = d.protocol == Protocol::Any || d.protocol == a.protocol;
    let ports = a.ports.iter().all(|ap| {
        d.ports
            .iter()
            .any(|dp: &PortRange| dp.lo <= ap.lo && ap.hi <= dp.hi)
    });
    d.cidr.contains(&a.cidr) && proto && ports
}

fn shadowed_allows(policy: &Policy, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for ident in &policy.identities {
        for a in &ident.allow {
            if let Some(d) = ident.deny.iter().find(|d| covers(d, a))
                && seen.insert((a.rule, d.rule))
                && let (Some(ai), Some(di)) = (policy.rule(a.rule), policy.rule(d.rule))
            {
                out.push(
                    Diagnostic::warning(
                        ai.loc.clone(),
                        format!(
                            "allow rule `{}` never applies to identity `{}`: deny rule `{}` ({}) covers it",
                            ai.id, ident.id, di.id, di.loc
                        ),
                    )
                    .with_hint("remove the allow rule or narrow the deny rule"),
                );
            }
        }
    }
}

fn unused_roles(policy: &Policy, out: &mut Vec<Diagnostic>) {
    let used: BTreeSet<&str> = policy
        .identities
        .iter()
        .flat_map(|i| {
            // Roles an identity may be elevated to count as used.
            i.effective_roles
                .iter()
                .chain(i.elevatable.iter().flat_map(|e| &e.closure))
                .map(String::as_str)
        })
        .collect();
    for role in policy
        .roles
        .iter()
        .filter(|r| !used.contains(r.id.as_str()))
    {
        out.push(
            Diagnostic::warning(
                role.loc.clone(),
                format!("role `{}` is not used by any identity", role.id),
            )
            .with_hint("give it to an identity (`roles: [...]`) or remove it"),
        );
    }
}

fn identities_without_selectors(policy: &Policy, out: &mut Vec<Diagnostic>) {
    for ident in policy
        .identities
        .iter()
        .filter(|i| i.selectors.is_empty() && !i.exec_only)
    {
        out.push(
            Diagnostic::warning(
                ident.loc.clone(),
                format!(
                    "identity `{}` has no selector: only processes started with `palisade exec --identity {}` are enrolled",
                    ident.id, ident.id
                ),
            )
            .with_hint("add `selectors: [{cgroup: ...}]` for agents started by systemd or a container runtime, or `exec_only: true` if only `palisade exec` starts it"),
        );
    }
}
