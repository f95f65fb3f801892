//! Learned names on disk, so a restarted daemon knows which name each
//! learned address came from (the kernel map itself is pinned and never
//! stops enforcing). Expiries are stored as wall-clock time and turned back
//! into boot-clock time on load, so a file that outlives a reboot holds
//! nothing stale.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{
    DnsError,
    learn::{AddrEntry, LearnedTable},
};

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    identities: Vec<IdentFile>,
}

#[derive(Serialize, Deserialize)]
struct IdentFile {
    index: u32,
    identity: String,
    names: Vec<NameFile>,
}

#[derive(Serialize, Deserialize)]
struct NameFile {
    name: String,
    addrs: Vec<AddrFile>,
}

#[derive(Serialize, Deserialize)]
struct AddrFile {
    addr: IpAddr,
    /// Milliseconds since the Unix epoch.
    expires_unix_ms: u64,
}

/// `CLOCK_BOOTTIME` now, in nanoseconds (the clock the hooks compare with).
pub fn boot_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn wall_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Write the table atomically (temporary file, then rename).
pub fn save(path: &Path, table: &LearnedTable) -> Result<(), DnsError> {
    let (boot, wall) = (boot_now_ns(), wall_now_ms());
    let mut identities = Vec::new();
    for (index, state) in table.idents() {
        let mut names = Vec::new();
        for (name, entries) in &state.names {
            let addrs: Vec<AddrFile> = entries
                .iter()
                .filter(|e| e.expires_ns > boot)
                .map(|e| AddrFile {
                    addr: e.addr,
                    expires_unix_ms: wall + (e.expires_ns - boot) / 1_000_000,
                })
                .collect();
            if !addrs.is_empty() {
                names.push(NameFile {
                    name: name.clone(),
                    addrs,
                });
            }
        }
        identities.push(IdentFile {
            index,
            identity: state.identity.clone(),
            names,
        });
    }
    let file = StateFile {
        format: FORMAT,
        identities,
    };
    let err = |source| DnsError::StateFile {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec(&file).map_err(|e| err(std::io::Error::other(e)))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    crate::owned::write_new_private(&tmp, &text, false).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Read a saved table into `table`; a missing file is an empty one.
/// Returns the number of addresses restored.
pub fn load(path: &Path, table: &mut LearnedTable) -> Result<usize, DnsError> {
    let err = |source| DnsError::StateFile {
        path: path.to_path_buf(),
        source,
    };
    // Names learned by someone else (a file planted where the daemon had
    // not written yet) are not restored: set aside, and asked for again.
    if let Some(why) = crate::owned::not_own(path) {
        let now = wall_now_ms();
        let aside = crate::owned::set_aside(path, now).map_err(err)?;
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("not read: {why}; kept as {}", aside.display()),
        )));
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(e)),
    };
    let file: StateFile = serde_json::from_slice(&text)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    if file.format != FORMAT {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("format {} (this daemon reads {FORMAT})", file.format),
        )));
    }
    let (boot, wall) = (boot_now_ns(), wall_now_ms());
    let mut restored = 0;
    for ident in file.identities {
        let names: Vec<(String, Vec<AddrEntry>)> = ident
            .names
            .into_iter()
            .map(|n| {
                let entries: Vec<AddrEntry> = n
                    .addrs
                    .into_iter()
                    .filter(|a| a.expires_unix_ms > wall)
                    .map(|a| AddrEntry {
                        addr: a.addr,
                        expires_ns: boot + (a.expires_unix_ms - wall) * 1_000_000,
                        seq: 0,
                    })
                    .collect();
                (n.name, entries)
            })
            .filter(|(_, e)| !e.is_empty())
            .collect();
        restored += names.iter().map(|(_, e)| e.len()).sum::<usize>();
        table.restore(ident.index, &ident.identity, names);
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        dns::judge::IdentityJudge,
        policy::{HostPattern, HostRule, PortRange, Protocol},
    };

    #[test]
    fn round_trip_keeps_live_entries_only() {
        let judge = IdentityJudge {
            index: 2,
            name: "agent".into(),
            audit: false,
            allow: vec![HostRule {
                rule: 0,
                pattern: HostPattern::parse("*.example.com").unwrap_or_else(|e| panic!("{e}")),
                ports: vec![PortRange::ALL],
                protocol: Protocol::Any,
            }],
            deny: vec![],
            cidr_allow: vec![],
        };
        let now = boot_now_ns();
        let mut t = LearnedTable::default();
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        t.learn(
            &judge,
            "a.example.com",
            &[a],
            now + 60_000_000_000,
            crate::dns::learn::Limits {
                per_name: 8,
                per_identity: 64,
            },
        );
        t.learn(
            &judge,
            "b.example.com",
            &[b],
            now.saturating_sub(1),
            crate::dns::learn::Limits {
                per_name: 8,
                per_identity: 64,
            },
        );
        let dir = std::env::temp_dir().join(format!("palisade-dns-persist-{}", std::process::id()));
        let path = dir.join("learned.json");
        save(&path, &t).unwrap_or_else(|e| panic!("{e}"));
        let mut back = LearnedTable::default();
        assert_eq!(load(&path, &mut back).unwrap_or_else(|e| panic!("{e}")), 1);
        let (index, state) = back
            .idents()
            .next()
            .unwrap_or_else(|| panic!("one identity"));
        assert_eq!((index, state.identity.as_str()), (2, "agent"));
        assert_eq!(state.names["a.example.com"][0].addr, a);
        std::fs::write(&path, b"{not json").unwrap_or_else(|e| panic!("{e}"));
        let e = load(&path, &mut LearnedTable::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("learned.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
