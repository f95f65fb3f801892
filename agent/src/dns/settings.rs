//! The `dns:` section of the daemon's configuration.
//!
//! ```yaml
//! dns:
//!   enabled: true              # steer the DNS of identities that name hosts
//!   upstream: 10.0.0.2:53      # default: first nameserver in /etc/resolv.conf
//!   listen: 127.53.0.0         # identity N's proxy answers on listen + N
//!   port: 53                   # the proxy's port on those addresses
//!   forbidden: nxdomain        # nxdomain | refused: the answer to a forbidden name
//!   ttl_min: 5                 # seconds; shorter TTLs are raised to this
//!   ttl_max: 3600              # seconds; longer TTLs are lowered to this
//!   grace: 5                   # seconds an address keeps admitting after its TTL
//!   max_addresses_per_name: 32 # beyond this the oldest address of a name is dropped
//!   update_timeout_ms: 100     # learned addresses not in the kernel by then: answer dropped
//!   upstream_timeout_ms: 2000  # no upstream answer by then: SERVFAIL
//!   state_file: /var/lib/palisade/dns-learned.json
//!   audit_allowed: true        # an audit event for every allowed lookup too
//!   max_addresses_per_identity: 4096  # learned addresses one identity may hold
//!   max_inflight_per_identity: 256    # its queries waiting on the upstream
//!   learned_capacity: 65536    # size of the kernel's learned map (at pin creation)
//!   learn_internal: []         # inside ranges any identity may learn (see dns.md)
//!   steer_audit: false         # also steer identities in audit mode (lookups recorded)
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// What a forbidden name gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forbidden {
    #[default]
    Nxdomain,
    Refused,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSettings {
    pub enabled: bool,
    /// `ip` or `ip:port`; `None` = the first nameserver of /etc/resolv.conf.
    pub upstream: Option<String>,
    /// Base of the per-identity proxy addresses (inside 127.0.0.0/8).
    pub listen: Ipv4Addr,
    pub port: u16,
    pub forbidden: Forbidden,
    pub ttl_min: u32,
    pub ttl_max: u32,
    pub grace: u32,
    pub max_addresses_per_name: usize,
    pub update_timeout_ms: u64,
    pub upstream_timeout_ms: u64,
    pub state_file: PathBuf,
    pub audit_allowed: bool,
    /// Learned addresses one identity may hold; beyond it, that identity's
    /// own oldest entries are evicted. Never more than the map's capacity
    /// shared out among the identities that name hosts.
    pub max_addresses_per_identity: usize,
    /// Queries of one identity waiting on the upstream at once; a new one
    /// beyond it evicts that identity's oldest (which gets SERVFAIL).
    pub max_inflight_per_identity: usize,
    /// Entries of the kernel's learned-address map (all identities).
    /// Applies when the pinned map is first created.
    pub learned_capacity: u32,
    /// Inside addresses (loopback, private, link-local, CGNAT, ULA,
    /// metadata) in these prefixes may be learned by any identity whose
    /// host rule allows the name; others only with a covering `cidr` rule.
    pub learn_internal: Vec<String>,
    /// Also steer the DNS of identities in audit mode that name no hosts,
    /// so that their lookups are recorded (what `palisade policy suggest`
    /// needs to name hosts instead of addresses).
    pub steer_audit: bool,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            upstream: None,
            listen: Ipv4Addr::new(127, 53, 0, 0),
            port: 53,
            forbidden: Forbidden::Nxdomain,
            ttl_min: 5,
            ttl_max: 3600,
            grace: 5,
            max_addresses_per_name: 32,
            update_timeout_ms: 100,
            upstream_timeout_ms: 2000,
            state_file: PathBuf::from("/var/lib/palisade/dns-learned.json"),
            audit_allowed: true,
            max_addresses_per_identity: 4096,
            max_inflight_per_identity: 256,
            learned_capacity: 1 << 16,
            learn_internal: Vec::new(),
            steer_audit: false,
        }
    }
}

/// Identity indices a proxy range must hold (`agent_common::MAX_IDENTITIES`).
const RANGE: u32 = agent_common::MAX_IDENTITIES;

