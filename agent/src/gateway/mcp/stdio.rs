//! Local MCP servers that speak stdio, started by the daemon: one process
//! per MCP session, outside any agent's identity, with the secrets of the
//! service's `env` in its environment (which the agent never gets). Agents
//! reach them over streamable HTTP like remote ones; the gateway relays
//! JSON-RPC lines both ways.
//!
//! A session is bound to the identity that opened it; sessions are capped
//! per identity and per service, and closed when idle.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode, header};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin},
    sync::{mpsc, oneshot},
};
use tracing::{debug, info, warn};

use crate::gateway::{
    GatewayError,
    bodies::{Collected, collect},
    http::{Req, Resp, empty, full},
    lock,
    reply::Refusal,
};
use crate::policy::service::Command as CommandSpec;

/// Sessions of one service, in all and per identity.
const MAX_SESSIONS: usize = 32;
const MAX_SESSIONS_PER_IDENTITY: usize = 8;
/// A session nobody used for this long is closed (its process ends).
const IDLE: Duration = Duration::from_secs(600);
/// Longest line a server may write.
const MAX_LINE: usize = 8 << 20;

/// A stdio service: how to start it, and its open sessions.
pub struct StdioService {
    service: String,
    spec: CommandSpec,
    /// The environment, secrets read on the daemon's side.
    env: Vec<(String, String)>,
    uid_gid: Option<(u32, u32)>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    epoch: Instant,
}

pub struct Session {
    id: String,
    identity: String,
    stdin: tokio::sync::Mutex<ChildStdin>,
    /// Requests waiting for their answer, by JSON id.
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The client's event stream (GET), for what the server sends unasked.
    stream: Mutex<Option<mpsc::Sender<Bytes>>>,
    last_used: AtomicU64,
    child: Mutex<Option<Child>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.start_kill();
        }
    }
}

fn uid_gid(user: &str) -> Result<(u32, u32), String> {
    let u = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()),
        Err(_) => nix::unistd::User::from_name(user),
    }
    .map_err(|e| e.to_string())?
    .ok_or_else(|| format!("no user `{user}` on this host"))?;
    Ok((u.uid.as_raw(), u.gid.as_raw()))
}

impl StdioService {
    pub fn new(service: &str, spec: &CommandSpec) -> Result<Arc<Self>, GatewayError> {
        let mut env = Vec::new();
        for (name, secret) in &spec.env {
            env.push((
                name.clone(),
                crate::gateway::secrets::read(service, secret)?,
            ));
        }
        let uid_gid = match &spec.user {
            None => None,
            Some(u) => Some(uid_gid(u).map_err(|why| GatewayError::Command {
                service: service.to_string(),
                why,
            })?),
        };
        let svc = Arc::new(Self {
            service: service.to_string(),
            spec: spec.clone(),
            env,
            uid_gid,
            sessions: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        });
        let weak = Arc::downgrade(&svc);
        tokio::spawn(async move { sweep(weak).await });
        Ok(svc)
    }

