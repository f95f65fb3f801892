//! Applying a policy: compile everything first, write the inactive
//! generation slot, flip. Any failure before the flip changes nothing.

use std::{collections::HashSet, sync::Arc};

use tracing::{info, warn};

use super::{
    ActivePolicy, Daemon, DaemonError,
    history::{PAST, PastGeneration},
};
use crate::{
    audit::{AuditEvent, EventKind},
    policy::{self, Policy, tables},
};

/// What asked for a reload (recorded in the audit event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Api,
    FileChange,
}

impl Trigger {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Signal => "sighup",
            Self::Api => "api",
            Self::FileChange => "file-change",
        }
    }
}

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
        self.gateway_prepare(&policy)?;
        self.maps.apply(&tables, generation)?;
        drop(tables);
        // Off the reload's path: the new tables already decide.
        let maps = self.maps.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = maps.retire_previous_slot(generation) {
                warn!(error = %e, generation, "clearing the previous policy's kernel entries failed; the next reload clears them");
            }
        });
        let active = Arc::new(ActivePolicy { policy, generation });
        let previous = self.active.swap(active.clone());
        // The new policy's credential files may name directories not made
        // yet (`/etc/palisade/secrets/`): the daemon's, before an agent's.
        self.make_own_directories();
        self.gateway_commit();
        self.metrics
            .set_policy_identities(active.policy.identities.len() as u64);
        if previous.generation != 0 {
            // Only the names stay; the previous policy goes once no
            // decision holds it.
            let past = Arc::new(PastGeneration::of(&previous));
            let mut history = self
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            history.push_back(past);
            while history.len() > PAST {
                history.pop_front();
            }
        }
        drop(previous);
        self.dns_commit().await;
        let selected = self.selector_sync().full_sync(&active.policy)?;
        let keep: HashSet<String> = active
            .policy
            .identities
            .iter()
            .map(|i| i.id.clone())
            .collect();
        // Withdraw grants the new policy does not cover, before an index of a
        // removed identity can be handed to another one.
        self.refresh_elevations();
        self.sweep_grants(true);
        self.registry.release_unused(&keep)?;
        // The previous policy and the parse are gone: give their memory back.
        crate::memory::release();
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
        self.reload_from(Trigger::Api).await
    }

    /// Reload for `trigger`. A file change whose content hashes to the active
    /// version is not a new policy and changes nothing.
    pub async fn reload_from(&self, trigger: Trigger) -> Result<Reloaded, DaemonError> {
        // One reload at a time from the start: two parses of a large policy
        // at once would double the daemon's peak memory for nothing.
        let _queue = self.reload_queue.lock().await;
        let path = self.config.policy_path().to_path_buf();
        if trigger == Trigger::FileChange
            && policy::content_hash_of(&path)
                .is_ok_and(|hash| hash == self.active().policy.version.hash)
        {
            let active = self.active();
            return Ok(Reloaded {
                version: active.policy.version.to_string(),
                generation: active.generation,
                warnings: Vec::new(),
            });
        }
        let result = match policy::load_for_daemon(&path) {
            Ok(loaded) => {
                let mut warnings: Vec<String> =
                    loaded.warnings.iter().map(ToString::to_string).collect();
                let version = loaded.policy.version.to_string();
                self.apply(loaded.policy).await.map(|generation| {
                    warnings.extend(self.unavailable());
                    Reloaded {
                        version,
                        generation,
                        warnings,
                    }
                })
            }
            Err(e) => Err(DaemonError::Policy(e)),
        };
        let previous = self.active().policy.version.to_string();
        self.metrics.record_reload(result.is_ok());
        match &result {
            Ok(r) => {
                *self.last_error() = None;
                let mut ev = AuditEvent::new(EventKind::Policy, "applied", trigger.name());
                ev.policy_version = Some(r.version.clone());
                ev.detail = Some(format!("generation {}", r.generation));
                self.audit.emit(ev);
                self.withdraw_stale_approvals();
            }
            Err(e) => {
                let text = e.to_string();
                warn!(error = %text, keeping = %previous, trigger = trigger.name(), "policy reload rejected");
                *self.last_error() = Some(text.clone());
                let mut ev = AuditEvent::new(EventKind::Policy, "rejected", trigger.name());
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
