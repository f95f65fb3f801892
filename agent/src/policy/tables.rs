//! Compiling a policy into the kernel's tables for one generation slot.
//!
//! The kernel does one longest-prefix lookup per trie, so each trie entry
//! must carry the port ranges of *every* rule whose prefix contains it: a
//! `/16` allowing port 80 inside a `/8` allowing port 443 gets both. The
//! compiler walks the prefixes in address order with a stack of enclosing
//! prefixes to merge them in O(n log n).

use std::collections::{BTreeMap, HashMap};

use agent_common::{
    IDENT_HAS_DENY, IdentityConfig, LpmData, LpmValue, MAX_PORTSETS, NO_RULE, NormAddr, OWN_RULE,
    PORTSET_RANGES, PROTO_ANY, PortRange as KRange, PortSet, Reason, lpm_scope,
    maps::LPM_SCOPE_BITS,
};

use super::{Cidr, Mode, NetRule, Policy};

/// An LPM trie key as the kernel sees it (`prefixlen` then data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LpmKey {
    pub prefix_len: u32,
    pub data: LpmData,
}

/// Everything one policy generation writes into the kernel.
#[derive(Debug, Default)]
pub struct KernelTables {
    pub slot: u32,
    /// Identity index → configuration, for every identity of the policy.
    pub identities: Vec<(u32, IdentityConfig)>,
    pub allow: Vec<(LpmKey, LpmValue)>,
    pub deny: Vec<(LpmKey, LpmValue)>,
    /// Port sets; entry `i` lives at kernel index `slot * MAX_PORTSETS + i`.
    pub portsets: Vec<PortSet>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error(
        "identity `{identity}`: {prefix} is covered by {count} port ranges of {action} rules (at most {max}); merge ports or split the CIDR rules",
        max = PORTSET_RANGES
    )]
    TooManyRanges {
        identity: String,
        prefix: Cidr,
        action: &'static str,
        count: usize,
    },
    #[error("the policy needs {count} distinct port sets; at most {max} fit in the kernel", max = MAX_PORTSETS)]
    TooManyPortSets { count: usize },
    #[error("identity `{0}` has no kernel index")]
    NoIndex(String),
}

/// Compile `policy` for `slot`; `index_of` gives each identity's stable index.
pub fn compile(
    policy: &Policy,
    slot: u32,
    index_of: &dyn Fn(&str) -> Option<u32>,
) -> Result<KernelTables, TableError> {
    let mut t = KernelTables {
        slot,
        ..KernelTables::default()
    };
    let mut interned: HashMap<Vec<KRange>, u32> = HashMap::new();
    for ident in &policy.identities {
        let index = index_of(&ident.id).ok_or_else(|| TableError::NoIndex(ident.id.clone()))?;
        t.identities.push((
            index,
            IdentityConfig {
                defined: 1,
                audit: u8::from(ident.mode == Mode::Audit),
                flags: if ident.deny.is_empty() {
                    0
                } else {
                    IDENT_HAS_DENY
                } | if ident.confinement.api_tcp {
                    agent_common::maps::IDENT_API_TCP
                } else {
                    0
                },
                ..IdentityConfig::default()
            },
        ));
        for (rules, action, out) in [
            (&ident.allow, "allow", &mut t.allow),
            (&ident.deny, "deny", &mut t.deny),
        ] {
            // Allows produce no events, so their ranges need no attribution:
            // dropping it lets far more entries share a port set. Denies keep
            // the exact rule for the audit trail.
            let attribute = action == "deny";
            for (cidr, own_rule, mut ranges) in merge_prefixes(rules) {
                if !attribute {
                    for r in &mut ranges {
                        r.rule = OWN_RULE;
                    }
                    ranges.sort_by_key(|r| (r.proto, r.lo, r.hi));
                    ranges = simplify(ranges);
                }
                if ranges.len() > PORTSET_RANGES {
                    return Err(TableError::TooManyRanges {
                        identity: ident.id.clone(),
                        prefix: cidr,
                        action,
                        count: ranges.len(),
                    });
                }
                let next = interned.len() as u32;
                let local = *interned.entry(ranges.clone()).or_insert_with(|| {
                    let mut set = PortSet::EMPTY;
                    set.len = ranges.len() as u32;
                    set.ranges[..ranges.len()].copy_from_slice(&ranges);
                    t.portsets.push(set);
                    next
                });
                let key = LpmKey {
                    prefix_len: LPM_SCOPE_BITS + u32::from(cidr.len),
                    data: LpmData {
                        scope: lpm_scope(slot, cidr.is_v6, index),
                        addr: cidr.bytes,
                    },
                };
                out.push((
                    key,
                    LpmValue {
                        portset: slot * MAX_PORTSETS + local,
                        rule: own_rule,
                    },
                ));
            }
        }
    }
    if t.portsets.len() > MAX_PORTSETS as usize {
        return Err(TableError::TooManyPortSets {
            count: t.portsets.len(),
        });
    }
    Ok(t)
}

