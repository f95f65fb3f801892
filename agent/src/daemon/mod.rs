//! The daemon: owns the kernel handles, the active policy and the audit
//! pipeline, and offers the operations the API, the CLI and tests call.
//!
//! Shared state is either an immutable snapshot swapped atomically (the
//! policy) or a small map behind its own lock; there is no daemon-wide lock.

mod aggregate;
mod approve;
mod call_records;
mod caller;
mod decide;
mod dns;
mod egress;
mod elevation;
pub mod enrol;
mod error;
mod eval_slots;
mod gateway;
mod guard;
pub mod history;
mod judge;
mod kernel_events;
pub(crate) mod local_ports;
pub mod notify;
mod peers;
mod people;
mod push;
mod reload;
mod selfguard;
mod state;
mod status;
mod watch;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

pub use aggregate::aggregate_records;
pub use decide::{DecideInput, DecideOutcome, Issued, small_json};
pub use egress::{EgressOutcome, EgressRequest};
pub use elevation::{ElevateRequest, MAX_ELEVATION};
pub use enrol::{Caller, Enrolled};
pub use error::DaemonError;
pub use history::Generation;
pub use judge::Judged;
pub use kernel_events::{RecordContext, to_audit};
pub use reload::{Reloaded, Trigger};
pub use status::{IdentityStatus, Status};

use crate::{
    audit::{AuditEvent, AuditPipeline, EventKind},
    bpf::{Kernel, KernelMaps, LoadOptions, PacketGuard},
    config::Config,
    identity::{CgroupFs, Registry, SelectorSync},
    metrics::Metrics,
    policy::{self, Policy},
};

/// A policy as applied to the kernel.
#[derive(Debug)]
pub struct ActivePolicy {
    pub policy: Policy,
    /// The kernel generation it was written as.
    pub generation: u32,
}

