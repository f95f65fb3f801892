//! `cargo xtask setup`: everything a fresh Debian/Ubuntu host needs to build
//! and test Palisade. Each step checks first, so a second run is quick.

use std::{fs, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    debian,
    toolchain::{
        BPF_LINKER_VERSION, EBPF_TOOLCHAIN, LLVM_MAJOR, USER_TOOLCHAIN, cache_dir, linker_prefix,
        output, sh, toolchain_installed, workspace_root,
    },
};

/// Debian packages: CA certificates for rustup's and cargo's downloads; a C
/// compiler and libc headers for the crates that build C (AWS-LC) and for
/// linking; iproute2 and procps (`sysctl`) for test namespaces, python3 for
/// test servers; dnsmasq (the binary only, no system service) as the real
/// DNS server of the DNS-aware egress tests and benchmark; systemd-analyze
/// checks the systemd unit (whose ExecReload= is procps' /bin/kill),
/// strace and setpriv run the daemon as the unit would confine it;
/// debootstrap makes the Debian root the unit test boots systemd in, and
/// nsenter reaches into it. The gRPC code needs no protoc: `protox`
/// compiles the protos in the build script.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("/etc/ssl/certs/ca-certificates.crt", "ca-certificates"),
    ("cc", "gcc"),
    // libfuzzer-sys builds libFuzzer (C++) for the fuzz targets.
    ("c++", "g++"),
    ("/usr/include/stdio.h", "libc6-dev"),
    ("ip", "iproute2"),
    ("python3", "python3"),
    ("/usr/sbin/dnsmasq", "dnsmasq-base"),
    ("systemd-analyze", "systemd"),
    ("strace", "strace"),
    ("/bin/kill", "procps"),
    ("setpriv", "util-linux"),
    ("nsenter", "util-linux"),
    ("/usr/sbin/debootstrap", "debootstrap"),
    // The gateway tests: a test CA (openssl) and an ordinary client (curl).
    ("openssl", "openssl"),
    ("curl", "curl"),
];

/// What the systemd unit test boots: systemd as PID 1 over a minimal
/// Debian root (`tests/tests/systemd_unit.rs`).
const SYSTEMD_ROOT_PACKAGES: &[&str] = &["systemd", "systemd-sysv", "dbus", "procps"];

pub fn run() -> anyhow::Result<()> {
    // Packages first: rustup and cargo download over https (CA certificates).
    debian_packages()?;
    toolchains()?;
    bpf_linker()?;
    cargo_fuzz()?;
    crate::clients::setup(apt_install)?;
    systemd_root()?;
    eprintln!("setup: done");
    Ok(())
}

fn toolchains() -> anyhow::Result<()> {
    if !toolchain_installed(USER_TOOLCHAIN) {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            USER_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "clippy,rustfmt",
        ]))?;
    }
    let has_src = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .is_some_and(|l| l.lines().any(|c| c.starts_with("rust-src")));
    if !toolchain_installed(EBPF_TOOLCHAIN) || !has_src {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    // A plain `cargo build` in this checkout uses the pinned toolchain
    // (the contract in the README), without a rust-toolchain.toml.
    let root = workspace_root();
    let current = output(
        Command::new("rustup")
            .args(["show", "active-toolchain"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .current_dir(&root),
    )
    .unwrap_or_default();
    if !current.starts_with(USER_TOOLCHAIN) {
        sh(Command::new("rustup")
            .args(["override", "set", USER_TOOLCHAIN, "--path"])
            .arg(&root))?;
    }
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(what, _)| !present(what))
        .map(|(_, pkg)| *pkg)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// A command on PATH, or a file when given as an absolute path.
fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return std::path::Path::new(what).exists();
    }
    output(Command::new("sh").args(["-c", &format!("command -v {what}")])).is_some()
}

pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if output(Command::new("sh").args(["-c", "command -v apt-get"])).is_none() {
        bail!("missing {packages:?} and no apt-get here: install them with your package manager");
    }
    sh(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `~/.cache/palisade/debian/systemd-root`: a Debian root with systemd,
/// unpacked once from its cached tarball. The test mounts it read-only as
/// the lower layer of an overlay, so it stays clean between runs.
fn systemd_root() -> anyhow::Result<()> {
    let dir = cache_dir()?.join("debian/systemd-root");
    let stamp = dir.join(".palisade-root");
    let tarball = debian::root_tarball("systemd", SYSTEMD_ROOT_PACKAGES)?;
    let want = tarball.display().to_string();
    if fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        return Ok(());
    }
    debian::remove_tree(&dir)?;
    debian::unpack(&tarball, &dir)?;
    fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))
}

/// bpf-linker must use the same LLVM as the eBPF nightly: link it against
/// the libLLVM that the nightly ships, and keep it outside the repository.
fn bpf_linker() -> anyhow::Result<()> {
    let prefix = linker_prefix()?;
    let bin = prefix.join("bin/bpf-linker");
    if output(Command::new(&bin).arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let sysroot =
        output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"]))
            .context("asking the eBPF toolchain for its sysroot")?;
    let lib = std::path::Path::new(sysroot.trim()).join("lib");
    let so = fs::read_dir(&lib)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for link in ["libLLVM.so".to_string(), so.clone()] {
        let dst = prefix_lib.join(&link);
        let _ = fs::remove_file(&dst);
        std::os::unix::fs::symlink(lib.join(&so), &dst)
            .with_context(|| format!("linking {}", dst.display()))?;
    }
    sh(Command::new("cargo")
        .args([
            &format!("+{}", USER_TOOLCHAIN),
            "install",
            "bpf-linker",
            "--locked",
        ])
        .args([
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{LLVM_MAJOR}"))
        .arg("--root")
        .arg(&prefix)
        .arg("--force")
        .env("LLVM_PREFIX", &prefix))
}

/// cargo-fuzz, outside the repository and the user's `~/.cargo/bin`; the
/// fuzz targets build with the eBPF nightly (already installed above, with
/// its sanitizer runtimes) and libFuzzer needs only a C++ compiler.
fn cargo_fuzz() -> anyhow::Result<()> {
    let bin = crate::fuzz::cargo_fuzz_bin()?;
    let version = crate::fuzz::CARGO_FUZZ_VERSION;
    if output(Command::new(&bin).arg("--version")).is_some_and(|v| v.contains(version)) {
        return Ok(());
    }
    let root = bin
        .parent()
        .and_then(std::path::Path::parent)
        .context("cargo-fuzz path has no prefix")?;
    sh(Command::new("cargo")
        .arg(format!("+{USER_TOOLCHAIN}"))
        .args(["install", "cargo-fuzz", "--locked", "--version", version])
        .arg("--root")
        .arg(root)
        .arg("--force")
        .env_remove("RUSTUP_TOOLCHAIN"))
}
