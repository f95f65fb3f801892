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
    /// A regular file under a path exec makes read-only or hides, or on
    /// one of the kernel's own filesystems (`/proc`, `/sys`, cgroupfs…).
    Protected(PathBuf),
    /// Any other handle on the kernel's machinery (fanotify, userfaultfd,
    /// a namespace…): what it can do is not judged here, so it goes.
    OtherHandle(String),
    /// A connection to the daemon's API made by the launcher: the daemon
    /// knows its caller by who connected, so the agent would speak as the
    /// launcher (an operator, if it is root and not enrolled).
    DaemonConnection(PathBuf),
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
            Kind::OtherHandle(name) => write!(f, "a kernel handle ({name})"),
            Kind::DaemonConnection(p) => write!(
                f,
                "a connection to the daemon's API ({}) made by the launcher",
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

/// What a descriptor's link names when it is a handle on the kernel
/// rather than a file: the handles `keep_inherited_sockets` may keep
/// (io_uring rings, BPF objects, perf events, pidfds), the harmless ones
/// (`None`: eventfd, epoll, signalfd, timerfd, inotify), and any other
/// anonymous inode or namespace (fanotify hands out descriptors on the
/// host's mounts, userfaultfd steers another process's memory…).
fn kernel_handle(link: &str) -> Option<Kind> {
    let anon = link.strip_prefix("anon_inode:");
    let name = anon.unwrap_or(link);
    let keepable = [
        "[io_uring]",
        "bpf-map",
        "bpf-prog",
        "bpf_link",
        "bpf_iter",
        "[perf_event]",
    ];
    if keepable.contains(&name) || name.contains("pidfd") {
        return Some(Kind::Handle(name.to_string()));
    }
    let harmless = [
        "[eventfd]",
        "[eventpoll]",
        "[signalfd]",
        "[timerfd]",
        "inotify",
    ];
    if harmless.contains(&name) {
        return None;
    }
    if anon.is_some() {
        return Some(Kind::OtherHandle(name.to_string()));
    }
    // `net:[4026531840]` and the like (nsfs); not `pipe:[…]`/`socket:[…]`.
    let (kind, rest) = link.split_once(":[")?;
    let namespace = !matches!(kind, "pipe" | "socket")
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && rest.ends_with(']');
    namespace.then(|| Kind::OtherHandle(link.to_string()))
}

/// Filesystems whose files are the kernel's controls or another
/// process's insides (`/proc/PID/mem`, cgroup.procs, bpffs…).
fn on_kernel_fs(fd: RawFd) -> bool {
    const KERNEL_FS: [i64; 13] = [
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0xcafe_4a11, // bpf
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0x6265_6570, // configfs
        0xde5e_81e4, // efivarfs
        0x6165_676c, // pstore
        0x6e73_6673, // nsfs
        0x4249_4e4d, // binfmt_misc
    ];
    // SAFETY: fstatfs on an fd number into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return true; // not known to be harmless
    }
    KERNEL_FS.contains(&(st.f_type as i64))
}

/// Which inherited regular files exec closes: those under `read_only`
/// (the paths it makes read-only or hides), and with `all` (a read-only
/// root) every one: reopened through `/proc/self/fd` they would be
/// writable as the host has them, whatever path, bind mount or hard link
/// the launcher opened them by. (A read-only root's stdio may be a file
/// the launcher opened for writing, its explicit grant, but not one opened
/// only for reading.)
#[derive(Debug, Default)]
pub struct FileRule {
    pub read_only: Vec<PathBuf>,
    pub all: bool,
    /// The daemon's API socket: connections to it are closed.
    pub api_socket: Option<PathBuf>,
}

/// The path a connected Unix socket's peer is bound to, if any.
fn unix_peer(fd: RawFd) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: getpeername into a zeroed sockaddr_un with its length.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let r =
        unsafe { libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) };
    if r != 0 {
        return None;
    }
    let path: Vec<u8> = addr
        .sun_path
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    (!path.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&path)))
}

/// Are `a` and `b` the same socket file (or, gone, the same path)?
fn same_socket(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        _ => a == b,
    }
}

impl FileRule {
    fn closes(&self, path: &Path) -> bool {
        self.all || under_any(path, &self.read_only)
    }
}

/// Was `fd` opened for writing?
fn writable_fd(fd: RawFd) -> bool {
    // SAFETY: fcntl on an fd number.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE != libc::O_RDONLY
}

/// Character devices an agent may inherit: the terminal (`/dev/tty`,
/// `/dev/console`, virtual consoles and serial lines, the pseudo-terminals'
/// slave side) and `/dev/null`, `zero`, `full`, `random`, `urandom`. Not
/// a pty's master (`/dev/ptmx`, 5:2): what is written there is typed into
/// the shell on the other side, which runs it outside the agent.
fn harmless_device(major: u32, minor: u32) -> bool {
    match major {
        1 => matches!(minor, 3 | 5 | 7 | 8 | 9),
        4 => true,
        5 => minor <= 1,
        136..=143 => true,
        _ => false,
    }
}

