//! Just-in-time egress grants, kept in memory and mirrored into the kernel's
//! `GRANTS` map. The kernel enforces each range's expiry on its own (boot
//! clock); the daemon sweeps expired grants for the audit trail, removes
//! grants a reloaded policy no longer allows, and re-reads the map after a
//! restart. The pinned map is what survives a restart; the journal
//! (`state`) adds what the kernel does not hold (rule ids), and never opens
//! anything the kernel no longer has.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use agent_common::{
    LpmData,
    grants::{ELEVATION_RULE, GRANT_RANGES, GrantRange, GrantValue},
    lpm_scope,
    maps::LPM_SCOPE_BITS,
};

use tracing::warn;

use crate::{
    bpf::{BpfError, KernelMaps},
    policy::{Cidr, PortRange, Protocol, tables::LpmKey},
    state::{
        GrantRecord, Log, Record,
        record::{ports_to_record, protocol_from_name, wall_ms},
    },
};

#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub identity: String,
    pub index: u32,
    pub cidr: Cidr,
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    /// Rule index in the generation that granted it, and its id.
    pub rule: u32,
    pub rule_id: String,
    pub expires: SystemTime,
    pub expires_ns: u64,
}

impl Grant {
    /// Written for a break-glass elevation (not a just-in-time grant).
    pub const fn is_elevation(&self) -> bool {
        self.rule & ELEVATION_RULE != 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0} overlapping grant ranges would apply to {1}; at most {max} fit", max = GRANT_RANGES)]
    TooMany(usize, Cidr),
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// Nanoseconds on the boot clock the kernel hooks read.
pub fn boot_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

fn key_of(index: u32, cidr: &Cidr) -> LpmKey {
    LpmKey {
        prefix_len: LPM_SCOPE_BITS + u32::from(cidr.len),
        data: LpmData {
            scope: lpm_scope(0, cidr.is_v6, index),
            addr: cidr.bytes,
        },
    }
}

/// A grant's key in the kernel's LPM table: (prefix length, scope, address).
type GrantKey = (u32, [u8; 4], [u8; 16]);

#[derive(Default)]
pub struct Grants {
    list: Mutex<Vec<Grant>>,
    /// Keys written per identity index, to remove stale entries.
    written: Mutex<HashMap<u32, BTreeSet<GrantKey>>>,
    log: Log,
}

impl Grant {
    fn to_record(&self) -> GrantRecord {
        GrantRecord {
            cidr: self.cidr.to_string(),
            ports: ports_to_record(&self.ports),
            protocol: self.protocol.name().to_string(),
            rule: self.rule,
            rule_id: self.rule_id.clone(),
            expires_ms: wall_ms(self.expires),
        }
    }

    /// Was this grant (as adopted from the kernel, one port range each)
    /// part of the journaled `r`?
    fn part_of(&self, r: &GrantRecord) -> bool {
        r.rule == self.rule
            && r.cidr.parse::<Cidr>().is_ok_and(|c| c == self.cidr)
            && protocol_from_name(&r.protocol) == Some(self.protocol)
            && self
                .ports
                .iter()
                .all(|p| r.ports.iter().any(|[lo, hi]| *lo <= p.lo && p.hi <= *hi))
    }
}

impl Grants {
    pub fn new(log: Log) -> Self {
        Self {
            log,
            ..Self::default()
        }
    }

    /// Every grant, as journal records (one per identity).
    pub fn snapshot(&self) -> Vec<Record> {
        let list = self.lock();
        let names: BTreeSet<&str> = list.iter().map(|g| g.identity.as_str()).collect();
        names
            .into_iter()
            .map(|identity| Self::record_of(&list, identity))
            .collect()
    }

    fn record_of(list: &[Grant], identity: &str) -> Record {
        Record::Grants {
            identity: identity.to_string(),
            grants: list
                .iter()
                .filter(|g| g.identity == identity)
                .map(Grant::to_record)
                .collect(),
        }
    }

