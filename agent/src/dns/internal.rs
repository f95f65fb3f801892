//! Addresses that point inside: loopback, private, link-local, CGNAT, ULA,
//! cloud metadata. An allowed name (easy under any wildcard over a zone
//! someone else controls) that answers with one of these would open the
//! inside of the host or its network to the agent, so such answers are not
//! learned unless a `cidr` allow rule of the identity (or the host-wide
//! `dns.learn_internal`) also covers the address (docs/dns.md).
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are
//! judged by the IPv4 address they lead to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address counts as internal (for audit records).
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    // Metadata endpoints first: they sit inside ranges named below.
    if matches!(
        o,
        [169, 254, 169, 254] | [100, 100, 100, 200] | [192, 0, 0, 192]
    ) {
        return Some("metadata");
    }
    Some(match o {
        [0, ..] => "unspecified",
        [127, ..] => "loopback",
        [10, ..] | [192, 168, ..] => "private",
        [172, b, ..] if (16..32).contains(&b) => "private",
        [169, 254, ..] => "link-local",
        [100, b, ..] if (64..128).contains(&b) => "cgnat",
        // IETF protocol assignments (192.0.0.0/24) and the "this host on
        // this network" broadcast.
        [192, 0, 0, _] => "private",
        [255, 255, 255, 255] => "broadcast",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_kind(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some("metadata");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "ula",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        // Site-local (deprecated, still routed inside some networks).
        x if x & 0xffc0 == 0xfec0 => "private",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address leads to: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`)
/// and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |a: u16, b: u16| Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
    match s {
        [0, 0, 0, 0, 0, 0xffff, a, b] => Some(low(a, b)),
        [0, 0, 0, 0, 0, 0, a, b] if (a, b) != (0, 0) && (a, b) != (0, 1) => Some(low(a, b)),
        [0x64, 0xff9b, 0, 0, 0, 0, a, b] => Some(low(a, b)),
        [0x64, 0xff9b, 1, ..] => Some(low(s[6], s[7])),
        [0x2002, a, b, ..] => Some(low(a, b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        internal_kind(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn every_inside_range_is_named() {
        for (addr, want) in [
            ("127.0.0.1", "loopback"),
            ("127.225.3.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd12:3456::1", "ula"),
            ("fc00::1", "ula"),
            ("fd00:ec2::254", "metadata"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("64:ff9b:1::a00:1", "private"),
            ("2002:7f00:1::1", "loopback"),
        ] {
            assert_eq!(kind(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn public_addresses_are_not_internal() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(addr), None, "{addr}");
        }
    }
}
