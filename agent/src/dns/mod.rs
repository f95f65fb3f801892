//! DNS-aware egress. The kernel steers the DNS of every identity that names
//! hosts to that identity's own proxy address; the proxy judges each name
//! against the identity's `host` rules, forwards allowed ones upstream,
//! judges every name on the CNAME chain, and writes the answer's addresses
//! into the identity's learned map (with their TTL) before releasing the
//! answer. See docs/dns.md.
//!
//! * `settings` — the `dns:` configuration section
//! * `judge` — names against host rules
//! * `message` — DNS messages (hickory-proto)
//! * `upstream` — the real resolver
//! * `proxy` — one query, end to end
//! * `listen` — the per-identity sockets
//! * `learn` — learned names and addresses, and their kernel entries
//! * `kernel` — the DNS maps
//! * `persist` — learned names on disk across restarts
//! * `events` — the audit event of a lookup
//! * `internal` — answers that point inside (loopback, private, metadata…)
//! * `inflight` — per-identity quota of queries waiting on the upstream

pub mod events;
mod flood;
mod inflight;
pub mod internal;
pub mod judge;
mod kernel;
pub mod learn;
mod listen;
pub mod message;
pub mod persist;
mod proxy;
pub mod settings;
mod upstream;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use agent_common::{DnsConfig, IDENT_DNS};
use arc_swap::ArcSwap;
use tracing::{info, warn};

pub use kernel::DnsMaps;
pub use listen::proxy_addr;
pub use proxy::Transport;
pub use settings::{DnsSettings, Forbidden};

use self::{
    inflight::InFlight,
    judge::Judges,
    learn::{LearnedTable, Limits},
    listen::Listener,
    upstream::Upstream,
};
use crate::{
    audit::{AuditEvent, AuditPipeline},
    bpf::lock,
    policy::{Cidr, KernelTables},
};

/// How often learned names are saved when they changed.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often expired entries are swept from memory and the kernel map.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("DNS proxy cannot listen on {addr} (is dns.listen/dns.port in use?): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("DNS upstream: {0}")]
    Upstream(String),
    #[error("{0}")]
    Settings(String),
    #[error("learned-names file {path}: {source}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("learned-address update did not finish")]
    Join,
}

/// What the proxy has done since it started.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    /// Forbidden names (and CNAME chains) answered NXDOMAIN or REFUSED.
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
    /// Answers withheld because their addresses did not reach the kernel in
    /// time (fail closed).
    pub dropped: AtomicU64,
    pub upstream_failures: AtomicU64,
    /// Inside addresses kept out of learned maps (and answers).
    pub withheld: AtomicU64,
}

pub struct DnsService {
    settings: DnsSettings,
    judges: ArcSwap<Judges>,
    table: Arc<Mutex<LearnedTable>>,
    maps: Arc<DnsMaps>,
    audit: AuditPipeline,
    /// The resolver, or why there is none (every allowed query then gets
    /// SERVFAIL: the host's resolv.conf may name none).
    upstream: Result<Arc<Upstream>, String>,
    listeners: tokio::sync::Mutex<HashMap<u32, Listener>>,
    /// Entries the kernel's learned map holds, all identities.
    capacity: usize,
    /// `dns.learn_internal`, parsed.
    internal_ok: Vec<Cidr>,
    inflight: Arc<InFlight>,
    pub stats: DnsStats,
    dirty: AtomicBool,
    /// Lookup records per identity and period (`flood`).
    records: flood::LookupBudget,
    /// Identities whose proxy address could not be bound at the last
    /// `prepare`, and why.
    unbound: Mutex<Vec<String>>,
    this: Weak<DnsService>,
}

