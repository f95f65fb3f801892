//! The daemon's configuration file (`palisade daemon --config FILE`).
//!
//! ```yaml
//! policy: /etc/palisade/policy.d        # file or directory (required)
//! socket: /run/palisade/palisade.sock   # gRPC Unix socket
//! bpffs: /sys/fs/bpf/palisade           # pin directory
//! audit:
//!   file: /var/log/palisade/audit.jsonl # JSON lines
//!   stderr: true                        # readable copy on stderr
//!   rotate_bytes: 67108864              # rotate at 64 MiB (0 = never)
//!   keep: 16                            # rotated files kept (0 = all)
//!   keep_min_age: 24h                   # retention never deletes younger files
//!   fsync: true                         # fdatasync every batch
//!   calls: {per_identity: 1000, period: 10s}  # call records one by one, then counted
//!   otlp:                               # optional export (off if absent)
//!     endpoint: http://127.0.0.1:4318
//! cgroup:
//!   attach: /sys/fs/cgroup              # default: the cgroup v2 root
//!   managed: /sys/fs/cgroup/palisade    # default: <attach>/palisade
//! metrics:
//!   listen: 127.0.0.1:9740              # Prometheus; `enabled: false` to turn off
//! policy_watch_seconds: 0               # reload when the files change (0 = off)
//! dns:                                  # DNS-aware egress, see dns::settings
//!   upstream: 10.0.0.2:53               # default: /etc/resolv.conf
//! gateway:                              # the L7 gateway, see gateway::settings
//!   listen: 127.54.0.1
//! elevations_file: /var/lib/palisade/elevations.json  # active break-glass elevations
//! state:                                # decision state journal, see `state`
//!   file: /var/lib/palisade/state.journal
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
    /// Prometheus endpoint (`metrics`).
    pub metrics: crate::metrics::MetricsConfig,
    /// Poll the policy files every N seconds and reload when they change
    /// (for ConfigMap volumes); 0 = only on SIGHUP or `palisade reload`.
    pub policy_watch_seconds: u64,
    /// DNS-aware egress (see `dns::settings` and docs/dns.md).
    pub dns: crate::dns::DnsSettings,
    /// Tokens of the decision API.
    pub tokens: TokensConfig,
    pub approvals: ApprovalsConfig,
    pub api: ApiConfig,
    /// The file this configuration was read from (set by `load`).
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
    /// The L7 gateway for services the policy protects (docs/gateway.md).
    pub gateway: crate::gateway::GatewaySettings,
    /// Where active break-glass elevations are saved across restarts;
    /// default: `elevations.json` next to `tokens.key_file`.
    pub elevations_file: Option<PathBuf>,
    /// Where budgets, used tokens, approvals and grants are journaled.
    pub state: crate::state::StateConfig,
}

