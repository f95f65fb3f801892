//! `audit.ocsf`: the trail as OCSF events, one per line, in a file of its
//! own for a SIEM's file collector.
//!
//! Like the OTLP exporter, the sink reads sealed records back from the
//! trail behind the writer and keeps the last `seq` it wrote in a cursor
//! file, so it never holds up the trail, survives restarts without gaps
//! and catches up after a write error (a full disk) once it clears. A
//! failed write is cut back, so the file never holds half an event;
//! records that retention deleted before the sink got to them are counted
//! as a `loss` record (`ocsf-spool-expired`).

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::audit::{
    AuditEvent, AuditPipeline, EventKind,
    spool::{SpoolRecord, TrailReader},
    trail::{TrailFiles, side_file},
};

/// `audit.ocsf` in the daemon config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcsfFileConfig {
    /// The OCSF JSON-lines file.
    pub file: PathBuf,
    /// Rotate before the file grows past this many bytes; 0 = never.
    #[serde(default = "default_rotate")]
    pub rotate_bytes: u64,
    /// Rotated files kept (oldest removed first); 0 = keep all.
    #[serde(default = "default_keep")]
    pub keep: u64,
    /// Where the written position is kept; default
    /// `.<trail name>.ocsf-cursor` next to the trail.
    #[serde(default)]
    pub cursor: Option<PathBuf>,
}

fn default_rotate() -> u64 {
    64 << 20
}
fn default_keep() -> u64 {
    16
}

impl OcsfFileConfig {
    pub fn cursor_path(&self, trail: &Path) -> PathBuf {
        self.cursor
            .clone()
            .unwrap_or_else(|| side_file(trail, "ocsf-cursor"))
    }

    /// Relative paths are relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.file = base.join(&self.file);
        if let Some(c) = &mut self.cursor {
            *c = base.join(&*c);
        }
    }
}

/// Append `records` as OCSF events; a failed write leaves the file as it
/// was. Rotates first when the file is full.
fn append(cfg: &OcsfFileConfig, host: &str, records: &[SpoolRecord]) -> std::io::Result<()> {
    let mut text = String::new();
    for r in records {
        if let Some(ev) = super::from_line(&r.line, host) {
            text.push_str(&ev.to_string());
            text.push('\n');
        }
    }
    let size = std::fs::metadata(&cfg.file).map_or(0, |m| m.len());
    if cfg.rotate_bytes > 0 && size > 0 && size + text.len() as u64 > cfg.rotate_bytes {
        rotate(cfg)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.file)?;
    let before = f.metadata()?.len();
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_data());
    if let Err(e) = written {
        let _ = f.set_len(before);
        return Err(e);
    }
    Ok(())
}

/// The `metadata.sequence` of the last complete event in the file, after
/// cutting off a torn last line (a crash in the middle of a write). The
/// file is the truth about what was written: a crash between the write and
/// the cursor update must not write the same events twice.
fn last_written(file: &Path) -> std::io::Result<Option<u64>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = match OpenOptions::new().read(true).write(true).open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < tail.len() {
        f.set_len(start + complete as u64)?;
    }
    Ok(tail[..complete]
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .and_then(|v| v["metadata"]["sequence"].as_u64()))
}

fn rotate(cfg: &OcsfFileConfig) -> std::io::Result<()> {
    let files = TrailFiles::new(&cfg.file);
    let rotated = files.rotated()?;
    let next = rotated.last().map_or(1, |(n, _)| n + 1);
    std::fs::rename(&cfg.file, files.rotated_path(next))?;
    if cfg.keep > 0 {
        let total = rotated.len() as u64 + 1;
        for (_, old) in rotated.iter().take(total.saturating_sub(cfg.keep) as usize) {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}

pub fn spawn(
    cfg: OcsfFileConfig,
    trail: TrailFiles,
    mut head: watch::Receiver<u64>,
    pipeline: AuditPipeline,
) {
    tokio::spawn(async move {
        let cursor = cfg.cursor_path(&trail.current);
        let open = || TrailReader::new(trail.clone(), cursor.clone());
        let mut reader = match open() {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, cursor = %cursor.display(), "OCSF file output disabled");
                return;
            }
        };
        match last_written(&cfg.file) {
            Ok(Some(seq)) if seq > reader.committed() => {
                // Written but not yet in the cursor when the daemon stopped.
                match reader.commit(seq).and_then(|()| open()) {
                    Ok(r) => reader = r,
                    Err(e) => warn!(error = %e, "OCSF output: saving the cursor"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(file = %cfg.file.display(), error = %e, "OCSF output: reading the end of the file")
            }
        }
        info!(file = %cfg.file.display(), from_seq = reader.committed() + 1, "OCSF file output started");
        let host = super::hostname();
        let mut backoff = Duration::from_millis(100);
        loop {
            let read = tokio::task::spawn_blocking(move || {
                let b = reader.next_batch(512);
                (reader, b)
            })
            .await;
            let Ok((r, batch)) = read else {
                error!("OCSF reader task failed");
                return;
            };
            reader = r;
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "OCSF output: reading the trail");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if batch.missing > 0 {
                let mut ev = AuditEvent::new(EventKind::Loss, "lost", "ocsf-spool-expired");
                ev.count = Some(batch.missing);
                ev.detail = Some(
                    "records were removed by trail retention before the OCSF file got them".into(),
                );
                pipeline.emit(ev);
            }
            let Some(last) = batch.records.last().map(|r| r.seq) else {
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            loop {
                let (c, h, records) = (cfg.clone(), host.clone(), batch.records.clone());
                let done = tokio::task::spawn_blocking(move || append(&c, &h, &records)).await;
                match done {
                    Ok(Ok(())) => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Ok(Err(e)) => {
                        warn!(file = %cfg.file.display(), error = %e, "OCSF output: writing failed; records wait in the trail");
                    }
                    Err(_) => error!("OCSF writer task failed"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            if let Err(e) = reader.commit(last) {
                error!(error = %e, "saving the OCSF cursor (events may be written again after a restart)");
            }
        }
    });
}
