//! A bounded queue in front of the trail. Producers never block (the kernel
//! reader must keep up); what cannot be queued is counted and reported as a
//! `loss` record as soon as there is room again. The writer seals events
//! into the hash chain in batches, one write (and one fsync) per batch, and
//! what it fails to write is counted and reported the same way. A record
//! after a quiet spell is written at once; records that keep coming are
//! gathered for `GATHER` after the last write, so a steady stream costs one
//! wake-up, one write and one fsync per interval instead of per record.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::{
    AuditEvent, EventKind,
    chain::{ChainHead, seal},
    otlp::{self, OtlpConfig, SinkStats},
    trail::{TrailError, TrailFiles, TrailOptions, TrailWriter},
};

const QUEUE: usize = 16 * 1024;
/// Records sealed and written per write (and fsync).
const MAX_BATCH: usize = 512;
/// Under a steady stream, the shortest time between two writes: records
/// wait in the queue at most this long before they are written.
const GATHER: Duration = Duration::from_millis(2);

#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records written to the trail (or to stderr only, without a file).
    pub written: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Failed writes to the trail file.
    pub write_errors: AtomicU64,
    /// Events lost because the trail could not be written.
    pub trail_lost: AtomicU64,
    /// The chain's last record.
    head: Mutex<Option<ChainHead>>,
}

