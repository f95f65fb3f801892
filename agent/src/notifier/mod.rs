//! Approvals where people are: every new approval is announced to Slack,
//! Microsoft Teams and webhooks, as configured under `approvals.notify`.
//!
//! Announcing never holds up a decision: the decision path queues a notice
//! and returns; each delivery runs on its own task, retried with
//! exponential backoff on network errors, 408, 429 and 5xx, given up on
//! other answers or after the last attempt. Deliveries, retries, failures
//! and notices dropped because too many were in flight are counted in
//! metrics (`palisade_approval_notifications_total`).
//!
//! * `formats` — what Slack, Teams and webhooks receive
//! * `send` — one HTTP(S) POST

pub mod escape;
pub mod formats;
pub mod send;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use serde::Deserialize;
use tracing::{debug, warn};

use crate::metrics::{Exposition, Kind};
use send::{SendError, Url};

/// Deliveries in flight (all targets) before new notices are dropped and
/// counted: a dead endpoint must not pile up tasks forever.
const MAX_IN_FLIGHT: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams workflow webhook (Adaptive Card).
    Teams,
    /// Any HTTP endpoint: JSON, signed with HMAC-SHA256.
    Webhook,
}

impl TargetKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::Webhook => "webhook",
        }
    }
}

/// One entry of `approvals.notify`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    #[serde(rename = "type")]
    pub kind: TargetKind,
    /// `https://…` (or `http://` to a relay on this host).
    pub url: String,
    /// Name in metrics and logs; default the type.
    #[serde(default)]
    pub name: Option<String>,
    /// Webhooks: the HMAC key, or a file holding it (relative to the
    /// config file).
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// `approvals.notify_retry`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per notice and target, the first included.
    pub attempts: u32,
    /// Wait after the first failure; doubles up to `max_backoff_ms`.
    pub first_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_backoff_ms: 500,
            max_backoff_ms: 60_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("approvals.notify[{index}].url: {message}")]
    Url { index: usize, message: String },
    #[error("approvals.notify[{index}]: {message}")]
    Target { index: usize, message: String },
    #[error("approvals.notify: {0}")]
    Tls(String),
}

