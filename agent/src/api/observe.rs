//! The observability side of the API: `WatchEvents` (a filtered live feed
//! of the audit trail) and the health part of `Status`.

use std::{sync::atomic::Ordering, time::UNIX_EPOCH};

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{
    audit::{AuditEvent, EventKind},
    bpf::PacketGuard,
    daemon::Daemon,
    proto,
};

pub type EventStream = ReceiverStream<Result<proto::AuditEventMessage, Status>>;

/// Kinds a filter may name.
pub const KINDS: &[&str] = &[
    "network",
    "socket",
    "policy",
    "enrolment",
    "kill_switch",
    "loss",
    "daemon",
];

fn kind_name(kind: EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

struct Filter {
    identities: Vec<String>,
    kinds: Vec<String>,
    verdicts: Vec<String>,
}

impl Filter {
    fn keeps(&self, ev: &AuditEvent) -> bool {
        let one_of = |set: &[String], v: &str| set.is_empty() || set.iter().any(|s| s == v);
        one_of(&self.kinds, &kind_name(ev.kind))
            && one_of(&self.verdicts, &ev.verdict)
            && one_of(&self.identities, ev.identity.as_deref().unwrap_or(""))
    }
}

fn message(ev: &AuditEvent) -> proto::AuditEventMessage {
    proto::AuditEventMessage {
        json: serde_json::to_string(ev).unwrap_or_default(),
        seq: ev.seq.unwrap_or(0),
        time: ev.time.clone(),
        kind: kind_name(ev.kind),
        identity: ev.identity.clone().unwrap_or_default(),
        verdict: ev.verdict.clone(),
        reason: ev.reason.clone(),
        policy_version: ev.policy_version.clone().unwrap_or_default(),
    }
}

/// Start a feed for one client. Unknown kinds are refused; a client too
/// slow for the feed is told how many events it missed (they are all in
/// the trail).
pub fn watch(daemon: &Daemon, req: proto::WatchEventsRequest) -> Result<EventStream, Status> {
    if let Some(bad) = req.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(Status::invalid_argument(format!(
            "unknown event kind `{bad}`: one of {}",
            KINDS.join(", ")
        )));
    }
    let filter = Filter {
        identities: req.identities,
        kinds: req.kinds,
        verdicts: req.verdicts,
    };
    let mut rx = daemon.audit.subscribe();
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let item = match rx.recv().await {
                Ok(ev) if filter.keeps(&ev) => Ok(message(&ev)),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let mut ev = AuditEvent::new(EventKind::Loss, "lost", "watch-lagged");
                    ev.count = Some(n);
                    ev.detail =
                        Some("this watcher fell behind; the events are in the audit trail".into());
                    Ok(message(&ev))
                }
                Err(RecvError::Closed) => break,
            };
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    Ok(ReceiverStream::new(out))
}

/// The health part of `Status`.
pub fn health(daemon: &Daemon) -> proto::DaemonHealth {
    let stats = daemon.audit.stats();
    let head = stats.head();
    let mut sinks = Vec::new();
    if let (Some(o), Some(cfg)) = (daemon.audit.otlp_stats(), &daemon.config.audit.otlp) {
        let cursor = o.cursor.load(Ordering::Relaxed);
        sinks.push(proto::SinkStatus {
            name: "otlp".into(),
            endpoint: cfg.endpoint.to_string(),
            up: o.up.load(Ordering::Relaxed),
            delivered: o.delivered.load(Ordering::Relaxed),
            backlog: head.as_ref().map_or(0, |h| h.seq.saturating_sub(cursor)),
            errors: o.errors.load(Ordering::Relaxed),
            lost: o.lost.load(Ordering::Relaxed),
            last_error: o.last_error().unwrap_or_default(),
        });
    }
    proto::DaemonHealth {
        packet_guard: match daemon.packet_guard {
            PacketGuard::Lsm => "lsm",
            PacketGuard::SeccompOnly => "seccomp",
        }
        .into(),
        warnings: daemon
            .warnings
            .iter()
            .cloned()
            .chain(daemon.unavailable())
            .collect(),
        metrics_address: daemon
            .metrics_addr
            .map(|a| a.to_string())
            .unwrap_or_default(),
        audit_file: daemon
            .config
            .audit
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        audit_seq: head.as_ref().map_or(0, |h| h.seq),
        audit_head_hash: head.map(|h| h.hash).unwrap_or_default(),
        audit_queue_dropped: stats.dropped.load(Ordering::Relaxed),
        audit_trail_lost: stats.trail_lost.load(Ordering::Relaxed),
        sinks,
        last_reload_unix: daemon
            .metrics
            .last_reload()
            .and_then(|(t, _)| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
        api_tcp_address: daemon
            .api_tcp_addr
            .get()
            .map(ToString::to_string)
            .unwrap_or_default(),
        guard_repairs: daemon.metrics.guard_repairs(),
        guard_last_repair: daemon.guard_last_repair().unwrap_or_default(),
    }
}
