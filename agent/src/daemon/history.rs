//! What kernel events that arrive after a reload need from the generation
//! that decided them: its version, its rule ids and each identity's mode.
//! Only those are kept for past generations, not the whole policy, so a
//! daemon enforcing a 100,000-rule policy holds one copy of it.

use std::{collections::HashMap, sync::Arc};

use super::ActivePolicy;
use crate::policy::Mode;

/// How many past generations are remembered. Events are read within
/// milliseconds; three cover back-to-back reloads.
pub const PAST: usize = 3;

pub struct PastGeneration {
    pub generation: u32,
    version: String,
    /// Every rule id, back to back; rule `i` is `ids[ends[i-1]..ends[i]]`
    /// (one allocation instead of one per rule).
    ids: String,
    ends: Box<[u32]>,
    modes: HashMap<String, Mode>,
}

impl PastGeneration {
    pub fn of(active: &ActivePolicy) -> Self {
        let p = &active.policy;
        let mut ids = String::with_capacity(p.rules.iter().map(|r| r.id.len()).sum());
        let ends = p
            .rules
            .iter()
            .map(|r| {
                ids.push_str(&r.id);
                ids.len() as u32
            })
            .collect();
        Self {
            generation: active.generation,
            version: p.version.to_string(),
            ids,
            ends,
            modes: p
                .identities
                .iter()
                .map(|i| (i.id.clone(), i.mode))
                .collect(),
        }
    }
}

/// A generation that decided something: the active one, or a past one.
pub enum Generation {
    Active(Arc<ActivePolicy>),
    Past(Arc<PastGeneration>),
}

impl Generation {
    pub fn version(&self) -> String {
        match self {
            Self::Active(a) => a.policy.version.to_string(),
            Self::Past(p) => p.version.clone(),
        }
    }

    pub fn rule_id(&self, rule: u32) -> Option<String> {
        match self {
            Self::Active(a) => a.policy.rule(rule).map(|r| r.id.clone()),
            Self::Past(p) => {
                let i = rule as usize;
                let end = *p.ends.get(i)? as usize;
                let start = i.checked_sub(1).map_or(0, |j| p.ends[j] as usize);
                p.ids.get(start..end).map(str::to_string)
            }
        }
    }

    pub fn mode_of(&self, identity: &str) -> Option<Mode> {
        match self {
            Self::Active(a) => a.policy.identity(identity).map(|i| i.mode),
            Self::Past(p) => p.modes.get(identity).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_generations_name_their_rules() {
        let policy = crate::policy::load_str(
            "p.yaml",
            "version: 1\nidentities:\n  - id: a\n    mode: audit\n    egress:\n      allow:\n        - {cidr: 10.0.0.0/8}\n        - {id: named, cidr: 10.1.0.0/16}\n",
        )
        .unwrap()
        .policy;
        let active = ActivePolicy {
            policy,
            generation: 7,
        };
        let g = Generation::Past(Arc::new(PastGeneration::of(&active)));
        assert_eq!(g.rule_id(0).as_deref(), Some("p.yaml:1"));
        assert_eq!(g.rule_id(1).as_deref(), Some("named"));
        assert_eq!(g.rule_id(2), None);
        assert_eq!(g.mode_of("a"), Some(Mode::Audit));
        assert_eq!(g.version(), active.policy.version.to_string());
    }
}
