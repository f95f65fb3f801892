//! The client test environments `cargo xtask setup` prepares: virtualenvs
//! for the Python client and its framework adapters, a wheelhouse for the
//! offline install tests, and the TypeScript client's npm packages.
//!
//! The virtualenvs and the wheelhouse are content-addressed caches under
//! `~/.cache/palisade/` (named after a hash of what they hold, so checkouts
//! at different versions never rebuild each other's), linked from this
//! checkout's `target/client-envs/`, where the tests look.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::toolchain::{cache_dir, client_env_link, output, sh, workspace_root};

/// Packages the offline install tests need besides the client: the build
/// backend and the client's runtime dependencies, as wheels.
const WHEELHOUSE: &[&str] = &["hatchling==1.33.0", "grpcio==1.85.1", "protobuf==7.36.2"];
/// The Node.js the TypeScript client supports.
const NODE_MAJOR: u32 = 20;

pub fn setup(apt_install: impl Fn(&[&str]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if output(Command::new("python3").args(["-c", "import ensurepip, venv"])).is_none() {
        apt_install(&["python3-venv"])?;
    }
    let dev = python_env("python-dev", "dev")?;
    python_env("python-crewai", "crewai")?;
    wheelhouse(&dev)?;
    node(&apt_install)?;
    npm_packages()
}

/// FNV-1a: a stable name for a cache entry (not a security boundary).
fn digest(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(b"\0") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A requirements file without its comments and blank lines: editing a
/// comment does not rebuild an environment.
fn pins(file: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(file)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

fn python_version() -> anyhow::Result<String> {
    output(Command::new("python3").arg("--version")).context("python3 does not run")
}

/// A virtualenv with `clients/python/requirements-<set>.txt` installed
/// under `constraints-<set>.txt` (every package pinned), linked as
/// `target/client-envs/<name>`; returns its python.
fn python_env(name: &str, set: &str) -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("clients/python");
    let requirements = dir.join(format!("requirements-{set}.txt"));
    let constraints = dir.join(format!("constraints-{set}.txt"));
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (wanted, pinned) = (pins(&read(&requirements)?), pins(&read(&constraints)?));
    let version = python_version()?;
    let env = cache_dir()?.join(format!(
        "{name}-{}",
        digest(&[&wanted, &pinned, version.as_bytes()])
    ));
    let python = env.join("bin/python3");
    let stamp = env.join("installed");
    if !stamp.exists() || output(Command::new(&python).arg("--version")).is_none() {
        eprintln!(
            "setup: {name}: installing {} into {}",
            requirements.display(),
            env.display()
        );
        let started = std::time::Instant::now();
        // The stamp is written last: an interrupted install is redone.
        let _ = fs::remove_file(&stamp);
        sh(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&env))?;
        sh(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .arg("-c")
            .arg(&constraints))?;
        fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
        eprintln!("setup: {name}: installed in {:.0?}", started.elapsed());
    }
    link(&env, &client_env_link(name))?;
    Ok(python)
}

fn link(target: &Path, at: &Path) -> anyhow::Result<()> {
    if fs::read_link(at).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(at);
    std::os::unix::fs::symlink(target, at).with_context(|| format!("linking {}", at.display()))
}

/// Wheels of the build backend and the client's dependencies, so the tests
/// can `pip install` the client into a fresh virtualenv without the network.
fn wheelhouse(python: &Path) -> anyhow::Result<()> {
    let spec = WHEELHOUSE.join("\n");
    let version = python_version()?;
    let dir = cache_dir()?.join(format!(
        "wheelhouse-{}",
        digest(&[spec.as_bytes(), version.as_bytes()])
    ));
    let stamp = dir.join(".complete");
    if !stamp.exists() {
        eprintln!("setup: downloading wheels into {}", dir.display());
        sh(Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "-d",
            ])
            .arg(&dir)
            .args(WHEELHOUSE))?;
        fs::write(&stamp, spec)?;
    }
    link(&dir, &client_env_link("wheelhouse"))
}

fn node_major() -> Option<u32> {
    let v = output(Command::new("node").arg("--version"))?;
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn node(apt_install: &impl Fn(&[&str]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if node_major().is_none() {
        apt_install(&["nodejs", "npm"])?;
    }
    match node_major() {
        Some(major) if major >= NODE_MAJOR => Ok(()),
        Some(major) => bail!(
            "Node.js {major} is installed; the TypeScript client needs Node.js {NODE_MAJOR} or later \
             (install it from your distribution's backports or nodejs.org)"
        ),
        None => bail!("node does not run after installing nodejs"),
    }
}

/// `npm ci` from the committed lockfile, once per change of the lockfile.
fn npm_packages() -> anyhow::Result<()> {
    let dir = workspace_root().join("clients/typescript");
    let lock = fs::read(dir.join("package-lock.json"))
        .context("reading clients/typescript/package-lock.json")?;
    let stamp = dir.join("node_modules/.palisade-installed");
    let wanted = digest(&[&lock]);
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    sh(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}