/// Signing and lifetime of decision-API tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Ed25519 key file (created on first start, mode 0600).
    pub key_file: PathBuf,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Default lifetime ("15m").
    pub ttl: String,
    /// Longest lifetime a caller may ask for ("1h").
    pub max_ttl: String,
    /// Used token ids remembered per identity (until each token expires);
    /// an identity past it has its new tokens refused, others are unaffected.
    pub replay_per_identity: usize,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("/var/lib/palisade/keys.yaml"),
            issuer: "palisade".into(),
            audience: "palisade".into(),
            ttl: "15m".into(),
            max_ttl: "1h".into(),
            replay_per_identity: crate::tokens::DEFAULT_REPLAY_QUOTA,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a pending approval waits for a decision ("1h").
    pub ttl: String,
    /// Longest validity of an approval's override token ("10m").
    pub override_ttl: String,
    /// Approvals one identity may have pending at once; past it, its new
    /// requests are refused (other identities are unaffected).
    pub max_pending_per_identity: usize,
    /// Where every new approval is announced (Slack, Teams, webhooks).
    pub notify: Vec<crate::notifier::NotifyTarget>,
    /// How deliveries are retried.
    pub notify_retry: crate::notifier::RetryConfig,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            ttl: "1h".into(),
            override_ttl: "10m".into(),
            max_pending_per_identity: crate::decision::approvals::DEFAULT_MAX_PENDING,
            notify: Vec::new(),
            notify_retry: crate::notifier::RetryConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Also serve the API on this loopback TCP address (e.g.
    /// "127.0.0.1:50051"). Over TCP there are no peer credentials: agent
    /// calls need the Unix socket; operator calls need an operator token.
    pub tcp: Option<String>,
    /// How a connection is tied to the process that made it: `auto` (the
    /// kernel's pidfd of the peer, `SO_PEERPIDFD`, where Linux ≥ 6.5 has
    /// it, else `start-time`) or `start-time` (the pid and its start time
    /// at accept, held with `pidfd_open`: what older kernels get).
    pub peer_pin: crate::identity::PinKind,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines audit file.
    pub file: Option<PathBuf>,
    /// Mirror audit events to stderr in readable form.
    pub stderr: bool,
    /// Rotate the trail before it grows past this many bytes; 0 = never.
    pub rotate_bytes: u64,
    /// Rotated trail files kept (oldest removed first); 0 = keep all.
    pub keep: u64,
    /// Retention never deletes a rotated file younger than this (nor one
    /// holding records the OTLP exporter has not delivered).
    pub keep_min_age: String,
    /// `fdatasync` the trail after every batch of records.
    pub fsync: bool,
    /// Export to an OpenTelemetry collector (OTLP/HTTP JSON); off if absent.
    pub otlp: Option<crate::audit::otlp::OtlpConfig>,
    /// The trail as OCSF events in a JSON-lines file; off if absent.
    pub ocsf: Option<crate::ocsf::OcsfFileConfig>,
    /// Gateway requests and `Decide` calls recorded one by one per
    /// identity and period; the rest are counted (`audit::fold`).
    pub calls: crate::audit::fold::CallRecordsConfig,
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
    /// Length of an aggregation period: the first denial of each kind
    /// (identity, destination, verdict, reason) in a period is recorded at
    /// once, the others are counted in the kernel and recorded as one
    /// record with their count when the period ends.
    pub aggregate_ms: u64,
    /// Event records one identity may cause per period; further kinds of
    /// denial are only counted (one record per identity and reason).
    pub events_per_identity: u32,
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
            metrics: crate::metrics::MetricsConfig::default(),
            policy_watch_seconds: 0,
            dns: crate::dns::DnsSettings::default(),
            tokens: TokensConfig::default(),
            approvals: ApprovalsConfig::default(),
            api: ApiConfig::default(),
            loaded_from: None,
            gateway: crate::gateway::GatewaySettings::default(),
            elevations_file: None,
            state: crate::state::StateConfig::default(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            file: None,
            stderr: true,
            rotate_bytes: 64 << 20,
            keep: 16,
            keep_min_age: "24h".into(),
            fsync: true,
            otlp: None,
            ocsf: None,
            calls: crate::audit::fold::CallRecordsConfig::default(),
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            event_buffer_bytes: 1 << 20,
            aggregate_ms: 5000,
            events_per_identity: 64,
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
        cfg.loaded_from = Some(path.to_path_buf());
        if let Some(f) = &cfg.audit.file {
            cfg.audit.file = Some(base.join(f));
        }
        if let Some(otlp) = &mut cfg.audit.otlp {
            if cfg.audit.file.is_none() {
                return Err(at(
                    1,
                    1,
                    "audit.otlp needs audit.file: the trail is where records wait while the collector is down".into(),
                ));
            }
            if let Some(c) = &otlp.cursor {
                otlp.cursor = Some(base.join(c));
            }
        }
        if let Err((msg, pos)) = cfg.metrics.check() {
            let (line, col) = pos.unwrap_or((1, 1));
            return Err(at(line, col, msg));
        }
        cfg.dns.resolve_paths(base);
        if let Some(o) = cfg.audit.ocsf.as_mut() {
            o.resolve_paths(base);
        }
        for t in &mut cfg.approvals.notify {
            if let Some(f) = &t.secret_file {
                t.secret_file = Some(base.join(f));
            }
        }
        cfg.tokens.key_file = base.join(&cfg.tokens.key_file);
        cfg.elevations_file = Some(match &cfg.elevations_file {
            Some(f) => base.join(f),
            None => cfg
                .tokens
                .key_file
                .parent()
                .unwrap_or(Path::new("/var/lib/palisade"))
                .join("elevations.json"),
        });
        cfg.state.resolve_paths(base);
        if let Err(msg) = cfg.state.check() {
            return Err(at(1, 1, msg));
        }
        for (key, n) in [
            ("tokens.replay_per_identity", cfg.tokens.replay_per_identity),
            (
                "approvals.max_pending_per_identity",
                cfg.approvals.max_pending_per_identity,
            ),
            (
                "audit.calls.per_identity",
                cfg.audit.calls.per_identity as _,
            ),
        ] {
            if n == 0 {
                return Err(at(1, 1, format!("{key} must be at least 1")));
            }
        }
        for (key, value) in [
            ("audit.keep_min_age", &cfg.audit.keep_min_age),
            ("audit.calls.period", &cfg.audit.calls.period),
            ("tokens.ttl", &cfg.tokens.ttl),
            ("tokens.max_ttl", &cfg.tokens.max_ttl),
            ("approvals.ttl", &cfg.approvals.ttl),
            ("approvals.override_ttl", &cfg.approvals.override_ttl),
        ] {
            if let Err(e) = humantime::parse_duration(value) {
                return Err(at(
                    1,
                    1,
                    format!("{key} = {value:?}: {e} (write e.g. \"15m\")"),
                ));
            }
        }
        if let Some(tcp) = &cfg.api.tcp {
            match tcp.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => {}
                Ok(a) => {
                    return Err(at(
                        1,
                        1,
                        format!("api.tcp {a} is not a loopback address; the API is local only"),
                    ));
                }
                Err(e) => return Err(at(1, 1, format!("api.tcp {tcp:?}: {e}"))),
            }
        }
        cfg.dns.check().map_err(|msg| at(1, 1, msg))?;
        let dns_range = cfg
            .dns
            .enabled
            .then_some((cfg.dns.listen, agent_common::MAX_IDENTITIES));
        cfg.gateway.check(dns_range).map_err(|msg| at(1, 1, msg))?;
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
        if !(100..=3_600_000).contains(&cfg.kernel.aggregate_ms) {
            return Err(at(
                1,
                1,
                format!(
                    "kernel.aggregate_ms = {}: give 100 to 3600000 (milliseconds)",
                    cfg.kernel.aggregate_ms
                ),
            ));
        }
        if cfg.kernel.events_per_identity == 0 {
            return Err(at(
                1,
                1,
                "kernel.events_per_identity = 0: at least one record per period".into(),
            ));
        }
        Ok(cfg)
    }

    /// How the audit pipeline is set up from `audit:`.
    pub fn audit_options(&self) -> crate::audit::AuditOptions {
        crate::audit::AuditOptions {
            file: self.audit.file.clone(),
            human: self.audit.stderr,
            trail: Some(crate::audit::trail::TrailOptions {
                rotate_bytes: self.audit.rotate_bytes,
                keep: self.audit.keep,
                keep_min_age: Self::duration(
                    &self.audit.keep_min_age,
                    std::time::Duration::from_secs(24 * 3600),
                ),
                export_cursor: self
                    .audit
                    .otlp
                    .as_ref()
                    .map(|o| o.cursor_path(self.audit.file.as_deref())),
                fsync: self.audit.fsync,
            }),
            otlp: self.audit.otlp.clone(),
            ocsf: self.audit.ocsf.clone(),
        }
    }

    pub fn policy_path(&self) -> &Path {
        self.policy
            .as_deref()
            .unwrap_or(Path::new("/etc/palisade/policy.yaml"))
    }
}

