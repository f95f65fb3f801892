//! `cargo xtask bench dns`: what the DNS proxy adds to a lookup.
//!
//! A real DNS server (dnsmasq) on loopback serves 100 names; one daemon
//! runs a policy whose identity may resolve them. Workers ask the same
//! server the same questions, one at a time, from two places, in
//! interleaved rounds so machine noise hits both alike: a process that is
//! not enrolled (straight to the server) and a process enrolled in the
//! identity (steered through the proxy, judged, learned into the kernel
//! map before the answer is released). Then a flood with many queries in
//! flight measures queries per second through the proxy (and straight to
//! the server, for scale).

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    str::FromStr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use palisade_tests::{
    DaemonProc, TestEnv,
    dns::{self, Dnsmasq},
    palisade_bin,
};

const ROUNDS: usize = 10;
const PER_BATCH: usize = 1000;
const NAMES: usize = 100;
const FLOOD_SECONDS: u64 = 3;
const IN_FLIGHT: usize = 64;

fn query(i: usize) -> Vec<u8> {
    let mut m = Message::new((i & 0xffff) as u16, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let name =
        Name::from_str(&format!("n{}.bench.test.", i % NAMES)).unwrap_or_else(|e| panic!("{e}"));
    m.add_query(Query::query(name, RecordType::A));
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn socket(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("bind: {e}"));
    s.connect(server)
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// Worker: `count` lookups one after the other; one latency (ns) per line.
fn latency(server: SocketAddr, count: usize) {
    let s = socket(server);
    let mut buf = [0u8; 1500];
    let mut out = String::with_capacity(count * 8);
    for i in 0..count {
        let q = query(i);
        let t = Instant::now();
        s.send(&q).unwrap_or_else(|e| panic!("send: {e}"));
        let n = s
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("lookup {i}: {e}"));
        let ns = t.elapsed().as_nanos();
        let m = Message::from_vec(&buf[..n]).unwrap_or_else(|e| panic!("answer: {e}"));
        assert_eq!(m.answers.len(), 1, "lookup {i} got no address: {m:?}");
        out.push_str(&ns.to_string());
        out.push('\n');
    }
    print!("{out}");
}

/// Worker: keep `in_flight` lookups outstanding for `seconds`; print the
/// number answered.
fn flood(server: SocketAddr, seconds: u64, in_flight: usize) {
    let s = socket(server);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 1500];
    let mut sent = 0usize;
    for _ in 0..in_flight {
        s.send(&query(sent)).unwrap_or_else(|e| panic!("send: {e}"));
        sent += 1;
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut answered = 0u64;
    while Instant::now() < end {
        match s.recv(&mut buf) {
            Ok(_) => {
                answered += 1;
                s.send(&query(sent)).unwrap_or_else(|e| panic!("send: {e}"));
                sent += 1;
            }
            // A lost datagram: put another in flight.
            Err(_) => {
                s.send(&query(sent)).unwrap_or_else(|e| panic!("send: {e}"));
                sent += 1;
            }
        }
    }
    println!("{answered}");
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("latency") => {
            let server = args[2].parse().unwrap_or_else(|e| panic!("{e}"));
            latency(server, args[3].parse().unwrap_or_else(|e| panic!("{e}")));
            return;
        }
        Some("flood") => {
            let server = args[2].parse().unwrap_or_else(|e| panic!("{e}"));
            flood(
                server,
                args[3].parse().unwrap_or_else(|e| panic!("{e}")),
                args[4].parse().unwrap_or_else(|e| panic!("{e}")),
            );
            return;
        }
        _ => {}
    }
    assert!(palisade_tests::root_or_skip("bench dns"), "needs root");
    let n = dns::slot();
    let env = TestEnv::new(
        "dnsbench",
        "version: 1\nidentities:\n  - id: bench\n    egress:\n      allow:\n        - {host: '*.bench.test', protocol: tcp}\n",
    );
    // Audit to the file (every allowed lookup is an event), not to stderr.
    std::fs::write(
        &env.config,
        format!(
            "policy: {}\nsocket: {}\nbpffs: {}\naudit:\n  file: {}\n  stderr: false\ncgroup:\n  attach: {}\n{}",
            env.policy.display(),
            env.socket.display(),
            env.bpffs.display(),
            env.audit.display(),
            env.attach.display(),
            dns::config(n, &env.dir, &std::env::var("PALISADE_DNS_BENCH_EXTRA").unwrap_or_default())
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let records: Vec<String> = (0..NAMES)
        .map(|i| {
            format!(
                "--host-record=n{i}.bench.test,{}",
                dns::answer_ip(n, (i % 250) as u8 + 1)
            )
        })
        .chain(["--cache-size=0".to_string()])
        .collect();
    let server = Dnsmasq::start(&env.dir, None, &dns::upstream_ip(n), &records);
    let _daemon = DaemonProc::start(&env);
    let addr = format!("{}:53", server.addr);
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let count = PER_BATCH.to_string();
    let enrolled = |args: &[&str]| {
        Command::new(palisade_bin())
            .args(["exec", "--socket"])
            .arg(&env.socket)
            .args(["--identity", "bench", "--"])
            .arg(&me)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let plain = |args: &[&str]| {
        Command::new(&me)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for round in 0..ROUNDS {
        direct.extend(parse(&plain(&["latency", &addr, &count]), "direct"));
        proxied.extend(parse(&enrolled(&["latency", &addr, &count]), "proxied"));
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }
    direct.sort_unstable();
    proxied.sort_unstable();
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    let (p50, p99) = (percentile(&proxied, 0.5), percentile(&proxied, 0.99));
    let secs = FLOOD_SECONDS.to_string();
    let inflight = IN_FLIGHT.to_string();
    let qps_direct = parse(&plain(&["flood", &addr, &secs, &inflight]), "flood direct")[0] as f64
        / FLOOD_SECONDS as f64;
    let qps_proxied = parse(
        &enrolled(&["flood", &addr, &secs, &inflight]),
        "flood proxied",
    )[0] as f64
        / FLOOD_SECONDS as f64;
    let us = |ns: u64| ns as f64 / 1000.0;
    println!("| path | lookups | p50 | p99 | queries/s ({IN_FLIGHT} in flight) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| straight to dnsmasq | {} | {:.1} µs | {:.1} µs | {qps_direct:.0} |",
        direct.len(),
        us(d50),
        us(d99)
    );
    println!(
        "| through the proxy | {} | {:.1} µs | {:.1} µs | {qps_proxied:.0} |",
        proxied.len(),
        us(p50),
        us(p99)
    );
    println!(
        "\nadded: p50 {:.1} µs, p99 {:.1} µs; ratio p50 {:.2}×, p99 {:.2}×",
        us(p50.saturating_sub(d50)),
        us(p99.saturating_sub(d99)),
        p50 as f64 / d50 as f64,
        p99 as f64 / d99 as f64
    );
    let events = std::fs::read_to_string(&env.audit)
        .unwrap_or_default()
        .lines()
        .count();
    println!("audit events written: {events}");
}
