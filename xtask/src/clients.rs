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
    python_env("python-gateway", "gateway")?;
    wheelhouse(&dev)?;
    node(&apt_install)?;
    npm_packages()?;
    npm_fresh_project_cache()
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

/// The Node.js setup fetches where the host's is missing or too old
/// (Debian 12 ships 18): the official binary as the npm registry carries it
/// (`node-linux-<arch>`), checked against the registry's integrity hash by
/// `npm pack`.
const NODE_VERSION: &str = "20.20.2";

/// A Node.js of at least `NODE_MAJOR`, linked as
/// `target/client-envs/bin/node`: the host's if it is recent enough, else
/// the pinned one unpacked under `~/.cache/palisade/`. The tests and
/// `npm ci` run with that directory first on `PATH`, so the host's own
/// `node` is never replaced.
fn node(apt_install: &impl Fn(&[&str]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if output(Command::new("npm").arg("--version")).is_none() {
        apt_install(&["nodejs", "npm"])?;
    }
    let bin = client_env_link("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let node = match node_major(Path::new("node")) {
        Some(major) if major >= NODE_MAJOR => {
            let path = output(Command::new("sh").args(["-c", "command -v node"]))
                .context("finding node on PATH")?;
            PathBuf::from(path.trim())
        }
        _ => pinned_node()?,
    };
    link(&node, &bin.join("node"))?;
    match node_major(&bin.join("node")) {
        Some(major) if major >= NODE_MAJOR => Ok(()),
        other => bail!(
            "{} reports Node.js {other:?}; the TypeScript client needs {NODE_MAJOR} or later",
            node.display()
        ),
    }
}

/// `~/.cache/palisade/node-<version>/package/bin/node`, fetched once.
fn pinned_node() -> anyhow::Result<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => {
            bail!("no Node.js {NODE_VERSION} package for {other}: install Node.js {NODE_MAJOR}+")
        }
    };
    let dir = cache_dir()?.join(format!("node-{NODE_VERSION}"));
    let node = dir.join("package/bin/node");
    if node_major(&node).is_some_and(|m| m >= NODE_MAJOR) {
        return Ok(node);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = format!("node-linux-{arch}@{NODE_VERSION}");
    sh(crate::toolchain::node_env(&mut Command::new("npm"))
        .args(["pack", "--silent", "--pack-destination"])
        .arg(&dir)
        .arg(&spec)
        .current_dir(&dir))?;
    let tarball = dir.join(format!("node-linux-{arch}-{NODE_VERSION}.tgz"));
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir))?;
    fs::remove_file(&tarball).with_context(|| format!("removing {}", tarball.display()))?;
    Ok(node)
}

fn node_major(node: &Path) -> Option<u32> {
    let v = output(Command::new(node).arg("--version"))?;
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
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
    sh(crate::toolchain::node_env(&mut Command::new("npm"))
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// What a new user's project fetches when it installs the client from the
/// repository path (`npm install <repo>/clients/typescript`), in npm's
/// cache: it resolves the client's dependencies afresh (the lockfile is
/// the client's own), and the test that does it runs offline. Once per
/// change of the client's package.json.
fn npm_fresh_project_cache() -> anyhow::Result<()> {
    let client = workspace_root().join("clients/typescript");
    let manifest =
        fs::read(client.join("package.json")).context("reading clients/typescript/package.json")?;
    let project = cache_dir()?.join("npm-fresh-project");
    let stamp = project.join(".palisade-fetched");
    let wanted = digest(&[&manifest]);
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&project);
    fs::create_dir_all(&project).with_context(|| format!("creating {}", project.display()))?;
    fs::write(
        project.join("package.json"),
        r#"{"name": "fresh-project", "version": "1.0.0", "private": true}"#,
    )?;
    sh(crate::toolchain::node_env(&mut Command::new("npm"))
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .arg(&client)
        .current_dir(&project))?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}
