//! Export of the audit trail to an OpenTelemetry collector as OTLP/HTTP
//! JSON logs (`POST <endpoint>/v1/logs`). Off unless `audit.otlp` is set.
//!
//! The exporter reads the sealed records back from the trail (`spool`), so
//! a collector that is down costs nothing but delay: records wait on disk
//! and go out in order, once each, when it is back; the delivered position
//! survives daemon restarts. Delivery is at least once (a crash between a
//! collector's 200 and the cursor write resends one batch): every record
//! carries its `seq` and `hash` to deduplicate on. Each log record's body is
//! the sealed line itself, so a SIEM holds a verifiable copy of the chain.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::watch};
use tracing::{error, info, warn};

use super::{
    AuditEvent, AuditPipeline, EventKind,
    spool::{SpoolRecord, TrailReader},
    trail::TrailFiles,
};

/// `audit.otlp` in the daemon config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://host:port[/path]`; the path defaults to `/v1/logs`.
    pub endpoint: Endpoint,
    /// Extra request headers (e.g. a collector's auth token).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Records per request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between retries in milliseconds (backoff doubles from
    /// 100 ms up to this).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Where the delivered position is kept; default `.<trail name>.otlp-cursor`
    /// next to the trail.
    #[serde(default)]
    pub cursor: Option<PathBuf>,
    /// `palisade` (the sealed line as the body, default) or `ocsf` (an
    /// OCSF event as the body, the sealed line in its `raw_data`).
    #[serde(default)]
    pub format: crate::ocsf::Format,
}

