use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use tokio::net::UnixListener;
use tonic::{Request, Response, Status, transport::server::TcpConnectInfo};

use super::{peer::PeerConn, to_status};
use crate::{
    daemon::{Caller, Daemon, DaemonError},
    proto::{self, palisade_server::PalisadeServer},
};

/// How often a TCP listener whose port was taken tries to bind again.
const TCP_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// Evictions from the API's port followed at once by a bind, per retry.
const EVICT_TRIES: usize = 50;

/// Sets or clears an identity's kill switch on the blocking pool: turning it
/// on scans every process's descriptors in /proc for the sockets to abort,
/// which takes seconds on a host with many sockets and must not hold one of
/// the runtime's two workers (status, decisions and other operators' calls
/// would wait on it). The answer still comes only once the switch is set
/// and the sockets are aborted.
async fn kill_switch_off_runtime(
    daemon: &Arc<Daemon>,
    caller: Caller,
    identity: String,
    killed: bool,
    reason: String,
) -> Result<(), Status> {
    let daemon = Arc::clone(daemon);
    tokio::task::spawn_blocking(move || daemon.set_kill_switch(&caller, &identity, killed, &reason))
        .await
        .map_err(|e| Status::internal(format!("the kill switch task failed: {e}")))?
        .map_err(to_status)
}

pub struct PalisadeService {
    daemon: Arc<Daemon>,
}

impl PalisadeService {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

/// Who is calling: the process that connected to the Unix socket, pinned
/// when the connection was accepted (the daemon checks on each call that
/// it is still there), or (over loopback TCP) nobody in particular; plus
/// an operator token from `authorization: Bearer …`.
pub(super) fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    let operator_token = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    if let Some(info) = req.extensions().get::<TcpConnectInfo>() {
        return Ok(Caller {
            over_tcp: true,
            tcp_peer: info.local_addr().zip(info.remote_addr()),
            operator_token,
            ..Caller::default()
        });
    }
    let peer = match req.extensions().get::<PeerConn>() {
        Some(PeerConn(Ok(p))) => p.clone(),
        Some(PeerConn(Err(e))) => return Err(Status::unauthenticated(e.to_string())),
        None => {
            return Err(Status::unauthenticated(
                "no peer credentials on this connection",
            ));
        }
    };
    Ok(Caller {
        operator_token,
        ..Caller::peer(peer)
    })
}

#[tonic::async_trait]
impl proto::palisade_server::Palisade for PalisadeService {
    async fn issue_token(
        &self,
        req: Request<proto::IssueTokenRequest>,
    ) -> Result<Response<proto::IssueTokenResponse>, Status> {
        super::decision::issue_token(&self.daemon, req).await
    }

    async fn decide(
        &self,
        req: Request<proto::DecideRequest>,
    ) -> Result<Response<proto::DecideResponse>, Status> {
        super::decision::decide(&self.daemon, req).await
    }

    async fn get_approval(
        &self,
        req: Request<proto::GetApprovalRequest>,
    ) -> Result<Response<proto::Approval>, Status> {
        super::decision::get_approval(&self.daemon, req).await
    }

    async fn list_approvals(
        &self,
        req: Request<proto::ListApprovalsRequest>,
    ) -> Result<Response<proto::ListApprovalsResponse>, Status> {
        super::decision::list_approvals(&self.daemon, req).await
    }

    async fn resolve_approval(
        &self,
        req: Request<proto::ResolveApprovalRequest>,
    ) -> Result<Response<proto::Approval>, Status> {
        super::decision::resolve_approval(&self.daemon, req).await
    }

    async fn apply_signed_approval(
        &self,
        req: Request<proto::ApplySignedApprovalRequest>,
    ) -> Result<Response<proto::Approval>, Status> {
        super::decision::apply_signed_approval(&self.daemon, req).await
    }

    async fn request_egress(
        &self,
        req: Request<proto::RequestEgressRequest>,
    ) -> Result<Response<proto::RequestEgressResponse>, Status> {
        super::decision::request_egress(&self.daemon, req).await
    }

    async fn elevate(
        &self,
        req: Request<proto::ElevateRequest>,
    ) -> Result<Response<proto::Elevation>, Status> {
        super::elevation::elevate(&self.daemon, req).await
    }