impl DnsService {
    /// Turn steering on in the kernel, restore what a previous daemon
    /// learned, and get ready to answer (sockets open with `prepare`).
    pub async fn start(
        settings: DnsSettings,
        maps: DnsMaps,
        audit: AuditPipeline,
    ) -> Result<Arc<Self>, DnsError> {
        let upstream = match settings.upstream_addr() {
            Ok(addr) => Ok(Upstream::connect(addr, settings.upstream_timeout())
                .await
                .map_err(|e| DnsError::Upstream(format!("{addr}: {e}")))?),
            Err(e) if settings.upstream.is_none() => {
                warn!(error = %e, "no DNS upstream: allowed names will get SERVFAIL; set dns.upstream");
                Err(e)
            }
            Err(e) => return Err(DnsError::Upstream(e)),
        };
        let internal_ok = settings.internal_prefixes().map_err(DnsError::Settings)?;
        let capacity = maps.capacity()?;
        let upstream_name = upstream
            .as_ref()
            .map_or_else(|e| format!("none ({e})"), |u| u.addr.to_string());
        let mut table = LearnedTable::default();
        match persist::load(&settings.state_file, &mut table) {
            Ok(n) => {
                info!(addresses = n, file = %settings.state_file.display(), "learned DNS names restored")
            }
            // Losing them only makes names fail closed until asked again.
            Err(e) => warn!(error = %e, "learned DNS names not restored; starting empty"),
        }
        maps.set_config(&DnsConfig {
            enabled: 1,
            base: u32::from(settings.listen),
            port: settings.port,
            _pad: [0; 6],
        })?;
        info!(listen = %settings.listen, port = settings.port, upstream = %upstream_name, "DNS proxy ready");
        let service = Arc::new_cyclic(|this| Self {
            settings,
            judges: ArcSwap::from_pointee(Judges::default()),
            table: Arc::new(Mutex::new(table)),
            maps: Arc::new(maps),
            audit,
            upstream,
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            capacity,
            internal_ok,
            inflight: Arc::new(InFlight::default()),
            stats: DnsStats::default(),
            dirty: AtomicBool::new(false),
            records: flood::LookupBudget::default(),
            unbound: Mutex::new(Vec::new()),
            this: this.clone(),
        });
        service.spawn_housekeeping();
        Ok(service)
    }

    /// How much one identity may learn: its configured quota, and never
    /// more than an even share of the kernel map among the identities that
    /// name hosts, so no identity can fill the map for the others.
    fn limits(&self, judges: &Judges) -> Limits {
        let share = self.capacity / judges.by_index.len().max(1);
        Limits {
            per_name: self.settings.max_addresses_per_name,
            per_identity: self.settings.max_addresses_per_identity.min(share).max(1),
        }
    }

    /// Queries of identity `index` waiting on the upstream now.
    pub fn inflight(&self, index: u32) -> usize {
        self.inflight.waiting(index)
    }

    /// Queries cancelled to make room for a newer one of the same identity.
    pub fn inflight_evicted(&self) -> u64 {
        self.inflight.evicted.load(Ordering::Relaxed)
    }

    /// `dns.enabled: false`: the hooks steer nothing.
    pub fn disable(maps: &DnsMaps) -> Result<(), DnsError> {
        maps.set_config(&DnsConfig::default())
    }

    /// Before a policy generation becomes active: open the sockets of the
    /// identities that name hosts, publish their rules, and mark them in
    /// the compiled tables so that the hooks steer their DNS. A failure
    /// here stops the reload before anything changed in the kernel.
    pub async fn prepare(&self, judges: Judges, tables: &mut KernelTables) -> Result<(), DnsError> {
        let mut listeners = self.listeners.lock().await;
        let mut unbound = Vec::new();
        for index in judges.by_index.keys() {
            if !listeners.contains_key(index) {
                let addr = proxy_addr(self.settings.listen, *index, self.settings.port);
                match Listener::bind(self.this.clone(), *index, addr).await {
                    Ok(l) => {
                        info!(identity = %judges.by_index[index].name, %addr, "DNS proxy listening");
                        listeners.insert(*index, l);
                    }
                    // An address something else holds costs that identity its
                    // names, not the policy (a failed reload would keep rules
                    // the operator removed): its lookups are not steered to a
                    // socket the proxy does not own, so its host rules admit
                    // nothing until the next reload binds the address.
                    Err(e) => {
                        warn!(identity = %judges.by_index[index].name, error = %e, "DNS proxy: identity's names unavailable");
                        unbound.push(format!("identity `{}`: {e}", judges.by_index[index].name));
                    }
                }
            }
        }
        for (index, cfg) in &mut tables.identities {
            if judges.by_index.contains_key(index) && listeners.contains_key(index) {
                cfg.flags |= IDENT_DNS;
            }
        }
        *lock(&self.unbound) = unbound;
        self.judges.store(Arc::new(judges));
        Ok(())
    }

