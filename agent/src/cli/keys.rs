//! `palisade keys`: the token signing key file (offline, as root).

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use clap::Subcommand;

use crate::tokens::{KeyFile, keys::KeyEntry, operator_token};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key file with one new key (refuses to overwrite).
    Generate {
        /// Where to write it (mode 0600).
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Retire the signing key and add a new one. The retired key keeps
    /// verifying for `--grace` (at least the longest token lifetime);
    /// reload the daemon (SIGHUP) to start signing with the new key.
    Rotate {
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long, default_value = "1h")]
        grace: String,
    },
    /// Print the public keys as a JWKS, for services that verify tokens.
    Jwks {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Mint an operator token (for operator calls without root, and over
    /// the TCP listener); pass it as $PALISADE_OPERATOR_TOKEN.
    OperatorToken {
        /// The daemon's key file (`tokens.key_file`).
        #[arg(long)]
        file: std::path::PathBuf,
        /// Who holds the token; recorded as the approver of what it approves.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. "1h" or "8h".
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Must equal the daemon's `tokens.issuer`.
        #[arg(long, default_value = "palisade")]
        issuer: String,
        /// Must equal the daemon's `tokens.audience`.
        #[arg(long, default_value = "palisade")]
        audience: String,
    },
    /// Create an approver key for signed approvals (mode 0600); prints
    /// the public key for the policy's `approvers:`.
    Approver {
        #[arg(long)]
        out: std::path::PathBuf,
        /// The approver's id in the policy.
        #[arg(long)]
        id: String,
    },
    /// Sign an approval with an approver key: prints the signed approval
    /// for `palisade approve --signed FILE` (or the API).
    SignApproval(super::approver::SignArgs),
}

fn duration(text: &str, flag: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text).with_context(|| format!("{flag} `{text}`"))
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Approver { out, id } => return super::approver::generate(&out, &id),
        KeysCommand::SignApproval(args) => return super::approver::sign(&args),
        KeysCommand::Generate { file } => {
            if file.exists() {
                anyhow::bail!("{} exists; use `palisade keys rotate`", file.display());
            }
            let f = KeyFile {
                keys: vec![KeyEntry::generate(SystemTime::now())?],
            };
            f.write(&file)?;
            println!("{}: new key {}", file.display(), f.keys[0].kid);
        }
        KeysCommand::Rotate { file, grace } => {
            let mut f = KeyFile::read(&file)?;
            let kid = f.rotate(SystemTime::now(), duration(&grace, "--grace")?)?;
            f.write(&file)?;
            println!(
                "{}: now signing with {kid}; reload the daemon (SIGHUP)",
                file.display()
            );
        }
        KeysCommand::Jwks { file } => {
            let jwks = KeyFile::read(&file)?.jwks(SystemTime::now())?;
            println!("{}", serde_json::to_string_pretty(&jwks)?);
        }
        KeysCommand::OperatorToken {
            file,
            name,
            ttl,
            issuer,
            audience,
        } => {
            let t = operator_token(
                Path::new(&file),
                &issuer,
                &audience,
                &name,
                duration(&ttl, "--ttl")?,
            )?;
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