fn link_of(fd: RawFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

fn classify(fd: RawFd, files: &FileRule) -> Option<Kind> {
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
    let file_type = st.st_mode & libc::S_IFMT;
    if file_type == libc::S_IFSOCK {
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
            (0, libc::AF_UNIX) => {
                let peer = unix_peer(fd)?;
                let daemon = files.api_socket.as_deref()?;
                same_socket(&peer, daemon).then_some(Kind::DaemonConnection(peer))
            }
            (0, f) => Some(Kind::Socket(f)),
            _ => Some(Kind::Socket(-1)),
        };
    }
    let path = link_of(fd);
    // Handles first: some (pidfs, nsfs) look like regular files.
    let link = path.to_string_lossy();
    if !link.starts_with('/') {
        return kernel_handle(&link);
    }
    match file_type {
        libc::S_IFDIR => Some(Kind::HostPath(path)),
        libc::S_IFCHR | libc::S_IFBLK => {
            let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            let block = file_type == libc::S_IFBLK;
            (block || !harmless_device(major, minor)).then_some(Kind::Device { path, major, minor })
        }
        libc::S_IFREG if on_kernel_fs(fd) => Some(Kind::Protected(path)),
        libc::S_IFREG if files.all && fd <= 2 && writable_fd(fd) => None,
        libc::S_IFREG if files.closes(&path) => Some(Kind::Protected(path)),
        _ => None,
    }
}

/// Is `path` one of `roots` or below one?
fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    path.is_absolute() && roots.iter().any(|r| path.starts_with(r))
}

/// Close every inherited descriptor above stdio the agent may not keep
/// (module docs); refuse such stdio. `keep_sockets` (the policy's opt-out)
/// keeps sockets and the kernel handles it names; `files` says which
/// regular files go. Returns what was closed.
pub fn close_unjudged(
    keep_sockets: bool,
    files: &FileRule,
) -> Result<Vec<(RawFd, Kind)>, InheritedError> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(InheritedError::List)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut closed = Vec::new();
    for fd in fds {
        let Some(kind) = classify(fd, files) else {
            continue;
        };
        if keep_sockets && kind.kept_by_opt_out() {
            continue;
        }
        if fd <= 2 {
            match kind {
                Kind::Socket(_) | Kind::DaemonConnection(_) => {
                    return Err(InheritedError::NetworkStdio { fd, kind });
                }
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
        let kept = |l: &str| matches!(kernel_handle(l), Some(Kind::Handle(_)));
        let closed = |l: &str| matches!(kernel_handle(l), Some(Kind::OtherHandle(_)));
        assert!(kept("anon_inode:[io_uring]"));
        assert!(kept("anon_inode:bpf-map"));
        assert!(kept("anon_inode:[pidfd]"));
        assert!(kept("pidfd:[12345]"));
        assert!(closed("anon_inode:[fanotify]"));
        assert!(closed("anon_inode:[userfaultfd]"));
        assert!(closed("anon_inode:kvm-vm"));
        assert!(closed("net:[4026531840]"));
        assert!(closed("mnt:[4026531841]"));
        for harmless in [
            "anon_inode:[eventfd]",
            "anon_inode:[eventpoll]",
            "anon_inode:[timerfd]",
            "anon_inode:inotify",
            "pipe:[12345]",
        ] {
            assert!(kernel_handle(harmless).is_none(), "{harmless}");
        }
    }

    #[test]
    fn closes_an_inherited_inet_socket_and_keeps_unix() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        use std::os::fd::AsRawFd;
        let (tfd, ufd) = (tcp.as_raw_fd(), a.as_raw_fd());
        let none = FileRule::default();
        assert_eq!(classify(tfd, &none), Some(Kind::Socket(libc::AF_INET)));
        assert_eq!(classify(ufd, &none), None);
        // Closing is exercised end to end by the integration tests (here
        // it would close the test harness's own descriptors).
    }

    #[test]
    fn recognises_ways_around_the_mount_namespace() {
        use std::os::fd::AsRawFd;
        let none = FileRule::default();
        let dir = std::fs::File::open("/").expect("open /");
        assert_eq!(
            classify(dir.as_raw_fd(), &none),
            Some(Kind::HostPath("/".into()))
        );
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        assert_eq!(classify(null.as_raw_fd(), &none), None);
        let tmp = std::env::temp_dir().join(format!("palisade-inherited-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("mkdir");
        let file = tmp.join("policy.yaml");
        std::fs::write(&file, "x").expect("write");
        let f = std::fs::File::open(&file).expect("open");
        assert_eq!(
            classify(f.as_raw_fd(), &none),
            None,
            "an ordinary file stays"
        );
        let protected = FileRule {
            read_only: vec![tmp.clone()],
            all: false,
            api_socket: None,
        };
        assert_eq!(
            classify(f.as_raw_fd(), &protected),
            Some(Kind::Protected(file.clone()))
        );
        // A read-only root: every file goes, wherever it lies.
        let root = FileRule {
            read_only: Vec::new(),
            all: true,
            api_socket: None,
        };
        assert!(matches!(
            classify(f.as_raw_fd(), &root),
            Some(Kind::Protected(_))
        ));
        let path_only = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&file)
            .expect("O_PATH");
        assert!(matches!(
            classify(path_only.as_raw_fd(), &none),
            Some(Kind::HostPath(_))
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process's insides and the kernel's controls.
        let mem = std::fs::File::open("/proc/self/status").expect("open /proc/self/status");
        assert!(matches!(
            classify(mem.as_raw_fd(), &none),
            Some(Kind::Protected(_))
        ));
        assert!(harmless_device(136, 4) && harmless_device(1, 3) && harmless_device(5, 0));
        // /dev/net/tun, /dev/kvm, /dev/mem, /dev/kmsg
        assert!(!harmless_device(10, 200) && !harmless_device(10, 232));
        assert!(!harmless_device(5, 2), "a pty master");
        assert!(!harmless_device(1, 1) && !harmless_device(1, 11));
    }
}
