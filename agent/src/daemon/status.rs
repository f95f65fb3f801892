//! A snapshot of what the daemon enforces, for `palisade status`.

use std::sync::atomic::Ordering;

use super::{Daemon, DaemonError};

#[derive(Clone, Debug)]
pub struct IdentityStatus {
    pub id: String,
    pub index: u32,
    pub mode: String,
    pub killed: bool,
    pub cgroups: u64,
    pub allowed: u64,
    pub denied: u64,
    pub audited: u64,
}

#[derive(Clone, Debug)]
pub struct Status {
    pub policy_version: String,
    pub generation: u32,
    pub identities: Vec<IdentityStatus>,
    pub events_lost: u64,
    pub events_written: u64,
    pub last_reload_error: Option<String>,
}

impl Daemon {
    pub fn status(&self) -> Result<Status, DaemonError> {
        let active = self.active();
        let enrolled = self.maps.enrolled_cgroups()?;
        let mut identities = Vec::new();
        for (index, name) in self.registry.all() {
            let counters = self.maps.counters(index)?;
            let mode = active
                .policy
                .identity(&name)
                .map_or("not-in-policy", |i| i.mode.name());
            identities.push(IdentityStatus {
                id: name,
                index,
                mode: mode.to_string(),
                killed: self.maps.killed(index)?,
                cgroups: enrolled.iter().filter(|(_, i)| *i == index).count() as u64,
                allowed: counters.allowed,
                denied: counters.denied,
                audited: counters.audited,
            });
        }
        Ok(Status {
            policy_version: active.policy.version.to_string(),
            generation: active.generation,
            identities,
            events_lost: self.maps.events_lost()?,
            events_written: self.audit.stats().written.load(Ordering::Relaxed),
            last_reload_error: self.last_reload_error(),
        })
    }
}
