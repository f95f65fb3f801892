//! The guard tracepoints: lineage tracking (always) and the socket-syscall
//! stand-in for BPF LSM (only where the kernel refuses LSM programs).
//!
//! Their links are `bpf_link`s pinned next to the cgroup links, so tracking
//! goes on while no daemon runs. A perf-event link cannot swap its program
//! in place, so a restarted daemon attaches the new program and renames its
//! pin over the old one (make before break: while both run, both write the
//! same map with the same result).

use std::path::Path;

use agent_common::guard::GuardConfig;
use aya::{
    Ebpf,
    programs::{TracePoint, links::FdLink},
};

use super::{BpfError, loader, pins::PinDir};

/// (program, tracepoint category, tracepoint name).
type Hook = (&'static str, &'static str, &'static str);

/// Lineage: fork, exec, exit and cgroup moves (`agent-ebpf/src/lineage.rs`).
pub const LINEAGE_PROGRAMS: &[Hook] = &[
    ("lineage_fork", "sched", "sched_process_fork"),
    ("lineage_exec", "sched", "sched_process_exec"),
    ("lineage_exit", "sched", "sched_process_exit"),
    ("lineage_attach", "cgroup", "cgroup_attach_task"),
];

/// The stand-in for `lsm/socket_create` (`agent-ebpf/src/socket_guard.rs`).
pub const FALLBACK_PROGRAMS: &[Hook] = &[
    ("guard_socket", "syscalls", "sys_enter_socket"),
    ("guard_socketpair", "syscalls", "sys_enter_socketpair"),
    ("guard_io_uring", "syscalls", "sys_enter_io_uring_setup"),
];

/// The hierarchy id `cgroup_attach_task` reports for cgroup v2 (the `0` of
/// `0::/path` in /proc/PID/cgroup).
const V2_HIERARCHY: i32 = 0;

/// The tracepoint field offsets the lineage programs need, read from this
/// kernel's format files (they changed between kernel versions).
pub fn trace_offsets(cfg: &mut GuardConfig) -> Result<(), BpfError> {
    let dir = crate::mounts::tracefs_dir().ok_or_else(|| BpfError::Tracefs {
        what: "tracefs".into(),
        detail: "not mounted at /sys/kernel/tracing".into(),
    })?;
    let off = |category: &str, event: &str, field: &str| -> Result<u16, BpfError> {
        let path = Path::new(dir)
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|e| BpfError::Tracefs {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        field_offset(&text, field).ok_or_else(|| BpfError::Tracefs {
            what: path.display().to_string(),
            detail: format!("no field `{field}`"),
        })
    };
    cfg.fork_child_pid = off("sched", "sched_process_fork", "child_pid")?;
    cfg.exec_old_pid = off("sched", "sched_process_exec", "old_pid")?;
    cfg.attach_root = off("cgroup", "cgroup_attach_task", "dst_root")?;
    cfg.attach_id = off("cgroup", "cgroup_attach_task", "dst_id")?;
    cfg.attach_pid = off("cgroup", "cgroup_attach_task", "pid")?;
    cfg.v2_hierarchy = V2_HIERARCHY;
    Ok(())
}

/// `offset` of `field` in a tracepoint format file, e.g.
/// `field:pid_t child_pid;	offset:20;	size:4;	signed:1;`.
fn field_offset(format: &str, field: &str) -> Option<u16> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Load and attach `hooks`, pinning each link (replacing an older pin).
pub fn attach_pinned(ebpf: &mut Ebpf, hooks: &[Hook], pins: &PinDir) -> Result<(), BpfError> {
    for &(name, category, event) in hooks {
        let prog: &mut TracePoint = loader::program(ebpf, name)?;
        prog.load().map_err(BpfError::program(name))?;
        let id = prog
            .attach(category, event)
            .map_err(BpfError::program(name))?;
        let link = prog.take_link(id).map_err(BpfError::program(name))?;
        let link = FdLink::try_from(link).map_err(|e| BpfError::Link {
            program: name,
            action: "creating a bpf_link for",
            path: pins.link(name),
            source: std::io::Error::other(e),
        })?;
        loader::pin_replacing(name, link, pins)?;
    }
    Ok(())
}

/// Remove the pinned links of `hooks` (detaching them).
pub fn detach_pinned(hooks: &[Hook], pins: &PinDir) {
    for &(name, _, _) in hooks {
        let path = pins.link(name);
        if let Ok(fd) = super::sys::obj_get(&path) {
            use std::os::fd::AsFd;
            let _ = super::sys::link_detach(fd.as_fd());
        }
        let _ = std::fs::remove_file(path);
    }
}

/// Attach the lineage programs without pinning: they stay attached as long
/// as the returned handle lives. For `cargo xtask bench spawn`, which
/// compares spawning with and without tracking in alternating rounds.
pub fn attach_unpinned(ebpf: &mut Ebpf, hooks: &[Hook]) -> Result<(), BpfError> {
    for &(name, category, event) in hooks {
        let prog: &mut TracePoint = loader::program(ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().map_err(BpfError::program(name))?;
        }
        prog.attach(category, event)
            .map_err(BpfError::program(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_of_both_layouts() {
        let new = "format:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(new, "child_pid"), Some(20));
        assert_eq!(field_offset(new, "parent_pid"), Some(12));
        let old = "\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(old, "child_pid"), Some(44));
        assert_eq!(field_offset(old, "child_comm[16]"), None);
        assert_eq!(field_offset(new, "pid"), None);
        let ptr = "\tfield:int * usockvec;\toffset:40;\tsize:8;\tsigned:0;\n";
        assert_eq!(field_offset(ptr, "usockvec"), Some(40));
    }
}
