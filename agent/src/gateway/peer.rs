//! Who is on the other end of a loopback TCP connection, as the kernel
//! says: the client socket's cgroup (fixed by the kernel when the socket
//! was created) and owner, read with `sock_diag` (NETLINK_SOCK_DIAG).
//!
//! The address a connection comes from proves nothing (any local process
//! may bind any loopback address); the socket's cgroup does.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// What the kernel says about the client's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSocket {
    /// cgroup v2 id of the socket (the creating task's cgroup).
    pub cgroup_id: u64,
    pub uid: u32,
    pub inode: u32,
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const INET_DIAG_CGROUP_ID: u16 = 21;
const INET_DIAG_NOCOOKIE: u32 = !0;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;

/// `struct inet_diag_sockid`: ports and addresses in network order.
fn sockid(src: SocketAddr, dst: SocketAddr, v6: bool) -> [u8; 48] {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    let put = |buf: &mut [u8], ip: IpAddr| match (ip, v6) {
        (IpAddr::V4(a), false) => buf[..4].copy_from_slice(&a.octets()),
        (IpAddr::V4(a), true) => buf.copy_from_slice(&a.to_ipv6_mapped().octets()),
        (IpAddr::V6(a), _) => buf.copy_from_slice(&a.octets()),
    };
    put(&mut id[4..20], src.ip());
    put(&mut id[20..36], dst.ip());
    // idiag_if = 0, idiag_cookie = INET_DIAG_NOCOOKIE.
    id[40..44].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    id[44..48].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    id
}

/// The socket of the client that connected from `client` to `server`
/// (the accepted connection's peer and local addresses). `Ok(None)` when
/// the kernel knows no such socket (the client is gone).
pub fn client_socket(client: SocketAddr, server: SocketAddr) -> io::Result<Option<PeerSocket>> {
    // An IPv4 connection may come from a dual-stack IPv6 socket; the
    // kernel finds either with an IPv4 query, and an IPv6 one is tried
    // for completeness.
    for v6 in [false, true] {
        if let Some(found) = query(client, server, v6)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn query(client: SocketAddr, server: SocketAddr, v6: bool) -> io::Result<Option<PeerSocket>> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + 56);
    let len = (NLMSG_HDRLEN + 56) as u32;
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    req.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&sockid(client, server, v6));
    // SAFETY: a zeroed sockaddr_nl with the family set addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `req` and `kernel` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&buf[..n as usize])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse(msg: &[u8]) -> io::Result<Option<PeerSocket>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag answer");
    let ty = u16_at(msg, 4).ok_or_else(bad)?;
    if ty == NLMSG_ERROR {
        let errno = -(u32_at(msg, NLMSG_HDRLEN).ok_or_else(bad)? as i32);
        return match errno {
            0 | libc::ENOENT => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if ty != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected sock_diag message type {ty}"),
        ));
    }
    let total = (u32_at(msg, 0).ok_or_else(bad)? as usize).min(msg.len());
    let body = NLMSG_HDRLEN;
    let uid = u32_at(msg, body + 64).ok_or_else(bad)?;
    let inode = u32_at(msg, body + 68).ok_or_else(bad)?;
    let mut at = body + DIAG_MSG_LEN;
    while at + 4 <= total {
        let len = u16_at(msg, at).ok_or_else(bad)? as usize;
        let kind = u16_at(msg, at + 2).ok_or_else(bad)?;
        if len < 4 {
            break;
        }
        if kind == INET_DIAG_CGROUP_ID && len >= 12 {
            let v = msg.get(at + 4..at + 12).ok_or_else(bad)?;
            let cgroup_id = u64::from_ne_bytes(v.try_into().map_err(|_| bad())?);
            return Ok(Some(PeerSocket {
                cgroup_id,
                uid,
                inode,
            }));
        }
        at += (len + 3) & !3;
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the kernel does not report socket cgroups (INET_DIAG_CGROUP_ID needs Linux 5.9 with cgroup socket data)",
    ))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn finds_the_client_socket_of_a_loopback_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let found = client_socket(peer, s.local_addr().unwrap())
            .unwrap()
            .expect("socket");
        let own = std::fs::metadata("/proc/self/ns/cgroup").map(|_| ());
        assert!(own.is_ok());
        // The test runs in some cgroup; the id is a cgroupfs inode (> 0),
        // and the owner is us.
        assert!(found.cgroup_id > 0);
        // SAFETY: plain getter.
        assert_eq!(found.uid, unsafe { libc::geteuid() });
        drop(c);
        drop(s);
        // A connection that never existed is not found.
        let none = client_socket(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(none, None);
    }
}