    async fn end_elevation(
        &self,
        req: Request<proto::EndElevationRequest>,
    ) -> Result<Response<proto::Elevation>, Status> {
        super::elevation::end_elevation(&self.daemon, req).await
    }

    async fn list_elevations(
        &self,
        req: Request<proto::ListElevationsRequest>,
    ) -> Result<Response<proto::ListElevationsResponse>, Status> {
        super::elevation::list_elevations(&self.daemon, req).await
    }

    async fn push_policy(
        &self,
        req: Request<proto::PushPolicyRequest>,
    ) -> Result<Response<proto::ReloadPolicyResponse>, Status> {
        super::decision::push_policy(&self.daemon, req).await
    }

    async fn ping(
        &self,
        _req: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        Ok(Response::new(proto::PingResponse {}))
    }

    type WatchEventsStream = super::observe::EventStream;

    async fn watch_events(
        &self,
        req: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = caller(&req)?;
        self.daemon
            .require_operator_for(&caller, "watching audit events")
            .map_err(to_status)?;
        super::observe::watch(&self.daemon, req.into_inner()).map(Response::new)
    }

    async fn enroll(
        &self,
        req: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        let caller = caller(&req)?;
        let e = self
            .daemon
            .enrol(&caller, &req.get_ref().identity)
            .map_err(to_status)?;
        Ok(Response::new(proto::EnrollResponse {
            identity: e.identity,
            cgroup: e.cgroup,
            cgroup_id: e.cgroup_id,
            policy_version: e.policy_version,
            keep_capabilities: e.confinement.keep_capabilities,
            unscoped: e.confinement.unscoped,
            keep_inherited_sockets: e.confinement.keep_inherited_sockets,
            read_only_root: e.confinement.read_only_root,
            writable: e.confinement.writable.clone(),
            protected_paths: e
                .protected_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            hidden_paths: e
                .hidden_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            exposed_links: e
                .exposed_links
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let s = self.daemon.status().map_err(to_status)?;
        Ok(Response::new(proto::StatusResponse {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            policy_version: s.policy_version,
            policy_generation: s.generation,
            identities: s
                .identities
                .into_iter()
                .map(|i| proto::IdentityStatus {
                    id: i.id,
                    mode: i.mode,
                    killed: i.killed,
                    cgroups: i.cgroups,
                    allowed: i.allowed,
                    denied: i.denied,
                    audited: i.audited,
                    index: i.index,
                })
                .collect(),
            events_lost: s.events_lost,
            events_written: s.events_written,
            bpffs: self.daemon.config.bpffs.display().to_string(),
            attach_cgroup: self.daemon.attach.display().to_string(),
            last_reload_error: s.last_reload_error.unwrap_or_default(),
            health: Some(super::observe::health(&self.daemon)),
        }))
    }

    async fn revoke(
        &self,
        req: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        kill_switch_off_runtime(&self.daemon, caller, r.identity, true, r.reason).await?;
        Ok(Response::new(proto::RevokeResponse {}))
    }

    async fn restore(
        &self,
        req: Request<proto::RestoreRequest>,
    ) -> Result<Response<proto::RestoreResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        kill_switch_off_runtime(&self.daemon, caller, r.identity, false, r.reason).await?;
        Ok(Response::new(proto::RestoreResponse {}))
    }

    async fn reload_policy(
        &self,
        req: Request<proto::ReloadPolicyRequest>,
    ) -> Result<Response<proto::ReloadPolicyResponse>, Status> {
        let caller = caller(&req)?;
        self.daemon
            .require_operator_for(&caller, "reloading the policy")
            .map_err(to_status)?;
        let r = self.daemon.reload().await.map_err(to_status)?;
        Ok(Response::new(proto::ReloadPolicyResponse {
            policy_version: r.version,
            policy_generation: r.generation,
            warnings: r.warnings,
        }))
    }
}

/// Bind the Unix socket (mode 0660, group `socket_group` if set) and serve
/// until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let io = |e: std::io::Error| DaemonError::Config(format!("socket {}: {e}", socket.display()));
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(socket).map_err(io)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(group) = &daemon.config.socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| DaemonError::Config(format!("socket_group `{group}` does not exist")))?
            .gid;
        nix::unistd::chown(socket, None, Some(gid)).map_err(|e| io(std::io::Error::from(e)))?;
    }
    if daemon.config.api.tcp.is_none()
        && let Err(e) = daemon.maps.set_api_endpoint(None)
    {
        tracing::warn!(error = %e, "clearing the API's TCP port in the kernel");
    }
    // The configured port is the daemon's: the kernel keeps enrolled
    // processes from binding or reaching it (`GUARD_CFG`) from now on, also
    // while a host program holds it and the listener waits for it below.
    if let Some(Ok(a)) = daemon
        .config
        .api
        .tcp
        .as_ref()
        .map(|a| a.parse::<std::net::SocketAddr>())
        && a.port() != 0
    {
        crate::daemon::local_ports::reserve([a.port()]);
        if let Err(e) = daemon.maps.set_api_endpoint(Some(a)) {
            tracing::warn!(error = %e, "telling the kernel the API's TCP port");
        }
    }
    // The standard gRPC health service, on both listeners.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<PalisadeServer<PalisadeService>>()
        .await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // A port something else holds costs the TCP listener, not the daemon:
    // it is tried again every `TCP_RETRY` until it binds, and health names
    // it meanwhile (`Daemon::unavailable`). The kernel keeps agents from
    // binding it from now on (above); an agent that bound it before is
    // evicted (`evict_from_api_port`); a host program is waited for.
    let tcp_server = daemon.config.api.tcp.clone().map(|addr| {
        let svc = PalisadeServer::new(PalisadeService::new(daemon.clone()));
        let (daemon, health) = (daemon.clone(), health.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let fixed_port = addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port())
                .filter(|p| *p != 0);
            // Agents' sockets on the port, on any address (the kernel was
            // told the port before this task ran, so no new one comes).
            let mut evicted = fixed_port.map_or(0, |p| daemon.evict_from_api_port(p));
            let mut failed = false;
            let listener = 'bound: loop {
                match tokio::net::TcpListener::bind(&addr).await {
                    Ok(l) => break l,
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::AddrInUse
                            && let Some(p) = fixed_port
                        {
                            // An aborted socket stays bound until its last
                            // holder closes it, and an agent keeping it (even
                            // in flight in a Unix socket's queue) may listen
                            // on it again: bind at once, while it does not.
                            let mut tries = 0;
                            while tries < EVICT_TRIES {
                                let n = daemon.evict_from_api_port(p);
                                if n == 0 {
                                    break;
                                }
                                evicted += n;
                                tries += 1;
                                if let Ok(l) = tokio::net::TcpListener::bind(&addr).await {
                                    break 'bound l;
                                }
                            }
                        }
                        if !failed && evicted == 0 {
                            tracing::error!(%addr, error = %e, "API TCP listener unavailable, trying again every {TCP_RETRY:?}; the Unix socket serves");
                            failed = true;
                        }
                        // An evicted agent's socket goes with its last
                        // holder: try again soon.
                        let wait = if evicted > 0 { TCP_RETRY / 10 } else { TCP_RETRY };
                        evicted = 0;
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = rx.wait_for(|s| *s) => return Ok(()),
                        }
                    }
                }
            };
            let local = listener.local_addr().ok();
            if let Some(a) = local {
                // Port 0 in the configuration: the kernel learns the port
                // chosen now (enrolled processes are kept from it unless
                // their policy allows it: `confinement.api_tcp`).
                if let Err(e) = daemon.maps.set_api_endpoint(Some(a)) {
                    tracing::warn!(error = %e, "telling the kernel the API's TCP port");
                }
                let _ = daemon.api_tcp_addr.set(a);
            }
            tracing::info!(addr = ?local, "API also listening on loopback TCP (operator tokens and health only)");
            drop(daemon);
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), stopped(rx))
                .await
        })
    });
    let pin = daemon.config.api.peer_pin;
    let cap = {
        let daemon = Arc::clone(&daemon);
        super::peer::ConnectionCap::new(Arc::new(move |pid| {
            daemon.identity_index_of_pid(pid).map_err(drop)
        }))
    };
    tracing::info!(socket = %socket.display(), peer_pin = ?pin, "API listening");
    crate::daemon::notify::notify("READY=1");
    let unix = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(PalisadeServer::new(PalisadeService::new(daemon)))
        .serve_with_incoming_shutdown(super::peer::incoming(listener, pin, cap), async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    if let Some(t) = tcp_server {
        let _ = t.await;
    }
    unix.map_err(|e| DaemonError::Config(format!("API server: {e}")))
}
