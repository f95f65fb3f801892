//! Attacks an enrolled agent would try to get around its guard, each
//! reduced to what the kernel sees, plus a packet capture for the far end.
//! Every action prints one JSON line like the rest of the probe.

use std::{
    io::{self, Write},
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use serde_json::json;

type Dispatch = fn(&[String]) -> String;

/// A packet socket under `AF_INET` (the libc constant is deprecated, which
/// is the point).
const SOCK_PACKET: i32 = 10;

fn errno_of(e: &io::Error) -> i64 {
    i64::from(e.raw_os_error().unwrap_or(-1))
}

fn outcome(step: &str, r: io::Result<()>) -> String {
    match r {
        Ok(()) => json!({"ok": true}).to_string(),
        Err(e) => json!({"ok": false, "step": step, "errno": errno_of(&e), "error": e.to_string()})
            .to_string(),
    }
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(last_error()) } else { Ok(r) }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Option<T> {
    args.get(i)?.parse().ok()
}

/// Run an attack (or `None` for an unknown action).
pub fn run(action: &str, args: &[String], dispatch: Dispatch) -> Option<String> {
    Some(match action {
        "as-user" => {
            let uid: u32 = arg(args, 0)?;
            // SAFETY: plain credential calls in a single-threaded program.
            let dropped = unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setgid(uid) == 0
                    && libc::setuid(uid) == 0
            };
            if !dropped {
                return Some(outcome("setuid", Err(last_error())));
            }
            dispatch(&args[1..])
        }
        "move-to" => {
            // Write ourselves into a cgroup.procs file, then go on.
            let procs = args.first()?;
            let moved = std::fs::write(procs, "0");
            if let Err(e) = moved {
                return Some(
                    json!({"ok": false, "step": "move", "errno": errno_of(&e), "error": e.to_string()})
                        .to_string(),
                );
            }
            dispatch(&args[1..])
        }
        "mkdir-move" => {
            let dir = std::path::Path::new(args.first()?);
            if let Err(e) = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(dir.join("cgroup.procs"), "0"))
            {
                return Some(
                    json!({"ok": false, "step": "move", "errno": errno_of(&e), "error": e.to_string()})
                        .to_string(),
                );
            }
            dispatch(&args[1..])
        }
        "sleep" => {
            std::thread::sleep(Duration::from_millis(arg(args, 0)?));
            dispatch(&args[1..])
        }
        "park-threads" => {
            // N idle threads, then on: every thread is a lineage entry the
            // daemon has to handle when the process's identity changes.
            let n: usize = arg(args, 0)?;
            for _ in 0..n {
                std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3600)));
            }
            dispatch(&args[1..])
        }
        "await" => {
            // Until the test creates the file (at most a minute), then on.
            let go = std::path::Path::new(args.first()?);
            let until = Instant::now() + Duration::from_secs(60);
            while !go.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            dispatch(&args[1..])
        }
        "run" => {
            // Become another program (the confinement comes along).
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new(args.first()?)
                .args(&args[1..])
                .exec();
            outcome("exec", Err(e))
        }
        "rthdr" => rthdr(args)?,
        "ipopt" => ipopt(args)?,
        "spkt" => spkt(args)?,
        "socket" => {
            let (family, ty, proto): (i32, i32, i32) =
                (arg(args, 0)?, arg(args, 1)?, arg(args, 2)?);
            // SAFETY: plain syscall; the fd is closed right away.
            let r = cvt(unsafe { libc::socket(family, ty, proto) })
                .map(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }));
            outcome("socket", r)
        }
        "x32-socket" => {
            // socket(AF_INET, SOCK_DGRAM, 0) through the x32 ABI.
            // SAFETY: a raw system call with integer arguments.
            let r = unsafe { libc::syscall(0x4000_0000 | libc::SYS_socket, 2, 2, 0) };
            if r >= 0 {
                // SAFETY: we own the descriptor.
                unsafe { libc::close(r as i32) };
            }
            outcome("x32", if r < 0 { Err(last_error()) } else { Ok(()) })
        }
        "ia32-socket" => {
            // socket(FAMILY, TYPE, PROTO) through the 32-bit entry (int 0x80,
            // i386 number 359), which syscall tracepoints do not see.
            let (family, ty, proto): (i32, i32, i32) =
                (arg(args, 0)?, arg(args, 1)?, arg(args, 2)?);
            let r = ia32_socket(family, ty, proto);
            if r >= 0 {
                // SAFETY: we own the descriptor.
                unsafe { libc::close(r) };
            }
            let res = if r < 0 {
                Err(io::Error::from_raw_os_error(-r))
            } else {
                Ok(())
            };
            outcome("ia32", res)
        }
        "io-uring" => {
            let mut params = [0u8; 120];
            // SAFETY: io_uring_setup(1, &params) with a zeroed params struct.
            let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
            if r >= 0 {
                // SAFETY: we own the descriptor.
                unsafe { libc::close(r as i32) };
            }
            outcome(
                "io_uring_setup",
                if r < 0 { Err(last_error()) } else { Ok(()) },
            )
        }
        "thread-leader-exits" => thread_leader_exits(args, dispatch)?,
        "exec-from-thread" => exec_from_thread(args)?,
        "confinement" => confinement(),
        "stream" => stream(args)?,
        "udp-stale" => udp_stale(args)?,
        "udp-cork" => udp_cork(args)?,
        "capture" => crate::capture::run(args)?,
        "sink" => crate::sink::run(args)?,
        _ => return None,
    })
}

