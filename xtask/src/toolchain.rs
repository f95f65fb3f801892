//! Pinned toolchains and small process helpers.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Userspace toolchain. There is no rust-toolchain.toml: rustup would refuse
/// to run `cargo xtask` at all where it may not install toolchains by itself
/// (`RUSTUP_AUTO_INSTALL=0`). Setup installs this one and sets it as the
/// checkout's rustup override, so a plain `cargo build` uses it too.
pub const USER_TOOLCHAIN: &str = "1.99.1";
/// eBPF toolchain; keep in step with `agent/build.rs`.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-10-29";
/// bpf-linker release built against that nightly's LLVM.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const LLVM_MAJOR: &str = "23";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `~/.cache/palisade`: what setup installs outside the repository.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/palisade"))
}

/// `~/.cache/palisade/llvm-<toolchain>`: bpf-linker and its libLLVM links.
pub fn linker_prefix() -> anyhow::Result<PathBuf> {
    Ok(cache_dir()?.join(format!("llvm-{EBPF_TOOLCHAIN}")))
}

/// This checkout's link to a client test environment (`python-dev`,
/// `python-crewai`, `wheelhouse`), made by `cargo xtask setup`.
pub fn client_env_link(name: &str) -> PathBuf {
    workspace_root().join("target/client-envs").join(name)
}

/// `PATH` with this checkout's `target/client-envs/bin` first: the
/// Node.js setup chose (the host's, or a pinned one where the host's is
/// too old).
pub fn path_with_client_bin() -> std::ffi::OsString {
    let mut dirs = vec![client_env_link("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// The environment Node.js commands run with: `PATH` as above, and the
/// system's certificate authorities trusted as well as Node's own bundle
/// (a Node.js from the registry does not read the system store, and hosts
/// behind a TLS-inspecting proxy trust its authority only there).
pub fn node_env(cmd: &mut Command) -> &mut Command {
    const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
    cmd.env("PATH", path_with_client_bin());
    if std::env::var_os("NODE_EXTRA_CA_CERTS").is_none() && Path::new(SYSTEM_CAS).is_file() {
        cmd.env("NODE_EXTRA_CA_CERTS", SYSTEM_CAS);
    }
    cmd
}

/// Run a command, echoing it; fail with its exit status.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Run a command and return its stdout, or `None` if it failed to run.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `cargo` of the pinned userspace toolchain, whatever toolchain built
/// xtask (the first `cargo xtask setup` runs on the host's default one, and
/// rustup passes that one on in `RUSTUP_TOOLCHAIN`).
pub fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{USER_TOOLCHAIN}"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .current_dir(workspace_root());
    c
}

/// Whether rustup has toolchain `name` (e.g. `1.99.1`).
pub fn toolchain_installed(name: &str) -> bool {
    output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with(name)))
}

/// Stop with the fix when `cargo xtask setup` has not run yet.
pub fn require_setup() -> anyhow::Result<()> {
    if !toolchain_installed(USER_TOOLCHAIN) || !toolchain_installed(EBPF_TOOLCHAIN) {
        bail!(
            "the pinned toolchains ({USER_TOOLCHAIN}, {EBPF_TOOLCHAIN}) are not installed: run `cargo xtask setup` first"
        );
    }
    let linker = linker_prefix()?.join("bin/bpf-linker");
    if !linker.exists() {
        bail!(
            "bpf-linker is not installed ({}): run `cargo xtask setup` first",
            linker.display()
        );
    }
    Ok(())
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}
