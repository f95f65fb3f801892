//! The one address normaliser every hook and the policy compiler use.
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) *is* the IPv4 address
//! `a.b.c.d`: a process that connects to it through an IPv6 socket reaches the
//! IPv4 host. So it is judged as IPv4, by IPv4 rules, and never by IPv6 rules.
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

    /// From sixteen IPv6 bytes in network order; mapped addresses become IPv4.
    #[inline(always)]
    pub fn v6(octets: [u8; 16]) -> Self {
        let mut mapped = true;
        let mut i = 0;
        while i < 12 {
            if octets[i] != V4_MAPPED[i] {
                mapped = false;
            }
            i += 1;
        }
        if mapped {
            Self::v4([octets[12], octets[13], octets[14], octets[15]])
        } else {
            Self {
                bytes: octets,
                is_v6: true,
            }
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
