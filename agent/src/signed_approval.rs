//! Signed approvals: a fleet cannot SSH into every node to approve. A
//! person or a central service holding an approver's Ed25519 key signs
//! `{approval id, digest, verdict, approver, expiry}`; the node that holds
//! the approval verifies the signature with the public key its policy
//! lists for that approver, checks that the digest names exactly the
//! pending call, and resolves it.
//!
//! The signed form is a compact JWS (RFC 7515) with `alg: EdDSA`,
//! `typ: palisade-approval+jws` and `kid` = the approver, so any JOSE
//! library can produce one; `palisade keys sign-approval` does too.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use crate::{decision::approvals::Approval, policy::Approver};

pub const TYP: &str = "palisade-approval+jws";
/// Leeway for clocks that disagree a little.
const LEEWAY_SECS: u64 = 5;

/// What an approver signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedClaims {
    /// The approval id (`apr-…`).
    pub approval: String,
    /// `digest` of the approval as the node shows it (`palisade approvals
    /// --json`, notifications): binds the signature to exactly that call.
    pub digest: String,
    /// `approve` or `reject`.
    pub verdict: String,
    /// The approver's id in the policy (also the JWS `kid`).
    pub approver: String,
    /// Unix seconds after which the signed approval is refused.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    #[error("not a signed approval (a compact JWS: HEADER.PAYLOAD.SIGNATURE)")]
    Malformed,
    #[error("signed approval header: {0}")]
    Header(String),
    #[error("`{0}` is not an approver in the active policy")]
    UnknownApprover(String),
    #[error("the signature does not verify with approver `{0}`'s public key")]
    BadSignature(String),
    #[error("signed approval payload: {0}")]
    Payload(String),
    #[error("the header names approver `{kid}` but the payload `{approver}`")]
    ApproverMismatch { kid: String, approver: String },
    #[error("the signed approval expired")]
    Expired,
    #[error("verdict `{0}`: sign `approve` or `reject`")]
    Verdict(String),
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// The digest an approval is signed by: SHA-256 of what it is bound to —
/// its id, the identity, the call (tool, action, resource, parameters
/// digest) or the egress asked for, and the policy version.
pub fn binding_digest(a: &Approval) -> String {
    let egress = a.egress.as_ref().map(|e| {
        let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
        format!(
            "{} {} {} {}s",
            e.destination,
            e.protocol.name(),
            ports.join(","),
            e.ttl.as_secs()
        )
    });
    let text = serde_json::json!({
        "id": a.id,
        "identity": a.identity,
        "tool": a.tool,
        "action": a.action,
        "resource": a.resource,
        "params_digest": a.params_digest,
        "policy_version": a.policy_version,
        "egress": egress,
    })
    .to_string();
    crate::audit::chain::sha256_hex(text.as_bytes())
}

/// Verify `jws` against the approvers of the active policy, at `now`.
pub fn verify(jws: &str, approvers: &[Approver], now: u64) -> Result<SignedClaims, SignedError> {
    let jws = jws.trim();
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignedError::Malformed);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| SignedError::Header("not base64url JSON".into()))?;
    if header.alg != "EdDSA" {
        return Err(SignedError::Header(format!(
            "alg `{}`: only EdDSA is accepted",
            header.alg
        )));
    }
    if header.typ != TYP {
        return Err(SignedError::Header(format!(
            "typ `{}`: expected `{TYP}`",
            header.typ
        )));
    }
    let approver = approvers
        .iter()
        .find(|a| a.id == header.kid)
        .ok_or_else(|| SignedError::UnknownApprover(header.kid.clone()))?;
    let signature = B64.decode(s).map_err(|_| SignedError::Malformed)?;
    let signed = &jws[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(&ED25519, approver.public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| SignedError::BadSignature(approver.id.clone()))?;
    let claims: SignedClaims = B64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            SignedError::Payload(
                "not base64url JSON with approval, digest, verdict, approver, exp".into(),
            )
        })?;
    if claims.approver != header.kid {
        return Err(SignedError::ApproverMismatch {
            kid: header.kid,
            approver: claims.approver,
        });
    }
    if claims.exp + LEEWAY_SECS <= now {
        return Err(SignedError::Expired);
    }
    if claims.verdict != "approve" && claims.verdict != "reject" {
        return Err(SignedError::Verdict(claims.verdict));
    }
    Ok(claims)
}

/// A new approver key: the PKCS#8 document to keep secret, and the public
/// key (base64url) to list in the policy.
pub fn generate() -> Result<(Vec<u8>, String), String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| e.to_string())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
    Ok((
        pkcs8.as_ref().to_vec(),
        B64.encode(pair.public_key().as_ref()),
    ))
}

