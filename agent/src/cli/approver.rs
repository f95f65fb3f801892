//! `palisade keys approver | sign-approval`: the approver's side of signed
//! approvals, for a person with the key or a central approval service.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path, process::ExitCode};

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};

use crate::signed_approval::{self, SignedClaims};

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The approver key (`palisade keys approver --out`).
    #[arg(long)]
    pub key: std::path::PathBuf,
    /// The approver's id in the policy.
    #[arg(long)]
    pub approver: String,
    /// The approval id (`apr-…`).
    #[arg(long)]
    pub id: String,
    /// The approval's `digest` (`palisade approvals --json`, or the
    /// notification).
    #[arg(long)]
    pub digest: String,
    /// `approve` or `reject`.
    #[arg(long, default_value = "approve")]
    pub verdict: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// How long the signed approval may be applied, e.g. 10m.
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Write it here instead of standard output.
    #[arg(long, short)]
    pub out: Option<std::path::PathBuf>,
}

fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let body: String = text.lines().filter(|l| !l.starts_with('#')).collect();
    B64.decode(body.trim())
        .with_context(|| format!("{} is not an approver key (base64 PKCS#8)", path.display()))
}

pub fn generate(out: &Path, id: &str) -> anyhow::Result<ExitCode> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let (pkcs8, public) = signed_approval::generate().map_err(anyhow::Error::msg)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    writeln!(
        f,
        "# Palisade approver key `{id}` (Ed25519, PKCS#8). Keep it secret."
    )?;
    writeln!(f, "{}", B64.encode(&pkcs8))?;
    println!("# add to the policy:\napprovers:\n  - {{id: {id}, public_key: \"{public}\"}}");
    Ok(ExitCode::SUCCESS)
}

pub fn sign(a: &SignArgs) -> anyhow::Result<ExitCode> {
    if a.verdict != "approve" && a.verdict != "reject" {
        bail!("--verdict `{}`: approve or reject", a.verdict);
    }
    let ttl = humantime::parse_duration(&a.ttl).with_context(|| format!("--ttl `{}`", a.ttl))?;
    let pkcs8 = read_key(&a.key)?;
    let claims = SignedClaims {
        approval: a.id.clone(),
        digest: a.digest.clone(),
        verdict: a.verdict.clone(),
        approver: a.approver.clone(),
        exp: crate::tokens::unix(std::time::SystemTime::now() + ttl),
        reason: a.reason.clone(),
    };
    let jws = signed_approval::sign(&pkcs8, &claims).map_err(anyhow::Error::msg)?;
    match &a.out {
        Some(p) => std::fs::write(p, format!("{jws}\n"))
            .with_context(|| format!("writing {}", p.display()))?,
        None => println!("{jws}"),
    }
    Ok(ExitCode::SUCCESS)
}
