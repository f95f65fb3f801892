//! `cargo xtask fuzz TARGET [--seconds N]`: run one cargo-fuzz target of
//! `fuzz/` (its own workspace, built with the eBPF nightly and sanitizers)
//! over the committed seeds in `fuzz/seeds/TARGET`, growing a local corpus in
//! `fuzz/corpus/TARGET`. `all` runs every target in turn. A crash leaves its
//! input in `fuzz/artifacts/TARGET` and fails the command.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::toolchain::{EBPF_TOOLCHAIN, cache_dir, describe, sh, workspace_root};

/// cargo-fuzz release installed by `cargo xtask setup`.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target in `fuzz/Cargo.toml`, with what it reads.
pub const TARGETS: &[(&str, &str)] = &[
    (
        "policy_load",
        "policy files, YAML and JSON (check, start, reload, push)",
    ),
    (
        "policy_suite",
        "policy test suites (`palisade policy test`)",
    ),
    ("daemon_config", "the daemon's config file"),
    ("dns_query", "DNS queries from enrolled processes"),
    ("dns_answer", "DNS answers from the upstream resolver"),
    (
        "kernel_event",
        "decision and cgroup records from the ring buffers",
    ),
    (
        "kernel_aggregate",
        "aggregated denial counters from the kernel maps",
    ),
    (
        "decide_input",
        "Decide requests: protobuf, params/context, CEL",
    ),
    (
        "audit_verify",
        "audit trail files as `palisade audit verify` reads them",
    ),
    (
        "trail_suggest",
        "audit trail files as `policy suggest` and `policy unused` read them",
    ),
];

/// What `cargo xtask test` runs of each target: the committed seeds, then
/// this many mutated inputs from a fixed libFuzzer seed, starting from the
/// seeds alone (not the local corpus) — a short mutation run that is the
/// same on every machine, so the suite stays deterministic.
pub const TEST_RUNS: u64 = 3000;
pub const TEST_SEED: u64 = 1;

const USAGE: &str = "usage: cargo xtask fuzz TARGET|all [--seconds N | --runs N [--seed S]]";

