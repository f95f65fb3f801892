//! `cargo xtask bench suggest`: `palisade policy suggest` and `palisade
//! policy unused` against `palisade audit verify` on the same trail of a
//! million sealed records (four rotated files), in interleaved rounds:
//! wall-clock time and peak resident memory of each command (from
//! `wait4`'s rusage).
//!
//! Usage: palisade-suggest-bench [RECORDS] [ROUNDS]

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, UNIX_EPOCH},
};

use palisade::audit::{
    AuditEvent, CallDetail, DnsDetail, EventKind,
    chain::{ChainHead, seal},
};

const IDENTITIES: u64 = 20;
const FILES: u64 = 4;

/// A trail as a busy host writes it: 20 identities, each with a few
/// hundred destinations and names, tool calls with numeric parameters,
/// denials among them.
fn event(i: u64) -> AuditEvent {
    let ident = i % IDENTITIES;
    let t = UNIX_EPOCH + Duration::from_secs(1_790_000_000 + i / 50);
    let (kind, verdict, reason) = match i % 10 {
        0..=4 => (EventKind::Network, "audit", "default-deny"),
        5 => (EventKind::Network, "deny", "deny-rule"),
        6 | 7 => (EventKind::Dns, "audit", "no-host-rule"),
        _ => (EventKind::Decision, "audit", "no-matching-rule"),
    };
    let mut ev = AuditEvent::at(t, kind, verdict, reason);
    ev.identity = Some(format!("agent-{ident}"));
    ev.policy_version = Some("bench@sha256:0123456789abcdef".into());
    let dest = (i / IDENTITIES) % 400;
    let ip = format!("10.{}.{}.{}", ident, dest / 200, dest % 200);
    match kind {
        EventKind::Network => {
            ev.pid = Some(1000 + ident as u32);
            ev.tid = ev.pid;
            ev.uid = Some(1000);
            ev.comm = Some("python3".into());
            ev.cgroup_id = Some(5000 + ident);
            ev.dst_ip = ip.parse().ok();
            ev.dst_port = Some(if dest.is_multiple_of(3) {
                443
            } else {
                8000 + (dest % 7) as u16
            });
            ev.protocol = Some(if dest.is_multiple_of(5) { "udp" } else { "tcp" }.into());
            ev.hook = Some("connect4".into());
            ev.mode = Some("audit".into());
            if verdict == "deny" {
                ev.rule = Some(format!("deny-{ident}"));
            }
        }
        EventKind::Dns => {
            ev.protocol = Some("udp".into());
            ev.mode = Some("audit".into());
            ev.detail = Some("answered in 311 µs".into());
            ev.dns = Some(DnsDetail {
                query: format!("svc{}.agent{ident}.example", dest % 150),
                qtype: "A".into(),
                rcode: Some("NOERROR".into()),
                answer: ip.parse().ok().into_iter().collect(),
                ..DnsDetail::default()
            });
        }
        _ => {
            ev.pid = Some(1000 + ident as u32);
            ev.uid = Some(1000);
            ev.rule = Some(format!("tools-{ident}"));
            ev.mode = Some("audit".into());
            let mut numbers = std::collections::BTreeMap::new();
            numbers.insert("amount".into(), serde_json::Number::from(i % 5000));
            ev.call = Some(CallDetail {
                tool: "stripe".into(),
                action: ["create_payment", "refund", "list_charges"][(i % 3) as usize].into(),
                decision_id: Some(format!("{i:032x}")),
                params_digest: Some(format!("{:064x}", i * 7919)),
                params: vec!["amount".into(), "currency".into(), "customer".into()],
                numbers,
                jti: Some(format!("{i:024x}")),
                ..CallDetail::default()
            });
        }
    }
    ev
}

