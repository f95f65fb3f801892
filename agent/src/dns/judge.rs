//! Is a name allowed for an identity? Its `host` rules decide: a deny rule
//! that matches wins, then any allow rule that matches; otherwise the name
//! is forbidden (deny by default, as for addresses).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use agent_common::{LearnedRange, PROTO_ANY};

use crate::policy::{Cidr, HostRule, Policy, Protocol, net::norm_of};

/// What the active policy says about names, for one identity.
#[derive(Clone, Debug)]
pub struct IdentityJudge {
    pub index: u32,
    pub name: String,
    pub audit: bool,
    pub allow: Vec<HostRule>,
    pub deny: Vec<HostRule>,
    /// Prefixes of the identity's `cidr` allow rules: an inside address
    /// (loopback, private…) in an answer is learned only when one of these
    /// covers it (`dns::internal`).
    pub cidr_allow: Vec<Cidr>,
}

/// The verdict on one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameVerdict {
    /// Allowed by these rules (their ports apply to the learned addresses).
    Allow(Vec<HostRule>),
    /// A deny rule names it.
    Deny(HostRule),
    /// No rule names it.
    NoRule,
}

impl NameVerdict {
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Allow(_) => "host-rule",
            Self::Deny(_) => "deny-host-rule",
            Self::NoRule => "no-host-rule",
        }
    }

    /// The deciding rule's index in the policy generation.
    pub fn rule(&self) -> Option<u32> {
        match self {
            Self::Allow(rules) => rules.first().map(|r| r.rule),
            Self::Deny(rule) => Some(rule.rule),
            Self::NoRule => None,
        }
    }
}

impl IdentityJudge {
    /// Does a `cidr` allow rule of the identity cover `ip`?
    pub fn cidr_allows(&self, ip: IpAddr) -> bool {
        let addr = norm_of(ip);
        self.cidr_allow.iter().any(|c| c.contains_addr(&addr))
    }

    pub fn judge(&self, name: &str) -> NameVerdict {
        if let Some(rule) = self.deny.iter().find(|r| r.pattern.matches(name)) {
            return NameVerdict::Deny(rule.clone());
        }
        let rules: Vec<HostRule> = self
            .allow
            .iter()
            .filter(|r| r.pattern.matches(name))
            .cloned()
            .collect();
        if rules.is_empty() {
            NameVerdict::NoRule
        } else {
            NameVerdict::Allow(rules)
        }
    }
}

/// Every identity of a policy that has host rules, by kernel index.
#[derive(Clone, Debug, Default)]
pub struct Judges {
    pub by_index: HashMap<u32, Arc<IdentityJudge>>,
    pub policy_version: String,
    /// Ids of the host rules by rule index, for events (only those: a
    /// large policy's CIDR rules are never named by the proxy).
    pub rule_ids: HashMap<u32, String>,
}

impl Judges {
    /// With `steer_audit`, identities in audit mode are judged (and so
    /// steered) even when they name no hosts: their lookups are recorded.
    pub fn from_policy(
        policy: &Policy,
        steer_audit: bool,
        index_of: &dyn Fn(&str) -> Option<u32>,
    ) -> Self {
        let mut by_index = HashMap::new();
        for ident in &policy.identities {
            let observed = steer_audit && ident.mode == crate::policy::Mode::Audit;
            if ident.allow_hosts.is_empty() && ident.deny_hosts.is_empty() && !observed {
                continue;
            }
            let Some(index) = index_of(&ident.id) else {
                continue;
            };
            by_index.insert(
                index,
                Arc::new(IdentityJudge {
                    index,
                    name: ident.id.clone(),
                    audit: ident.mode == crate::policy::Mode::Audit,
                    allow: ident.allow_hosts.clone(),
                    deny: ident.deny_hosts.clone(),
                    cidr_allow: ident.allow.iter().map(|r| r.cidr).collect(),
                }),
            );
        }
        Self {
            by_index,
            policy_version: policy.version.to_string(),
            rule_ids: policy
                .identities
                .iter()
                .flat_map(|i| i.allow_hosts.iter().chain(&i.deny_hosts))
                .filter_map(|h| policy.rule(h.rule).map(|r| (h.rule, r.id.clone())))
                .collect(),
        }
    }

    pub fn rule_id(&self, rule: u32) -> Option<String> {
        self.rule_ids.get(&rule).cloned()
    }
}

/// The kernel ranges a set of host rules grants (or, with `deny`, refuses)
/// until `expires_ns`.
pub fn ranges_of(rules: &[HostRule], deny: bool, expires_ns: u64) -> Vec<LearnedRange> {
    let mut out = Vec::new();
    for rule in rules {
        let proto = match rule.protocol {
            Protocol::Any => PROTO_ANY,
            p => p.number(),
        };
        for ports in &rule.ports {
            out.push(LearnedRange {
                expires_ns,
                rule: rule.rule,
                lo: ports.lo,
                hi: ports.hi,
                proto,
                deny: u8::from(deny),
                _pad: [0; 6],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{HostPattern, PortRange};

    fn rule(n: u32, pattern: &str) -> HostRule {
        HostRule {
            rule: n,
            pattern: HostPattern::parse(pattern).unwrap_or_else(|e| panic!("{e}")),
            ports: vec![PortRange { lo: 443, hi: 443 }],
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn deny_wins_then_allow_then_nothing() {
        let j = IdentityJudge {
            index: 1,
            name: "a".into(),
            audit: false,
            allow: vec![rule(0, "*.example.com"), rule(1, "api.example.com")],
            deny: vec![rule(2, "secret.example.com")],
            cidr_allow: vec!["10.20.0.0/16".parse().unwrap_or_else(|e| panic!("{e}"))],
        };
        assert!(j.cidr_allows("10.20.3.4".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(j.cidr_allows("::ffff:10.20.3.4".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!j.cidr_allows("10.21.0.1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!(
            j.judge("API.example.com."),
            NameVerdict::Allow(vec![rule(0, "*.example.com"), rule(1, "api.example.com")])
        );
        assert_eq!(
            j.judge("secret.example.com"),
            NameVerdict::Deny(rule(2, "secret.example.com"))
        );
        assert_eq!(j.judge("example.com"), NameVerdict::NoRule);
        assert_eq!(j.judge("evil.org"), NameVerdict::NoRule);
    }

    #[test]
    fn ranges_carry_ports_protocol_and_expiry() {
        let r = ranges_of(&[rule(7, "a.b")], false, 99);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].lo, r[0].hi, r[0].proto, r[0].rule), (443, 443, 6, 7));
        assert_eq!((r[0].expires_ns, r[0].deny), (99, 0));
    }
}
