//! `palisade policy diff OLD NEW`: what becomes allowed or denied.
//!
//! For addresses the diff is semantic: the address space and port range of
//! every identity are cut at every rule boundary of either policy, each
//! piece is judged by both, and the pieces whose verdict changes are merged
//! back into CIDRs. Host, tool and budget rules are compared rule by rule
//! (a CEL condition's meaning cannot be compared in general).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Cidr, Destination, Identity, Policy, Protocol, RuleKind,
    decide::{EgressTarget, EgressVerdict},
    net::ip_of,
};
use agent_common::NormAddr;

/// A verdict change: (old verdict, new verdict, protocol, port range).
type Change<P> = (&'static str, &'static str, P, (u16, u16));
/// Changed address intervals, by change.
type Changes<P> = BTreeMap<Change<P>, Vec<(u128, u128)>>;

/// Above this many pieces per identity, addresses are compared rule by rule.
const MAX_PIECES: u64 = 4_000_000;

pub fn diff(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&str> = old
        .identities
        .iter()
        .chain(&new.identities)
        .map(|i| i.id.as_str())
        .collect();
    for name in names {
        match (old.identity(name), new.identity(name)) {
            (None, Some(n)) => {
                out.push(format!("identity `{name}` added (mode {})", n.mode.name()))
            }
            (Some(_), None) => out.push(format!(
                "identity `{name}` removed: its enrolled processes are denied everything"
            )),
            (Some(o), Some(n)) => identity_diff(old, new, o, n, &mut out),
            (None, None) => {}
        }
    }
    out
}

fn identity_diff(old: &Policy, new: &Policy, o: &Identity, n: &Identity, out: &mut Vec<String>) {
    let id = &n.id;
    if o.mode != n.mode {
        out.push(format!(
            "identity `{id}`: mode {} -> {}",
            o.mode.name(),
            n.mode.name()
        ));
    }
    if o.effective_roles != n.effective_roles {
        out.push(format!(
            "identity `{id}`: roles [{}] -> [{}]",
            o.effective_roles.join(", "),
            n.effective_roles.join(", ")
        ));
    }
    address_diff(old, new, o, n, out);
    let rules = |p: &Policy, i: &Identity, kind: RuleKind| -> BTreeMap<String, String> {
        let mut indices: Vec<u32> = Vec::new();
        match kind {
            RuleKind::Egress => {
                indices.extend(i.allow_hosts.iter().chain(&i.deny_hosts).map(|r| r.rule));
                indices.extend(i.approval_egress.iter().chain(&i.grantable).map(|r| r.rule));
            }
            RuleKind::Tool => indices.extend(i.tools.all().map(|r| r.rule)),
            RuleKind::Budget => indices.extend(i.budgets.iter().map(|b| b.rule)),
        }
        indices
            .into_iter()
            .filter_map(|r| {
                p.rule(r)
                    .map(|info| (info.id.clone(), p.summary(r).to_string()))
            })
            .collect()
    };
    for kind in [RuleKind::Egress, RuleKind::Tool, RuleKind::Budget] {
        let what = match kind {
            RuleKind::Egress => "host/grant rule",
            RuleKind::Tool => "tool rule",
            RuleKind::Budget => "budget",
        };
        let (a, b) = (rules(old, o, kind), rules(new, n, kind));
        for (rid, summary) in &b {
            match a.get(rid) {
                None => out.push(format!("identity `{id}`: {what} `{rid}` added: {summary}")),
                Some(prev) if prev != summary => {
                    out.push(format!(
                        "identity `{id}`: {what} `{rid}` changed: {prev} -> {summary}"
                    ));
                }
                Some(_) => {}
            }
        }
        for (rid, summary) in &a {
            if !b.contains_key(rid) {
                out.push(format!(
                    "identity `{id}`: {what} `{rid}` removed: {summary}"
                ));
            }
        }
    }
}

/// Address boundaries: (family is v6, start, end inclusive) as u128.
fn range_of(c: &Cidr) -> (u128, u128) {
    let bits: u32 = if c.is_v6 { 128 } else { 32 };
    let start = if c.is_v6 {
        u128::from_be_bytes(c.bytes)
    } else {
        u128::from(u32::from_be_bytes([
            c.bytes[0], c.bytes[1], c.bytes[2], c.bytes[3],
        ]))
    };
    let host_bits = bits - u32::from(c.len);
    let size_minus_one = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (start, start.saturating_add(size_minus_one))
}

