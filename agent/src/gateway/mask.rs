//! Responses on their way back: fields the policy masks are replaced
//! before the agent sees them, and the service's secret is scrubbed from
//! headers and bodies (an upstream that echoes the credential must not
//! hand it to the agent). A response that should be masked but cannot be
//! (not JSON, encoded, larger than `gateway.max_mask_bytes`) is refused,
//! never passed on unmasked.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::{
    Method, StatusCode,
    header::{self, HeaderValue},
};
use serde_json::Value;

use super::{
    ServiceRt, Shared,
    bodies::{Collected, Held, Scrub, collect, scrub_all, scrub_headers},
    budget::{ANSWERS_PER_IDENTITY, ANSWERS_TOTAL, Reserved},
    http::{Body, Req, Resp, full},
    masking::Masks,
    reply::Refusal,
    route::Call,
    stack::{Next, call},
    trail::{self, Trail},
};
use crate::policy::service::{MaskPath, MaskSeg, ServiceKind};

/// What a masked value becomes.
pub const MASKED: &str = "[masked]";

/// Mask `segs` in `v`; returns how many values were replaced.
pub fn apply(v: &mut Value, segs: &[MaskSeg]) -> usize {
    let Some((first, rest)) = segs.split_first() else {
        *v = Value::String(MASKED.into());
        return 1;
    };
    match (first, v) {
        (MaskSeg::AnyDepth, v) => {
            // An array's elements are reached below (a key where an array
            // is means every element), so the array itself is not counted.
            let mut n = if v.is_array() { 0 } else { apply(v, rest) };
            match v {
                Value::Object(o) => n += o.values_mut().map(|x| apply(x, segs)).sum::<usize>(),
                Value::Array(a) => n += a.iter_mut().map(|x| apply(x, segs)).sum::<usize>(),
                _ => {}
            }
            n
        }
        (MaskSeg::Any, Value::Object(o)) => o.values_mut().map(|x| apply(x, rest)).sum(),
        (MaskSeg::Any, Value::Array(a)) => a.iter_mut().map(|x| apply(x, rest)).sum(),
        (MaskSeg::Key(k), Value::Object(o)) => o
            .iter_mut()
            .filter(|(name, _)| same_name(name, k))
            .map(|(_, x)| apply(x, rest))
            .sum(),
        // A key where an array is: every element.
        (MaskSeg::Key(_), Value::Array(a)) => a.iter_mut().map(|x| apply(x, segs)).sum(),
        _ => 0,
    }
}

/// Does the member `name` stand for the masked key `key`? Compared as a
/// reader would see them: letter case aside (databases answer `NUMBER`
/// for `number`), without whitespace, control characters and invisible
/// format characters (a zero-width space inside a name is not seen).
pub fn same_name(name: &str, key: &str) -> bool {
    if name == key {
        return true;
    }
    let seen = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && !c.is_control() && !invisible(*c))
            .flat_map(char::to_lowercase)
            .collect()
    };
    seen(name) == seen(key)
}

/// Format characters that render as nothing.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{e0000}'..='\u{e0fff}')
}

fn is_json(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"))
}

/// The first content coding of an answer other than `identity`, in any of
/// its `Content-Encoding` lines (an unreadable value counts as one).
fn coding(h: &hyper::HeaderMap) -> Option<String> {
    h.get_all(header::CONTENT_ENCODING).iter().find_map(|v| {
        let Ok(text) = v.to_str() else {
            return Some(
                String::from_utf8_lossy(v.as_bytes())
                    .escape_debug()
                    .to_string(),
            );
        };
        text.split(',')
            .map(str::trim)
            .find(|t| !t.is_empty() && !t.eq_ignore_ascii_case("identity"))
            .map(|t| t.escape_debug().to_string())
    })
}

/// A `charset` of the answer the scrubber does not read its bytes in
/// (UTF-16, UTF-32…): the secret's bytes would not appear in it as such.
/// Named as the coding it amounts to.
fn foreign_charset(h: &hyper::HeaderMap) -> Option<String> {
    let ct = h.get(header::CONTENT_TYPE)?.to_str().unwrap_or("charset=?");
    let charset = ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    })?;
    let ascii_compatible = [
        "utf-8",
        "utf8",
        "us-ascii",
        "ascii",
        "iso-8859-1",
        "latin1",
        "latin-1",
        "windows-1252",
    ];
    (!ascii_compatible.contains(&charset.as_str())).then(|| format!("charset={charset}"))
}