fn kernel_ranges(rule: &NetRule) -> impl Iterator<Item = KRange> + '_ {
    rule.ports.iter().map(|p| KRange {
        lo: p.lo,
        hi: p.hi,
        proto: rule.protocol.number(),
        _pad: [0; 3],
        rule: rule.rule,
    })
}

/// Every distinct prefix of `rules` with the ranges of all rules containing
/// it, most specific first. When the prefix's own ranges all come from one
/// rule, that rule is returned and its ranges say `OWN_RULE`, so entries that
/// differ only by their owning rule share a port set.
fn merge_prefixes(rules: &[NetRule]) -> Vec<(Cidr, u32, Vec<KRange>)> {
    // Keyed by the CIDR itself: its order (family, address, length) puts
    // every prefix right after the prefixes that contain it.
    let mut own: BTreeMap<Cidr, (Cidr, Vec<KRange>)> = BTreeMap::new();
    for r in rules {
        let entry = own.entry(r.cidr).or_insert_with(|| (r.cidr, Vec::new()));
        entry.1.extend(kernel_ranges(r));
    }
    let mut out = Vec::with_capacity(own.len());
    // Enclosing prefixes of the current one, outermost first, with their
    // accumulated ranges (explicit rule ids).
    let mut stack: Vec<(Cidr, Vec<KRange>)> = Vec::new();
    for (_, (cidr, ranges)) in own {
        while let Some((top, _)) = stack.last() {
            if top.contains(&cidr) {
                break;
            }
            stack.pop();
        }
        let owner = match ranges.split_first() {
            Some((first, rest)) if rest.iter().all(|r| r.rule == first.rule) => first.rule,
            _ => NO_RULE,
        };
        let mut merged = ranges;
        if let Some((_, inherited)) = stack.last() {
            merged.extend(inherited.iter().copied());
        }
        let merged = simplify(merged);
        let emitted = merged
            .iter()
            .map(|r| KRange {
                rule: if owner != NO_RULE && r.rule == owner {
                    OWN_RULE
                } else {
                    r.rule
                },
                ..*r
            })
            .collect();
        stack.push((cidr, merged));
        out.push((cidr, owner, emitted));
    }
    out
}

/// Drop duplicates (keeping the first, most specific rule), and collapse to
/// the one "any port, any protocol" range when there is one.
fn simplify(ranges: Vec<KRange>) -> Vec<KRange> {
    if let Some(all) = ranges
        .iter()
        .find(|r| r.lo == 0 && r.hi == u16::MAX && r.proto == PROTO_ANY)
    {
        return vec![*all];
    }
    let mut out: Vec<KRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if !out
            .iter()
            .any(|o| o.lo == r.lo && o.hi == r.hi && o.proto == r.proto)
        {
            out.push(r);
        }
    }
    out
}

