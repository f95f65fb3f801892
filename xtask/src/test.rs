//! `cargo xtask build` and `cargo xtask test`.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
};

use anyhow::bail;

use crate::{
    leftovers,
    toolchain::{cargo, client_env_link, is_root, node_env, require_setup, sh, workspace_root},
};

pub fn build() -> anyhow::Result<()> {
    require_setup()?;
    sh(cargo().args(["build", "--release", "-p", "agent"]))?;
    // The test binaries exactly as `cargo test --release` builds them (same
    // packages, so the same features): the run then compiles nothing again.
    sh(cargo().args(["test", "--release", "--no-run"]))
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
    // Orphans of the tests become our children: the leftover check finds them.
    leftovers::become_subreaper()?;
    let tag = leftovers::run_tag();
    let before = leftovers::scan();
    // Tests run agents as an unprivileged user (65534), who must be able to
    // reach the binaries: a checkout in root's home (mode 0700) is not.
    let release = workspace_root().join("target/release");
    let staged = if reachable_by_others(&release) {
        None
    } else {
        Some(stage_binaries(&release, &tag)?)
    };
    let bins = staged.as_deref().unwrap_or(&release);
    let bin = bins.join("palisade");
    let mut cmd = cargo();
    node_env(&mut cmd);
    cmd.args(["test", "--release", "--no-fail-fast"])
        .args(extra)
        .env("PALISADE_TEST_RUN", &tag)
        .env("PALISADE_BIN", &bin)
        .env("PALISADE_PROBE", bins.join("palisade-probe"))
        .env(
            "PALISADE_PYTHON",
            client_env_link("python-dev").join("bin/python3"),
        )
        .env("RUST_BACKTRACE", "1");
    let (mut child, reader) = run_counting(&mut cmd)?;
    let success = child.wait()?.success();
    // Passed or failed, the run leaves nothing behind. (A stray process may
    // still hold cargo's output open: the check kills it, then the reader
    // sees the end.)
    if let Some(dir) = &staged {
        let _ = std::fs::remove_dir_all(dir);
    }
    let clean = leftovers::check(&tag, &before);
    let mut tally = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading the output of cargo test failed"))?;
    tally.success = success;
    // Every target: its committed seeds, then a short mutation run from a
    // fixed seed (longer runs: `cargo xtask fuzz all --seconds N`).
    let fuzzed = extra.is_empty().then(|| {
        crate::fuzz::run(&[
            "all".to_string(),
            "--seed".to_string(),
            crate::fuzz::TEST_SEED.to_string(),
            "--runs".to_string(),
            crate::fuzz::TEST_RUNS.to_string(),
        ])
    });
    // The failures again, last: the fuzzing output above would otherwise
    // bury them, and a CI log is often read from its end.
    if !tally.failures.is_empty() {
        println!("failures (repeated from above):");
        for line in &tally.failures {
            println!("  {line}");
        }
    }
    // One closing line for the whole suite (cargo prints one per binary).
    println!("summary: {} passed, {} failed", tally.passed, tally.failed);
    clean?;
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
    /// The `failures:` sections cargo prints (each test's output and
    /// panic), clipped so one noisy test cannot flood the log.
    failures: Vec<String>,
}

/// At most this many lines of one binary's `failures:` section are kept.
const FAILURE_LINES: usize = 120;

/// Start `cargo test`, echoing its output from a thread that adds up its
/// `test result:` lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(Child, JoinHandle<Tally>)> {
    eprintln!("+ {}", crate::toolchain::describe(cmd));
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut tally = Tally::default();
        let Some(out) = out else {
            return tally;
        };
        let mut in_failures = false;
        let mut kept = 0;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                tally.passed += count(rest, " passed");
                tally.failed += count(rest, " failed");
                in_failures = false;
            } else if line == "failures:" && !in_failures {
                in_failures = true;
                kept = 0;
            } else if in_failures && kept < FAILURE_LINES {
                tally.failures.push(line);
                kept += 1;
            }
        }
        tally
    });
    Ok((child, reader))
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

/// Can a user other than the owner reach `dir` (search permission on it
/// and every directory above)?
fn reachable_by_others(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// The binaries the tests run (`palisade`, `palisade-*`) where every user
/// reaches them: linked (or copied) into a directory of their own under
/// the system's temporary directory, removed after the run.
fn stage_binaries(release: &std::path::Path, tag: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("palisade-{tag}bin"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(release)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let file = entry.metadata()?;
        if !(name == "palisade" || name.starts_with("palisade-"))
            || name.contains('.')
            || !file.is_file()
            || file.permissions().mode() & 0o111 == 0
        {
            continue;
        }
        let to = dir.join(&*name);
        if std::fs::hard_link(entry.path(), &to).is_err() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    eprintln!(
        "xtask: {} is out of reach of other users: the tests run the binaries from {}",
        release.display(),
        dir.display()
    );
    Ok(dir)
}
