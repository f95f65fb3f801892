//! One long-lived connection to the decision API, driven by the tests: it
//! reads one JSON command per line on stdin, makes that call on its
//! connection (or, with `"fresh": true`, on a new one) and prints one JSON
//! line with the answer or the gRPC status code.
//!
//! ```text
//! palisade-session SOCKET [--handoff] [--uid UID --gid GID]
//! ```
//!
//! `--uid/--gid` drop privileges before connecting. With `--handoff` the
//! process connects, forks, and the *child* serves the commands over the
//! inherited connection while the parent, whose pid the kernel recorded
//! for the connection, waits; the command `{"op": "release"}` lets the
//! parent exit. That is the shape of the pid-reuse attack: an agent hands
//! its connection to a child and exits.
//!
//! Commands (`op`): `decide` (tool, action, params, agent), `issue`,
//! `egress` (destination, port), `get_approval` (id), `list_approvals`,
//! `resolve` (id, approve), `revoke` (identity), `enroll` (identity),
//! `release`, `pid`.

use std::{
    io::{BufRead, Write},
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper_util::rt::TokioIo;
use palisade::{api::client, proto};
use palisade_tests::session::json_struct;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint, Uri};

type Client = proto::palisade_client::PalisadeClient<Channel>;

fn status(s: &tonic::Status) -> Value {
    json!({"ok": false, "code": format!("{:?}", s.code()), "message": s.message()})
}

/// A gRPC client over an already connected socket (the connector hands it
/// out once: there is no reconnecting to another process's connection).
async fn over(stream: std::os::unix::net::UnixStream) -> Client {
    stream
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let slot = Arc::new(Mutex::new(Some(stream)));
    let channel = Endpoint::from_static("http://palisade.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let taken = slot.lock().ok().and_then(|mut s| s.take());
            async move {
                let s = taken.ok_or_else(|| std::io::Error::other("connection already used"))?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::from_std(s)?))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("gRPC over the inherited connection: {e}"));
    Client::new(channel)
}

async fn call(c: &mut Client, cmd: &Value) -> Value {
    let s = |k: &str| cmd[k].as_str().unwrap_or_default().to_string();
    let done = |r: Result<Value, tonic::Status>| r.unwrap_or_else(|e| status(&e));
    match cmd["op"].as_str().unwrap_or_default() {
        "decide" => done(
            c.decide(proto::DecideRequest {
                agent: s("agent"),
                tool: s("tool"),
                action: s("action"),
                params: Some(json_struct(&cmd["params"])),
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let verdict = proto::Verdict::try_from(r.verdict).map_or("?", |v| v.as_str_name());
                json!({"ok": true, "verdict": verdict, "reason": r.reason, "rules": r.matched_rules, "approval_id": r.approval_id})
            }),
        ),
        "issue" => done(
            c.issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
                .await
                .map(|r| json!({"ok": true, "identity": r.into_inner().identity})),
        ),
        "egress" => done(
            c.request_egress(proto::RequestEgressRequest {
                destination: s("destination"),
                ports: vec![cmd["port"].as_u64().unwrap_or_default() as u32],
                protocol: "tcp".into(),
                ttl_seconds: 30,
                reason: "session".into(),
                token: String::new(),
            })
            .await
            .map(|r| json!({"ok": true, "granted": r.into_inner().granted})),
        ),
        "get_approval" => done(
            c.get_approval(proto::GetApprovalRequest {
                id: s("id"),
                token: String::new(),
            })
            .await
            .map(|r| {
                let a = r.into_inner();
                json!({"ok": true, "identity": a.identity, "has_override": !a.override_token.is_empty()})
            }),
        ),
        "list_approvals" => done(
            c.list_approvals(proto::ListApprovalsRequest { all: true })
                .await
                .map(|r| json!({"ok": true, "count": r.into_inner().approvals.len()})),
        ),
        "resolve" => done(
            c.resolve_approval(proto::ResolveApprovalRequest {
                id: s("id"),
                approve: cmd["approve"].as_bool().unwrap_or(true),
                reason: "session".into(),
            })
            .await
            .map(|_| json!({"ok": true})),
        ),
        "revoke" => done(
            c.revoke(proto::RevokeRequest {
                identity: s("identity"),
                reason: "session".into(),
            })
            .await
            .map(|_| json!({"ok": true})),
        ),
        "enroll" => done(
            c.enroll(proto::EnrollRequest {
                identity: s("identity"),
            })
            .await
            .map(|r| json!({"ok": true, "cgroup": r.into_inner().cgroup})),
        ),
        other => json!({"ok": false, "code": "Usage", "message": format!("unknown op {other:?}")}),
    }
}

/// Serve commands until stdin closes. `parent` is the write end of the
/// pipe the waiting parent reads (handoff mode).
fn serve(socket: &Path, stream: std::os::unix::net::UnixStream, mut parent: Option<OwnedFd>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut conn = rt.block_on(over(stream));
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let cmd: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("command {line:?}: {e}"));
        let answer = match cmd["op"].as_str() {
            Some("release") => {
                // Closing the pipe lets the parent exit.
                json!({"ok": parent.take().is_some()})
            }
            Some("pid") => json!({"ok": true, "pid": std::process::id()}),
            _ if cmd["fresh"] == true => rt.block_on(async {
                match client::connect(socket).await {
                    Ok(mut c) => call(&mut c, &cmd).await,
                    Err(e) => json!({"ok": false, "code": "Unavailable", "message": e.to_string()}),
                }
            }),
            _ => rt.block_on(call(&mut conn, &cmd)),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = PathBuf::from(args.first().cloned().unwrap_or_default());
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u32>().ok())
    };
    if let (Some(uid), Some(gid)) = (flag("--uid"), flag("--gid")) {
        nix::unistd::setgroups(&[]).unwrap_or_else(|e| panic!("setgroups: {e}"));
        nix::unistd::setgid(gid.into()).unwrap_or_else(|e| panic!("setgid: {e}"));
        nix::unistd::setuid(uid.into()).unwrap_or_else(|e| panic!("setuid: {e}"));
    }
    // The kernel records this process as the connection's peer.
    let stream = std::os::unix::net::UnixStream::connect(&socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    if !args.iter().any(|a| a == "--handoff") {
        serve(&socket, stream, None);
        return;
    }
    let (read_end, write_end) = nix::unistd::pipe().unwrap_or_else(|e| panic!("pipe: {e}"));
    // SAFETY: single-threaded so far (no runtime yet); the child only
    // continues this program.
    match unsafe { nix::unistd::fork() }.unwrap_or_else(|e| panic!("fork: {e}")) {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            serve(&socket, stream, Some(write_end));
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            drop(stream);
            println!(
                "{}",
                json!({"parent": std::process::id(), "child": child.as_raw()})
            );
            let _ = std::io::stdout().flush();
            // Wait until the child releases us (or dies), then exit.
            let mut buf = [0u8; 1];
            // SAFETY: reading one byte into a local buffer from our pipe.
            let _ = unsafe { libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
            // The child is reparented and keeps the connection.
        }
    }
}