impl KernelTables {
    /// What the kernel programs would decide from these tables (deny first,
    /// then allow, else default deny). Used to test the compiler against the
    /// policy's own semantics, and by tools that explain verdicts.
    pub fn judge(&self, identity: u32, addr: &NormAddr, port: u16, proto: u8) -> (Reason, u32) {
        let look = |entries: &[(LpmKey, LpmValue)]| -> Option<u32> {
            let scope = lpm_scope(self.slot, addr.is_v6, identity);
            let best = entries
                .iter()
                .filter(|(k, _)| {
                    k.data.scope == scope
                        && Cidr {
                            bytes: k.data.addr,
                            is_v6: addr.is_v6,
                            len: (k.prefix_len - LPM_SCOPE_BITS) as u8,
                        }
                        .contains_addr(addr)
                })
                .max_by_key(|(k, _)| k.prefix_len)?;
            let set = &self.portsets[(best.1.portset - self.slot * MAX_PORTSETS) as usize];
            set.ranges[..set.len as usize]
                .iter()
                .find(|r| r.matches(port, proto))
                .map(|r| {
                    if r.rule == OWN_RULE {
                        best.1.rule
                    } else {
                        r.rule
                    }
                })
        };
        if let Some(rule) = look(&self.deny) {
            return (Reason::DenyRule, rule);
        }
        if let Some(rule) = look(&self.allow) {
            return (Reason::AllowRule, rule);
        }
        (Reason::DefaultDeny, NO_RULE)
    }
}

impl Policy {
    /// The reference semantics of egress rules (CIDR rules only): deny wins,
    /// then allow, else default deny. Returns the reason and whether a rule
    /// decided.
    pub fn judge_cidr(&self, identity: &str, addr: &NormAddr, port: u16, proto: u8) -> Reason {
        let Some(ident) = self.identity(identity) else {
            return Reason::UnknownIdentity;
        };
        let hit = |rules: &[NetRule]| {
            rules.iter().any(|r| {
                r.cidr.contains_addr(addr)
                    && (r.protocol.number() == PROTO_ANY || r.protocol.number() == proto)
                    && r.ports.iter().any(|p| p.contains(port))
            })
        };
        if hit(&ident.deny) {
            Reason::DenyRule
        } else if hit(&ident.allow) {
            Reason::AllowRule
        } else {
            Reason::DefaultDeny
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_str;

    fn policy(text: &str) -> Policy {
        load_str("t.yaml", text)
            .unwrap_or_else(|e| panic!("{e}"))
            .policy
    }

    fn index(_: &str) -> Option<u32> {
        Some(7)
    }

    #[test]
    fn nested_prefixes_inherit_ports() {
        let p = policy(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443]}\n        - {cidr: 10.1.0.0/16, ports: [80]}\n",
        );
        let t = compile(&p, 1, &index).unwrap_or_else(|e| panic!("{e}"));
        let a = NormAddr::v4([10, 1, 2, 3]);
        assert_eq!(
            t.judge(7, &a, 443, 6).0,
            Reason::AllowRule,
            "outer rule still applies inside the /16"
        );
        assert_eq!(
            t.judge(7, &a, 80, 6),
            (Reason::AllowRule, 1),
            "the entry's own rule"
        );
        assert_eq!(
            t.judge(7, &NormAddr::v4([10, 2, 0, 1]), 80, 6).0,
            Reason::DefaultDeny
        );
        assert!(
            t.allow.iter().all(|(_, v)| v.portset >= MAX_PORTSETS),
            "slot 1 port sets live in the upper half"
        );
    }