/// What people are told about a new approval.
#[derive(Clone, Debug, Default)]
pub struct Notice {
    pub id: String,
    /// `tool`, `egress` or `elevation`.
    pub kind: String,
    pub identity: String,
    pub tool: String,
    pub action: String,
    pub resource: String,
    /// The call's parameters as JSON, cut to `formats::PARAMS_SHOWN`
    /// characters (empty for egress and elevations).
    pub params: String,
    pub params_digest: String,
    /// What a signed approval must name (see `signed`).
    pub digest: String,
    pub destination: String,
    pub rules: Vec<String>,
    pub policy_version: String,
    /// RFC 3339.
    pub created: String,
    pub expires: String,
    pub host: String,
    pub approve_command: String,
    pub reject_command: String,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

struct Target {
    name: String,
    kind: TargetKind,
    url: Url,
    secret: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    timeout: Duration,
    counters: Counters,
}

pub struct Notifier {
    targets: Vec<Arc<Target>>,
    retry: RetryConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    in_flight: Arc<AtomicUsize>,
}

impl Notifier {
    /// Check the targets (URLs, secrets) and set up TLS when one needs it.
    pub fn new(targets: &[NotifyTarget], retry: RetryConfig) -> Result<Self, NotifyError> {
        let mut out = Vec::new();
        for (index, t) in targets.iter().enumerate() {
            let url: Url = t
                .url
                .parse()
                .map_err(|message| NotifyError::Url { index, message })?;
            let secret = match (&t.secret, &t.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(NotifyError::Target {
                        index,
                        message: "give `secret` or `secret_file`, not both".into(),
                    });
                }
                (Some(s), None) => Some(s.as_bytes().to_vec()),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| NotifyError::Target {
                        index,
                        message: format!("secret_file {}: {e}", path.display()),
                    })?;
                    Some(text.trim().as_bytes().to_vec())
                }
                (None, None) => None,
            };
            if t.kind == TargetKind::Webhook && secret.as_ref().is_none_or(Vec::is_empty) {
                return Err(NotifyError::Target {
                    index,
                    message: "a webhook needs a `secret` (or `secret_file`) to sign with".into(),
                });
            }
            out.push(Arc::new(Target {
                name: t.name.clone().unwrap_or_else(|| t.kind.name().to_string()),
                kind: t.kind,
                url,
                secret,
                headers: t
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                timeout: Duration::from_millis(t.timeout_ms.max(1)),
                counters: Counters::default(),
            }));
        }
        let tls = if out.iter().any(|t| t.url.https) {
            Some(send::tls_config().map_err(NotifyError::Tls)?)
        } else {
            None
        };
        Ok(Self {
            targets: out,
            retry,
            tls,
            in_flight: Arc::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Announce `notice` to every target, in the background. Never waits.
    pub fn notify(&self, notice: Notice) {
        let notice = Arc::new(notice);
        for t in &self.targets {
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                t.counters.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(target = %t.name, approval = %notice.id, "too many notifications in flight; this one is dropped");
                continue;
            }
            let (t, n) = (t.clone(), notice.clone());
            let (retry, tls, in_flight) =
                (self.retry.clone(), self.tls.clone(), self.in_flight.clone());
            tokio::spawn(async move {
                deliver(&t, &n, &retry, tls.as_ref()).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// `palisade_approval_notifications_total{target,type,result}`.
    pub fn render(&self, out: &mut Exposition) {
        const NAME: &str = "palisade_approval_notifications_total";
        out.family(
            NAME,
            "Approval notifications by target and result: delivered, retried (each extra attempt), failed (given up), dropped (too many in flight).",
            Kind::Counter,
        );
        for t in &self.targets {
            for (result, n) in [
                ("delivered", &t.counters.delivered),
                ("retried", &t.counters.retries),
                ("failed", &t.counters.failed),
                ("dropped", &t.counters.dropped),
            ] {
                out.sample(
                    NAME,
                    &[
                        ("target", &t.name),
                        ("type", t.kind.name()),
                        ("result", result),
                    ],
                    n.load(Ordering::Relaxed),
                );
            }
        }
    }
}

fn body_and_headers(t: &Target, n: &Notice) -> (Bytes, Vec<(String, String)>) {
    let mut headers = t.headers.clone();
    let body = match t.kind {
        TargetKind::Slack => formats::slack(n),
        TargetKind::Teams => formats::teams(n),
        TargetKind::Webhook => {
            let delivery = crate::tokens::random_id();
            headers.push(("X-Palisade-Delivery".into(), delivery.clone()));
            formats::webhook(n, &delivery)
        }
    };
    let bytes = Bytes::from(body.to_string());
    if let Some(secret) = &t.secret {
        let ts = crate::tokens::unix(SystemTime::now());
        headers.push(("X-Palisade-Timestamp".into(), ts.to_string()));
        headers.push((
            "X-Palisade-Signature".into(),
            formats::signature(secret, ts, &bytes),
        ));
    }
    (bytes, headers)
}

async fn deliver(
    t: &Target,
    n: &Notice,
    retry: &RetryConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) {
    let mut backoff = Duration::from_millis(retry.first_backoff_ms.max(1));
    let max_backoff = Duration::from_millis(retry.max_backoff_ms.max(retry.first_backoff_ms));
    let attempts = retry.attempts.max(1);
    for attempt in 1..=attempts {
        // Signed anew on every attempt: the timestamp is current.
        let (body, headers) = body_and_headers(t, n);
        match send::post(&t.url, tls, &headers, body, t.timeout).await {
            Ok(status) => {
                t.counters.delivered.fetch_add(1, Ordering::Relaxed);
                debug!(target = %t.name, approval = %n.id, status, attempt, "approval notification delivered");
                return;
            }
            Err(SendError::Permanent(e)) => {
                t.counters.failed.fetch_add(1, Ordering::Relaxed);
                warn!(target = %t.name, approval = %n.id, error = %e, "approval notification refused; not retried");
                return;
            }
            Err(SendError::Retry(e)) if attempt < attempts => {
                t.counters.retries.fetch_add(1, Ordering::Relaxed);
                debug!(target = %t.name, approval = %n.id, error = %e, attempt, "approval notification failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
            Err(SendError::Retry(e)) => {
                t.counters.failed.fetch_add(1, Ordering::Relaxed);
                warn!(target = %t.name, approval = %n.id, error = %e, attempts, "approval notification given up");
            }
        }
    }
}

#[cfg(test)]
mod tests;
