//! Short-lived tokens (EdDSA JWTs), verified the way RFC 8725 asks: the
//! algorithm pinned to the key's, `typ` checked, `exp`/`nbf`/`iss`/`aud`/
//! `sub` required and checked with at most 5 s of leeway, and every `jti`
//! accepted once. Verified tokens are remembered by the hash of the whole
//! token until they expire (`cache`), never by their signature.
//!
//! Three kinds share the keys, told apart by `typ`:
//! - `at+jwt`: an access token for one identity, single use, for `Decide`;
//! - `approval+jwt`: the override for one approved call, single use;
//! - `operator+jwt`: an operator's credential for operator calls.

mod cache;
pub mod keys;
mod replay;

use crate::state::record::now_ms;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use cache::{Lifetime, VerifiedCache};
pub use keys::{KeyFile, KeySet};
pub use replay::DEFAULT_QUOTA as DEFAULT_REPLAY_QUOTA;
use replay::{ReplayCache, Seen};

use crate::state::{Log, Record, StateError};

/// Clock leeway for `exp` and `nbf` (RFC 8725 asks for little).
pub const LEEWAY_SECS: u64 = 5;
pub const TYP_ACCESS: &str = "at+jwt";
pub const TYP_APPROVAL: &str = "approval+jwt";
pub const TYP_OPERATOR: &str = "operator+jwt";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("key file: {0}")]
    KeyFile(String),
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token uses algorithm {0}; only EdDSA is accepted")]
    Algorithm(String),
    #[error("token type is {found:?}, expected {expected:?}")]
    Type {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("token was signed by unknown key {0:?}")]
    UnknownKey(Option<String>),
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is wrong")]
    Audience,
    #[error("token issuer is wrong")]
    Issuer,
    #[error("token lacks required claim `{0}`")]
    MissingClaim(String),
    #[error("token was already used (jti {0})")]
    Replayed(String),
    #[error(
        "this identity has as many live tokens remembered as its quota allows; new ones are refused until some expire"
    )]
    ReplayCacheFull,
    #[error("token was issued to `{token}`, but the caller is `{caller}`")]
    WrongIdentity { token: String, caller: String },
    #[error("token was issued before `{0}` was revoked")]
    IssuedBeforeRevocation(String),
    #[error(
        "token was issued before the daemon's record of used tokens begins (its first start, or its state was lost); ask for a new one"
    )]
    IssuedBeforeRestart,
    #[error("the daemon cannot record the token's use: {0}")]
    State(String),
}

impl From<StateError> for TokenError {
    fn from(e: StateError) -> Self {
        Self::State(e.to_string())
    }
}

impl TokenError {
    /// The reason code audit events and metrics use.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::KeyFile(_) => "key-file",
            Self::Malformed(_) => "token-malformed",
            Self::Algorithm(_) => "token-algorithm",
            Self::Type { .. } => "token-type",
            Self::UnknownKey(_) => "token-unknown-key",
            Self::Signature => "token-signature",
            Self::Expired => "token-expired",
            Self::NotYetValid => "token-not-yet-valid",
            Self::Audience => "token-audience",
            Self::Issuer => "token-issuer",
            Self::MissingClaim(_) => "token-missing-claim",
            Self::Replayed(_) => "token-replayed",
            Self::ReplayCacheFull => "token-cache-full",
            Self::WrongIdentity { .. } => "token-wrong-identity",
            Self::IssuedBeforeRevocation(_) => "token-revoked",
            Self::IssuedBeforeRestart => "token-before-restart",
            Self::State(_) => "state-unavailable",
        }
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The identity's first role ("" when none); `roles` has all of them.
    pub role: String,
    pub roles: Vec<String>,
    /// `tool.action` patterns the identity's rules can allow.
    pub scopes: Vec<String>,
    pub iat: u64,
    /// The issue time in unix ms (`iat` is whole seconds, too coarse to
    /// tell a token issued just before a revocation or a restart from one
    /// issued just after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<u64>,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Claims of an approval override token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OverrideClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub approval: String,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params_digest: String,
    pub policy_version: String,
    pub iat: u64,
    /// As in `AccessClaims`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<u64>,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

