//! Token issue and verification, including the usual attacks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

fn settings(dir: &Path) -> TokenSettings {
    TokenSettings {
        key_file: dir.join("keys.yaml"),
        issuer: "palisade://test".into(),
        audience: "palisade".into(),
        ttl: Duration::from_secs(900),
        max_ttl: Duration::from_secs(3600),
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-tok-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn claims(sub: &str) -> AccessClaims {
    AccessClaims {
        iss: String::new(),
        aud: String::new(),
        sub: sub.into(),
        org: Some("acme".into()),
        tenant: None,
        role: "operator".into(),
        roles: vec!["operator".into()],
        scopes: vec!["stripe.create_payment".into()],
        iat: 0,
        iat_ms: None,
        nbf: 0,
        exp: 0,
        jti: String::new(),
    }
}

/// Re-sign `claims` with the test key but a custom header / times.
fn forge(t: &Tokens, typ: Option<&str>, mutate: impl FnOnce(&mut AccessClaims)) -> String {
    let mut c = claims("a");
    let now = unix(SystemTime::now());
    c.iss = t.settings.issuer.clone();
    c.aud = t.settings.audience.clone();
    // Issued after the service started, as the service itself would stamp it.
    c.iat = now.max(t.replay_since / 1000 + 1);
    c.nbf = now;
    c.exp = now + 60;
    c.jti = random_id();
    mutate(&mut c);
    let keys = t.keys.load();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(keys.signing_kid.clone());
    h.typ = typ.map(str::to_string);
    jsonwebtoken::encode(&h, &c, &keys.signing).unwrap()
}

#[test]
fn issues_verifies_once_and_binds_the_identity() {
    let dir = scratch("basic");
    let t = Tokens::load(settings(&dir)).unwrap();
    let (token, c) = t.issue_access(claims("finance-agent"), None).unwrap();
    assert_eq!(c.exp - c.iat, 900);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(
        t.verify_access(&token, "clinical-agent"),
        Err(TokenError::WrongIdentity {
            token: "finance-agent".into(),
            caller: "clinical-agent".into()
        })
    );
    // A mismatch does not burn the token for its owner.
    let ok = t.verify_access(&token, "finance-agent").unwrap();
    assert_eq!(ok.sub, "finance-agent");
    assert!(matches!(
        t.verify_access(&token, "finance-agent"),
        Err(TokenError::Replayed(_))
    ));
    // The key file is private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("keys.yaml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn rejects_forged_and_out_of_date_tokens() {
    let dir = scratch("attacks");
    let t = Tokens::load(settings(&dir)).unwrap();
    let now = unix(SystemTime::now());
    let good = forge(&t, Some("at+jwt"), |_| {});
    // Tampered signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut sig = B64.decode(&parts[2]).unwrap();
    sig[0] ^= 1;
    parts[2] = B64.encode(sig);
    assert_eq!(
        t.verify_access(&parts.join("."), "a"),
        Err(TokenError::Signature)
    );
    // Tampered payload.
    let mut payload: serde_json::Value =
        serde_json::from_slice(&B64.decode(good.split('.').nth(1).unwrap()).unwrap()).unwrap();
    payload["sub"] = "b".into();
    let forged = format!(
        "{}.{}.{}",
        good.split('.').next().unwrap(),
        B64.encode(payload.to_string()),
        good.split('.').nth(2).unwrap()
    );
    assert_eq!(t.verify_access(&forged, "b"), Err(TokenError::Signature));
    // alg: none.
    let none_header = B64.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let none = format!("{none_header}.{}.", good.split('.').nth(1).unwrap());
    assert!(t.verify_access(&none, "a").is_err());
    // HS256 with the public key as the secret.
    let x = t.keys.load().verifying.values().next().unwrap().x.clone();
    let mut h = Header::new(Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(t.signing_kid());
    let hs = jsonwebtoken::encode(&h, &payload, &EncodingKey::from_secret(x.as_bytes())).unwrap();
    assert!(matches!(
        t.verify_access(&hs, "a"),
        Err(TokenError::Algorithm(_))
    ));
    // Wrong type, wrong key id.
    assert!(matches!(
        t.verify_access(&forge(&t, None, |_| {}), "a"),
        Err(TokenError::Type { .. })
    ));
    assert!(matches!(
        t.verify_access(&forge(&t, Some("approval+jwt"), |_| {}), "a"),
        Err(TokenError::Type { .. })
    ));
    // Times, beyond the 5 s leeway.
    assert_eq!(
        t.verify_access(&forge(&t, Some("at+jwt"), |c| c.exp = now - 10), "a"),
        Err(TokenError::Expired)
    );
    assert_eq!(
        t.verify_access(&forge(&t, Some("at+jwt"), |c| c.nbf = now + 30), "a"),
        Err(TokenError::NotYetValid)
    );
    assert!(
        t.verify_access(&forge(&t, Some("at+jwt"), |c| c.exp = now - 2), "a")
            .is_ok(),
        "within leeway"
    );
    // Audience and issuer.
    assert_eq!(
        t.verify_access(&forge(&t, Some("at+jwt"), |c| c.aud = "other".into()), "a"),
        Err(TokenError::Audience)
    );
    assert_eq!(
        t.verify_access(&forge(&t, Some("at+jwt"), |c| c.iss = "evil".into()), "a"),
        Err(TokenError::Issuer)
    );
}

#[test]
fn rotation_keeps_old_tokens_valid_until_their_grace_ends() {
    let dir = scratch("rotate");
    let s = settings(&dir);
    let t = Tokens::load(s.clone()).unwrap();
    let (old, _) = t.issue_access(claims("a"), None).unwrap();
    let old_kid = t.signing_kid();
    let mut file = KeyFile::read(&s.key_file).unwrap();
    let new_kid = file
        .rotate(SystemTime::now(), Duration::from_secs(3600))
        .unwrap();
    file.write(&s.key_file).unwrap();
    t.reload_keys().unwrap();
    assert_eq!(t.signing_kid(), new_kid);
    assert_ne!(old_kid, new_kid);
    assert!(
        t.verify_access(&old, "a").is_ok(),
        "a token of the retired key still verifies"
    );
    let jwks = KeyFile::read(&s.key_file)
        .unwrap()
        .jwks(SystemTime::now())
        .unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    // After the grace period the old key is gone.
    let later = KeyFile::read(&s.key_file)
        .unwrap()
        .key_set(SystemTime::now() + Duration::from_secs(7200))
        .unwrap();
    assert!(!later.verifying.contains_key(&old_kid));
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let dir = scratch("perms");
    let s = settings(&dir);
    Tokens::load(s.clone()).unwrap();
    std::fs::set_permissions(
        &s.key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let err = KeyFile::read(&s.key_file).unwrap_err();
    assert!(err.to_string().contains("readable by others"), "{err}");
}

#[test]
fn a_revocation_covers_tokens_issued_ahead_of_the_clock() {
    let dir = scratch("ahead");
    let t = Tokens::load(settings(&dir)).unwrap();
    let (token, c) = t.issue_access(claims("finance-agent"), None).unwrap();
    let issued = c.iat_ms.unwrap_or_default();
    assert!(issued > t.replay_since, "{issued} vs {}", t.replay_since);
    assert_eq!(issued / 1000, c.iat);
    t.revoke_issued("finance-agent").unwrap();
    assert_eq!(
        t.verify_access(&token, "finance-agent"),
        Err(TokenError::IssuedBeforeRevocation("finance-agent".into()))
    );
    // A token issued after the revocation verifies.
    let (fresh, _) = t.issue_access(claims("finance-agent"), None).unwrap();
    assert!(t.verify_access(&fresh, "finance-agent").is_ok());
}

#[test]
fn tokens_of_an_earlier_run_are_refused() {
    let dir = scratch("restart");
    let first = Tokens::load(settings(&dir)).unwrap();
    let (token, _) = first.issue_access(claims("finance-agent"), None).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let second = Tokens::load(settings(&dir)).unwrap();
    assert_eq!(
        second.verify_access(&token, "finance-agent"),
        Err(TokenError::IssuedBeforeRestart)
    );
}

#[test]
fn token_ids_are_128_random_bits_in_lowercase_hex() {
    let a = random_id();
    let b = random_id();
    assert_eq!(a.len(), 32, "{a}");
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "{a}"
    );
    assert_ne!(a, b);
}

/// The same token with its claims replaced, header and signature kept.
fn swap_claims(token: &str, claims: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    )
}

#[test]
fn the_verified_cache_is_keyed_on_the_whole_token_and_checks_the_rest() {
    let dir = scratch("cache");
    let t = Tokens::load(settings(&dir)).unwrap();
    let (token, _) = t.issue_access(claims("a"), None).unwrap();
    // Verified (and remembered), but shown by the wrong identity.
    assert!(matches!(
        t.verify_access(&token, "b"),
        Err(TokenError::WrongIdentity { .. })
    ));
    assert_eq!(t.verified_cached(), 1);
    // From the cache: still bound to its identity, still single use.
    assert!(t.verify_access(&token, "a").is_ok());
    assert!(matches!(
        t.verify_access(&token, "a"),
        Err(TokenError::Replayed(_))
    ));
    // ...and still subject to revocation.
    let (held, _) = t.issue_access(claims("a"), None).unwrap();
    assert!(t.verify_access(&held, "b").is_err());
    t.revoke_issued("a").expect("revoking a");
    assert!(matches!(
        t.verify_access(&held, "a"),
        Err(TokenError::IssuedBeforeRevocation(_))
    ));

    // Another token under a cached token's signature is checked in full.
    let op = operator_token(
        &dir.join("keys.yaml"),
        "palisade://test",
        "palisade",
        "oncall",
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(t.verify_operator(&op).unwrap().sub, "oncall");
    assert_eq!(t.verify_operator(&op).unwrap().sub, "oncall", "cached");
    let payload = op.split('.').nth(1).unwrap();
    let mut c: serde_json::Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    c["sub"] = "someone-else".into();
    assert_eq!(
        t.verify_operator(&swap_claims(&op, &c)),
        Err(TokenError::Signature)
    );
    // Verified as an operator token is not verified as an access token.
    assert!(matches!(
        t.verify_access(&op, "a"),
        Err(TokenError::Type { .. })
    ));

    // A cached token expires on time.
    let brief = forge(&t, Some("at+jwt"), |c| c.exp = c.nbf - LEEWAY_SECS);
    assert!(matches!(
        t.verify_access(&brief, "b"),
        Err(TokenError::WrongIdentity { .. })
    ));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(t.verify_access(&brief, "a"), Err(TokenError::Expired));

    // New keys empty the cache: a retired key vouches for nothing cached.
    t.reload_keys().unwrap();
    assert_eq!(t.verified_cached(), 0);
}

#[test]
fn tokens_of_a_daemon_killed_within_its_first_seconds_are_refused_after_its_state_is_lost() {
    let dir = scratch("lost-fast");
    // The first daemon: its past unknown, its cutoff ahead of the clock
    // (as `state::open` sets it), so it stamps its first tokens ahead too.
    let now = now_ms();
    let first = Tokens::load_with(
        settings(&dir),
        Some(Durable {
            log: Log::default(),
            replay_since: now + 2000,
            used: HashMap::new(),
            revoked: HashMap::new(),
            quota: 100,
        }),
    )
    .unwrap();
    let (token, c) = first.issue_access(claims("a"), None).unwrap();
    assert!(first.verify_access(&token, "a").is_ok());
    // Killed at once; its state lost; the next daemon starts the same
    // second, a millisecond later.
    let second = Tokens::load_with(
        settings(&dir),
        Some(Durable {
            log: Log::default(),
            replay_since: now + 1 + 2000,
            used: HashMap::new(),
            revoked: HashMap::new(),
            quota: 100,
        }),
    )
    .unwrap();
    let (unused, _) = first.issue_access(claims("a"), None).unwrap();
    assert_eq!(
        second.verify_access(&unused, "a"),
        Err(TokenError::IssuedBeforeRestart),
        "issued at {:?}",
        c.iat_ms
    );
    let (fresh, _) = second.issue_access(claims("a"), None).unwrap();
    assert!(second.verify_access(&fresh, "a").is_ok());
}

#[test]
fn tokens_without_ms_are_placed_at_the_start_of_their_second() {
    assert_eq!(issued_ms(7, None), 7000);
    assert_eq!(issued_ms(7, Some(7999)), 7999);
    // An `iat_ms` that disagrees with `iat` is not believed.
    assert_eq!(issued_ms(7, Some(9000)), 7000);
}
