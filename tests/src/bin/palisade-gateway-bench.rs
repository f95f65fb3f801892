//! `cargo xtask bench gateway`: what the L7 gateway adds to an agent's API
//! call.
//!
//! A loopback upstream (a small hyper server in this binary, HTTP/1.1)
//! answers `POST /v1/payment_intents` with a small JSON document. A worker
//! opens C keep-alive connections (C = 1, 16) and sends small JSON POSTs,
//! timing each from the client's side, three ways side by side:
//!
//! - straight: to the upstream, from a process that is not enrolled;
//! - relay: through a bare TCP relay, a process of its own that copies
//!   bytes both ways and does nothing else: the floor of any proxy, L4 or
//!   L7, that sits between client and upstream on the same cores;
//! - gateway: enrolled as the agent, to the gateway, which identifies the
//!   caller, routes, reads the body, judges the call (a rule with a CEL
//!   condition, an approval condition, two budgets), injects the credential,
//!   forwards on a pooled connection, scrubs the secret from the answer and
//!   writes an audit record.
//!
//! Rounds interleave the three so machine noise hits both alike.
//!
//! `--no-stderr-copy` turns off the trail's readable copy on the daemon's
//! stderr (`audit.stderr: false`); the default configuration keeps it.
//! `--clients N` runs only that concurrency (for profiling one of them).

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use palisade_tests::{DaemonProc, TestEnv, palisade_bin};

const ROUNDS: usize = 5;
const CALLS_PER_RUN: usize = 3_200;
const CONCURRENCY: [usize; 2] = [1, 16];
const IDENTITY: &str = "bench-agent";
const NET: &str = "127.170.254";
const UPSTREAM_PORT: u16 = 18080;
const GATEWAY_PORT: u16 = 9301;
const RELAY_PORT: u16 = 18081;
const BODY: &str = r#"{"amount": 10, "currency": "USD", "customer": "cus_bench"}"#;

fn policy(secret_file: &Path) -> String {
    format!(
        r#"version: 1
label: bench-gateway
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {{amount: number, currency: string, customer: string}}
services:
  - id: stripe
    url: http://{NET}.2:{UPSTREAM_PORT}
    port: {GATEWAY_PORT}
    credential: {{header: Authorization, prefix: "Bearer ", file: {secret}}}
    routes:
      - {{method: POST, path: /v1/payment_intents, action: create_payment}}
identities:
  - id: bench-agent
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
      deny:
        - {{id: no-refunds, tool: stripe, actions: [refund, "payout*"]}}
    budgets:
      - {{id: daily-spend, tool: stripe, actions: [create_payment], limit: 1000000000, per: day, sum: params.amount, unit: USD}}
      - {{id: stripe-rate, tool: stripe, limit: 100000000, per: minute}}
"#,
        secret = secret_file.display()
    )
}

/// The upstream: every request gets the same small JSON answer.
async fn upstream(addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("upstream bind {addr}: {e}"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let _ = req.into_body().collect().await;
                let mut r = Response::new(Full::new(Bytes::from_static(
                    br#"{"id":"pi_bench","object":"payment_intent","status":"succeeded"}"#,
                )));
                r.headers_mut().insert(
                    "content-type",
                    "application/json".parse().unwrap_or_else(|e| panic!("{e}")),
                );
                Ok::<_, Infallible>(r)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Relay mode: accepts on `listen` and copies each connection's bytes to
/// and from a new connection to `upstream`, on one thread (the cheapest
/// way found to forward on this machine: no wake-ups between threads).
async fn relay(listen: SocketAddr, upstream: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        });
    }
}

