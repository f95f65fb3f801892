//! Minimal Debian roots made with `debootstrap`, cached under
//! `~/.cache/palisade/debian/` as tarballs so that only the first use pays
//! for the download. `cargo xtask fresh-host` runs the README in one; the
//! systemd test boots a real systemd in another.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::toolchain::{cache_dir, sh};

/// The Debian release of the roots (the supported host, Debian 12).
pub const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian mirror apt already uses on this host, for `SUITE`; Debian's
/// own redirector when apt has none.
pub fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter_map(|f| Some((f, fs::read_to_string(f).ok()?)))
        .find_map(|(f, text)| {
            if f.extension().is_some_and(|e| e == "sources") {
                mirror_deb822(&text)
            } else {
                mirror_one_line(&text)
            }
        })
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// `Types: deb` / `URIs: …` / `Suites: bookworm …` stanzas.
fn mirror_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let types = field("Types")?;
        let suites = field("Suites")?;
        let uri = field("URIs")?.split_whitespace().next()?.to_string();
        (types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == SUITE))
        .then_some(uri)
    })
}

/// `deb [options] URI SUITE components…` lines.
fn mirror_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.split('#').next()?.trim();
        let rest = l.strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1.trim_start(),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == SUITE).then(|| uri.to_string())
    })
}

/// Install debootstrap with apt when it is missing.
pub fn ensure_debootstrap() -> anyhow::Result<()> {
    if Path::new("/usr/sbin/debootstrap").exists() {
        return Ok(());
    }
    crate::setup::apt_install(&["debootstrap"])
}

/// A short stable name for a package list (FNV-1a), so a changed list
/// makes a new root instead of reusing a stale one.
fn digest(words: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in words.join(",").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A tarball of a `debootstrap --variant=minbase` root of `SUITE` with
/// `include` added, made once and then reused. It is built in a private
/// mount namespace, so whatever debootstrap mounts inside the target goes
/// away with it even if it fails half-way.
pub fn root_tarball(name: &str, include: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?.join("debian");
    let tarball = dir.join(format!("{name}-{SUITE}-{}.tar", &digest(include)[..12]));
    if tarball.exists() {
        return Ok(tarball);
    }
    ensure_debootstrap()?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join(format!("build-{name}-{}", std::process::id()));
    remove_tree(&target)?;
    let mirror = mirror();
    eprintln!(
        "debootstrap: a minimal {SUITE} root from {mirror} with {} (once; cached as {})",
        include.join(", "),
        tarball.display()
    );
    let started = std::time::Instant::now();
    let built = sh(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .args(["debootstrap", "--variant=minbase"])
        .arg(format!("--include={}", include.join(",")))
        .arg(SUITE)
        .arg(&target)
        .arg(&mirror))
    .and_then(|()| {
        // apt's package lists are stale by the next use: drop them.
        let _ = fs::remove_dir_all(target.join("var/cache/apt/archives"));
        let tmp = tarball.with_extension("tar.tmp");
        sh(Command::new("tar")
            .arg("-C")
            .arg(&target)
            .args(["--numeric-owner", "-cf"])
            .arg(&tmp)
            .arg("."))?;
        fs::rename(&tmp, &tarball).with_context(|| format!("renaming {}", tmp.display()))
    });
    remove_tree(&target)?;
    built?;
    eprintln!(
        "debootstrap: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(tarball)
}

/// Unpack a root tarball into `dest` (which must not exist yet).
pub fn unpack(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    sh(Command::new("tar")
        .arg("-C")
        .arg(dest)
        .args(["--numeric-owner", "-xpf"])
        .arg(tarball))
}

/// `rm -rf` a root, refusing while anything is mounted below it: removing
/// a root with the host's /dev or /proc still bound into it would reach
/// through into the host.
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(m) = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .find(|m| Path::new(m).starts_with(dir))
    {
        bail!(
            "{m} is still mounted: not removing {} (unmount it first)",
            dir.display()
        );
    }
    sh(Command::new("rm")
        .args(["-rf", "--one-file-system"])
        .arg(dir))?;
    if dir.exists() {
        bail!("{} could not be removed", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_both_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_deb822(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_one_line(list).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_one_line("deb http://x.example/debian bookworm-security main\n"),
            None
        );
    }
}