impl AuditStats {
    /// The last sealed record (none without a trail file).
    pub fn head(&self) -> Option<ChainHead> {
        self.head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Where and how audit events are kept.
#[derive(Clone, Debug, Default)]
pub struct AuditOptions {
    /// JSON-lines trail; none = stderr only.
    pub file: Option<std::path::PathBuf>,
    /// Mirror each event to stderr in readable form.
    pub human: bool,
    pub trail: Option<TrailOptions>,
    pub otlp: Option<OtlpConfig>,
    /// The trail as OCSF events in a JSON-lines file of its own.
    pub ocsf: Option<crate::ocsf::OcsfFileConfig>,
}

enum Msg {
    Event(Box<AuditEvent>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditPipeline {
    tx: mpsc::Sender<Msg>,
    live: broadcast::Sender<Arc<AuditEvent>>,
    stats: Arc<AuditStats>,
    otlp: Option<Arc<SinkStats>>,
}

impl AuditPipeline {
    /// Start the writer (and the OTLP exporter when configured). Opening the
    /// trail can fail (permissions, another daemon holds it): the caller
    /// refuses to start.
    pub fn start(opts: AuditOptions) -> Result<Self, TrailError> {
        let mut trail = None;
        let mut startup = Vec::new();
        if let Some(path) = &opts.file {
            let trail_opts = opts.trail.clone().unwrap_or(TrailOptions {
                rotate_bytes: 0,
                keep: 0,
                fsync: true,
                keep_min_age: Duration::ZERO,
                export_cursor: None,
            });
            let (writer, resumed) = TrailWriter::open(path, trail_opts)?;
            if resumed.torn_bytes > 0 {
                let mut ev = AuditEvent::new(EventKind::Loss, "lost", "audit-torn-record");
                ev.count = Some(1);
                ev.detail = Some(format!(
                    "{} bytes of an incomplete last record were cut from {}",
                    resumed.torn_bytes,
                    path.display()
                ));
                startup.push(ev);
            }
            if let Some(old) = resumed.unsealed_rotated {
                let mut ev = AuditEvent::new(EventKind::Daemon, "rotated", "audit-unsealed-file");
                ev.detail = Some(format!(
                    "records without a hash chain moved to {}",
                    old.display()
                ));
                startup.push(ev);
            }
            trail = Some(writer);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        // Shared events: a slot is a pointer, not a whole event (4,096 slots
        // of events would keep 5 MiB resident for a feed nobody may watch).
        let (live, _) = broadcast::channel(4096);
        let stats = Arc::new(AuditStats::default());
        let head = trail.as_ref().map(|t| t.head().clone());
        *stats
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = head.clone();
        let (head_tx, head_rx) = watch::channel(head.map_or(0, |h| h.seq));
        let files = trail.as_ref().map(|t| t.files().clone());
        // Writing and fsyncing block: on a thread of their own they never
        // hold up a runtime worker that is answering API calls.
        let writer = {
            let (stats, live) = (stats.clone(), live.clone());
            move || write_loop(rx, trail, opts.human, stats, live, head_tx)
        };
        std::thread::Builder::new()
            .name("palisade-audit".into())
            .spawn(writer)
            .map_err(|source| TrailError::Io {
                path: opts.file.clone().unwrap_or_default(),
                source,
            })?;
        let mut pipeline = Self {
            tx,
            live,
            stats,
            otlp: None,
        };
        for ev in startup {
            pipeline.emit(ev);
        }
        if let Some(cfg) = opts.otlp {
            let files: TrailFiles = files.clone().ok_or_else(|| TrailError::Io {
                path: cfg.cursor_path(None),
                source: std::io::Error::other(
                    "OTLP export needs `audit.file`: the trail is its spool",
                ),
            })?;
            let sink = Arc::new(SinkStats::default());
            otlp::spawn(cfg, files, head_rx.clone(), sink.clone(), pipeline.clone());
            pipeline.otlp = Some(sink);
        }
        if let Some(cfg) = opts.ocsf {
            let files = files.ok_or_else(|| TrailError::Io {
                path: cfg.file.clone(),
                source: std::io::Error::other(
                    "the OCSF file needs `audit.file`: the trail is its spool",
                ),
            })?;
            crate::ocsf::sink::spawn(cfg, files, head_rx, pipeline.clone());
        }
        Ok(pipeline)
    }

    /// Queue an event; never blocks.
    pub fn emit(&self, event: AuditEvent) {
        if self
            .tx
            .try_send(Msg::Event(Box::new(event.bounded())))
            .is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// The OTLP sink's counters, when export is configured.
    pub fn otlp_stats(&self) -> Option<&SinkStats> {
        self.otlp.as_deref()
    }

    /// Live feed of written events, sealed (for streaming APIs).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditEvent>> {
        self.live.subscribe()
    }

    /// Wait until everything queued so far has been written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Writer {
    trail: Option<TrailWriter>,
    human: bool,
    stats: Arc<AuditStats>,
    live: broadcast::Sender<Arc<AuditEvent>>,
    head_tx: watch::Sender<u64>,
    reported_drops: u64,
    /// Events the trail failed to take, not yet reported in a loss record.
    unreported_trail_loss: u64,
}

fn write_loop(
    mut rx: mpsc::Receiver<Msg>,
    trail: Option<TrailWriter>,
    human: bool,
    stats: Arc<AuditStats>,
    live: broadcast::Sender<Arc<AuditEvent>>,
    head_tx: watch::Sender<u64>,
) {
    let mut w = Writer {
        trail,
        human,
        stats,
        live,
        head_tx,
        reported_drops: 0,
        unreported_trail_loss: 0,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_write: Option<Instant> = None;
    let mut backlog = false;
    while let Some(first) = rx.blocking_recv() {
        // Records coming in a stream gather while the writer sleeps: a
        // sleeping writer is not woken by each record (a flush and a
        // backlog are not kept waiting).
        if let (Msg::Event(_), false, Some(at)) = (&first, backlog, last_write)
            && let Some(wait) = GATHER.checked_sub(at.elapsed())
        {
            std::thread::sleep(wait);
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(batch.len() + 2);
        let mut flushes = Vec::new();
        for m in batch.drain(..) {
            match m {
                Msg::Event(e) => events.push(*e),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        backlog = events.len() + flushes.len() >= MAX_BATCH;
        w.write(events);
        last_write = Some(Instant::now());
        for done in flushes {
            let _ = done.send(());
        }
    }
}

impl Writer {
    /// Write a batch, then let retention delete what it may.
    fn write(&mut self, events: Vec<AuditEvent>) {
        if self.write_batch(events) {
            self.retention();
        }
    }

    /// Old files go only after a record of their deletion is in the chain:
    /// `audit verify` then tells this from a beginning removed by hand.
    fn retention(&mut self) {
        let Some(trail) = &mut self.trail else { return };
        let expired = match trail.expired() {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "audit retention: looking at old files");
                return;
            }
        };
        let names: Vec<String> = expired
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        let mut ev = AuditEvent::new(EventKind::Retention, "deleted", "audit-retention");
        ev.detail = Some(format!(
            "{} deleted by retention (audit.keep): records up to seq {}",
            names.join(", "),
            expired.through.seq
        ));
        ev.retention = Some(super::RetentionDetail {
            files: names,
            through_seq: expired.through.seq,
            through_hash: expired.through.hash.clone(),
        });
        if self.write_batch(vec![ev])
            && let Some(trail) = &mut self.trail
        {
            trail.delete(&expired);
        }
    }

    /// Seal and write; true when the batch is in the trail.
    fn write_batch(&mut self, mut events: Vec<AuditEvent>) -> bool {
        // Losses go first, into the trail itself.
        let mut losses = Vec::new();
        let reported_before = self.reported_drops;
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            let mut loss = AuditEvent::new(EventKind::Loss, "lost", "audit-queue-full");
            loss.count = Some(dropped - self.reported_drops);
            self.reported_drops = dropped;
            losses.push(loss);
        }
        let trail_loss = self.unreported_trail_loss;
        if trail_loss > 0 {
            let mut loss = AuditEvent::new(EventKind::Loss, "lost", "audit-write-failed");
            loss.count = Some(trail_loss);
            losses.push(loss);
        }
        if events.is_empty() && losses.is_empty() {
            return false;
        }
        let own = events.len() as u64;
        losses.append(&mut events);
        let mut events = losses;

        let written = match &mut self.trail {
            None => true,
            Some(trail) => {
                let mut head = trail.head().clone();
                let mut lines = Vec::with_capacity(events.len());
                let mut sealed_ok = true;
                for ev in &mut events {
                    match seal(ev, &head) {
                        Ok((line, next)) => {
                            lines.push(line);
                            head = next;
                        }
                        Err(e) => {
                            error!(error = %e, "serialising audit event");
                            sealed_ok = false;
                            break;
                        }
                    }
                }
                let result = if sealed_ok {
                    trail
                        .append(&lines, head.clone())
                        .map_err(|e| e.to_string())
                } else {
                    Err("an event could not be serialised".to_string())
                };
                match result {
                    Ok(()) => {
                        self.unreported_trail_loss = 0;
                        *self
                            .stats
                            .head
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(head.clone());
                        let _ = self.head_tx.send(head.seq);
                        true
                    }
                    Err(e) => {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        self.stats.trail_lost.fetch_add(own, Ordering::Relaxed);
                        self.unreported_trail_loss += own;
                        // The queue-loss record did not make it either.
                        self.reported_drops = reported_before;
                        error!(error = %e, lost = own, "audit trail write failed; the loss will be recorded once the trail can be written");
                        for ev in &mut events {
                            ev.seq = None;
                            ev.prev_hash = None;
                            ev.hash = None;
                        }
                        false
                    }
                }
            }
        };
        for ev in events {
            if self.human {
                if written {
                    info!(target: "palisade::audit", "{}", ev.human());
                } else {
                    warn!(target: "palisade::audit", "NOT IN TRAIL {}", ev.human());
                }
            }
            if written {
                self.stats.written.fetch_add(1, Ordering::Relaxed);
            }
            if self.live.receiver_count() > 0 {
                let _ = self.live.send(Arc::new(ev));
            }
        }
        written && self.trail.is_some()
    }
}
