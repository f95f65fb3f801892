//! The aggregation maps (`agent_common::aggregate`): the daemon switches
//! the slot the programs count into, waits until none can still write the
//! old one, reads it, and clears it once its records are in the trail.

use std::sync::Mutex;

use agent_common::{
    MAX_IDENTITIES,
    aggregate::{AggConfig, AggKey, AggOverflow, AggValue},
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError},
};

use super::{BpfError, barrier::RcuBarrier, lock};

pub struct AggMaps {
    cfg: Mutex<Array<MapData, AggConfig>>,
    agg: Mutex<HashMap<MapData, AggKey, AggValue>>,
    overflow: Mutex<Array<MapData, AggOverflow>>,
    barrier: RcuBarrier,
}

/// Everything one slot counted.
#[derive(Debug, Default)]
pub struct SlotCounts {
    pub kinds: Vec<(AggKey, AggValue)>,
    /// `(identity, counts)` for identities with any.
    pub overflow: Vec<(u32, AggOverflow)>,
}

fn err(map: &'static str) -> impl FnOnce(MapError) -> BpfError {
    BpfError::map(map)
}

impl AggMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(BpfError::MissingMap(name))
        };
        Ok(Self {
            cfg: Mutex::new(take(ebpf, "AGG_CFG")?.try_into().map_err(err("AGG_CFG"))?),
            agg: Mutex::new(take(ebpf, "AGG")?.try_into().map_err(err("AGG"))?),
            overflow: Mutex::new(
                take(ebpf, "AGG_OVERFLOW")?
                    .try_into()
                    .map_err(err("AGG_OVERFLOW"))?,
            ),
            barrier: RcuBarrier::new().map_err(BpfError::Barrier)?,
        })
    }

    pub fn config(&self) -> Result<AggConfig, BpfError> {
        lock(&self.cfg).get(&0, 0).map_err(err("AGG_CFG"))
    }

    pub fn set_config(&self, cfg: &AggConfig) -> Result<(), BpfError> {
        lock(&self.cfg).set(0, cfg, 0).map_err(err("AGG_CFG"))
    }

    /// Start the next period; returns the slot of the one that ended, which
    /// no program writes any more when this returns.
    pub fn next_period(&self) -> Result<u8, BpfError> {
        let mut cfg = self.config()?;
        let ended = (cfg.period & 1) as u8;
        cfg.period = cfg.period.wrapping_add(1);
        self.set_config(&cfg)?;
        self.barrier.wait().map_err(BpfError::Barrier)?;
        Ok(ended)
    }

    /// What `slot` holds (nothing is removed).
    pub fn read(&self, slot: u8) -> Result<SlotCounts, BpfError> {
        let mut out = SlotCounts::default();
        {
            let agg = lock(&self.agg);
            for k in agg.keys() {
                let k = k.map_err(err("AGG"))?;
                if k.slot != slot {
                    continue;
                }
                match agg.get(&k, 0) {
                    Ok(v) => out.kinds.push((k, v)),
                    Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(err("AGG")(e)),
                }
            }
        }
        let overflow = lock(&self.overflow);
        let base = u32::from(slot) * MAX_IDENTITIES;
        for identity in 0..MAX_IDENTITIES {
            let o = overflow
                .get(&(base + identity), 0)
                .map_err(err("AGG_OVERFLOW"))?;
            if o != AggOverflow::ZERO {
                out.overflow.push((identity, o));
            }
        }
        Ok(out)
    }

    /// Forget what `read` returned for `slot` (its records are written).
    pub fn clear(&self, slot: u8, counts: &SlotCounts) -> Result<(), BpfError> {
        {
            let mut agg = lock(&self.agg);
            for (k, _) in &counts.kinds {
                debug_assert_eq!(k.slot, slot);
                match agg.remove(k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(err("AGG")(e)),
                }
            }
        }
        let mut overflow = lock(&self.overflow);
        let base = u32::from(slot) * MAX_IDENTITIES;
        for (identity, _) in &counts.overflow {
            overflow
                .set(base + identity, &AggOverflow::ZERO, 0)
                .map_err(err("AGG_OVERFLOW"))?;
        }
        Ok(())
    }
}