/// Worker mode: `clients` keep-alive connections to `addr` share `calls`
/// POSTs; prints the wall time of the timed part, then one latency (ns)
/// per call.
async fn worker(addr: SocketAddr, clients: usize, calls: usize) {
    let per_client = calls / clients;
    let mut senders = Vec::new();
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        tokio::spawn(conn);
        senders.push(sender);
    }
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let req = Request::post("/v1/payment_intents")
                        .header("host", addr.to_string())
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let t = Instant::now();
                    s.ready().await.unwrap_or_else(|e| panic!("{e}"));
                    let r = s.send_request(req).await.unwrap_or_else(|e| panic!("{e}"));
                    let status = r.status();
                    let body = r
                        .into_body()
                        .collect()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    lat.push(t.elapsed().as_nanos() as u64);
                    // A benchmark of refusals would measure the wrong path.
                    assert_eq!(status, 200, "{:?}", body.to_bytes());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for t in tasks {
        all.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let wall = started.elapsed().as_nanos();
    let mut out = format!("{wall}\n");
    for ns in all {
        out.push_str(&format!("{ns}\n"));
    }
    print!("{out}");
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[derive(Default)]
struct Series {
    latencies: Vec<u64>,
    calls: u64,
    wall_ns: u128,
    /// The forwarder's CPU time (user + system, all threads) during these
    /// runs: the daemon's through the gateway, the relay's through it.
    daemon_cpu_ns: u128,
}

/// The relay process, ended with the benchmark.
struct RelayProc(std::process::Child);

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time a process has used so far (user + system, all threads), from
/// `/proc/PID/stat` in clock ticks.
fn cpu_ns(pid: u32) -> u128 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the `(comm)`, which may hold spaces: state is field 3,
    // utime and stime fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u128> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{v}: {e}")))
        .collect();
    // SAFETY: plain getter.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u128;
    (f[0] + f[1]) * 1_000_000_000 / hz
}

#[derive(Clone, Copy, PartialEq)]
enum Path3 {
    Straight,
    Relay,
    Gateway,
}

impl Path3 {
    const ALL: [Path3; 3] = [Path3::Straight, Path3::Relay, Path3::Gateway];

    fn name(self) -> &'static str {
        match self {
            Path3::Straight => "straight",
            Path3::Relay => "relay (bytes only)",
            Path3::Gateway => "gateway",
        }
    }
}

