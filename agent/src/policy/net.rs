//! Network values in policies: CIDRs, ports, protocols. Every parser returns
//! a message fit to show the user next to the offending text.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use agent_common::{IPPROTO_TCP, IPPROTO_UDP, NormAddr, PROTO_ANY};
use serde::{Deserialize, Deserializer, de};

/// A destination prefix, normalised: IPv4-mapped IPv6 prefixes become IPv4.
///
/// The derived order (family, address, length) puts every prefix right after
/// the prefixes that contain it, families apart; the compiler relies on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub is_v6: bool,
    /// Network address with host bits cleared.
    pub bytes: [u8; 16],
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, other: &Cidr) -> bool {
        self.is_v6 == other.is_v6
            && self.len <= other.len
            && prefix_eq(&self.bytes, &other.bytes, self.len)
    }

    pub fn contains_addr(&self, addr: &NormAddr) -> bool {
        let max = if addr.is_v6 { 128 } else { 32 };
        self.contains(&Cidr {
            bytes: addr.bytes,
            is_v6: addr.is_v6,
            len: max,
        })
    }

    pub fn norm_addr(&self) -> NormAddr {
        NormAddr {
            bytes: self.bytes,
            is_v6: self.is_v6,
        }
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_everything(&self) -> bool {
        self.len == 0
    }
}

fn prefix_eq(a: &[u8; 16], b: &[u8; 16], len: u8) -> bool {
    let full = (len / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rem = len % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    a[full] & mask == b[full] & mask
}

fn mask_bytes(bytes: &mut [u8; 16], len: u8) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let bit = (i * 8) as u8;
        if bit >= len {
            *b = 0;
        } else if len - bit < 8 {
            *b &= 0xffu8 << (8 - (len - bit));
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| format!("`{addr_text}` is not an IPv4 or IPv6 address"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length `/{l}` must be a number from 0 to {max}"))?,
        };
        Ok(Self::from_ip(addr, len))
    }
}

impl Cidr {
    /// Build from an address and prefix length (already validated).
    pub fn from_ip(addr: IpAddr, len: u8) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::v4(v4, len),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // ::ffff:a.b.c.d/n with n >= 96 is the IPv4 prefix /(n-96).
                Some(v4) if len >= 96 => Self::v4(v4, len - 96),
                _ => {
                    let mut bytes = v6.octets();
                    mask_bytes(&mut bytes, len);
                    Self {
                        bytes,
                        is_v6: true,
                        len,
                    }
                }
            },
        }
    }

    fn v4(v4: Ipv4Addr, len: u8) -> Self {
        let mut bytes = NormAddr::v4(v4.octets()).bytes;
        mask_bytes(&mut bytes, len);
        Self {
            bytes,
            is_v6: false,
            len,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", ip_of(&self.norm_addr()), self.len)
    }
}

/// The `std` address for a normalised one.
pub fn ip_of(addr: &NormAddr) -> IpAddr {
    if addr.is_v6 {
        IpAddr::V6(Ipv6Addr::from(addr.bytes))
    } else {
        let b = addr.bytes;
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// The normalised form of a `std` address.
pub fn norm_of(ip: IpAddr) -> NormAddr {
    match ip {
        IpAddr::V4(v4) => NormAddr::v4(v4.octets()),
        IpAddr::V6(v6) => NormAddr::v6(v6.octets()),
    }
}

/// `tcp`, `udp` or `any`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    #[default]
    Any,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
            Self::Any => PROTO_ANY,
        }
    }

    pub fn from_number(n: u16) -> Option<Self> {
        match n as u8 {
            IPPROTO_TCP if n < 256 => Some(Self::Tcp),
            IPPROTO_UDP if n < 256 => Some(Self::Udp),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Any => "any",
        }
    }
}

/// One entry of a `ports:` list: `443` or `"8000-9000"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: Self = Self {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

const PORT_HELP: &str = "a port is a number from 1 to 65535 or a range like \"8000-9000\"";

fn parse_port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{text}` is not a valid port: {PORT_HELP}"))
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
            None => {
                let p = parse_port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("port range `{s}` runs backwards"));
        }
        Ok(Self { lo, hi })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PORT_HELP)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|p| *p != 0)
                    .map(|p| PortRange { lo: p, hi: p })
                    .ok_or_else(|| E::custom(format!("`{v}` is not a valid port: {PORT_HELP}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("`{v}` is not a valid port: {PORT_HELP}")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for PortRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PortRange".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A port (1-65535) or a range like \"8000-9000\"",
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 65535},
                {"type": "string", "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$"}
            ]
        })
    }
}

/// Merge overlapping and adjacent ranges (sorted output).
pub fn coalesce(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks_cidrs() {
        let c: Cidr = "10.20.3.4/16".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.to_string(), "10.20.0.0/16");
        assert!(!c.is_v6);
        let host: Cidr = "192.0.2.7".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(host.len, 32);
        let v6: Cidr = "2001:db8::1/32".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn mapped_prefixes_become_ipv4() {
        let c: Cidr = "::ffff:10.0.0.0/104"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(!c.is_v6);
        let all6: Cidr = "::/0".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(all6.is_v6, "::/0 is all IPv6 and does not cover IPv4");
    }

    #[test]
    fn rejects_bad_cidrs_with_reasons() {
        let e = "10.0.0.300/8".parse::<Cidr>().unwrap_err();
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
        let e = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(e.contains("from 0 to 32"), "{e}");
        let e = "::/129".parse::<Cidr>().unwrap_err();
        assert!(e.contains("from 0 to 128"), "{e}");
    }

    #[test]
    fn containment() {
        let a: Cidr = "10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: Cidr = "10.1.0.0/16".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        assert!(a.contains_addr(&NormAddr::v4([10, 9, 9, 9])));
        assert!(!a.contains_addr(&NormAddr::v4([11, 0, 0, 1])));
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(
            "443".parse::<PortRange>(),
            Ok(PortRange { lo: 443, hi: 443 })
        );
        assert_eq!(
            "8000-9000".parse::<PortRange>(),
            Ok(PortRange { lo: 8000, hi: 9000 })
        );
        assert!("0".parse::<PortRange>().is_err());
        assert!("9000-8000".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        let merged = coalesce(vec![
            PortRange { lo: 80, hi: 80 },
            PortRange { lo: 81, hi: 90 },
            PortRange { lo: 443, hi: 443 },
            PortRange { lo: 85, hi: 86 },
        ]);
        assert_eq!(
            merged,
            vec![PortRange { lo: 80, hi: 90 }, PortRange { lo: 443, hi: 443 }]
        );
    }
}
