//! A suggestion as a policy file people review: YAML, every rule under a
//! comment with its evidence.

use std::fmt::Write as _;

use super::{
    evidence::Seen,
    records::{Span, show},
    suggest::{Dest, NetSuggestion, Suggestion, ToolKind, ToolSuggestion, number},
};

/// A YAML scalar: plain when that reads back as the same string, else
/// JSON's double-quoted form (which YAML reads too).
pub fn q(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && (s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
            || (s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('/')))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::Value::from(s).to_string()
    }
}

fn times(n: u64) -> String {
    if n == 1 {
        "once".into()
    } else {
        format!("{n} times")
    }
}

pub fn seen(s: &Seen) -> String {
    if s.first == s.last {
        format!("at {}", show(s.first))
    } else {
        format!("first {}, last {}", show(s.first), show(s.last))
    }
}

/// The header every output starts with: where the evidence came from.
pub fn header(out: &mut String, what: &str, identity: &str, span: &Span) {
    let files: Vec<String> = span.files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(
        out,
        "# {what} for identity `{identity}` by `palisade policy suggest`"
    );
    let _ = writeln!(
        out,
        "# from {} ({} records, {} of them about `{identity}`{})",
        files.join(", "),
        span.records,
        span.in_window,
        match (span.first, span.last) {
            (Some(a), Some(b)) => format!(", {} to {}", show(a), show(b)),
            _ => String::new(),
        }
    );
}

fn net_comment(r: &NetSuggestion) -> String {
    let s = r.seen();
    let mut c = match (r.proto, s.count) {
        (crate::policy::Protocol::Udp, 1) => "1 UDP send".to_string(),
        (crate::policy::Protocol::Udp, n) => format!("{n} UDP sends"),
        (_, 1) => "1 connection".to_string(),
        (_, n) => format!("{n} connections"),
    };
    if !r.addrs.is_empty() {
        let a: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
        let _ = write!(c, " to {}", a.join(", "));
    }
    let _ = write!(c, ", {}", seen(&s));
    if let Some(l) = &r.lookups {
        let _ = write!(c, "; looked up {}", times(l.count));
    }
    if let Some(v) = &r.via {
        let _ = write!(c, "; on the CNAME chain of {v}");
    }
    c
}

fn tool_comment(t: &ToolSuggestion) -> String {
    let mut parts = Vec::new();
    if let Some(a) = &t.allowed {
        let calls = if a.count == 1 { "call" } else { "calls" };
        parts.push(format!("{} {calls}, {}", a.count, seen(a)));
    }
    if let Some(a) = &t.approved {
        parts.push(format!("{} approved by a person, {}", a.count, seen(a)));
    }
    for b in &t.bounds {
        let range = if b.seen.min == b.seen.max {
            number(b.seen.min)
        } else {
            format!("{} to {}", number(b.seen.min), number(b.seen.max))
        };
        parts.push(format!(
            "{} seen {range}{}",
            b.param,
            if b.always { "" } else { " (when sent)" }
        ));
    }
    if let Some(n) = &t.resources_note {
        parts.push(n.clone());
    }
    parts.join("; ")
}

