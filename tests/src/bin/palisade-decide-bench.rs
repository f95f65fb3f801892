//! `cargo xtask bench decide`: what a tool-call decision costs an agent.
//!
//! One daemon, one policy in the shape of a real payments agent (a parameter
//! schema, a rule with a condition, an approval condition, a summed daily
//! budget and a rate budget). A worker enrolled as that agent opens C
//! connections over the Unix socket (C = 1, 16, 64), then times each call
//! from the client's side: `Decide` as agents make it, authenticated by
//! the socket peer (caller pinned at accept, identity and kill switch read
//! per call, rule evaluation, budgets, audit event); `Decide` with a
//! single-use token as well (pre-issued, one per call: the token's
//! verification and replay check on top); and side by side `Ping`, an
//! empty handler on the same server — the floor of gRPC over the socket.
//! Rounds interleave the three so machine noise hits them alike.
//!
//! Last, in-process and on one core, what issuing and verifying one token
//! costs here, and verifying one the daemon has verified before.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use palisade::{
    api::client,
    proto,
    tokens::{AccessClaims, TokenSettings, Tokens},
};
use palisade_tests::{DaemonProc, TestEnv, palisade_bin};

const ROUNDS: usize = 5;
const CALLS_PER_RUN: usize = 6_400;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
const IDENTITY: &str = "bench-agent";

const POLICY: &str = r#"version: 1
label: bench-decide
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string, customer: string}
roles:
  - id: payments-operator
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
          approval_if: params.amount > 1000
      deny:
        - id: no-refunds
          tool: stripe
          actions: [refund, "payout*"]
    budgets:
      - {id: daily-spend, tool: stripe, actions: [create_payment], limit: 1000000000, per: day, sum: params.amount, unit: USD}
      - {id: stripe-rate, tool: stripe, limit: 100000000, per: minute}
identities:
  - id: bench-agent
    roles: [payments-operator]
"#;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ping,
    /// Authenticated by the socket peer alone.
    Decide,
    /// With a fresh single-use token as well.
    DecideToken,
}

const KINDS: [Kind; 3] = [Kind::Ping, Kind::Decide, Kind::DecideToken];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Decide => "decide",
            Kind::DecideToken => "decide-token",
        }
    }

    fn parse(s: &str) -> Self {
        KINDS
            .into_iter()
            .find(|k| k.name() == s)
            .unwrap_or_else(|| panic!("unknown kind {s}"))
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Ping => "Ping (empty)",
            Kind::Decide => "Decide",
            Kind::DecideToken => "Decide + token",
        }
    }
}

