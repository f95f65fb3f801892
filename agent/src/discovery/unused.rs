//! `palisade policy unused`: which rules, roles and tool permissions of a
//! policy decided nothing in the trail's window, and which identities hold
//! more through their roles than they used — the recommendations to
//! tighten.
//!
//! A rule is *used* when a record names it as the deciding rule. Some rules
//! cannot leave such a record: the kernel records denied and would-deny
//! connections, not allowed ones, so an address (`cidr`) allow rule is
//! never named; budgets are named only when they refuse. Those are
//! reported as `no-evidence`, never as unused.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::records::{Record, Span, show};
use crate::policy::{Policy, RuleAction, RuleKind, RuleOwner};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Used,
    Unused,
    NoEvidence,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleReport {
    pub id: String,
    /// `role:NAME` or `identity:NAME`.
    pub owner: String,
    pub summary: String,
    /// `file:line:column`.
    pub location: String,
    pub status: Status,
    pub uses: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Identities it decided for, with counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub identities: BTreeMap<String, u64>,
    /// Tool rules: the actions of the calls it decided.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub actions_used: BTreeSet<String>,
    /// Tool rules: action patterns no decided call matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions_unused: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoleReport {
    pub id: String,
    pub elevated: bool,
    pub status: Status,
    pub rules: usize,
    pub rules_used: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdentityReport {
    pub id: String,
    pub roles: Vec<String>,
    /// Rules its roles give it that decided nothing for it.
    pub unused_role_rules: Vec<String>,
    /// Its own rules that decided nothing.
    pub unused_own_rules: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub policy_version: String,
    pub files: Vec<String>,
    pub records: u64,
    pub window_first: Option<String>,
    pub window_last: Option<String>,
    pub rules: Vec<RuleReport>,
    pub roles: Vec<RoleReport>,
    pub identities: Vec<IdentityReport>,
}

#[derive(Default)]
struct Use {
    count: u64,
    first: i64,
    last: i64,
    identities: BTreeMap<String, u64>,
    actions: BTreeSet<String>,
}

/// Counts uses while the trail streams by: memory grows with rules and
/// identities, not records.
pub struct Tally<'p> {
    policy: &'p Policy,
    by_id: HashMap<&'p str, usize>,
    uses: Vec<Use>,
}

impl<'p> Tally<'p> {
    pub fn new(policy: &'p Policy) -> Self {
        Self {
            policy,
            by_id: policy
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.as_str(), i))
                .collect(),
            uses: (0..policy.rules.len()).map(|_| Use::default()).collect(),
        }
    }

    pub fn add(&mut self, r: &Record<'_>, t: i64) {
        let Some(rule) = r.rule.as_deref() else {
            return;
        };
        let Some(&i) = self.by_id.get(rule) else {
            return;
        };
        // A record whose deciding rule did not decide (a refused token
        // names none; a rejected policy is not a decision) is skipped by
        // the `rule` check above; losses and daemon records name none.
        let u = &mut self.uses[i];
        if u.count == 0 {
            u.first = t;
        }
        u.count += 1;
        u.first = u.first.min(t);
        u.last = u.last.max(t);
        if let Some(id) = r.identity.as_deref() {
            *u.identities.entry(id.to_string()).or_default() += 1;
        }
        if let Some(c) = &r.call
            && !c.action.is_empty()
            && u.actions.len() < 64
        {
            u.actions.insert(c.action.to_string());
        }
    }

    pub fn report(self, span: &Span) -> Report {
        let p = self.policy;
        let host_rules: BTreeSet<u32> = p
            .identities
            .iter()
            .flat_map(|i| i.allow_hosts.iter().chain(&i.deny_hosts).map(|h| h.rule))
            .collect();
        let tool_rules: HashMap<u32, &crate::policy::ToolRule> = p
            .identities
            .iter()
            .flat_map(|i| i.tools.all().map(|r| (r.rule, r)))
            .collect();
        let mut rules = Vec::new();
        for (i, (info, u)) in p.rules.iter().zip(self.uses).enumerate() {
            let silent = match (info.kind, info.action) {
                (RuleKind::Budget, _) => true,
                (RuleKind::Egress, RuleAction::Allow) => !host_rules.contains(&(i as u32)),
                _ => false,
            };
            let status = if u.count > 0 {
                Status::Used
            } else if silent {
                Status::NoEvidence
            } else {
                Status::Unused
            };
            let actions_unused = match tool_rules.get(&(i as u32)) {
                Some(t) if u.count > 0 => {
                    if t.actions.is_empty() {
                        vec!["*".to_string()]
                    } else {
                        t.actions
                            .iter()
                            .filter(|a| !u.actions.iter().any(|x| a.matches(x)))
                            .map(ToString::to_string)
                            .collect()
                    }
                }
                _ => Vec::new(),
            };
            rules.push(RuleReport {
                id: info.id.clone(),
                owner: match &info.owner {
                    RuleOwner::Role(r) => format!("role:{r}"),
                    RuleOwner::Identity(r) => format!("identity:{r}"),
                },
                summary: p.summary(i as u32).to_string(),
                location: info.loc.to_string(),
                status,
                uses: u.count,
                first: (u.count > 0).then(|| show(u.first)),
                last: (u.count > 0).then(|| show(u.last)),
                identities: u.identities,
                actions_used: u.actions,
                actions_unused,
            });
        }
        let roles = p
            .roles
            .iter()
            .map(|role| {
                let owned: Vec<&RuleReport> = rules
                    .iter()
                    .filter(|r| r.owner == format!("role:{}", role.id))
                    .collect();
                let used = owned.iter().filter(|r| r.status == Status::Used).count();
                let judged = owned.iter().any(|r| r.status != Status::NoEvidence);
                RoleReport {
                    id: role.id.clone(),
                    elevated: role.elevated,
                    status: if used > 0 {
                        Status::Used
                    } else if judged {
                        Status::Unused
                    } else {
                        Status::NoEvidence
                    },
                    rules: owned.len(),
                    rules_used: used,
                }
            })
            .collect();
        let identities = p
            .identities
            .iter()
            .map(|ident| {
                let unused_for = |owner: &str| -> Vec<String> {
                    rules
                        .iter()
                        .filter(|r| {
                            r.owner == owner
                                && r.status != Status::NoEvidence
                                && !r.identities.contains_key(&ident.id)
                        })
                        .map(|r| r.id.clone())
                        .collect()
                };
                IdentityReport {
                    id: ident.id.clone(),
                    roles: ident.effective_roles.clone(),
                    unused_role_rules: ident
                        .effective_roles
                        .iter()
                        .flat_map(|r| unused_for(&format!("role:{r}")))
                        .collect(),
                    unused_own_rules: unused_for(&format!("identity:{}", ident.id)),
                }
            })
            .collect();
        Report {
            policy_version: p.version.to_string(),
            files: span.files.iter().map(|f| f.display().to_string()).collect(),
            records: span.in_window,
            window_first: span.first.map(show),
            window_last: span.last.map(show),
            rules,
            roles,
            identities,
        }
    }
}