/// Mount what the host lacks (bpffs, tracefs, securityfs), then run the
/// host checks of `palisade doctor`; fatal findings stop the start (each
/// with its fix), warnings are logged and returned.
fn preflight(config: &Config) -> Result<Vec<String>, DaemonError> {
    let report = crate::doctor::preflight(config);
    if !report.ready() {
        let text: Vec<String> = report
            .failures()
            .map(|c| {
                format!(
                    "  {}: {}{}",
                    c.name,
                    c.detail,
                    c.fix
                        .as_ref()
                        .map(|f| format!(" (fix: {f})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        return Err(DaemonError::Preflight(text.join("\n")));
    }
    Ok(report
        .warnings()
        .map(|c| {
            warn!(check = %c.name, fix = c.fix.as_deref().unwrap_or(""), "{}", c.detail);
            format!("{}: {}", c.name, c.detail)
        })
        .collect())
}

pub struct Daemon {
    pub config: Config,
    pub cgroups: CgroupFs,
    pub attach: PathBuf,
    pub managed: PathBuf,
    pub maps: Arc<KernelMaps>,
    pub registry: Registry,
    pub audit: AuditPipeline,
    /// Userspace metrics; other modules record into it (`metrics` docs).
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the optional loopback TCP listener of the API is bound.
    pub api_tcp_addr: std::sync::OnceLock<SocketAddr>,
    pub packet_guard: PacketGuard,
    /// What is degraded on this host (preflight warnings, fallbacks).
    pub warnings: Vec<String>,
    /// The DNS proxy (`None` with `dns.enabled: false`).
    pub dns: Option<Arc<crate::dns::DnsService>>,
    /// Tokens, approvals, budgets and grants of the decision API.
    pub decisions: crate::decision::DecisionState,
    /// The L7 gateway for the policy's services.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// Call records per identity and period (`call_records`).
    call_records: crate::audit::fold::CallRecords,
    /// The journal the decision state is recorded in.
    state_journal: std::sync::OnceLock<Arc<crate::state::Journal>>,
    /// Where and how many conditions are evaluated at once (`eval_slots`).
    eval_slots: eval_slots::EvalSlots,
    /// Announces new approvals to Slack, Teams and webhooks.
    pub notifier: crate::notifier::Notifier,
    /// Active break-glass elevations (saved across restarts).
    elevations: crate::decision::elevations::Elevations,
    active: ArcSwap<ActivePolicy>,
    /// Names of past generations, for events decided by them.
    history: Mutex<VecDeque<Arc<history::PastGeneration>>>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Serialises whole reloads, parse included.
    reload_queue: tokio::sync::Mutex<()>,
    last_reload_error: Mutex<Option<String>>,
    /// The guard watchdog's last finding, and whether it is stopped.
    guard: guard::GuardState,
    /// Keeps programs that are not pinned (tracepoints) loaded.
    _kernel: Mutex<Kernel>,
}

impl Daemon {
    /// Load the policy, load or adopt the kernel programs, apply the policy.
    /// A policy that does not validate stops the start: pinned enforcement
    /// from a previous daemon, if any, stays exactly as it was.
    pub async fn start(config: Config) -> Result<Arc<Self>, DaemonError> {
        let loaded = policy::load_for_daemon(config.policy_path()).map_err(DaemonError::Policy)?;
        for w in &loaded.warnings {
            warn!("{w}");
        }
        let mut warnings = preflight(&config)?;
        // A port something else holds costs the metrics, not the daemon
        // (enforcement, reloads and the API go on; `unavailable` says so).
        if config.metrics.enabled {
            local_ports::reserve([config.metrics.address().port()]);
        }
        let metrics_listener = crate::metrics::server::bind(&config.metrics).unwrap_or_else(|e| {
            error!(error = %e, "metrics unavailable");
            None
        });
        // The trail is locked before the kernel is touched: a second daemon
        // on the same trail stops here.
        let audit = AuditPipeline::start(config.audit_options())?;
        let cgroups = CgroupFs::discover().map_err(DaemonError::Cgroup)?;
        let attach = config
            .cgroup
            .attach
            .clone()
            .unwrap_or_else(|| cgroups.root().to_path_buf());
        if !attach.starts_with(cgroups.root()) {
            return Err(DaemonError::Config(format!(
                "cgroup.attach {} is not inside the cgroup v2 hierarchy at {}",
                attach.display(),
                cgroups.root().display()
            )));
        }
        let managed = config
            .cgroup
            .managed
            .clone()
            .unwrap_or_else(|| attach.join("palisade"));
        if !managed.starts_with(&attach) {
            return Err(DaemonError::Config(format!(
                "cgroup.managed {} must be inside cgroup.attach {}",
                managed.display(),
                attach.display()
            )));
        }
        std::fs::create_dir_all(&managed).map_err(DaemonError::Cgroup)?;

        let mut kernel = Kernel::load(&LoadOptions {
            pin_dir: config.bpffs.clone(),
            attach_cgroup: attach.clone(),
            event_buffer_bytes: config.kernel.event_buffer_bytes,
            learned_capacity: config.dns.learned_capacity,
        })
        .map_err(DaemonError::Bpf)?;
        kernel.spawn_log_reader();
        let adopted = kernel.adopted;
        let packet_guard = kernel.packet_guard;
        if packet_guard == PacketGuard::SeccompOnly {
            warnings.push(
                "BPF LSM refused: sockets outside the allowlist (packet, vsock…) are refused to agents started with `palisade exec` (seccomp); agents selected by cgroup that create one are killed by a syscall tracepoint, after the fact (docs/security.md)".into(),
            );
        }
        let maps = kernel.maps_handle();
        let registry = Registry::load(maps.clone()).map_err(DaemonError::Bpf)?;
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let dns = dns::start(&config, &mut kernel, &audit).await?;
        let gateway = crate::gateway::Gateway::new(
            config.gateway.clone(),
            crate::gateway::GatewayMaps::take(
                kernel.ebpf_mut(),
                reserved_binds(&config, metrics_addr),
            )?,
        );
        let agg_maps =
            crate::bpf::aggregate::AggMaps::take(kernel.ebpf_mut()).map_err(DaemonError::Bpf)?;
        let (decisions, restoring) = state::decision_state(&config, &mut warnings)?;
        let notifier = crate::notifier::Notifier::new(
            &config.approvals.notify,
            config.approvals.notify_retry.clone(),
        )
        .map_err(|e| DaemonError::Config(e.to_string()))?;
        // Tokens issued to identities revoked before this start are refused
        // once the daemon exists (below), journal or not.
        let adopted_grants =
            decisions
                .grants
                .adopt(&maps, &|i| registry.name_of(i), &restoring.grants)?;
        if adopted_grants > 0 {
            info!(
                grants = adopted_grants,
                "adopted just-in-time grants from the kernel"
            );
        }

        let (elevations, ended_elevations) = elevation::load(&config, &mut warnings)?;

        // Generation 0 is never written to the kernel: an empty stand-in
        // until the policy is applied (no second copy of a large policy).
        let placeholder = Arc::new(ActivePolicy {
            policy: policy::load_str("(starting)", "version: 1\n")
                .map_err(DaemonError::Policy)?
                .policy,
            generation: 0,
        });
        let call_records = crate::audit::fold::CallRecords::new(
            config.audit.calls.per_identity,
            Config::duration(&config.audit.calls.period, Duration::from_secs(10)),
        );
        let daemon = Arc::new(Self {
            config,
            cgroups,
            attach,
            managed,
            maps,
            registry,
            audit,
            metrics: Arc::new(Metrics::new()),
            metrics_addr,
            api_tcp_addr: std::sync::OnceLock::new(),
            packet_guard,
            warnings,
            dns,
            decisions,
            state_journal: std::sync::OnceLock::new(),
            gateway,
            call_records,
            eval_slots: eval_slots::EvalSlots::default(),
            notifier,
            elevations,
            active: ArcSwap::new(placeholder),
            history: Mutex::new(VecDeque::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_queue: tokio::sync::Mutex::new(()),
            last_reload_error: Mutex::new(None),
            guard: guard::GuardState::default(),
            _kernel: Mutex::new(kernel),
        });
        daemon.begin_state(restoring)?;
        // Identities revoked before this start: tokens issued to them
        // before now must not verify, whatever the journal remembers.
        for (index, name) in daemon.registry.all() {
            if daemon.maps.killed(index).map_err(DaemonError::Bpf)? {
                daemon.decisions.tokens.revoke_issued(&name)?;
            }
        }
        // Before the policy is applied, so a reload's grant sweep never
        // sees an identity without its elevation grants.
        daemon.restore_elevations(ended_elevations);
        daemon.make_own_directories();
        daemon.gateway.attach(&daemon);
        let generation = daemon.apply(loaded.policy).await?;
        let mut started = AuditEvent::new(
            EventKind::Daemon,
            "started",
            if adopted {
                "adopted-pins"
            } else {
                "fresh-attach"
            },
        );
        started.policy_version = Some(daemon.active().policy.version.to_string());
        started.detail = Some(format!("generation {generation}"));
        daemon.audit.emit(started);
        // Restored approvals asked under the policy of before the restart.
        daemon.withdraw_stale_approvals();
        daemon.report_start_repairs();
        daemon.spawn_guard_watch();
        daemon.spawn_self_guard();
        kernel_events::spawn(&daemon)?;
        aggregate::spawn(&daemon, agg_maps).await?;
        daemon.spawn_resync();
        daemon.spawn_decision_upkeep();
        daemon.spawn_call_records();
        watch::spawn(&daemon);
        if let Some(listener) = metrics_listener {
            crate::metrics::server::spawn(listener, Arc::downgrade(&daemon))
                .map_err(|e| DaemonError::Config(format!("metrics endpoint: {e}")))?;
        }
        Ok(daemon)
    }

    /// The policy currently enforced.
    pub fn active(&self) -> Arc<ActivePolicy> {
        self.active.load_full()
    }

    /// The generation `generation`, if still remembered.
    pub fn policy_at(&self, generation: u32) -> Option<Generation> {
        let active = self.active();
        if active.generation == generation {
            return Some(Generation::Active(active));
        }
        let history = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        history
            .iter()
            .rev()
            .find(|p| p.generation == generation)
            .cloned()
            .map(Generation::Past)
    }

    pub fn selector_sync(&self) -> SelectorSync<'_> {
        SelectorSync {
            maps: &self.maps,
            registry: &self.registry,
            cgroups: &self.cgroups,
            attach: &self.attach,
            managed: &self.managed,
        }
    }

    /// Periodic full resync: catches cgroups whose creation event was missed
    /// and forgets cgroups that are gone.
    fn spawn_resync(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = Duration::from_secs(self.config.resync_seconds.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { break };
                let active = d.active();
                if let Err(e) = d.selector_sync().full_sync(&active.policy) {
                    warn!(error = %e, "cgroup resync failed");
                }
            }
        });
    }

    /// Stop serving. Enforcement stays pinned unless `detach` is set, in
    /// which case every pin is removed and enforcement ends.
    pub async fn shutdown(&self, detach: bool) {
        let mut ev = AuditEvent::new(
            EventKind::Daemon,
            "stopped",
            if detach {
                "detached"
            } else {
                "enforcement-kept"
            },
        );
        ev.policy_version = Some(self.active().policy.version.to_string());
        notify::notify("STOPPING=1");
        // Removing the pins is ours to do: the watchdog must not undo it.
        self.guard.stop();
        self.gateway.shutdown();
        // Lookups counted over a budget are written before the last record.
        if let Some(dns) = &self.dns {
            dns.flush_lookup_records(true);
        }
        self.flush_call_records(true);
        self.audit.emit(ev);
        self.audit.flush().await;
        self.dns_save();
        self.close_state();
        if detach {
            match crate::bpf::uninstall(&self.config.bpffs) {
                Ok(()) => info!(pins = %self.config.bpffs.display(), "enforcement removed"),
                Err(e) => warn!(error = %e, "removing pins"),
            }
        }
    }
}

/// Keys of `BIND_RESERVED` besides the gateway's: the DNS proxies' port on
/// the unspecified address, and the metrics endpoint as bound (its address
/// and port, and the port on the unspecified address). (The TCP API is
/// kept from agents through `GUARD_CFG`.)
fn reserved_binds(config: &Config, metrics: Option<SocketAddr>) -> Vec<u64> {
    use agent_common::gateway::{reserved_endpoint, reserved_wildcard_port};
    let mut keys = Vec::new();
    if config.dns.enabled && config.dns.port != 0 {
        keys.push(reserved_wildcard_port(config.dns.port));
    }
    // Port 0 would stand for every port of the address.
    if let Some(addr) = metrics.filter(|a| a.port() != 0) {
        keys.push(reserved_wildcard_port(addr.port()));
        if let std::net::IpAddr::V4(ip) = addr.ip() {
            keys.push(reserved_endpoint(u32::from(ip), addr.port()));
        }
    }
    keys
}