    /// After the flip: learned entries follow the new rules (removed rules
    /// stop admitting at once), and identities that no longer name hosts
    /// lose their sockets.
    pub async fn commit(&self) -> Result<(), DnsError> {
        let judges = self.judges.load_full();
        self.listeners
            .lock()
            .await
            .retain(|index, _| judges.by_index.contains_key(index));
        let (table, maps) = (self.table.clone(), self.maps.clone());
        tokio::task::spawn_blocking(move || {
            let mut t = lock(&table);
            let entries = t.rejudge(&judges);
            maps.replace_all(&entries)
        })
        .await
        .map_err(|_| DnsError::Join)??;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Identities whose names are unavailable because their proxy address
    /// was taken (see `prepare`).
    pub fn unbound(&self) -> Vec<String> {
        lock(&self.unbound).clone()
    }

    /// Save learned names now (also done every second when they changed).
    pub fn save(&self) {
        self.dirty.store(false, Ordering::Relaxed);
        // A copy, so that lookups never wait for the disk.
        let table = lock(&self.table).clone();
        if table.is_empty() && !self.settings.state_file.exists() {
            return; // nothing learned, nothing to remember
        }
        if let Err(e) = persist::save(&self.settings.state_file, &table) {
            self.dirty.store(true, Ordering::Relaxed);
            warn!(error = %e, "saving learned DNS names");
        }
    }

    fn emit(&self, ev: AuditEvent) {
        if let Some(ev) = self.records.admit(ev, std::time::SystemTime::now()) {
            self.audit.emit(ev);
        }
    }

    /// Write the aggregate records of lookups counted over an identity's
    /// budget: of the periods that ended, or of all (at shutdown).
    pub fn flush_lookup_records(&self, all: bool) {
        for ev in self.records.drain(std::time::SystemTime::now(), all) {
            self.audit.emit(ev);
        }
    }

    fn spawn_housekeeping(&self) {
        let weak = self.this.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAVE_EVERY);
            let mut since_sweep = Duration::ZERO;
            loop {
                tick.tick().await;
                let Some(svc) = weak.upgrade() else { return };
                svc.flush_lookup_records(false);
                since_sweep += SAVE_EVERY;
                if since_sweep >= SWEEP_EVERY {
                    since_sweep = Duration::ZERO;
                    svc.sweep().await;
                }
                if svc.dirty.load(Ordering::Relaxed) {
                    let s = svc.clone();
                    let _ = tokio::task::spawn_blocking(move || s.save()).await;
                }
            }
        });
    }

    async fn sweep(&self) {
        let judges = self.judges.load_full();
        let (table, maps) = (self.table.clone(), self.maps.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut t = lock(&table);
            let writes = t.sweep(persist::boot_now_ns(), &judges);
            let changed = !writes.is_empty();
            maps.write(&writes).map(|()| changed)
        })
        .await;
        match result {
            Ok(Ok(true)) => self.dirty.store(true, Ordering::Relaxed),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => warn!(error = %e, "sweeping expired DNS entries"),
            Err(_) => warn!("sweeping expired DNS entries did not finish"),
        }
    }
}
