//! The guard tracepoints: lineage tracking (always) and the socket-syscall
//! stand-in for BPF LSM (only where the kernel refuses LSM programs).
//!
//! Both are `bpf_link`s pinned next to the cgroup links, so they go on
//! while no daemon runs. Neither kind of link can swap its program in
//! place, so a restarted daemon attaches the new program and renames its
//! pin over the old one: make before break; while both run, both write the
//! same entries.
//!
//! Lineage uses raw tracepoints: no trace record is built for them, which
//! matters on a path as hot as fork and exit. The syscall stand-in uses the
//! per-syscall `syscalls/sys_enter_*` tracepoints (a raw `sys_enter` would
//! run a program on every system call of the host).

use agent_common::guard::GuardConfig;
use aya::{
    Ebpf,
    programs::{RawTracePoint, TracePoint, links::FdLink},
};

use super::{BpfError, btf::KernelBtf, loader, pins::PinDir};

/// Lineage: fork, exec, exit and cgroup moves (`agent-ebpf/src/lineage.rs`),
/// (program, raw tracepoint).
pub const LINEAGE_PROGRAMS: &[(&str, &str)] = &[
    ("lineage_fork", "sched_process_fork"),
    ("lineage_exec", "sched_process_exec"),
    ("lineage_exit", "sched_process_exit"),
    ("lineage_attach", "cgroup_attach_task"),
];

/// The stand-in for `lsm/socket_create` (`agent-ebpf/src/socket_guard.rs`),
/// (program, category, tracepoint).
pub const FALLBACK_PROGRAMS: &[(&str, &str, &str)] = &[
    ("guard_socket", "syscalls", "sys_enter_socket"),
    ("guard_socketpair", "syscalls", "sys_enter_socketpair"),
    ("guard_io_uring", "syscalls", "sys_enter_io_uring_setup"),
];

/// The kernel structure offsets the lineage programs read, from this
/// kernel's BTF.
pub fn kernel_offsets(cfg: &mut GuardConfig) -> Result<(), BpfError> {
    let btf = KernelBtf::load()?;
    cfg.task_pid = btf.offset_of("task_struct", "pid")?;
    cfg.cgroup_kn = btf.offset_of("cgroup", "kn")?;
    cfg.kernfs_id = btf.offset_of("kernfs_node", "id")?;
    cfg.cgroup_root = btf.offset_of("cgroup", "root")?;
    cfg.root_hierarchy = btf.offset_of("cgroup_root", "hierarchy_id")?;
    Ok(())
}

/// Load and attach the lineage programs, pinning each link (replacing an
/// older pin).
pub fn attach_lineage(ebpf: &mut Ebpf, pins: &PinDir) -> Result<(), BpfError> {
    for &(name, tracepoint) in LINEAGE_PROGRAMS {
        let prog: &mut RawTracePoint = loader::program(ebpf, name)?;
        prog.load().map_err(BpfError::program(name))?;
        let id = prog.attach(tracepoint).map_err(BpfError::program(name))?;
        let link: FdLink = prog.take_link(id).map_err(BpfError::program(name))?.into();
        loader::pin_replacing(name, link, pins)?;
    }
    Ok(())
}

/// Attach the lineage programs without pinning: they run for as long as
/// `ebpf` lives. For `cargo xtask bench spawn`, which compares spawning
/// with and without tracking in alternating rounds.
pub fn attach_lineage_unpinned(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    for &(name, tracepoint) in LINEAGE_PROGRAMS {
        let prog: &mut RawTracePoint = loader::program(ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().map_err(BpfError::program(name))?;
        }
        prog.attach(tracepoint).map_err(BpfError::program(name))?;
    }
    Ok(())
}

/// Load and attach the syscall stand-in, pinning each link.
pub fn attach_fallback(ebpf: &mut Ebpf, pins: &PinDir) -> Result<(), BpfError> {
    for &(name, category, event) in FALLBACK_PROGRAMS {
        let prog: &mut TracePoint = loader::program(ebpf, name)?;
        prog.load().map_err(BpfError::program(name))?;
        let id = prog
            .attach(category, event)
            .map_err(BpfError::program(name))?;
        let link = FdLink::try_from(prog.take_link(id).map_err(BpfError::program(name))?)
            .map_err(|e| BpfError::Link {
                program: name,
                action: "taking the bpf_link of",
                path: pins.link(name),
                source: std::io::Error::other(e),
            })?;
        loader::pin_replacing(name, link, pins)?;
    }
    Ok(())
}

/// Remove the stand-in's pins (a host whose kernel now loads the LSM
/// program does not need it).
pub fn detach_fallback(pins: &PinDir) {
    for &(name, _, _) in FALLBACK_PROGRAMS {
        let path = pins.link(name);
        if let Ok(fd) = super::sys::obj_get(&path) {
            use std::os::fd::AsFd;
            if let Err(e) = super::sys::link_detach(fd.as_fd()) {
                tracing::debug!(error = %e, link = %path.display(), "BPF_LINK_DETACH");
            }
        }
        let _ = std::fs::remove_file(path);
    }
}
