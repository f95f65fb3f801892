//! `cargo xtask bench state`: what the decision state journal costs.
//!
//! 1. In-process, one thread, the daemon's own code: a budget charge of two
//!    budgets (what an allowed payment does) with no journal, with
//!    `fsync: batch` and with `fsync: always`, interleaved; and one journal
//!    append on its own.
//! 2. End to end: two daemons with the same payments policy, one
//!    `fsync: batch`, one `fsync: always`, their state journals on the same
//!    disk. An enrolled worker calls `Decide` (a token per call, two budgets
//!    charged: three journal records per call) and `Ping`, in interleaved
//!    rounds, at 1 and 16 clients.
//! 3. Restart: a journal holding 100,000 used token ids, 10,000 budget
//!    levels and 1,000 approvals is read, restored and rewritten.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use palisade::{
    api::client,
    decision::budgets::Budgets,
    policy::{Window, decide::BudgetCharge},
    proto,
    state::{self, ApprovalRecord, Log, Record, StateConfig},
};
use palisade_tests::{DaemonProc, TestEnv, palisade_bin};

const IDENTITY: &str = "bench-agent";
const ROUNDS: usize = 5;
const CALLS: usize = 3_200;

const POLICY: &str = r#"version: 1
label: bench-state
schemas:
  - tool: stripe
    actions: [create_payment]
    params: {amount: number, currency: string, customer: string}
identities:
  - id: bench-agent
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.currency == "USD" && params.amount <= 5000
    budgets:
      - {id: daily-spend, tool: stripe, actions: [create_payment], limit: 1000000000, per: day, sum: params.amount, unit: USD}
      - {id: stripe-rate, tool: stripe, limit: 100000000, per: minute}
"#;

fn charges() -> Vec<BudgetCharge> {
    vec![
        BudgetCharge {
            budget: "daily-spend".into(),
            amount: 10.0,
            limit: 1e9,
            per: Window::Day,
            unit: Some("USD".into()),
        },
        BudgetCharge {
            budget: "stripe-rate".into(),
            amount: 1.0,
            limit: 1e8,
            per: Window::Minute,
            unit: None,
        },
    ]
}

