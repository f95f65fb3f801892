//! The DNS maps in the kernel: the steering settings the hooks read, and
//! the learned-address map the proxy writes before it releases an answer.

use std::{collections::HashSet, sync::Mutex};

use agent_common::{DnsConfig, LearnedKey, LearnedValue};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError},
};

use super::{DnsError, learn::KernelWrite};
use crate::bpf::lock;

pub struct DnsMaps {
    config: Mutex<Array<MapData, DnsConfig>>,
    learned: Mutex<HashMap<MapData, LearnedKey, LearnedValue>>,
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> DnsError {
    move |source| DnsError::Map { map, source }
}

impl DnsMaps {
    /// Take the DNS maps out of the loaded object (the rest of the daemon
    /// never touches them).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DnsError> {
        let config = ebpf
            .take_map("DNS_CFG")
            .ok_or(DnsError::MissingMap("DNS_CFG"))?;
        let learned = ebpf
            .take_map("LEARNED")
            .ok_or(DnsError::MissingMap("LEARNED"))?;
        Ok(Self {
            config: Mutex::new(config.try_into().map_err(map_err("DNS_CFG"))?),
            learned: Mutex::new(learned.try_into().map_err(map_err("LEARNED"))?),
        })
    }

    /// Entries the learned map can hold (as the kernel created it).
    pub fn capacity(&self) -> Result<usize, DnsError> {
        use aya::maps::IterableMap;
        let map = lock(&self.learned);
        let info = map.map().info().map_err(map_err("LEARNED"))?;
        Ok(info.max_entries() as usize)
    }

    pub fn set_config(&self, cfg: &DnsConfig) -> Result<(), DnsError> {
        lock(&self.config)
            .set(0, cfg, 0)
            .map_err(map_err("DNS_CFG"))
    }

    pub fn write(&self, writes: &[KernelWrite]) -> Result<(), DnsError> {
        let mut map = lock(&self.learned);
        for w in writes {
            match w {
                KernelWrite::Set(k, v) => map.insert(k, v, 0).map_err(map_err("LEARNED"))?,
                KernelWrite::Delete(k) => match map.remove(k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err("LEARNED")(e)),
                },
            }
        }
        Ok(())
    }

    /// Make the map hold exactly `entries`.
    pub fn replace_all(&self, entries: &[(LearnedKey, LearnedValue)]) -> Result<(), DnsError> {
        let mut map = lock(&self.learned);
        let keep: HashSet<LearnedKey> = entries.iter().map(|(k, _)| *k).collect();
        let mut stale = Vec::new();
        for k in map.keys() {
            let k = k.map_err(map_err("LEARNED"))?;
            if !keep.contains(&k) {
                stale.push(k);
            }
        }
        for k in &stale {
            match map.remove(k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("LEARNED")(e)),
            }
        }
        for (k, v) in entries {
            map.insert(k, v, 0).map_err(map_err("LEARNED"))?;
        }
        Ok(())
    }
}
