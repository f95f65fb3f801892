//! The audit trail on disk: JSON lines sealed into a hash chain, rotated by
//! size, resumed across restarts.
//!
//! Files: `audit.jsonl` (the one being written), `audit.jsonl.1`,
//! `audit.jsonl.2`, … (rotated, higher = newer). The chain runs across all
//! of them. One daemon at a time: `.audit.jsonl.lock` is held with `flock`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use super::chain::{ChainHead, unseal};

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("audit trail {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "audit trail {0} is in use by another palisade daemon (it holds the trail's .lock file; held by: {1}): stop it first; a new daemon adopts the kernel programs it leaves pinned"
    )]
    Locked(PathBuf, String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TrailError + '_ {
    move |source| TrailError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names of a trail's files.
#[derive(Clone, Debug)]
pub struct TrailFiles {
    pub current: PathBuf,
}

impl TrailFiles {
    /// The trail at `current`. A link is followed to the file it names
    /// (the trail kept on another volume): rotation renames that file in
    /// its own directory, never the link, so the rotated files stay where
    /// the trail is, beside the file the link keeps naming.
    pub fn new(current: impl Into<PathBuf>) -> Self {
        let current: PathBuf = current.into();
        // Only a path that goes through a link is rewritten (whether the
        // target exists yet or not: a trail on a fresh volume).
        let resolved = crate::links::resolve_links(&current);
        if resolved.links.is_empty() {
            Self { current }
        } else {
            Self {
                current: resolved.real,
            }
        }
    }

    pub fn rotated_path(&self, n: u64) -> PathBuf {
        let mut s = self.current.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn lock_path(&self) -> PathBuf {
        side_file(&self.current, "lock")
    }

    /// Rotated files, oldest first, as `(n, path)`.
    pub fn rotated(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let dir = match self.current.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(base) = self.current.file_name().and_then(|n| n.to_str()) else {
            return Ok(Vec::new());
        };
        let prefix = format!("{base}.");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((n, entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Every file of the trail in chain order: rotated oldest first, then
    /// the current one (if it exists).
    pub fn all(&self) -> io::Result<Vec<PathBuf>> {
        let mut all: Vec<PathBuf> = self.rotated()?.into_iter().map(|(_, p)| p).collect();
        if self.current.exists() {
            all.push(self.current.clone());
        }
        Ok(all)
    }
}

/// How the trail is kept.
#[derive(Clone, Debug)]
pub struct TrailOptions {
    /// Rotate before a write would take the file past this size; 0 = never.
    pub rotate_bytes: u64,
    /// Rotated files kept; older ones are deleted. 0 = keep all.
    pub keep: u64,
    /// `fdatasync` after every batch.
    pub fsync: bool,
    /// Retention never deletes a file written to more recently than this.
    pub keep_min_age: std::time::Duration,
    /// An exporter's cursor (the last `seq` delivered): retention never
    /// deletes a file holding records after it.
    pub export_cursor: Option<PathBuf>,
}

/// Rotated files retention may delete now, oldest first, and where the
/// chain continues after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    pub files: Vec<PathBuf>,
    /// The last record they hold: the first kept record links to it.
    pub through: ChainHead,
}

/// What opening the trail found.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Bytes of an incomplete last line that were cut off (a write torn by a
    /// crash or a full disk): one record lost.
    pub torn_bytes: u64,
    /// A file that held no sealed records (written by an older version) was
    /// rotated away so the chain starts in a file of its own.
    pub unsealed_rotated: Option<PathBuf>,
}

pub struct TrailWriter {
    files: TrailFiles,
    opts: TrailOptions,
    file: File,
    len: u64,
    head: ChainHead,
    /// A rotation happened since retention last looked.
    retention_pending: bool,
    /// When retention last looked (files age into deletability).
    retention_checked: std::time::Instant,
    _lock: Flock<File>,
}

impl TrailWriter {
    /// Lock the trail, find where the chain stopped, open for appending.
    pub fn open(path: &Path, opts: TrailOptions) -> Result<(Self, Resumed), TrailError> {
        let files = TrailFiles::new(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let lock_path = files.lock_path();
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            TrailError::Locked(path.to_path_buf(), crate::owned::lock_holders(&lock_path))
        })?;

        let mut resumed = Resumed::default();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        resumed.torn_bytes = cut_torn_tail(&mut file).map_err(io_err(path))?;
        let mut head = last_sealed(&mut file).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let mut writer = Self {
            files,
            opts,
            file,
            len,
            head: ChainHead::genesis(),
            retention_pending: true,
            retention_checked: std::time::Instant::now(),
            _lock: lock,
        };
        if head.is_none() && len > 0 {
            // Lines without a chain (an older trail): keep them, but in a
            // file of their own.
            resumed.unsealed_rotated = Some(writer.rotate()?);
        }
        if head.is_none() {
            for (_, rotated) in writer.files.rotated().map_err(io_err(path))?.iter().rev() {
                let mut f = File::open(rotated).map_err(io_err(rotated))?;
                head = last_sealed(&mut f).map_err(io_err(rotated))?;
                if head.is_some() {
                    break;
                }
            }
        }
        writer.head = head.unwrap_or_else(ChainHead::genesis);
        info!(
            file = %path.display(),
            seq = writer.head.seq,
            bytes = writer.len,
            "audit trail opened"
        );
        Ok((writer, resumed))
    }

    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    pub fn files(&self) -> &TrailFiles {
        &self.files
    }

    /// Append sealed lines (each without newline) that continue the chain
    /// from `head()` up to `new_head`, in one write, then `fdatasync` when
    /// the options ask for it. On failure the file is cut back to where it
    /// was and the head does not move: the chain never holds half a record.
    pub fn append(&mut self, lines: &[String], new_head: ChainHead) -> Result<(), TrailError> {
        self.write(lines, new_head)?;
        if self.opts.fsync {
            self.sync()?;
        }
        Ok(())
    }

    /// `append` without the `fdatasync`: the lines are in the file (safe
    /// from a crash of this process) and the head has moved; `sync` puts
    /// them on disk.
    pub fn write(&mut self, lines: &[String], new_head: ChainHead) -> Result<(), TrailError> {
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        let size = buf.len() as u64;
        if self.opts.rotate_bytes > 0 && self.len > 0 && self.len + size > self.opts.rotate_bytes {
            self.rotate()?;
        }
        let path = self.files.current.clone();
        if let Err(e) = self.file.write_all(buf.as_bytes()) {
            if let Err(cut) = self.file.set_len(self.len) {
                warn!(error = %cut, file = %path.display(), "cannot cut back a failed audit write");
            }
            return Err(io_err(&path)(e));
        }
        self.len += size;
        self.head = new_head;
        Ok(())
    }

    /// `fdatasync` the file being written (what `write` put there).
    pub fn sync(&mut self) -> Result<(), TrailError> {
        self.file.sync_data().map_err(io_err(&self.files.current))
    }

    /// Whether the options ask for `fdatasync`.
    pub fn syncs(&self) -> bool {
        self.opts.fsync
    }

    /// Move the current file to `<file>.<n+1>`, start a new one, and apply
    /// retention. Returns the rotated file's new name.
    fn rotate(&mut self) -> Result<PathBuf, TrailError> {
        let current = self.files.current.clone();
        let rotated = self.files.rotated().map_err(io_err(&current))?;
        let next = rotated.last().map_or(1, |(n, _)| n + 1);
        let target = self.files.rotated_path(next);
        self.file.sync_all().map_err(io_err(&current))?;
        fs::rename(&current, &target).map_err(io_err(&target))?;
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&current)
            .map_err(io_err(&current))?;
        self.len = 0;
        if let Some(dir) = current.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        info!(rotated = %target.display(), seq = self.head.seq, "audit trail rotated");
        // Retention happens after the write (`expired`, `delete`), with a
        // record of what it deletes.
        self.retention_pending = true;
        Ok(target)
    }
}

impl TrailWriter {
    /// Rotated files retention may delete now (oldest first): beyond the
    /// newest `keep`, and only a run from the oldest that is older than
    /// `keep_min_age` and, with an exporter, wholly delivered. Nothing is
    /// deleted here: the caller records the deletion in the chain first.
    pub fn expired(&mut self) -> io::Result<Option<Expired>> {
        const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
        if self.opts.keep == 0
            || !(self.retention_pending || self.retention_checked.elapsed() >= LOOK_EVERY)
        {
            return Ok(None);
        }
        self.retention_pending = false;
        self.retention_checked = std::time::Instant::now();
        let rotated = self.files.rotated()?;
        let excess = rotated.len().saturating_sub(self.opts.keep as usize);
        if excess == 0 {
            return Ok(None);
        }
        let delivered = match &self.opts.export_cursor {
            None => u64::MAX,
            Some(p) => match fs::read_to_string(p) {
                Ok(t) => t.trim().parse().unwrap_or(0),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            },
        };
        let now = std::time::SystemTime::now();
        let mut out: Option<Expired> = None;
        for (_, path) in rotated.into_iter().take(excess) {
            let meta = fs::metadata(&path)?;
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < self.opts.keep_min_age {
                break;
            }
            let mut f = File::open(&path)?;
            let Some(last) = last_sealed(&mut f)? else {
                break;
            };
            if last.seq > delivered {
                break;
            }
            let e = out.get_or_insert_with(|| Expired {
                files: Vec::new(),
                through: last.clone(),
            });
            e.files.push(path);
            e.through = last;
        }
        Ok(out)
    }

    /// Delete what `expired` returned (its record is in the trail).
    pub fn delete(&mut self, expired: &Expired) {
        for f in &expired.files {
            match fs::remove_file(f) {
                Ok(()) => {
                    info!(file = %f.display(), through_seq = expired.through.seq, "old audit file removed (retention)")
                }
                Err(e) => warn!(error = %e, file = %f.display(), "removing old audit file"),
            }
        }
    }
}

/// A file that belongs with the trail but is not part of it (lock, cursor,
/// counters): `<dir>/.<name>.<what>`, hidden so that `audit.jsonl*` names
/// exactly the trail's files.
pub fn side_file(trail: &Path, what: &str) -> PathBuf {
    let name = trail
        .file_name()
        .map_or_else(|| "audit".into(), |n| n.to_string_lossy().into_owned());
    trail.with_file_name(format!(".{name}.{what}"))
}

/// Inode of a path, if it exists.
pub fn inode(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Cut an incomplete last line; returns how many bytes were cut.
fn cut_torn_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let tail = read_tail(file, len, 1)?;
    if tail == b"\n" {
        return Ok(0);
    }
    // Find the last newline, reading backwards in chunks.
    let mut end = len;
    while end > 0 {
        let take = end.min(64 * 1024);
        let chunk = read_tail(file, end, take)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = end - take + i as u64 + 1;
            file.set_len(keep)?;
            return Ok(len - keep);
        }
        end -= take;
    }
    file.set_len(0)?;
    Ok(len)
}

