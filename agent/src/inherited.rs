//! File descriptors an agent would inherit from whoever ran `palisade
//! exec`, and which of them it must not keep.
//!
//! A socket is judged by the cgroup hooks as its creator's: one opened by
//! the launcher (outside any identity) keeps sending wherever it is
//! connected, after enrolment and after `palisade revoke`. The same goes
//! for handles on the kernel's machinery made outside: io_uring rings
//! (their operations bypass seccomp), BPF objects and perf events, and
//! pidfds (signals and `pidfd_getfd` on another process). `palisade exec`
//! closes all of those above stdio, and refuses to run with stdio that is
//! a network socket (it would carry the agent's data unjudged); the
//! policy's `confinement.keep_inherited_sockets` keeps them.
//!
//! Whatever the policy, it also closes what reaches around the agent's
//! own mount namespace and network: directories and `O_PATH` descriptors
//! (paths resolved from them are the host's, where exec's read-only and
//! hidden paths do not apply), device nodes other than the terminal and
//! `/dev/null`-like ones (a TUN device is a network interface: packets
//! written to it pass no socket hook), and regular files under the paths
//! exec makes read-only or hides (reopened through `/proc/self/fd` they
//! are writable as the host's). Such stdio is refused.
//!
//! Unix sockets, pipes and other regular files stay: they reach no
//! network on their own and many programs depend on them (a terminal
//! multiplexer, a supervisor's notify socket, a log file), and the daemon's
//! own API is a Unix socket. A Unix socket to a cooperating process
//! outside can relay data or pass it a descriptor (`SCM_RIGHTS`); that
//! needs an accomplice outside the agent and is a residual (docs).

use std::{
    io,
    os::fd::RawFd,
    path::{Path, PathBuf},
};

/// What an inherited descriptor is, for the ones exec does not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A socket of this address family (not `AF_UNIX`).
    Socket(i32),
    /// An anonymous inode by its kernel name (`[io_uring]`, `bpf-map`…).
    Handle(String),
    /// A directory, or any `O_PATH` descriptor: a way into the host's
    /// mount namespace.
    HostPath(PathBuf),
    /// A device node other than the terminal and `/dev/null`-like ones.
    Device {
        path: PathBuf,
        major: u32,
        minor: u32,
    },
    /// A regular file under a path exec makes read-only or hides.
    Protected(PathBuf),
}

impl Kind {
    /// What the policy's `keep_inherited_sockets` keeps.
    fn kept_by_opt_out(&self) -> bool {
        matches!(self, Kind::Socket(_) | Kind::Handle(_))
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Socket(family) => write!(f, "a socket of address family {family}"),
            Kind::Handle(name) => write!(f, "a kernel handle ({name})"),
            Kind::HostPath(p) => write!(
                f,
                "a directory or path descriptor ({}) into the host's mounts",
                p.display()
            ),
            Kind::Device { path, major, minor } => {
                write!(f, "the device {} ({major}:{minor})", path.display())
            }
            Kind::Protected(p) => write!(
                f,
                "the file {}, read-only or hidden for agents",
                p.display()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InheritedError {
    #[error(
        "file descriptor {fd} (stdin, stdout or stderr) is {kind}, opened outside the agent's identity: it would carry the agent's data unjudged; run the agent with ordinary stdio, or set `confinement.keep_inherited_sockets` for this identity"
    )]
    NetworkStdio { fd: RawFd, kind: Kind },
    #[error(
        "file descriptor {fd} (stdin, stdout or stderr) is {kind}, opened outside the agent's confinement; run the agent with ordinary stdio"
    )]
    HostStdio { fd: RawFd, kind: Kind },
    #[error("listing /proc/self/fd: {0}")]
    List(#[source] io::Error),
}

/// Anonymous inodes that are handles on the kernel or another process.
fn is_kernel_handle(link: &str) -> Option<String> {
    let name = link.strip_prefix("anon_inode:").unwrap_or(link);
    let known = [
        "[io_uring]",
        "bpf-map",
        "bpf-prog",
        "bpf_link",
        "bpf_iter",
        "[perf_event]",
    ];
    if known.contains(&name) || name.contains("pidfd") {
        return Some(name.to_string());
    }
    None
}

/// Character devices an agent may inherit: the terminal (`/dev/tty`,
/// `/dev/console`, `/dev/ptmx`, virtual consoles and serial lines, the
/// pseudo-terminals) and `/dev/null`, `zero`, `full`, `random`, `urandom`.
fn harmless_device(major: u32, minor: u32) -> bool {
    match major {
        1 => matches!(minor, 3 | 5 | 7 | 8 | 9),
        4 => true,
        5 => minor <= 2,
        136..=143 => true,
        _ => false,
    }
}

