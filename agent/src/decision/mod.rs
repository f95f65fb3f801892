//! The decision API's state beyond the policy: tokens, approvals, budgets
//! and just-in-time grants. The policy decides (`policy::decide`); this
//! module remembers what deciding needs to remember.

pub mod approvals;
pub mod budgets;
pub mod elevations;
pub mod grants;
pub mod input;

use crate::tokens::Tokens;

pub struct DecisionState {
    pub tokens: Tokens,
    pub approvals: approvals::Approvals,
    pub budgets: budgets::Budgets,
    pub grants: grants::Grants,
    /// How long an approved override token stays valid at most.
    pub override_ttl: std::time::Duration,
}
