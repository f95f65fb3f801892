//! Load the embedded eBPF object, reuse pinned maps, and attach (or adopt)
//! the programs so that there is never a moment without enforcement.
//!
//! * First start: programs are attached at the configured cgroup with
//!   `bpf_link`s, and the links are pinned.
//! * Restart (after a crash, SIGKILL or upgrade): the pinned maps are reused
//!   as they are, and each pinned link is switched to the freshly loaded
//!   program with `BPF_LINK_UPDATE`: one atomic step, no gap, no duplicate.
//! * `uninstall` removes the pins; that is the only way enforcement ends.

use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockopt, Lsm, TracePoint, links::FdLink,
    },
};
use tracing::{info, warn};

use agent_common::guard::GUARD_SYSCALL_FALLBACK;

use super::{BpfError, KernelMaps, pins::PinDir, sys};

/// Cgroup programs are attached with `bpf_link`s, which the kernel always
/// runs alongside other programs on the same cgroup (multi mode); the flags
/// of a link attachment must be zero, which is what `Single` passes.
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

const SOCK_CREATE_PROGRAM: &str = "sock_create";
/// Refuses the socket options that set source routes.
const SOCKOPT_PROGRAM: &str = "setsockopt";
/// Drops source-routed packets and a revoked identity's traffic.
const EGRESS_PROGRAM: &str = "egress";
const LSM_PROGRAM: &str = "socket_create";

/// How a pinned link is made, so the watchdog can make it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkKind {
    SockAddr,
    SockCreate,
    Sockopt,
    Skb,
    /// Tracepoints and LSM: the kernel can neither detach nor update
    /// these links while a file descriptor holds them.
    Tracepoint,
}

/// Every cgroup link, in attach order.
pub(super) const CGROUP_LINKS: &[(&str, LinkKind)] = &[
    ("connect4", LinkKind::SockAddr),
    ("connect6", LinkKind::SockAddr),
    ("sendmsg4", LinkKind::SockAddr),
    ("sendmsg6", LinkKind::SockAddr),
    ("recvmsg4", LinkKind::SockAddr),
    ("recvmsg6", LinkKind::SockAddr),
    ("getpeername4", LinkKind::SockAddr),
    ("getpeername6", LinkKind::SockAddr),
    ("bind4", LinkKind::SockAddr),
    ("bind6", LinkKind::SockAddr),
    (SOCK_CREATE_PROGRAM, LinkKind::SockCreate),
    (SOCKOPT_PROGRAM, LinkKind::Sockopt),
    (EGRESS_PROGRAM, LinkKind::Skb),
];

fn load_cgroup_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    kind: LinkKind,
) -> Result<(), BpfError> {
    match kind {
        LinkKind::SockAddr => program::<CgroupSockAddr>(ebpf, name)?.load(),
        LinkKind::SockCreate => program::<CgroupSock>(ebpf, name)?.load(),
        LinkKind::Sockopt => program::<CgroupSockopt>(ebpf, name)?.load(),
        LinkKind::Skb => program::<CgroupSkb>(ebpf, name)?.load(),
        LinkKind::Tracepoint => return Ok(()),
    }
    .map_err(BpfError::program(name))
}

/// Run `f` on the loaded cgroup program `name`, seen as a `CgroupProgram`.
pub(super) fn with_cgroup_program<R>(
    ebpf: &mut Ebpf,
    name: &'static str,
    kind: LinkKind,
    f: impl FnOnce(&mut dyn CgroupProgram) -> Result<R, BpfError>,
) -> Result<R, BpfError> {
    match kind {
        LinkKind::SockAddr => f(program::<CgroupSockAddr>(ebpf, name)?),
        LinkKind::SockCreate => f(program::<CgroupSock>(ebpf, name)?),
        LinkKind::Sockopt => f(program::<CgroupSockopt>(ebpf, name)?),
        LinkKind::Skb => f(program::<CgroupSkb>(ebpf, name)?),
        LinkKind::Tracepoint => Err(BpfError::Program {
            program: name,
            source: aya::programs::ProgramError::NotLoaded,
        }),
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Private pin directory on bpffs.
    pub pin_dir: PathBuf,
    /// The cgroup the programs attach to (they run for its whole subtree).
    pub attach_cgroup: PathBuf,
    /// Ring buffer size for events; used only when the map is first created.
    pub event_buffer_bytes: u32,
    /// Entries of the DNS learned-address map; used only when it is first
    /// created.
    pub learned_capacity: u32,
}

/// How packet sockets (`AF_PACKET`, `AF_XDP`) are kept from agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketGuard {
    /// The `lsm/socket_create` program refuses them to every enrolled process.
    Lsm,
    /// The kernel refuses BPF LSM programs: processes started with
    /// `palisade exec` get a seccomp filter; other enrolled processes are
    /// killed by the syscall tracepoints when they try (after the fact: see
    /// `agent-ebpf/src/socket_guard.rs`).
    SeccompOnly,
}

