//! Signing keys: an Ed25519 key file with a `kid` per key. The newest key
//! that is not retired signs; retired keys keep verifying until
//! `verify_until`, so rotation never invalidates a token that is still
//! within its lifetime.
//!
//! ```yaml
//! # keys.yaml (mode 0600)
//! keys:
//!   - kid: k-20261123-1a2b3c
//!     created: 2026-11-23T10:00:00Z
//!     secret: <base64url Ed25519 seed>
//!     retired: 2026-12-01T09:00:00Z      # optional
//!     verify_until: 2026-12-01T10:00:00Z # optional, with retired
//! ```

use std::{
    collections::HashMap,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    time::{Duration, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::TokenError;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: String,
    /// RFC 3339.
    pub created: String,
    /// The 32-byte Ed25519 seed, base64url without padding.
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<String>,
}

/// A verification key.
pub struct PublicKey {
    pub key: DecodingKey,
    /// Raw public key, base64url (the JWK `x`).
    pub x: String,
}

/// The keys in use: one signing key, every key that may verify.
pub struct KeySet {
    pub signing_kid: String,
    pub signing: EncodingKey,
    pub verifying: HashMap<String, PublicKey>,
}

fn parse_time(what: &str, kid: &str, t: &str) -> Result<SystemTime, TokenError> {
    humantime::parse_rfc3339_weak(t)
        .map_err(|e| TokenError::KeyFile(format!("key `{kid}`: `{what}` {t:?}: {e}")))
}

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410), as the JWT library
/// takes signing keys.
fn pkcs8_der(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

impl KeyEntry {
    fn seed(&self) -> Result<[u8; 32], TokenError> {
        let raw = B64.decode(self.secret.trim()).map_err(|e| {
            TokenError::KeyFile(format!("key `{}`: secret is not base64url: {e}", self.kid))
        })?;
        <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| {
            TokenError::KeyFile(format!("key `{}`: secret must be 32 bytes", self.kid))
        })
    }

    pub fn public_x(&self) -> Result<String, TokenError> {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        let pair = Ed25519KeyPair::from_seed_unchecked(&self.seed()?)
            .map_err(|e| TokenError::KeyFile(format!("key `{}`: {e}", self.kid)))?;
        Ok(B64.encode(pair.public_key().as_ref()))
    }

    /// Still allowed to verify at `now`?
    fn verifies_at(&self, now: SystemTime) -> Result<bool, TokenError> {
        match &self.verify_until {
            None => Ok(true),
            Some(t) => Ok(parse_time("verify_until", &self.kid, t)? > now),
        }
    }

    /// Create a new key from the system's randomness.
    pub fn generate(now: SystemTime) -> Result<Self, TokenError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| TokenError::KeyFile(format!("no randomness: {e}")))?;
        let mut tag = [0u8; 3];
        getrandom::getrandom(&mut tag)
            .map_err(|e| TokenError::KeyFile(format!("no randomness: {e}")))?;
        let date = humantime::format_rfc3339_seconds(now).to_string();
        let day: String = date.chars().take(10).filter(|c| *c != '-').collect();
        Ok(Self {
            kid: format!("k-{day}-{:02x}{:02x}{:02x}", tag[0], tag[1], tag[2]),
            created: date,
            secret: B64.encode(seed),
            retired: None,
            verify_until: None,
        })
    }
}

impl KeyFile {
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let meta = fs::metadata(path)
            .map_err(|e| TokenError::KeyFile(format!("{}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(TokenError::KeyFile(format!(
                "{} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            )));
        }
        let text = fs::read_to_string(path)
            .map_err(|e| TokenError::KeyFile(format!("{}: {e}", path.display())))?;
        serde_saphyr::from_str(&text).map_err(|e| {
            TokenError::KeyFile(format!(
                "{}: {}",
                path.display(),
                crate::policy::Diagnostic::from_yaml(path, &e).message
            ))
        })
    }

    /// Write with mode 0600, atomically.
    pub fn write(&self, path: &Path) -> Result<(), TokenError> {
        let io = |e: std::io::Error| TokenError::KeyFile(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let mut text = String::from("# Palisade token signing keys. Keep secret (mode 0600).\n");
        text.push_str(
            &serde_json::to_string_pretty(self).map_err(|e| TokenError::KeyFile(e.to_string()))?,
        );
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }

    /// Read the file, or create it with one fresh key when it does not exist.
    pub fn read_or_create(path: &Path) -> Result<Self, TokenError> {
        if path.exists() {
            return Self::read(path);
        }
        let file = Self {
            keys: vec![KeyEntry::generate(SystemTime::now())?],
        };
        file.write(path)?;
        tracing::info!(path = %path.display(), kid = %file.keys[0].kid, "created token signing key");
        Ok(file)
    }

    /// Retire the signing key (it verifies for `grace` more) and add a new one.
    pub fn rotate(&mut self, now: SystemTime, grace: Duration) -> Result<String, TokenError> {
        let now_text = humantime::format_rfc3339_seconds(now).to_string();
        let until = humantime::format_rfc3339_seconds(now + grace).to_string();
        for k in self.keys.iter_mut().filter(|k| k.retired.is_none()) {
            k.retired = Some(now_text.clone());
            k.verify_until = Some(until.clone());
        }
        let new = KeyEntry::generate(now)?;
        let kid = new.kid.clone();
        self.keys.push(new);
        Ok(kid)
    }

    pub fn key_set(&self, now: SystemTime) -> Result<KeySet, TokenError> {
        let mut signing: Option<(&KeyEntry, SystemTime)> = None;
        let mut verifying = HashMap::new();
        for k in &self.keys {
            let created = parse_time("created", &k.kid, &k.created)?;
            if k.retired.is_none() && signing.is_none_or(|(_, t)| created > t) {
                signing = Some((k, created));
            }
            if k.verifies_at(now)? {
                let x = k.public_x()?;
                let key = DecodingKey::from_ed_components(&x)
                    .map_err(|e| TokenError::KeyFile(format!("key `{}`: {e}", k.kid)))?;
                if verifying
                    .insert(k.kid.clone(), PublicKey { key, x })
                    .is_some()
                {
                    return Err(TokenError::KeyFile(format!(
                        "kid `{}` appears twice",
                        k.kid
                    )));
                }
            }
        }
        let (entry, _) = signing.ok_or_else(|| {
            TokenError::KeyFile("no key that is not retired: run `palisade keys rotate`".into())
        })?;
        Ok(KeySet {
            signing_kid: entry.kid.clone(),
            signing: EncodingKey::from_ed_der(&pkcs8_der(&entry.seed()?)),
            verifying,
        })
    }

    /// The public JWKS (RFC 7517) of every key that may verify now.
    pub fn jwks(&self, now: SystemTime) -> Result<serde_json::Value, TokenError> {
        let mut keys = Vec::new();
        for k in &self.keys {
            if k.verifies_at(now)? {
                keys.push(serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": k.kid, "x": k.public_x()?,
                }));
            }
        }
        Ok(serde_json::json!({ "keys": keys }))
    }
}
