//! Decision state that survives the daemon: budget levels, used token ids,
//! revocation cutoffs, approvals (with their override tokens) and the names
//! of just-in-time grants, in an append-only journal (`state.file`).
//!
//! ```yaml
//! state:
//!   file: /var/lib/palisade/state.journal
//!   fsync: batch          # batch | always
//!   fsync_interval: 10ms  # batch: the longest a written record waits for fdatasync
//! ```
//!
//! Every change is written (one `write`) before the daemon acts on it, so a
//! daemon that crashes, is killed or is upgraded loses nothing. `fsync`
//! decides what a host crash may lose: `batch` syncs within
//! `fsync_interval` of the write, `always` answers only once the record is
//! synced (group commit: one `fdatasync` covers every caller waiting).
//!
//! A journal that is damaged (truncated, edited, unreadable) is renamed
//! aside for inspection and the daemon starts fail-closed for what it may
//! have lost (`Snapshot::fail_closed`).

mod frame;
mod journal;
pub mod record;
mod restore;
#[cfg(test)]
mod tests;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;

pub use journal::{Journal, Seq, SnapshotFn, sibling};
pub use record::{ApprovalRecord, GrantRecord, Record};
pub use restore::{BudgetLevel, DamagedLine, Snapshot};

/// When records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Answer once the record is synced.
    Always,
    /// Answer once the record is written; sync within this interval.
    Interval(Duration),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The journal (created with its directory, mode 0600).
    pub file: PathBuf,
    /// `batch` or `always`.
    pub fsync: String,
    /// With `batch`: how long a written record may wait for `fdatasync`.
    pub fsync_interval: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("/var/lib/palisade/state.journal"),
            fsync: "batch".into(),
            fsync_interval: "10ms".into(),
        }
    }
}

impl StateConfig {
    /// Check the settings; the message names the key.
    pub fn check(&self) -> Result<SyncMode, String> {
        let interval = humantime::parse_duration(&self.fsync_interval).map_err(|e| {
            format!(
                "state.fsync_interval = {:?}: {e} (write e.g. \"10ms\")",
                self.fsync_interval
            )
        })?;
        match self.fsync.as_str() {
            "always" => Ok(SyncMode::Always),
            "batch" if interval <= Duration::from_secs(1) => Ok(SyncMode::Interval(interval)),
            "batch" => Err(format!(
                "state.fsync_interval = {:?}: at most 1s",
                self.fsync_interval
            )),
            other => Err(format!("state.fsync = {other:?}: use `batch` or `always`")),
        }
    }

    pub fn resolve_paths(&mut self, base: &Path) {
        self.file = base.join(&self.file);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error(
        "state file {0} is in use by another palisade daemon (it holds the .lock file next to it; held by: {1}): stop it first"
    )]
    InUse(PathBuf, String),
    #[error("state record: {0}")]
    Encode(String),
    #[error("the state journal is not open")]
    NotOpen,
    #[error("the state journal failed ({0}); changes that must be recorded are refused")]
    Failed(String),
    #[error("{0}")]
    Config(String),
}

/// Where components record their changes. `Log::default()` records nothing
/// (unit tests, the CLI's in-process policy tests).
#[derive(Clone, Default)]
pub struct Log(Option<Arc<Journal>>);

impl Log {
    pub fn new(journal: Arc<Journal>) -> Self {
        Self(Some(journal))
    }

    /// Append the record `make` builds (built only when a journal is on).
    pub fn append(&self, make: impl FnOnce() -> Record) -> Result<Seq, StateError> {
        match &self.0 {
            Some(j) => j.append(&make()),
            None => Ok(Seq::default()),
        }
    }

    /// Append the records `make` builds with one `write`.
    pub fn append_all(&self, make: impl FnOnce() -> Vec<Record>) -> Result<Seq, StateError> {
        match &self.0 {
            Some(j) => j.append_all(&make()),
            None => Ok(Seq::default()),
        }
    }

    /// Wait for `seq` to be durable (with `fsync: always`); hold no lock.
    pub fn durable(&self, seq: Seq) -> Result<(), StateError> {
        match &self.0 {
            Some(j) => j.durable(seq),
            None => Ok(()),
        }
    }

    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.0.as_ref()
    }
}

