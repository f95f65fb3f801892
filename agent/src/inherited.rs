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
//! a network socket (it would carry the agent's data unjudged).
//!
//! Unix sockets stay: they reach no network on their own, many programs
//! depend on them (a terminal multiplexer, a supervisor's notify socket),
//! and the daemon's own API is one. A Unix socket to a cooperating process
//! outside can relay data or pass it a descriptor (`SCM_RIGHTS`); that
//! needs an accomplice outside the agent and is a residual (docs).

use std::{io, os::fd::RawFd};

/// What an inherited descriptor is, for the ones exec does not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A socket of this address family (not `AF_UNIX`).
    Socket(i32),
    /// An anonymous inode by its kernel name (`[io_uring]`, `bpf-map`…).
    Handle(String),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Socket(family) => write!(f, "a socket of address family {family}"),
            Kind::Handle(name) => write!(f, "a kernel handle ({name})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InheritedError {
    #[error(
        "file descriptor {fd} (stdin, stdout or stderr) is {kind}, opened outside the agent's identity: it would carry the agent's data unjudged; run the agent with ordinary stdio, or set `confinement.keep_inherited_sockets` for this identity"
    )]
    NetworkStdio { fd: RawFd, kind: Kind },
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

fn classify(fd: RawFd) -> Option<Kind> {
    // SAFETY: fstat on an fd number into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
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

/// Close every inherited descriptor above stdio that is a non-Unix socket
/// or a kernel handle; refuse stdio that is a network socket. With `keep`
/// (the policy's opt-out) nothing is touched. Returns what was closed.
pub fn close_unjudged(keep: bool) -> Result<Vec<(RawFd, Kind)>, InheritedError> {
    if keep {
        return Ok(Vec::new());
    }
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(InheritedError::List)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut closed = Vec::new();
    for fd in fds {
        let Some(kind) = classify(fd) else { continue };
        if fd <= 2 {
            if matches!(kind, Kind::Socket(_)) {
                return Err(InheritedError::NetworkStdio { fd, kind });
            }
            continue;
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
        assert_eq!(classify(tfd), Some(Kind::Socket(libc::AF_INET)));
        assert_eq!(classify(ufd), None);
        // Closing is exercised end to end by the integration tests (here
        // it would close the test harness's own descriptors).
    }
}