fn cidrs_of(i: &Identity) -> impl Iterator<Item = Cidr> + '_ {
    i.allow
        .iter()
        .chain(&i.deny)
        .map(|r| r.cidr)
        .chain(
            i.approval_egress
                .iter()
                .filter_map(|g| match g.destination {
                    Destination::Cidr(c) => Some(c),
                    Destination::Host(_) => None,
                }),
        )
}

fn ports_of(i: &Identity) -> impl Iterator<Item = (u16, u16)> + '_ {
    i.allow
        .iter()
        .chain(&i.deny)
        .flat_map(|r| r.ports.iter().map(|p| (p.lo, p.hi)))
        .chain(
            i.approval_egress
                .iter()
                .flat_map(|g| g.ports.iter().map(|p| (p.lo, p.hi))),
        )
}

fn address_diff(old: &Policy, new: &Policy, o: &Identity, n: &Identity, out: &mut Vec<String>) {
    let mut port_cuts: BTreeSet<u32> = BTreeSet::from([0, 65_536]);
    for (lo, hi) in ports_of(o).chain(ports_of(n)) {
        port_cuts.insert(u32::from(lo));
        port_cuts.insert(u32::from(hi) + 1);
    }
    let ports: Vec<(u16, u16)> = port_cuts
        .iter()
        .zip(port_cuts.iter().skip(1))
        .map(|(a, b)| (*a as u16, (*b - 1) as u16))
        .collect();
    for is_v6 in [false, true] {
        let cidrs: Vec<Cidr> = cidrs_of(o)
            .chain(cidrs_of(n))
            .filter(|c| c.is_v6 == is_v6)
            .collect();
        if cidrs.is_empty() {
            continue;
        }
        let mut cuts: BTreeSet<u128> = BTreeSet::new();
        for c in &cidrs {
            let (s, e) = range_of(c);
            cuts.insert(s);
            if let Some(next) = e.checked_add(1) {
                cuts.insert(next);
            }
        }
        let cuts: Vec<u128> = cuts.into_iter().collect();
        let pieces = cuts.len() as u64 * ports.len() as u64 * 2;
        if pieces > MAX_PIECES {
            out.push(format!(
                "identity `{}`: {} address pieces are too many to compare exactly; CIDR rules compared one by one",
                n.id, pieces
            ));
            rule_level(old, new, o, n, out);
            return;
        }
        let max = if is_v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        // (old, new, proto, ports) -> address intervals that changed.
        let mut changes: Changes<&'static str> = BTreeMap::new();
        for (k, start) in cuts.iter().enumerate() {
            let end = cuts.get(k + 1).map_or(max, |n| n - 1);
            if !cidrs.iter().any(|c| {
                let (s, e) = range_of(c);
                s <= *start && *start <= e
            }) {
                continue; // no rule covers it in either policy: default deny in both
            }
            let addr = to_addr(is_v6, *start);
            for (lo, hi) in &ports {
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    let t = EgressTarget {
                        ip: Some(ip_of(&addr)),
                        host: None,
                        port: *lo,
                        protocol: proto,
                    };
                    let a = old.judge_egress(&o.id, &t).0;
                    let b = new.judge_egress(&n.id, &t).0;
                    if a != b {
                        changes
                            .entry((name(a), name(b), proto.name(), (*lo, *hi)))
                            .or_default()
                            .push((*start, end));
                    }
                }
            }
        }
        // Same change for tcp and udp: say "any".
        let mut merged: Changes<String> = BTreeMap::new();
        for ((a, b, proto, ports), ranges) in &changes {
            let other = if *proto == "tcp" { "udp" } else { "tcp" };
            let twin = changes.get(&(*a, *b, other, *ports));
            let label = if twin == Some(ranges) {
                "any".to_string()
            } else {
                proto.to_string()
            };
            merged
                .entry((a, b, label, *ports))
                .or_insert_with(|| ranges.clone());
        }
        for ((a, b, proto, (lo, hi)), ranges) in merged {
            let port_text = if lo == 0 && hi == u16::MAX {
                "any port".to_string()
            } else if lo == hi {
                format!("port {lo}")
            } else {
                format!("ports {lo}-{hi}")
            };
            let cidrs: Vec<String> = coalesce(ranges)
                .into_iter()
                .flat_map(|(s, e)| to_cidrs(is_v6, s, e))
                .collect();
            out.push(format!(
                "identity `{}`: {} {proto} {port_text}: {a} -> {b}",
                n.id,
                cidrs.join(", ")
            ));
        }
    }
}

