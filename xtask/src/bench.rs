//! `cargo xtask bench <name>`: benchmarks whose results go into
//! docs/benchmarks.md, with the command, the machine and the date.

use anyhow::bail;

use crate::toolchain::{client_env_link, is_root, sh, workspace_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(name) = args.first() else {
        bail!(
            "usage: cargo xtask bench connect|policy|dns|decide|suggest|spawn|gateway|scrub|state"
        );
    };
    if !is_root() {
        bail!("benchmarks load eBPF programs and need root");
    }
    crate::test::build()?;
    let bin = match name.as_str() {
        "connect" => "palisade-bench",
        "policy" => "bench-policy",
        "dns" => "palisade-dns-bench",
        "decide" => "palisade-decide-bench",
        "suggest" => "palisade-suggest-bench",
        "spawn" => "palisade-spawn-bench",
        "gateway" => "palisade-gateway-bench",
        "scrub" => "palisade-scrub-bench",
        "state" => "bench-state",
        other => {
            bail!(
                "unknown benchmark `{other}` (known: connect, policy, dns, decide, suggest, spawn, gateway, scrub, state)"
            )
        }
    };
    let target = workspace_root().join("target/release");
    machine_summary();
    sh(std::process::Command::new(target.join(bin))
        .args(&args[1..])
        .env("PALISADE_BIN", target.join("palisade")))?;
    if name == "decide" {
        // Beside it: the Python client's @guard against a bare grpcio Ping.
        sh(
            std::process::Command::new(target.join("palisade-guard-bench"))
                .env("PALISADE_BIN", target.join("palisade"))
                .env(
                    "PALISADE_PYTHON",
                    client_env_link("python-dev").join("bin/python3"),
                ),
        )?;
    }
    Ok(())
}

/// Print what the figures were measured on.
fn machine_summary() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("machine: {cores} cores, {cpu}, kernel {}", kernel.trim());
}
