//! `cargo xtask bench connect`: what enforcement costs a connect().
//!
//! One daemon, one policy with three identities holding 10, 1,000 and
//! 100,000 allow rules (plus the rule that admits the benchmark's loopback
//! listener). Workers connect to the listener from four places, measured
//! side by side in interleaved rounds so machine noise hits all alike:
//! a cgroup with no program attached, a cgroup where the programs run but
//! the process is not enrolled (the kernel's fixed cost of a cgroup hook),
//! and each identity.

use std::{
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Instant,
};

use palisade_tests::{DaemonProc, TcpServer, TestEnv, palisade_bin};

const ROUNDS: usize = 12;
const PER_BATCH: usize = 1500;

fn policy(port: u16) -> String {
    let mut s = String::from("version: 1\nidentities:\n");
    for (name, n) in [
        ("rules-10", 10u32),
        ("rules-1k", 1_000),
        ("rules-100k", 100_000),
    ] {
        s.push_str(&format!(
            "  - id: {name}\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{port}], protocol: tcp}}\n"
        ));
        // Distinct /32s across 10.0.0.0/8 with a mix of ports.
        for i in 0..n.saturating_sub(1) {
            let port = 1000 + (i % 50);
            s.push_str(&format!(
                "        - {{cidr: 10.{}.{}.{}, ports: [{port}]}}\n",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ));
        }
    }
    s
}

/// Worker mode: connect `count` times, print one latency (ns) per line.
fn worker(addr: SocketAddr, count: usize) {
    let mut out = String::with_capacity(count * 8);
    for _ in 0..count {
        let t = Instant::now();
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let ns = t.elapsed().as_nanos();
        rst_close(s);
        out.push_str(&ns.to_string());
        out.push('\n');
    }
    print!("{out}");
}

/// Close with RST (SO_LINGER 0): no TIME_WAIT pile-up over 100k connections.
fn rst_close(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn parse(out: &std::process::Output, what: &str) -> Vec<u64> {
    assert!(
        out.status.success(),
        "{what}: worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap_or_else(|e| panic!("{what}: {l:?}: {e}")))
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let addr: SocketAddr = args[2].parse().unwrap_or_else(|e| panic!("{e}"));
        let count: usize = args[3].parse().unwrap_or_else(|e| panic!("{e}"));
        worker(addr, count);
        return;
    }
    assert!(palisade_tests::root_or_skip("bench connect"), "needs root");
    let server = TcpServer::start("127.0.0.1");
    let started = Instant::now();
    let env = TestEnv::new("bench", &policy(server.addr.port()));
    let _daemon = DaemonProc::start(&env);
    eprintln!(
        "policy with 101,011 rules loaded and applied in {:.2?}",
        started.elapsed()
    );
    // The baseline cgroup lies outside the subtree the programs attach to.
    let baseline = env
        .cgroup_root
        .join(format!("palisade-bench-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&baseline).unwrap_or_else(|e| panic!("{e}"));

    let unenrolled = env.make_cgroup("not-enrolled");
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addr.to_string();
    let count = PER_BATCH.to_string();
    let scenarios = [
        "no program",
        "program, not enrolled",
        "rules-10",
        "rules-1k",
        "rules-100k",
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); scenarios.len()];
    for round in 0..ROUNDS {
        for (i, name) in scenarios.iter().enumerate() {
            let out = if i < 2 {
                let cgroup = if i == 0 { &baseline } else { &unenrolled };
                palisade_tests::Probe::in_cgroup_cmd(cgroup, &me, &["worker", &addr, &count])
            } else {
                Command::new(palisade_bin())
                    .args(["exec", "--socket"])
                    .arg(&env.socket)
                    .args(["--identity", name, "--"])
                    .arg(&me)
                    .args(["worker", &addr, &count])
                    .output()
                    .unwrap_or_else(|e| panic!("{e}"))
            };
            samples[i].extend(parse(&out, name));
        }
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }
    let _ = std::fs::remove_dir(&baseline);

    let stats: Vec<(u64, u64)> = samples
        .iter_mut()
        .map(|s| {
            s.sort_unstable();
            (percentile(s, 0.5), percentile(s, 0.99))
        })
        .collect();
    let (base_p50, base_p99) = stats[0];
    println!("| scenario | connects | median | p99 | median ratio | p99 ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, name) in scenarios.iter().enumerate() {
        let (p50, p99) = stats[i];
        println!(
            "| {name} | {} | {:.1} µs | {:.1} µs | {:.3}× | {:.3}× |",
            samples[i].len(),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            p50 as f64 / base_p50 as f64,
            p99 as f64 / base_p99 as f64
        );
    }
}
