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

/// The stand-in's raw tracepoint for the 32-bit entry points, which the
/// `syscalls/*` tracepoints do not report: (program, tracepoint).
pub const FALLBACK_RAW_PROGRAMS: &[(&str, &str)] = &[("guard_compat", "sys_enter")];

/// What the daemon takes from this kernel's BTF: the structure offsets the
/// lineage programs read, and the BTF id of the LSM hook. Read before the
/// programs load, so the BTF's bytes are freed before the object's are
/// allocated (the two together would double the start's peak memory).
pub struct KernelFacts {
    task_pid: u16,
    cgroup_kn: u16,
    kernfs_id: u16,
    cgroup_root: u16,
    root_hierarchy: u16,
    task_status: u16,
    /// `bpf_lsm_socket_create`, when this kernel was built with BPF LSM.
    pub lsm_hook: Option<u32>,
}

impl KernelFacts {
    pub fn read() -> Result<Self, BpfError> {
        let btf = KernelBtf::load()?;
        Ok(Self {
            task_pid: btf.offset_of("task_struct", "pid")?,
            cgroup_kn: btf.offset_of("cgroup", "kn")?,
            kernfs_id: btf.offset_of("kernfs_node", "id")?,
            cgroup_root: btf.offset_of("cgroup", "root")?,
            root_hierarchy: btf.offset_of("cgroup_root", "hierarchy_id")?,
            // x86 only: other architectures have no `thread_info.status`, and
            // the 32-bit socketcall is then left unguarded (`guard_compat`).
            task_status: match (
                btf.offset_of("task_struct", "thread_info"),
                btf.offset_of("thread_info", "status"),
            ) {
                (Ok(a), Ok(b)) => a + b,
                _ => 0,
            },
            lsm_hook: btf.func_id(LSM_HOOK_FUNCTION),
        })
    }

    /// Hand the offsets to the lineage programs.
    pub fn apply(&self, cfg: &mut GuardConfig) {
        cfg.task_pid = self.task_pid;
        cfg.cgroup_kn = self.cgroup_kn;
        cfg.kernfs_id = self.kernfs_id;
        cfg.cgroup_root = self.cgroup_root;
        cfg.root_hierarchy = self.root_hierarchy;
        cfg.task_status = self.task_status;
    }
}

/// The kernel function the `lsm/socket_create` program attaches to.
const LSM_HOOK_FUNCTION: &str = "bpf_lsm_socket_create";

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

/// Load and attach the syscall stand-in, pinning each link.
pub fn attach_fallback(ebpf: &mut Ebpf, pins: &PinDir) -> Result<(), BpfError> {
    for &(name, category, event) in FALLBACK_PROGRAMS {
        let prog: &mut TracePoint = loader::program(ebpf, name)?;
        prog.load().map_err(BpfError::program(name))?;
        let id = prog
            .attach(category, event)
            .map_err(BpfError::program(name))?;
        let link = FdLink::try_from(prog.take_link(id).map_err(BpfError::program(name))?).map_err(
            |e| BpfError::Link {
                program: name,
                action: "taking the bpf_link of",
                path: pins.link(name),
                source: std::io::Error::other(e),
            },
        )?;
        loader::pin_replacing(name, link, pins)?;
    }
    for &(name, tracepoint) in FALLBACK_RAW_PROGRAMS {
        let prog: &mut RawTracePoint = loader::program(ebpf, name)?;
        prog.load().map_err(BpfError::program(name))?;
        let id = prog.attach(tracepoint).map_err(BpfError::program(name))?;
        let link: FdLink = prog.take_link(id).map_err(BpfError::program(name))?.into();
        loader::pin_replacing(name, link, pins)?;
    }
    Ok(())
}