    /// Journal the grants of `identities`. The kernel map is what enforces
    /// and survives; a journal failure only loses names, so it is logged.
    fn journal<'a>(&self, list: &[Grant], identities: impl IntoIterator<Item = &'a str>) {
        let mut last = None;
        for identity in identities {
            match self.log.append(|| Self::record_of(list, identity)) {
                Ok(seq) => last = Some(seq),
                Err(e) => warn!(identity, error = %e, "grants not journaled"),
            }
        }
        if let Some(seq) = last
            && let Err(e) = self.log.durable(seq)
        {
            warn!(error = %e, "grants not journaled");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Grant>> {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Grant `g` and write the identity's entries.
    pub fn add(&self, maps: &KernelMaps, g: Grant) -> Result<(), GrantError> {
        let index = g.index;
        let identity = g.identity.clone();
        let mut list = self.lock();
        list.push(g);
        let result = self.sync(maps, &list, index);
        if result.is_err() {
            list.pop();
            self.sync(maps, &list, index)?;
            return result;
        }
        self.journal(&list, [identity.as_str()]);
        result
    }

    pub fn all(&self) -> Vec<Grant> {
        self.lock().clone()
    }

    /// Remove grants that `keep` rejects (expired ones are always removed);
    /// returns what was removed.
    pub fn retain(
        &self,
        maps: &KernelMaps,
        keep: impl Fn(&Grant) -> bool,
    ) -> Result<Vec<Grant>, GrantError> {
        let now = SystemTime::now();
        let mut list = self.lock();
        let (kept, removed): (Vec<Grant>, Vec<Grant>) =
            list.drain(..).partition(|g| g.expires > now && keep(g));
        *list = kept;
        let touched: BTreeSet<u32> = removed.iter().map(|g| g.index).collect();
        for index in touched {
            self.sync(maps, &list, index)?;
        }
        let names: BTreeSet<&str> = removed.iter().map(|g| g.identity.as_str()).collect();
        self.journal(&list, names);
        Ok(removed)
    }

    /// Rewrite the kernel entries of identity `index` from `list`.
    fn sync(&self, maps: &KernelMaps, list: &[Grant], index: u32) -> Result<(), GrantError> {
        let mine: Vec<&Grant> = list.iter().filter(|g| g.index == index).collect();
        let prefixes: BTreeSet<Cidr> = mine.iter().map(|g| g.cidr).collect();
        let mut entries = Vec::new();
        let mut keys = BTreeSet::new();
        for p in &prefixes {
            // A longest-prefix lookup finds one entry: give it the ranges of
            // every grant whose prefix contains it.
            let ranges: Vec<GrantRange> = mine
                .iter()
                .filter(|g| g.cidr.contains(p))
                .flat_map(|g| {
                    g.ports.iter().map(|r| GrantRange {
                        lo: r.lo,
                        hi: r.hi,
                        proto: g.protocol.number(),
                        _pad: [0; 3],
                        rule: g.rule,
                        expires_ns: g.expires_ns,
                    })
                })
                .collect();
            if ranges.len() > GRANT_RANGES {
                return Err(GrantError::TooMany(ranges.len(), *p));
            }
            let mut value = GrantValue {
                len: ranges.len() as u32,
                ..GrantValue::default()
            };
            value.ranges[..ranges.len()].copy_from_slice(&ranges);
            let key = key_of(index, p);
            keys.insert((key.prefix_len, key.data.scope, key.data.addr));
            entries.push((key, Some(value)));
        }
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = written.remove(&index).unwrap_or_default();
        for (prefix_len, scope, addr) in before.difference(&keys) {
            entries.push((
                LpmKey {
                    prefix_len: *prefix_len,
                    data: LpmData {
                        scope: *scope,
                        addr: *addr,
                    },
                },
                None,
            ));
        }
        maps.write_grants(&entries)?;
        if !keys.is_empty() {
            written.insert(index, keys);
        }
        Ok(())
    }

    /// After a restart: take over the entries a previous daemon left, so
    /// they can be swept and re-judged. `name_of` maps identity indices;
    /// `journaled` (identity → grants) gives back their rule ids.
    pub fn adopt(
        &self,
        maps: &KernelMaps,
        name_of: &dyn Fn(u32) -> Option<String>,
        journaled: &HashMap<String, Vec<GrantRecord>>,
    ) -> Result<usize, GrantError> {
        let now_ns = boot_now_ns();
        let now = SystemTime::now();
        let mut list = self.lock();
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        for (key, value) in maps.grant_entries()? {
            let scope = u32::from_be_bytes(key.data.scope);
            let index = scope & 0x3fff_ffff;
            let is_v6 = scope & (1 << 30) != 0;
            let len = (key.prefix_len - LPM_SCOPE_BITS) as u8;
            let cidr = Cidr {
                is_v6,
                bytes: key.data.addr,
                len,
            };
            written.entry(index).or_default().insert((
                key.prefix_len,
                key.data.scope,
                key.data.addr,
            ));
            for r in &value.ranges[..(value.len as usize).min(GRANT_RANGES)] {
                // An elevation's ranges are adopted too, so that the first
                // apply can keep them (the elevation lives and its role
                // still allows them) or remove them from the kernel (it
                // ended while no daemon ran, or the policy no longer
                // allows it): left out of the list they would stay open
                // until their expiry whatever the operator's view says.
                if r.expires_ns <= now_ns {
                    continue;
                }
                let left = Duration::from_nanos(r.expires_ns - now_ns);
                let mut g = Grant {
                    identity: name_of(index).unwrap_or_else(|| format!("#{index}")),
                    index,
                    cidr,
                    ports: vec![PortRange { lo: r.lo, hi: r.hi }],
                    protocol: Protocol::from_number(u16::from(r.proto)).unwrap_or(Protocol::Any),
                    rule: r.rule,
                    rule_id: if r.rule & ELEVATION_RULE != 0 {
                        "(adopted elevation)".into()
                    } else {
                        "(adopted)".into()
                    },
                    expires: now + left,
                    expires_ns: r.expires_ns,
                };
                if let Some(rec) = journaled
                    .get(&g.identity)
                    .and_then(|v| v.iter().find(|rec| g.part_of(rec)))
                {
                    g.rule_id = rec.rule_id.clone();
                }
                if !list.contains(&g) {
                    list.push(g);
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
