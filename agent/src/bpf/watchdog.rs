//! Keeping the guard attached. A process with `CAP_SYS_ADMIN`/`CAP_BPF`
//! that sees the pin directory can open a pinned link and detach it
//! (`BPF_LINK_DETACH`), swap its program (`BPF_LINK_UPDATE`) or unlink the
//! pin. The daemon holds a file descriptor on every link (so removing a pin
//! detaches nothing while it runs) and checks each one every second
//! (`Kernel::check_guard`): a cgroup link whose cgroup is gone from its
//! link info is attached again, a replaced program is swapped back, a
//! missing or foreign pin is pinned again. Every finding is returned for
//! the audit trail.

use std::{
    fmt,
    fs::File,
    os::fd::{AsFd, OwnedFd},
};

use tracing::warn;

use super::{
    BpfError, Kernel,
    loader::{LinkKind, with_cgroup_program},
    pins::PinDir,
    sys::{self, LinkInfo},
};

/// What was wrong with a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// No longer attached to its cgroup (`BPF_LINK_DETACH`).
    Detached,
    /// Attached, but running another program (`BPF_LINK_UPDATE`).
    ProgramReplaced,
    /// Its pin was removed or points to another object.
    PinRemoved,
}

impl Finding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detached => "detached",
            Self::ProgramReplaced => "program-replaced",
            Self::PinRemoved => "pin-removed",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding and what the daemon did about it.
#[derive(Debug)]
pub struct Repair {
    /// The program whose link it was (`connect4`, `lineage_fork`…).
    pub link: &'static str,
    pub finding: Finding,
    /// `Err` says why the repair failed (enforcement may be off).
    pub outcome: Result<(), String>,
}

struct Watched {
    name: &'static str,
    kind: LinkKind,
    /// Held so that unlinking the pin does not release the link.
    link: OwnedFd,
    /// As read right after the daemon attached it.
    info: LinkInfo,
}

/// The links the daemon keeps attached.
pub(super) struct Guard {
    cgroup: File,
    cgroup_id: u64,
    pins: PinDir,
    watched: Vec<Watched>,
    /// Severed links found (and replaced) while loading.
    pub(super) found_at_start: Vec<Repair>,
}

impl Guard {
    pub(super) fn new(cgroup: File, cgroup_id: u64, pins: PinDir) -> Self {
        Self {
            cgroup,
            cgroup_id,
            pins,
            watched: Vec::new(),
            found_at_start: Vec::new(),
        }
    }

    /// Start watching the link pinned for `name` (just attached or adopted).
    pub(super) fn watch(&mut self, name: &'static str, kind: LinkKind) -> Result<(), BpfError> {
        let w = open(&self.pins, name, kind)?;
        self.watched.retain(|o| o.name != name);
        self.watched.push(w);
        Ok(())
    }
}

fn open(pins: &PinDir, name: &'static str, kind: LinkKind) -> Result<Watched, BpfError> {
    let path = pins.link(name);
    let err = |action, source| BpfError::Link {
        program: name,
        action,
        path: path.clone(),
        source,
    };
    let link = sys::obj_get(&path).map_err(|e| err("opening", e))?;
    let info = sys::link_info(link.as_fd()).map_err(|e| err("reading the info of", e))?;
    Ok(Watched {
        name,
        kind,
        link,
        info,
    })
}

impl Kernel {
    /// Severed links replaced while loading (to be audited once).
    pub fn take_start_repairs(&mut self) -> Vec<Repair> {
        std::mem::take(&mut self.guard.found_at_start)
    }

    /// Check every watched link and repair what is wrong; returns the
    /// findings (empty when all is well).
    pub fn check_guard(&mut self) -> Vec<Repair> {
        let mut repairs = Vec::new();
        for i in 0..self.guard.watched.len() {
            let (name, kind) = {
                let w = &self.guard.watched[i];
                (w.name, w.kind)
            };
            if let Some(r) = self.check_one(i) {
                if let Err(e) = &r.outcome {
                    warn!(link = name, ?kind, finding = %r.finding, error = %e, "guard link could not be repaired");
                } else {
                    warn!(link = name, finding = %r.finding, "guard link repaired");
                }
                repairs.push(r);
            }
        }
        repairs
    }