/// Answers up to this size are scrubbed where they arrive.
const INLINE_SCRUB_BYTES: usize = 64 * 1024;

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(sh: Arc<Shared>, req: Req, next: Next) -> Resp {
    let (Some((conn, trail)), Some(rt)) = (
        trail::parts(&req),
        req.extensions().get::<Arc<ServiceRt>>().cloned(),
    ) else {
        return call(next, req).await;
    };
    // MCP results are masked message by message (`mcp`); here only the
    // secret is scrubbed from them.
    let own = if rt.service.kind == ServiceKind::Mcp {
        &[][..]
    } else {
        &rt.service.mask[..]
    };
    let masks: Vec<MaskPath> = own
        .iter()
        .chain(
            req.extensions()
                .get::<Call>()
                .map(|c| c.masks.iter())
                .into_iter()
                .flatten(),
        )
        .cloned()
        .collect();
    let head = req.method() == Method::HEAD;
    let resp = call(next, req).await;
    let (mut parts, body) = resp.into_parts();
    for secret in &rt.secrets {
        scrub_headers(&mut parts.headers, secret);
    }
    let bodyless = head
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if !masks.is_empty() && !bodyless {
        let identity = conn.caller.identity_name();
        return match masked(&sh, &rt, &trail, identity, &masks, &mut parts, body).await {
            Ok(body) => hyper::Response::from_parts(parts, body),
            Err(r) => trail.refuse(r),
        };
    }
    if rt.secrets.is_empty() {
        return hyper::Response::from_parts(parts, body);
    }
    // The gateway asks for unencoded answers; one encoded anyway would
    // carry an echoed credential past the scrubber.
    if let Some(enc) = coding(&parts.headers).or_else(|| foreign_charset(&parts.headers))
        && !bodyless
    {
        return trail.refuse(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "unscrubbable-response",
            format!(
                "service `{}` answered with an encoded body (`{enc}`), which the credential scrubber cannot read: refused rather than passed on",
                rt.service.id
            ),
        ));
    }
    // Scrubbing changes the length: a body of known, small size is scrubbed
    // whole and gets its new length; anything else streams through the
    // scrubber without a length (chunked).
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let identity = conn.caller.identity_name();
    // An answer the identity's share of held answers has no room for
    // streams instead, paced by the agent's reading.
    let room = declared
        .filter(|&n| n <= sh.settings.max_mask_bytes as u64 && !bodyless)
        .and_then(|n| hold_answer(&sh, identity, usize::try_from(n).ok()?));
    if let Some(reserved) = room {
        let max = sh.settings.max_mask_bytes;
        return match tokio::time::timeout(sh.timeouts.upstream, collect(body, max)).await {
            Ok(Collected::Whole(b)) => {
                // The upstream wrote what it echoed, so the scrubber's cost
                // is the agent's to choose: a large answer is scrubbed
                // where it holds no other connection.
                let costly = b.len() > INLINE_SCRUB_BYTES;
                let scrub = || {
                    rt.secrets.iter().fold(b, |b, secret| {
                        scrub_all(&b, secret).map_or(b, bytes::Bytes::from)
                    })
                };
                let Ok(out) = conn.daemon.run_costly(identity, costly, scrub).await else {
                    return trail.refuse(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "gateway-busy",
                        format!(
                            "identity `{identity}` has too many large answers waiting to be scrubbed"
                        ),
                    ));
                };
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
                hyper::Response::from_parts(parts, Held::new(out, reserved).boxed_unsync())
            }
            _ => trail.refuse(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream-body-failed",
                "the upstream's response body could not be read".to_string(),
            )),
        };
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = rt
        .secrets
        .iter()
        .fold(body, |b, s| Scrub::new(b, s.clone()).boxed_unsync());
    hyper::Response::from_parts(parts, body)
}

