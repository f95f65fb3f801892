//! From evidence to the smallest rules that allow it: a host rule wherever
//! a lookup by the same identity explains an address, an address rule
//! otherwise, the ports and protocol seen; per tool and action a rule with
//! the resources seen and a bound on each numeric parameter.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::SystemTime,
};

use serde_json::{Map, Value};

use super::evidence::{CallSeen, Evidence, Flow, NotCounted, ParamSeen, Seen};
use crate::policy::{
    EgressVerdict, HostPattern, ParamType, Pattern, Policy, PortRange, Protocol, ToolVerdict,
    decide::{EgressTarget, ToolCall},
    net,
};

/// A lookup explains a connection made up to this long before it.
const LOOKUP_SLACK_SECS: i64 = 5;
/// Resources listed one by one up to this many; beyond, by prefix.
const MAX_LISTED_RESOURCES: usize = 16;

/// Where a suggested egress rule points.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    Host(String),
    Addr(IpAddr),
}

#[derive(Clone, Debug)]
pub struct NetSuggestion {
    pub id: String,
    pub dest: Dest,
    pub proto: Protocol,
    /// Each port with its evidence.
    pub ports: BTreeMap<u16, Seen>,
    /// For host rules: the addresses connected to.
    pub addrs: BTreeSet<IpAddr>,
    /// For host rules: the lookups of the name.
    pub lookups: Option<Seen>,
    /// For a name on a CNAME chain: the name that was asked.
    pub via: Option<String>,
}

impl NetSuggestion {
    pub fn seen(&self) -> Seen {
        let mut it = self.ports.values();
        let mut s = it.next().copied().unwrap_or(Seen::at(0));
        for p in it {
            s.merge(p);
        }
        s
    }

    pub fn port_ranges(&self) -> Vec<PortRange> {
        net::coalesce(
            self.ports
                .keys()
                .map(|p| PortRange { lo: *p, hi: *p })
                .collect(),
        )
    }
}

/// A bound on a numeric parameter: `lo <= params.name <= hi`.
#[derive(Clone, Debug)]
pub struct Bound {
    pub param: String,
    pub lo: f64,
    pub hi: f64,
    pub seen: ParamSeen,
    /// Sent with every call (else the bound applies when it is sent).
    pub always: bool,
}

impl Bound {
    pub fn cel(&self) -> String {
        let p = format!("params.{}", self.param);
        let both = format!("{p} >= {} && {p} <= {}", number(self.lo), number(self.hi));
        if self.always {
            both
        } else {
            format!("(!has({p}) || ({both}))")
        }
    }
}

/// A number as CEL and YAML write it.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ToolKind {
    Allow,
    /// Allowed within the bounds; above `threshold` of `param` it was
    /// approved by a person, so it stays behind approval.
    AllowApprovalAbove {
        param: String,
        threshold: f64,
    },
    /// Every call was approved by a person.
    RequireApproval,
}

#[derive(Clone, Debug)]
pub struct ToolSuggestion {
    pub id: String,
    pub tool: String,
    pub action: String,
    pub resources: Vec<String>,
    /// The resources were summarised by prefix, or too many to list.
    pub resources_note: Option<String>,
    pub bounds: Vec<Bound>,
    pub kind: ToolKind,
    pub allowed: Option<Seen>,
    pub approved: Option<Seen>,
    /// Parameter names seen.
    pub params: BTreeMap<String, ParamSeen>,
}

impl ToolSuggestion {
    pub fn when(&self) -> Option<String> {
        (!self.bounds.is_empty()).then(|| {
            self.bounds
                .iter()
                .map(Bound::cel)
                .collect::<Vec<_>>()
                .join(" && ")
        })
    }