fn payment() -> proto::DecideRequest {
    use prost_types::{Struct, Value, value::Kind as V};
    let field = |k: &str, v: V| (k.to_string(), Value { kind: Some(v) });
    proto::DecideRequest {
        tool: "stripe".into(),
        action: "create_payment".into(),
        params: Some(Struct {
            fields: [
                field("amount", V::NumberValue(10.0)),
                field("currency", V::StringValue("USD".into())),
                field("customer", V::StringValue("cus_bench".into())),
            ]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    }
}

/// CPU time (ns) all threads of a process have run, from the scheduler's
/// own accounting (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Worker mode (runs enrolled): `clients` connections share `calls` calls;
/// prints the wall time of the timed part with the CPU time the daemon and
/// the worker spent in it, then one latency (ns) per call.
async fn worker(socket: PathBuf, kind: Kind, clients: usize, calls: usize, daemon: String) {
    let per_client = calls / clients;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(
            client::connect(&socket)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    // Tokens are issued before the clock starts: an agent runtime would
    // hold one ready per call.
    let mut tokens: Vec<Vec<String>> = vec![Vec::new(); clients];
    if kind == Kind::DecideToken {
        let issuing = conns.iter().cloned().map(|mut c| {
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let r = c
                        .issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
                        .await
                        .unwrap_or_else(|s| panic!("IssueToken: {s}"));
                    out.push(r.into_inner().token);
                }
                out
            })
        });
        let issuing: Vec<_> = issuing.collect();
        for (slot, task) in tokens.iter_mut().zip(issuing) {
            *slot = task.await.unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let (daemon_cpu, own_cpu) = (cpu_ns(&daemon), cpu_ns("self"));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(tokens)
        .map(|(mut c, tokens)| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                let mut tokens = tokens.into_iter();
                for _ in 0..per_client {
                    let t = Instant::now();
                    match kind {
                        Kind::Ping => {
                            c.ping(proto::PingRequest {})
                                .await
                                .unwrap_or_else(|s| panic!("Ping: {s}"));
                        }
                        Kind::Decide | Kind::DecideToken => {
                            let mut req = payment();
                            req.token = tokens.next().unwrap_or_default();
                            let r = c
                                .decide(req)
                                .await
                                .unwrap_or_else(|s| panic!("Decide: {s}"))
                                .into_inner();
                            // A benchmark of refusals would measure the wrong path.
                            assert_eq!(
                                r.verdict,
                                proto::Verdict::Allow as i32,
                                "decision was not ALLOW: {} {}",
                                r.reason,
                                r.message
                            );
                        }
                    }
                    lat.push(t.elapsed().as_nanos() as u64);
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
    let daemon_cpu = cpu_ns(&daemon) - daemon_cpu;
    let own_cpu = cpu_ns("self") - own_cpu;
    let mut out = String::with_capacity(all.len() * 8);
    out.push_str(&format!("{wall} {daemon_cpu} {own_cpu}\n"));
    for ns in all {
        out.push_str(&format!("{ns}\n"));
    }
    print!("{out}");
}

/// Microseconds per token to issue, to verify (with the replay check),
/// and to verify again a token verified before (an operator token, which
/// may be used repeatedly: the verified-token cache), measured in-process
/// on one core with the daemon's own code.
fn token_costs(dir: &Path) -> (f64, f64, f64) {
    const N: usize = 3_000;
    let tokens = Tokens::load(TokenSettings {
        key_file: dir.join("bench-keys.yaml"),
        issuer: "palisade://bench".into(),
        audience: "palisade".into(),
        ttl: std::time::Duration::from_secs(900),
        max_ttl: std::time::Duration::from_secs(3600),
    })
    .unwrap_or_else(|e| panic!("token keys: {e}"));
    let claims = AccessClaims {
        iss: String::new(),
        aud: String::new(),
        sub: IDENTITY.into(),
        org: None,
        tenant: None,
        role: "payments-operator".into(),
        roles: vec!["payments-operator".into()],
        scopes: vec!["stripe.create_payment".into()],
        iat: 0,
        iat_ms: None,
        nbf: 0,
        exp: 0,
        jti: String::new(),
    };
    let started = Instant::now();
    let issued: Vec<String> = (0..N)
        .map(|_| {
            tokens
                .issue_access(claims.clone(), None)
                .unwrap_or_else(|e| panic!("issue: {e}"))
                .0
        })
        .collect();
    let issue = started.elapsed().as_secs_f64() * 1e6 / N as f64;
    let started = Instant::now();
    for t in &issued {
        tokens
            .verify_access(t, IDENTITY)
            .unwrap_or_else(|e| panic!("verify: {e}"));
    }
    let verify = started.elapsed().as_secs_f64() * 1e6 / N as f64;
    let operator = palisade::tokens::operator_token(
        &dir.join("bench-keys.yaml"),
        "palisade://bench",
        "palisade",
        "bench",
        std::time::Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("operator token: {e}"));
    tokens
        .verify_operator(&operator)
        .unwrap_or_else(|e| panic!("verify: {e}"));
    let started = Instant::now();
    for _ in 0..N {
        tokens
            .verify_operator(&operator)
            .unwrap_or_else(|e| panic!("verify: {e}"));
    }
    let cached = started.elapsed().as_secs_f64() * 1e6 / N as f64;
    (issue, verify, cached)
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
    daemon_cpu_ns: u64,
    client_cpu_ns: u64,
}

/// What one worker run measured.
struct Run {
    wall: u128,
    daemon_cpu: u64,
    client_cpu: u64,
    latencies: Vec<u64>,
}

impl Series {
    fn rate(&self) -> f64 {
        self.calls as f64 / (self.wall_ns as f64 / 1e9)
    }
}

fn run_worker(env: &TestEnv, me: &Path, daemon: u32, kind: Kind, clients: usize) -> Run {
    let out = std::process::Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", IDENTITY, "--"])
        .arg(me)
        .arg("worker")
        .arg(&env.socket)
        .arg(kind.name())
        .arg(clients.to_string())
        .arg(CALLS_PER_RUN.to_string())
        .arg(daemon.to_string())
        .output()
        .unwrap_or_else(|e| panic!("worker: {e}"));
    assert!(
        out.status.success(),
        "worker {} x{clients} failed: {}",
        kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let head: Vec<u64> = lines
        .next()
        .map(|l| l.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let [wall, daemon_cpu, client_cpu] = head[..] else {
        panic!("worker printed no wall and CPU times: {head:?}");
    };
    Run {
        wall: u128::from(wall),
        daemon_cpu,
        client_cpu,
        latencies: lines.filter_map(|l| l.parse().ok()).collect(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let kind = Kind::parse(&args[3]);
        let clients: usize = args[4].parse().unwrap_or_else(|e| panic!("{e}"));
        let calls: usize = args[5].parse().unwrap_or_else(|e| panic!("{e}"));
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(worker(
                PathBuf::from(&args[2]),
                kind,
                clients,
                calls,
                args[6].clone(),
            ));
        return;
    }
    assert!(palisade_tests::root_or_skip("bench decide"), "needs root");
    let env = TestEnv::new("bench-decide", POLICY);
    // As deployed (deploy/kubernetes): the trail is the record, no copy of
    // every event on stderr.
    // Every call its own record, as for an agent within its record budget
    // (`audit.calls`): a benchmark's flood would otherwise be counted, not
    // recorded, and measure less work than real calls cost.
    env.write_config_with(
        "  stderr: false\n  calls:\n    per_identity: 100000000\n",
        "",
    );
    let daemon = DaemonProc::start(&env);
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // `--load KIND CLIENTS RUNS`: only that load, for a profiler attached
    // to the daemon (whose pid is printed first).
    if args.get(1).map(String::as_str) == Some("--load") {
        let kind = Kind::parse(&args[2]);
        let clients: usize = args[3].parse().unwrap_or_else(|e| panic!("{e}"));
        let runs: usize = args[4].parse().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("daemon pid {}", daemon.pid());
        std::thread::sleep(std::time::Duration::from_secs(2));
        for _ in 0..runs {
            let r = run_worker(&env, &me, daemon.pid(), kind, clients);
            let n = r.latencies.len() as f64;
            eprintln!(
                "{} x{clients}: {:.0} calls/s, CPU per call: daemon {:.1} µs, client {:.1} µs",
                kind.name(),
                n / (r.wall as f64 / 1e9),
                r.daemon_cpu as f64 / n / 1e3,
                r.client_cpu as f64 / n / 1e3
            );
        }
        return;
    }

    let mut series: Vec<[Series; 3]> = CONCURRENCY.iter().map(|_| Default::default()).collect();
    for round in 0..ROUNDS {
        for (ci, &clients) in CONCURRENCY.iter().enumerate() {
            for (ki, kind) in KINDS.into_iter().enumerate() {
                let r = run_worker(&env, &me, daemon.pid(), kind, clients);
                let s = &mut series[ci][ki];
                s.calls += r.latencies.len() as u64;
                s.wall_ns += r.wall;
                s.daemon_cpu_ns += r.daemon_cpu;
                s.client_cpu_ns += r.client_cpu;
                s.latencies.extend(r.latencies);
            }
        }
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }

    println!(
        "{ROUNDS} interleaved rounds x {CALLS_PER_RUN} calls per (clients, rpc); latency in µs, seen by the client"
    );
    println!(
        "| clients | rpc | calls | p50 | p99 | p99.9 | calls/s | ÷ Ping (p50 / p99 / calls/s) | CPU µs/call daemon + client |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // (clients, p50 ratio, p99 ratio, throughput ratio) of peer-only Decide.
    let mut goals = Vec::new();
    for (ci, &clients) in CONCURRENCY.iter().enumerate() {
        let mut stats = Vec::new();
        for (ki, kind) in KINDS.into_iter().enumerate() {
            let s = &mut series[ci][ki];
            s.latencies.sort_unstable();
            let p = (
                percentile(&s.latencies, 0.50),
                percentile(&s.latencies, 0.99),
                percentile(&s.latencies, 0.999),
                s.rate(),
            );
            let ratio = if kind == Kind::Ping {
                String::new()
            } else {
                let (b50, b99, _, brate): (f64, f64, f64, f64) = stats[0];
                if kind == Kind::Decide {
                    goals.push((clients, p.0 / b50, p.1 / b99, p.3 / brate));
                }
                format!(
                    "{:.2}× / {:.2}× / {:.2}×",
                    p.0 / b50,
                    p.1 / b99,
                    p.3 / brate
                )
            };
            let per_call = |ns: u64| ns as f64 / s.calls as f64 / 1e3;
            println!(
                "| {clients} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {ratio} | {:.1} + {:.1} |",
                kind.label(),
                s.calls,
                p.0,
                p.1,
                p.2,
                p.3,
                per_call(s.daemon_cpu_ns),
                per_call(s.client_cpu_ns)
            );
            stats.push(p);
        }
    }
    println!("\nGoals (peer-authenticated Decide against Ping, this run):");
    for (clients, r50, r99, rate) in goals {
        match clients {
            1 => println!(
                "  1 client: p50 {r50:.2}× Ping's (goal ≤ 2×: {})",
                if r50 <= 2.0 { "met" } else { "NOT met" }
            ),
            16 => {
                println!(
                    "  16 clients: throughput {rate:.2}× Ping's (goal ≥ 0.5×: {})",
                    if rate >= 0.5 { "met" } else { "NOT met" }
                );
                println!(
                    "  16 clients: p99 {r99:.2}× Ping's (goal ≤ 2×: {})",
                    if r99 <= 2.0 { "met" } else { "NOT met" }
                );
            }
            _ => {}
        }
    }
    let (issue, verify, cached) = token_costs(&env.dir);
    println!(
        "\ntoken cost in-process, one core: issue {issue:.1} µs, verify {verify:.1} µs, \
         verify a token verified before (cache) {cached:.2} µs"
    );
}
