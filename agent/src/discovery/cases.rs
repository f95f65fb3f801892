//! `palisade policy suggest --tests`: the least-privilege test matrix from
//! the evidence. Every observed case must be allowed; its near misses — the
//! next port, the other protocol, the neighbouring address, a name below an
//! allowed name, a parameter just past its bound — must stay denied. Each
//! case is judged by the merged policy before it is written, so the suite
//! passes on the day it is made and fails the day someone widens the
//! policy.

use std::{fmt::Write as _, net::IpAddr};

use serde_json::{Map, Value};

use super::{
    check::{merged_destination, merged_tool},
    records::{Span, show},
    render::{header, q},
    suggest::{
        Dest, NetSuggestion, Suggestion, ToolKind, ToolSuggestion, edge_params, json_number,
    },
};
use crate::policy::{Policy, Protocol, ToolVerdict};

struct Case {
    name: String,
    body: String,
    expect: &'static str,
}

fn destination(dest: &Dest, port: u16) -> String {
    match dest {
        Dest::Host(h) => format!("{h}:{port}"),
        Dest::Addr(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Dest::Addr(ip) => format!("{ip}:{port}"),
    }
}

fn neighbour(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            IpAddr::V4(n.checked_add(1).unwrap_or(n - 1).into())
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            IpAddr::V6(n.checked_add(1).unwrap_or(n - 1).into())
        }
    }
}

fn other(p: Protocol) -> Protocol {
    if p == Protocol::Udp {
        Protocol::Tcp
    } else {
        Protocol::Udp
    }
}

struct Ctx<'a> {
    identity: &'a str,
    current: Option<&'a Policy>,
    fragment: &'a Policy,
    cases: Vec<Case>,
}

impl Ctx<'_> {
    fn destination(&mut self, name: String, dest: &str, proto: Protocol, allow: bool) {
        // A near miss the merged policy allows is not a near miss.
        if merged_destination(self.current, self.fragment, self.identity, dest, proto) != allow {
            return;
        }
        self.cases.push(Case {
            name,
            body: format!(
                "    destination: {}\n    protocol: {}\n",
                q(dest),
                proto.name()
            ),
            expect: if allow { "allow" } else { "deny" },
        });
    }

    fn net(&mut self, r: &NetSuggestion) {
        let shown = match &r.dest {
            Dest::Host(h) => h.clone(),
            Dest::Addr(ip) => ip.to_string(),
        };
        for (port, seen) in &r.ports {
            self.destination(
                format!(
                    "{shown} port {port}/{} (seen {})",
                    r.proto.name(),
                    seen.count
                ),
                &destination(&r.dest, *port),
                r.proto,
                true,
            );
        }
        let (Some(lo), Some(hi)) = (r.ports.keys().next(), r.ports.keys().next_back()) else {
            return;
        };
        let next = hi.checked_add(1).or_else(|| lo.checked_sub(1)).unwrap_or(1);
        self.destination(
            format!("not {shown} port {next}/{} (the next port)", r.proto.name()),
            &destination(&r.dest, next),
            r.proto,
            false,
        );
        self.destination(
            format!("not {shown} port {lo} over {}", other(r.proto).name()),
            &destination(&r.dest, *lo),
            other(r.proto),
            false,
        );
        match &r.dest {
            Dest::Addr(ip) => {
                let n = neighbour(*ip);
                self.destination(
                    format!("not the neighbouring address {n} port {lo}"),
                    &destination(&Dest::Addr(n), *lo),
                    r.proto,
                    false,
                );
            }
            Dest::Host(h) => {
                let below = format!("x.{h}");
                self.destination(
                    format!("not a name below it, {below} port {lo}"),
                    &destination(&Dest::Host(below.clone()), *lo),
                    r.proto,
                    false,
                );
            }
        }
    }

    fn call(
        &mut self,
        name: String,
        t: &ToolSuggestion,
        params: Map<String, Value>,
        want: ToolVerdict,
    ) {
        let resource = t.resources.first().map_or("", String::as_str);
        let got = merged_tool(
            self.current,
            self.fragment,
            self.identity,
            (&t.tool, &t.action, resource.trim_end_matches('*')),
            &params,
        );
        if got != want {
            return;
        }
        let mut body = format!("    tool: {}\n    action: {}\n", q(&t.tool), q(&t.action));
        if !resource.is_empty() {
            let _ = writeln!(body, "    resource: {}", q(resource.trim_end_matches('*')));
        }
        if !params.is_empty() {
            let _ = writeln!(body, "    params: {}", Value::Object(params));
        }
        self.cases.push(Case {
            name,
            body,
            expect: want.name(),
        });
    }

    fn tool(&mut self, t: &ToolSuggestion) {
        let what = format!("{}.{}", t.tool, t.action);
        let [_, at_max] = edge_params(&t.bounds);
        let want = if t.kind == ToolKind::RequireApproval {
            ToolVerdict::ApprovalRequired
        } else {
            ToolVerdict::Allow
        };
        if let ToolKind::AllowApprovalAbove { param, threshold } = &t.kind {
            let mut below = at_max.clone();
            below.insert(param.clone(), json_number(*threshold));
            self.call(
                format!("{what} as seen without approval"),
                t,
                below,
                ToolVerdict::Allow,
            );
            self.call(
                format!("{what} as seen with approval"),
                t,
                at_max.clone(),
                ToolVerdict::ApprovalRequired,
            );
        } else {
            self.call(format!("{what} as seen"), t, at_max.clone(), want);
        }
        for b in t.bounds.iter().filter(|b| b.always) {
            let step = if b.seen.whole { 1.0 } else { 0.01 };
            for (edge, x) in [("over", b.hi + step), ("under", b.lo - step)] {
                let mut p = at_max.clone();
                p.insert(b.param.clone(), json_number(x));
                self.call(
                    format!("not {what} with {} just {edge} its bound", b.param),
                    t,
                    p,
                    ToolVerdict::Deny,
                );
            }
        }
    }
}

/// The test suite, as YAML for `palisade policy test`.
pub fn suite(
    s: &Suggestion,
    current: Option<&Policy>,
    fragment: &Policy,
    span: &Span,
    policy_path: Option<&str>,
) -> String {
    let mut ctx = Ctx {
        identity: &s.identity,
        current,
        fragment,
        cases: Vec::new(),
    };
    for r in &s.net {
        ctx.net(r);
    }
    for t in &s.tools {
        ctx.tool(t);
    }
    let mut out = String::new();
    header(&mut out, "Least-privilege test matrix", &s.identity, span);
    out.push_str(
        "# Observed cases must stay allowed, their near misses denied.\n# Run: palisade policy test [--policy POLICY] THIS_FILE\n",
    );
    if let Some(p) = policy_path {
        let _ = writeln!(out, "policy: {}", q(p));
    }
    if let Some(last) = span.last {
        let _ = writeln!(out, "now: {}", q(&show(last)));
    }
    out.push_str("cases:\n");
    for c in &ctx.cases {
        let _ = writeln!(out, "  - name: {}", q(&c.name));
        let _ = writeln!(out, "    identity: {}", q(&s.identity));
        out.push_str(&c.body);
        let _ = writeln!(out, "    expect: {}", c.expect);
    }
    out
}
