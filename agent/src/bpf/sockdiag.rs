//! sock_diag (`NETLINK_SOCK_DIAG`): the kernel's view of TCP and UDP
//! sockets, each with the identity stamp the programs left in `SOCK_GUARD`
//! (`INET_DIAG_REQ_SK_BPF_STORAGES`), and `SOCK_DESTROY` to abort them.
//!
//! The daemon uses it to name the process behind a loopback TCP connection
//! to its API, and to tear down a revoked identity's connections.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_REQ_SK_BPF_STORAGES: u16 = 2;
/// Filter ops (`enum inet_diag_bc_op_code`): local port equal, remote
/// port equal; each is followed by an op whose `no` field holds the port.
const INET_DIAG_BC_S_EQ: u8 = 11;
const INET_DIAG_BC_D_EQ: u8 = 12;
const TCP_LISTEN: u32 = 10;
const SK_DIAG_BPF_STORAGE_REQ_MAP_FD: u16 = 1;
const INET_DIAG_SK_BPF_STORAGES: u16 = 20;
const SK_DIAG_BPF_STORAGE: u16 = 1;
const SK_DIAG_BPF_STORAGE_MAP_ID: u16 = 2;
const SK_DIAG_BPF_STORAGE_MAP_VALUE: u16 = 3;
#[cfg(test)]
const INET_DIAG_NOCOOKIE: u32 = u32::MAX;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_sockid`.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// One socket as sock_diag reports it.
#[derive(Clone, Debug)]
pub struct DiagSocket {
    pub family: u8,
    pub protocol: u8,
    pub state: u8,
    /// `inet_diag_sockid` as the kernel gave it (addresses, ports, cookie),
    /// to name the socket back to the kernel.
    id: [u8; SOCKID_LEN],
    pub uid: u32,
    pub inode: u32,
    /// The identity stamped on the socket, if any.
    pub identity: Option<u32>,
}

impl DiagSocket {
    pub fn local(&self) -> SocketAddr {
        self.addr(4, 0)
    }

    pub fn remote(&self) -> SocketAddr {
        self.addr(20, 2)
    }

    fn addr(&self, at: usize, port_at: usize) -> SocketAddr {
        let port = u16::from_be_bytes([self.id[port_at], self.id[port_at + 1]]);
        let ip = if i32::from(self.family) == libc::AF_INET {
            IpAddr::from([
                self.id[at],
                self.id[at + 1],
                self.id[at + 2],
                self.id[at + 3],
            ])
        } else {
            let mut b = [0u8; 16];
            b.copy_from_slice(&self.id[at..at + 16]);
            IpAddr::from(b)
        };
        SocketAddr::new(ip, port)
    }
}

/// The `inet_diag_sockid` of (local, remote).
#[cfg(test)]
fn sockid(local: SocketAddr, remote: SocketAddr) -> [u8; SOCKID_LEN] {
    let mut id = [0u8; SOCKID_LEN];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    for (at, ip) in [(4, local.ip()), (20, remote.ip())] {
        match ip {
            IpAddr::V4(v4) => id[at..at + 4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => id[at..at + 16].copy_from_slice(&v6.octets()),
        }
    }
    id[40..44].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    id[44..48].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    id
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
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
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A request: header, `inet_diag_req_v2`, and (when `storage` is given) the
/// attribute asking for that map's value of each socket.
fn request(
    kind: u16,
    flags: u16,
    family: u8,
    protocol: u8,
    id: &[u8; SOCKID_LEN],
    storage: Option<BorrowedFd<'_>>,
) -> Vec<u8> {
    request_with(kind, flags, family, protocol, id, u32::MAX, None, storage)
}

/// A dump filter in the kernel: the socket's local port is `local` and its
/// remote port `remote` (`inet_diag_bc_run`: an op jumps `yes` bytes when
/// its test holds, `no` bytes otherwise; a jump past the end rejects).
fn ports_filter(local: u16, remote: u16) -> [u8; 16] {
    let op = |code: u8, yes: u8, no: u16| {
        let mut b = [0u8; 4];
        b[0] = code;
        b[1] = yes;
        b[2..4].copy_from_slice(&no.to_ne_bytes());
        b
    };
    let mut bc = [0u8; 16];
    // 16 bytes left: match → next test (8 on), else → 20 (past the end).
    bc[0..4].copy_from_slice(&op(INET_DIAG_BC_S_EQ, 8, 20));
    bc[4..8].copy_from_slice(&op(0, 0, local));
    // 8 bytes left: match → the end (accept), else → 12 (past the end).
    bc[8..12].copy_from_slice(&op(INET_DIAG_BC_D_EQ, 8, 12));
    bc[12..16].copy_from_slice(&op(0, 0, remote));
    bc
}

#[expect(
    clippy::too_many_arguments,
    reason = "the fields of one netlink request, each used once"
)]
fn request_with(
    kind: u16,
    flags: u16,
    family: u8,
    protocol: u8,
    id: &[u8; SOCKID_LEN],
    states: u32,
    filter: Option<&[u8]>,
    storage: Option<BorrowedFd<'_>>,
) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDR + REQ_LEN];
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let r = NLMSG_HDR;
    msg[r] = family;
    msg[r + 1] = protocol;
    msg[r + 4..r + 8].copy_from_slice(&states.to_ne_bytes());
    msg[r + 8..r + 8 + SOCKID_LEN].copy_from_slice(id);
    if let Some(bc) = filter {
        let len = (4 + bc.len()) as u16;
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        msg.extend_from_slice(bc);
    }
    if let Some(map) = storage {
        // nested { MAP_FD: u32 }
        let inner_len: u16 = 4 + 4;
        let outer_len: u16 = 4 + inner_len;
        msg.extend_from_slice(&outer_len.to_ne_bytes());
        msg.extend_from_slice(&(INET_DIAG_REQ_SK_BPF_STORAGES | NLA_F_NESTED).to_ne_bytes());
        msg.extend_from_slice(&inner_len.to_ne_bytes());
        msg.extend_from_slice(&SK_DIAG_BPF_STORAGE_REQ_MAP_FD.to_ne_bytes());
        msg.extend_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
    }
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

/// Send `msg` and collect the replies until DONE (dumps), an error, or one
/// reply (exact requests).
fn exchange(msg: &[u8], multi: bool, map_id: Option<u32>) -> io::Result<Vec<DiagSocket>> {
    let sock = open()?;
    // SAFETY: sending a buffer we own on our socket.
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + NLMSG_HDR <= n {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if len < NLMSG_HDR || at + len > n {
                return Err(io::Error::other("truncated sock_diag reply"));
            }
            let body = &buf[at + NLMSG_HDR..at + len];
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = body
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(-libc::EIO);
                    return if errno == 0 {
                        Ok(out)
                    } else {
                        Err(io::Error::from_raw_os_error(-errno))
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(s) = parse(body, map_id) {
                        out.push(s);
                    }
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
        if !multi {
            return Ok(out);
        }
    }
}

fn parse(body: &[u8], map_id: Option<u32>) -> Option<DiagSocket> {
    if body.len() < MSG_LEN {
        return None;
    }
    let mut id = [0u8; SOCKID_LEN];
    id.copy_from_slice(&body[4..4 + SOCKID_LEN]);
    let word = |at: usize| u32::from_ne_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let mut s = DiagSocket {
        family: body[0],
        protocol: 0,
        state: body[1],
        id,
        uid: word(4 + SOCKID_LEN + 12),
        inode: word(4 + SOCKID_LEN + 16),
        identity: None,
    };
    for (kind, payload) in attrs(&body[MSG_LEN..]) {
        if kind != INET_DIAG_SK_BPF_STORAGES {
            continue;
        }
        for (kind, storage) in attrs(payload) {
            if kind != SK_DIAG_BPF_STORAGE {
                continue;
            }
            let (mut this_map, mut value) = (None, None);
            for (kind, v) in attrs(storage) {
                match kind {
                    SK_DIAG_BPF_STORAGE_MAP_ID if v.len() >= 4 => {
                        this_map = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
                    }
                    SK_DIAG_BPF_STORAGE_MAP_VALUE if v.len() >= 4 => {
                        value = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
                    }
                    _ => {}
                }
            }
            if map_id.is_none() || this_map == map_id {
                s.identity = value.filter(|i| *i != 0);
            }
        }
    }
    Some(s)
}

/// Netlink attributes of a buffer: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((kind, payload))
    })
}

/// The socket whose own address is `local` and peer is `remote`, with its
/// identity stamp from the map `storage` (id `map_id`).
///
/// A dump, filtered in the kernel by the two ports: an exact request
/// (`SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP`) finds the socket at once
/// but the kernel leaves socket storages out of its answer — only dumps
/// carry them. The filter keeps the answer to the socket (or the few
/// sharing both ports), so the cost is the kernel's walk of its connection
/// table, not copies. An IPv4 connection may come from a dual-stack IPv6
/// socket (addresses v4-mapped), which only the IPv6 dump lists.
pub fn lookup(
    protocol: u8,
    local: SocketAddr,
    remote: SocketAddr,
    storage: BorrowedFd<'_>,
    map_id: u32,
) -> io::Result<Option<DiagSocket>> {
    let families: &[i32] = if local.is_ipv4() {
        &[libc::AF_INET, libc::AF_INET6]
    } else {
        &[libc::AF_INET6]
    };
    let same = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
    };
    let filter = ports_filter(local.port(), remote.port());
    for &family in families {
        let msg = request_with(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            family as u8,
            protocol,
            &[0; SOCKID_LEN],
            // Every state but LISTEN: listeners are never the peer, and
            // leaving them out spares the walk of the listening table.
            !(1 << TCP_LISTEN),
            Some(&filter),
            Some(storage),
        );
        let found = exchange(&msg, true, Some(map_id))?;
        if let Some(mut s) = found
            .into_iter()
            .find(|s| same(s.local(), local) && same(s.remote(), remote))
        {
            s.protocol = protocol;
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Every socket of (family, protocol) in this network namespace, with
/// identity stamps.
pub fn dump(
    family: i32,
    protocol: u8,
    storage: BorrowedFd<'_>,
    map_id: u32,
) -> io::Result<Vec<DiagSocket>> {
    let msg = request(
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        family as u8,
        protocol,
        &[0; SOCKID_LEN],
        Some(storage),
    );
    let mut all = exchange(&msg, true, Some(map_id))?;
    for s in &mut all {
        s.protocol = protocol;
    }
    Ok(all)
}

/// Abort a socket (`ECONNABORTED` to its owner; a TCP peer gets a reset).
pub fn destroy(s: &DiagSocket) -> io::Result<()> {
    let msg = request(
        SOCK_DESTROY,
        NLM_F_REQUEST | NLM_F_ACK,
        s.family,
        s.protocol,
        &s.id,
        None,
    );
    exchange(&msg, false, None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockid_layout() {
        let id = sockid(
            "127.0.0.1:80".parse().unwrap_or_else(|e| panic!("{e}")),
            "[::1]:443".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(&id[0..2], &80u16.to_be_bytes());
        assert_eq!(&id[2..4], &443u16.to_be_bytes());
        assert_eq!(&id[4..8], &[127, 0, 0, 1]);
        assert_eq!(id[35], 1);
        let s = DiagSocket {
            family: libc::AF_INET as u8,
            protocol: IPPROTO_TCP,
            state: 1,
            id,
            uid: 0,
            inode: 0,
            identity: None,
        };
        assert_eq!(s.local().to_string(), "127.0.0.1:80");
    }

    #[test]
    fn attributes_nest() {
        // STORAGES { STORAGE { MAP_ID 7, MAP_VALUE [5,0,0,0, 0,0,0,0] } }
        let mut inner = Vec::new();
        inner.extend_from_slice(&8u16.to_ne_bytes());
        inner.extend_from_slice(&SK_DIAG_BPF_STORAGE_MAP_ID.to_ne_bytes());
        inner.extend_from_slice(&7u32.to_ne_bytes());
        inner.extend_from_slice(&12u16.to_ne_bytes());
        inner.extend_from_slice(&SK_DIAG_BPF_STORAGE_MAP_VALUE.to_ne_bytes());
        inner.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
        let mut storage = Vec::new();
        storage.extend_from_slice(&((4 + inner.len()) as u16).to_ne_bytes());
        storage.extend_from_slice(&(SK_DIAG_BPF_STORAGE | NLA_F_NESTED).to_ne_bytes());
        storage.extend_from_slice(&inner);
        let mut body = vec![0u8; MSG_LEN];
        body[0] = libc::AF_INET as u8;
        body.extend_from_slice(&((4 + storage.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&(INET_DIAG_SK_BPF_STORAGES | NLA_F_NESTED).to_ne_bytes());
        body.extend_from_slice(&storage);
        assert_eq!(parse(&body, Some(7)).and_then(|s| s.identity), Some(5));
        assert_eq!(parse(&body, Some(8)).and_then(|s| s.identity), None);
    }
}