/// The loaded programs and the daemon's handles on the maps.
pub struct Kernel {
    maps: Arc<KernelMaps>,
    /// True when pins from a previous daemon were adopted.
    pub adopted: bool,
    pub packet_guard: PacketGuard,
    /// Keeps the non-pinned parts alive (tracepoints).
    pub(super) ebpf: Ebpf,
    logger: Option<KernelLogger>,
    /// The links the watchdog keeps attached (`bpf::watchdog`).
    pub(super) guard: super::watchdog::Guard,
}

type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

impl Kernel {
    pub fn load(opts: &LoadOptions) -> Result<Self, BpfError> {
        let pins = PinDir::new(&opts.pin_dir);
        pins.prepare().map_err(|source| BpfError::BpfFs {
            path: opts.pin_dir.clone(),
            source,
        })?;
        let adopted = pins.has_pins();
        // Before the object is loaded: see `KernelFacts`.
        let facts = super::guards::KernelFacts::read()?;
        let pin_paths: Vec<(&str, PathBuf)> = super::pins::PINNED_MAPS
            .iter()
            .map(|name| (*name, pins.map(name)))
            .collect();
        // No target BTF: the object has no CO-RE relocations, and aya would
        // parse the kernel's whole BTF (about 20 MiB at its height) only to
        // find that out. The LSM program gets it in `attach_lsm`, if at all.
        // The sockets' storages outside every memory cgroup (`sockmap`).
        for &(name, value_size, flags) in super::sockmap::SOCKET_STORAGES {
            match super::sockmap::create_uncharged(&pins.map(name), name, value_size, flags) {
                Ok(true) => {}
                Ok(false) => warn!(
                    map = name,
                    "agents' socket storage is charged to the daemon's memory cgroup (no memory controller, or its root cannot be entered): agents' sockets count against the daemon's memory limit"
                ),
                Err(e) => {
                    warn!(map = name, error = %e, "creating agents' socket storage outside the daemon's memory cgroup; the loader creates it")
                }
            }
        }
        let mut loader = EbpfLoader::new();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader.map_max_entries("EVENTS", opts.event_buffer_bytes);
        loader.map_max_entries("LEARNED", opts.learned_capacity);
        let mut ebpf = loader.load(crate::EBPF_OBJECT).map_err(BpfError::Load)?;

        // The logger owns the log map: it must outlive program loading.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(error = %e, "kernel-side logging unavailable");
                None
            }
        };

        let cgroup = File::open(&opts.attach_cgroup).map_err(|source| BpfError::Cgroup {
            path: opts.attach_cgroup.clone(),
            source,
        })?;
        let cgroup_id =
            std::os::unix::fs::MetadataExt::ino(&cgroup.metadata().map_err(|source| {
                BpfError::Cgroup {
                    path: opts.attach_cgroup.clone(),
                    source,
                }
            })?);
        let mut found = Vec::new();
        for &(name, kind) in CGROUP_LINKS {
            load_cgroup_program(&mut ebpf, name, kind)?;
            if let Some(f) = with_cgroup_program(&mut ebpf, name, kind, |prog| {
                attach_or_adopt(name, prog, &cgroup, cgroup_id, &pins)
            })? {
                found.push(f);
            }
        }
        let mut guard = super::watchdog::Guard::new(cgroup, cgroup_id, pins.clone());
        for &(name, kind) in CGROUP_LINKS {
            guard.watch(name, kind)?;
        }
        guard.found_at_start = found;
        let packet_guard = match attach_lsm(&mut ebpf, facts.lsm_hook, &pins) {
            Ok(()) => PacketGuard::Lsm,
            Err(e) => {
                warn!(
                    error = %crate::cli::error_chain(&e),
                    "this kernel refuses BPF LSM programs: sockets outside the allowlist are refused to agents started with `palisade exec` (seccomp); other enrolled processes that create one are killed by a syscall tracepoint"
                );
                let _ = std::fs::remove_file(pins.link(LSM_PROGRAM));
                PacketGuard::SeccompOnly
            }
        };
        let maps = Arc::new(KernelMaps::take(&mut ebpf)?);
        // Offsets first: the lineage programs do nothing until they are set.
        maps.update_guard(|cfg| {
            facts.apply(cfg);
            if packet_guard == PacketGuard::SeccompOnly {
                cfg.flags |= GUARD_SYSCALL_FALLBACK;
            } else {
                cfg.flags &= !GUARD_SYSCALL_FALLBACK;
            }
            Ok(())
        })?;
        super::guards::attach_lineage(&mut ebpf, &pins)?;
        if packet_guard == PacketGuard::SeccompOnly {
            super::guards::attach_fallback(&mut ebpf, &pins)?;
        } else {
            super::guards::detach_fallback(&pins);
        }
        let tracepoint_links = super::guards::LINEAGE_PROGRAMS
            .iter()
            .map(|(n, _)| *n)
            .chain(
                super::guards::FALLBACK_PROGRAMS
                    .iter()
                    .filter(|_| packet_guard == PacketGuard::SeccompOnly)
                    .map(|(n, _, _)| *n),
            )
            .chain((packet_guard == PacketGuard::Lsm).then_some(LSM_PROGRAM));
        for name in tracepoint_links {
            guard.watch(name, LinkKind::Tracepoint)?;
        }
        {
            let name = "cgroup_mkdir";
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load().map_err(BpfError::program(name))?;
            prog.attach("cgroup", name)
                .map_err(BpfError::program(name))?;
        }
        info!(
            pin_dir = %opts.pin_dir.display(),
            cgroup = %opts.attach_cgroup.display(),
            adopted,
            "eBPF programs attached"
        );
        Ok(Self {
            maps,
            adopted,
            packet_guard,
            ebpf,
            logger,
            guard,
        })
    }

    /// Forward the programs' own log lines (aya-log) to the daemon's log.
    /// Needs a tokio runtime.
    pub fn spawn_log_reader(&mut self) {
        let Some(logger) = self.logger.take() else {
            return;
        };
        // SAFETY: the logger owns its ring buffer fd for as long as the
        // AsyncFd owns the logger.
        let fd = match unsafe { tokio::io::unix::AsyncFd::register(logger) } {
            Ok(fd) => fd,
            Err(e) => {
                warn!(error = %std::io::Error::from(e), "kernel-side logging unavailable");
                return;
            }
        };
        tokio::spawn(async move {
            let mut fd = fd;
            loop {
                let Ok(mut guard) = fd.readable_mut().await else {
                    break;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
    }

    pub fn maps_handle(&self) -> Arc<KernelMaps> {
        self.maps.clone()
    }

    /// The aya handle, for callers that need the remaining programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Attach the LSM guard against packet sockets. LSM links cannot be updated
/// in place: attach the new program, then rename its pin over the old one
/// (make before break; while both run, both enforce the same maps).
///
/// A trivial program is tried first on the same hook: kernels that refuse
/// BPF LSM programs say so there, without the full BTF parse (about 20 MiB
/// held for a moment) that aya needs to load the real one.
fn attach_lsm(ebpf: &mut Ebpf, hook: Option<u32>, pins: &PinDir) -> Result<(), BpfError> {
    let name = LSM_PROGRAM;
    let hook = hook.ok_or(BpfError::NoLsmHook)?;
    drop(sys::probe_lsm_load(hook).map_err(BpfError::LsmRefused)?);
    let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
    let prog: &mut Lsm = program(ebpf, name)?;
    prog.load(name, &btf).map_err(BpfError::program(name))?;
    drop(btf);
    let id = prog.attach().map_err(BpfError::program(name))?;
    let link: FdLink = prog.take_link(id).map_err(BpfError::program(name))?.into();
    pin_replacing(name, link, pins)
}

/// Pin `link` under a temporary name, then rename it over the program's
/// pin: the old link (if any) runs until the new one is in place.
pub(super) fn pin_replacing(
    name: &'static str,
    link: FdLink,
    pins: &PinDir,
) -> Result<(), BpfError> {
    let staging = pins.link_staging(name);
    let _ = std::fs::remove_file(&staging);
    pin_link(name, link, &staging)?;
    std::fs::rename(&staging, pins.link(name)).map_err(|source| BpfError::Link {
        program: name,
        action: "renaming",
        path: pins.link(name),
        source,
    })
}

pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, BpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(BpfError::Program {
        program: name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    prog.try_into().map_err(BpfError::program(name))
}

/// The cgroup program types we attach, seen the same way.
pub(super) trait CgroupProgram {
    fn program_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, aya::programs::ProgramError>;
    fn attach_link(&mut self, cgroup: &File) -> Result<FdLink, aya::programs::ProgramError>;

    /// Attach with a new link and pin it under the program's name,
    /// replacing a pin that is there (a link that was severed).
    fn attach_pinned(
        &mut self,
        name: &'static str,
        cgroup: &File,
        pins: &PinDir,
    ) -> Result<(), BpfError> {
        let link = self.attach_link(cgroup).map_err(BpfError::program(name))?;
        pin_replacing(name, link, pins)
    }
}

macro_rules! cgroup_program {
    ($ty:ty) => {
        impl CgroupProgram for $ty {
            fn program_fd(
                &self,
            ) -> Result<std::os::fd::BorrowedFd<'_>, aya::programs::ProgramError> {
                Ok(self.fd()?.as_fd())
            }
            fn attach_link(
                &mut self,
                cgroup: &File,
            ) -> Result<FdLink, aya::programs::ProgramError> {
                let id = self.attach(cgroup, LINK_MODE)?;
                self.take_link(id)?
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| e.into())
            }
        }
    };
}
cgroup_program!(CgroupSockAddr);
cgroup_program!(CgroupSock);

/// aya 0.16 cannot hand out a sockopt program's link as an `FdLink`, so
/// this one is created and pinned with bpf(2) directly.
impl CgroupProgram for CgroupSockopt {
    fn program_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, aya::programs::ProgramError> {
        Ok(self.fd()?.as_fd())
    }
    fn attach_link(&mut self, _cgroup: &File) -> Result<FdLink, aya::programs::ProgramError> {
        Err(aya::programs::ProgramError::AlreadyAttached)
    }
    fn attach_pinned(
        &mut self,
        name: &'static str,
        cgroup: &File,
        pins: &PinDir,
    ) -> Result<(), BpfError> {
        let staging = pins.link_staging(name);
        let err = |action, source| BpfError::Link {
            program: name,
            action,
            path: staging.clone(),
            source,
        };
        let prog = self.program_fd().map_err(BpfError::program(name))?;
        let link = sys::link_create(prog, cgroup.as_fd(), sys::BPF_CGROUP_SETSOCKOPT)
            .map_err(|e| err("creating", e))?;
        let _ = std::fs::remove_file(&staging);
        sys::obj_pin(link.as_fd(), &staging).map_err(|e| err("pinning", e))?;
        std::fs::rename(&staging, pins.link(name)).map_err(|e| err("renaming", e))
    }
}

impl CgroupProgram for CgroupSkb {
    fn program_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, aya::programs::ProgramError> {
        Ok(self.fd()?.as_fd())
    }
    fn attach_link(&mut self, cgroup: &File) -> Result<FdLink, aya::programs::ProgramError> {
        let id = self.attach(cgroup, CgroupSkbAttachType::Egress, LINK_MODE)?;
        self.take_link(id)?
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| e.into())
    }
}

/// Adopt the pinned link (swap in the new program atomically) or, on a
/// first start, attach and pin a new link. A pinned link that is no longer
/// attached to `cgroup_id` (someone called `BPF_LINK_DETACH` on it) is
/// replaced by a new one, and reported.
fn attach_or_adopt(
    name: &'static str,
    prog: &mut dyn CgroupProgram,
    cgroup: &File,
    cgroup_id: u64,
    pins: &PinDir,
) -> Result<Option<super::watchdog::Repair>, BpfError> {
    use super::watchdog::{Finding, Repair};
    let link_pin = pins.link(name);
    if !link_pin.exists() {
        prog.attach_pinned(name, cgroup, pins)?;
        return Ok(None);
    }
    let severed = match sys::obj_get(&link_pin).and_then(|fd| sys::link_info(fd.as_fd())) {
        Ok(info) => info.cgroup_id != cgroup_id,
        Err(e) => {
            warn!(link = %link_pin.display(), error = %e, "pinned link unreadable; attaching a new one");
            true
        }
    };
    if !severed {
        let fd = prog.program_fd().map_err(BpfError::program(name))?;
        match replace_program(name, &link_pin, fd) {
            Ok(()) => return Ok(None),
            // ENOLINK: "Link has been severed" (detached meanwhile).
            Err(BpfError::Link { source, .. }) if source.raw_os_error() == Some(libc::ENOLINK) => {}
            Err(e) => return Err(e),
        }
    }
    warn!(
        program = name,
        "pinned link was detached from its cgroup: attaching a new one"
    );
    prog.attach_pinned(name, cgroup, pins)?;
    Ok(Some(Repair {
        link: name,
        finding: Finding::Detached,
        outcome: Ok(()),
    }))
}

fn replace_program(
    name: &'static str,
    link_pin: &Path,
    prog: std::os::fd::BorrowedFd<'_>,
) -> Result<(), BpfError> {
    let link = sys::obj_get(link_pin).map_err(|source| BpfError::Link {
        program: name,
        action: "opening",
        path: link_pin.to_path_buf(),
        source,
    })?;
    sys::link_update(link.as_fd(), prog).map_err(|source| BpfError::Link {
        program: name,
        action: "updating",
        path: link_pin.to_path_buf(),
        source,
    })
}

fn pin_link(name: &'static str, link: FdLink, path: &Path) -> Result<(), BpfError> {
    link.pin(path).map(drop).map_err(|e| BpfError::Link {
        program: name,
        action: "pinning",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Remove every pin: links first (enforcement stops), then maps.
pub fn uninstall(pin_dir: &Path) -> std::io::Result<()> {
    PinDir::new(pin_dir).remove_all()
}
