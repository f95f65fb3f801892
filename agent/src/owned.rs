//! State the daemon reads back at start (the decision journal, saved
//! elevations, learned DNS names) is trusted only in a file the daemon
//! itself could have written: one that someone else made, or could have
//! rewritten, might be an agent's forgery (a file planted where the daemon
//! had not written yet, in a directory others can write).

use std::{os::unix::fs::MetadataExt, path::Path};

/// Why the existing file at `path` is not the daemon's own, if it is not:
/// a link or file owned by another uid, or a file its group or others may
/// write. A missing file is fine (nothing to trust).
pub fn not_own(path: &Path) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    let link = std::fs::symlink_metadata(path).ok()?;
    if link.file_type().is_symlink() && link.uid() != me {
        return Some(format!(
            "it is a link owned by uid {}, not the daemon's uid {me}",
            link.uid()
        ));
    }
    // Its directory too: one another user owns (not root) lets that user
    // swap the daemon's own file for an older copy, or another.
    if let Some(dir) = path.parent().and_then(|d| std::fs::metadata(d).ok())
        && dir.uid() != me
        && dir.uid() != 0
    {
        return Some(format!(
            "its directory is owned by uid {}, not the daemon's uid {me}",
            dir.uid()
        ));
    }
    let file = std::fs::metadata(path).ok()?;
    if file.uid() != me {
        return Some(format!(
            "it is owned by uid {}, not the daemon's uid {me}",
            file.uid()
        ));
    }
    if file.mode() & 0o022 != 0 {
        return Some(format!(
            "its group or others may write it (mode {:o})",
            file.mode() & 0o7777
        ));
    }
    None
}

/// Move an untrusted file out of the daemon's way, beside it, for
/// inspection; returns where it went.
pub fn set_aside(path: &Path, now_ms: u64) -> std::io::Result<std::path::PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".untrusted-{now_ms}"));
    let aside = std::path::PathBuf::from(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// A new file at `tmp` (mode 0600, for the caller to rename into place),
/// never opened through a link someone planted there: what is at `tmp` is
/// removed first, and the file made with `O_EXCL`, which fails rather than
/// follow a link.
pub fn create_new_private(tmp: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
}

/// `bytes` written to a new private file at `tmp` (`create_new_private`),
/// synced when asked.
pub fn write_new_private(tmp: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = create_new_private(tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    Ok(())
}

/// Who holds a lock on the file at `path` (from `/proc/locks`), as
/// "pid N (command line)" each, for the error that stops a daemon whose
/// instance lock is taken: an agent can hold it too, and the operator
/// must learn which process to stop.
pub fn lock_holders(path: &Path) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return "holder unknown".into();
    };
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut pids: Vec<u32> = locks
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // `1: FLOCK ADVISORY WRITE 4242 00:1f:5678 0 EOF`; waiters carry
        // a `->` after the number.
        .filter(|f| f.len() >= 6 && f[1] != "->" && f[5] == id)
        .filter_map(|f| f[4].parse().ok())
        .collect();
    pids.dedup();
    if pids.is_empty() {
        return "holder unknown".into();
    }
    pids.iter()
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .filter(|a| !a.is_empty())
                        .take(4)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            format!("pid {pid} ({cmd})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_of_the_daemon_is_trusted_and_a_writable_or_foreign_one_is_not() {
        let dir = std::env::temp_dir().join(format!("palisade-owned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        assert_eq!(not_own(&f), None, "missing");
        std::fs::write(&f, "{}").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(not_own(&f), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(not_own(&f).unwrap().contains("mode 666"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
            assert!(not_own(&f).unwrap().contains("owned by uid 65534"));
        }
        // A link planted where the daemon writes its temporary file: the
        // link goes, the file it named is untouched.
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let tmp = dir.join("state.tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        write_new_private(&tmp, b"new", true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "new");
        assert!(
            !std::fs::symlink_metadata(&tmp)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::metadata(&tmp).unwrap().mode() & 0o777, 0o600);
        let aside = set_aside(&f, 7).unwrap();
        assert!(aside.to_string_lossy().ends_with("state.json.untrusted-7"));
        assert!(!f.exists() && aside.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_holder_of_a_lock_is_named() {
        use nix::fcntl::{Flock, FlockArg};
        let path =
            std::env::temp_dir().join(format!("palisade-lock-holders-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lock_holders(&path), "holder unknown");
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .unwrap_or_else(|(_, e)| panic!("{e}"));
        let named = lock_holders(&path);
        assert!(
            named.starts_with(&format!("pid {} (", std::process::id())),
            "{named}"
        );
        drop(lock);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}
