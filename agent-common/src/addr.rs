//! The one address normaliser every hook and the policy compiler use.
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) *is* the IPv4 address
//! `a.b.c.d`: a process that connects to it through an IPv6 socket reaches the
//! IPv4 host. So it is judged as IPv4, by IPv4 rules, and never by IPv6 rules.
//! The same holds for every IPv6 range whose addresses lead, through a
//! translator or tunnel, to an IPv4 host: a policy that allows some IPv6
//! range must not open the IPv4 hosts behind it. They are judged as the
//! IPv4 address they lead to:
//!
//! | range | IPv4 address judged |
//! |---|---|
//! | `::ffff:0:0/96` (mapped), `::ffff:0:0:0/96` (SIIT translated) | the last 32 bits |
//! | `64:ff9b::/96` (NAT64 well-known), `64:ff9b:1::/48` (NAT64 local use) | the last 32 bits (RFC 6052 /96 form) |
//! | `::/96` (IPv4-compatible, deprecated), except `::` and `::1` | the last 32 bits |
//! | `2002::/16` (6to4) | bits 16–47 |
//! | `2001::/32` (Teredo) | the client's address: the last 32 bits inverted |
//!
//! IPv4 addresses live in the first four bytes of `bytes`, the rest zero.

/// A destination address in canonical form.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NormAddr {
    pub bytes: [u8; 16],
    /// `true` for a genuine IPv6 address, `false` for IPv4 (mapped or not).
    pub is_v6: bool,
}

const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
const V4_TRANSLATED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0];
const NAT64_WKP: [u8; 12] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
const V4_COMPAT: [u8; 12] = [0; 12];

#[inline(always)]
fn starts_with(octets: &[u8; 16], prefix: &[u8; 12], len: usize) -> bool {
    let mut i = 0;
    let mut same = true;
    while i < 12 {
        if i < len && octets[i] != prefix[i] {
            same = false;
        }
        i += 1;
    }
    same
}

/// The IPv4 address an IPv6 address leads to, if it is one of the ranges
/// in the module docs.
#[inline(always)]
pub fn embedded_v4(o: &[u8; 16]) -> Option<[u8; 4]> {
    let last = [o[12], o[13], o[14], o[15]];
    if starts_with(o, &V4_MAPPED, 12)
        || starts_with(o, &V4_TRANSLATED, 12)
        || starts_with(o, &NAT64_WKP, 12)
        // 64:ff9b:1::/48
        || (starts_with(o, &NAT64_WKP, 4) && o[4] == 0 && o[5] == 1)
    {
        return Some(last);
    }
    if starts_with(o, &V4_COMPAT, 12) {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        let own = o[12] == 0 && o[13] == 0 && o[14] == 0 && o[15] <= 1;
        return if own { None } else { Some(last) };
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return Some([o[2], o[3], o[4], o[5]]);
    }
    if o[0] == 0x20 && o[1] == 0x01 && o[2] == 0 && o[3] == 0 {
        return Some([!o[12], !o[13], !o[14], !o[15]]);
    }
    None
}

impl NormAddr {
    /// From an IPv4 address in network byte order as four bytes.
    #[inline(always)]
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[0] = octets[0];
        bytes[1] = octets[1];
        bytes[2] = octets[2];
        bytes[3] = octets[3];
        Self {
            bytes,
            is_v6: false,
        }
    }

    /// From sixteen IPv6 bytes in network order; addresses that lead to
    /// an IPv4 host (module docs) become that IPv4 address.
    #[inline(always)]
    pub fn v6(octets: [u8; 16]) -> Self {
        match embedded_v4(&octets) {
            Some(v4) => Self::v4(v4),
            None => Self {
                bytes: octets,
                is_v6: true,
            },
        }
    }

    /// From the four 32-bit words the kernel stores in `bpf_sock_addr.user_ip6`
    /// (network order in memory).
    #[inline(always)]
    pub fn from_ip6_words(words: [u32; 4]) -> Self {
        let a = words[0].to_ne_bytes();
        let b = words[1].to_ne_bytes();
        let c = words[2].to_ne_bytes();
        let d = words[3].to_ne_bytes();
        Self::v6([
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ])
    }

    /// From `bpf_sock_addr.user_ip4` (network order in memory).
    #[inline(always)]
    pub fn from_ip4_word(word: u32) -> Self {
        Self::v4(word.to_ne_bytes())
    }

    /// Bits in an address of this family (32 or 128).
    #[inline(always)]
    pub const fn max_prefix(&self) -> u32 {
        if self.is_v6 { 128 } else { 32 }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(NormAddr::v6(mapped), NormAddr::v4([10, 1, 2, 3]));
        assert!(!NormAddr::v6(mapped).is_v6);
    }

    fn v6(text: &str) -> NormAddr {
        let ip: std::net::Ipv6Addr = text.parse().expect("test address");
        NormAddr::v6(ip.octets())
    }

    #[test]
    fn addresses_that_lead_to_ipv4_are_ipv4() {
        let want = NormAddr::v4([10, 250, 0, 2]);
        for a in [
            "::ffff:10.250.0.2",
            "::ffff:0:10.250.0.2",
            "64:ff9b::10.250.0.2",
            "64:ff9b:1::10.250.0.2",
            "64:ff9b:1:ffff:ffff::10.250.0.2",
            "::10.250.0.2",
            "2002:afa:2::1",
            "2002:afa:2:ffff:ffff:ffff:ffff:ffff",
            // Teredo: server 192.0.2.1, client 10.250.0.2 (inverted).
            "2001:0:c000:201:0:ffff:f505:fffd",
        ] {
            assert_eq!(v6(a), want, "{a}");
        }
    }

    #[test]
    fn ipv6_outside_those_ranges_stays_ipv6() {
        for a in [
            "::",
            "::1",
            "2001:db8::1",
            "2001:1::10.250.0.2",
            "2003::1",
            "64:ff9b:2::1",
            "64:ff9a::10.250.0.2",
            "fe80::1",
            "::1:0:0:1",
        ] {
            assert!(v6(a).is_v6, "{a}");
        }
    }

    #[test]
    fn plain_ipv6_stays_ipv6() {
        let mut a = [0u8; 16];
        a[15] = 1;
        let n = NormAddr::v6(a);
        assert!(n.is_v6);
        assert_eq!(n.bytes, a);
    }

    #[test]
    fn words_keep_network_order() {
        // 10.1.2.3 as the kernel stores it: bytes 10,1,2,3 in memory.
        let word = u32::from_ne_bytes([10, 1, 2, 3]);
        assert_eq!(NormAddr::from_ip4_word(word), NormAddr::v4([10, 1, 2, 3]));
        let words = [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes([192, 168, 0, 1]),
        ];
        assert_eq!(
            NormAddr::from_ip6_words(words),
            NormAddr::v4([192, 168, 0, 1])
        );
    }
}
