//! The hash chain that makes the audit trail tamper-evident.
//!
//! Every record carries `seq` (1, 2, 3… across files and restarts),
//! `prev_hash` (the `hash` of the record before it; 64 zeros for the first)
//! and `hash`, the SHA-256 of the record's own JSON text *without* the hash
//! field. The sealed line is that JSON with `,"hash":"<hex>"}` in place of
//! its closing brace, so checking a line needs no JSON canonicalisation: cut
//! the suffix, put the brace back, hash the exact bytes.
//!
//! Editing a record breaks its hash; recomputing that hash breaks the next
//! record's `prev_hash`; deleting or moving records breaks the `seq`
//! sequence. `verify` (in `verify.rs`) reports each with file and line.

use sha2::{Digest, Sha256};

use super::AuditEvent;

/// `prev_hash` of the first record of a trail.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &str = ",\"hash\":\"";

/// The last sealed record: what the next one links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    /// Before the first record.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::lower(&Sha256::digest(bytes))
}

/// Give `event` the next place in the chain after `head` and return its
/// sealed JSON line (no newline). `head` is not advanced: the caller does
/// that once the line is safely written.
pub fn seal(
    event: &mut AuditEvent,
    head: &ChainHead,
) -> Result<(String, ChainHead), serde_json::Error> {
    event.seq = Some(head.seq + 1);
    event.prev_hash = Some(head.hash.clone());
    event.hash = None;
    let body = serde_json::to_string(event)?;
    let hash = sha256_hex(body.as_bytes());
    // `body` is a JSON object: it ends with `}`.
    let open = &body[..body.len() - 1];
    let line = format!("{open}{HASH_KEY}{hash}\"}}");
    event.hash = Some(hash.clone());
    Ok((
        line,
        ChainHead {
            seq: head.seq + 1,
            hash,
        },
    ))
}

/// A sealed line taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsealed {
    pub seq: u64,
    pub prev_hash: String,
    /// The hash the line claims.
    pub hash: String,
    /// Whether the claim matches the line's content.
    pub intact: bool,
    /// For a retention record: the last deleted record (`seq`, `hash`).
    pub retention: Option<(u64, String)>,
}

/// Why a line is not a sealed record at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsealError {
    #[error("not a sealed audit record: it does not end with a `hash` field")]
    NoHash,
    #[error("not a sealed audit record: the text before `hash` is not a JSON object ({0})")]
    BadJson(String),
    #[error("sealed record without a numeric `seq` or a 64-digit `prev_hash`")]
    NoLink,
}

/// Split a line into its claims and check its own hash.
pub fn unseal(line: &str) -> Result<Unsealed, UnsealError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let head = line.strip_suffix("\"}").ok_or(UnsealError::NoHash)?;
    let at = head.rfind(HASH_KEY).ok_or(UnsealError::NoHash)?;
    let hash = &head[at + HASH_KEY.len()..];
    if !is_hex64(hash) {
        return Err(UnsealError::NoHash);
    }
    let body = format!("{}}}", &head[..at]);
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| UnsealError::BadJson(e.to_string()))?;
    let seq = value.get("seq").and_then(serde_json::Value::as_u64);
    let prev = value
        .get("prev_hash")
        .and_then(serde_json::Value::as_str)
        .filter(|h| is_hex64(h));
    let (Some(seq), Some(prev)) = (seq, prev) else {
        return Err(UnsealError::NoLink);
    };
    let retention = (value.get("kind").and_then(serde_json::Value::as_str) == Some("retention"))
        .then(|| value.get("retention"))
        .flatten()
        .and_then(|r| {
            let seq = r.get("through_seq")?.as_u64()?;
            let hash = r.get("through_hash")?.as_str()?;
            Some((seq, hash.to_string()))
        });
    Ok(Unsealed {
        seq,
        prev_hash: prev.to_string(),
        hash: hash.to_string(),
        intact: sha256_hex(body.as_bytes()) == hash,
        retention,
    })
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;

    #[test]
    fn sealed_lines_are_the_events_own_json_and_check_out() {
        let mut ev = AuditEvent::new(EventKind::Network, "deny", "default-deny");
        ev.identity = Some("a".into());
        let (line, head) = seal(&mut ev, &ChainHead::genesis()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.seq, 1);
        // The sealed line is exactly what serde writes for the sealed event.
        assert_eq!(line, serde_json::to_string(&ev).unwrap_or_default());
        let u = unseal(&line).unwrap_or_else(|e| panic!("{e}"));
        assert!(u.intact);
        assert_eq!((u.seq, u.prev_hash.as_str()), (1, GENESIS));
        assert_eq!(u.hash, head.hash);

        let edited = line.replace("\"deny\"", "\"allow\"");
        assert!(!unseal(&edited).unwrap_or_else(|e| panic!("{e}")).intact);
        assert_eq!(unseal("{\"a\":1}"), Err(UnsealError::NoHash));
        assert!(matches!(
            unseal(&format!("{{\"a\":1,\"hash\":\"{GENESIS}\"}}")),
            Err(UnsealError::NoLink)
        ));
    }
}