fn write_trail(dir: &Path, records: u64) -> Vec<PathBuf> {
    let per_file = records.div_ceil(FILES);
    let mut head = ChainHead::genesis();
    let mut files = Vec::new();
    for f in 0..FILES {
        // Rotated files are numbered oldest first; the live one has none.
        let p = if f + 1 == FILES {
            dir.join("audit.jsonl")
        } else {
            dir.join(format!("audit.jsonl.{}", f + 1))
        };
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        );
        for i in f * per_file..((f + 1) * per_file).min(records) {
            let (line, next) = seal(&mut event(i), &head).unwrap_or_else(|e| panic!("{e}"));
            head = next;
            writeln!(w, "{line}").unwrap_or_else(|e| panic!("{e}"));
        }
        w.flush().unwrap_or_else(|e| panic!("{e}"));
        files.push(p);
    }
    files
}

fn policy(dir: &Path) -> PathBuf {
    let mut y = String::from("version: 1\nidentities:\n");
    for i in 0..IDENTITIES {
        let _ = write!(
            y,
            "  - id: agent-{i}\n    exec_only: true\n    egress:\n      allow:\n        - {{id: allow-{i}, cidr: 10.{i}.0.0/24, ports: [443], protocol: tcp}}\n      deny:\n        - {{id: deny-{i}, cidr: 10.{i}.1.0/24}}\n    tools:\n      allow:\n        - {{id: tools-{i}, tool: stripe, actions: [create_payment, refund, list_charges, payout]}}\n"
        );
    }
    let p = dir.join("policy.yaml");
    std::fs::write(&p, y).unwrap_or_else(|e| panic!("{e}"));
    p
}

/// Run to completion; wall time and peak RSS (KiB) of the child.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its rusage"
)]
fn measure(cmd: &mut Command) -> (Duration, i64) {
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut status = 0;
    // SAFETY: plain syscall on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed ({status})"
    );
    (wall, usage.ru_maxrss)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let records: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let bin = palisade_tests::palisade_bin();
    let dir = std::env::temp_dir().join(format!("palisade-suggest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let files = write_trail(&dir, records);
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    eprintln!(
        "trail: {records} records in {} files, {:.1} MiB, written in {:.1?}",
        files.len(),
        bytes as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
    let policy = policy(&dir);
    let trail: Vec<&str> = files.iter().filter_map(|f| f.to_str()).collect();
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        ("audit verify", vec!["audit".into(), "verify".into()]),
        (
            "policy suggest (one identity)",
            vec![
                "policy".into(),
                "suggest".into(),
                "--identity".into(),
                "agent-3".into(),
            ],
        ),
        (
            "policy suggest --tests",
            vec![
                "policy".into(),
                "suggest".into(),
                "--identity".into(),
                "agent-3".into(),
                "--tests".into(),
            ],
        ),
        (
            "policy unused --json (every identity)",
            vec![
                "policy".into(),
                "unused".into(),
                "--json".into(),
                "--policy".into(),
                policy.display().to_string(),
            ],
        ),
    ];
    for (name, args) in &mut cases {
        if *name != "audit verify" {
            args.push("--trail".into());
        }
        args.extend(trail.iter().map(|s| s.to_string()));
    }
    // Warm the page cache so every command reads the same way.
    for (_, args) in &cases {
        measure(Command::new(&bin).args(args));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut rss: Vec<i64> = vec![0; cases.len()];
    for _ in 0..rounds {
        for (i, (_, args)) in cases.iter().enumerate() {
            let (t, m) = measure(Command::new(&bin).args(args));
            times[i].push(t);
            rss[i] = rss[i].max(m);
        }
    }
    let base = median(times[0].clone()).as_secs_f64();
    println!("| command | runs | median | min | max | vs verify | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in cases.iter().enumerate() {
        let m = median(times[i].clone());
        let min = times[i].iter().min().copied().unwrap_or_default();
        let max = times[i].iter().max().copied().unwrap_or_default();
        println!(
            "| {name} | {rounds} | {:.2} s | {:.2} s | {:.2} s | {:.2}× | {:.1} MiB |",
            m.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64(),
            m.as_secs_f64() / base,
            rss[i] as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
