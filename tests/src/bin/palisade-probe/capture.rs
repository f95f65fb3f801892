//! `capture IFACE MILLIS DSTS MARKER…`: the far end of an attack. Counts,
//! per marker, the frames arriving on IFACE (an AF_PACKET socket, so
//! before the IP stack decides anything) whose IP destination is one of
//! DSTS (comma-separated) and whose bytes contain the marker — or, for a
//! marker `port:N`, whose TCP or UDP destination port is N (a SYN carries
//! no data to mark). Prints
//! `{"ready":true}` once listening, then the counts when MILLIS are over.

use std::{
    collections::BTreeMap,
    io::Write,
    net::IpAddr,
    time::{Duration, Instant},
};

use serde_json::json;

pub fn run(args: &[String]) -> Option<String> {
    let iface = args.first()?;
    let millis: u64 = args.get(1)?.parse().ok()?;
    let dsts: Vec<IpAddr> = args
        .get(2)?
        .split(',')
        .filter_map(|a| a.parse().ok())
        .collect();
    let markers: Vec<&String> = args[3..].iter().collect();
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain syscalls on a socket we own; buffers are ours.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Some(
            json!({"ok": false, "error": std::io::Error::last_os_error().to_string()}).to_string(),
        );
    }
    let name = std::ffi::CString::new(iface.as_str()).ok()?;
    // SAFETY: plain call with a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: an all-zero sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: bind and setsockopt with correctly sized values.
    unsafe {
        if libc::bind(
            fd,
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Some(
                json!({"ok": false, "error": std::io::Error::last_os_error().to_string()})
                    .to_string(),
            );
        }
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        );
    }
    println!("{}", json!({"ready": true}));
    let _ = std::io::stdout().flush();
    let mut counts: BTreeMap<String, u64> = markers.iter().map(|m| ((*m).clone(), 0)).collect();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_millis(millis);
    while Instant::now() < deadline {
        // SAFETY: receive into our buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 14 {
            continue;
        }
        let frame = &buf[..n as usize];
        let dst = match u16::from_be_bytes([frame[12], frame[13]]) {
            0x0800 if frame.len() >= 34 => {
                IpAddr::from([frame[30], frame[31], frame[32], frame[33]])
            }
            0x86dd if frame.len() >= 54 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&frame[38..54]);
                IpAddr::from(b)
            }
            _ => continue,
        };
        if !dsts.contains(&dst) {
            continue;
        }
        let port = l4_dst_port(frame);
        for m in &markers {
            let hit = match m.strip_prefix("port:") {
                Some(p) => p.parse::<u16>().ok() == port,
                None => frame.windows(m.len()).any(|w| w == m.as_bytes()),
            };
            if hit {
                *counts.entry((*m).clone()).or_default() += 1;
            }
        }
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    Some(json!({"ok": true, "counts": counts}).to_string())
}

/// The TCP/UDP destination port of an Ethernet frame, past IPv4 options
/// and IPv6 hop-by-hop, routing and destination headers.
fn l4_dst_port(f: &[u8]) -> Option<u16> {
    let (mut next, mut at) = match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => (*f.get(23)?, 14 + usize::from(f.get(14)? & 0xf) * 4),
        0x86dd => (*f.get(20)?, 54),
        _ => return None,
    };
    for _ in 0..8 {
        match next {
            6 | 17 => {
                return f
                    .get(at + 2..at + 4)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]));
            }
            0 | 43 | 60 => {
                next = *f.get(at)?;
                at += (usize::from(*f.get(at + 1)?) + 1) * 8;
            }
            _ => return None,
        }
    }
    None
}
