//! Identities that select existing cgroups by path (systemd units, pods,
//! containers). The daemon enrols matches at start, on every reload, and as
//! cgroups appear.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use tracing::{debug, info, warn};

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
/// Cgroups under `managed` belong to `palisade exec` and are left out. A
/// cgroup below a selected one is never selected for a different identity:
/// its processes belong to the cgroup above (an agent that creates a
/// sub-cgroup named like another identity's selector stays who it is).
pub fn desired_selections(
    policy: &Policy,
    cgroups: &CgroupFs,
    attach: &Path,
    managed: &Path,
) -> std::io::Result<HashMap<u64, (String, String)>> {
    let managed_rel = cgroups.relative(managed);
    let selected: Vec<(u64, String, &str)> = cgroups
        .walk(attach)?
        .into_iter()
        .filter(|(rel, _)| !is_under(rel, managed_rel.as_deref()))
        .filter_map(|(rel, id)| selected_identity(policy, &rel).map(|ident| (id, rel, ident)))
        .collect();
    let by_path: HashMap<&str, &str> = selected
        .iter()
        .map(|(_, rel, ident)| (rel.as_str(), *ident))
        .collect();
    Ok(selected
        .iter()
        .filter(|(_, rel, ident)| {
            ancestors(rel).all(|a| by_path.get(a).is_none_or(|other| other == ident))
        })
        .map(|(id, rel, ident)| (*id, (ident.to_string(), rel.clone())))
        .collect())
}

/// The relative paths above `rel` (`/a/b/c` → `/a/b`, `/a`), not `/`.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    let mut cur = rel;
    std::iter::from_fn(move || {
        let (parent, _) = cur.rsplit_once('/')?;
        if parent.is_empty() {
            return None;
        }
        cur = parent;
        Some(parent)
    })
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
        // A tree that cannot be read whole changes nothing: what is
        // enrolled stays enrolled until the next sync reads it.
        let tree = IdentityError::CgroupTree;
        let desired =
            desired_selections(policy, self.cgroups, self.attach, self.managed).map_err(tree)?;
        let attached = self.cgroups.walk(self.attach).map_err(tree)?;
        let existing: HashSet<u64> = attached.iter().map(|(_, id)| *id).collect();
        let managed: HashSet<u64> = self
            .cgroups
            .walk(self.managed)
            .map_err(tree)?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let paths: HashMap<u64, String> = attached.into_iter().map(|(rel, id)| (id, rel)).collect();
        let defined: HashSet<&str> = policy.identities.iter().map(|i| i.id.as_str()).collect();
        for (id, current) in self.maps.enrolled_cgroups()? {
            if !existing.contains(&id) {
                // Gone: it has no processes (those that left keep their
                // lineage).
                self.maps.unenrol_cgroup(id)?;
                continue;
            }
            if managed.contains(&id) {
                continue;
            }
            let wanted = desired
                .get(&id)
                .and_then(|(name, _)| self.registry.ensure(name).ok());
            match wanted {
                Some(index) if index == current => {}
                Some(index) => {
                    // To another identity: overwrite in place, cgroup and
                    // lineage, so its processes are never unenrolled between.
                    self.maps.enrol_cgroup(id, index)?;
                    if let Some(rel) = paths.get(&id) {
                        let tids = self.cgroups.threads_below(rel);
                        self.maps.relabel_lineage(&tids, current, index)?;
                    }
                }
                None if !self
                    .registry
                    .name_of(current)
                    .is_some_and(|name| defined.contains(name.as_str())) =>
                {
                    // Its identity left the policy: its processes stay
                    // enrolled under the old number, which the kernel now
                    // denies everything (and which is not reused while they
                    // hold it). Freeing them would let a reload, or an
                    // agent that gets its identity removed, lift the guard.
                }
                None => {
                    // The identity remains but no longer selects this cgroup:
                    // the operator released it.
                    self.maps.unenrol_cgroup(id)?;
                    if let Some(rel) = paths.get(&id) {
                        let tids = self.cgroups.threads_below(rel);
                        self.maps.forget_lineage(&tids, current)?;
                    }
                }
            }
        }
        for (id, (name, rel)) in &desired {
            let index = self.registry.ensure(name)?;
            self.maps.enrol_cgroup(*id, index)?;
            self.seed(rel, index)?;
            debug!(cgroup = %rel, identity = %name, "cgroup selected");
        }
        Ok(desired.len())
    }

    /// Give the processes already in a newly enrolled cgroup (and below) its
    /// identity in the lineage, so they keep it if they move. Processes that
    /// arrive later are seen by the kernel itself (`cgroup_attach_task`).
    fn seed(&self, rel: &str, index: u32) -> Result<(), IdentityError> {
        let tids = self.cgroups.threads_below(rel);
        if tids.is_empty() {
            return Ok(());
        }
        let added = self.maps.seed_lineage(&tids, index)?;
        // A task that exited between the read and the write must not leave
        // an entry a later process with its id would inherit.
        let gone: Vec<u32> = tids
            .iter()
            .copied()
            .filter(|t| !Path::new(&format!("/proc/{t}")).exists())
            .collect();
        self.maps.forget_lineage(&gone, index)?;
        if added > 0 {
            debug!(cgroup = %rel, tasks = added, "lineage seeded");
        }
        Ok(())
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
        // Below an enrolled cgroup of another identity: its processes are
        // that identity's, whatever the new cgroup is called.
        if let Some(parent) = abs.parent() {
            for ancestor in self
                .cgroups
                .ancestry_ids(&self.cgroups.relative(parent).unwrap_or_default())
            {
                if let Some(other) = self.maps.identity_of_cgroup(ancestor)?
                    && other != index
                {
                    warn!(cgroup = %rel, selects = %name, "cgroup below another identity's cgroup is not selected");
                    return Ok(None);
                }
            }
        }
        self.maps.enrol_cgroup(id, index)?;
        self.seed(rel, index)?;
        info!(cgroup = %rel, identity = %name, "new cgroup selected");
        Ok(Some(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::ancestors;

    #[test]
    fn ancestors_of_a_path() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a"]);
        assert_eq!(ancestors("/a").count(), 0);
    }
}
