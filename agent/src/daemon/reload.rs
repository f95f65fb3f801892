//! Applying a policy: compile everything first, write the inactive
//! generation slot, flip. Any failure before the flip changes nothing.

use std::{collections::HashSet, sync::Arc};

use tracing::{info, warn};

use super::{ActivePolicy, Daemon, DaemonError, HISTORY};
use crate::{
    audit::{AuditEvent, EventKind},
    policy::{self, Policy, tables},
};

/// What a successful reload reports.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub version: String,
    pub generation: u32,
    pub warnings: Vec<String>,
}

impl Daemon {
    /// Write `policy` into the kernel as the next generation and make it
    /// active. Returns the new generation.
    pub(super) async fn apply(&self, policy: Policy) -> Result<u32, DaemonError> {
        let _serial = self.reload_lock.lock().await;
        let generation = self.maps.active_generation()?.wrapping_add(1);
        for ident in &policy.identities {
            self.registry.ensure(&ident.id)?;
        }
        let mut tables = tables::compile(&policy, generation & 1, &|name| {
            self.registry.index_of(name)
        })?;
        self.dns_prepare(&policy, &mut tables).await?;
        self.maps.apply(&tables, generation)?;
        let active = Arc::new(ActivePolicy { policy, generation });
        self.active.store(active.clone());
        {
            let mut history = self
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            history.push_back(active.clone());
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        self.dns_commit().await;
        let selected = self.selector_sync().full_sync(&active.policy)?;
        let keep: HashSet<String> = active
            .policy
            .identities
            .iter()
            .map(|i| i.id.clone())
            .collect();
        self.registry.release_unused(&keep)?;
        info!(
            version = %active.policy.version,
            generation,
            identities = active.policy.identities.len(),
            rules = active.policy.rules.len(),
            selected_cgroups = selected,
            "policy applied"
        );
        Ok(generation)
    }

    /// Re-read the policy from its configured path and apply it. A policy
    /// that fails leaves the active one enforcing; the failure is logged and
    /// becomes an audit event.
    pub async fn reload(&self) -> Result<Reloaded, DaemonError> {
        let path = self.config.policy_path().to_path_buf();
        let result = match policy::load(&path) {
            Ok(loaded) => {
                let warnings: Vec<String> =
                    loaded.warnings.iter().map(ToString::to_string).collect();
                let version = loaded.policy.version.to_string();
                self.apply(loaded.policy).await.map(|generation| Reloaded {
                    version,
                    generation,
                    warnings,
                })
            }
            Err(e) => Err(DaemonError::Policy(e)),
        };
        let previous = self.active().policy.version.to_string();
        match &result {
            Ok(r) => {
                *self.last_error() = None;
                let mut ev = AuditEvent::new(EventKind::Policy, "applied", "reload");
                ev.policy_version = Some(r.version.clone());
                ev.detail = Some(format!("generation {}", r.generation));
                self.audit.emit(ev);
            }
            Err(e) => {
                let text = e.to_string();
                warn!(error = %text, keeping = %previous, "policy reload rejected");
                *self.last_error() = Some(text.clone());
                let mut ev = AuditEvent::new(EventKind::Policy, "rejected", "reload-failed");
                ev.policy_version = Some(previous);
                ev.detail = Some(text);
                self.audit.emit(ev);
            }
        }
        result
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_error().clone()
    }
}
