//! Apply policy edits without a signal (`policy_watch_seconds`): the
//! policy path is polled for changes in name, size, mtime or inode of its
//! files, following symlinks, which is how a Kubernetes ConfigMap volume
//! swaps in a new version. A change triggers the same reload as SIGHUP.

use std::{os::unix::fs::MetadataExt, path::Path, sync::Arc, time::Duration};

use tracing::info;

use super::Daemon;

/// What the policy files look like right now.
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

pub(super) fn spawn(daemon: &Arc<Daemon>) {
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
                info!(policy = %path.display(), "policy files changed: reloading");
                let _ = d.reload().await;
            }
        }
    });
}