fn link_of(fd: RawFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

fn classify(fd: RawFd, read_only: &[PathBuf]) -> Option<Kind> {
    // SAFETY: fcntl and fstat on an fd number (into a zeroed struct).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return None;
    }
    if flags & libc::O_PATH != 0 {
        return Some(Kind::HostPath(link_of(fd)));
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => return Some(Kind::HostPath(link_of(fd))),
        libc::S_IFCHR | libc::S_IFBLK => {
            let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            let block = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
            if block || !harmless_device(major, minor) {
                return Some(Kind::Device {
                    path: link_of(fd),
                    major,
                    minor,
                });
            }
            return None;
        }
        libc::S_IFREG => {
            let path = link_of(fd);
            return under_any(&path, read_only).then_some(Kind::Protected(path));
        }
        _ => {}
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
        let mut family: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int-sized out buffer with its length.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&mut family as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        // A socket whose family cannot be read is not trusted to be Unix.
        return match (r, family) {
            (0, libc::AF_UNIX) => None,
            (0, f) => Some(Kind::Socket(f)),
            _ => Some(Kind::Socket(-1)),
        };
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    is_kernel_handle(&link.to_string_lossy()).map(Kind::Handle)
}

/// Is `path` one of `roots` or below one?
fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    path.is_absolute() && roots.iter().any(|r| path.starts_with(r))
}

/// Close every inherited descriptor above stdio the agent may not keep
/// (module docs); refuse such stdio. `keep_sockets` (the policy's opt-out)
/// keeps sockets and kernel handles; `read_only` are the paths exec makes
/// read-only or hides. Returns what was closed.
pub fn close_unjudged(
    keep_sockets: bool,
    read_only: &[PathBuf],
) -> Result<Vec<(RawFd, Kind)>, InheritedError> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(InheritedError::List)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut closed = Vec::new();
    for fd in fds {
        let Some(kind) = classify(fd, read_only) else {
            continue;
        };
        if keep_sockets && kind.kept_by_opt_out() {
            continue;
        }
        if fd <= 2 {
            match kind {
                Kind::Socket(_) => return Err(InheritedError::NetworkStdio { fd, kind }),
                Kind::Handle(_) => continue,
                _ => return Err(InheritedError::HostStdio { fd, kind }),
            }
        }
        // SAFETY: closing an inherited descriptor nothing in this process
        // uses (exec follows).
        unsafe { libc::close(fd) };
        closed.push((fd, kind));
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    #[test]
    fn recognises_kernel_handles() {
        assert!(is_kernel_handle("anon_inode:[io_uring]").is_some());
        assert!(is_kernel_handle("anon_inode:bpf-map").is_some());
        assert!(is_kernel_handle("anon_inode:[pidfd]").is_some());
        assert!(is_kernel_handle("pidfd:[12345]").is_some());
        assert!(is_kernel_handle("anon_inode:[eventfd]").is_none());
        assert!(is_kernel_handle("/dev/null").is_none());
    }

    #[test]
    fn closes_an_inherited_inet_socket_and_keeps_unix() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        use std::os::fd::AsRawFd;
        let (tfd, ufd) = (tcp.as_raw_fd(), a.as_raw_fd());
        assert_eq!(classify(tfd, &[]), Some(Kind::Socket(libc::AF_INET)));
        assert_eq!(classify(ufd, &[]), None);
        // Closing is exercised end to end by the integration tests (here
        // it would close the test harness's own descriptors).
    }

    #[test]
    fn recognises_ways_around_the_mount_namespace() {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open("/").expect("open /");
        assert_eq!(
            classify(dir.as_raw_fd(), &[]),
            Some(Kind::HostPath("/".into()))
        );
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        assert_eq!(classify(null.as_raw_fd(), &[]), None);
        let tmp = std::env::temp_dir().join(format!("palisade-inherited-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("mkdir");
        let file = tmp.join("policy.yaml");
        std::fs::write(&file, "x").expect("write");
        let f = std::fs::File::open(&file).expect("open");
        assert_eq!(classify(f.as_raw_fd(), &[]), None, "an ordinary file stays");
        assert_eq!(
            classify(f.as_raw_fd(), std::slice::from_ref(&tmp)),
            Some(Kind::Protected(file.clone()))
        );
        let path_only = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&file)
            .expect("O_PATH");
        assert!(matches!(
            classify(path_only.as_raw_fd(), &[]),
            Some(Kind::HostPath(_))
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(harmless_device(136, 4) && harmless_device(1, 3) && harmless_device(5, 0));
        // /dev/net/tun, /dev/kvm, /dev/mem, /dev/kmsg
        assert!(!harmless_device(10, 200) && !harmless_device(10, 232));
        assert!(!harmless_device(1, 1) && !harmless_device(1, 11));
    }
}
