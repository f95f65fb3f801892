//! What an agent does, reduced to one socket operation: the integration
//! tests run it enrolled (through `palisade exec`) and read the outcome.
//! Prints one JSON line: `{"ok":true}` or `{"ok":false,"errno":1,...}`.

#[path = "palisade-probe/capture.rs"]
mod capture;
#[path = "palisade-probe/dns.rs"]
mod dns;
#[path = "palisade-probe/escape.rs"]
mod escape;
#[path = "palisade-probe/outside.rs"]
mod outside;
#[path = "palisade-probe/sink.rs"]
mod sink;
#[path = "palisade-probe/tamper.rs"]
mod tamper;

use std::{
    io,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

fn report(result: io::Result<()>) -> String {
    match result {
        Ok(()) => r#"{"ok":true}"#.to_string(),
        Err(e) => format!(
            r#"{{"ok":false,"errno":{},"error":{}}}"#,
            e.raw_os_error().unwrap_or(-1),
            serde_json::to_string(&e.to_string()).unwrap_or_default()
        ),
    }
}

fn addr(args: &[String]) -> SocketAddr {
    let ip: IpAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| usage());
    SocketAddr::new(ip, port)
}

fn tcp(to: SocketAddr) -> io::Result<()> {
    TcpStream::connect_timeout(&to, Duration::from_secs(3)).map(drop)
}

fn udp_socket(to: SocketAddr) -> io::Result<UdpSocket> {
    match to {
        SocketAddr::V4(_) => UdpSocket::bind("0.0.0.0:0"),
        SocketAddr::V6(_) => UdpSocket::bind("[::]:0"),
    }
}

fn udp_sendto(to: SocketAddr) -> io::Result<()> {
    udp_socket(to)?.send_to(b"palisade-probe", to).map(drop)
}

fn udp_connect(to: SocketAddr) -> io::Result<()> {
    let s = udp_socket(to)?;
    s.connect(to)?;
    s.send(b"palisade-probe").map(drop)
}

fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<()> {
    // SAFETY: plain syscall; the fd is closed right away.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: palisade-probe tcp|udp|udp-connect|fork-tcp|tcp-wait-ok ADDR PORT | raw | icmp | packet | pid | tcp-loop ADDR PORT COUNT | tcp-until ADDR PORT STOPFILE | tcp-for ADDR PORT MILLIS | udp-flood ADDR PORT MILLIS | tcp-ports ADDR PORT COUNT\n       palisade-probe dns udp|udp-connect|tcp SERVER NAME [TYPE] | dns raw-udp|raw-tcp SERVER HEX|big
       palisade-probe as-user UID ACTION… | move-to CGROUP_PROCS ACTION… | mkdir-move DIR ACTION… | run PROGRAM ARGS… | sleep MS ACTION… | park-threads N ACTION…
       palisade-probe rthdr udp|tcp|cmsg DST6 PORT SEGMENT MARKER | ipopt udp|tcp|cmsg DST4 PORT HOP MARKER
       palisade-probe spkt IFACE DST4 MARKER | socket FAMILY TYPE PROTO | x32-socket | io-uring
       palisade-probe thread-leader-exits ACTION… | exec-from-thread ACTION… | confinement
       palisade-probe idle MS | procmem-exec PID ARGV… | kill PID SIG | abstract-connect NAME | write-fd FD TEXT | write-fd-wait FD TEXT1 FILE TEXT2 | hold-sockets COUNT MILLIS [ADDR] | hold-api SOCKET COUNT MILLIS | connect-fd FD ADDR TEXT | write-fd-hex FD HEX | openat-write DIRFD PATH TEXT | tiocsti TEXT | shm-write ID TEXT | write-file PATH TEXT | read-file PATH | read-only PATH…
       palisade-probe stream ADDR TCPPORT UDPPORT MILLIS | capture IFACE MILLIS DSTS MARKER… | sink ADDR TCPPORTS UDPPORTS MILLIS
       palisade-probe detach-links PIN_DIR PROGRAM…"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("{}", dispatch(&args));
}

