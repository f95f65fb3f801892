//! bpffs: make sure it is mounted, and keep every pin path in one place.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::mounts::{BPFFS as DEFAULT_BPFFS, ensure_bpffs, is_bpffs};

/// Maps pinned under the daemon's directory; they carry enforcement state.
pub const PINNED_MAPS: &[&str] = &[
    "CGROUP_IDENT",
    "ACTIVE_GEN",
    "IDENT_CFG",
    "IDENT_STATE",
    "IDENT_NAMES",
    "ALLOW_LPM",
    "DENY_LPM",
    "PORTSETS",
    "EVENTS",
    "EVENTS_LOST",
    "VERDICTS",
    "DNS_CFG",
    "LEARNED",
    "DNS_ORIG",
    "GRANTS",
    "LINEAGE",
    "SOCK_GUARD",
    "GUARD_CFG",
    "AGG_CFG",
    "AGG",
    "AGG_BUDGET",
    "AGG_OVERFLOW",
    "BIND_RESERVED",
];

/// Maps earlier versions pinned and this one no longer uses (their state
/// moved to another map): removed when the daemon loads, so they do not
/// linger on bpffs.
pub const RETIRED_MAPS: &[&str] = &["SOCK_IDENT", "SOCK_JUDGED"];

/// The daemon's private pin directory, e.g. `/sys/fs/bpf/palisade`.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.root.join(format!("link_{program}"))
    }

    /// Temporary name for make-before-break replacement of a link. bpffs
    /// refuses names with a dot (EPERM), hence no `.new` suffix.
    pub fn link_staging(&self, program: &str) -> PathBuf {
        self.root.join(format!("link_new_{program}"))
    }

    /// True when a previous daemon left enforcement pinned here.
    pub fn has_pins(&self) -> bool {
        self.link("connect4").exists()
    }

    /// Mount bpffs if needed and create the directory.
    pub fn prepare(&self) -> io::Result<()> {
        ensure_bpffs(&self.root)?;
        fs::create_dir_all(&self.root)?;
        if !is_bpffs(&self.root) {
            return Err(io::Error::other(format!(
                "{} is not on a bpf filesystem; set `bpffs` to a directory under a bpffs mount such as {DEFAULT_BPFFS}",
                self.root.display()
            )));
        }
        for name in RETIRED_MAPS {
            match fs::remove_file(self.map(name)) {
                Ok(()) => tracing::info!(
                    map = name,
                    "removed the pin of a map this version no longer uses"
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Remove every pin (links first, so enforcement stops cleanly) and the
    /// directory. Missing pins are not an error.
    pub fn remove_all(&self) -> io::Result<()> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        // Links before maps: detaching first means no program runs against
        // half-removed state.
        paths.sort_by_key(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("link_"))
        });
        for p in paths {
            let is_link = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("link_"));
            if is_link {
                // Detach synchronously; the pin's own release is deferred.
                if let Ok(fd) = super::sys::obj_get(&p) {
                    use std::os::fd::AsFd;
                    if let Err(e) = super::sys::link_detach(fd.as_fd()) {
                        tracing::debug!(error = %e, link = %p.display(), "BPF_LINK_DETACH");
                    }
                }
            }
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match fs::remove_dir(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
