//! Answers an agent asks for and never reads must not pile up in the
//! daemon's memory. An answer of known length is read whole to be scrubbed
//! before the agent gets any of it; an agent that opens many connections,
//! asks each for a large answer and reads nothing made the daemon hold
//! every one of them (a quarter of a GiB for 64 connections of 4 MiB, past
//! a gigabyte for 250), enough for the orchestrator to kill the daemon and
//! every identity's guard with it. Answers read whole now keep a place in
//! a memory budget until the agent has taken them; past it they stream,
//! paced by the reader.
//!
//! Real daemon, the gateway fixture's HTTPS upstream answering 4 MiB logs,
//! Python enrolled with `palisade exec` as root and as uid 65534; the
//! daemon's resident memory read from `/proc` while the answers wait.

use std::{
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use palisade_tests::{
    gateway::exec_as,
    gateway_fixture::{Fixture, start},
};
use serde_json::Value;

/// Connections the agent opens, and how long it leaves them unread.
const CONNECTIONS: usize = 64;
const HOLD_SECONDS: f64 = 4.0;
/// Each answer's size: the largest the gateway scrubs whole here.
const ANSWER_MIB: u64 = 4;

fn policy(f: &Fixture) -> String {
    f.policy_with("      - {method: GET, path: /v1/blob, action: text}\n", "")
}

/// Opens the connections with a small receive buffer, asks each for a
/// log, reads nothing for the hold, then reads each answer's status line;
/// with `--read`, one connection read to its end (the control).
const AGENT: &str = r#"
import json, socket, sys, time
gw, n, mib, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def ask(rcvbuf):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((gw, 9001))
    s.sendall(b"GET /v1/blob?mib=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % mib.encode())
    return s
if n == 0:
    s = ask(0); got = b""
    while True:
        b = s.recv(1 << 20)
        if not b: break
        got += b
        head, _, body = got.partition(b"\r\n\r\n")
        size = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        if size and len(body) >= size[0]: break
    print(json.dumps({"status": got.split(b"\r\n")[0].decode(), "body": len(got.partition(b"\r\n\r\n")[2])}))
    sys.exit(0)
socks = []
for i in range(n):
    socks.append(ask(4096))
    if i % 8 == 7: time.sleep(0.05)
print("asked", flush=True)
time.sleep(hold)
statuses = {}
for s in socks:
    s.settimeout(10)
    try: line = s.recv(200).split(b"\r\n")[0].decode()
    except OSError as e: line = "error: %s" % e
    statuses[line] = statuses.get(line, 0) + 1
    s.close()
print(json.dumps(statuses))
"#;

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("daemon status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
        / 1024
}

/// Run the agent that holds `CONNECTIONS` answers; the daemon's peak RSS
/// while they wait, and the status lines the agent finally read.
fn hold(f: &Fixture, root: bool) -> (u64, Value) {
    let gw = f.gateway();
    let mut child = exec_as(
        &f.env,
        "finance-agent",
        root,
        "/usr/bin/python3",
        &[
            "-c",
            AGENT,
            &gw,
            &CONNECTIONS.to_string(),
            &ANSWER_MIB.to_string(),
            &HOLD_SECONDS.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("agent: {e}"));
    let started = Instant::now();
    let mut peak = 0;
    while child.try_wait().ok().flatten().is_none() {
        peak = peak.max(rss_mib(f.daemon_pid()));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    let last = out.lines().last().unwrap_or_default();
    let statuses: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("agent said {out:?} {err:?}: {e}"));
    (peak, statuses)
}

#[test]
fn answers_an_agent_does_not_read_do_not_pile_up_in_the_daemon() {
    let Some(mut f) = start("gw-held-answers") else {
        return;
    };
    // Answers up to 4 MiB scrubbed whole, and connections left idle long
    // enough for the hold.
    let net = f.net;
    f.restart_with(|f| {
        f.env.write_config(&format!(
            "gateway:\n  listen: 127.170.{net}.1\n  header_timeout: 2s\n  body_timeout: 2s\n  idle_timeout: 30s\n  upstream_timeout: 5s\n  max_mask_bytes: {}\n",
            ANSWER_MIB << 20
        ));
    });
    f.reload_policy(&policy(&f));
    for root in [true, false] {
        // The control: an agent that reads gets the whole answer.
        let gw = f.gateway();
        let out = exec_as(
            &f.env,
            "finance-agent",
            root,
            "/usr/bin/python3",
            &["-c", AGENT, &gw, "0", &ANSWER_MIB.to_string(), "0"],
        )
        .output()
        .unwrap_or_else(|e| panic!("reader: {e}"));
        let read: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("reader: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(read["status"], "HTTP/1.1 200 OK", "root {root}: {read}");
        assert_eq!(read["body"], ANSWER_MIB << 20, "root {root}: {read}");

        // The attack: 64 answers of 4 MiB asked for and left unread.
        let before = rss_mib(f.daemon_pid());
        let (peak, statuses) = hold(&f, root);
        eprintln!(
            "root {root}: daemon RSS {before} MiB before, {peak} MiB at most while {CONNECTIONS} answers of {ANSWER_MIB} MiB waited; {statuses}"
        );
        let answered = statuses.as_object().map_or(0, |m| {
            m.iter()
                .filter(|(line, _)| {
                    line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.1 503")
                })
                .map(|(_, n)| n.as_u64().unwrap_or(0))
                .sum::<u64>()
        });
        assert_eq!(
            answered, CONNECTIONS as u64,
            "every connection got an answer or a refusal: {statuses}"
        );
        // Holding them all would be 256 MiB; the budget is 4 answers of
        // the identity's held whole, the rest streamed as they are read.
        assert!(
            peak.saturating_sub(before) < 96,
            "root {root}: the daemon grew from {before} to {peak} MiB holding unread answers"
        );
    }
}