fn name(v: EgressVerdict) -> &'static str {
    v.name()
}

fn rule_level(old: &Policy, new: &Policy, o: &Identity, n: &Identity, out: &mut Vec<String>) {
    let set = |p: &Policy, i: &Identity| -> BTreeMap<String, String> {
        i.allow
            .iter()
            .chain(&i.deny)
            .filter_map(|r| {
                p.rule(r.rule)
                    .map(|info| (info.id.clone(), p.summary(r.rule).to_string()))
            })
            .collect()
    };
    let (a, b) = (set(old, o), set(new, n));
    for (rid, s) in &b {
        if a.get(rid) != Some(s) {
            out.push(format!(
                "identity `{}`: CIDR rule `{rid}` added or changed: {s}",
                n.id
            ));
        }
    }
    for (rid, s) in &a {
        if !b.contains_key(rid) {
            out.push(format!(
                "identity `{}`: CIDR rule `{rid}` removed: {s}",
                n.id
            ));
        }
    }
}

fn coalesce(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(s) || s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn to_addr(is_v6: bool, v: u128) -> NormAddr {
    if is_v6 {
        NormAddr::v6(v.to_be_bytes())
    } else {
        NormAddr::v4((v as u32).to_be_bytes())
    }
}

/// The fewest CIDRs covering exactly [s, e].
fn to_cidrs(is_v6: bool, mut s: u128, e: u128) -> Vec<String> {
    let bits: u32 = if is_v6 { 128 } else { 32 };
    let mut out = Vec::new();
    loop {
        // Largest block aligned at s that fits in [s, e].
        let mut size_bits = if s == 0 {
            bits
        } else {
            s.trailing_zeros().min(bits)
        };
        while size_bits > 0 {
            let last = if size_bits >= 128 {
                u128::MAX
            } else {
                s + ((1u128 << size_bits) - 1)
            };
            if last <= e && last >= s {
                break;
            }
            size_bits -= 1;
        }
        let len = bits - size_bits;
        out.push(format!("{}/{len}", ip_of(&to_addr(is_v6, s))));
        let block_end = if size_bits >= 128 {
            u128::MAX
        } else {
            s + ((1u128 << size_bits) - 1)
        };
        if block_end >= e {
            break;
        }
        s = block_end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::policy::load_str;

    fn p(text: &str) -> crate::policy::Policy {
        load_str("p.yaml", text)
            .unwrap_or_else(|e| panic!("{e}"))
            .policy
    }

    #[test]
    fn reports_what_becomes_allowed_and_denied() {
        let old = p(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443], protocol: tcp}\n",
        );
        let new = p(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443], protocol: tcp}\n        - {cidr: 192.168.1.0/24, ports: [5432], protocol: tcp}\n      deny:\n        - {cidr: 10.9.0.0/16}\n  - id: b\n",
        );
        let d = super::diff(&old, &new);
        assert!(
            d.contains(&"identity `a`: 10.9.0.0/16 tcp port 443: allow -> deny".to_string()),
            "{d:#?}"
        );
        assert!(
            d.contains(&"identity `a`: 192.168.1.0/24 tcp port 5432: deny -> allow".to_string()),
            "{d:#?}"
        );
        assert!(
            d.contains(&"identity `b` added (mode enforce)".to_string()),
            "{d:#?}"
        );
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(super::diff(&new, &new).is_empty());
    }

    #[test]
    fn cidr_cover_is_minimal() {
        assert_eq!(
            super::to_cidrs(false, 10 << 24, (11 << 24) - 1),
            vec!["10.0.0.0/8"]
        );
        assert_eq!(
            super::to_cidrs(false, (10 << 24) + 1, (10 << 24) + 6),
            vec!["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(
            super::to_cidrs(false, 0, u128::from(u32::MAX)),
            vec!["0.0.0.0/0"]
        );
    }
}
