//! The daemon's configuration file (`palisade daemon --config FILE`).
//!
//! ```yaml
//! policy: /etc/palisade/policy.d        # file or directory (required)
//! socket: /run/palisade/palisade.sock   # gRPC Unix socket
//! bpffs: /sys/fs/bpf/palisade           # pin directory
//! audit:
//!   file: /var/log/palisade/audit.jsonl # JSON lines
//!   stderr: true                        # readable copy on stderr
//! cgroup:
//!   attach: /sys/fs/cgroup              # default: the cgroup v2 root
//!   managed: /sys/fs/cgroup/palisade    # default: <attach>/palisade
//! dns:                                  # DNS-aware egress, see dns::settings
//!   upstream: 10.0.0.2:53               # default: /etc/resolv.conf
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::{Diagnostic, PolicyErrors, SourceLoc};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Policy file or directory of `*.yaml` files.
    pub policy: Option<PathBuf>,
    /// Unix socket of the gRPC API.
    pub socket: PathBuf,
    /// Group allowed to use operator RPCs on the socket (besides root).
    pub socket_group: Option<String>,
    /// bpffs directory holding the pinned programs and maps.
    pub bpffs: PathBuf,
    pub audit: AuditConfig,
    pub cgroup: CgroupConfig,
    pub kernel: KernelConfig,
    /// Seconds between full rescans of the cgroup tree.
    pub resync_seconds: u64,
    /// DNS-aware egress (see `dns::settings` and docs/dns.md).
    pub dns: crate::dns::DnsSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines audit file.
    pub file: Option<PathBuf>,
    /// Mirror audit events to stderr in readable form.
    pub stderr: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// Cgroup the programs attach to; they see its whole subtree.
    pub attach: Option<PathBuf>,
    /// Where `palisade exec` creates one cgroup per identity.
    pub managed: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConfig {
    /// Size of the kernel event ring buffer in bytes (power of two, at least
    /// one page). Applies when the pinned map is first created.
    pub event_buffer_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: None,
            socket: PathBuf::from("/run/palisade/palisade.sock"),
            socket_group: None,
            bpffs: PathBuf::from("/sys/fs/bpf/palisade"),
            audit: AuditConfig::default(),
            cgroup: CgroupConfig::default(),
            kernel: KernelConfig::default(),
            resync_seconds: 30,
            dns: crate::dns::DnsSettings::default(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            file: None,
            stderr: true,
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            event_buffer_bytes: 1 << 20,
        }
    }
}

impl Config {
    /// Read and check a config file; errors carry `file:line:column`.
    pub fn load(path: &Path) -> Result<Self, PolicyErrors> {
        let at = |line, col, msg: String| {
            PolicyErrors::single(Diagnostic::error(SourceLoc::new(path, line, col), msg))
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| at(1, 1, format!("cannot read config: {e}")))?;
        let mut cfg: Self = serde_saphyr::from_str(&text)
            .map_err(|e| PolicyErrors::single(Diagnostic::from_yaml(path, &e)))?;
        let Some(policy) = &cfg.policy else {
            return Err(at(
                1,
                1,
                "missing required key `policy` (a policy file or directory)".into(),
            ));
        };
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.policy = Some(base.join(policy));
        if let Some(f) = &cfg.audit.file {
            cfg.audit.file = Some(base.join(f));
        }
        cfg.dns.resolve_paths(base);
        cfg.dns.check().map_err(|msg| at(1, 1, msg))?;
        let size = cfg.kernel.event_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(at(
                1,
                1,
                format!(
                    "kernel.event_buffer_bytes = {size}: must be a power of two of at least 4096"
                ),
            ));
        }
        Ok(cfg)
    }

    pub fn policy_path(&self) -> &Path {
        self.policy
            .as_deref()
            .unwrap_or(Path::new("/etc/palisade/policy.yaml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys_with_position() {
        let dir = std::env::temp_dir().join(format!("palisade-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("c.yaml");
        std::fs::write(&file, "policy: p.yaml\nsokcet: /x\n").unwrap_or_else(|e| panic!("{e}"));
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(err.contains("c.yaml:2:1: unknown field `sokcet`"), "{err}");
        std::fs::write(&file, "policy: p.yaml\naudit: {file: a.jsonl}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let cfg = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.policy_path(), dir.join("p.yaml"));
        assert_eq!(cfg.socket, PathBuf::from("/run/palisade/palisade.sock"));
        assert_eq!(cfg.audit.file, Some(dir.join("a.jsonl")));
        std::fs::write(&file, "socket: /x\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Config::load(&file)
                .unwrap_err()
                .to_string()
                .contains("missing required key `policy`")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