fn run_worker(env: &TestEnv, me: &Path, path: Path3, clients: usize) -> (u128, Vec<u64>) {
    let through_gateway = path == Path3::Gateway;
    let addr = match path {
        Path3::Gateway => format!("{NET}.1:{GATEWAY_PORT}"),
        Path3::Relay => format!("{NET}.3:{RELAY_PORT}"),
        Path3::Straight => format!("{NET}.2:{UPSTREAM_PORT}"),
    };
    let mut cmd = if through_gateway {
        let mut c = std::process::Command::new(palisade_bin());
        c.arg("exec")
            .arg("--socket")
            .arg(&env.socket)
            .args(["--identity", IDENTITY, "--"])
            .arg(me);
        c
    } else {
        std::process::Command::new(me)
    };
    let out = cmd
        .args([
            "worker",
            &addr,
            &clients.to_string(),
            &CALLS_PER_RUN.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("worker: {e}"));
    assert!(
        out.status.success(),
        "worker x{clients} ({}) failed: {}",
        path.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let wall: u128 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("worker printed no wall time"));
    (wall, lines.filter_map(|l| l.parse().ok()).collect())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let addr: SocketAddr = args[2].parse().unwrap_or_else(|e| panic!("{e}"));
        let clients: usize = args[3].parse().unwrap_or_else(|e| panic!("{e}"));
        let calls: usize = args[4].parse().unwrap_or_else(|e| panic!("{e}"));
        runtime().block_on(worker(addr, clients, calls));
        return;
    }
    if args.get(1).map(String::as_str) == Some("relay") {
        let listen: SocketAddr = args[2].parse().unwrap_or_else(|e| panic!("{e}"));
        let upstream: SocketAddr = args[3].parse().unwrap_or_else(|e| panic!("{e}"));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(relay(listen, upstream));
        return;
    }
    assert!(palisade_tests::root_or_skip("bench gateway"), "needs root");
    let env = TestEnv::new("bench-gateway", "version: 1\n");
    let secret = env.dir.join("bench.key");
    std::fs::write(&secret, "sk_bench_0123456789").unwrap_or_else(|e| panic!("{e}"));
    env.write_policy(&policy(&secret));
    let no_stderr_copy = args.iter().any(|a| a == "--no-stderr-copy");
    env.write_config_with(
        // Every request its own record, as for an agent within its record
        // budget (`audit.calls`), not counted as a flood.
        if no_stderr_copy {
            "  stderr: false\n  calls:\n    per_identity: 100000000\n"
        } else {
            "  calls:\n    per_identity: 100000000\n"
        },
        &format!("gateway:\n  listen: {NET}.1\n"),
    );
    // The upstream runs on its own runtime thread for the whole benchmark.
    let up: SocketAddr = format!("{NET}.2:{UPSTREAM_PORT}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    rt.spawn(upstream(up));
    std::thread::sleep(Duration::from_millis(200));
    let daemon = DaemonProc::start(&env);
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let relay = RelayProc(
        std::process::Command::new(&me)
            .args(["relay", &format!("{NET}.3:{RELAY_PORT}"), &up.to_string()])
            .spawn()
            .unwrap_or_else(|e| panic!("relay: {e}")),
    );
    std::thread::sleep(Duration::from_millis(200));

    let concurrency: Vec<usize> = match args.iter().position(|a| a == "--clients") {
        Some(i) => vec![
            args.get(i + 1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("--clients needs a number")),
        ],
        None => CONCURRENCY.to_vec(),
    };
    let mut series: Vec<[Series; 3]> = concurrency.iter().map(|_| Default::default()).collect();
    for round in 0..ROUNDS {
        for (ci, &clients) in concurrency.iter().enumerate() {
            for (ki, path) in Path3::ALL.into_iter().enumerate() {
                // The CPU column is the forwarder's: the relay's own process
                // for the relay, the daemon's for the gateway.
                let forwarder = if path == Path3::Relay {
                    relay.0.id()
                } else {
                    daemon.pid()
                };
                let before = cpu_ns(forwarder);
                let (wall, lat) = run_worker(&env, &me, path, clients);
                let daemon_cpu = cpu_ns(forwarder) - before;
                let s = &mut series[ci][ki];
                s.calls += lat.len() as u64;
                s.wall_ns += wall;
                s.daemon_cpu_ns += daemon_cpu;
                s.latencies.extend(lat);
            }
        }
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }

    println!(
        "{ROUNDS} interleaved rounds x {CALLS_PER_RUN} POSTs per (clients, path); latency in µs, seen by the client; audit stderr copy {}",
        if no_stderr_copy { "off" } else { "on" }
    );
    println!(
        "| clients | path | requests | p50 | p99 | p99.9 | requests/s | forwarder CPU/request (µs) | vs straight |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (ci, &clients) in concurrency.iter().enumerate() {
        let mut base = (0.0, 0.0, 0.0);
        for (ki, name) in Path3::ALL.map(Path3::name).into_iter().enumerate() {
            let s = &mut series[ci][ki];
            s.latencies.sort_unstable();
            let (p50, p99, p999) = (
                percentile(&s.latencies, 0.50),
                percentile(&s.latencies, 0.99),
                percentile(&s.latencies, 0.999),
            );
            let rate = s.calls as f64 / (s.wall_ns as f64 / 1e9);
            let vs = if ki == 0 {
                base = (p50, p99, rate);
                String::new()
            } else {
                format!(
                    "p50 {:+.0} µs, p99 {:+.0} µs, throughput {:.2}×",
                    p50 - base.0,
                    p99 - base.1,
                    rate / base.2
                )
            };
            let cpu = if ki == 0 {
                0.0
            } else {
                s.daemon_cpu_ns as f64 / 1e3 / s.calls.max(1) as f64
            };
            println!(
                "| {clients} | {name} | {} | {p50:.0} | {p99:.0} | {p999:.0} | {rate:.0} | {cpu:.1} | {vs} |",
                s.calls
            );
        }
    }
}
