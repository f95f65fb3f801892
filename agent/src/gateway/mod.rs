//! The L7 gateway: for the services a policy protects (`services:`), the
//! only path from an agent to the upstream. Each request is tied to its
//! caller by the kernel (the identity stamped on its socket, `peer`/`who`), mapped
//! to a tool call (`route`, `params`), judged by the same decision core as
//! `Decide` (`authorize`), then forwarded with the service's credential,
//! which the agent never holds (`credential`, `forward`), and its response
//! masked (`mask`). MCP services (`mcp`) are judged message by message.
//! Every request is one audit record (`trail`).
//!
//! Each concern is a small tower layer in its own file; `stack` composes
//! them in one place.

mod authorize;
mod bodies;
mod budget;
mod caller;
mod credential;
mod forward;
mod headers;
mod http;
mod kernel;
mod listen;
mod mask;
mod masking;
mod mcp;
mod peer;
mod release;
mod reply;
mod route;
mod secrets;
mod settings;
pub mod spelled;
mod stack;
mod trail;
mod upstream;
mod who;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex, OnceLock, Weak},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use kernel::GatewayMaps;
pub use settings::{GatewaySettings, Timeouts};

use crate::{
    daemon::Daemon,
    policy::{Policy, service::Service},
};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("kernel map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("service `{service}`: cannot read its secret from {from}: {why}")]
    Secret {
        service: String,
        from: String,
        why: String,
    },
    #[error("service `{service}`: TLS: {why}")]
    Tls { service: String, why: String },
    #[error("service `{service}`: command: {why}")]
    Command { service: String, why: String },
    #[error("service `{service}`: cannot listen on {addr}: {source}")]
    Listen {
        service: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A service as the gateway runs it: the policy's definition plus what
/// the daemon holds for it.
pub struct ServiceRt {
    pub service: Service,
    /// The credential header, ready to set.
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// The service's secrets, scrubbed from every response.
    pub secrets: Vec<Bytes>,
    pub client: Option<upstream::UpstreamClient>,
    /// A local MCP server the daemon runs (`command`).
    pub stdio: Option<Arc<mcp::stdio::StdioService>>,
    /// A remote MCP server's sessions, by the identity they were issued to.
    pub sessions: Arc<mcp::sessions::RemoteSessions>,
}

/// The services being served, by gateway port; swapped whole on reload.
#[derive(Default)]
pub struct Runtime {
    pub by_port: HashMap<u16, Arc<ServiceRt>>,
}

/// What every layer shares.
pub struct Shared {
    pub settings: GatewaySettings,
    pub timeouts: Timeouts,
    pub runtime: ArcSwap<Runtime>,
    /// Request-body bytes held at once (`budget`).
    pub bodies: Arc<budget::BodyBudget>,
    /// Response bytes read whole and not yet taken by the agent.
    pub answers: Arc<budget::BodyBudget>,
}

pub struct Gateway {
    shared: Arc<Shared>,
    maps: GatewayMaps,
    daemon: OnceLock<Weak<Daemon>>,
    staged: Mutex<Option<Arc<Runtime>>>,
    listeners: Mutex<BTreeMap<u16, JoinHandle<()>>>,
    limits: Arc<listen::Limits>,
    stack: OnceLock<stack::Stack>,
    /// Why services of the active policy are not served (port taken).
    unbound: Mutex<BTreeMap<u16, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gateway {
    pub fn new(settings: GatewaySettings, maps: GatewayMaps) -> Arc<Self> {
        let shared = Arc::new(Shared {
            timeouts: settings.timeouts(),
            settings,
            runtime: ArcSwap::from_pointee(Runtime::default()),
            bodies: Arc::default(),
            answers: Arc::default(),
        });
        Arc::new(Self {
            limits: Arc::new(listen::Limits::default()),
            shared,
            maps,
            daemon: OnceLock::new(),
            staged: Mutex::new(None),
            listeners: Mutex::new(BTreeMap::new()),
            stack: OnceLock::new(),
            unbound: Mutex::new(BTreeMap::new()),
        })
    }

    /// Tie the gateway to its daemon (once, before the first policy).
    pub fn attach(self: &Arc<Self>, daemon: &Arc<Daemon>) {
        let _ = self.daemon.set(Arc::downgrade(daemon));
        let _ = self.stack.set(stack::build(self.shared.clone()));
        tokio::spawn(Self::retry_unbound(Arc::downgrade(self)));
    }

    pub fn listen_addr(&self) -> Ipv4Addr {
        self.shared.settings.listen
    }

    /// Before a policy becomes active: read every secret and CA file, build
    /// clients, listen on new ports and open them in the kernel. Anything
    /// that fails fails the reload, and the active policy stays.
    pub fn prepare(self: &Arc<Self>, policy: &Policy) -> Result<(), GatewayError> {
        if !self.shared.settings.enabled {
            if !policy.services.is_empty() {
                warn!(
                    services = policy.services.len(),
                    "gateway.enabled is false: the policy's services cannot be reached"
                );
            }
            self.reserve(None, BTreeSet::new());
            *lock(&self.staged) = Some(Arc::new(Runtime::default()));
            return Ok(());
        }
        let current = self.shared.runtime.load();
        let mut next = Runtime::default();
        for s in &policy.services {
            let reuse = current
                .by_port
                .values()
                .find(|r| r.service.id == s.id && r.service.upstream == s.upstream)
                .and_then(|r| r.client.clone());
            let client = match (reuse, s.url()) {
                (Some(c), _) => Some(c),
                (None, Some(u)) => Some(upstream::client(&s.id, u)?),
                (None, None) => None,
            };
            // Kept across reloads with the client: the server's sessions
            // outlive a policy change.
            let sessions = current
                .by_port
                .values()
                .find(|r| r.service.id == s.id && r.service.upstream == s.upstream)
                .map(|r| r.sessions.clone())
                .unwrap_or_default();
            let stdio = match &s.upstream {
                crate::policy::service::Upstream::Command(spec) => {
                    let fresh = mcp::stdio::StdioService::new(&s.id, spec)?;
                    // Keep the running one (and its sessions) if nothing changed.
                    let old = current
                        .by_port
                        .values()
                        .find(|r| r.service.id == s.id && r.service.upstream == s.upstream)
                        .and_then(|r| r.stdio.clone())
                        .filter(|o| o.secrets() == fresh.secrets());
                    Some(old.unwrap_or(fresh))
                }
                crate::policy::service::Upstream::Url(_) => None,
            };
            let (credential, mut secrets) = match &s.credential {
                None => (None, Vec::new()),
                Some(c) => {
                    let (value, secret) = secrets::header_value(&s.id, c)?;
                    let name = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
                        GatewayError::Secret {
                            service: s.id.clone(),
                            from: c.secret.to_string(),
                            why: format!("`{}` is not a header name", c.header),
                        }
                    })?;
                    (Some((name, value)), vec![Bytes::from(secret)])
                }
            };
            if let Some(st) = &stdio {
                secrets.extend(st.secrets());
            }
            next.by_port.insert(
                s.port,
                Arc::new(ServiceRt {
                    service: s.clone(),
                    credential,
                    secrets,
                    client,
                    stdio,
                    sessions,
                }),
            );
        }
        let addr = self.shared.settings.listen;
        let mut opened = Vec::new();
        let mut unbound = BTreeMap::new();
        {
            let mut listeners = lock(&self.listeners);
            // Reserved before binding: an agent cannot take a new port
            // between now and the gateway listening on it.
            let ports = next.by_port.keys().chain(listeners.keys()).copied();
            self.reserve(Some(addr), ports.collect());
            crate::daemon::local_ports::reserve(next.by_port.keys().copied());
            for (port, rt) in &next.by_port {
                if listeners.contains_key(port) {
                    continue;
                }
                // A port something else holds (another program, or an
                // agent that bound it first) costs that one service, not
                // the policy: failing the reload would keep every rule the
                // operator just removed, and failing the start would leave
                // no daemon at all. The port is not opened to agents in the
                // kernel until the gateway listens on it (`retry_unbound`).
                match listen::bind(self, addr, *port) {
                    Ok(task) => {
                        listeners.insert(*port, task);
                        opened.push(*port);
                    }
                    Err(source) => {
                        let e = GatewayError::Listen {
                            service: rt.service.id.clone(),
                            addr: (addr, *port).into(),
                            source,
                        };
                        warn!(error = %e, "gateway service unavailable until its port is free; retrying");
                        unbound.insert(*port, e.to_string());
                    }
                }
            }
        }
        self.maps.open(addr, &opened)?;
        *lock(&self.unbound) = unbound;
        *lock(&self.staged) = Some(Arc::new(next));
        Ok(())
    }

    /// Keep agents from binding the gateway's address or, on the
    /// unspecified address, `ports`. A failure costs the reservation, not
    /// the policy: the endpoints stay closed until the gateway listens.
    fn reserve(&self, addr: Option<Ipv4Addr>, ports: BTreeSet<u16>) {
        if let Err(e) = self.maps.reserve(addr, &ports) {
            warn!(error = %e, "reserving the gateway's addresses in the kernel");
        }
    }

    /// Services of the last `prepare` whose port could not be bound.
    pub fn unbound(&self) -> Vec<String> {
        lock(&self.unbound).values().cloned().collect()
    }

    /// Every few seconds, listen on the active services' ports that were
    /// taken when their policy came, and open them to agents once bound.
    async fn retry_unbound(gw: Weak<Self>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let Some(gw) = gw.upgrade() else { return };
            let addr = gw.shared.settings.listen;
            let runtime = gw.shared.runtime.load_full();
            let mut listeners = lock(&gw.listeners);
            for (port, rt) in &runtime.by_port {
                if listeners.contains_key(port) {
                    continue;
                }
                if let Ok(task) = listen::bind(&gw, addr, *port) {
                    if let Err(e) = gw.maps.open(addr, &[*port]) {
                        task.abort();
                        warn!(error = %e, port, "opening a gateway endpoint in the kernel");
                        continue;
                    }
                    listeners.insert(*port, task);
                    lock(&gw.unbound).remove(port);
                    info!(service = %rt.service.id, port, "gateway port free again: serving");
                }
            }
        }
    }

    /// After the policy flip: serve the new services, stop the removed ones.
    pub fn commit(&self) {
        let Some(next) = lock(&self.staged).take() else {
            return;
        };
        let ports: Vec<u16> = next.by_port.keys().copied().collect();
        self.shared.runtime.store(next);
        let mut listeners = lock(&self.listeners);
        listeners.retain(|port, task| {
            let keep = ports.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        // Open only what the gateway listens on: a port something else
        // holds stays closed to agents until `retry_unbound` takes it.
        let listening: Vec<u16> = listeners.keys().copied().collect();
        drop(listeners);
        if let Err(e) = self.maps.retain(self.shared.settings.listen, &listening) {
            warn!(error = %e, "updating gateway endpoints in the kernel");
        }
        if self.shared.settings.enabled {
            self.reserve(
                Some(self.shared.settings.listen),
                ports.iter().copied().collect(),
            );
        }
        if !ports.is_empty() {
            info!(listen = %self.shared.settings.listen, ?ports, "gateway serving");
        }
    }

    /// Stop serving; the kernel closes the endpoints.
    pub fn shutdown(&self) {
        for (_, task) in std::mem::take(&mut *lock(&self.listeners)) {
            task.abort();
        }
        if let Err(e) = self.maps.retain(self.shared.settings.listen, &[]) {
            warn!(error = %e, "closing gateway endpoints in the kernel");
        }
    }

    fn daemon(&self) -> Option<Arc<Daemon>> {
        self.daemon.get().and_then(Weak::upgrade)
    }
}
