//! Secrets read on the daemon's side: credential headers and the
//! environment of local MCP servers. Errors say where a secret was looked
//! for, never what it is.

use bytes::Bytes;
use hyper::header::HeaderValue;

use super::GatewayError;
use crate::policy::service::{Credential, Secret};

/// The value of a secret.
pub fn read(service: &str, s: &Secret) -> Result<String, GatewayError> {
    let fail = |why: String| GatewayError::Secret {
        service: service.to_string(),
        from: s.to_string(),
        why,
    };
    let value = match s {
        Secret::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| fail(e.to_string()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_string()
        }
        Secret::Env(v) => std::env::var(v).map_err(|e| fail(e.to_string()))?,
        Secret::Value(v) => v.clone(),
    };
    if value.is_empty() {
        return Err(fail("it is empty".into()));
    }
    Ok(value)
}

/// A credential header's value, marked sensitive (never logged by hyper,
/// not compressed into h2 tables).
pub fn header_value(service: &str, c: &Credential) -> Result<(HeaderValue, String), GatewayError> {
    let secret = read(service, &c.secret)?;
    let mut v = HeaderValue::from_str(&format!("{}{secret}", c.prefix)).map_err(|_| {
        GatewayError::Secret {
            service: service.to_string(),
            from: c.secret.to_string(),
            why: "it holds characters a header cannot carry (a newline?)".into(),
        }
    })?;
    v.set_sensitive(true);
    Ok((v, secret))
}

/// A secret in every spelling an upstream may echo it in, the secret
/// itself first: JSON with `/` escaped (`\/`, as PHP writes it) or with
/// `\u00XX` escapes, percent-encoded (redirects, query strings) and as
/// HTML character references; each escape in upper and lower case hex,
/// and applied to every mark (`_` too), to every mark but `-_.~`, and to
/// every mark but `-_.~/`, as encoders differ on which they leave alone.
/// The scrubber matches bytes, so each spelling is a secret of its own.
pub fn spellings(secret: &[u8]) -> Vec<Bytes> {
    let keeps: [&dyn Fn(u8) -> bool; 3] = [
        &|b: u8| b.is_ascii_alphanumeric(),
        &|b: u8| b.is_ascii_alphanumeric() || b"-_.~".contains(&b),
        &|b: u8| b.is_ascii_alphanumeric() || b"-_.~/".contains(&b),
    ];
    let escapes: [&dyn Fn(u8) -> String; 7] = [
        &|b| format!("%{b:02X}"),
        &|b| format!("%{b:02x}"),
        &|b| format!("\\u{b:04x}"),
        &|b| format!("\\u{b:04X}"),
        &|b| format!("&#{b};"),
        &|b| format!("&#x{b:x};"),
        &|b| format!("&#x{b:X};"),
    ];
    let mut out: Vec<Vec<u8>> = vec![
        secret.to_vec(),
        secret
            .iter()
            .flat_map(|&b| if b == b'/' { b"\\/".to_vec() } else { vec![b] })
            .collect(),
    ];
    for keep in keeps {
        for escape in escapes {
            let v: Vec<u8> = secret
                .iter()
                .flat_map(|&b| {
                    if keep(b) {
                        vec![b]
                    } else {
                        escape(b).into_bytes()
                    }
                })
                .collect();
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out.dedup();
    out.into_iter().map(Bytes::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_scrubbed_in_the_spellings_it_is_echoed_in() {
        let all: Vec<String> = spellings(b"sk/a+b")
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        for want in [
            "sk/a+b",
            r"sk\/a+b",
            r"sk\u002fa\u002bb",
            "sk%2Fa%2Bb",
            "sk%2fa%2bb",
            "sk&#47;a&#43;b",
            "sk&#x2f;a&#x2b;b",
            "sk&#x2F;a&#x2B;b",
            "sk/a%2Bb",
        ] {
            assert!(
                all.contains(&want.to_string()),
                "{want} missing from {all:?}"
            );
        }
        assert_eq!(spellings(b"sklive123").len(), 1, "nothing to escape");
        let underscored: Vec<Bytes> = spellings(b"sk_1");
        assert!(
            underscored.contains(&Bytes::from_static(b"sk&#95;1")),
            "{underscored:?}"
        );
    }
}
