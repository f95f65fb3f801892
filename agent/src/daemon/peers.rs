//! Who is at the other end: a process by its lineage, the local process
//! behind a loopback TCP connection to the API, and the sockets of a
//! revoked identity.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::{Daemon, DaemonError};
use crate::identity::CgroupFs;

impl Daemon {
    /// The identity index a process carries, as the kernel hooks see it:
    /// its lineage first (any of its threads: the leader may have exited),
    /// else the nearest enrolled cgroup among its own and its ancestors.
    pub(crate) fn identity_index_of_pid(&self, pid: u32) -> Result<Option<u32>, DaemonError> {
        if let Some(index) = self.maps.lineage_of(pid)? {
            return Ok(Some(index));
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.filter_map(Result::ok) {
                if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok())
                    && let Some(index) = self.maps.lineage_of(tid)?
                {
                    return Ok(Some(index));
                }
            }
        }
        let rel = CgroupFs::cgroup_of_pid(pid)
            .map_err(|e| DaemonError::Unauthenticated(format!("process {pid}: {e}")))?;
        // One map lookup per ancestor: this runs on every API call.
        for id in self.cgroups.ancestry_ids(&rel) {
            if let Some(index) = self.maps.identity_of_cgroup(id)? {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// The identity of the local process at the other end of a loopback
    /// TCP connection to the API (`local` is the daemon's end). The kernel
    /// stamped the peer's socket with its identity when an enrolled process
    /// created or connected it; a socket it did not stamp is checked once
    /// more by the processes holding it. A peer that cannot be found is an
    /// error: an unidentified caller is never taken for an operator.
    pub fn identity_of_tcp_peer(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<(String, u32)>, DaemonError> {
        let socket = self
            .maps
            .tcp_socket_identity(remote, local)?
            .ok_or_else(|| {
                DaemonError::Unauthenticated(format!(
                    "no local socket {remote} → {local}: the TCP peer is not a process of this host's network namespace"
                ))
            })?;
        let name = |index: u32| {
            self.registry
                .name_of(index)
                .unwrap_or_else(|| format!("#{index}"))
        };
        if let Some(index) = socket.identity {
            return Ok(Some((name(index), index)));
        }
        for pid in holders_of_socket(socket.inode) {
            if let Some(index) = self.identity_index_of_pid(pid)? {
                return Ok(Some((name(index), index)));
            }
        }
        Ok(None)
    }

    /// Abort the TCP and UDP sockets of a revoked identity, so established
    /// connections end at once (the kernel already drops their packets).
    ///
    /// Beside the sockets stamped with the identity, those its processes
    /// hold without a stamp: made before they were enrolled (a launcher's,
    /// kept by `keep_inherited_sockets`; a process a new selector took in
    /// with its connections open) or received from another process. No
    /// connect ran on such a socket as the agent, so neither the kernel's
    /// drop nor the stamp reaches it.
    /// Returns how many were aborted.
    pub(super) fn destroy_sockets_of(&self, identity: &str, index: u32) -> usize {
        let held = self.sockets_held_by(index);
        match self.maps.destroy_sockets_of(index, &held) {
            Ok(n) => {
                if n > 0 {
                    info!(identity, sockets = n, "revoked identity's sockets aborted");
                }
                n
            }
            Err(e) => {
                warn!(identity, error = %e, "aborting the revoked identity's sockets (their packets are dropped regardless)");
                0
            }
        }
    }
}

impl Daemon {
    /// The inodes of the sockets held by the processes carrying identity
    /// `index` (a scan of `/proc`: run on a revocation, not per call).
    fn sockets_held_by(&self, index: u32) -> std::collections::HashSet<u32> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Default::default();
        };
        procs
            .filter_map(Result::ok)
            .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
            .filter(|pid| matches!(self.identity_index_of_pid(*pid), Ok(Some(i)) if i == index))
            .flat_map(|pid| socket_inodes_of(pid).into_iter())
            .collect()
    }

    /// Agents' sockets on the API's TCP port, bound before the kernel was
    /// told the port (an earlier configuration had none, or another one)
    /// or handed to an agent by the host program that made it: the bind
    /// hook refuses such binds only from then on, and a listener there
    /// would take operators' calls and tokens. A socket stamped with an
    /// identity, or held only by enrolled processes, is aborted and every
    /// enrolled process holding it killed, so the port comes free for the
    /// daemon; a host program holding the port is left alone. Returns how
    /// many sockets were evicted.
    pub fn evict_from_api_port(&self, port: u16) -> usize {
        let sockets = match self.maps.tcp_sockets_on_port(port) {
            Ok(s) => s,
            Err(e) => {
                warn!(port, error = %e, "looking for agents on the API's TCP port");
                return 0;
            }
        };
        let mut evicted = 0;
        for s in &sockets {
            let holders: Vec<(u32, Option<u32>)> = holders_of_socket(s.inode)
                .into_iter()
                .map(|pid| (pid, self.identity_index_of_pid(pid).ok().flatten()))
                .collect();
            let agents_only = !holders.is_empty() && holders.iter().all(|(_, i)| i.is_some());
            let Some(index) = s
                .identity
                .or_else(|| agents_only.then(|| holders[0].1).flatten())
            else {
                continue; // a host program's
            };
            evicted += 1;
            let name = self
                .registry
                .name_of(index)
                .unwrap_or_else(|| format!("#{index}"));
            if let Err(e) = crate::bpf::sockdiag::destroy(s)
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                warn!(port, error = %e, "aborting an agent's socket on the API's TCP port");
            }
            // No process holds it: it is in flight in a Unix socket's queue,
            // taken back now and then to listen again. Every process of the
            // identity goes, so the queue, and the socket with it, goes too.
            let targets: Vec<u32> = if holders.is_empty() {
                self.maps
                    .lineage_entries()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, i)| *i == index)
                    .map(|(tid, _)| tid)
                    .collect()
            } else {
                holders
                    .iter()
                    .filter(|(_, i)| i.is_some())
                    .map(|(pid, _)| *pid)
                    .collect()
            };
            let killed: Vec<u32> = targets
                .into_iter()
                .filter(|pid| {
                    // SAFETY: plain kill(2) on a pid just read (a thread's id
                    // signals its whole process).
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) == 0 }
                })
                .collect();
            warn!(identity = %name, socket = %s.local(), pids = ?killed, "an agent held the API's TCP port: its socket aborted, its processes killed");
            let mut ev = crate::audit::AuditEvent::new(
                crate::audit::EventKind::Daemon,
                "killed",
                "agent-on-api-port",
            );
            ev.identity = Some(name);
            ev.detail = Some(format!(
                "a socket of this identity held {} (TCP), the API's port: the socket was aborted and the enrolled processes holding it (or, with none holding it, every process of the identity) killed ({killed:?})",
                s.local()
            ));
            self.audit.emit(ev);
        }
        evicted
    }
}

/// Processes with a descriptor for socket `inode` (`socket:[inode]`).
fn holders_of_socket(inode: u32) -> Vec<u32> {
    let target = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
                })
            })
        })
        .collect()
}

/// The inodes of the sockets process `pid` has descriptors for.
fn socket_inodes_of(pid: u32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}
