//! `cargo xtask build` and `cargo xtask test`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::bail;

use crate::toolchain::{cargo, client_env_link, is_root, require_setup, sh, workspace_root};

pub fn build() -> anyhow::Result<()> {
    require_setup()?;
    sh(cargo().args(["build", "--release", "-p", "agent"]))?;
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "palisade-tests",
        "--bins",
        "--tests",
    ]))
}

/// Build, then run every test: unit tests, and the integration tests that
/// load the eBPF programs into this kernel (root required), then every fuzz
/// target for a few seconds. Extra arguments go to `cargo test` (e.g. a
/// test name filter) and skip the fuzzing.
pub fn run(extra: &[String]) -> anyhow::Result<()> {
    let skip_root = std::env::var("PALISADE_SKIP_ROOT_TESTS").as_deref() == Ok("1");
    if !is_root() && !skip_root {
        bail!(
            "the integration tests load eBPF programs and need root: run `sudo -E cargo xtask test` \
             (or set PALISADE_SKIP_ROOT_TESTS=1 to run only what needs no root)"
        );
    }
    build()?;
    let bin = workspace_root().join("target/release/palisade");
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--no-fail-fast"])
        .args(extra)
        .env("PALISADE_BIN", &bin)
        .env(
            "PALISADE_PYTHON",
            client_env_link("python-dev").join("bin/python3"),
        )
        .env("RUST_BACKTRACE", "1");
    let tally = run_counting(&mut cmd)?;
    // Short runs: the committed seeds, and whatever a few seconds of
    // mutation finds (longer runs: `cargo xtask fuzz all --seconds N`).
    let fuzzed = extra.is_empty().then(|| {
        crate::fuzz::run(&[
            "all".to_string(),
            "--seconds".to_string(),
            crate::fuzz::TEST_SECONDS.to_string(),
        ])
    });
    // One closing line for the whole suite (cargo prints one per binary).
    println!("summary: {} passed, {} failed", tally.passed, tally.failed);
    if let Some(Err(e)) = fuzzed {
        bail!("fuzzing: {e:#}");
    }
    if !tally.success || tally.failed > 0 {
        bail!("{} test(s) failed", tally.failed.max(1));
    }
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    success: bool,
}

/// Run `cargo test`, echoing its output, and add up its `test result:` lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<Tally> {
    eprintln!("+ {}", crate::toolchain::describe(cmd));
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                tally.passed += count(rest, " passed");
                tally.failed += count(rest, " failed");
            }
        }
    }
    tally.success = child.wait()?.success();
    Ok(tally)
}

/// `ok. 6 passed; 0 failed; …` → the number before `what`.
fn count(result: &str, what: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
