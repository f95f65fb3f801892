//! The decision API's state beyond the policy: tokens, approvals, budgets
//! and just-in-time grants. The policy decides (`policy::decide`); this
//! module remembers what deciding needs to remember, and records it in the
//! state journal (`state`) so it outlives the daemon.

pub mod approvals;
pub mod budgets;
pub mod elevations;
pub mod grants;
pub mod input;

use crate::{state::Record, tokens::Tokens};

pub struct DecisionState {
    pub tokens: Tokens,
    pub approvals: approvals::Approvals,
    pub budgets: budgets::Budgets,
    pub grants: grants::Grants,
    /// How long an approved override token stays valid at most.
    pub override_ttl: std::time::Duration,
}

impl DecisionState {
    /// Everything live, as journal records (what a compacted journal holds).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = self.budgets.snapshot();
        out.extend(self.tokens.snapshot());
        out.extend(self.approvals.snapshot());
        out.extend(self.grants.snapshot());
        out
    }
}
