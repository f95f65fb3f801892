//! A launcher that hands the agent something it made before enrolment:
//! `palisade exec --identity ID -- probe ARGS…` started from a cgroup of
//! the test's choosing, with a socket the launcher made there as
//! descriptor 3 (sockets are judged by the cgroup they were made in, so it
//! matters where the launcher runs).

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
};

use crate::{Probe, TestEnv, palisade_bin, probe::enter_cgroup};

/// `palisade exec --identity IDENTITY -- probe AGENT…`.
pub fn exec_probe(env: &TestEnv, identity: &str, agent: &[&str]) -> Command {
    let mut cmd = Command::new(palisade_bin());
    cmd.arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", identity, "--"])
        .arg(Probe::bin())
        .args(agent)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Start `cmd` inside `cgroup`, with the descriptor `make` returns there
/// (between fork and exec: system calls only) as descriptor 3, kept across
/// exec.
pub fn with_socket_from(
    mut cmd: Command,
    cgroup: &Path,
    make: impl Fn() -> std::io::Result<i32> + Send + Sync + 'static,
) -> Command {
    // First into the cgroup, so that the socket is made there.
    enter_cgroup(&mut cmd, cgroup);
    // SAFETY: between fork and exec only `make` (system calls, by its
    // contract), dup2, fcntl and close.
    unsafe {
        cmd.pre_exec(move || {
            let fd = make()?;
            if fd == 3 {
                // dup2 onto itself would leave close-on-exec set.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    cmd
}

/// A socket of `ty` (`SOCK_STREAM`, `SOCK_DGRAM`) for IPv4, connected to
/// `dst` when given. For `with_socket_from`: system calls only.
pub fn inet_socket(ty: i32, dst: Option<std::net::SocketAddrV4>) -> std::io::Result<i32> {
    // SAFETY: socket(2) and connect(2) with a sockaddr_in on the stack.
    unsafe {
        let fd = libc::socket(libc::AF_INET, ty, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(dst) = dst {
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = dst.port().to_be();
            sin.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
            let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::connect(fd, (&raw const sin).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(fd)
    }
}

/// Set a process's descriptor limit (soft and hard) to `n`; returns the
/// limit it had.
pub fn set_descriptor_limit(pid: u32, n: u64) -> libc::rlimit {
    let new = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on a pid with valid structs.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// Put back a limit `set_descriptor_limit` returned.
pub fn restore_descriptor_limit(pid: u32, old: &libc::rlimit) {
    // SAFETY: prlimit on a pid with a valid struct.
    unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            old,
            std::ptr::null_mut(),
        )
    };
}