    #[test]
    fn ipv6_prefixes_do_not_break_ipv4_inheritance() {
        // a00::/16 has the same leading bytes as 10.0.0.0/8: families must
        // not interleave when prefixes are ordered.
        let p = policy(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8, ports: [443]}\n        - {cidr: 'a00::/16', ports: [22]}\n        - {cidr: 10.1.0.0/16, ports: [80]}\n",
        );
        let t = compile(&p, 0, &index).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.judge(7, &NormAddr::v4([10, 1, 0, 9]), 443, 6).0,
            Reason::AllowRule
        );
        assert_eq!(
            t.judge(7, &NormAddr::v4([10, 1, 0, 9]), 80, 6).0,
            Reason::AllowRule
        );
        assert_eq!(
            t.judge(7, &NormAddr::v4([10, 1, 0, 9]), 22, 6).0,
            Reason::DefaultDeny
        );
    }

    #[test]
    fn deny_wins_and_any_port_collapses() {
        let p = policy(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {cidr: 0.0.0.0/0}\n      deny:\n        - {cidr: 192.0.2.0/24, ports: [25], protocol: tcp}\n",
        );
        let t = compile(&p, 0, &index).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.judge(7, &NormAddr::v4([192, 0, 2, 9]), 25, 6).0,
            Reason::DenyRule
        );
        assert_eq!(
            t.judge(7, &NormAddr::v4([192, 0, 2, 9]), 25, 17).0,
            Reason::AllowRule
        );
        assert_eq!(
            t.portsets.iter().filter(|s| s.len == 1).count(),
            t.portsets.len()
        );
    }

    #[test]
    fn too_many_ranges_is_an_error() {
        let ports: Vec<String> = (0..40).map(|i| (1000 + 2 * i).to_string()).collect();
        let text = format!(
            "version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n        - {{cidr: 10.0.0.0/8, ports: [{}]}}\n",
            ports.join(", ")
        );
        let err = compile(&policy(&text), 0, &index).unwrap_err();
        assert!(
            matches!(err, TableError::TooManyRanges { count: 40, .. }),
            "{err}"
        );
    }

    #[test]
    fn many_rules_with_the_same_ports_share_port_sets() {
        let mut text =
            String::from("version: 1\nidentities:\n  - id: a\n    egress:\n      allow:\n");
        for i in 0..2000u32 {
            text.push_str(&format!(
                "        - {{cidr: 10.0.{}.{}, ports: [{}]}}\n",
                i / 250,
                i % 250,
                443 + i % 3
            ));
        }
        text.push_str("      deny:\n        - {cidr: 10.0.0.0/8, ports: [25]}\n");
        let p = policy(&text);
        let t = compile(&p, 0, &index).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            t.portsets.len() <= 8,
            "{} port sets for 3 distinct port lists",
            t.portsets.len()
        );
        // Rule attribution survives the sharing.
        assert_eq!(
            t.judge(7, &NormAddr::v4([10, 0, 0, 5]), 445, 6),
            (Reason::AllowRule, 5)
        );
        assert_eq!(
            t.judge(7, &NormAddr::v4([10, 0, 0, 5]), 25, 6),
            (Reason::DenyRule, 2000)
        );
    }

    /// Random policies and destinations: the compiled tables must decide
    /// exactly as the policy's reference semantics.
    #[test]
    fn tables_agree_with_reference_semantics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..30 {
            let mut rules = String::new();
            for kind in ["allow", "deny"] {
                rules.push_str(&format!("      {kind}:\n"));
                for _ in 0..(1 + rand(12)) {
                    let len = [0, 8, 16, 24, 28, 32][rand(6) as usize];
                    let addr = format!("10.{}.{}.{}", rand(3), rand(3), rand(4));
                    let ports = match rand(3) {
                        0 => String::new(),
                        1 => format!(", ports: [{}]", 1 + rand(4)),
                        _ => format!(", ports: [\"{}-{}\"]", 1 + rand(2), 2 + rand(3)),
                    };
                    let proto = ["", ", protocol: tcp", ", protocol: udp"][rand(3) as usize];
                    rules.push_str(&format!("        - {{cidr: {addr}/{len}{ports}{proto}}}\n"));
                }
            }
            let text = format!("version: 1\nidentities:\n  - id: a\n    egress:\n{rules}");
            let p = load_str("t.yaml", &text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"))
                .policy;
            let t = compile(&p, 0, &index).unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..200 {
                let a = NormAddr::v4([10, rand(3) as u8, rand(3) as u8, rand(4) as u8]);
                let port = 1 + rand(5) as u16;
                let proto = [6, 17][rand(2) as usize];
                assert_eq!(
                    t.judge(7, &a, port, proto).0,
                    p.judge_cidr("a", &a, port, proto),
                    "{a:?}:{port}/{proto}\n{text}"
                );
            }
        }
    }
}
