//! Stable identity indices. The kernel knows identities by a small index;
//! the mapping to names is kept in the pinned `IDENT_NAMES` map so that a
//! restarted daemon reads back exactly what the kernel is enforcing.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use agent_common::MAX_IDENTITIES;

use crate::bpf::{BpfError, KernelMaps};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("all {max} identity slots are in use", max = MAX_IDENTITIES - 1)]
    Full,
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("reading the cgroup tree: {0}")]
    CgroupTree(std::io::Error),
}

#[derive(Default)]
struct Names {
    by_name: HashMap<String, u32>,
    by_index: HashMap<u32, String>,
}

pub struct Registry {
    maps: Arc<KernelMaps>,
    names: Mutex<Names>,
}

impl Registry {
    /// Read the assignment the kernel holds (empty on a first start).
    pub fn load(maps: Arc<KernelMaps>) -> Result<Self, BpfError> {
        let mut names = Names::default();
        for (index, name) in maps.identity_names()? {
            names.by_name.insert(name.clone(), index);
            names.by_index.insert(index, name);
        }
        Ok(Self {
            maps,
            names: Mutex::new(names),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.lock().by_name.get(name).copied()
    }

    pub fn name_of(&self, index: u32) -> Option<String> {
        self.lock().by_index.get(&index).cloned()
    }

    /// The index of `name`, assigning the lowest free one if it has none.
    pub fn ensure(&self, name: &str) -> Result<u32, IdentityError> {
        let mut names = self.lock();
        if let Some(i) = names.by_name.get(name) {
            return Ok(*i);
        }
        let index = (1..MAX_IDENTITIES)
            .find(|i| !names.by_index.contains_key(i))
            .ok_or(IdentityError::Full)?;
        self.maps.set_identity_name(index, Some(name))?;
        names.by_name.insert(name.to_string(), index);
        names.by_index.insert(index, name.to_string());
        Ok(index)
    }

    /// Free the indices of identities that neither the policy names nor any
    /// enrolled cgroup uses, clearing their kill switch with them.
    pub fn release_unused(&self, keep: &HashSet<String>) -> Result<(), IdentityError> {
        // A number is free only when nothing carries it: no enrolled cgroup
        // and no task's lineage (an agent that moved out of its cgroup, or
        // whose cgroup is gone, keeps it). Reusing it would make that agent
        // the next identity given the number.
        let in_use: HashSet<u32> = self
            .maps
            .enrolled_cgroups()?
            .into_iter()
            .map(|(_, i)| i)
            .chain(self.maps.lineage_entries()?.into_iter().map(|(_, i)| i))
            .collect();
        let mut names = self.lock();
        let stale: Vec<(u32, String)> = names
            .by_index
            .iter()
            .filter(|(i, n)| !keep.contains(*n) && !in_use.contains(i))
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        for (index, name) in stale {
            self.maps.set_identity_name(index, None)?;
            self.maps.set_killed(index, false)?;
            names.by_index.remove(&index);
            names.by_name.remove(&name);
        }
        Ok(())
    }

    pub fn all(&self) -> Vec<(u32, String)> {
        let mut v: Vec<_> = self
            .lock()
            .by_index
            .iter()
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        v.sort();
        v
    }
}