impl Lifetime for AccessClaims {
    fn nbf(&self) -> u64 {
        self.nbf
    }
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl Lifetime for OverrideClaims {
    fn nbf(&self) -> u64 {
        self.nbf
    }
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl Lifetime for OperatorClaims {
    fn nbf(&self) -> u64 {
        self.nbf
    }
    fn exp(&self) -> u64 {
        self.exp
    }
}

/// Claims of an operator token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub scope: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub key_file: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
    pub max_ttl: Duration,
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 128 random bits as hex, from the thread's CSPRNG (ChaCha, seeded and
/// reseeded from the OS): unpredictable like `getrandom`, without a system
/// call on every decision.
pub fn random_id() -> String {
    crate::hex::lower(&rand::random::<[u8; 16]>())
}

/// The `alg` a token's header declares, read without trusting anything.
fn declared_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// Issues and verifies tokens with the keys of one key file.
pub struct Tokens {
    pub settings: TokenSettings,
    keys: ArcSwap<KeySet>,
    replay: ReplayCache,
    /// Tokens that passed `verify`, by the hash of the whole token.
    verified: VerifiedCache,
    /// Identity → the unix ms of its last revocation: tokens issued at or
    /// before it never verify again, even after the identity is restored.
    revoked_at: Mutex<HashMap<String, u64>>,
    /// The unix ms the journal's record of used tokens begins (the first
    /// start with durable state, or the start after it was lost): tokens
    /// issued at or before it (used or not, nobody knows) never verify.
    replay_since: u64,
    log: Log,
    /// The latest issue time (ms) handed out. Issue times can run ahead of
    /// the clock (see `issued_at`), and a revocation must cover them too.
    latest_iat: std::sync::atomic::AtomicU64,
}

/// Token state restored from the journal.
pub struct Durable {
    pub log: Log,
    /// Unix ms.
    pub replay_since: u64,
    /// identity → jti → exp
    pub used: HashMap<String, HashMap<String, u64>>,
    /// identity → unix ms of its last revocation.
    pub revoked: HashMap<String, u64>,
    /// Most ids remembered per identity.
    pub quota: usize,
}

impl Tokens {
    /// Tokens with nothing remembered from before (tests, the CLI).
    pub fn load(settings: TokenSettings) -> Result<Self, TokenError> {
        Self::load_with(settings, None)
    }

    pub fn load_with(
        settings: TokenSettings,
        durable: Option<Durable>,
    ) -> Result<Self, TokenError> {
        let keys = KeyFile::read_or_create(&settings.key_file)?.key_set(SystemTime::now())?;
        let now = unix(SystemTime::now());
        let (replay, revoked, replay_since, log) = match durable {
            Some(d) => {
                let cache = ReplayCache::new(d.log.clone(), d.quota);
                cache.restore(d.used, now);
                (cache, d.revoked, d.replay_since, d.log)
            }
            None => (
                ReplayCache::default(),
                HashMap::new(),
                now_ms(),
                Log::default(),
            ),
        };
        Ok(Self {
            settings,
            keys: ArcSwap::from_pointee(keys),
            replay,
            verified: VerifiedCache::default(),
            revoked_at: Mutex::new(revoked),
            replay_since,
            log,
            latest_iat: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Used ids and revocation cutoffs, as journal records.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = self.replay.snapshot();
        let revoked = self
            .revoked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.extend(revoked.iter().map(|(identity, at)| Record::Revoked {
            identity: identity.clone(),
            at: crate::state::record::second_covering(*at),
            at_ms: Some(*at),
        }));
        out
    }

    /// Token ids remembered for `identity` (for status and tests).
    pub fn remembered(&self, identity: &str) -> usize {
        self.replay.len_of(identity)
    }

    /// Re-read the key file (after a rotation). Keeps the old keys on error.
    pub fn reload_keys(&self) -> Result<(), TokenError> {
        let keys = KeyFile::read(&self.settings.key_file)?.key_set(SystemTime::now())?;
        self.keys.store(Arc::new(keys));
        // A retired key stops vouching for tokens it verified before.
        self.verified.clear();
        Ok(())
    }

    pub fn signing_kid(&self) -> String {
        self.keys.load().signing_kid.clone()
    }

    fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, TokenError> {
        let keys = self.keys.load();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.signing_kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &keys.signing)
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }

    /// Invalidate every token `identity` holds now (the kill switch). The
    /// cutoff is journaled: it outlives the daemon.
    pub fn revoke_issued(&self, identity: &str) -> Result<(), TokenError> {
        let now = now_ms().max(self.latest_iat.load(std::sync::atomic::Ordering::SeqCst));
        let mut revoked = self
            .revoked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.insert(identity.to_string(), now);
        let seq = self.log.append(|| Record::Revoked {
            identity: identity.to_string(),
            at: crate::state::record::second_covering(now),
            at_ms: Some(now),
        })?;
        drop(revoked);
        self.log.durable(seq)?;
        Ok(())
    }

    fn revocation_cutoff(&self, identity: &str) -> Option<u64> {
        self.revoked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(identity)
            .copied()
    }

    /// `issued_ms`: when the token was issued (`issued_ms`, the function).
    fn check_not_revoked(&self, identity: &str, issued_ms: u64) -> Result<(), TokenError> {
        match self.revocation_cutoff(identity) {
            Some(cutoff) if issued_ms <= cutoff => {
                Err(TokenError::IssuedBeforeRevocation(identity.to_string()))
            }
            _ if issued_ms <= self.replay_since => Err(TokenError::IssuedBeforeRestart),
            _ => Ok(()),
        }
    }

    /// The issue time (unix ms) of a token issued now for `identity`: after
    /// its revocation and after the daemon's cutoff for the unknown past,
    /// so a token issued right after either verifies. Only a cutoff still
    /// ahead of the clock (see `state::open`) moves it from now.
    fn issued_at(&self, identity: &str) -> u64 {
        let now = now_ms();
        let cutoff = self
            .revocation_cutoff(identity)
            .map_or(self.replay_since, |c| c.max(self.replay_since));
        let iat = now.max(cutoff + 1);
        self.latest_iat
            .fetch_max(iat, std::sync::atomic::Ordering::SeqCst);
        iat
    }

    /// An access token for `sub`, valid `ttl` (capped by `max_ttl`).
    pub fn issue_access(
        &self,
        mut claims: AccessClaims,
        ttl: Option<Duration>,
    ) -> Result<(String, AccessClaims), TokenError> {
        let iat_ms = self.issued_at(&claims.sub);
        let now = iat_ms / 1000;
        let ttl = ttl.unwrap_or(self.settings.ttl).min(self.settings.max_ttl);
        claims.iss = self.settings.issuer.clone();
        claims.aud = self.settings.audience.clone();
        claims.iat = now;
        claims.iat_ms = Some(iat_ms);
        claims.nbf = now;
        claims.exp = now + ttl.as_secs().max(1);
        claims.jti = random_id();
        Ok((self.sign(TYP_ACCESS, &claims)?, claims))
    }

    pub fn issue_override(
        &self,
        mut claims: OverrideClaims,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let iat_ms = self.issued_at(&claims.sub);
        let now = iat_ms / 1000;
        claims.iss = self.settings.issuer.clone();
        claims.aud = self.settings.audience.clone();
        claims.iat = now;
        claims.iat_ms = Some(iat_ms);
        claims.nbf = now;
        claims.exp = now + ttl.as_secs().max(1);
        claims.jti = random_id();
        self.sign(TYP_APPROVAL, &claims)
    }

    /// Verify everything but single use, from the cache when this exact
    /// token passed before (see `cache` for what is and is not cached).
    fn verify<C>(&self, token: &str, typ: &'static str) -> Result<C, TokenError>
    where
        C: DeserializeOwned + Lifetime + Clone + Send + Sync + 'static,
    {
        let key = VerifiedCache::key(token);
        let now = unix(SystemTime::now());
        let keys = self.keys.load();
        let trusted = |kid: &str| keys.verifying.contains_key(kid);
        if let Some(c) = self.verified.get(&key, typ, now, LEEWAY_SECS, trusted) {
            return Ok(c);
        }
        let (claims, kid) = self.verify_signed(token, typ)?;
        self.verified.put(key, typ, &kid, &claims);
        Ok(claims)
    }

    /// The full check of `verify`; also returns the key id that vouched.
    fn verify_signed<C: DeserializeOwned>(
        &self,
        token: &str,
        typ: &'static str,
    ) -> Result<(C, String), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // `alg: none` and other names the library does not know are
            // algorithm refusals, and the audit trail should say so.
            match declared_alg(token) {
                Some(alg) if alg != "EdDSA" => TokenError::Algorithm(alg),
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(TokenError::Type {
                expected: typ,
                found: header.typ,
            });
        }
        let keys = self.keys.load();
        let (kid, key) = header
            .kid
            .as_ref()
            .and_then(|k| keys.verifying.get_key_value(k))
            .ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.audience]);
        jsonwebtoken::decode::<C>(token, &key.key, &v)
            .map(|d| (d.claims, kid.clone()))
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => TokenError::Signature,
                    K::ExpiredSignature => TokenError::Expired,
                    K::ImmatureSignature => TokenError::NotYetValid,
                    K::InvalidAudience => TokenError::Audience,
                    K::InvalidIssuer => TokenError::Issuer,
                    K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                    K::InvalidAlgorithm => TokenError::Algorithm("mismatch".into()),
                    // The claims are deserialised before they are validated,
                    // so an absent required claim surfaces as a serde error.
                    K::Json(err) => match missing_field(&err.to_string()) {
                        Some(claim) => TokenError::MissingClaim(claim),
                        None => TokenError::Malformed(err.to_string()),
                    },
                    other => TokenError::Malformed(format!("{other:?}")),
                }
            })
    }

    fn once(&self, identity: &str, jti: &str, exp: u64) -> Result<(), TokenError> {
        match self
            .replay
            .check(identity, jti, exp + LEEWAY_SECS, unix(SystemTime::now()))?
        {
            Seen::First => Ok(()),
            Seen::Again => Err(TokenError::Replayed(jti.to_string())),
            Seen::Full => Err(TokenError::ReplayCacheFull),
        }
    }

    /// Verify an access token presented by `caller`; consumes its `jti`.
    pub fn verify_access(&self, token: &str, caller: &str) -> Result<AccessClaims, TokenError> {
        let c: AccessClaims = self.verify(token, TYP_ACCESS)?;
        if c.jti.is_empty() {
            return Err(TokenError::MissingClaim("jti".into()));
        }
        if c.sub != caller {
            return Err(TokenError::WrongIdentity {
                token: c.sub,
                caller: caller.to_string(),
            });
        }
        self.check_not_revoked(caller, issued_ms(c.iat, c.iat_ms))?;
        self.once(caller, &c.jti, c.exp)?;
        Ok(c)
    }

    /// Verify an override token presented by `caller`. Its `jti` is not
    /// consumed yet: `spend` it once the call matches the approval, so a
    /// mismatched attempt does not burn a human's approval.
    pub fn verify_override(&self, token: &str, caller: &str) -> Result<OverrideClaims, TokenError> {
        let c: OverrideClaims = self.verify(token, TYP_APPROVAL)?;
        if c.sub != caller {
            return Err(TokenError::WrongIdentity {
                token: c.sub,
                caller: caller.to_string(),
            });
        }
        self.check_not_revoked(caller, issued_ms(c.iat, c.iat_ms))?;
        if self
            .replay
            .contains(caller, &c.jti, unix(SystemTime::now()))
        {
            return Err(TokenError::Replayed(c.jti));
        }
        Ok(c)
    }

    /// Consume a verified override token's `jti`.
    pub fn spend_override(&self, claims: &OverrideClaims) -> Result<(), TokenError> {
        self.once(&claims.sub, &claims.jti, claims.exp)
    }

    /// Verify an operator token (reusable within its lifetime).
    pub fn verify_operator(&self, token: &str) -> Result<OperatorClaims, TokenError> {
        let c: OperatorClaims = self.verify(token, TYP_OPERATOR)?;
        if c.scope != "operator" {
            return Err(TokenError::MissingClaim("scope=operator".into()));
        }
        Ok(c)
    }

    /// Forget used ids of expired tokens, and expired verified tokens.
    pub fn prune(&self) {
        let now = unix(SystemTime::now());
        self.replay.prune(now);
        self.verified.prune(now, LEEWAY_SECS);
    }

    /// How many verified tokens are remembered (for tests and metrics).
    pub fn verified_cached(&self) -> usize {
        self.verified.len()
    }
}