    fn check_one(&mut self, i: usize) -> Option<Repair> {
        let g = &self.guard;
        let w = &g.watched[i];
        let (name, kind, expected, cgroup_id) = (w.name, w.kind, w.info, g.cgroup_id);
        let now = sys::link_info(w.link.as_fd()).ok();
        let pinned = match sys::obj_get(&g.pins.link(name)) {
            Ok(fd) => sys::link_info(fd.as_fd()).ok(),
            // Out of descriptors or memory says nothing about the pin: no
            // finding (a false `pin-removed` would be a record that lies).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                ) =>
            {
                warn!(link = name, error = %e, "guard link not checked this time");
                return None;
            }
            Err(_) => None,
        };
        let repair = |finding, outcome: Result<(), BpfError>| Repair {
            link: name,
            finding,
            outcome: outcome.map_err(|e| crate::cli::error_chain(&e)),
        };
        if kind != LinkKind::Tracepoint && now.is_none_or(|n| n.cgroup_id != cgroup_id) {
            let outcome = self.reattach(i);
            return Some(repair(Finding::Detached, outcome));
        }
        if now.is_some_and(|n| n.prog_id != expected.prog_id) {
            let outcome = self.restore_program(i);
            return Some(repair(Finding::ProgramReplaced, outcome));
        }
        if pinned.is_none_or(|p| p.id != expected.id) {
            let outcome = self.repin(i);
            return Some(repair(Finding::PinRemoved, outcome));
        }
        None
    }

    /// Attach the program again with a new link and watch that one.
    fn reattach(&mut self, i: usize) -> Result<(), BpfError> {
        let (name, kind) = (self.guard.watched[i].name, self.guard.watched[i].kind);
        self.guard
            .pins
            .prepare()
            .map_err(|source| BpfError::BpfFs {
                path: self.guard.pins.root().to_path_buf(),
                source,
            })?;
        let (cgroup, pins) = (&self.guard.cgroup, &self.guard.pins);
        with_cgroup_program(&mut self.ebpf, name, kind, |prog| {
            prog.attach_pinned(name, cgroup, pins)
        })?;
        self.guard.watched[i] = open(&self.guard.pins, name, kind)?;
        Ok(())
    }

    /// Swap the daemon's program back into the link.
    fn restore_program(&mut self, i: usize) -> Result<(), BpfError> {
        let w = &self.guard.watched[i];
        let (name, kind) = (w.name, w.kind);
        let link = &w.link;
        with_cgroup_program(&mut self.ebpf, name, kind, |prog| {
            let fd = prog.program_fd().map_err(BpfError::program(name))?;
            sys::link_update(link.as_fd(), fd).map_err(|source| BpfError::Link {
                program: name,
                action: "updating",
                path: std::path::PathBuf::new(),
                source,
            })
        })
    }

    /// Pin the held link again under its name.
    fn repin(&mut self, i: usize) -> Result<(), BpfError> {
        let g = &self.guard;
        let w = &g.watched[i];
        let staging = g.pins.link_staging(w.name);
        let err = |action, source| BpfError::Link {
            program: w.name,
            action,
            path: staging.clone(),
            source,
        };
        g.pins
            .prepare()
            .map_err(|e| err("preparing the directory of", e))?;
        let _ = std::fs::remove_file(&staging);
        sys::obj_pin(w.link.as_fd(), &staging).map_err(|e| err("pinning", e))?;
        std::fs::rename(&staging, g.pins.link(w.name)).map_err(|e| err("renaming", e))
    }
}

/// Pinned cgroup links under `pin_dir` that are attached to no cgroup, by
/// program name (for `palisade doctor`); `None` when nothing is pinned.
pub fn severed_links(pin_dir: &std::path::Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(pin_dir).ok()?;
    let mut severed = Vec::new();
    let mut any = false;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(program) = name.strip_prefix("link_") else {
            continue;
        };
        if program.starts_with("new_") {
            continue;
        }
        any = true;
        let info = sys::obj_get(&e.path()).and_then(|fd| sys::link_info(fd.as_fd()));
        if info.is_ok_and(|i| i.link_type == sys::BPF_LINK_TYPE_CGROUP && i.cgroup_id == 0) {
            severed.push(program.to_string());
        }
    }
    any.then_some(severed)
}