/// `n` bytes ending at `end`.
fn read_tail(file: &mut File, end: u64, n: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n as usize];
    file.seek(SeekFrom::Start(end - n))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// The last sealed record of a file (scanning back from the end).
fn last_sealed(file: &mut File) -> io::Result<Option<ChainHead>> {
    let len = file.metadata()?.len();
    let mut window = 64 * 1024u64;
    loop {
        let take = window.min(len);
        let tail = read_tail(file, len, take)?;
        let text = String::from_utf8_lossy(&tail);
        // The first line of a partial window may be cut: skip it unless the
        // window starts at the beginning of the file.
        let lines: Vec<&str> = text.lines().collect();
        let skip = usize::from(take < len);
        for line in lines.iter().skip(skip).rev() {
            if let Ok(r) = unseal(line) {
                return Ok(Some(ChainHead {
                    seq: r.seq,
                    hash: r.hash,
                }));
            }
        }
        if take == len {
            return Ok(None);
        }
        window *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, EventKind, chain::seal, verify::verify};

    fn write(w: &mut TrailWriter, n: usize) {
        for _ in 0..n {
            let mut ev = AuditEvent::new(EventKind::Daemon, "x", "y");
            let (line, head) = seal(&mut ev, w.head()).unwrap_or_else(|e| panic!("{e}"));
            w.append(&[line], head).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn rotates_resumes_and_keeps_one_chain() {
        let dir = std::env::temp_dir().join(format!("palisade-trail-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let opts = TrailOptions {
            rotate_bytes: 1500,
            keep: 0,
            fsync: false,
            keep_min_age: std::time::Duration::ZERO,
            export_cursor: None,
        };
        {
            let (mut w, r) =
                TrailWriter::open(&path, opts.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.torn_bytes, 0);
            assert!(matches!(
                TrailWriter::open(&path, opts.clone()),
                Err(TrailError::Locked(..))
            ));
            write(&mut w, 20);
        }
        // A torn write at the end is cut on the next start.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"time\":\"x\"")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let (mut w, r) = TrailWriter::open(&path, opts).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.torn_bytes, 11);
        assert_eq!(w.head().seq, 20);
        write(&mut w, 5);
        let files = w.files().all().unwrap_or_else(|e| panic!("{e}"));
        assert!(files.len() > 2, "{files:?}");
        let report = verify(&files).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.intact(), "{:?}", report.findings);
        assert_eq!(report.records, 25);
        drop(w);
        let _ = fs::remove_dir_all(&dir);
    }
    #[test]
    fn retention_spares_young_and_undelivered_files() {
        let dir = std::env::temp_dir().join(format!("palisade-retain-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let cursor = dir.join("cursor");
        let mut opts = TrailOptions {
            rotate_bytes: 600,
            keep: 1,
            fsync: false,
            keep_min_age: std::time::Duration::from_secs(3600),
            export_cursor: None,
        };
        let (mut w, _) = TrailWriter::open(&path, opts.clone()).unwrap_or_else(|e| panic!("{e}"));
        write(&mut w, 30);
        let rotated = w.files().rotated().unwrap_or_default().len();
        assert!(rotated > 3, "{rotated} rotated files");
        // Younger than keep_min_age: nothing goes.
        assert_eq!(w.expired().unwrap_or_else(|e| panic!("{e}")), None);
        drop(w);
        opts.keep_min_age = std::time::Duration::ZERO;
        opts.export_cursor = Some(cursor.clone());
        let (mut w, _) = TrailWriter::open(&path, opts.clone()).unwrap_or_else(|e| panic!("{e}"));
        // Nothing exported yet: nothing goes.
        assert_eq!(w.expired().unwrap_or_else(|e| panic!("{e}")), None);
        // Exported up to seq 5: the files wholly at or before it go.
        fs::write(&cursor, "5\n").unwrap_or_else(|e| panic!("{e}"));
        w.retention_pending = true;
        let e = w
            .expired()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("files up to seq 5 may go"));
        assert!(e.through.seq <= 5 && !e.files.is_empty(), "{e:?}");
        w.delete(&e);
        for f in &e.files {
            assert!(!f.exists());
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