    /// The secrets in the environment (scrubbed from every answer).
    pub fn secrets(&self) -> Vec<Bytes> {
        self.spec
            .env
            .iter()
            .zip(&self.env)
            .filter(|((_, s), _)| !matches!(s, crate::policy::service::Secret::Value(_)))
            .map(|(_, (_, v))| Bytes::from(v.clone()))
            .collect()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn session(&self, id: &str, identity: &str) -> Option<Arc<Session>> {
        let s = lock(&self.sessions).get(id).cloned()?;
        // Another identity's session does not exist for this caller.
        (s.identity == identity).then(|| {
            s.last_used.store(self.now(), Ordering::Relaxed);
            s
        })
    }

    #[expect(
        clippy::result_large_err,
        reason = "a refusal is built once per refused request; boxing it buys nothing"
    )]
    fn open(self: &Arc<Self>, identity: &str) -> Result<Arc<Session>, Refusal> {
        {
            let map = lock(&self.sessions);
            let mine = map.values().filter(|s| s.identity == identity).count();
            if map.len() >= MAX_SESSIONS || mine >= MAX_SESSIONS_PER_IDENTITY {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too-many-sessions",
                    format!(
                        "service `{}` has {} sessions open ({} of them `{identity}`'s); close one (DELETE) or wait",
                        self.service,
                        map.len(),
                        mine
                    ),
                ));
            }
        }
        let (program, args) = self.spec.argv.split_first().ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                "empty command",
            )
        })?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd);
        }
        if let Some((uid, gid)) = self.uid_gid {
            // std drops supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(|e| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                format!("starting the MCP server of service `{}`: {e}", self.service),
            )
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                "no pipes",
            ));
        };
        let s = Arc::new(Session {
            id: crate::tokens::random_id(),
            identity: identity.to_string(),
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(HashMap::new()),
            stream: Mutex::new(None),
            last_used: AtomicU64::new(self.now()),
            child: Mutex::new(Some(child)),
        });
        info!(service = %self.service, identity, session = %s.id, "MCP server started");
        lock(&self.sessions).insert(s.id.clone(), s.clone());
        let (svc, sess) = (Arc::downgrade(self), Arc::downgrade(&s));
        tokio::spawn(read_stdout(svc, sess, stdout));
        let service = self.service.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr.take(1 << 20)).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                debug!(service = %service, "MCP server: {l}");
            }
        });
        Ok(s)
    }

    fn close(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// Serve one HTTP request of `identity` to this service.
    pub async fn handle(self: &Arc<Self>, identity: &str, req: Req, timeout: Duration) -> Resp {
        let sid = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let gone = || {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "no-session",
                "no such MCP session (it ended or was never opened); initialize again",
            )
            .into_response()
        };
        match (req.method().clone(), sid) {
            (Method::GET, Some(sid)) => {
                let Some(s) = self.session(&sid, identity) else {
                    return gone();
                };
                let (tx, rx) = mpsc::channel::<Bytes>(64);
                *lock(&s.stream) = Some(tx);
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                let body =
                    http_body_util::StreamBody::new(tokio_stream::StreamExt::map(stream, |b| {
                        Ok::<_, crate::gateway::http::BoxError>(http_body::Frame::data(b))
                    }));
                let mut r = hyper::Response::new(body.boxed_unsync());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/event-stream"),
                );
                r
            }
            (Method::DELETE, Some(sid)) => {
                if self.session(&sid, identity).is_none() {
                    return gone();
                }
                self.close(&sid);
                hyper::Response::new(empty())
            }
            (Method::POST, sid) => {
                let bytes = match collect(req.into_body(), usize::MAX).await {
                    Collected::Whole(b) => b,
                    _ => return gone(),
                };
                let Ok(msg) = serde_json::from_slice::<Value>(&bytes) else {
                    return gone();
                };
                let session = match sid {
                    Some(sid) => match self.session(&sid, identity) {
                        Some(s) => s,
                        None => return gone(),
                    },
                    None if msg.get("method").and_then(Value::as_str) == Some("initialize") => {
                        match self.open(identity) {
                            Ok(s) => s,
                            Err(r) => return r.into_response(),
                        }
                    }
                    None => {
                        return Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "no-session",
                            "send `initialize` first, then the Mcp-Session-Id it returns",
                        )
                        .into_response();
                    }
                };
                self.post(&session, msg, timeout).await
            }
            _ => Refusal::new(
                StatusCode::BAD_REQUEST,
                "no-session",
                "GET and DELETE need an Mcp-Session-Id",
            )
            .into_response(),
        }
    }

    async fn post(&self, s: &Arc<Session>, msg: Value, timeout: Duration) -> Resp {
        let id = msg
            .get("id")
            .filter(|_| msg.get("method").is_some())
            .cloned();
        let waiter = id.as_ref().map(|id| {
            let (tx, rx) = oneshot::channel();
            lock(&s.pending).insert(id.to_string(), tx);
            rx
        });
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        let written = async {
            let mut stdin = s.stdin.lock().await;
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        if let Err(e) = written.await {
            self.close(&s.id);
            return Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                format!("the MCP server of service `{}` is gone: {e}", self.service),
            )
            .into_response();
        }
        let Some(rx) = waiter else {
            let mut r = hyper::Response::new(empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            return r;
        };
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => {
                return Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unreachable",
                    format!("the MCP server of service `{}` ended", self.service),
                )
                .into_response();
            }
            Err(_) => {
                if let Some(id) = &id {
                    lock(&s.pending).remove(&id.to_string());
                }
                return Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    format!("the MCP server did not answer within {timeout:?}"),
                )
                .into_response();
            }
        };
        let mut r = hyper::Response::new(full(answer.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&s.id) {
            r.headers_mut().insert("mcp-session-id", v);
        }
        r
    }
}

/// Relay what the server writes: answers to whoever waits for them,
/// anything else to the client's event stream.
async fn read_stdout(
    svc: Weak<StdioService>,
    sess: Weak<Session>,
    stdout: tokio::process::ChildStdout,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .unwrap_or_default();
        if n == 0 || (n >= MAX_LINE && line.last() != Some(&b'\n')) {
            break;
        }
        let Some(s) = sess.upgrade() else { break };
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            warn!(session = %s.id, "an MCP server wrote a line that is not JSON; ignored");
            continue;
        };
        let is_answer = v.get("method").is_none() && v.get("id").is_some();
        if is_answer {
            let key = v.get("id").map(ToString::to_string).unwrap_or_default();
            if let Some(tx) = lock(&s.pending).remove(&key) {
                let _ = tx.send(v);
            }
            continue;
        }
        let tx = lock(&s.stream).clone();
        if let Some(tx) = tx {
            let event = Bytes::from(format!("event: message\ndata: {v}\n\n"));
            if tx.try_send(event).is_err() {
                debug!(session = %s.id, "client stream full or closed; server message dropped");
            }
        }
    }
    if let (Some(svc), Some(s)) = (svc.upgrade(), sess.upgrade()) {
        info!(service = %svc.service, session = %s.id, "MCP server ended");
        svc.close(&s.id);
    }
}

/// Close sessions nobody used for `IDLE`.
async fn sweep(svc: Weak<StdioService>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(svc) = svc.upgrade() else { return };
        let now = svc.now();
        lock(&svc.sessions).retain(|_, s| {
            now.saturating_sub(s.last_used.load(Ordering::Relaxed)) < IDLE.as_secs()
        });
    }
}