impl DnsSettings {
    /// Check the values; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        let base = u32::from(self.listen);
        let last = base.checked_add(RANGE - 1).map(Ipv4Addr::from);
        if self.listen.octets()[0] != 127 || last.is_none_or(|l| l.octets()[0] != 127) {
            return Err(format!(
                "dns.listen = {}: the proxy range ({} addresses from it) must lie inside 127.0.0.0/8",
                self.listen, RANGE
            ));
        }
        if self.port == 0 {
            return Err("dns.port = 0: give the proxy a port".into());
        }
        if self.ttl_min > self.ttl_max {
            return Err(format!(
                "dns.ttl_min = {} is larger than dns.ttl_max = {}",
                self.ttl_min, self.ttl_max
            ));
        }
        if self.max_addresses_per_name == 0 {
            return Err("dns.max_addresses_per_name = 0: at least one address per name".into());
        }
        if self.update_timeout_ms == 0 || self.upstream_timeout_ms == 0 {
            return Err("dns.update_timeout_ms and dns.upstream_timeout_ms must be above 0".into());
        }
        if let Some(up) = &self.upstream {
            parse_upstream(up).map_err(|e| format!("dns.upstream = {up:?}: {e}"))?;
        }
        if self.max_addresses_per_identity == 0 || self.max_inflight_per_identity == 0 {
            return Err(
                "dns.max_addresses_per_identity and dns.max_inflight_per_identity must be above 0"
                    .into(),
            );
        }
        if self.learned_capacity < 64 {
            return Err(format!(
                "dns.learned_capacity = {}: at least 64 entries",
                self.learned_capacity
            ));
        }
        self.internal_prefixes()?;
        Ok(())
    }

    /// `learn_internal`, parsed; the error names the entry.
    pub fn internal_prefixes(&self) -> Result<Vec<crate::policy::Cidr>, String> {
        self.learn_internal
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| format!("dns.learn_internal entry {c:?}: {e}"))
            })
            .collect()
    }

    /// Make `state_file` relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.state_file = base.join(&self.state_file);
    }

    pub fn update_timeout(&self) -> Duration {
        Duration::from_millis(self.update_timeout_ms)
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    /// The upstream resolver: configured, or the host's first nameserver.
    pub fn upstream_addr(&self) -> Result<SocketAddr, String> {
        match &self.upstream {
            Some(up) => parse_upstream(up),
            None => {
                let path = "/etc/resolv.conf";
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("dns.upstream is not set and {path}: {e}"))?;
                resolv_conf_nameserver(&text).ok_or_else(|| {
                    format!("dns.upstream is not set and {path} names no nameserver")
                })
            }
        }
    }
}

fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| "expected an address or address:port, e.g. 10.0.0.2 or [::1]:53".into())
}

/// The first `nameserver` of a resolv.conf.
pub fn resolv_conf_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "nameserver" {
            return None;
        }
        let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_check_and_bad_values_name_their_key() {
        assert_eq!(DnsSettings::default().check(), Ok(()));
        let bad = DnsSettings {
            listen: Ipv4Addr::new(10, 0, 0, 0),
            ..DnsSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("dns.listen"));
        let edge = DnsSettings {
            listen: Ipv4Addr::new(127, 255, 255, 0),
            ..DnsSettings::default()
        };
        assert!(edge.check().unwrap_err().contains("dns.listen"));
        let ttl = DnsSettings {
            ttl_min: 10,
            ttl_max: 5,
            ..DnsSettings::default()
        };
        assert!(ttl.check().unwrap_err().contains("dns.ttl_min"));
        let up = DnsSettings {
            upstream: Some("nope".into()),
            ..DnsSettings::default()
        };
        assert!(up.check().unwrap_err().contains("dns.upstream"));
    }

    #[test]
    fn the_config_file_rejects_unknown_dns_keys_and_bad_values() {
        let dir = std::env::temp_dir().join(format!("palisade-dns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("c.yaml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
            crate::config::Config::load(&file)
        };
        let e = load("policy: p.yaml\ndns:\n  upstrem: 10.0.0.2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml:3:3: unknown field `upstrem`"), "{e}");
        let e = load("policy: p.yaml\ndns:\n  forbidden: drop\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml:3"), "{e}");
        let e = load("policy: p.yaml\ndns:\n  ttl_min: 9\n  ttl_max: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns.ttl_min = 9"), "{e}");
        let cfg = load("policy: p.yaml\ndns:\n  state_file: learned.json\n  forbidden: refused\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.dns.state_file, dir.join("learned.json"));
        assert_eq!(cfg.dns.forbidden, Forbidden::Refused);
        assert!(cfg.dns.enabled);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn upstream_forms() {
        assert_eq!(
            parse_upstream("10.0.0.2"),
            Ok("10.0.0.2:53".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        let conf = "# comment\nsearch x\nnameserver fe80::1%eth0\nnameserver 10.0.0.1\n";
        assert_eq!(
            resolv_conf_nameserver(conf),
            Some("[fe80::1]:53".parse().unwrap_or_else(|e| panic!("{e}")))
        );
    }
}
