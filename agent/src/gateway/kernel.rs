//! `GATEWAY_EPS`: the endpoints enrolled processes may connect to whatever
//! their egress rules say. The gateway keeps it equal to what it listens on.
//!
//! `BIND_RESERVED`: what enrolled processes may not bind — every port of
//! the gateway's address, and on the unspecified address the ports the
//! gateway (and the DNS proxy) serve on, including a port a policy being
//! applied is about to take. Otherwise an agent could hold a port before
//! the gateway does and answer the connections of other agents.

use std::{
    collections::{BTreeSet, HashSet},
    net::Ipv4Addr,
    sync::Mutex,
};

use agent_common::gateway::{endpoint_key, reserved_address, reserved_wildcard_port};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
};

use super::GatewayError;
use crate::bpf::lock;

pub struct GatewayMaps {
    endpoints: Mutex<KeyMap>,
    reserved: Mutex<KeyMap>,
    /// Keys reserved whatever the policy (the DNS proxy's port, the
    /// metrics endpoint).
    fixed: Vec<u64>,
}

fn map_err(source: MapError) -> GatewayError {
    GatewayError::Map {
        map: "GATEWAY_EPS",
        source,
    }
}

fn reserved_err(source: MapError) -> GatewayError {
    GatewayError::Map {
        map: "BIND_RESERVED",
        source,
    }
}

impl GatewayMaps {
    /// `fixed`: `BIND_RESERVED` keys reserved besides the gateway's own
    /// (the DNS proxy's port, the daemon's other listeners).
    pub fn take(ebpf: &mut Ebpf, fixed: Vec<u64>) -> Result<Self, GatewayError> {
        let map = ebpf
            .take_map("GATEWAY_EPS")
            .ok_or(GatewayError::MissingMap("GATEWAY_EPS"))?;
        let reserved = ebpf
            .take_map("BIND_RESERVED")
            .ok_or(GatewayError::MissingMap("BIND_RESERVED"))?;
        Ok(Self {
            endpoints: Mutex::new(map.try_into().map_err(map_err)?),
            reserved: Mutex::new(reserved.try_into().map_err(reserved_err)?),
            fixed,
        })
    }

    /// Make the reserved binds exactly: every port of `addr` (when the
    /// gateway runs), `ports` on the unspecified address, and the fixed
    /// keys.
    pub fn reserve(
        &self,
        addr: Option<Ipv4Addr>,
        ports: &BTreeSet<u16>,
    ) -> Result<(), GatewayError> {
        let keep: HashSet<u64> = addr
            .map(|a| reserved_address(u32::from(a)))
            .into_iter()
            .chain(ports.iter().map(|p| reserved_wildcard_port(*p)))
            .chain(self.fixed.iter().copied())
            .collect();
        let mut map = lock(&self.reserved);
        // New reservations first: nothing is unreserved in between.
        insert_all(&mut map, &keep, reserved_err)?;
        remove_others(&mut map, &keep, reserved_err)
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
        // Closing first: nothing stale is open in between.
        remove_others(&mut map, &keep, map_err)?;
        insert_all(&mut map, &keep, map_err)
    }
}

type KeyMap = HashMap<MapData, u64, u32>;

fn insert_all(
    map: &mut KeyMap,
    keys: &HashSet<u64>,
    err: fn(MapError) -> GatewayError,
) -> Result<(), GatewayError> {
    for k in keys {
        map.insert(k, &1, 0).map_err(err)?;
    }
    Ok(())
}

/// Remove every key not in `keep`.
fn remove_others(
    map: &mut KeyMap,
    keep: &HashSet<u64>,
    err: fn(MapError) -> GatewayError,
) -> Result<(), GatewayError> {
    let stale: Vec<u64> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !keep.contains(k))
        .collect();
    for k in stale {
        match map.remove(&k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}