/// What was on disk at start.
#[derive(Debug)]
pub enum Found {
    /// No journal yet: the first start with durable state.
    Nothing,
    Clean {
        records: usize,
    },
    /// Damaged: renamed to `kept_aside`; `lines` says what is wrong.
    Damaged {
        kept_aside: PathBuf,
        lines: Vec<DamagedLine>,
        records: usize,
    },
}

pub struct Opened {
    pub journal: Arc<Journal>,
    pub snapshot: Snapshot,
    pub found: Found,
}

/// How far past this start the cutoff for tokens of an unknown past lies.
const UNKNOWN_PAST_MARGIN_MS: u64 = 2000;

/// Lock and read the journal of `config`; a damaged one is moved aside.
pub fn open(config: &StateConfig) -> Result<Opened, StateError> {
    let sync = config.check().map_err(StateError::Config)?;
    let path = &config.file;
    // Where nothing (or nothing trustworthy) says which tokens were used,
    // every token issued before this start is refused. Tokens carry their
    // issue time in ms, and a daemon pushes it past its own cutoff by at
    // most this margin, so the margin covers every token a daemon killed
    // just before could have issued; tokens of earlier versions (whole
    // seconds, up to two ahead of the clock) too.
    let unknown_past = record::now_ms() + UNKNOWN_PAST_MARGIN_MS;
    // Lock first: a second daemon must not move the first one's file.
    let mut journal = Journal::lock(path, sync, unknown_past)?;
    // A journal someone else made or may rewrite (planted where the daemon
    // had not written yet) is not read at all: damaged, wholly.
    if let Some(why) = crate::owned::not_own(path) {
        let kept_aside = crate::owned::set_aside(path, record::now_ms())
            .map_err(|e| StateError::Io(path.clone(), e))?;
        journal.set_replay_since(unknown_past);
        return Ok(Opened {
            journal: Arc::new(journal),
            snapshot: Snapshot::default(),
            found: Found::Damaged {
                kept_aside,
                lines: vec![DamagedLine {
                    line: 0,
                    offset: 0,
                    what: format!("not read: {why}"),
                }],
                records: 0,
            },
        });
    }
    let read = restore::read(path).map_err(|e| StateError::Io(path.clone(), e))?;
    let (snapshot, found, replay_since) = match read {
        None => (Snapshot::default(), Found::Nothing, unknown_past),
        Some(r) if r.damage.is_empty() => {
            let since = r.snapshot.replay_since.unwrap_or(unknown_past);
            (r.snapshot, Found::Clean { records: r.records }, since)
        }
        Some(r) => {
            let kept_aside = sibling(path, &format!(".damaged-{}", record::now_ms()));
            std::fs::rename(path, &kept_aside).map_err(|e| StateError::Io(path.clone(), e))?;
            (
                r.snapshot,
                Found::Damaged {
                    kept_aside,
                    lines: r.damage,
                    records: r.records,
                },
                unknown_past,
            )
        }
    };
    journal.set_replay_since(replay_since);
    Ok(Opened {
        journal: Arc::new(journal),
        snapshot,
        found,
    })
}

impl Snapshot {
    /// Records may be missing: count every budget as spent now, forget used
    /// token ids (every token issued before this start is refused instead),
    /// and drop approvals still pending or approved, returning them for the
    /// audit trail. Rejected, expired and consumed approvals stay listed.
    pub fn fail_closed(&mut self, now_ms: u64) -> Vec<ApprovalRecord> {
        self.budget_floor_ms = Some(now_ms);
        self.used.clear();
        let live: Vec<String> = self
            .approvals
            .values()
            .filter(|a| a.state == "pending" || a.state == "approved")
            .map(|a| a.id.clone())
            .collect();
        let mut dropped: Vec<ApprovalRecord> = live
            .iter()
            .filter_map(|id| self.approvals.remove(id))
            .collect();
        dropped.sort_by(|a, b| a.id.cmp(&b.id));
        dropped
    }
}
