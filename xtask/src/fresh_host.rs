//! `cargo xtask fresh-host`: follow the README on a brand-new Debian 12
//! host, with nothing done by hand, and say how long each step took.
//!
//! The host is a minimal Debian root made by debootstrap (cached), holding
//! a clean clone of HEAD and rustup with only a default stable toolchain
//! (copied from this machine: rustup itself cannot be downloaded here).
//! It runs as root in a private mount namespace with only `/proc`, a fresh
//! `/sys` (so nothing is mounted at /sys/fs/bpf, /sys/kernel/tracing or
//! /sys/kernel/security), `/dev` and the cgroup2 hierarchy mounted, with
//! `RUSTUP_AUTO_INSTALL=0` and `CI=true`, and runs `cargo xtask setup`,
//! `cargo xtask demo`, `cargo xtask test` and `.ci/run` in that order.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    debian,
    toolchain::{cache_dir, is_root, output, sh, workspace_root},
};

/// What the root has besides debootstrap's minimal base: what rustup
/// itself needs before any `cargo` command can work — CA certificates
/// (cargo and rustup fetch over https) and a C linker with the C library
/// (rustc links through `cc`). Everything else is setup's job.
const BASE_PACKAGES: &[&str] = &["ca-certificates", "gcc", "libc6-dev"];

/// The README's commands, in order.
const STEPS: &[(&str, &str)] = &[
    ("setup", "cargo xtask setup"),
    ("demo", "cargo xtask demo"),
    ("test", "cargo xtask test"),
    (".ci/run", "./.ci/run"),
];

const REPO_IN_ROOT: &str = "root/palisade";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut keep = false;
    // `--until demo`: stop after that step (a quicker check of setup and
    // the demo; the full run also runs the suite twice).
    let mut until = STEPS[STEPS.len() - 1].0.to_string();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--keep" => keep = true,
            "--until" => {
                until = rest.next().cloned().unwrap_or_default();
                if !STEPS.iter().any(|(n, _)| *n == until) {
                    bail!("fresh-host: --until takes one of: setup, demo, test, .ci/run");
                }
            }
            other => bail!(
                "fresh-host: unknown argument {other} (--keep: leave the root in place; --until STEP)"
            ),
        }
    }
    if !is_root() {
        bail!("fresh-host makes a Debian root and mounts into it: run it as root");
    }
    let started = Instant::now();
    let tarball = debian::root_tarball("fresh-host", BASE_PACKAGES)?;
    let work = cache_dir()?.join("fresh-host");
    let root = work.join("root");
    debian::remove_tree(&root)?;
    debian::unpack(&tarball, &root)?;
    trust_host_cas(&root)?;
    clone_head(&root)?;
    install_rustup(&root)?;
    let prepared = started.elapsed();

    let log = work.join("fresh-host.log");
    // Run the second half from a copy: a rebuild of xtask during the run
    // must not pull the binary from under it.
    let exe = work.join("xtask-inside");
    fs::copy(
        std::env::current_exe().context("finding the xtask binary")?,
        &exe,
    )
    .context("copying the xtask binary")?;
    let result = sh(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .arg("fresh-host-inside")
        .arg(&root)
        .arg(&log)
        .arg(&until));
    eprintln!(
        "fresh-host: root prepared in {} (log: {})",
        human(prepared),
        log.display()
    );
    if keep {
        eprintln!("fresh-host: root kept at {}", root.display());
    } else {
        debian::remove_tree(&root)?;
    }
    result
}

/// PEM certificates in a bundle file.
fn pem_blocks(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|b| b.split("-----END CERTIFICATE-----").next())
        .map(|b| b.split_whitespace().collect::<String>())
        .collect()
}

/// The root reaches the network the way this host does: certificate
/// authorities this host trusts beyond Debian's (a TLS-inspecting proxy's,
/// say) are trusted in the root too. On an ordinary network there are none.
fn trust_host_cas(root: &Path) -> anyhow::Result<()> {
    let bundle = "etc/ssl/certs/ca-certificates.crt";
    let ours = pem_blocks(&root.join(bundle));
    let extra: Vec<String> = pem_blocks(&Path::new("/").join(bundle))
        .into_iter()
        .filter(|b| !ours.contains(b))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    let dir = root.join("usr/local/share/ca-certificates");
    fs::create_dir_all(&dir)?;
    for (i, b64) in extra.iter().enumerate() {
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        fs::write(
            dir.join(format!("host-extra-{i}.crt")),
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            ),
        )?;
    }
    eprintln!(
        "fresh-host: trusting {} certificate authorit{} of this host's network",
        extra.len(),
        if extra.len() == 1 { "y" } else { "ies" }
    );
    sh(Command::new("chroot")
        .arg(root)
        .args(["update-ca-certificates", "--fresh"]))
}

/// A clean clone of this checkout's HEAD: committed work only.
fn clone_head(root: &Path) -> anyhow::Result<()> {
    let src = workspace_root();
    let head = output(
        Command::new("git")
            .arg("-C")
            .arg(&src)
            .args(["rev-parse", "HEAD"]),
    )
    .context("git rev-parse HEAD")?;
    eprintln!("fresh-host: cloning HEAD {}", head.trim());
    sh(Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&src)
        .arg(root.join(REPO_IN_ROOT)))
}

