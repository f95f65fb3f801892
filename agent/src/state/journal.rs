//! The append-only journal: one `write` per record before the change is
//! acted on (so a crashed or killed daemon loses nothing it answered for),
//! `fdatasync` batched on a thread of its own (group commit), and
//! compaction by rewriting the live state into a new file that is renamed
//! over the old one.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, atomic::Ordering},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use tracing::{debug, warn};

use super::{
    StateError, SyncMode,
    frame::{encode, encode_into},
    record::{FORMAT, Record, now_ms},
};

/// Compact once the records appended since the last rewrite exceed this, or
/// the size of the last rewrite, whichever is larger.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// The live state, as records, from whoever owns it; `None` once the
/// owner is gone (nothing is rewritten then).
pub type SnapshotFn = Box<dyn Fn() -> Option<Vec<Record>> + Send + Sync>;

/// Position of an appended record: durable once the journal has synced it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(u64);

struct Inner {
    file: Option<Arc<File>>,
    len: u64,
    appended: u64,
    synced: u64,
    since_rewrite: u64,
    rewrite_bytes: u64,
    /// Lines appended while a rewrite is under way, to add to the new file.
    tail: Option<Vec<Vec<u8>>>,
    failed: Option<String>,
    stop: bool,
}

pub struct Journal {
    path: PathBuf,
    sync: SyncMode,
    /// Unix ms: tokens issued at or before it are refused.
    replay_since: u64,
    inner: Mutex<Inner>,
    /// Signalled when there is something to sync, or on stop.
    wake: Condvar,
    /// Signalled after every sync.
    synced: Condvar,
    snapshot: OnceLock<SnapshotFn>,
    rewrite_lock: Mutex<()>,
    compacting: std::sync::atomic::AtomicBool,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: Flock<File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |e| StateError::Io(path.to_path_buf(), e)
}

/// A sibling of `path` with `suffix` appended to its name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

