//! Landlock scoping for `palisade exec`: the agent and its descendants can
//! reach no process outside them.
//!
//! A Landlock domain (any ABI) refuses ptrace-mode access from inside it to
//! a process outside it: `ptrace`, `/proc/PID/mem` and the other
//! ptrace-checked `/proc` files, `process_vm_readv/writev`, `pidfd_getfd`.
//! ABI 6 adds scopes for signals (`kill`, `pidfd_send_signal`, `F_SETOWN`)
//! and abstract Unix sockets to processes outside. No filesystem rule is
//! needed: on ABI 6 and later the domain handles only the scopes; before
//! that it handles `EXECUTE` and allows it beneath `/`, which restricts
//! nothing on the filesystem and still creates the domain.
//!
//! Raw system calls keep this free of a dependency; the numbers are the
//! same on every architecture (new system calls are numbered jointly).

use std::{ffi::CString, io};

const CREATE_RULESET_VERSION: u32 = 1;
const ACCESS_FS_EXECUTE: u64 = 1;
const RULE_PATH_BENEATH: u32 = 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const SCOPE_SIGNAL: u64 = 2;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// What this kernel's Landlock can scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Support {
    /// The Landlock ABI version; 0 when Landlock is not built in or not
    /// active (not in the `lsm=` list).
    pub abi: u32,
}

impl Support {
    /// Ask the kernel.
    pub fn probe() -> Self {
        // SAFETY: the version query takes no pointer.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        Self {
            abi: u32::try_from(v).unwrap_or(0),
        }
    }

    /// ptrace-mode access (`/proc/PID/mem`, ptrace, process_vm_*,
    /// pidfd_getfd) to processes outside is refused.
    pub fn ptrace(self) -> bool {
        self.abi >= 1
    }

    /// Signals and abstract Unix sockets to processes outside are refused.
    pub fn signals_and_abstract_unix(self) -> bool {
        self.abi >= 6
    }

    /// One line for `palisade doctor` and the exec log.
    pub fn describe(self) -> String {
        match self.abi {
            0 => "Landlock unavailable: exec agents are not scoped to their own processes"
                .to_string(),
            1..=5 => format!(
                "Landlock ABI {}: ptrace-mode access scoped; signals and abstract Unix sockets are not (needs ABI 6, Linux 6.12)",
                self.abi
            ),
            n => format!(
                "Landlock ABI {n}: ptrace-mode access, signals and abstract Unix sockets scoped"
            ),
        }
    }
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Put the calling thread (about to exec; `no_new_privs` already set) in a
/// new Landlock domain. Returns what it scopes.
pub fn scope_to_own_processes() -> io::Result<Support> {
    let support = Support::probe();
    if !support.ptrace() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Landlock is not active on this kernel (see `palisade doctor`)",
        ));
    }
    let modern = support.signals_and_abstract_unix();
    let attr = RulesetAttr {
        handled_access_fs: if modern { 0 } else { ACCESS_FS_EXECUTE },
        handled_access_net: 0,
        scoped: if modern {
            SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
        } else {
            0
        },
    };
    // Older kernels refuse a larger struct with non-zero tail fields.
    let size = if modern {
        size_of::<RulesetAttr>()
    } else {
        size_of::<u64>()
    };
    // SAFETY: `attr` is live and at least `size` bytes.
    let ruleset = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    })? as libc::c_int;
    let result = (|| {
        if !modern {
            let root = CString::new("/").map_err(io::Error::other)?;
            // SAFETY: a valid C string; O_PATH opens nothing for reading.
            let fd = unsafe { libc::open(root.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let rule = PathBeneath {
                allowed_access: ACCESS_FS_EXECUTE,
                parent_fd: fd,
            };
            // SAFETY: `rule` is live for the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    RULE_PATH_BENEATH,
                    &rule as *const PathBeneath,
                    0u32,
                )
            };
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
            check(r)?;
        }
        // SAFETY: plain system call on our ruleset fd.
        check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) })
    })();
    // SAFETY: we own the ruleset fd.
    unsafe { libc::close(ruleset) };
    result.map(|_| support)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_each_level() {
        assert!(Support { abi: 0 }.describe().contains("unavailable"));
        assert!(!Support { abi: 3 }.signals_and_abstract_unix());
        assert!(Support { abi: 3 }.ptrace());
        assert!(Support { abi: 6 }.signals_and_abstract_unix());
    }
}
