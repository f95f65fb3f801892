//! Typed handles on the pinned maps, and the generation flip that applies a
//! compiled policy atomically.
//!
//! Each group of maps has its own lock, held only for the map operations:
//! reloads, enrolments and kill switches never wait on one another.

use std::{
    collections::HashSet,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use agent_common::{
    IdentityConfig, IdentityState, LpmData, LpmValue, MAX_IDENTITIES, MAX_PORTSETS, PortSet,
    VerdictCounters,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
};

use super::{BpfError, barrier::RcuBarrier};
use crate::policy::tables::{KernelTables, LpmKey};

/// The maps a policy generation writes.
pub struct PolicyMaps {
    active_gen: Array<MapData, u32>,
    ident_cfg: Array<MapData, IdentityConfig>,
    allow: LpmTrie<MapData, LpmData, LpmValue>,
    deny: LpmTrie<MapData, LpmData, LpmValue>,
    portsets: Array<MapData, PortSet>,
    /// Trie keys written into each slot, when known (after the first apply
    /// by this daemon); otherwise the slot is scanned.
    slot_keys: [Option<Vec<(bool, LpmKey)>>; 2],
}

/// All map handles, grouped by who writes them.
pub struct KernelMaps {
    pub policy: Mutex<PolicyMaps>,
    pub cgroups: Mutex<HashMap<MapData, u64, u32>>,
    pub state: Mutex<Array<MapData, IdentityState>>,
    /// The kill switches as last written to `state`, read by every
    /// decision without a system call. The daemon is the map's only
    /// writer; it reads the pinned switches in when it takes the map.
    killed: Box<[AtomicBool]>,
    pub names: Mutex<Array<MapData, [u8; 64]>>,
    pub counters: Mutex<PerCpuArray<MapData, VerdictCounters>>,
    pub events_lost: Mutex<PerCpuArray<MapData, u64>>,
    /// Taken by the event reader.
    pub events: Mutex<Option<RingBuf<MapData>>>,
    pub cgroup_events: Mutex<Option<RingBuf<MapData>>>,
    /// Just-in-time egress grants (see `decision::grants`).
    pub grants: Mutex<LpmTrie<MapData, LpmData, agent_common::grants::GrantValue>>,
    /// Task → identity lineage (see `bpf::lineage`).
    pub lineage: Mutex<HashMap<MapData, u32, u32>>,
    /// Settings of the guard programs.
    pub guard: Mutex<Array<MapData, agent_common::guard::GuardConfig>>,
    /// Per-socket identity stamps, read through sock_diag (`bpf::sockdiag`).
    pub sock_ident: MapData,
}

/// Lock a mutex, recovering from poisoning: map handles hold no invariants
/// that a panicked writer could have broken halfway.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, BpfError> {
    ebpf.take_map(name).ok_or(BpfError::MissingMap(name))
}

macro_rules! typed {
    ($ebpf:expr, $name:literal) => {
        take($ebpf, $name)?
            .try_into()
            .map_err(BpfError::map($name))?
    };
}

