//! Secrets read on the daemon's side: credential headers and the
//! environment of local MCP servers. Errors say where a secret was looked
//! for, never what it is.

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