#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
async fn masked(
    sh: &Shared,
    rt: &ServiceRt,
    trail: &Trail,
    identity: &str,
    masks: &[MaskPath],
    parts: &mut hyper::http::response::Parts,
    body: Body,
) -> Result<Body, Refusal> {
    let max = sh.settings.max_mask_bytes;
    let refuse = |why: String| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            "unmaskable-response",
            format!(
                "service `{}` masks fields of its responses, and this one {why}: refused rather than passed on unmasked",
                rt.service.id
            ),
        )
    };
    if let Some(enc) = coding(&parts.headers) {
        return Err(refuse(format!("is encoded (`{enc}`)")));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared == Some(0) {
        return Ok(body);
    }
    if !is_json(&parts.headers) {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("without a content type")
            .to_string();
        return Err(refuse(format!("is not JSON ({ct})")));
    }
    if declared.is_some_and(|n| n > max as u64) {
        return Err(refuse(format!("is larger than {max} bytes")));
    }
    let want = declared.map_or(max, |n| usize::try_from(n).unwrap_or(max));
    let Some(reserved) = hold_answer(sh, identity, want) else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway-busy",
            format!(
                "identity `{identity}` holds too many answers it has not read yet (at most {ANSWERS_PER_IDENTITY} of the largest maskable size, {ANSWERS_TOTAL} in all): read them, or retry later"
            ),
        ));
    };
    let bytes = match tokio::time::timeout(sh.timeouts.upstream, collect(body, max)).await {
        Ok(Collected::Whole(b)) => b,
        Ok(Collected::TooLarge) => return Err(refuse(format!("is larger than {max} bytes"))),
        Ok(Collected::Failed(e)) => return Err(refuse(format!("could not be read ({e})"))),
        Err(_) => return Err(refuse("did not arrive in time".into())),
    };
    if bytes.is_empty() {
        return Ok(full(bytes));
    }
    let mut v: Value =
        serde_json::from_slice(&bytes).map_err(|e| refuse(format!("is not valid JSON ({e})")))?;
    // The paths from the document's root; JSON carried in its strings is
    // masked too (at every depth), and a string that names a masked field
    // as a member without being JSON makes the response unmaskable.
    let n = Masks::http(masks, false)
        .message(&mut v)
        .map_err(|e| refuse(e.to_string()))?;
    let mut out = serde_json::to_vec(&v).map_err(|e| refuse(e.to_string()))?;
    for secret in &rt.secrets {
        if let Some(clean) = scrub_all(&out, secret) {
            out = clean;
        }
    }
    if n > 0 {
        trail.with(|r| {
            let note = format!("{n} field(s) masked");
            r.detail = Some(match r.detail.take() {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
        });
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Held::new(out.into(), reserved).boxed_unsync())
}

/// A place for an answer of `bytes` in `identity`'s share of the answers
/// held whole (`budget::ANSWERS_PER_IDENTITY`).
fn hold_answer(sh: &Shared, identity: &str, bytes: usize) -> Option<Reserved> {
    let max = sh.settings.max_mask_bytes;
    sh.answers.reserve(
        identity,
        bytes,
        max.saturating_mul(ANSWERS_PER_IDENTITY),
        max.saturating_mul(ANSWERS_TOTAL),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(v: &mut Value, path: &str) -> usize {
        apply(v, &MaskPath::parse(path).unwrap().segs)
    }

    #[test]
    fn masks_paths_wildcards_and_arrays() {
        let mut v = json!({"card": {"number": "4242", "exp": "12/30"},
            "data": [{"email": "a@x", "n": 1}, {"email": "b@x"}],
            "deep": {"x": {"ssn": "1"}, "y": [{"ssn": "2"}]}, "ssn": "3"});
        assert_eq!(m(&mut v, "card.number"), 1);
        assert_eq!(m(&mut v, "data.email"), 2);
        assert_eq!(m(&mut v, "**.ssn"), 3);
        assert_eq!(m(&mut v, "missing.field"), 0);
        assert_eq!(
            v,
            json!({"card": {"number": MASKED, "exp": "12/30"},
                "data": [{"email": MASKED, "n": 1}, {"email": MASKED}],
                "deep": {"x": {"ssn": MASKED}, "y": [{"ssn": MASKED}]}, "ssn": MASKED})
        );
        let mut v = json!({"a": {"b": 1, "c": 2}});
        assert_eq!(m(&mut v, "a.*"), 2);
    }

    #[test]
    fn names_match_as_a_reader_sees_them() {
        let mut v = json!({"card": {"NUMBER": "1", "Number": "2", "num\u{200b}ber": "3",
            "number ": "4", "number\u{0}": "5", "numbers": "kept", "exp": "12/30"}});
        assert_eq!(m(&mut v, "card.number"), 5);
        assert_eq!(v["card"]["numbers"], "kept");
        assert_eq!(v["card"]["exp"], "12/30");
        assert!(same_name("CARD", "card") && !same_name("cards", "card"));
    }
}