fn journal(dir: &Path, name: &str, fsync: &str) -> Arc<state::Journal> {
    let opened = state::open(&StateConfig {
        file: dir.join(name),
        fsync: fsync.into(),
        fsync_interval: "10ms".into(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    opened
        .journal
        .begin(Box::new(|| Some(Vec::new())))
        .unwrap_or_else(|e| panic!("{e}"));
    opened.journal
}

/// µs per charge of two budgets for each journal setting, interleaved.
fn in_process(dir: &Path) {
    const N: usize = 5_000;
    let batch = journal(dir, "batch.journal", "batch");
    let always = journal(dir, "always.journal", "always");
    let setups: [(&str, Log); 3] = [
        ("no journal", Log::default()),
        ("fsync: batch", Log::new(batch.clone())),
        ("fsync: always", Log::new(always.clone())),
    ];
    let budgets: Vec<Budgets> = setups
        .iter()
        .map(|(_, log)| Budgets::restore(log.clone(), HashMap::new(), None))
        .collect();
    let c = charges();
    let mut total = [0f64; 3];
    for _ in 0..4 {
        for (i, b) in budgets.iter().enumerate() {
            // `always` waits for the disk on every call: fewer calls.
            let n = if i == 2 { N / 25 } else { N };
            let t = Instant::now();
            for _ in 0..n {
                b.charge(IDENTITY, &c, false)
                    .unwrap_or_else(|e| panic!("{e:?}"));
            }
            total[i] += t.elapsed().as_secs_f64() * 1e6 / n as f64;
        }
    }
    println!("| charge of two budgets | µs per call |\n|---|---:|");
    for (i, (name, _)) in setups.iter().enumerate() {
        println!("| {name} | {:.2} |", total[i] / 4.0);
    }
    let rec = Record::Used {
        identity: IDENTITY.into(),
        jti: "0123456789abcdef0123456789abcdef".into(),
        exp: 1_900_000_000,
    };
    let t = Instant::now();
    for _ in 0..N {
        batch.append(&rec).unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "one journal append (a used token id, `fsync: batch`): {:.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / N as f64
    );
    batch.close();
    always.close();
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ping,
    Decide,
}

fn payment(token: String) -> proto::DecideRequest {
    use prost_types::{Struct, Value, value::Kind as V};
    let field = |k: &str, v: V| (k.to_string(), Value { kind: Some(v) });
    proto::DecideRequest {
        token,
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

/// Worker (runs enrolled): prints the wall ns of the timed part, then one
/// latency (ns) per call.
async fn worker(socket: PathBuf, kind: Kind, clients: usize, calls: usize) {
    let per = calls / clients;
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(
            client::connect(&socket)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let mut tokens = Vec::new();
    for c in &mut conns {
        let mut mine = Vec::with_capacity(per);
        if kind == Kind::Decide {
            for _ in 0..per {
                let r = c
                    .issue_token(proto::IssueTokenRequest { ttl_seconds: 0 })
                    .await
                    .unwrap_or_else(|s| panic!("IssueToken: {s}"));
                mine.push(r.into_inner().token);
            }
        }
        tokens.push(mine);
    }
    let started = Instant::now();
    for (mut c, mine) in conns.into_iter().zip(tokens) {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut mine = mine.into_iter();
            for _ in 0..per {
                let t = Instant::now();
                if kind == Kind::Ping {
                    c.ping(proto::PingRequest {})
                        .await
                        .unwrap_or_else(|s| panic!("Ping: {s}"));
                } else {
                    let r = c
                        .decide(payment(mine.next().unwrap_or_default()))
                        .await
                        .unwrap_or_else(|s| panic!("Decide: {s}"))
                        .into_inner();
                    assert_eq!(r.verdict, proto::Verdict::Allow as i32, "{}", r.message);
                }
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let mut out = format!("{}\n", started.elapsed().as_nanos());
    for ns in all {
        out.push_str(&format!("{ns}\n"));
    }
    print!("{out}");
}

fn run_worker(env: &TestEnv, me: &Path, kind: Kind, clients: usize) -> (u128, Vec<u64>) {
    let out = std::process::Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", IDENTITY, "--"])
        .arg(me)
        .arg("worker")
        .arg(&env.socket)
        .arg(if kind == Kind::Ping { "ping" } else { "decide" })
        .arg(clients.to_string())
        .arg(CALLS.to_string())
        .output()
        .unwrap_or_else(|e| panic!("worker: {e}"));
    assert!(
        out.status.success(),
        "worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let wall = lines.next().and_then(|l| l.parse().ok()).unwrap_or(1);
    (wall, lines.filter_map(|l| l.parse().ok()).collect())
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn end_to_end(me: &Path) {
    let mut setups = Vec::new();
    for fsync in ["batch", "always"] {
        let env = TestEnv::new(&format!("bench-state-{fsync}"), POLICY);
        env.write_config_with("  stderr: false\n", "");
        // The harness writes the state section; add the mode to it.
        let cfg = std::fs::read_to_string(&env.config).unwrap_or_default();
        let section = format!("state:\n  file: {}\n", env.state.display());
        assert!(cfg.contains(&section), "{cfg}");
        let cfg = cfg.replace(&section, &format!("{section}  fsync: {fsync}\n"));
        std::fs::write(&env.config, cfg).unwrap_or_else(|e| panic!("{e}"));
        let d = DaemonProc::start(&env);
        setups.push((fsync, env, d));
    }
    // (setup, kind, clients) → latencies and wall time
    let mut series: HashMap<(usize, usize, usize), (Vec<u64>, u128)> = HashMap::new();
    let rows = [(0, Kind::Ping), (0, Kind::Decide), (1, Kind::Decide)];
    for round in 0..ROUNDS {
        for clients in [1, 16] {
            for (ri, (si, kind)) in rows.iter().enumerate() {
                let (wall, lat) = run_worker(&setups[*si].1, me, *kind, clients);
                let e = series.entry((ri, clients, 0)).or_default();
                e.0.extend(lat);
                e.1 += wall;
            }
        }
        eprintln!("round {}/{ROUNDS}", round + 1);
    }
    println!("\n{ROUNDS} interleaved rounds × {CALLS} calls; latency in µs seen by the client\n");
    println!("| clients | daemon | rpc | p50 | p99 | calls/s |\n|---|---|---|---:|---:|---:|");
    for clients in [1, 16] {
        for (ri, (si, kind)) in rows.iter().enumerate() {
            let Some((lat, wall)) = series.get_mut(&(ri, clients, 0)) else {
                continue;
            };
            lat.sort_unstable();
            println!(
                "| {clients} | fsync: {} | {} | {:.0} | {:.0} | {:.0} |",
                setups[*si].0,
                if *kind == Kind::Ping {
                    "Ping"
                } else {
                    "Decide"
                },
                pct(lat, 0.5),
                pct(lat, 0.99),
                lat.len() as f64 / (*wall as f64 / 1e9)
            );
        }
    }
}

fn restart(dir: &Path) {
    let cfg = StateConfig {
        file: dir.join("big.journal"),
        fsync: "batch".into(),
        fsync_interval: "10ms".into(),
    };
    let mut records = Vec::new();
    for i in 0..100_000u64 {
        records.push(Record::Used {
            identity: format!("agent-{:03}", i % 100),
            jti: format!("{:032x}", i * 7919 + 1),
            exp: 4_000_000_000,
        });
    }
    for i in 0..10_000u64 {
        records.push(Record::Budget {
            identity: format!("agent-{:03}", i % 100),
            budget: format!("budget-{i}"),
            tokens: 10.0,
            limit: 100.0,
            per: Window::Day,
            at_ms: state::record::now_ms(),
        });
    }
    for i in 0..1_000u64 {
        records.push(Record::Approval(ApprovalRecord {
            id: format!("apr-{i:020}"),
            state: "pending".into(),
            identity: format!("agent-{:03}", i % 100),
            tool: "stripe".into(),
            action: "create_payment".into(),
            resource: String::new(),
            params_digest: "ab".repeat(32),
            policy_version: "sha256:0123456789abcdef".into(),
            rules: vec!["payments".into()],
            created_ms: state::record::now_ms(),
            expires_ms: state::record::now_ms() + 3_600_000,
            approver: String::new(),
            reason: String::new(),
            override_token: None,
            egress: None,
        }));
    }
    let opened = state::open(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let live = records.clone();
    opened
        .journal
        .begin(Box::new(move || Some(live.clone())))
        .unwrap_or_else(|e| panic!("{e}"));
    opened.journal.close();
    drop(opened);
    let bytes = std::fs::metadata(&cfg.file).map_or(0, |m| m.len());
    let t = Instant::now();
    let opened = state::open(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let read = t.elapsed();
    let n = opened
        .snapshot
        .used
        .values()
        .map(HashMap::len)
        .sum::<usize>();
    assert_eq!(n, 100_000);
    let t = Instant::now();
    opened
        .journal
        .begin(Box::new(move || Some(records.clone())))
        .unwrap_or_else(|e| panic!("{e}"));
    let rewrite = t.elapsed();
    opened.journal.close();
    println!(
        "\nrestart with 111,000 live records ({:.1} MiB journal): read and parse {:.0} ms, rewrite {:.0} ms",
        bytes as f64 / (1 << 20) as f64,
        read.as_secs_f64() * 1000.0,
        rewrite.as_secs_f64() * 1000.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let kind = if args[3] == "ping" {
            Kind::Ping
        } else {
            Kind::Decide
        };
        let clients: usize = args[4].parse().unwrap_or_else(|e| panic!("{e}"));
        let calls: usize = args[5].parse().unwrap_or_else(|e| panic!("{e}"));
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(worker(PathBuf::from(&args[2]), kind, clients, calls));
        return;
    }
    assert!(palisade_tests::root_or_skip("bench state"), "needs root");
    // Parts to run (default all): in-process, restart, end-to-end.
    let only = args.get(1).cloned().unwrap_or_default();
    let scratch = TestEnv::new("bench-state", POLICY);
    if only.is_empty() || only == "in-process" {
        in_process(&scratch.dir);
    }
    if only.is_empty() || only == "restart" {
        restart(&scratch.dir);
    }
    if only.is_empty() || only == "end-to-end" {
        let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        end_to_end(&me);
    }
}