fn default_batch() -> usize {
    256
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_backoff_ms() -> u64 {
    30_000
}

impl OtlpConfig {
    pub fn cursor_path(&self, trail: Option<&Path>) -> PathBuf {
        if let Some(c) = &self.cursor {
            return c.clone();
        }
        super::trail::side_file(trail.unwrap_or(Path::new("audit.jsonl")), "otlp-cursor")
    }
}

/// A collector address, checked when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: hyper::Uri = s
            .parse()
            .map_err(|e| format!("`{s}` is not a URL ({e}); write http://HOST:PORT"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{s}`: https is not supported; send to a collector on this host or pod (http://127.0.0.1:4318) and let it forward over TLS"
                ));
            }
            _ => return Err(format!("`{s}` must start with http://")),
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("`{s}` has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let path = match uri.path() {
            "" | "/" => "/v1/logs".to_string(),
            p => p.to_string(),
        };
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(4318),
            path,
        })
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a sink has done, for status and metrics.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub delivered: AtomicU64,
    /// Failed attempts (each retried).
    pub errors: AtomicU64,
    /// Records that will never reach the sink (rejected by it, or deleted
    /// by retention before it caught up); each is also a loss record.
    pub lost: AtomicU64,
    /// Last delivered seq.
    pub cursor: AtomicU64,
    pub up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl SinkStats {
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
    }
}

enum SendError {
    /// Try the same records again later.
    Retry(String),
    /// The collector refuses these records as they are.
    Reject(String),
}

pub(super) fn spawn(
    cfg: OtlpConfig,
    files: TrailFiles,
    mut head: watch::Receiver<u64>,
    stats: Arc<SinkStats>,
    pipeline: AuditPipeline,
) {
    tokio::spawn(async move {
        let cursor = cfg.cursor_path(Some(&files.current));
        let mut reader = match TrailReader::new(files.clone(), cursor.clone()) {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, cursor = %cursor.display(), "OTLP export disabled");
                stats.set_error(Some(e.to_string()));
                return;
            }
        };
        if *head.borrow() < reader.committed() {
            warn!(
                cursor = reader.committed(),
                head = *head.borrow(),
                "OTLP cursor is ahead of the trail (the trail was reset): delivering from the start"
            );
            if let Err(e) = reader.commit(0) {
                error!(error = %e, "resetting the OTLP cursor");
            }
            reader = match TrailReader::new(files, cursor.clone()) {
                Ok(r) => r,
                Err(_) => return,
            };
        }
        stats.cursor.store(reader.committed(), Ordering::Relaxed);
        info!(endpoint = %cfg.endpoint, from_seq = reader.committed() + 1, "OTLP export started");
        let host = hostname();
        let mut backoff = Duration::from_millis(100);
        let max_backoff = Duration::from_millis(cfg.max_backoff_ms.max(100));
        loop {
            let batch_size = cfg.batch.max(1);
            let read = tokio::task::spawn_blocking(move || {
                let b = reader.next_batch(batch_size);
                (reader, b)
            })
            .await;
            let Ok((r, batch)) = read else {
                error!("OTLP reader task failed");
                return;
            };
            reader = r;
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.set_error(Some(format!("reading the trail: {e}")));
                    tokio::time::sleep(max_backoff).await;
                    continue;
                }
            };
            if batch.missing > 0 {
                stats.lost.fetch_add(batch.missing, Ordering::Relaxed);
                let mut ev = AuditEvent::new(EventKind::Loss, "lost", "otlp-spool-expired");
                ev.count = Some(batch.missing);
                ev.detail = Some(
                    "records were removed by trail retention before the collector received them"
                        .into(),
                );
                pipeline.emit(ev);
            }
            if batch.records.is_empty() {
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let mut pending: &[SpoolRecord] = &batch.records;
            let mut chunk = pending.len();
            while !pending.is_empty() {
                let part = &pending[..chunk.min(pending.len())];
                let last = part.last().map_or(0, |r| r.seq);
                match send(&cfg, &host, part).await {
                    Ok(rejected) => {
                        if let Err(e) = reader.commit(last) {
                            error!(error = %e, "saving the OTLP cursor (records may be sent again after a restart)");
                        }
                        stats.cursor.store(last, Ordering::Relaxed);
                        stats
                            .delivered
                            .fetch_add(part.len() as u64 - rejected, Ordering::Relaxed);
                        if rejected > 0 {
                            report_rejected(&stats, &pipeline, rejected, "partial success");
                        }
                        if !stats.up.swap(true, Ordering::Relaxed) {
                            info!(endpoint = %cfg.endpoint, "OTLP collector reachable");
                        }
                        stats.set_error(None);
                        backoff = Duration::from_millis(100);
                        pending = &pending[part.len()..];
                    }
                    Err(SendError::Retry(e)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        if stats.up.swap(false, Ordering::Relaxed) || stats.last_error().is_none() {
                            warn!(endpoint = %cfg.endpoint, error = %e, "OTLP collector unreachable; records wait in the trail");
                        }
                        stats.set_error(Some(e));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max_backoff);
                    }
                    Err(SendError::Reject(e)) if part.len() > 1 => {
                        warn!(error = %e, records = part.len(), "OTLP collector refused a batch; narrowing it down");
                        chunk = part.len() / 2;
                    }
                    Err(SendError::Reject(e)) => {
                        if let Err(c) = reader.commit(last) {
                            error!(error = %c, "saving the OTLP cursor");
                        }
                        stats.cursor.store(last, Ordering::Relaxed);
                        report_rejected(&stats, &pipeline, 1, &format!("seq {last}: {e}"));
                        pending = &pending[1..];
                        chunk = pending.len();
                    }
                }
            }
        }
    });
}

fn report_rejected(stats: &SinkStats, pipeline: &AuditPipeline, n: u64, why: &str) {
    stats.lost.fetch_add(n, Ordering::Relaxed);
    let mut ev = AuditEvent::new(EventKind::Loss, "lost", "otlp-rejected");
    ev.count = Some(n);
    ev.detail = Some(format!("the collector refused the records: {why}"));
    pipeline.emit(ev);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// One OTLP/HTTP request; the number of records the collector rejected.
async fn send(cfg: &OtlpConfig, host: &str, records: &[SpoolRecord]) -> Result<u64, SendError> {
    let body = encode_as(cfg.format, host, records);
    let ep = &cfg.endpoint;
    let attempt = async {
        let stream = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| SendError::Retry(format!("connecting to {ep}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Retry(format!("{ep}: {e}")))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::post(ep.path.as_str())
            .header(hyper::header::HOST, format!("{}:{}", ep.host, ep.port))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (k, v) in &cfg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Reject(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Retry(format!("{ep}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            // OTLP partial success: {"partialSuccess":{"rejectedLogRecords":N}}
            let rejected = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    let n = &v["partialSuccess"]["rejectedLogRecords"];
                    n.as_u64()
                        .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(0)
                .min(records.len() as u64);
            return Ok(rejected);
        }
        let text = String::from_utf8_lossy(&bytes);
        let msg = format!(
            "{ep} answered {status}: {}",
            text.chars().take(200).collect::<String>()
        );
        // OTLP: 400 and 413 will not succeed as they are; everything else
        // (429, 5xx, auth while being fixed…) is worth retrying.
        if status == hyper::StatusCode::BAD_REQUEST
            || status == hyper::StatusCode::PAYLOAD_TOO_LARGE
        {
            Err(SendError::Reject(msg))
        } else {
            Err(SendError::Retry(msg))
        }
    };
    match tokio::time::timeout(Duration::from_millis(cfg.timeout_ms.max(1)), attempt).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Retry(format!(
            "{ep}: no answer within {} ms",
            cfg.timeout_ms
        ))),
    }
}

/// OTLP/HTTP JSON for a batch of sealed records.
pub fn encode(host: &str, records: &[SpoolRecord]) -> Vec<u8> {
    encode_as(crate::ocsf::Format::Palisade, host, records)
}

/// Same, with the body in `format`.
pub fn encode_as(format: crate::ocsf::Format, host: &str, records: &[SpoolRecord]) -> Vec<u8> {
    let logs: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut rec = log_record(r);
            if format == crate::ocsf::Format::Ocsf
                && let Some(ev) = crate::ocsf::from_line(&r.line, host)
            {
                rec["body"] = json!({"stringValue": ev.to_string()});
                rec["attributes"]
                    .as_array_mut()
                    .into_iter()
                    .for_each(|a| {
                        a.push(json!({"key": "ocsf.class_uid", "value": {"intValue": ev["class_uid"].to_string()}}))
                    });
            }
            rec
        })
        .collect();
    let doc = json!({
        "resourceLogs": [{
            "resource": {"attributes": [
                attr_str("service.name", "palisade"),
                attr_str("service.version", env!("CARGO_PKG_VERSION")),
                attr_str("host.name", host),
            ]},
            "scopeLogs": [{
                "scope": {"name": "palisade.audit"},
                "logRecords": logs,
            }],
        }],
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn attr_str(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn log_record(r: &SpoolRecord) -> Value {
    let ev: Value = serde_json::from_str(&r.line).unwrap_or(Value::Null);
    let text = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or_default();
    let nanos = humantime::parse_rfc3339(text("time"))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let (severity, severity_text) = match (text("kind"), text("verdict")) {
        ("loss", _) => (17, "ERROR"),
        (_, "deny") => (13, "WARN"),
        (_, "audit") => (10, "INFO2"),
        _ => (9, "INFO"),
    };
    let mut attributes =
        vec![json!({"key": "palisade.seq", "value": {"intValue": r.seq.to_string()}})];
    for key in [
        "kind",
        "identity",
        "verdict",
        "reason",
        "policy_version",
        "hash",
    ] {
        let v = text(key);
        if !v.is_empty() {
            attributes.push(attr_str(&format!("palisade.{key}"), v));
        }
    }
    json!({
        "timeUnixNano": nanos.to_string(),
        "severityNumber": severity,
        "severityText": severity_text,
        "body": {"stringValue": r.line},
        "attributes": attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        let e: Endpoint = "http://127.0.0.1:4318"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.to_string(), "http://127.0.0.1:4318/v1/logs");
        let e: Endpoint = "http://collector/custom"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.port, e.path.as_str()), (4318, "/custom"));
        let e: Endpoint = "http://[::1]:9".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.host, "::1");
        assert!(
            "https://x:1"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!("ftp://x".parse::<Endpoint>().is_err());
    }

    #[test]
    fn records_carry_the_sealed_line_and_its_seq() {
        let line = r#"{"time":"2026-01-01T00:00:00.000000001Z","kind":"network","identity":"a","verdict":"deny","reason":"default-deny","policy_version":"v","seq":7,"prev_hash":"p","hash":"h"}"#;
        let doc: Value = serde_json::from_slice(&encode(
            "host",
            &[SpoolRecord {
                seq: 7,
                line: line.into(),
            }],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let rec = &doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(rec["body"]["stringValue"], line);
        assert_eq!(rec["timeUnixNano"], "1767225600000000001");
        assert_eq!(rec["severityText"], "WARN");
        assert_eq!(rec["attributes"][0]["value"]["intValue"], "7");
    }
}