/// Sign `claims` with the approver key in `pkcs8`.
pub fn sign(pkcs8: &[u8], claims: &SignedClaims) -> Result<String, String> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("approver key: {e}"))?;
    let header = Header {
        alg: "EdDSA".into(),
        typ: TYP.into(),
        kid: claims.approver.clone(),
    };
    let h = B64.encode(serde_json::to_vec(&header).map_err(|e| e.to_string())?);
    let p = B64.encode(serde_json::to_vec(claims).map_err(|e| e.to_string())?);
    let signing_input = format!("{h}.{p}");
    let sig = pair.sign(signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
}

/// The public key (base64url) of an approver key, as the policy lists it.
pub fn public_key(pkcs8: &[u8]) -> Result<String, String> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("approver key: {e}"))?;
    Ok(B64.encode(pair.public_key().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SourceLoc;

    fn approver(id: &str) -> (Vec<u8>, Approver) {
        let (pkcs8, public) = generate().unwrap_or_else(|e| panic!("{e}"));
        let key: [u8; 32] = B64
            .decode(public)
            .ok()
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| panic!("32 bytes"));
        (
            pkcs8,
            Approver {
                id: id.into(),
                public_key: key,
                loc: SourceLoc::new(std::path::Path::new("p.yaml"), 1, 1),
            },
        )
    }

    fn claims(approver: &str) -> SignedClaims {
        SignedClaims {
            approval: "apr-1".into(),
            digest: "d".repeat(64),
            verdict: "approve".into(),
            approver: approver.into(),
            exp: 2_000,
            reason: "ticket 9".into(),
        }
    }

    #[test]
    fn signed_by_a_listed_approver_verifies_and_nothing_else_does() {
        let (alice_key, alice) = approver("alice");
        let (mallory_key, _) = approver("mallory");
        let (_, bob) = approver("bob");
        let listed = [alice.clone(), bob];
        let jws = sign(&alice_key, &claims("alice")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verify(&jws, &listed, 1_000), Ok(claims("alice")));
        assert_eq!(verify(&jws, &listed, 3_000), Err(SignedError::Expired));
        // Signed with another key under alice's name.
        let forged = sign(&mallory_key, &claims("alice")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            verify(&forged, &listed, 1_000),
            Err(SignedError::BadSignature("alice".into()))
        );
        // A payload changed after signing.
        let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
        let mut c = claims("alice");
        c.verdict = "reject".into();
        parts[1] = B64.encode(serde_json::to_vec(&c).unwrap_or_default());
        assert_eq!(
            verify(&parts.join("."), &listed, 1_000),
            Err(SignedError::BadSignature("alice".into()))
        );
        // An approver the policy does not list.
        let stranger = sign(&mallory_key, &claims("mallory")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            verify(&stranger, &listed, 1_000),
            Err(SignedError::UnknownApprover("mallory".into()))
        );
        assert_eq!(verify("nope", &listed, 1_000), Err(SignedError::Malformed));
        // alg none and friends are refused before any key is looked at.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","typ":"palisade-approval+jws","kid":"alice"}"#),
            parts[1]
        );
        assert!(matches!(
            verify(&none, &listed, 1_000),
            Err(SignedError::Header(_))
        ));
        assert_eq!(public_key(&alice_key), Ok(B64.encode(alice.public_key)));
    }

    #[test]
    fn the_policy_lists_approvers_with_checked_keys() {
        let (_, public) = generate().unwrap_or_else(|e| panic!("{e}"));
        let ok = format!("version: 1\napprovers:\n  - {{id: alice, public_key: \"{public}\"}}\n");
        let p = crate::policy::load_str("p.yaml", &ok)
            .unwrap_or_else(|e| panic!("{}", e.diagnostics[0]));
        assert_eq!(p.policy.approvers.len(), 1);
        let bad = format!(
            "version: 1\napprovers:\n  - {{id: alice, public_key: nope}}\n  - {{id: bob, public_key: \"{public}\"}}\n  - {{id: bob, public_key: \"{public}\"}}\n"
        );
        let err = crate::policy::load_str("p.yaml", &bad)
            .map(|_| ())
            .unwrap_err()
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            err.contains(
                "p.yaml:3:29: approver `alice`: public_key is not a base64 Ed25519 public key"
            ),
            "{err}"
        );
        assert!(
            err.contains("approver `bob` is already defined at p.yaml:4"),
            "{err}"
        );
    }
}
