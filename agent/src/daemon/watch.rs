//! Reload when the policy changes on disk: a file saved in place, a file
//! renamed over, files added or removed in a policy directory, and the
//! Kubernetes ConfigMap update (which swaps the `..data` symlink with a
//! rename). The inotify watch is on the directory, so atomic replacements
//! are seen at once. Where inotify cannot see changes (some network or
//! FUSE filesystems), `policy_watch_seconds` adds a poll of the files' names,
//! sizes, mtimes and inodes as a fallback. Either way, unchanged content is
//! not a new policy.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use super::{Daemon, reload::Trigger};

/// `Inotify` with the raw-fd access tokio's reactor needs.
struct Watch(Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Events closer together than this are one change.
const SETTLE: Duration = Duration::from_millis(20);

/// The directory to watch for a policy path (file or directory).
fn watched_dir(policy: &Path) -> PathBuf {
    if policy.is_dir() {
        policy.to_path_buf()
    } else {
        policy
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

pub(super) fn spawn(daemon: &Arc<Daemon>) {
    spawn_inotify(daemon);
    spawn_poll(daemon);
}

fn spawn_inotify(daemon: &Arc<Daemon>) {
    let dir = watched_dir(daemon.config.policy_path());
    let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "cannot watch the policy for changes; reload with SIGHUP or `palisade reload`");
            return;
        }
    };
    let flags = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF;
    if let Err(e) = inotify.add_watch(&dir, flags) {
        warn!(error = %e, dir = %dir.display(), "cannot watch the policy directory; reload with SIGHUP or `palisade reload`");
        return;
    }
    // SAFETY: the Inotify owns its fd for as long as the AsyncFd owns it.
    let fd = match unsafe { AsyncFd::register(Watch(inotify)) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %std::io::Error::from(e), "cannot watch the policy for changes");
            return;
        }
    };
    info!(dir = %dir.display(), "watching the policy for changes");
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let mut fd = fd;
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                break;
            };
            // Drain now and for a short while after: one reload per change.
            let mut seen = drain(&guard.get_inner().0);
            guard.clear_ready();
            drop(guard);
            tokio::time::sleep(SETTLE).await;
            seen += drain(&fd.get_ref().0);
            if seen == 0 {
                continue;
            }
            let Some(d) = weak.upgrade() else { break };
            debug!(events = seen, "policy files changed");
            let _ = d.reload_from(Trigger::FileChange).await;
        }
    });
}

fn drain(inotify: &Inotify) -> usize {
    let mut n = 0;
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            break;
        }
        n += events.len();
    }
    n
}

/// What the policy files look like right now (name, size, mtime, inode).
fn fingerprint(path: &Path) -> Vec<(String, u64, i64, i64, u64)> {
    let stat = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                p.display().to_string(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino(),
            )
        })
    };
    let mut out = Vec::new();
    if path.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.filter_map(Result::ok) {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.')
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && let Some(s) = stat(&p)
                {
                    out.push(s);
                }
            }
        }
    } else if let Some(s) = stat(path) {
        out.push(s);
    }
    out.sort();
    out
}

/// The polling fallback (`policy_watch_seconds`, 0 = off).
fn spawn_poll(daemon: &Arc<Daemon>) {
    let seconds = daemon.config.policy_watch_seconds;
    if seconds == 0 {
        return;
    }
    let weak = Arc::downgrade(daemon);
    let path = daemon.config.policy_path().to_path_buf();
    tokio::spawn(async move {
        let mut last = fingerprint(&path);
        let mut tick = tokio::time::interval(Duration::from_secs(seconds));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(d) = weak.upgrade() else { break };
            let now = fingerprint(&path);
            if now != last {
                last = now;
                info!(policy = %path.display(), "policy files changed (poll): reloading");
                let _ = d.reload_from(Trigger::FileChange).await;
            }
        }
    });
}
