//! The daemon's side of the lineage map and the guard settings: who a task
//! descends from (read first when naming a caller), seeding tasks that were
//! in a cgroup before it was enrolled, and forgetting tasks whose cgroup
//! the policy no longer selects.

use std::{net::SocketAddr, os::fd::AsFd};

use agent_common::{NormAddr, guard::GuardConfig};

use super::{BpfError, KernelMaps, lock};

/// BPF_NOEXIST: a lineage entry made by the kernel is never overwritten.
const NOEXIST: u64 = 1;
/// BPF_EXIST: update an entry only if it is there.
const EXIST_ONLY: u64 = 2;

impl KernelMaps {
    /// The identity a task (thread id) inherited, if any.
    pub fn lineage_of(&self, tid: u32) -> Result<Option<u32>, BpfError> {
        match lock(&self.lineage).get(&tid, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(BpfError::map("LINEAGE")(e)),
        }
    }

    /// Record `identity` for tasks that have no lineage yet. Returns how many
    /// were added.
    pub fn seed_lineage(&self, tids: &[u32], identity: u32) -> Result<usize, BpfError> {
        let mut map = lock(&self.lineage);
        let mut added = 0;
        for tid in tids {
            match map.insert(tid, &identity, NOEXIST) {
                Ok(()) => added += 1,
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(BpfError::map("LINEAGE")(e)),
            }
        }
        Ok(added)
    }

    /// Remove the entries of `tids` that say `identity` (a task the kernel
    /// recorded as another identity keeps that).
    pub fn forget_lineage(&self, tids: &[u32], identity: u32) -> Result<(), BpfError> {
        let mut map = lock(&self.lineage);
        for tid in tids {
            if matches!(map.get(tid, 0), Ok(v) if v == identity) {
                match map.remove(tid) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(BpfError::map("LINEAGE")(e)),
                }
            }
        }
        Ok(())
    }

    /// Move the entries of `tids` that say `from` to `to`, each in one map
    /// update: a task is never without an identity on the way (a reload
    /// that gives a selected cgroup to another identity must not leave its
    /// processes unconfined for a moment).
    pub fn relabel_lineage(&self, tids: &[u32], from: u32, to: u32) -> Result<(), BpfError> {
        let mut map = lock(&self.lineage);
        for tid in tids {
            if matches!(map.get(tid, 0), Ok(v) if v == from) {
                map.insert(tid, &to, EXIST_ONLY).or_else(|e| match e {
                    // Exited meanwhile.
                    aya::maps::MapError::SyscallError(ref s)
                        if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
                    {
                        Ok(())
                    }
                    e => Err(BpfError::map("LINEAGE")(e)),
                })?;
            }
        }
        Ok(())
    }

    /// Every (task, identity) in the lineage map.
    pub fn lineage_entries(&self) -> Result<Vec<(u32, u32)>, BpfError> {
        lock(&self.lineage)
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(BpfError::map("LINEAGE"))
    }

    /// The identity stamp of the socket whose own address is `local` and
    /// peer `remote` (TCP, this network namespace): `Ok(None)` when there is
    /// no such socket, `Some(None)` for an unstamped one (and its inode).
    pub fn tcp_socket_identity(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<super::sockdiag::DiagSocket>, BpfError> {
        let id = self
            .sock_ident
            .info()
            .map_err(BpfError::map("SOCK_GUARD"))?
            .id();
        super::sockdiag::lookup(
            super::sockdiag::IPPROTO_TCP,
            local,
            remote,
            self.sock_ident.fd().as_fd(),
            id,
        )
        .map_err(BpfError::SockDiag)
    }

    /// Every TCP socket of this network namespace bound to local `port`
    /// (either family, any state), with identity stamps.
    pub fn tcp_sockets_on_port(
        &self,
        port: u16,
    ) -> Result<Vec<super::sockdiag::DiagSocket>, BpfError> {
        use super::sockdiag::{IPPROTO_TCP, dump};
        let id = self
            .sock_ident
            .info()
            .map_err(BpfError::map("SOCK_GUARD"))?
            .id();
        let mut found = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            let all = dump(family, IPPROTO_TCP, self.sock_ident.fd().as_fd(), id)
                .map_err(BpfError::SockDiag)?;
            found.extend(all.into_iter().filter(|s| s.local().port() == port));
        }
        Ok(found)
    }

    /// Abort every TCP and UDP socket stamped with `identity` in this
    /// network namespace, and those whose inode is in `held` (sockets the
    /// identity's processes hold without a stamp: made before enrolment,
    /// or by another process and passed in); returns how many.
    pub fn destroy_sockets_of(
        &self,
        identity: u32,
        held: &std::collections::HashSet<u32>,
    ) -> Result<usize, BpfError> {
        use super::sockdiag::{IPPROTO_TCP, IPPROTO_UDP, destroy, dump};
        let id = self
            .sock_ident
            .info()
            .map_err(BpfError::map("SOCK_GUARD"))?
            .id();
        let mut destroyed = 0;
        for family in [libc::AF_INET, libc::AF_INET6] {
            for proto in [IPPROTO_TCP, IPPROTO_UDP] {
                let all = dump(family, proto, self.sock_ident.fd().as_fd(), id)
                    .map_err(BpfError::SockDiag)?;
                let theirs = |s: &&super::sockdiag::DiagSocket| {
                    s.identity == Some(identity) || (s.inode != 0 && held.contains(&s.inode))
                };
                for s in all.iter().filter(theirs) {
                    match destroy(s) {
                        Ok(()) => destroyed += 1,
                        // Gone meanwhile.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => return Err(BpfError::SockDiag(e)),
                    }
                }
            }
        }
        Ok(destroyed)
    }

    /// Change the guard settings with `f` (read, modify, write).
    pub fn update_guard(
        &self,
        f: impl FnOnce(&mut GuardConfig) -> Result<(), BpfError>,
    ) -> Result<(), BpfError> {
        let mut map = lock(&self.guard);
        let mut cfg = map.get(&0, 0).map_err(BpfError::map("GUARD_CFG"))?;
        f(&mut cfg)?;
        map.set(0, &cfg, 0).map_err(BpfError::map("GUARD_CFG"))
    }

    /// Tell the kernel where the API's TCP listener is (`None`: there is
    /// none), so enrolled processes are kept from it.
    pub fn set_api_endpoint(&self, addr: Option<SocketAddr>) -> Result<(), BpfError> {
        self.update_guard(|cfg| {
            match addr {
                Some(a) => {
                    let norm = match a.ip() {
                        std::net::IpAddr::V4(v4) => NormAddr::v4(v4.octets()),
                        std::net::IpAddr::V6(v6) => NormAddr::v6(v6.octets()),
                    };
                    cfg.api_addr = norm.bytes;
                    cfg.api_v6 = u8::from(norm.is_v6);
                    cfg.api_port = a.port();
                }
                None => {
                    cfg.api_addr = [0; 16];
                    cfg.api_v6 = 0;
                    cfg.api_port = 0;
                }
            }
            Ok(())
        })
    }
}