/// Mint an operator token from a key file (offline, by whoever can read the
/// key file: root).
pub fn operator_token(
    file: &Path,
    issuer: &str,
    audience: &str,
    name: &str,
    ttl: Duration,
) -> Result<String, TokenError> {
    let keys = KeyFile::read(file)?.key_set(SystemTime::now())?;
    let now = unix(SystemTime::now());
    let claims = OperatorClaims {
        iss: issuer.to_string(),
        aud: audience.to_string(),
        sub: name.to_string(),
        scope: "operator".into(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs().max(1),
        jti: random_id(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.signing_kid.clone());
    header.typ = Some(TYP_OPERATOR.into());
    jsonwebtoken::encode(&header, &claims, &keys.signing)
        .map_err(|e| TokenError::Malformed(e.to_string()))
}

/// When a token was issued, in unix ms: its `iat_ms` where that agrees
/// with `iat`, else the start of `iat`'s second (tokens of earlier
/// versions: the earliest it could have been, so cutoffs refuse rather
/// than admit what they cannot place).
fn issued_ms(iat: u64, iat_ms: Option<u64>) -> u64 {
    iat_ms
        .filter(|ms| ms / 1000 == iat)
        .unwrap_or_else(|| iat.saturating_mul(1000))
}

/// The claim named by a serde "missing field `x`" message, if that is what it is.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

#[cfg(test)]
mod tests;
