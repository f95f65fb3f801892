//! `cargo xtask bench spawn`: what the lineage tracking costs a process
//! that starts programs. An enrolled worker forks, execs `/bin/true` and
//! waits for it, again and again, timing each; the rounds alternate
//! between three set-ups so machine noise hits all alike:
//!
//! * no guard tracepoints (the daemon's own are detached for the run),
//! * lineage tracking (fork, exec, exit and cgroup-move raw tracepoints),
//! * lineage tracking and the socket-syscall stand-in this host runs
//!   because it refuses BPF LSM (a `syscalls/sys_enter_*` tracepoint puts
//!   every system call of the host on the traced path).
//!
//! The programs are the daemon's, loaded by this process against the
//! daemon's pinned maps, so the worker is enrolled throughout.

use std::{ffi::CString, process::Command, time::Instant};

use palisade::bpf::guards::GuardTracepoints;
use palisade_tests::{DaemonProc, TestEnv, palisade_bin};

const ROUNDS: usize = 10;
const PER_BATCH: usize = 400;

/// Worker: fork + exec `/bin/true` + wait, `count` times; one latency (ns)
/// per line.
fn worker(count: usize) {
    let prog = CString::new("/bin/true").unwrap_or_default();
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let mut out = String::with_capacity(count * 8);
    for _ in 0..count {
        let t = Instant::now();
        // SAFETY: the child only execs (or exits); the parent waits for it.
        unsafe {
            match libc::fork() {
                0 => {
                    libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127);
                }
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                child => {
                    let mut status = 0;
                    libc::waitpid(child, &mut status, 0);
                    assert!(
                        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                        "/bin/true failed: {status}"
                    );
                }
            }
        }
        out.push_str(&t.elapsed().as_nanos().to_string());
        out.push('\n');
    }
    print!("{out}");
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        worker(args[2].parse().unwrap_or_else(|e| panic!("{e}")));
        return;
    }
    assert!(palisade_tests::root_or_skip("bench spawn"), "needs root");
    let env = TestEnv::new(
        "spawnbench",
        "version: 1\nidentities:\n  - id: bench\n    egress:\n      allow: [{cidr: 127.0.0.1}]\n",
    );
    let _daemon = DaemonProc::start(&env);
    let guard = env.status()["health"]["packet_guard"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    GuardTracepoints::detach_pinned(&env.bpffs);
    let mut tp = GuardTracepoints::load(&env.bpffs)
        .unwrap_or_else(|e| panic!("loading the guard programs: {e}"));
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let count = PER_BATCH.to_string();
    let scenarios = [
        ("no guard tracepoints", false, false),
        ("lineage tracking", true, false),
        ("lineage + syscall stand-in", true, true),
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); scenarios.len()];
    for round in 0..ROUNDS {
        for (i, (name, lineage, fallback)) in scenarios.iter().enumerate() {
            tp.set_lineage(*lineage)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            tp.set_fallback(*fallback)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = Command::new(palisade_bin())
                .args(["exec", "--socket"])
                .arg(&env.socket)
                .args(["--identity", "bench", "--"])
                .arg(&me)
                .args(["worker", &count])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out.status.success(),
                "{name}: worker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            samples[i].extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| l.parse::<u64>().unwrap_or_else(|e| panic!("{l:?}: {e}"))),
            );
        }
        eprintln!("round {}/{ROUNDS} done", round + 1);
    }
    let _ = tp.set_lineage(false);
    let _ = tp.set_fallback(false);
    eprintln!("packet guard on this host: {guard}");
    let stats: Vec<(u64, u64, f64)> = samples
        .iter_mut()
        .map(|s| {
            s.sort_unstable();
            let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
            (percentile(s, 0.5), percentile(s, 0.99), mean)
        })
        .collect();
    let (base_p50, base_p99, base_mean) = stats[0];
    println!("| set-up | spawns | median | p99 | mean | median ratio | mean ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _, _)) in scenarios.iter().enumerate() {
        let (p50, p99, mean) = stats[i];
        println!(
            "| {name} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.3}× | {:.3}× |",
            samples[i].len(),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            mean / 1000.0,
            p50 as f64 / base_p50 as f64,
            mean / base_mean
        );
    }
    let _ = base_p99;
}
