//! Forged and broken tokens for the attack tests, signed (where a signature
//! is wanted) with the test daemon's own key file.

use std::{path::Path, time::SystemTime};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Wait until tokens forged now are newer than a daemon started just
/// before the call accepts: it refuses every token issued up to two
/// seconds after its start, and a forged token's `iat` (whole seconds, no
/// `iat_ms`) counts from the start of its second.
pub fn wait_past_start_cutoff() {
    let second = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let started = second(SystemTime::now());
    while second(SystemTime::now()) <= started + 2 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Claims of a valid access token for `sub`, from now for 60 s.
pub fn claims(sub: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "iss": "palisade", "aud": "palisade", "sub": sub, "role": "", "roles": [], "scopes": [],
        "iat": now, "nbf": now, "exp": now + 60, "jti": format!("{:032x}", now as u128 * 7919 + u128::from(std::process::id())),
    })
}

/// Sign `claims` with the daemon's key (EdDSA), with header type `typ`.
pub fn sign(key_file: &Path, claims: &Value, typ: &str) -> String {
    let keys = palisade::tokens::KeyFile::read(key_file)
        .and_then(|f| f.key_set(SystemTime::now()))
        .unwrap_or_else(|e| panic!("key file: {e}"));
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(keys.signing_kid.clone());
    h.typ = Some(typ.to_string());
    jsonwebtoken::encode(&h, claims, &keys.signing).unwrap_or_else(|e| panic!("{e}"))
}

/// The same token with one signature bit flipped.
pub fn tamper_signature(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut sig = B64.decode(&parts[2]).unwrap_or_else(|e| panic!("{e}"));
    sig[0] ^= 1;
    parts[2] = B64.encode(sig);
    parts.join(".")
}

/// `alg: none`, no signature.
pub fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        B64.encode(claims.to_string())
    )
}

/// HS256 keyed with the daemon's *public* key (the classic confusion).
pub fn hs256_with_public_key(key_file: &Path, claims: &Value) -> String {
    let file = palisade::tokens::KeyFile::read(key_file).unwrap_or_else(|e| panic!("{e}"));
    let x = file.keys[0].public_x().unwrap_or_else(|e| panic!("{e}"));
    let keys = file
        .key_set(SystemTime::now())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(keys.signing_kid);
    h.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(x.as_bytes()))
        .unwrap_or_else(|e| panic!("{e}"))
}