    pub fn approval_if(&self) -> Option<String> {
        match &self.kind {
            ToolKind::AllowApprovalAbove { param, threshold } => {
                Some(format!("params.{param} > {}", number(*threshold)))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SchemaSuggestion {
    pub tool: String,
    pub action: String,
    pub params: BTreeMap<String, ParamType>,
}

/// Evidence the current policy already allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Covered {
    pub connections: u64,
    pub calls: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Suggestion {
    pub identity: String,
    pub exec_only: bool,
    pub selectors: Vec<String>,
    pub net: Vec<NetSuggestion>,
    pub tools: Vec<ToolSuggestion>,
    pub schemas: Vec<SchemaSuggestion>,
    pub covered: Covered,
    /// Names looked up whose addresses were never connected to.
    pub unconnected: Vec<(String, Seen)>,
    pub not_counted: NotCounted,
    /// Things a person should know about the suggestion.
    pub notes: Vec<String>,
}

/// What to compare the evidence with.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    pub identity: &'a str,
    /// The policy in force: what it already allows is not suggested again,
    /// and its selectors are kept.
    pub current: Option<&'a Policy>,
}

/// A CEL identifier (`params.NAME` works for it).
fn identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Egress the current policy already allows for `flow` (by address or by
/// one of the names that explain it).
fn egress_allowed(p: &Policy, identity: &str, flow: &Flow, names: &[&str]) -> bool {
    let judge = |host: Option<&str>| {
        p.judge_egress(
            identity,
            &EgressTarget {
                ip: Some(flow.ip),
                host: host.map(str::to_string),
                port: flow.port,
                protocol: flow.proto,
            },
        )
        .0 == EgressVerdict::Allow
    };
    judge(None) || names.iter().any(|n| judge(Some(n)))
}

/// Parameters at the edges of what was seen: every bounded number at its
/// lowest, and at its highest.
pub fn edge_params(bounds: &[Bound]) -> [Map<String, Value>; 2] {
    let at = |pick: fn(&ParamSeen) -> f64| {
        bounds
            .iter()
            .filter(|b| b.always)
            .map(|b| (b.param.clone(), json_number(pick(&b.seen))))
            .collect()
    };
    [at(|s| s.min), at(|s| s.max)]
}

pub fn json_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// The verdict of `policy` on a call of `tool.action` with `params`.
pub fn tool_verdict(
    p: &Policy,
    identity: &str,
    tool: &str,
    action: &str,
    resource: &str,
    params: &Map<String, Value>,
) -> ToolVerdict {
    let context = Map::new();
    p.decide_tool(&ToolCall {
        identity,
        tool,
        action,
        resource,
        params,
        context: &context,
        now: SystemTime::now(),
    })
    .verdict
}

fn merge_calls(a: Option<&CallSeen>, b: Option<&CallSeen>) -> CallSeen {
    let mut out = a.or(b).cloned().unwrap_or_else(|| CallSeen {
        seen: Seen::at(0),
        resources: BTreeSet::new(),
        resources_overflow: false,
        params: BTreeMap::new(),
    });
    if let (Some(_), Some(b)) = (a, b) {
        out.seen.merge(&b.seen);
        out.resources.extend(b.resources.iter().cloned());
        out.resources_overflow |= b.resources_overflow;
        for (k, v) in &b.params {
            out.params
                .entry(k.clone())
                .and_modify(|p| {
                    p.calls += v.calls;
                    p.numeric += v.numeric;
                    p.min = p.min.min(v.min);
                    p.max = p.max.max(v.max);
                    p.whole &= v.whole;
                })
                .or_insert(*v);
        }
    }
    out
}

/// Numeric parameters sent as numbers every time they were sent get a
/// bound from what was seen: from 0 (or the lowest value, if negative) to
/// the highest.
fn bounds_of(c: &CallSeen, notes: &mut Vec<String>, what: &str) -> Vec<Bound> {
    let mut out = Vec::new();
    for (name, p) in &c.params {
        if p.numeric == 0 || p.numeric < p.calls {
            continue;
        }
        if !identifier(name) {
            notes.push(format!(
                "{what}: parameter `{name}` is numeric but not a CEL identifier; bound it by hand"
            ));
            continue;
        }
        out.push(Bound {
            param: name.clone(),
            lo: if p.min >= 0.0 { 0.0 } else { p.min },
            hi: p.max,
            seen: *p,
            always: p.calls == c.seen.count,
        });
    }
    out
}

/// The bounds of `c`, for checking verdicts at the edges of what was seen.
pub fn bounds_for_check(c: &CallSeen) -> Vec<Bound> {
    bounds_of(c, &mut Vec::new(), "")
}

/// Resources as rule patterns: each one when there are few, else one
/// pattern per prefix (up to the last `/`).
fn resource_patterns(c: &CallSeen) -> (Vec<String>, Option<String>) {
    let valid: Vec<&String> = c
        .resources
        .iter()
        .filter(|r| Pattern::parse(r).is_ok())
        .collect();
    if c.resources.is_empty() {
        return (vec![], None);
    }
    if valid.len() < c.resources.len() {
        return (
            vec![],
            Some("some resources cannot be written as patterns (whitespace); every resource is allowed: restrict by hand".into()),
        );
    }
    if valid.len() <= MAX_LISTED_RESOURCES && !c.resources_overflow {
        return (valid.into_iter().cloned().collect(), None);
    }
    let prefixes: BTreeSet<String> = valid
        .iter()
        .map(|r| match r.rfind('/') {
            Some(i) => format!("{}*", &r[..=i]),
            None => (*r).clone(),
        })
        .collect();
    if prefixes.len() <= MAX_LISTED_RESOURCES && !prefixes.contains("*") {
        let n = if c.resources_overflow {
            format!("more than {}", c.resources.len())
        } else {
            c.resources.len().to_string()
        };
        (
            prefixes.into_iter().collect(),
            Some(format!("{n} distinct resources, summarised by prefix")),
        )
    } else {
        (
            vec![],
            Some(format!(
                "too many distinct resources to list ({}+); every resource is allowed: restrict by hand",
                c.resources.len()
            )),
        )
    }
}

/// Rule ids that read well and do not collide (with each other or the
/// current policy).
struct Ids<'a> {
    taken: BTreeSet<String>,
    current: Option<&'a Policy>,
}

impl Ids<'_> {
    fn make(&mut self, parts: &[&str]) -> String {
        let base: String = parts
            .join("-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let mut id = base.clone();
        let mut n = 2;
        while self.taken.contains(&id) || self.current.is_some_and(|p| p.rule_by_id(&id).is_some())
        {
            id = format!("{base}-{n}");
            n += 1;
        }
        self.taken.insert(id.clone());
        id
    }
}

pub fn suggest(e: &Evidence, opts: &Options<'_>) -> Suggestion {
    let mut s = Suggestion {
        identity: opts.identity.to_string(),
        not_counted: e.not_counted,
        ..Suggestion::default()
    };
    let mut ids = Ids {
        taken: BTreeSet::new(),
        current: opts.current,
    };
    let current_ident = opts.current.and_then(|p| p.identity(opts.identity));
    match current_ident {
        Some(i) => {
            s.selectors = i.selectors.iter().map(|g| g.as_str().to_string()).collect();
            s.exec_only = i.exec_only;
        }
        None => s.exec_only = e.exec_enrolled,
    }
    if s.selectors.is_empty() && !s.exec_only {
        s.notes.push(
            "no selector is known for this identity (give --policy, or add `selectors:` by hand)"
                .into(),
        );
    }
    egress(e, opts, &mut s, &mut ids);
    tools(e, opts, &mut s, &mut ids);
    s
}

fn egress(e: &Evidence, opts: &Options<'_>, s: &mut Suggestion, ids: &mut Ids<'_>) {
    let mut hosts: BTreeMap<(String, Protocol), NetSuggestion> = BTreeMap::new();
    let mut addrs: BTreeMap<(IpAddr, Protocol), NetSuggestion> = BTreeMap::new();
    let mut connected: BTreeSet<String> = BTreeSet::new();
    let new_rule = |dest: Dest, proto| NetSuggestion {
        id: String::new(),
        dest,
        proto,
        ports: BTreeMap::new(),
        addrs: BTreeSet::new(),
        lookups: None,
        via: None,
    };
    for (flow, seen) in &e.flows {
        let names: Vec<&str> = e
            .answers
            .get(&flow.ip)
            .map(|v| {
                v.iter()
                    .filter(|(n, first)| {
                        *first <= seen.last + LOOKUP_SLACK_SECS && HostPattern::parse(n).is_ok()
                    })
                    .map(|(n, _)| n.as_str())
                    .collect()
            })
            .unwrap_or_default();
        connected.extend(names.iter().map(|n| n.to_string()));
        if let Some(p) = opts.current
            && egress_allowed(p, opts.identity, flow, &names)
        {
            s.covered.connections += seen.count;
            continue;
        }
        if names.is_empty() {
            let r = addrs
                .entry((flow.ip, flow.proto))
                .or_insert_with(|| new_rule(Dest::Addr(flow.ip), flow.proto));
            r.ports.insert(flow.port, *seen);
        }
        for n in names {
            let r = hosts
                .entry((n.to_string(), flow.proto))
                .or_insert_with(|| new_rule(Dest::Host(n.to_string()), flow.proto));
            r.ports
                .entry(flow.port)
                .and_modify(|p| p.merge(seen))
                .or_insert(*seen);
            r.addrs.insert(flow.ip);
            r.lookups = e.lookups.get(n).map(|l| l.seen);
        }
    }
    // Every name on a CNAME chain must be allowed for the name asked to
    // resolve: the same ports, for the same protocol.
    let chained: Vec<(String, Protocol, NetSuggestion)> = hosts
        .iter()
        .flat_map(|((name, proto), r)| {
            e.lookups
                .get(name)
                .into_iter()
                .flat_map(|l| l.cnames.iter())
                .filter(|c| HostPattern::parse(c).is_ok())
                .map(|c| {
                    let mut chained = r.clone();
                    chained.dest = Dest::Host(c.clone());
                    chained.via = Some(name.clone());
                    chained.lookups = None;
                    (c.clone(), *proto, chained)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (c, proto, r) in chained {
        hosts.entry((c, proto)).or_insert(r);
    }
    s.unconnected = e
        .lookups
        .iter()
        .filter(|(n, _)| !connected.contains(n.as_str()))
        .map(|(n, l)| (n.clone(), l.seen))
        .collect();
    for ((name, proto), mut r) in hosts {
        r.id = ids.make(&[opts.identity, &name, proto.name()]);
        s.net.push(r);
    }
    for ((ip, proto), mut r) in addrs {
        r.id = ids.make(&[opts.identity, &ip.to_string(), proto.name()]);
        s.net.push(r);
    }
}

fn tools(e: &Evidence, opts: &Options<'_>, s: &mut Suggestion, ids: &mut Ids<'_>) {
    let keys: BTreeSet<&(String, String)> = e.calls.keys().chain(e.approved.keys()).collect();
    for key in keys {
        let (tool, action) = key;
        let what = format!("{tool}.{action}");
        if Pattern::parse(tool).is_err() || (!action.is_empty() && Pattern::parse(action).is_err())
        {
            s.notes.push(format!(
                "`{what}` cannot be written as a rule (whitespace in its name); skipped"
            ));
            continue;
        }
        let allowed = e.calls.get(key);
        let approved = e.approved.get(key);
        let merged = merge_calls(allowed, approved);
        let mut bounds = bounds_of(&merged, &mut s.notes, &what);
        let resource = merged.resources.iter().next().cloned().unwrap_or_default();
        if let Some(p) = opts.current {
            let covered = |c: Option<&CallSeen>, ok: &[ToolVerdict]| {
                c.is_none_or(|c| {
                    c.resources.len() <= 1
                        && edge_params(&bounds_for_check(c)).iter().all(|params| {
                            ok.contains(&tool_verdict(
                                p,
                                opts.identity,
                                tool,
                                action,
                                &resource,
                                params,
                            ))
                        })
                })
            };
            if covered(allowed, &[ToolVerdict::Allow])
                && covered(
                    approved,
                    &[ToolVerdict::Allow, ToolVerdict::ApprovalRequired],
                )
            {
                s.covered.calls += merged.seen.count;
                continue;
            }
        }
        let kind = match (allowed, approved) {
            (_, None) => ToolKind::Allow,
            (None, Some(_)) => ToolKind::RequireApproval,
            (Some(a), Some(b)) => {
                let split = bounds.iter().find_map(|bd| {
                    let lo = a.params.get(&bd.param)?;
                    let hi = b.params.get(&bd.param)?;
                    (bd.always && hi.numeric == hi.calls && hi.min > lo.max).then(|| {
                        ToolKind::AllowApprovalAbove {
                            param: bd.param.clone(),
                            threshold: lo.max,
                        }
                    })
                });
                split.unwrap_or(ToolKind::RequireApproval)
            }
        };
        if kind == ToolKind::RequireApproval {
            // Behind approval whatever the values: no bound to guess.
            bounds.clear();
        }
        let (resources, resources_note) = resource_patterns(&merged);
        let schema_known = opts
            .current
            .is_some_and(|p| p.schema_for(tool, action).is_some());
        if !schema_known && !merged.params.is_empty() {
            s.schemas.push(SchemaSuggestion {
                tool: tool.clone(),
                action: action.clone(),
                params: merged
                    .params
                    .iter()
                    .map(|(k, p)| {
                        let ty = if p.numeric == p.calls {
                            ParamType::Number
                        } else {
                            ParamType::Any
                        };
                        (k.clone(), ty)
                    })
                    .collect(),
            });
        }
        s.tools.push(ToolSuggestion {
            id: ids.make(&[opts.identity, tool, action]),
            tool: tool.clone(),
            action: action.clone(),
            resources,
            resources_note,
            bounds,
            kind,
            allowed: allowed.map(|c| c.seen),
            approved: approved.map(|c| c.seen),
            params: merged.params,
        });
    }
}
