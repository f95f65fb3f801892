//! `GATEWAY_EPS`: the endpoints enrolled processes may connect to whatever
//! their egress rules say. The gateway keeps it equal to what it listens on.

use std::{collections::HashSet, net::Ipv4Addr, sync::Mutex};

use agent_common::gateway::endpoint_key;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
};

use super::GatewayError;
use crate::bpf::lock;

pub struct GatewayMaps {
    endpoints: Mutex<HashMap<MapData, u64, u32>>,
}

fn map_err(source: MapError) -> GatewayError {
    GatewayError::Map {
        map: "GATEWAY_EPS",
        source,
    }
}

impl GatewayMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, GatewayError> {
        let map = ebpf
            .take_map("GATEWAY_EPS")
            .ok_or(GatewayError::MissingMap("GATEWAY_EPS"))?;
        Ok(Self {
            endpoints: Mutex::new(map.try_into().map_err(map_err)?),
        })
    }

    /// Open `ports` on `addr` (in addition to what is open).
    pub fn open(&self, addr: Ipv4Addr, ports: &[u16]) -> Result<(), GatewayError> {
        let mut map = lock(&self.endpoints);
        for p in ports {
            map.insert(&endpoint_key(u32::from(addr), *p), &1, 0)
                .map_err(map_err)?;
        }
        Ok(())
    }

    /// Make the open endpoints exactly `ports` on `addr`.
    pub fn retain(&self, addr: Ipv4Addr, ports: &[u16]) -> Result<(), GatewayError> {
        let mut map = lock(&self.endpoints);
        let keep: HashSet<u64> = ports
            .iter()
            .map(|p| endpoint_key(u32::from(addr), *p))
            .collect();
        let stale: Vec<u64> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for k in stale {
            match map.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        for k in keep {
            map.insert(&k, &1, 0).map_err(map_err)?;
        }
        Ok(())
    }
}
