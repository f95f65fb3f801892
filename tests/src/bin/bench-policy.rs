//! `cargo xtask bench policy`: how long a large policy takes to parse,
//! validate, compile and write into the kernel, how long a reload takes to
//! reach the kernel's verdicts after a file changes, and peak memory.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use palisade::{
    bpf::{Kernel, LoadOptions},
    policy::{self, tables},
};
use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, palisade_bin};

/// Counts live heap bytes and their high-water mark, so the benchmark can
/// say how much each step holds and needs (the daemon runs the same code).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HIGH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            HIGH.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = LIVE.fetch_add(new_size, Relaxed) + new_size;
            HIGH.fetch_max(now, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes held now, and the most held since the last `mark`.
fn heap() -> (usize, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    (LIVE.load(Relaxed), HIGH.load(Relaxed))
}

fn mark() -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let now = LIVE.load(Relaxed);
    HIGH.store(now, Relaxed);
    now
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

const IDENTITIES: u32 = 100;
const RULES_PER_IDENTITY: u32 = 1000;

/// `identities` × `rules` rules, each identity also allowing `port` on
/// loopback (the reload probe's target). YAML, one rule per line.
fn policy_sized(port: u16, identities: u32, rules: u32) -> String {
    let mut s = String::with_capacity(8 << 20);
    s.push_str("version: 1\nidentities:\n");
    for id in 0..identities {
        s.push_str(&format!(
            "  - id: agent-{id:03}\n    selectors:\n      - cgroup: /bench/agent-{id:03}\n    egress:\n      allow:\n        - {{cidr: 127.0.0.1, ports: [{port}], protocol: tcp}}\n"
        ));
        for r in 1..rules {
            let n = id * rules + r;
            let len = if r % 10 == 0 { 24 } else { 32 };
            s.push_str(&format!(
                "        - {{cidr: 10.{}.{}.{}/{len}, ports: [{}, {}], protocol: tcp}}\n",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                if len == 24 { 0 } else { n & 0xff },
                443 + r % 7,
                8000 + r % 5
            ));
        }
    }
    s
}

fn policy(port: u16) -> String {
    policy_sized(port, IDENTITIES, RULES_PER_IDENTITY)
}

/// The same policy as JSON (YAML's subset), as generators write it.
fn to_json(yaml: &str) -> String {
    let v: serde_json::Value = serde_saphyr::from_str_with_options(
        yaml,
        serde_saphyr::options! { budget: serde_saphyr::budget! { max_nodes: yaml.len(), max_events: 2 * yaml.len() } },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_string(&v).unwrap_or_else(|e| panic!("{e}"))
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The daemon's peak and current resident size.
fn daemon_memory(pid: u32) -> String {
    let m = |f| {
        status_kib(pid, f).map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    };
    format!("VmHWM {}, VmRSS {}", m("VmHWM:"), m("VmRSS:"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    assert!(palisade_tests::root_or_skip("bench policy"), "needs root");
    let a = TcpServer::start("127.0.0.1");
    let b = TcpServer::start("127.0.0.1");
    let text_a = policy(a.addr.port());
    let text_b = policy(b.addr.port());
    let env = TestEnv::new("bench-policy", &text_a);
    println!(
        "policy: {IDENTITIES} identities × {RULES_PER_IDENTITY} rules ({} rules), {:.1} MiB of YAML",
        IDENTITIES * RULES_PER_IDENTITY,
        text_a.len() as f64 / (1 << 20) as f64
    );

    // In-process, step by step, into a kernel of our own.
    let t = Instant::now();
    let loaded = policy::load(&env.policy).unwrap_or_else(|e| panic!("{e}"));
    let parse_yaml = t.elapsed();
    let yaml_rules = loaded.policy.rules.len();
    drop(loaded);
    let json_a = to_json(&text_a);
    let json_b = to_json(&text_b);
    let json_file = env.dir.join("policy.json");
    std::fs::write(&json_file, &json_a).unwrap_or_else(|e| panic!("{e}"));
    let before = mark();
    let t = Instant::now();
    let from_json = policy::load_for_daemon(&json_file).unwrap_or_else(|e| panic!("{e}"));
    let parse = t.elapsed();
    let (held, high) = heap();
    let mem_policy = held - before;
    let mem_parse = high - before;
    assert_eq!(from_json.policy.rules.len(), yaml_rules);
    let loaded = from_json;
    let index = |name: &str| {
        name.strip_prefix("agent-")
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| n + 1)
    };
    let before = mark();
    let t = Instant::now();
    let tables1 = tables::compile(&loaded.policy, 1, &index).unwrap_or_else(|e| panic!("{e}"));
    let compile = t.elapsed();
    let (held, high) = heap();
    let (mem_tables, mem_compile) = (held - before, high - before);
    let before = mark();
    let kernel = Kernel::load(&LoadOptions {
        pin_dir: env.bpffs.clone(),
        attach_cgroup: env.attach.clone(),
        event_buffer_bytes: 1 << 20,
        learned_capacity: 1 << 16,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (held, high) = heap();
    let (mem_kernel, mem_kernel_load) = (held.saturating_sub(before), high - before);
    let maps = kernel.maps_handle();
    let t = Instant::now();
    maps.apply(&tables1, 1).unwrap_or_else(|e| panic!("{e}"));
    let apply_first = t.elapsed();
    let tables0 = tables::compile(&loaded.policy, 0, &index).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    maps.apply(&tables0, 2).unwrap_or_else(|e| panic!("{e}"));
    let apply_second = t.elapsed();
    let tables1 = tables::compile(&loaded.policy, 1, &index).unwrap_or_else(|e| panic!("{e}"));
    let before = mark();
    let t = Instant::now();
    maps.apply(&tables1, 3).unwrap_or_else(|e| panic!("{e}"));
    let apply_replace = t.elapsed();
    let (_, high) = heap();
    let mem_apply = high - before;
    println!(
        "trie entries per slot: {} allow, {} port sets",
        tables1.allow.len(),
        tables1.portsets.len()
    );
    println!("| step | time |\n|---|---:|");
    println!(
        "| parse + validate, YAML (policy::load) | {} |",
        ms(parse_yaml)
    );
    println!(
        "| parse + validate, same policy as JSON (daemon path) | {} |",
        ms(parse)
    );
    println!(
        "| compile for the kernel (tables::compile) | {} |",
        ms(compile)
    );
    println!(
        "| write into an empty slot and flip | {} |",
        ms(apply_first)
    );
    println!("| write the other slot and flip | {} |", ms(apply_second));
    println!(
        "| clear a used slot, write it and flip (a steady-state reload) | {} |",
        ms(apply_replace)
    );
    println!(
        "| **JSON: parse + validate + compile + steady-state apply** | **{}** |",
        ms(parse + compile + apply_replace)
    );
    println!(
        "| YAML: parse + validate + compile + steady-state apply | {} |",
        ms(parse_yaml + compile + apply_replace)
    );
    println!(
        "bench process peak RSS: {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    println!("\n| heap, in-process (the daemon's code) | bytes |\n|---|---:|");
    println!(
        "| parse + validate as JSON: most held at once | {} |",
        mib(mem_parse)
    );
    println!("| the validated policy, as kept | {} |", mib(mem_policy));
    println!(
        "| compile for the kernel: most held at once | {} |",
        mib(mem_compile)
    );
    println!("| the compiled tables | {} |", mib(mem_tables));
    println!(
        "| load the eBPF programs (any policy size): most held at once | {} |",
        mib(mem_kernel_load)
    );
    println!("| the loaded programs, as kept | {} |", mib(mem_kernel));
    println!(
        "| steady-state apply (clear, write, flip): most held at once | {} |",
        mib(mem_apply)
    );
    drop(maps);
    drop(kernel);
    let _ = palisade::bpf::uninstall(&env.bpffs);

    // The daemon: file change -> kernel verdicts, for the large policy (as
    // JSON) and for a typical one (YAML, 10 identities × 20 rules).
    env.write_config("");
    let config = std::fs::read_to_string(&env.config).unwrap_or_default();
    std::fs::write(
        &env.config,
        config.replace(
            &env.policy.display().to_string(),
            &json_file.display().to_string(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let daemon = DaemonProc::start(&env);
    println!(
        "daemon start with the large policy (until its API answers): {}",
        ms(t.elapsed())
    );
    println!(
        "daemon memory after start with the large policy: {}",
        daemon_memory(daemon.pid())
    );
    let large = reload_latency(&env, &json_file, &a, &b, &json_a, &json_b, 6);
    println!(
        "reload of the large policy, file written -> new verdict in the kernel (6 reloads): median {}, max {}",
        ms(large[large.len() / 2]),
        ms(large[large.len() - 1])
    );
    println!(
        "daemon memory after 7 loads of the large policy: {}",
        daemon_memory(daemon.pid())
    );
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "daemon memory 3 s later (steady state): {}",
        daemon_memory(daemon.pid())
    );
    drop(daemon);
    let small_a = policy_sized(a.addr.port(), 10, 20);
    let small_b = policy_sized(b.addr.port(), 10, 20);
    std::fs::write(&json_file, &small_a).unwrap_or_else(|e| panic!("{e}"));
    let daemon = DaemonProc::start(&env);
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "daemon memory with the typical policy (10 identities): {}",
        daemon_memory(daemon.pid())
    );
    let small = reload_latency(&env, &json_file, &a, &b, &small_a, &small_b, 20);
    println!(
        "reload of a typical policy (10 × 20 rules, YAML), file written -> new verdict (20 reloads): median {}, max {}",
        ms(small[small.len() / 2]),
        ms(small[small.len() - 1])
    );
    println!(
        "  all 20, sorted: {}",
        small
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "daemon memory with the typical policy after 20 reloads: {}",
        daemon_memory(daemon.pid())
    );
}

/// Alternate the policy file between `text_a` (allows `a`) and `text_b`
/// (allows `b`); each time, time from the write until an enrolled process
/// connects to the newly allowed port.
fn reload_latency(
    env: &TestEnv,
    file: &std::path::Path,
    a: &TcpServer,
    b: &TcpServer,
    text_a: &str,
    text_b: &str,
    rounds: usize,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    for round in 0..rounds {
        let (target, next) = if round % 2 == 0 {
            (b, text_b)
        } else {
            (a, text_a)
        };
        let mut probe = Command::new(palisade_bin())
            .args(["exec", "--socket"])
            .arg(&env.socket)
            .args(["--identity", "agent-007", "--"])
            .arg(Probe::bin())
            .args(["tcp-wait-ok", "127.0.0.1", &target.port()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        // Change the policy only once the probe is polling: the time a
        // process takes to start is not the reload's.
        let mut out = std::io::BufReader::new(
            std::mem::take(&mut probe.stdout).unwrap_or_else(|| panic!("probe stdout")),
        );
        let mut waiting = String::new();
        {
            use std::io::BufRead as _;
            let _ = out.read_line(&mut waiting);
        }
        assert!(waiting.contains("waiting"), "the probe said {waiting:?}");
        let written = SystemTime::now();
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, next).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, file).unwrap_or_else(|e| panic!("{e}"));
        let _ = probe.wait();
        let mut line = String::new();
        {
            use std::io::Read as _;
            let _ = out.read_to_string(&mut line);
        }
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(v["ok"], true, "the new policy never took effect: {v}");
        let at = v["at_ns"].as_u64().unwrap_or(0) as u128;
        let written_ns = written
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        samples.push(Duration::from_nanos((at.saturating_sub(written_ns)) as u64));
    }
    println!(
        "  in order (ms): {}",
        samples
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    samples.sort();
    samples
}
