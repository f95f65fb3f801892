//! Who is calling the gateway, as the kernel hooks and the decision API
//! decide it: the identity the kernel stamped on the client's socket when
//! an enrolled process created or connected it (that process's lineage,
//! wherever it has moved since), else the identity of the processes
//! holding the socket. The socket's cgroup decides nothing: an agent that
//! moves into another identity's cgroup is still who it was.

use std::net::SocketAddr;

use super::peer::PeerSocket;
use crate::daemon::{Daemon, DaemonError};

/// The caller of a gateway connection.
#[derive(Clone, Debug)]
pub struct Caller {
    pub socket: PeerSocket,
    /// Identity name and index; `None` for a process that is not enrolled.
    pub identity: Option<(String, u32)>,
}

impl Caller {
    /// The identity's name, empty for a process that is not enrolled (the
    /// key its connections, sessions and stdio servers are counted under).
    pub fn identity_name(&self) -> &str {
        self.identity.as_ref().map_or("", |(n, _)| n.as_str())
    }
}

/// The identity behind the client socket `s`, connected from `client` to
/// the gateway's `local` address.
pub fn identify(
    daemon: &Daemon,
    s: PeerSocket,
    local: SocketAddr,
    client: SocketAddr,
) -> Result<Caller, DaemonError> {
    let identity = daemon.identity_of_tcp_peer(local, client)?;
    Ok(Caller {
        socket: s,
        identity,
    })
}