impl Config {
    /// A duration setting already checked by `load`.
    pub fn duration(text: &str, default: std::time::Duration) -> std::time::Duration {
        humantime::parse_duration(text).unwrap_or(default)
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

    #[test]
    fn metrics_and_otlp_are_checked_with_positions() {
        let dir = std::env::temp_dir().join(format!("palisade-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("c.yaml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
            Config::load(&file).map_err(|e| e.to_string())
        };
        let cfg = load("policy: p.yaml\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.metrics.enabled);
        assert_eq!(cfg.metrics.address().to_string(), "127.0.0.1:9740");
        let err = load("policy: p.yaml\nmetrics:\n  listen: 0.0.0.0:9740\n").unwrap_err();
        assert!(
            err.contains("c.yaml:3:11: metrics.listen 0.0.0.0:9740 is not a loopback"),
            "{err}"
        );
        load("policy: p.yaml\nmetrics:\n  listen: 0.0.0.0:9740\n  allow_remote: true\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = load("policy: p.yaml\nmetrics:\n  listen: localhost\n").unwrap_err();
        assert!(err.contains("c.yaml:3:"), "{err}");
        let err = load(
            "policy: p.yaml\naudit:\n  file: a.jsonl\n  otlp:\n    endpoint: https://c:4318\n",
        )
        .unwrap_err();
        assert!(
            err.contains("c.yaml:5:") && err.contains("https is not supported"),
            "{err}"
        );
        let err =
            load("policy: p.yaml\naudit:\n  otlp:\n    endpoint: http://c:4318\n").unwrap_err();
        assert!(err.contains("audit.otlp needs audit.file"), "{err}");
        let cfg =
            load("policy: p.yaml\naudit:\n  file: a.jsonl\n  otlp:\n    endpoint: http://c\n")
                .unwrap_or_else(|e| panic!("{e}"));
        let otlp = cfg.audit.otlp.unwrap_or_else(|| panic!("otlp"));
        assert_eq!(otlp.endpoint.to_string(), "http://c:4318/v1/logs");
        assert_eq!(
            otlp.cursor_path(cfg.audit.file.as_deref()),
            dir.join(".a.jsonl.otlp-cursor")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