fn flow_list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// The suggestion as a policy file.
pub fn policy(s: &Suggestion, span: &Span) -> String {
    let mut out = String::new();
    header(&mut out, "Suggested policy", &s.identity, span);
    let _ = writeln!(
        out,
        "# Each rule allows what was observed and nothing else; review it before enforcing."
    );
    let nc = &s.not_counted;
    if nc.denied_connections + nc.refused_lookups + nc.denied_calls > 0 {
        let _ = writeln!(
            out,
            "# Not included (they did not happen): {} denied connections, {} refused lookups, {} denied calls.",
            nc.denied_connections, nc.refused_lookups, nc.denied_calls
        );
    }
    if nc.elevated > 0 {
        let _ = writeln!(
            out,
            "# Not included: {} records allowed only by a break-glass elevation.",
            nc.elevated
        );
    }
    if s.covered.connections + s.covered.calls > 0 {
        let _ = writeln!(
            out,
            "# Already allowed by the current policy (not repeated): {} connections, {} calls.",
            s.covered.connections, s.covered.calls
        );
    }
    for (name, l) in &s.unconnected {
        let _ = writeln!(
            out,
            "# Looked up but never connected to: {name} ({}, {}); add a host rule if the agent needs the lookup to succeed.",
            times(l.count),
            seen(l)
        );
    }
    for n in &s.notes {
        let _ = writeln!(out, "# NOTE: {n}");
    }
    out.push_str("version: 1\n");
    if !s.schemas.is_empty() {
        out.push_str("schemas:\n");
        for sc in &s.schemas {
            let params: Vec<String> = sc
                .params
                .iter()
                .map(|(k, t)| format!("{}: {}", q(k), t.name()))
                .collect();
            let _ = writeln!(
                out,
                "  # parameters seen with {}.{}; a call with any other parameter is denied",
                sc.tool, sc.action
            );
            let _ = writeln!(
                out,
                "  - {{tool: {}, actions: [{}], params: {{{}}}}}",
                q(&sc.tool),
                q(&sc.action),
                params.join(", ")
            );
        }
    }
    out.push_str("identities:\n");
    let _ = writeln!(out, "  - id: {}", q(&s.identity));
    if !s.selectors.is_empty() {
        out.push_str("    selectors:\n");
        for sel in &s.selectors {
            let _ = writeln!(out, "      - cgroup: {}", q(sel));
        }
    } else if s.exec_only {
        out.push_str("    exec_only: true   # enrolled by `palisade exec`, not by a selector\n");
    }
    if !s.net.is_empty() {
        out.push_str("    egress:\n      allow:\n");
        for r in &s.net {
            let _ = writeln!(out, "        # {}", net_comment(r));
            let dest = match &r.dest {
                Dest::Host(h) => format!("host: {}", q(h)),
                Dest::Addr(ip) => {
                    let len = if ip.is_ipv4() { 32 } else { 128 };
                    format!("cidr: {}", q(&format!("{ip}/{len}")))
                }
            };
            let ports: Vec<String> = r
                .port_ranges()
                .iter()
                .map(|p| {
                    if p.lo == p.hi {
                        p.lo.to_string()
                    } else {
                        q(&p.to_string())
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "        - {{id: {}, {dest}, ports: {}, protocol: {}}}",
                q(&r.id),
                flow_list(&ports),
                r.proto.name()
            );
        }
    }
    let (approval, allow): (Vec<&ToolSuggestion>, Vec<&ToolSuggestion>) = s
        .tools
        .iter()
        .partition(|t| t.kind == ToolKind::RequireApproval);
    if !s.tools.is_empty() {
        out.push_str("    tools:\n");
        for (block, list) in [("allow", &allow), ("require_approval", &approval)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "      {block}:");
            for t in list {
                let _ = writeln!(out, "        # {}", tool_comment(t));
                let _ = writeln!(out, "        - id: {}", q(&t.id));
                let _ = writeln!(out, "          tool: {}", q(&t.tool));
                let _ = writeln!(out, "          actions: [{}]", q(&t.action));
                if !t.resources.is_empty() {
                    let r: Vec<String> = t.resources.iter().map(|r| q(r)).collect();
                    let _ = writeln!(out, "          resources: {}", flow_list(&r));
                }
                if let Some(w) = t.when() {
                    let _ = writeln!(out, "          when: {}", q(&w));
                }
                if let Some(a) = t.approval_if() {
                    let _ = writeln!(out, "          approval_if: {}", q(&a));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::q;

    #[test]
    fn scalars_read_back_as_written() {
        for s in [
            "api.test",
            "true",
            "10.0.0.1/32",
            "1.5",
            "2026-11-23",
            "/system.slice/a.service",
            "a b",
            "",
            "params.x <= 5",
            "8000-8002",
            "*.x",
            "x\"y",
        ] {
            let yaml = format!("v: {}\n", q(s));
            let back: std::collections::BTreeMap<String, String> =
                serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(back["v"], s, "{yaml}");
        }
    }
}
