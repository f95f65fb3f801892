//! The process at the other end of a Unix socket, pinned when the
//! connection is accepted.
//!
//! `SO_PEERCRED` gives a pid, and a pid is only a number: once its process
//! exits the kernel hands it to the next process created. A connection can
//! outlive the process that made it (a child inherits the descriptor), so
//! every call checks that the process that connected is still there. The
//! check holds a pidfd, which refers to one process (never to a later one
//! with the same pid) and turns readable when it exits:
//!
//! - `SO_PEERPIDFD` (Linux ≥ 6.5): the kernel's own reference to the
//!   process that called `connect()`. Exact.
//! - otherwise the pid and its start time, read at accept and held with
//!   `pidfd_open` (Linux ≥ 5.3; the daemon needs ≥ 5.8 anyway). Exact from
//!   the accept on; a peer that exits between its `connect()` and the
//!   accept, and whose pid a new process takes in that window, would be
//!   mistaken for that process (docs/security.md says more).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use serde::Deserialize;

/// How connections are pinned to their process (config `api.peer_pin`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinKind {
    /// `SO_PEERPIDFD` where the kernel has it, else `start-time`.
    #[default]
    Auto,
    /// The pid and its start time at accept, held with `pidfd_open`: what
    /// kernels before 6.5 get.
    StartTime,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read the peer's credentials (SO_PEERCRED): {0}")]
    Credentials(#[source] io::Error),
    #[error("the peer process (pid {pid}) exited before its connection was accepted")]
    Gone { pid: u32 },
    #[error("cannot pin the peer process (pid {pid}): {source}")]
    Pin {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// The process that connected, with the credentials the kernel recorded
/// at `connect()`.
pub struct PeerProcess {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Clock ticks after boot (`/proc/PID/stat` field 22), at accept; 0 if
    /// the kernel's pidfd made reading it unnecessary.
    pub start_time: u64,
    pidfd: OwnedFd,
    kind: PinKind,
}

impl std::fmt::Debug for PeerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerProcess")
            .field("pid", &self.pid)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("pin", &self.pin_name())
            .finish()
    }
}

fn getsockopt<T>(sock: BorrowedFd<'_>, opt: libc::c_int, out: &mut T) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `out` is valid for `len` bytes and the kernel writes at most
    // `len`; the descriptor is borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_mut(out).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// State and start time of a process, from `/proc/PID/stat`.
fn stat(pid: u32) -> io::Result<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

/// Fields after the command name (which may hold spaces and parentheses,
/// hence the last `)`): state is field 3, start time field 22.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Zombie or dead: the process has exited, its pid is about to be free.
fn exited(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// Is the process behind `pidfd` still running? A pidfd turns readable
/// when its process exits. Fails closed: if it cannot tell, false.
fn running(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&raw mut p, 1, 0) };
    n == 0
}

/// `pidfd_open(pid)`, bracketed by two reads of the pid's start time: if
/// both match and the process still runs after the open, the pidfd holds
/// the process that had that start time.
fn open_by_start_time(pid: u32) -> Result<(OwnedFd, u64), PeerError> {
    let read = || match stat(pid) {
        Ok((state, start)) if !exited(state) => Ok(start),
        Ok(_) => Err(PeerError::Gone { pid }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PeerError::Gone { pid }),
        Err(source) => Err(PeerError::Pin { pid, source }),
    };
    let before = read()?;
    // SAFETY: a plain syscall; on success it returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ESRCH) {
            PeerError::Gone { pid }
        } else {
            PeerError::Pin { pid, source: e }
        });
    }
    // SAFETY: the kernel just created this descriptor for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    if read()? != before || !running(&pidfd) {
        return Err(PeerError::Gone { pid });
    }
    Ok((pidfd, before))
}

impl PeerProcess {
    /// Pin the peer of a connected Unix socket. Call it at accept, before
    /// the connection serves anything.
    pub fn of_socket(sock: BorrowedFd<'_>, kind: PinKind) -> Result<Self, PeerError> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        getsockopt(sock, libc::SO_PEERCRED, &mut cred).map_err(PeerError::Credentials)?;
        let pid = u32::try_from(cred.pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                PeerError::Credentials(io::Error::other(
                    "the peer's pid is not visible in the daemon's pid namespace",
                ))
            })?;
        let (pidfd, start_time, kind) = match kind {
            PinKind::StartTime => {
                let (fd, start) = open_by_start_time(pid)?;
                (fd, start, PinKind::StartTime)
            }
            PinKind::Auto => {
                let mut fd: libc::c_int = -1;
                match getsockopt(sock, libc::SO_PEERPIDFD, &mut fd) {
                    // SAFETY: the kernel just created this descriptor for us.
                    Ok(()) if fd >= 0 => (unsafe { OwnedFd::from_raw_fd(fd) }, 0, PinKind::Auto),
                    // Kernels before 6.5 do not know the option.
                    Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                        let (fd, start) = open_by_start_time(pid)?;
                        (fd, start, PinKind::StartTime)
                    }
                    // No process to refer to any more (ESRCH, EINVAL).
                    _ => return Err(PeerError::Gone { pid }),
                }
            }
        };
        Ok(Self {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            start_time,
            pidfd,
            kind,
        })
    }

    /// Is the process that connected still running (a zombie is not)?
    /// While it is, its pid is its own: a pid read before this returns
    /// true named that process. Fails closed: if it cannot tell, false.
    pub fn alive(&self) -> bool {
        running(&self.pidfd)
    }

    /// `peer-pidfd` or `start-time`, for logs.
    pub fn pin_name(&self) -> &'static str {
        match self.kind {
            PinKind::Auto => "peer-pidfd",
            PinKind::StartTime => "start-time",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_stat("4242 (x"), None);
    }

    /// A child connected over a socketpair: pinned while it runs, gone
    /// once it has exited (as a zombie, then reaped), with either pin.
    #[test]
    fn a_peer_that_exits_is_gone_with_either_pin() {
        for kind in [PinKind::Auto, PinKind::StartTime] {
            // (A socketpair's peer would be ourselves: a child connects.)
            let dir =
                std::env::temp_dir().join(format!("palisade-peer-{}-{kind:?}", std::process::id()));
            let _ = std::fs::remove_file(&dir);
            let listener =
                std::os::unix::net::UnixListener::bind(&dir).unwrap_or_else(|e| panic!("{e}"));
            let mut child = std::process::Command::new("python3")
                .arg("-c")
                .arg(format!(
                    "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect({:?}); sys.stdin.read()",
                    dir.display().to_string()
                ))
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"));
            let (conn, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let peer = PeerProcess::of_socket(conn.as_fd(), kind).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(peer.pid, child.id());
            if kind == PinKind::StartTime {
                assert_eq!(stat(peer.pid).map(|s| s.1).ok(), Some(peer.start_time));
            }
            assert!(peer.alive(), "{kind:?}: the child runs");
            if kind == PinKind::Auto {
                assert_eq!(
                    peer.pin_name(),
                    "peer-pidfd",
                    "this kernel has SO_PEERPIDFD"
                );
            }
            drop(child.stdin.take());
            // Exited but not reaped yet: a zombie already counts as gone.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while peer.alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(!peer.alive(), "{kind:?}: exited, not yet reaped");
            child.wait().unwrap_or_else(|e| panic!("{e}"));
            assert!(!peer.alive(), "{kind:?}: reaped");
            let _ = std::fs::remove_file(&dir);
        }
    }
}