/// Remove the stand-in's pins (a host whose kernel now loads the LSM
/// program does not need it).
pub fn detach_fallback(pins: &PinDir) {
    let names = FALLBACK_PROGRAMS
        .iter()
        .map(|(n, _, _)| *n)
        .chain(FALLBACK_RAW_PROGRAMS.iter().map(|(n, _)| *n));
    for name in names {
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

/// The guard tracepoints loaded by another process, attached and detached
/// at will, sharing the maps a daemon pinned in `pin_dir`. For
/// `cargo xtask bench spawn`, which measures spawning with and without
/// them side by side; the daemon's own links are detached first
/// (`detach_pinned`), so only these run.
pub struct GuardTracepoints {
    ebpf: Ebpf,
    lineage: Vec<(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    )>,
    fallback: Vec<(&'static str, aya::programs::trace_point::TracePointLinkId)>,
    fallback_raw: Vec<(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    )>,
}

impl GuardTracepoints {
    pub fn load(pin_dir: &std::path::Path) -> Result<Self, BpfError> {
        let pins = PinDir::new(pin_dir);
        let paths: Vec<(&str, std::path::PathBuf)> = super::pins::PINNED_MAPS
            .iter()
            .map(|name| (*name, pins.map(name)))
            .collect();
        let mut loader = aya::EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(crate::EBPF_OBJECT).map_err(BpfError::Load)?;
        for &(name, _) in LINEAGE_PROGRAMS {
            let prog: &mut RawTracePoint = loader::program(&mut ebpf, name)?;
            prog.load().map_err(BpfError::program(name))?;
        }
        for &(name, _, _) in FALLBACK_PROGRAMS {
            let prog: &mut TracePoint = loader::program(&mut ebpf, name)?;
            prog.load().map_err(BpfError::program(name))?;
        }
        for &(name, _) in FALLBACK_RAW_PROGRAMS {
            let prog: &mut RawTracePoint = loader::program(&mut ebpf, name)?;
            prog.load().map_err(BpfError::program(name))?;
        }
        Ok(Self {
            ebpf,
            lineage: Vec::new(),
            fallback: Vec::new(),
            fallback_raw: Vec::new(),
        })
    }

    /// Attach (`on`) or detach the lineage programs.
    pub fn set_lineage(&mut self, on: bool) -> Result<(), BpfError> {
        if on && self.lineage.is_empty() {
            for &(name, tracepoint) in LINEAGE_PROGRAMS {
                let prog: &mut RawTracePoint = loader::program(&mut self.ebpf, name)?;
                let id = prog.attach(tracepoint).map_err(BpfError::program(name))?;
                self.lineage.push((name, id));
            }
        } else if !on {
            for (name, id) in self.lineage.drain(..) {
                let prog: &mut RawTracePoint = loader::program(&mut self.ebpf, name)?;
                prog.detach(id).map_err(BpfError::program(name))?;
            }
        }
        Ok(())
    }

    /// Attach (`on`) or detach the syscall stand-in.
    pub fn set_fallback(&mut self, on: bool) -> Result<(), BpfError> {
        if on && self.fallback.is_empty() {
            for &(name, category, event) in FALLBACK_PROGRAMS {
                let prog: &mut TracePoint = loader::program(&mut self.ebpf, name)?;
                let id = prog
                    .attach(category, event)
                    .map_err(BpfError::program(name))?;
                self.fallback.push((name, id));
            }
            for &(name, tracepoint) in FALLBACK_RAW_PROGRAMS {
                let prog: &mut RawTracePoint = loader::program(&mut self.ebpf, name)?;
                let id = prog.attach(tracepoint).map_err(BpfError::program(name))?;
                self.fallback_raw.push((name, id));
            }
        } else if !on {
            for (name, id) in self.fallback.drain(..) {
                let prog: &mut TracePoint = loader::program(&mut self.ebpf, name)?;
                prog.detach(id).map_err(BpfError::program(name))?;
            }
            for (name, id) in self.fallback_raw.drain(..) {
                let prog: &mut RawTracePoint = loader::program(&mut self.ebpf, name)?;
                prog.detach(id).map_err(BpfError::program(name))?;
            }
        }
        Ok(())
    }

    /// Detach the guard tracepoint links a daemon pinned in `pin_dir`
    /// (lineage tracking and the stand-in stop until it restarts).
    pub fn detach_pinned(pin_dir: &std::path::Path) {
        let pins = PinDir::new(pin_dir);
        let names = LINEAGE_PROGRAMS
            .iter()
            .map(|(n, _)| *n)
            .chain(FALLBACK_PROGRAMS.iter().map(|(n, _, _)| *n))
            .chain(FALLBACK_RAW_PROGRAMS.iter().map(|(n, _)| *n));
        for name in names {
            let path = pins.link(name);
            if let Ok(fd) = super::sys::obj_get(&path) {
                use std::os::fd::AsFd;
                let _ = super::sys::link_detach(fd.as_fd());
            }
        }
    }
}