/// How long one target runs.
#[derive(Clone, Copy)]
enum Budget {
    /// Mutate for this many seconds, growing the local corpus (0: replay
    /// the seeds and the corpus only).
    Seconds(u64),
    /// Exactly this many inputs from a fixed seed, from the seeds only.
    Runs { runs: u64, seed: u64 },
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut target = None;
    let mut budget = Budget::Seconds(60);
    let mut seed = 1;
    let mut it = args.iter();
    let number = |what: &str, it: &mut std::slice::Iter<'_, String>| -> anyhow::Result<u64> {
        let n = it.next().context(USAGE)?;
        n.parse()
            .with_context(|| format!("{what} {n}: not a whole number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => budget = Budget::Seconds(number("--seconds", &mut it)?),
            "--runs" => {
                budget = Budget::Runs {
                    runs: number("--runs", &mut it)?,
                    seed,
                };
            }
            "--seed" => seed = number("--seed", &mut it)?,
            t if target.is_none() && !t.starts_with('-') => target = Some(t.to_string()),
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let Some(target) = target else {
        let mut msg = format!("{USAGE}\n\ntargets:\n");
        for (t, what) in TARGETS {
            msg.push_str(&format!("  {t:<18} {what}\n"));
        }
        bail!(msg);
    };
    let names: Vec<&str> = match target.as_str() {
        "all" => TARGETS.iter().map(|(t, _)| *t).collect(),
        t if TARGETS.iter().any(|(n, _)| *n == t) => vec![t],
        t => bail!("unknown fuzz target {t:?}: one of {:?} or all", names()),
    };
    if let Budget::Runs { runs, .. } = budget {
        budget = Budget::Runs { runs, seed };
    }
    build()?;
    let mut failed = Vec::new();
    for name in names {
        let stats = fuzz_one(name, budget)?;
        println!(
            "fuzz {name}: {} in {:.0} s ({} exec/s), {}",
            stats.runs.map_or("? runs".into(), |r| format!("{r} runs")),
            stats.wall,
            stats.exec_per_s.map_or("?".into(), |e| e.to_string()),
            if stats.ok { "no finding" } else { "FINDING" }
        );
        if !stats.ok {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("findings in {failed:?}: the inputs are in fuzz/artifacts/<target>/");
    }
    Ok(())
}

fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|(t, _)| *t).collect()
}

/// `~/.cache/palisade/cargo-fuzz-<version>/bin/cargo-fuzz`.
pub fn cargo_fuzz_bin() -> anyhow::Result<PathBuf> {
    Ok(cache_dir()?
        .join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"))
        .join("bin/cargo-fuzz"))
}

/// cargo-fuzz with the nightly it needs (sanitizer flags), from `fuzz/`.
fn cargo_fuzz() -> anyhow::Result<Command> {
    let bin = cargo_fuzz_bin()?;
    if !bin.exists() {
        bail!(
            "cargo-fuzz is not installed ({}): run `cargo xtask setup` first",
            bin.display()
        );
    }
    let mut c = Command::new(bin);
    c.env("RUSTUP_TOOLCHAIN", EBPF_TOOLCHAIN)
        .current_dir(workspace_root().join("fuzz"));
    Ok(c)
}

/// Build every target once (release, debug assertions, AddressSanitizer).
pub fn build() -> anyhow::Result<()> {
    crate::toolchain::require_setup()?;
    sh(cargo_fuzz()?.args(["build", "-O", "--debug-assertions"]))
}

struct Stats {
    ok: bool,
    runs: Option<u64>,
    exec_per_s: Option<u64>,
    wall: f64,
}

fn fuzz_one(name: &str, budget: Budget) -> anyhow::Result<Stats> {
    let root = workspace_root().join("fuzz");
    let seeds = root.join("seeds").join(name);
    let scratch = Scratch::new(name)?;
    // A fixed-seed run starts from the committed seeds only, in a corpus of
    // its own, so it is the same on every machine.
    let corpus = match budget {
        Budget::Seconds(_) => root.join("corpus").join(name),
        Budget::Runs { .. } => scratch.0.join("corpus"),
    };
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let limits: Vec<String> = match budget {
        // 0 seconds: replay the seeds and the corpus only, no mutation.
        Budget::Seconds(0) => vec!["-runs=0".into()],
        Budget::Seconds(s) => vec![format!("-max_total_time={s}")],
        Budget::Runs { runs, seed } => vec![format!("-runs={runs}"), format!("-seed={seed}")],
    };
    let mut cmd = cargo_fuzz()?;
    cmd.args(["run", "-O", "--debug-assertions", name])
        .arg(&corpus)
        .args(seeds.is_dir().then_some(&seeds))
        .arg("--")
        .args(&limits)
        // Room for the example policies and the sanitizer's shadow memory,
        // while a runaway allocation is still a finding.
        .arg("-rss_limit_mb=4096")
        .arg("-timeout=20")
        .arg("-print_final_stats=1")
        .env("PALISADE_FUZZ_SCRATCH", &scratch.0)
        .stderr(Stdio::piped());
    eprintln!("+ {}", describe(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", describe(&cmd)))?;
    let mut stats = Stats {
        ok: false,
        runs: None,
        exec_per_s: None,
        wall: 0.0,
    };
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line?;
            eprintln!("{line}");
            if let Some(v) = stat(&line, "stat::number_of_executed_units:") {
                stats.runs = Some(v);
            }
            if let Some(v) = stat(&line, "stat::average_exec_per_sec:") {
                stats.exec_per_s = Some(v);
            }
        }
    }
    stats.ok = child.wait()?.success();
    stats.wall = start.elapsed().as_secs_f64();
    Ok(stats)
}

fn stat(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?.trim().parse().ok()
}

/// The directory the targets write their input files into (the loaders
/// read from a path), removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