fn dispatch(args: &[String]) -> String {
    let Some((action, rest)) = args.split_first() else {
        usage()
    };
    match action.as_str() {
        "tcp" => report(tcp(addr(rest))),
        "udp" => report(udp_sendto(addr(rest))),
        "udp-connect" => report(udp_connect(addr(rest))),
        "raw" => report(socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)),
        "icmp" => report(socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP)),
        "packet" => report(socket(libc::AF_PACKET, libc::SOCK_RAW, 0)),
        "pid" => format!(r#"{{"ok":true,"pid":{}}}"#, std::process::id()),
        "fork-tcp" => {
            let to = addr(rest);
            // SAFETY: single-threaded program; the child only connects and exits.
            match unsafe { libc::fork() } {
                0 => {
                    let code = if tcp(to).is_ok() { 0 } else { 1 };
                    // SAFETY: leave the child without running parent cleanup.
                    unsafe { libc::_exit(code) }
                }
                -1 => report(Err(io::Error::last_os_error())),
                child => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                    format!(r#"{{"ok":{ok},"child":{child}}}"#)
                }
            }
        }
        "tcp-loop" => {
            // Connect COUNT times; report how many failed (for reload tests).
            let to = addr(rest);
            let count: u64 = rest
                .get(2)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| usage());
            let mut failures = 0u64;
            let mut first_error = String::new();
            for _ in 0..count {
                if let Err(e) = tcp(to) {
                    failures += 1;
                    if first_error.is_empty() {
                        first_error = e.to_string();
                    }
                }
            }
            format!(
                r#"{{"ok":{},"count":{count},"failures":{failures},"first_error":{}}}"#,
                failures == 0,
                serde_json::to_string(&first_error).unwrap_or_default()
            )
        }
        "tcp-until" => {
            // Connect in a loop until STOPFILE exists; report the failures.
            let to = addr(rest);
            let stop = std::path::PathBuf::from(rest.get(2).unwrap_or_else(|| usage()));
            let (mut count, mut failures) = (0u64, 0u64);
            let mut first_error = String::new();
            while !stop.exists() {
                count += 1;
                if let Err(e) = tcp(to) {
                    failures += 1;
                    if first_error.is_empty() {
                        first_error = e.to_string();
                    }
                }
            }
            format!(
                r#"{{"ok":{},"count":{count},"failures":{failures},"first_error":{}}}"#,
                failures == 0,
                serde_json::to_string(&first_error).unwrap_or_default()
            )
        }
        "tcp-wait-ok" => {
            // Connect until it succeeds (at most ~30 s); print when, in ns
            // since the epoch, so a benchmark can time a policy change. The
            // first refusal is announced on a line of its own, so the
            // benchmark changes the policy only once this is polling.
            let to = addr(rest);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut announced = false;
            loop {
                let attempt = tcp(to);
                if attempt.is_err() && !announced {
                    use std::io::Write as _;
                    let mut out = io::stdout().lock();
                    let _ = writeln!(out, r#"{{"waiting":true}}"#);
                    let _ = out.flush();
                    announced = true;
                }
                if attempt.is_ok() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    break format!(r#"{{"ok":true,"at_ns":{now}}}"#);
                }
                if std::time::Instant::now() > deadline {
                    break r#"{"ok":false,"error":"timed out"}"#.to_string();
                }
                // Each refusal is an audit event: do not flood the trail.
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        "tcp-for" => {
            // Connect again and again for MILLIS; count outcomes by errno
            // (for tests that restart the daemon meanwhile).
            let to = addr(rest);
            let millis: u64 = rest
                .get(2)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| usage());
            let deadline = std::time::Instant::now() + Duration::from_millis(millis);
            let (mut count, mut ok, mut eperm, mut other) = (0u64, 0u64, 0u64, 0u64);
            let mut other_error = String::new();
            while std::time::Instant::now() < deadline {
                count += 1;
                match tcp(to) {
                    Ok(()) => ok += 1,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
                    Err(e) => {
                        other += 1;
                        if other_error.is_empty() {
                            other_error = e.to_string();
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            format!(
                r#"{{"ok":true,"count":{count},"connected":{ok},"eperm":{eperm},"other":{other},"other_error":{}}}"#,
                serde_json::to_string(&other_error).unwrap_or_default()
            )
        }
        "udp-flood" => {
            // sendto() again and again for MILLIS from one socket; count
            // outcomes by errno (the trail-flooding attack).
            let to = addr(rest);
            let millis: u64 = rest
                .get(2)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| usage());
            let deadline = std::time::Instant::now() + Duration::from_millis(millis);
            let sock = match udp_socket(to) {
                Ok(s) => s,
                Err(e) => return report(Err(e)),
            };
            let (mut count, mut sent, mut eperm, mut other) = (0u64, 0u64, 0u64, 0u64);
            while std::time::Instant::now() < deadline {
                for _ in 0..64 {
                    count += 1;
                    match sock.send_to(b"palisade-probe", to) {
                        Ok(_) => sent += 1,
                        Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
                        Err(_) => other += 1,
                    }
                }
            }
            format!(
                r#"{{"ok":true,"count":{count},"sent":{sent},"eperm":{eperm},"other":{other},"uid":{}}}"#,
                // SAFETY: plain getter.
                unsafe { libc::getuid() }
            )
        }
        "tcp-ports" => {
            // Connect to COUNT consecutive ports from PORT (many kinds of
            // denial at once); count outcomes.
            let to = addr(rest);
            let count: u16 = rest
                .get(2)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| usage());
            let (mut eperm, mut other) = (0u64, 0u64);
            for i in 0..count {
                let mut t = to;
                t.set_port(to.port().wrapping_add(i));
                match tcp(t) {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
                    _ => other += 1,
                }
            }
            format!(r#"{{"ok":true,"count":{count},"eperm":{eperm},"other":{other}}}"#)
        }
        "dns" => dns::run(rest).unwrap_or_else(|| usage()),
        "detach-links" => tamper::detach_links(rest).unwrap_or_else(|| usage()),
        other => outside::run(other, rest)
            .or_else(|| escape::run(other, rest, dispatch))
            .unwrap_or_else(|| usage()),
    }
}