impl Journal {
    /// Take the journal's lock (one daemon per state file). Nothing is
    /// written until `begin`.
    pub fn lock(path: &Path, sync: SyncMode, replay_since: u64) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        let lock_path = sibling(path, ".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            StateError::InUse(path.to_path_buf(), crate::owned::lock_holders(&lock_path))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            sync,
            replay_since,
            inner: Mutex::new(Inner {
                file: None,
                len: 0,
                appended: 0,
                synced: 0,
                since_rewrite: 0,
                rewrite_bytes: 0,
                tail: None,
                failed: None,
                stop: false,
            }),
            wake: Condvar::new(),
            synced: Condvar::new(),
            snapshot: OnceLock::new(),
            rewrite_lock: Mutex::new(()),
            compacting: std::sync::atomic::AtomicBool::new(false),
            syncer: Mutex::new(None),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn replay_since(&self) -> u64 {
        self.replay_since
    }

    pub fn set_replay_since(&mut self, since: u64) {
        self.replay_since = since;
    }

    fn locked(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write the live state as a fresh file and start syncing.
    pub fn begin(self: &Arc<Self>, snapshot: SnapshotFn) -> Result<(), StateError> {
        let _ = self.snapshot.set(snapshot);
        self.rewrite()?;
        let weak = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("palisade-state".into())
            .spawn(move || sync_loop(&weak))
            .map_err(io(&self.path))?;
        *self
            .syncer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        Ok(())
    }

    /// Append one record. It is in the file (safe from a crash of this
    /// process) when this returns; `durable` waits for the disk.
    pub fn append(&self, record: &Record) -> Result<Seq, StateError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Append several records with one `write`.
    pub fn append_all(&self, records: &[Record]) -> Result<Seq, StateError> {
        let mut line = Vec::with_capacity(192 * records.len());
        for r in records {
            encode_into(r, &mut line).map_err(|e| StateError::Encode(e.to_string()))?;
        }
        let mut inner = self.locked();
        if let Some(why) = &inner.failed {
            return Err(StateError::Failed(why.clone()));
        }
        let Some(file) = inner.file.clone() else {
            return Err(StateError::NotOpen);
        };
        if let Err(e) = (&*file).write_all(&line) {
            // Cut a partial line off so the next record starts clean.
            let _ = file.set_len(inner.len);
            return Err(StateError::Io(self.path.clone(), e));
        }
        inner.len += line.len() as u64;
        inner.since_rewrite += line.len() as u64;
        // Only a syncer with nothing to do waits for a signal; one with a
        // batch under way looks again when it is done.
        let idle = inner.appended == inner.synced;
        inner.appended += 1;
        let seq = Seq(inner.appended);
        if let Some(tail) = inner.tail.as_mut() {
            tail.push(line);
        }
        drop(inner);
        if idle {
            self.wake.notify_one();
        }
        Ok(seq)
    }

    /// With `sync: always`, wait until `seq` is on disk (one `fdatasync`
    /// covers every record appended before it). Call it with no lock held.
    pub fn durable(&self, seq: Seq) -> Result<(), StateError> {
        if self.sync != SyncMode::Always {
            return Ok(());
        }
        let mut inner = self.locked();
        while inner.synced < seq.0 {
            if let Some(why) = &inner.failed {
                return Err(StateError::Failed(why.clone()));
            }
            inner = self
                .synced
                .wait(inner)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    /// Sync what is pending and stop the sync thread (clean shutdown).
    pub fn close(&self) {
        self.sync_now();
        self.locked().stop = true;
        self.wake.notify_all();
        let handle = self
            .syncer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn sync_now(&self) {
        let (file, target) = {
            let inner = self.locked();
            (inner.file.clone(), inner.appended)
        };
        let Some(file) = file else { return };
        let result = file.sync_data();
        let mut inner = self.locked();
        match result {
            Ok(()) => inner.synced = inner.synced.max(target),
            Err(e) => {
                warn!(file = %self.path.display(), error = %e, "state journal: fdatasync failed; refusing changes that need it");
                inner.failed = Some(format!("fdatasync {}: {e}", self.path.display()));
            }
        }
        drop(inner);
        self.synced.notify_all();
    }

    fn wants_rewrite(&self) -> bool {
        let inner = self.locked();
        inner.tail.is_none()
            && inner.since_rewrite > COMPACT_MIN_BYTES.max(inner.rewrite_bytes)
            && inner.failed.is_none()
    }

    /// Rewrite the journal from the live state: header and snapshot into a
    /// temporary file, then the records appended meanwhile, `fsync`, rename.
    pub fn rewrite(&self) -> Result<(), StateError> {
        let _one = self
            .rewrite_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(snapshot) = self.snapshot.get() else {
            return Err(StateError::NotOpen);
        };
        self.locked().tail = Some(Vec::new());
        let result = self.rewrite_inner(snapshot);
        if result.is_err() {
            self.locked().tail = None;
        }
        result
    }

    fn rewrite_inner(&self, snapshot: &SnapshotFn) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let tmp = sibling(&self.path, ".tmp");
        let open = || crate::owned::create_new_private(&tmp).map_err(io(&tmp));
        let Some(live) = snapshot() else {
            return Err(StateError::NotOpen);
        };
        let file = open()?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &file);
        let header = Record::Header {
            format: FORMAT,
            written_ms: now_ms(),
            replay_since: super::record::second_covering(self.replay_since),
            replay_since_ms: Some(self.replay_since),
        };
        let mut len = 0u64;
        let mut records = 0usize;
        for r in std::iter::once(header).chain(live) {
            let line = encode(&r).map_err(|e| StateError::Encode(e.to_string()))?;
            out.write_all(&line).map_err(io(&tmp))?;
            len += line.len() as u64;
            records += 1;
        }
        out.flush().map_err(io(&tmp))?;
        drop(out);
        file.sync_data().map_err(io(&tmp))?;
        // Appends wait from here: the records they made meanwhile go in,
        // then the new file replaces the old.
        let mut inner = self.locked();
        let tail = inner.tail.take().unwrap_or_default();
        let mut f = &file;
        for line in &tail {
            f.write_all(line).map_err(io(&tmp))?;
            len += line.len() as u64;
        }
        if !tail.is_empty() {
            file.sync_data().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        sync_dir(&self.path);
        let appender = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        inner.file = Some(Arc::new(appender));
        inner.len = len;
        inner.rewrite_bytes = len;
        inner.since_rewrite = 0;
        inner.synced = inner.appended;
        drop(inner);
        self.synced.notify_all();
        debug!(
            file = %self.path.display(),
            records,
            bytes = len,
            appended_meanwhile = tail.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "state journal rewritten"
        );
        Ok(())
    }
}

fn sync_loop(weak: &std::sync::Weak<Journal>) {
    loop {
        let Some(j) = weak.upgrade() else { return };
        {
            let mut inner = j.locked();
            while !inner.stop && inner.appended == inner.synced {
                let (guard, _) = j
                    .wake
                    .wait_timeout(inner, Duration::from_secs(1))
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                inner = guard;
                if Arc::strong_count(&j) == 1 {
                    return;
                }
            }
            if inner.stop {
                return;
            }
        }
        if let SyncMode::Interval(d) = j.sync {
            // Let a batch gather: one fdatasync for everything appended
            // within the interval.
            std::thread::sleep(d);
        }
        j.sync_now();
        if j.wants_rewrite() && !j.compacting.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(&j);
            let spawned = std::thread::Builder::new()
                .name("palisade-compact".into())
                .spawn(move || {
                    if let Some(j) = weak.upgrade() {
                        if let Err(e) = j.rewrite() {
                            warn!(error = %e, "state journal: compaction failed; will retry");
                        }
                        j.compacting.store(false, Ordering::SeqCst);
                    }
                });
            if let Err(e) = spawned {
                j.compacting.store(false, Ordering::SeqCst);
                warn!(error = %e, "state journal: cannot start compaction");
            }
        }
    }
}
