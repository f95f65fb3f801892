//! DNS-aware egress: what the hooks need to steer DNS to the daemon's proxy,
//! restore the resolver's address in answers, and judge addresses the proxy
//! learned from answers.
//!
//! Every identity whose policy names hosts has its own proxy address,
//! `DnsConfig::base + identity` (e.g. `127.53.0.5` for identity 5). The hooks
//! rewrite the identity's DNS (UDP and TCP to port 53) to that address, so
//! the proxy knows who asked from the address it was reached on, and the
//! kernel, not the packet, vouches for it.

/// `IdentityConfig::flags`: the identity has host rules; its DNS is steered
/// to the proxy and the learned-address map is consulted.
pub const IDENT_DNS: u16 = 2;

/// The DNS port the hooks steer.
pub const DNS_PORT: u16 = 53;

/// `DNS_CFG[0]`, written by the daemon at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// 1 when steering is configured (the hooks steer nothing otherwise).
    pub enabled: u32,
    /// First address of the per-identity proxy range, as a host-order
    /// integer (`127.53.0.0` is `0x7f35_0000`).
    pub base: u32,
    /// The proxy's port, host order.
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<DnsConfig>() == 16);

impl DnsConfig {
    /// The identity a proxy address belongs to, when `addr` (host order) is
    /// inside the proxy range.
    #[inline(always)]
    pub const fn identity_of(&self, addr: u32) -> Option<u32> {
        let off = addr.wrapping_sub(self.base);
        if self.enabled != 0 && off < crate::MAX_IDENTITIES {
            Some(off)
        } else {
            None
        }
    }

    /// The proxy address of `identity`, host order.
    #[inline(always)]
    pub const fn address_of(&self, identity: u32) -> u32 {
        self.base.wrapping_add(identity)
    }
}

/// Per socket (`BPF_MAP_TYPE_SK_STORAGE`): where the process meant its DNS
/// to go, so answers and `getpeername()` show that address, not the proxy.
/// Addresses and port exactly as the process gave them (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    pub ip6: [u32; 4],
    pub ip4: u32,
    /// `bpf_sock_addr.user_port` as given (network order in the low 16 bits).
    pub port: u32,
    /// `AF_INET` or `AF_INET6`: the hook that stored it.
    pub family: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<OrigDst>() == 32);

/// Key of the learned-address map: one address learned by one identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LearnedKey {
    pub identity: u32,
    /// 1 for IPv6, 0 for IPv4 (first four bytes of `addr`), as `NormAddr`.
    pub is_v6: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<LearnedKey>() == 24);

/// Port ranges one learned address can carry (the merged ranges of the host
/// rules of every name that resolved to it).
pub const LEARNED_RANGES: usize = 8;

/// One range of a learned address, with its own expiry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedRange {
    /// `bpf_ktime_get_boot_ns()` after which the range no longer admits new
    /// connections (TTL plus grace).
    pub expires_ns: u64,
    /// The host rule (index in the active generation) reported in events.
    pub rule: u32,
    pub lo: u16,
    pub hi: u16,
    /// `PROTO_ANY`, TCP or UDP.
    pub proto: u8,
    /// 1 when a deny host rule named this address (a learned deny wins).
    pub deny: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<LearnedRange>() == 24);

impl LearnedRange {
    #[inline(always)]
    pub const fn admits(&self, port: u16, proto: u8, now_ns: u64) -> bool {
        self.expires_ns > now_ns
            && port >= self.lo
            && port <= self.hi
            && (self.proto == crate::PROTO_ANY || self.proto == proto)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedValue {
    pub len: u32,
    pub _pad: u32,
    pub ranges: [LearnedRange; LEARNED_RANGES],
}
const _: () = assert!(size_of::<LearnedValue>() == 8 + 24 * LEARNED_RANGES);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding bytes (checked by the size
    // assertions above): any bit pattern is valid.
    unsafe impl aya::Pod for super::DnsConfig {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::LearnedKey {}
    unsafe impl aya::Pod for super::LearnedValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_range_maps_to_identities() {
        let cfg = DnsConfig {
            enabled: 1,
            base: 0x7f35_0000,
            port: 53,
            _pad: [0; 6],
        };
        assert_eq!(cfg.identity_of(0x7f35_0005), Some(5));
        assert_eq!(cfg.identity_of(0x7f35_0fff), Some(4095));
        assert_eq!(cfg.identity_of(0x7f35_1000), None);
        assert_eq!(cfg.identity_of(0x7f34_ffff), None);
        assert_eq!(cfg.address_of(5), 0x7f35_0005);
        let off = DnsConfig { enabled: 0, ..cfg };
        assert_eq!(off.identity_of(0x7f35_0005), None);
    }

    #[test]
    fn learned_range_expires_and_matches_ports() {
        let r = LearnedRange {
            expires_ns: 100,
            lo: 443,
            hi: 443,
            proto: crate::IPPROTO_TCP,
            ..LearnedRange::default()
        };
        assert!(r.admits(443, crate::IPPROTO_TCP, 99));
        assert!(!r.admits(443, crate::IPPROTO_TCP, 100));
        assert!(!r.admits(443, crate::IPPROTO_UDP, 0));
        assert!(!r.admits(80, crate::IPPROTO_TCP, 0));
    }
}
