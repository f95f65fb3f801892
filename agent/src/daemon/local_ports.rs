//! The daemon's fixed TCP ports kept out of the kernel's automatic port
//! choice (`net.ipv4.ip_local_reserved_ports`, which IPv6 honours too).
//!
//! The bind hooks refuse an agent an explicit bind to the daemon's ports,
//! but a `listen()` or `connect()` without `bind()`, or a bind to port 0,
//! lets the kernel pick the port without asking them: while the daemon
//! restarts an agent could be handed the API's or a service's port and
//! answer the callers meant for the daemon. Ports in the reserved list are
//! never picked automatically. Only ports inside `ip_local_port_range`
//! matter (no other is picked automatically); entries are added, never
//! removed (they must hold while no daemon runs).

use std::{collections::BTreeSet, fs};

use tracing::{info, warn};

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// `1000,2000-2005` → the ranges it names.
fn parse(list: &str) -> Vec<(u16, u16)> {
    list.trim()
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
        })
        .collect()
}

/// The ports of `ports` the kernel could pick automatically and that the
/// reserved list does not cover yet.
fn missing(ports: &BTreeSet<u16>, reserved: &str, range: &str) -> Vec<u16> {
    let mut r = range
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    let (lo, hi) = (r.next().unwrap_or(32768), r.next().unwrap_or(60999));
    let have = parse(reserved);
    ports
        .iter()
        .copied()
        .filter(|p| (lo..=hi).contains(p))
        .filter(|p| !have.iter().any(|(a, b)| (*a..=*b).contains(p)))
        .collect()
}

/// Add `ports` (port 0 is ignored) to the kernel's reserved ports. A
/// failure is reported, not fatal: the bind hooks still refuse explicit
/// binds.
pub fn reserve(ports: impl IntoIterator<Item = u16>) {
    let ports: BTreeSet<u16> = ports.into_iter().filter(|p| *p != 0).collect();
    if ports.is_empty() {
        return;
    }
    let (Ok(reserved), Ok(range)) = (fs::read_to_string(RESERVED), fs::read_to_string(RANGE))
    else {
        warn!(
            "cannot read {RESERVED}: the daemon's ports may be picked for other programs while it restarts"
        );
        return;
    };
    let add = missing(&ports, &reserved, &range);
    if add.is_empty() {
        return;
    }
    let mut list: Vec<String> = reserved
        .trim()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().to_string())
        .collect();
    list.extend(add.iter().map(u16::to_string));
    match fs::write(RESERVED, list.join(",")) {
        Ok(()) => info!(ports = ?add, "ports kept out of the kernel's automatic choice"),
        Err(e) => {
            warn!(error = %e, ports = ?add, "cannot reserve ports in {RESERVED}: they may be picked for other programs while the daemon restarts")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ports_in_the_range_and_not_yet_reserved() {
        let ports: BTreeSet<u16> = [53, 9740, 40000, 40001, 50051].into();
        assert_eq!(
            missing(&ports, "40000-40000,50051\n", "32768\t60999\n"),
            vec![40001]
        );
        assert_eq!(
            missing(&ports, "\n", "32768 60999"),
            vec![40000, 40001, 50051]
        );
    }
}