/// `rthdr udp|tcp|cmsg DST PORT SEGMENT MARKER [WAITFILE]`: an IPv6 routing header
/// (segment routing, segments left 0) whose only segment is SEGMENT, set by
/// socket option (udp, tcp) or per message (cmsg); the packet's destination
/// becomes SEGMENT while the hooks judge DST.
fn rthdr(args: &[String]) -> Option<String> {
    let how = args.first()?.as_str();
    let dst: Ipv6Addr = arg(args, 1)?;
    let port: u16 = arg(args, 2)?;
    let segment: Ipv6Addr = arg(args, 3)?;
    let marker = args.get(4)?.as_bytes().to_vec();
    // struct ipv6_sr_hdr with one segment: 8 bytes + 16.
    let mut srh = vec![0u8; 24];
    srh[0] = 0; // nexthdr (filled in by the kernel)
    srh[1] = 2; // hdrlen: (24 / 8) - 1
    srh[2] = 4; // type 4: segment routing
    srh[3] = 0; // segments left: the packet goes straight to segments[0]
    srh[4] = 0; // first segment
    srh[8..24].copy_from_slice(&segment.octets());
    let to = SocketAddr::new(IpAddr::V6(dst), port);
    let ty = if how == "tcp" {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain syscall.
    let fd = match cvt(unsafe { libc::socket(libc::AF_INET6, ty | libc::SOCK_CLOEXEC, 0) }) {
        // SAFETY: a fresh descriptor we own.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => return Some(outcome("socket", Err(e))),
    };
    if how == "cmsg" {
        return Some(outcome(
            "sendmsg",
            sendmsg_with(
                &fd,
                &to,
                &marker,
                libc::IPPROTO_IPV6,
                57, /* IPV6_RTHDR */
                &srh,
            ),
        ));
    }
    // SAFETY: setsockopt with a buffer we own.
    let set = cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            57, // IPV6_RTHDR
            srh.as_ptr().cast(),
            srh.len() as u32,
        )
    });
    if let Err(e) = set {
        return Some(outcome("setsockopt", Err(e)));
    }
    wait_for_file(args.get(5));
    Some(outcome("send", send_on(fd, how, &to, &marker)))
}

