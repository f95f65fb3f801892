//! Elevated (break-glass) roles: held by no identity by default, only
//! through an operator's elevation for a time. An identity that names one
//! may be elevated to it; what an elevation adds must be something the
//! kernel can take away again on its own at expiry (CIDR allow rules as
//! expiring grants) or the decision engine checks per call (tool rules).

use std::collections::BTreeMap;

use super::{Builder, RuleSet};
use crate::policy::{Diagnostic, ElevatedRole};

impl Builder {
    pub(super) fn is_elevated(&self, role: &str) -> bool {
        self.role_info.get(role).is_some_and(|(_, e)| *e)
    }

    /// Misuse of elevated roles: a standing role that inherits one (it would
    /// be held by default), and elevated roles carrying egress rules an
    /// expiring grant cannot express.
    pub(super) fn check_elevated(
        &self,
        closures: &BTreeMap<String, Vec<String>>,
        diags: &mut Vec<Diagnostic>,
    ) {
        for (id, declared) in &self.declared_roles {
            let closure = closures.get(id).map(Vec::as_slice).unwrap_or_default();
            if !self.is_elevated(id) {
                if let Some(e) = closure.iter().find(|r| *r != id && self.is_elevated(r)) {
                    diags.push(
                        Diagnostic::error(
                            declared.loc.clone(),
                            format!(
                                "role `{id}` inherits elevated role `{e}`: an elevated role is held only through an elevation, never by a standing role"
                            ),
                        )
                        .with_hint(format!(
                            "mark `{id}` `elevated: true` too, or let identities name `{e}` directly"
                        )),
                    );
                }
                continue;
            }
            for r in closure {
                let Some(rules) = self.role_rules.get(r) else {
                    continue;
                };
                let unsupported = [
                    (
                        !rules.deny.is_empty() || !rules.deny_hosts.is_empty(),
                        "egress `deny`",
                    ),
                    (!rules.allow_hosts.is_empty(), "egress `allow` by `host`"),
                    (
                        !rules.approval_egress.is_empty(),
                        "egress `require_approval`",
                    ),
                    (!rules.grantable.is_empty(), "egress `grantable`"),
                ];
                for (_, what) in unsupported.iter().filter(|(bad, _)| *bad) {
                    let through = if r == id {
                        String::new()
                    } else {
                        format!(" (inherited from `{r}`)")
                    };
                    diags.push(
                        Diagnostic::error(
                            declared.loc.clone(),
                            format!(
                                "elevated role `{id}` has {what} rules{through}: an elevation adds only egress `allow` rules by `cidr` and tool rules"
                            ),
                        )
                        .with_hint(
                            "move those rules to a standing role or to the identity; an elevation's egress must be expiring kernel grants",
                        ),
                    );
                }
            }
        }
    }

    /// The elevated roles among `roles`, each with the rules of its closure.
    pub(super) fn elevatable(
        &self,
        roles: &[String],
        closures: &BTreeMap<String, Vec<String>>,
    ) -> Vec<ElevatedRole> {
        roles
            .iter()
            .filter(|r| self.is_elevated(r))
            .map(|r| {
                let closure = closures.get(r).cloned().unwrap_or_default();
                let mut set = RuleSet::default();
                for c in &closure {
                    if let Some(rules) = self.role_rules.get(c) {
                        set.extend(rules);
                    }
                }
                ElevatedRole {
                    role: r.clone(),
                    closure,
                    allow: set.allow,
                    tools: set.tools,
                    budgets: set.budgets,
                }
            })
            .collect()
    }
}
