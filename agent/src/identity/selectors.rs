//! Identities that select existing cgroups by path (systemd units, pods,
//! containers). The daemon enrols matches at start, on every reload, and as
//! cgroups appear.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use tracing::{debug, info};

use super::{CgroupFs, IdentityError, Registry};
use crate::{bpf::KernelMaps, policy::Policy};

/// The identity a relative cgroup path selects, if any (first identity in
/// policy order wins).
pub fn selected_identity<'p>(policy: &'p Policy, rel: &str) -> Option<&'p str> {
    policy
        .identities
        .iter()
        .find(|i| i.selectors.iter().any(|g| g.matches(rel)))
        .map(|i| i.id.as_str())
}

/// Every cgroup below `attach` selected by the policy: id → (identity, path).
/// Cgroups under `managed` belong to `palisade exec` and are left out.
pub fn desired_selections(
    policy: &Policy,
    cgroups: &CgroupFs,
    attach: &Path,
    managed: &Path,
) -> HashMap<u64, (String, String)> {
    let managed_rel = cgroups.relative(managed);
    cgroups
        .walk(attach)
        .into_iter()
        .filter(|(rel, _)| !is_under(rel, managed_rel.as_deref()))
        .filter_map(|(rel, id)| {
            selected_identity(policy, &rel).map(|ident| (id, (ident.to_string(), rel)))
        })
        .collect()
}

fn is_under(rel: &str, base: Option<&str>) -> bool {
    match base {
        Some(b) => rel == b || rel.starts_with(&format!("{}/", b.trim_end_matches('/'))),
        None => false,
    }
}

/// Keeps the kernel's cgroup map in step with the selectors.
pub struct SelectorSync<'a> {
    pub maps: &'a KernelMaps,
    pub registry: &'a Registry,
    pub cgroups: &'a CgroupFs,
    pub attach: &'a Path,
    pub managed: &'a Path,
}

impl SelectorSync<'_> {
    /// Enrol what the policy selects and drop selector enrolments it no
    /// longer makes, and entries of cgroups that are gone. `palisade exec`
    /// enrolments (under the managed root) are kept while their cgroup lives.
    pub fn full_sync(&self, policy: &Policy) -> Result<usize, IdentityError> {
        let desired = desired_selections(policy, self.cgroups, self.attach, self.managed);
        let existing: HashSet<u64> = self
            .cgroups
            .walk(self.attach)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let managed: HashSet<u64> = self
            .cgroups
            .walk(self.managed)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        for (id, current) in self.maps.enrolled_cgroups()? {
            let keep = existing.contains(&id)
                && (managed.contains(&id)
                    || desired
                        .get(&id)
                        .and_then(|(name, _)| self.registry.index_of(name))
                        == Some(current));
            if !keep {
                self.maps.unenrol_cgroup(id)?;
            }
        }
        for (id, (name, rel)) in &desired {
            let index = self.registry.ensure(name)?;
            self.maps.enrol_cgroup(*id, index)?;
            debug!(cgroup = %rel, identity = %name, "cgroup selected");
        }
        Ok(desired.len())
    }

    /// A cgroup appeared: enrol it if the policy selects it.
    pub fn on_created(
        &self,
        policy: &Policy,
        id: u64,
        rel: &str,
    ) -> Result<Option<String>, IdentityError> {
        let abs = self.cgroups.absolute(rel);
        // The tracepoint fires for every hierarchy; keep only ours.
        if !abs.starts_with(self.attach) || abs.starts_with(self.managed) {
            return Ok(None);
        }
        match CgroupFs::id_of(&abs) {
            Ok(found) if found == id => {}
            _ => return Ok(None),
        }
        let Some(name) = selected_identity(policy, rel) else {
            return Ok(None);
        };
        let index = self.registry.ensure(name)?;
        self.maps.enrol_cgroup(id, index)?;
        info!(cgroup = %rel, identity = %name, "new cgroup selected");
        Ok(Some(name.to_string()))
    }
}