/// The report for people.
pub fn human(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {} against {} ({} records{})",
        r.policy_version,
        r.files.join(", "),
        r.records,
        match (&r.window_first, &r.window_last) {
            (Some(a), Some(b)) => format!(", {a} to {b}"),
            _ => String::new(),
        }
    );
    let section = |out: &mut String, title: &str, items: Vec<String>| {
        if !items.is_empty() {
            let _ = writeln!(out, "{title}:");
            for i in items {
                let _ = writeln!(out, "  {i}");
            }
        }
    };
    let line = |x: &RuleReport| {
        format!(
            "{}: rule `{}` ({}: {})",
            x.location,
            x.id,
            x.owner.replacen(':', " ", 1),
            x.summary
        )
    };
    section(
        &mut out,
        "rules that decided nothing",
        r.rules
            .iter()
            .filter(|x| x.status == Status::Unused)
            .map(line)
            .collect(),
    );
    section(
        &mut out,
        "rules the trail cannot show in use (allowed connections by address and budgets that never refused leave no record)",
        r.rules
            .iter()
            .filter(|x| x.status == Status::NoEvidence)
            .map(line)
            .collect(),
    );
    section(
        &mut out,
        "roles none of whose rules decided anything",
        r.roles
            .iter()
            .filter(|x| x.status == Status::Unused)
            .map(|x| {
                format!(
                    "role `{}`{} ({} rules)",
                    x.id,
                    if x.elevated { " (elevated)" } else { "" },
                    x.rules
                )
            })
            .collect(),
    );
    let mut tighten: Vec<String> = r
        .rules
        .iter()
        .filter(|x| !x.actions_unused.is_empty())
        .map(|x| {
            format!(
                "rule `{}` allows actions {} that no call used (used: {})",
                x.id,
                x.actions_unused.join(", "),
                x.actions_used
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    tighten.extend(
        r.identities
            .iter()
            .filter(|i| !i.unused_role_rules.is_empty())
            .map(|i| {
                format!(
                    "identity `{}` never used these rules of its roles ({}): {}",
                    i.id,
                    i.roles.join(", "),
                    i.unused_role_rules.join(", ")
                )
            }),
    );
    section(&mut out, "to tighten", tighten);
    let used = r.rules.iter().filter(|x| x.status == Status::Used).count();
    let unused = r
        .rules
        .iter()
        .filter(|x| x.status == Status::Unused)
        .count();
    let _ = writeln!(
        out,
        "{} rules: {used} used, {unused} unused, {} without evidence",
        r.rules.len(),
        r.rules.len() - used - unused
    );
    out
}
