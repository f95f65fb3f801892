//! A bounded queue in front of the sinks. Producers never block (the kernel
//! reader must keep up); what cannot be queued is counted and reported as a
//! `loss` event as soon as there is room again.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info};

use super::{AuditEvent, EventKind};

const QUEUE: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct AuditStats {
    pub written: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Failed to write to the file sink.
    pub write_errors: AtomicU64,
}

enum Msg {
    Event(Box<AuditEvent>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditPipeline {
    tx: mpsc::Sender<Msg>,
    live: broadcast::Sender<AuditEvent>,
    stats: Arc<AuditStats>,
}

impl AuditPipeline {
    /// Start the writer task. `file` gets JSON lines; `human` mirrors each
    /// event to stderr in readable form.
    pub fn start(file: Option<PathBuf>, human: bool) -> std::io::Result<Self> {
        let sink = match &file {
            Some(path) => Some(open_append(path)?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (live, _) = broadcast::channel(1024);
        let stats = Arc::new(AuditStats::default());
        tokio::spawn(write_loop(rx, sink, human, stats.clone(), live.clone()));
        Ok(Self { tx, live, stats })
    }

    /// Queue an event; never blocks.
    pub fn emit(&self, event: AuditEvent) {
        if self.tx.try_send(Msg::Event(Box::new(event))).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Live feed of written events (for streaming APIs).
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
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

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

async fn write_loop(
    mut rx: mpsc::Receiver<Msg>,
    mut sink: Option<File>,
    human: bool,
    stats: Arc<AuditStats>,
    live: broadcast::Sender<AuditEvent>,
) {
    let mut reported_drops = 0;
    while let Some(msg) = rx.recv().await {
        let event = match msg {
            Msg::Event(e) => e,
            Msg::Flush(done) => {
                if let Some(f) = &mut sink {
                    let _ = f.flush();
                }
                let _ = done.send(());
                continue;
            }
        };
        let dropped = stats.dropped.load(Ordering::Relaxed);
        if dropped > reported_drops {
            let mut loss = AuditEvent::new(EventKind::Loss, "lost", "audit-queue-full");
            loss.count = Some(dropped - reported_drops);
            reported_drops = dropped;
            write_one(&loss, &mut sink, human, &stats, &live);
        }
        write_one(&event, &mut sink, human, &stats, &live);
    }
}

fn write_one(
    event: &AuditEvent,
    sink: &mut Option<File>,
    human: bool,
    stats: &AuditStats,
    live: &broadcast::Sender<AuditEvent>,
) {
    if let Some(file) = sink {
        match serde_json::to_string(event) {
            Ok(mut line) => {
                line.push('\n');
                // One write per line: with O_APPEND a line is never torn.
                if let Err(e) = file.write_all(line.as_bytes()) {
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    error!(error = %e, "writing audit file");
                }
            }
            Err(e) => error!(error = %e, "serialising audit event"),
        }
    }
    if human {
        info!(target: "palisade::audit", "{}", event.human());
    }
    stats.written.fetch_add(1, Ordering::Relaxed);
    let _ = live.send(event.clone());
}