/// rustup and the host's default toolchain only, the way rustup-init lays
/// them out: `~/.cargo/bin/{rustup,cargo,rustc,…}` and
/// `~/.rustup/toolchains/<default>`, with no overrides.
fn install_rustup(root: &Path) -> anyhow::Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let rustup = home.join(".cargo/bin/rustup");
    let default = output(Command::new(&rustup).arg("default"))
        .context("`rustup default`: no rustup on this host to copy")?;
    let default = default
        .split_whitespace()
        .next()
        .context("`rustup default` printed nothing")?
        .to_string();
    if !default.starts_with("stable") {
        bail!("this host's default toolchain is {default}, not a stable one");
    }
    let bin = root.join("root/.cargo/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(&rustup, bin.join("rustup")).context("copying rustup")?;
    for proxy in [
        "cargo",
        "rustc",
        "rustdoc",
        "rust-gdb",
        "rust-lldb",
        "cargo-clippy",
        "clippy-driver",
        "cargo-fmt",
        "rustfmt",
    ] {
        std::os::unix::fs::symlink("rustup", bin.join(proxy))?;
    }
    let toolchains = root.join("root/.rustup/toolchains");
    fs::create_dir_all(&toolchains)?;
    // A symlinked toolchain (`1.95.0` → `stable`): copy the real one.
    let src = fs::canonicalize(home.join(".rustup/toolchains").join(&default))
        .with_context(|| format!("finding toolchain {default}"))?;
    sh(Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(toolchains.join(&default)))?;
    fs::write(
        root.join("root/.rustup/settings.toml"),
        format!("version = \"12\"\ndefault_toolchain = \"{default}\"\nprofile = \"default\"\n"),
    )?;
    eprintln!("fresh-host: rustup with {default} only");
    Ok(())
}

/// Second half, run by `unshare` in a private mount namespace: mount the
/// kernel filesystems into the root, then run each step inside it.
pub fn inside(args: &[String]) -> anyhow::Result<()> {
    let [root, log, until] = args else {
        bail!("usage: fresh-host-inside ROOT LOG LAST-STEP");
    };
    let root = Path::new(root);
    mount_basics(root)?;
    let mut log = fs::File::create(log).with_context(|| format!("creating {log}"))?;
    let mut report = Vec::new();
    let mut failed = None;
    for (name, cmd) in STEPS {
        let banner = format!("\n===== fresh-host: {name}: {cmd}\n");
        eprint!("{banner}");
        let _ = log.write_all(banner.as_bytes());
        let step = run_step(root, cmd, &mut log)?;
        report.push((*name, step.elapsed, step.summary.clone(), step.ok));
        if !step.ok {
            failed = Some(*name);
            break;
        }
        if name == until {
            break;
        }
    }
    eprintln!("\n===== fresh-host report");
    for (name, elapsed, summary, ok) in &report {
        eprintln!(
            "  {name:<8} {:>9}  {}{}",
            human(*elapsed),
            if *ok { "ok" } else { "FAILED" },
            summary
                .as_deref()
                .map(|s| format!("  ({s})"))
                .unwrap_or_default()
        );
    }
    if let Some(name) = failed {
        bail!("fresh-host: `{name}` failed on a fresh host");
    }
    Ok(())
}

/// Only what the fresh host has: procfs, a sysfs of its own with
/// nothing mounted below it, the host's /dev and the cgroup2 hierarchy.
fn mount_basics(root: &Path) -> anyhow::Result<()> {
    let at = |p: &str| root.join(p);
    // The root is a mount point, as `/` is on a real host (unshare and
    // pivot_root inside it need that).
    sh(Command::new("mount").arg("--bind").arg(root).arg(root))?;
    sh(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(at("proc")))?;
    sh(Command::new("mount")
        .args(["-t", "sysfs", "sysfs"])
        .arg(at("sys")))?;
    sh(Command::new("mount")
        .arg("--rbind")
        .arg("/dev")
        .arg(at("dev")))?;
    sh(Command::new("mount")
        .args(["-t", "cgroup2", "cgroup2"])
        .arg(at("sys/fs/cgroup")))?;
    // Name resolution for apt, rustup and cargo: the host's resolver.
    fs::copy("/etc/resolv.conf", at("etc/resolv.conf")).context("copying /etc/resolv.conf")?;
    Ok(())
}

struct Step {
    elapsed: Duration,
    ok: bool,
    /// The test summary line, for the steps that print one.
    summary: Option<String>,
}

fn run_step(root: &Path, cmd: &str, log: &mut fs::File) -> anyhow::Result<Step> {
    let started = Instant::now();
    let mut child = Command::new("chroot")
        .arg(root)
        .args(["/usr/bin/env", "-i"])
        .args([
            "HOME=/root",
            "USER=root",
            "LOGNAME=root",
            "PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "TERM=dumb",
            "RUSTUP_AUTO_INSTALL=0",
            "CI=true",
        ])
        .args([
            "/bin/sh",
            "-c",
            &format!("cd /{REPO_IN_ROOT} && exec {cmd} 2>&1"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("chroot {} {cmd}", root.display()))?;
    let mut summary = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.unwrap_or_default();
            println!("{line}");
            let _ = writeln!(log, "{line}");
            if line.starts_with("summary: ") {
                summary = Some(line.trim_start_matches("summary: ").to_string());
            }
        }
    }
    let ok = child.wait()?.success();
    Ok(Step {
        elapsed: started.elapsed(),
        ok,
        summary,
    })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