impl KernelMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let state: Array<MapData, IdentityState> = typed!(ebpf, "IDENT_STATE");
        let killed = (0..MAX_IDENTITIES)
            .map(|i| {
                state
                    .get(&i, 0)
                    .map(|s| AtomicBool::new(s.killed != 0))
                    .map_err(BpfError::map("IDENT_STATE"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            policy: Mutex::new(PolicyMaps {
                active_gen: typed!(ebpf, "ACTIVE_GEN"),
                ident_cfg: typed!(ebpf, "IDENT_CFG"),
                allow: typed!(ebpf, "ALLOW_LPM"),
                deny: typed!(ebpf, "DENY_LPM"),
                portsets: typed!(ebpf, "PORTSETS"),
                slot_keys: [None, None],
            }),
            cgroups: Mutex::new(typed!(ebpf, "CGROUP_IDENT")),
            state: Mutex::new(state),
            killed,
            names: Mutex::new(typed!(ebpf, "IDENT_NAMES")),
            counters: Mutex::new(typed!(ebpf, "VERDICTS")),
            events_lost: Mutex::new(typed!(ebpf, "EVENTS_LOST")),
            events: Mutex::new(Some(typed!(ebpf, "EVENTS"))),
            cgroup_events: Mutex::new(Some(typed!(ebpf, "CGROUP_EVENTS"))),
            grants: Mutex::new(typed!(ebpf, "GRANTS")),
            lineage: Mutex::new(typed!(ebpf, "LINEAGE")),
            guard: Mutex::new(typed!(ebpf, "GUARD_CFG")),
            sock_ident: match take(ebpf, "SOCK_GUARD")? {
                Map::SkStorage(data) => data,
                _ => return Err(BpfError::MissingMap("SOCK_GUARD")),
            },
        })
    }

    /// Replace the grant entries of the given keys: `Some` writes, `None`
    /// removes.
    pub fn write_grants(
        &self,
        entries: &[(LpmKey, Option<agent_common::grants::GrantValue>)],
    ) -> Result<(), BpfError> {
        let mut map = lock(&self.grants);
        for (key, value) in entries {
            let k = Key::new(key.prefix_len, key.data);
            match value {
                Some(v) => map.insert(&k, v, 0).map_err(BpfError::map("GRANTS"))?,
                None => match map.remove(&k) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(BpfError::map("GRANTS")(e)),
                },
            }
        }
        drop(map);
        // A grant that ended or shrank early must not keep what it opened:
        // connected sockets are judged again at their next packet.
        self.bump_rejudge_epoch()
    }

    /// Have the egress program judge every connected socket of an enrolled
    /// process again at its next packet.
    pub fn bump_rejudge_epoch(&self) -> Result<(), BpfError> {
        self.update_guard(|cfg| {
            cfg.rejudge_epoch = cfg.rejudge_epoch.wrapping_add(1);
            Ok(())
        })
    }

    /// Every grant entry in the kernel (to adopt after a restart).
    pub fn grant_entries(
        &self,
    ) -> Result<Vec<(LpmKey, agent_common::grants::GrantValue)>, BpfError> {
        let map = lock(&self.grants);
        let mut out = Vec::new();
        for entry in map.iter() {
            let (k, v) = entry.map_err(BpfError::map("GRANTS"))?;
            out.push((
                LpmKey {
                    prefix_len: k.prefix_len(),
                    data: k.data(),
                },
                v,
            ));
        }
        Ok(out)
    }

    pub fn active_generation(&self) -> Result<u32, BpfError> {
        lock(&self.policy)
            .active_gen
            .get(&0, 0)
            .map_err(BpfError::map("ACTIVE_GEN"))
    }

    /// Identity names recorded in the kernel: index → name.
    pub fn identity_names(&self) -> Result<Vec<(u32, String)>, BpfError> {
        let names = lock(&self.names);
        let mut out = Vec::new();
        for (i, entry) in names.iter().enumerate() {
            let raw = entry.map_err(BpfError::map("IDENT_NAMES"))?;
            let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            if len > 0 {
                out.push((i as u32, String::from_utf8_lossy(&raw[..len]).into_owned()));
            }
        }
        Ok(out)
    }

    /// Record (or, with `None`, clear) the name of an identity index.
    pub fn set_identity_name(&self, index: u32, name: Option<&str>) -> Result<(), BpfError> {
        if index >= MAX_IDENTITIES {
            return Err(BpfError::IdentityIndex(index));
        }
        let mut raw = [0u8; 64];
        if let Some(name) = name {
            let bytes = name.as_bytes();
            let n = bytes.len().min(63);
            raw[..n].copy_from_slice(&bytes[..n]);
        }
        lock(&self.names)
            .set(index, &raw, 0)
            .map_err(BpfError::map("IDENT_NAMES"))
    }

    pub fn enrol_cgroup(&self, cgroup_id: u64, identity: u32) -> Result<(), BpfError> {
        lock(&self.cgroups)
            .insert(&cgroup_id, &identity, 0)
            .map_err(BpfError::map("CGROUP_IDENT"))
    }

    pub fn unenrol_cgroup(&self, cgroup_id: u64) -> Result<(), BpfError> {
        match lock(&self.cgroups).remove(&cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(BpfError::map("CGROUP_IDENT")(e)),
        }
    }

    pub fn enrolled_cgroups(&self) -> Result<Vec<(u64, u32)>, BpfError> {
        let map = lock(&self.cgroups);
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(BpfError::map("CGROUP_IDENT"))
    }

    /// The identity a cgroup is enrolled in, if it is.
    pub fn identity_of_cgroup(&self, cgroup_id: u64) -> Result<Option<u32>, BpfError> {
        match lock(&self.cgroups).get(&cgroup_id, 0) {
            Ok(index) => Ok(Some(index)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(BpfError::map("CGROUP_IDENT")(e)),
        }
    }

    pub fn set_killed(&self, identity: u32, killed: bool) -> Result<(), BpfError> {
        if identity >= MAX_IDENTITIES {
            return Err(BpfError::IdentityIndex(identity));
        }
        let state = IdentityState {
            killed: u8::from(killed),
            ..IdentityState::default()
        };
        let mut map = lock(&self.state);
        map.set(identity, &state, 0)
            .map_err(BpfError::map("IDENT_STATE"))?;
        // After the kernel has it: the daemon refuses no later than the
        // hooks do.
        self.killed[identity as usize].store(killed, Ordering::SeqCst);
        Ok(())
    }

    pub fn killed(&self, identity: u32) -> Result<bool, BpfError> {
        self.killed
            .get(identity as usize)
            .map(|k| k.load(Ordering::SeqCst))
            .ok_or(BpfError::IdentityIndex(identity))
    }

    /// Verdict counters of one identity, summed over CPUs.
    pub fn counters(&self, identity: u32) -> Result<VerdictCounters, BpfError> {
        let per_cpu = lock(&self.counters)
            .get(&identity, 0)
            .map_err(BpfError::map("VERDICTS"))?;
        Ok(per_cpu
            .iter()
            .fold(VerdictCounters::default(), |a, c| VerdictCounters {
                allowed: a.allowed + c.allowed,
                denied: a.denied + c.denied,
                audited: a.audited + c.audited,
            }))
    }

    /// Kernel events dropped because the ring buffer was full, all CPUs.
    pub fn events_lost(&self) -> Result<u64, BpfError> {
        let per_cpu = lock(&self.events_lost)
            .get(&0, 0)
            .map_err(BpfError::map("EVENTS_LOST"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Write `tables` into their (inactive) slot, then make `generation`
    /// active with one store. On error the active generation is untouched.
    pub fn apply(&self, tables: &KernelTables, generation: u32) -> Result<(), BpfError> {
        debug_assert_eq!(tables.slot, generation & 1);
        let mut p = lock(&self.policy);
        // Unless the slot was already emptied after a grace period
        // (`retire_previous_slot`), a program that read the previous
        // generation may still be looking into it: wait for those first.
        if !p.slot_keys[tables.slot as usize]
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            RcuBarrier::new()
                .and_then(|barrier| barrier.wait())
                .map_err(BpfError::Barrier)?;
        }
        p.clear_slot(tables.slot)?;
        let base = tables.slot * MAX_PORTSETS;
        for (i, set) in tables.portsets.iter().enumerate() {
            p.portsets
                .set(base + i as u32, set, 0)
                .map_err(BpfError::map("PORTSETS"))?;
        }
        let mut written = Vec::with_capacity(tables.allow.len() + tables.deny.len());
        for (deny, entries) in [(false, &tables.allow), (true, &tables.deny)] {
            for (key, set) in entries {
                let k = Key::new(key.prefix_len, key.data);
                let (trie, name) = if deny {
                    (&mut p.deny, "DENY_LPM")
                } else {
                    (&mut p.allow, "ALLOW_LPM")
                };
                trie.insert(&k, set, 0).map_err(BpfError::map(name))?;
                written.push((deny, *key));
            }
        }
        let defined: HashSet<u32> = tables.identities.iter().map(|(i, _)| *i).collect();
        let slot_base = tables.slot * MAX_IDENTITIES;
        for index in 0..MAX_IDENTITIES {
            if defined.contains(&index) {
                continue;
            }
            let cur = p
                .ident_cfg
                .get(&(slot_base + index), 0)
                .map_err(BpfError::map("IDENT_CFG"))?;
            if cur != IdentityConfig::default() {
                p.ident_cfg
                    .set(slot_base + index, &IdentityConfig::default(), 0)
                    .map_err(BpfError::map("IDENT_CFG"))?;
            }
        }
        for (index, cfg) in &tables.identities {
            p.ident_cfg
                .set(slot_base + index, cfg, 0)
                .map_err(BpfError::map("IDENT_CFG"))?;
        }
        // The flip: from here on every new decision uses the new tables.
        p.active_gen
            .set(0, &generation, 0)
            .map_err(BpfError::map("ACTIVE_GEN"))?;
        p.slot_keys[tables.slot as usize] = Some(written);
        Ok(())
    }
}

impl KernelMaps {
    /// Empty the slot that the flip to `generation` left behind, once no
    /// program can still be reading it, so the next apply only writes: a
    /// reload's new verdicts then wait for the writes alone, not for
    /// deleting the previous policy's entries too (as many again, and all
    /// of a previous daemon's when its pins were adopted). Nothing happens
    /// if another flip came first: that apply cleared what it wrote over.
    pub fn retire_previous_slot(&self, generation: u32) -> Result<(), BpfError> {
        RcuBarrier::new()
            .and_then(|barrier| barrier.wait())
            .map_err(BpfError::Barrier)?;
        let mut p = lock(&self.policy);
        let active = p
            .active_gen
            .get(&0, 0)
            .map_err(BpfError::map("ACTIVE_GEN"))?;
        if active != generation {
            return Ok(());
        }
        let slot = (generation & 1) ^ 1;
        p.clear_slot(slot)?;
        p.slot_keys[slot as usize] = Some(Vec::new());
        Ok(())
    }
}

impl PolicyMaps {
    /// Remove the trie entries of `slot` (the inactive one). Port sets and
    /// identity configs are overwritten by the next apply.
    fn clear_slot(&mut self, slot: u32) -> Result<(), BpfError> {
        let keys = match self.slot_keys[slot as usize].take() {
            Some(keys) => keys,
            None => {
                let mut keys = Vec::new();
                for (deny, trie, name) in [
                    (false, &self.allow, "ALLOW_LPM"),
                    (true, &self.deny, "DENY_LPM"),
                ] {
                    for k in trie.keys() {
                        let k = k.map_err(BpfError::map(name))?;
                        let data = k.data();
                        if u32::from(data.scope[0] >> 7) == slot {
                            keys.push((
                                deny,
                                LpmKey {
                                    prefix_len: k.prefix_len(),
                                    data,
                                },
                            ));
                        }
                    }
                }
                keys
            }
        };
        for (deny, key) in keys {
            let (trie, name) = if deny {
                (&mut self.deny, "DENY_LPM")
            } else {
                (&mut self.allow, "ALLOW_LPM")
            };
            match trie.remove(&Key::new(key.prefix_len, key.data)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(BpfError::map(name)(e)),
            }
        }
        Ok(())
    }
}