/// With a WAITFILE argument: say the socket is prepared (`WAITFILE.ready`),
/// then wait for WAITFILE (the test enrols the process meanwhile).
fn wait_for_file(file: Option<&String>) {
    let Some(file) = file else { return };
    let _ = std::fs::write(format!("{file}.ready"), "");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(file).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ipopt udp|tcp|cmsg DST PORT HOP MARKER [WAITFILE]`: IPv4 loose source routing
/// through HOP, by `IP_OPTIONS` or per message (`IP_RETOPTS`).
fn ipopt(args: &[String]) -> Option<String> {
    let how = args.first()?.as_str();
    let dst: Ipv4Addr = arg(args, 1)?;
    let port: u16 = arg(args, 2)?;
    let hop: Ipv4Addr = arg(args, 3)?;
    let marker = args.get(4)?.as_bytes().to_vec();
    // LSRR: type 0x83, length 7, pointer 4, one address; NOP to pad to 8.
    let mut opt = vec![0x83u8, 7, 4];
    opt.extend_from_slice(&hop.octets());
    opt.push(1);
    let to = SocketAddr::new(IpAddr::V4(dst), port);
    let ty = if how == "tcp" {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain syscall.
    let fd = match cvt(unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0) }) {
        // SAFETY: a fresh descriptor we own.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => return Some(outcome("socket", Err(e))),
    };
    if how == "cmsg" {
        return Some(outcome(
            "sendmsg",
            sendmsg_with(&fd, &to, &marker, libc::IPPROTO_IP, libc::IP_RETOPTS, &opt),
        ));
    }
    // SAFETY: setsockopt with a buffer we own.
    let set = cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            opt.as_ptr().cast(),
            opt.len() as u32,
        )
    });
    if let Err(e) = set {
        return Some(outcome("setsockopt", Err(e)));
    }
    wait_for_file(args.get(5));
    Some(outcome("send", send_on(fd, how, &to, &marker)))
}

/// Send MARKER on a socket: a datagram, or a TCP connection (with the
/// marker as its first data).
fn send_on(fd: OwnedFd, how: &str, to: &SocketAddr, marker: &[u8]) -> io::Result<()> {
    if how == "tcp" {
        // Non-blocking, so a dropped SYN costs two seconds, not minutes.
        let stream = TcpStream::from(fd);
        stream.set_nonblocking(true)?;
        let (addr, len) = sockaddr(to);
        // SAFETY: connect with a sockaddr of the given length.
        let r = unsafe { libc::connect(stream.as_raw_fd(), (&raw const addr).cast(), len) };
        if r < 0 {
            let e = last_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
            let mut pfd = libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: poll on one descriptor we own.
            if unsafe { libc::poll(&mut pfd, 1, 2000) } == 0 {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
        }
        stream.set_nonblocking(false)?;
        return (&stream).write_all(marker);
    }
    let (addr, len) = sockaddr(to);
    // SAFETY: sendto with our buffer and address.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            marker.as_ptr().cast(),
            marker.len(),
            0,
            (&raw const addr).cast(),
            len,
        )
    };
    if n < 0 { Err(last_error()) } else { Ok(()) }
}

fn sockaddr(to: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough for any sockaddr.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// sendmsg(2) of one datagram with one control message.
fn sendmsg_with(
    fd: &OwnedFd,
    to: &SocketAddr,
    data: &[u8],
    level: i32,
    kind: i32,
    payload: &[u8],
) -> io::Result<()> {
    let (mut addr, len) = sockaddr(to);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(payload.len() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the first header lies inside `control`, sized by CMSG_SPACE.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(payload.len() as u32) as usize;
        std::ptr::copy_nonoverlapping(payload.as_ptr(), libc::CMSG_DATA(c), payload.len());
    }
    // SAFETY: a well-formed msghdr.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
    if n < 0 { Err(last_error()) } else { Ok(()) }
}

/// `spkt IFACE DST MARKER`: a hand-built Ethernet broadcast frame carrying
/// an IPv4/UDP datagram to DST, sent through `socket(AF_INET, SOCK_PACKET)`
/// — a packet socket under an inet family.
fn spkt(args: &[String]) -> Option<String> {
    let iface = args.first()?;
    let dst: Ipv4Addr = arg(args, 1)?;
    let marker = args.get(2)?.as_bytes();
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain syscall.
    let fd = match cvt(unsafe { libc::socket(libc::AF_INET, SOCK_PACKET, proto) }) {
        // SAFETY: a fresh descriptor we own.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => return Some(outcome("socket", Err(e))),
    };
    let udp_len = 8 + marker.len();
    let mut frame = vec![0xffu8; 6]; // broadcast
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45u8, 0];
    ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&[10, 255, 255, 254]);
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&9u16.to_be_bytes());
    frame.extend_from_slice(&9u16.to_be_bytes());
    frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(marker);
    // struct sockaddr_pkt { u16 family; u8 device[14]; u16 protocol; }
    let mut sa = [0u8; 18];
    sa[0..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
    let name = iface.as_bytes();
    sa[2..2 + name.len().min(13)].copy_from_slice(&name[..name.len().min(13)]);
    sa[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    // SAFETY: sendto with our buffers.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            sa.as_ptr().cast(),
            sa.len() as u32,
        )
    };
    Some(outcome(
        "sendto",
        if n < 0 { Err(last_error()) } else { Ok(()) },
    ))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `thread-leader-exits ACTION…`: a second thread runs ACTION after the
/// thread group's leader has exited (its task id is gone).
fn thread_leader_exits(args: &[String], dispatch: Dispatch) -> Option<String> {
    let rest: Vec<String> = args.to_vec();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let line = dispatch(&rest);
        println!("{line}");
        let _ = io::stdout().flush();
        // SAFETY: end the whole process from this thread.
        unsafe { libc::_exit(0) };
    });
    // SAFETY: the leader thread exits alone (SYS_exit, not exit_group);
    // the call does not return.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    Some(outcome("exit", Err(last_error())))
}

/// `exec-from-thread ACTION…`: a non-leader thread execs the probe with
/// ACTION (the kernel hands it the leader's task id).
fn exec_from_thread(args: &[String]) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let rest: Vec<String> = args.to_vec();
    let t = std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let e = std::process::Command::new(exe).args(&rest).exec();
        format!("exec failed: {e}")
    });
    Some(outcome(
        "exec",
        Err(io::Error::other(t.join().unwrap_or_default())),
    ))
}

/// What the process was left with: bounding set, no_new_privs, cgroup as
/// it sees it, whether bpffs is visible, whether it can write cgroupfs.
fn confinement() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let cap_bnd = u64::from_str_radix(&field("CapBnd:"), 16).unwrap_or(0);
    let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(0);
    let mut bpffs = false;
    // SAFETY: statfs into a zeroed struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c"/sys/fs/bpf".as_ptr(), &mut st) == 0 {
            bpffs = st.f_type as i64 == 0xcafe_4a11;
        }
    }
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    json!({
        "ok": true,
        "cap_bnd": cap_bnd,
        "cap_eff": cap_eff,
        "no_new_privs": field("NoNewPrivs:"),
        "cgroup": cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_default(),
        "bpffs_visible": bpffs,
        "operator_token_in_env": std::env::var_os("PALISADE_OPERATOR_TOKEN").is_some(),
        "uid": unsafe { libc::getuid() },
    })
    .to_string()
}

/// `stream ADDR TCPPORT UDPPORT MILLIS`: one TCP connection and one
/// connected UDP socket, each sending 64 bytes every 10 ms for MILLIS;
/// counts what each managed and the first error of each.
fn stream(args: &[String]) -> Option<String> {
    let ip: IpAddr = arg(args, 0)?;
    let tcp_port: u16 = arg(args, 1)?;
    let udp_port: u16 = arg(args, 2)?;
    let millis: u64 = arg(args, 3)?;
    let tcp = TcpStream::connect_timeout(&SocketAddr::new(ip, tcp_port), Duration::from_secs(3));
    let mut tcp = match tcp.and_then(|s| s.set_nonblocking(true).map(|()| s)) {
        Ok(s) => s,
        Err(e) => return Some(outcome("tcp-connect", Err(e))),
    };
    let udp = UdpSocket::bind(if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
        .and_then(|u| u.connect(SocketAddr::new(ip, udp_port)).map(|()| u));
    let udp = match udp {
        Ok(u) => u,
        Err(e) => return Some(outcome("udp-connect", Err(e))),
    };
    let started = Instant::now();
    let (mut tcp_sent, mut udp_sent) = (0u64, 0u64);
    let (mut tcp_err, mut udp_err) = (None::<i64>, None::<i64>);
    let chunk = [b'x'; 64];
    while started.elapsed() < Duration::from_millis(millis) {
        if tcp_err.is_none() {
            match tcp.write(&chunk) {
                Ok(n) => tcp_sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => tcp_err = Some(errno_of(&e)),
            }
        }
        if udp_err.is_none() {
            match udp.send(&chunk) {
                Ok(_) => udp_sent += 1,
                Err(e) => udp_err = Some(errno_of(&e)),
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(
        json!({"ok": true, "tcp_bytes": tcp_sent, "udp_datagrams": udp_sent,
               "tcp_errno": tcp_err, "udp_errno": udp_err})
        .to_string(),
    )
}

/// `udp-stale ADDR PORT DECOY DECOY_PORT MILLIS`: a UDP socket connected
/// to ADDR:PORT sends a chunk every 10 ms for MILLIS; every 50 ms it also
/// "connects" to the allowed DECOY with an address whose family field says
/// AF_INET6: the connect hook sees an allowed IPv4 destination, the kernel
/// then refuses the connect (EAFNOSUPPORT) and the socket stays connected
/// to ADDR — an attempt to make the guard believe the socket now talks to
/// DECOY. It keeps sending after errors (a later refresh might open the
/// way again); `udp_errno` is the first error.
/// `udp-cork IP PORT CONNECT_PORT GOFILE`: a datagram to IP:PORT begun
/// under `UDP_CORK` (judged by the sendmsg hook now), finished and sent
/// only once GOFILE exists (its permission may have ended meanwhile). With
/// CONNECT_PORT not 0 the socket is first connected to IP:CONNECT_PORT,
/// and the datagram goes elsewhere with `sendto`.
fn udp_cork(args: &[String]) -> Option<String> {
    let ip: Ipv4Addr = arg(args, 0)?;
    let port: u16 = arg(args, 1)?;
    let connect_port: u16 = arg(args, 2)?;
    let go = std::path::Path::new(args.get(3)?);
    let udp = match UdpSocket::bind("0.0.0.0:0") {
        Ok(u) => u,
        Err(e) => return Some(outcome("udp-bind", Err(e))),
    };
    if connect_port != 0
        && let Err(e) = udp.connect(SocketAddr::new(IpAddr::V4(ip), connect_port))
    {
        return Some(outcome("udp-connect", Err(e)));
    }
    let cork = |on: libc::c_int| {
        // SAFETY: setsockopt on our socket with an int.
        cvt(unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::IPPROTO_UDP,
                libc::UDP_CORK,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
    };
    if let Err(e) = cork(1) {
        return Some(outcome("cork", Err(e)));
    }
    let to = SocketAddr::new(IpAddr::V4(ip), port);
    if let Err(e) = udp.send_to(b"corked-head-", to) {
        return Some(outcome("sendto", Err(e)));
    }
    let until = Instant::now() + Duration::from_secs(60);
    while !go.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    // More of the same datagram (the kernel appends it to the pending
    // one without judging anything), then out it goes.
    let more = udp.send_to(b"appended-after-the-end", to).map(|_| ());
    let flushed = cork(0).map(|_| ());
    Some(
        json!({
            "ok": true,
            "more_errno": more.err().map(|e| errno_of(&e)),
            "uncork_errno": flushed.err().map(|e| errno_of(&e)),
        })
        .to_string(),
    )
}

fn udp_stale(args: &[String]) -> Option<String> {
    let ip: Ipv4Addr = arg(args, 0)?;
    let port: u16 = arg(args, 1)?;
    let decoy: Ipv4Addr = arg(args, 2)?;
    let decoy_port: u16 = arg(args, 3)?;
    let millis: u64 = arg(args, 4)?;
    let udp = UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect(SocketAddr::new(IpAddr::V4(ip), port)).map(|()| u));
    let udp = match udp {
        Ok(u) => u,
        Err(e) => return Some(outcome("udp-connect", Err(e))),
    };
    // SAFETY: a zeroed sockaddr_in is valid; fields set below.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin_port = decoy_port.to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(decoy.octets());
    let started = Instant::now();
    let (mut sent, mut refreshes, mut err) = (0u64, 0u64, None::<i64>);
    let chunk = [b'u'; 64];
    let mut i = 0u64;
    while started.elapsed() < Duration::from_millis(millis) {
        if i.is_multiple_of(5) {
            // SAFETY: connect on our socket with a sockaddr_in-sized buffer.
            let rc = unsafe {
                libc::connect(
                    udp.as_raw_fd(),
                    std::ptr::addr_of!(sa).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                refreshes += 1;
            }
        }
        match udp.send(&chunk) {
            Ok(_) => sent += 1,
            Err(e) => {
                err.get_or_insert(errno_of(&e));
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(
        json!({"ok": true, "udp_datagrams": sent, "udp_errno": err, "refused_connects": refreshes})
            .to_string(),
    )
}

/// `socket(2)` through the i386 entry point; a negative errno on failure.
#[cfg(target_arch = "x86_64")]
fn ia32_socket(family: i32, ty: i32, proto: i32) -> i32 {
    let ret: i64;
    // SAFETY: int 0x80 with integer arguments only; rbx (reserved by LLVM)
    // is swapped in and back out around the call.
    unsafe {
        std::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) i64::from(family) => _,
            inlateout("rax") 359i64 => ret,
            in("rcx") i64::from(ty),
            in("rdx") i64::from(proto),
        );
    }
    ret as i32
}

#[cfg(not(target_arch = "x86_64"))]
fn ia32_socket(_: i32, _: i32, _: i32) -> i32 {
    -libc::ENOSYS
}
