//! The request's headers, before anything is judged. The upstream must act
//! on exactly what the gateway judged, so:
//!
//! - headers that say how to read the body (`Content-Type`,
//!   `Content-Encoding`, `Content-Length`, `Transfer-Encoding`,
//!   `Content-Range`) must be single and unambiguous, or the request is
//!   refused (400 `ambiguous-header`): two readers of one request could
//!   otherwise pick different ones;
//! - headers known to make an upstream run another method or path than the
//!   request's own (`X-HTTP-Method-Override`, `X-Original-URL`…) are
//!   refused (400 `routing-override`): the route judged is the route run;
//! - a header name of anything but letters, digits and `-` is refused (400
//!   `ambiguous-header`): CGI, WSGI and PHP read `X_HTTP_Method_Override`
//!   and `X.HTTP.Method.Override` as `X-HTTP-Method-Override`, so every
//!   rule about a name would need many spellings;
//! - a `Connection` header may name only hop-by-hop headers (400
//!   `ambiguous-header` otherwise): a header it names is dropped on the way
//!   out, after the gateway judged the request by it (`Content-Type`);
//! - a body on a method whose body servers need not read (`GET`, `HEAD`,
//!   `DELETE`, `OPTIONS`, `TRACE`) is refused (400 `unexpected-body`): a
//!   server that leaves it unread takes it for the next request on the
//!   gateway's own connection, with the service's credential;
//! - `Forwarded`, `X-Forwarded-*`, `X-Real-IP` and the other client-address
//!   headers (`True-Client-IP`, `CF-Connecting-IP`…) from the agent are
//!   dropped: they claim things about the connection the agent cannot
//!   vouch for; so are the user headers of authenticating proxies
//!   (`Remote-User`, `X-Goog-Authenticated-*`…), `Cookie` (read as
//!   parameters by some servers, never judged), and `Range` and `If-Range`
//!   (answers come whole, so the scrubber sees a credential an upstream
//!   echoes in one piece).
//!
//! What is forwarded carries one canonical `Content-Type` (`canonical`).

use std::sync::Arc;

use http_body::Body as _;
use hyper::{
    HeaderMap, Method, StatusCode,
    header::{self, HeaderName, HeaderValue},
};

use super::{
    Shared,
    http::{Req, Resp},
    reply::Refusal,
    stack::{Next, call},
    trail,
};

/// Headers that make common servers and frameworks run another method or
/// path than the request line's.
const ROUTING_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-override-url",
    "x-envoy-original-path",
    "x-envoy-original-method",
];

/// Client-address and host headers that servers, frameworks and CDNs
/// trust as a proxy's statement, besides `Forwarded` and `X-Forwarded-*`.
const CLIENT_ADDRESS: &[&str] = &[
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-host",
    "x-original-host",
];

/// Who the user is, as authenticating proxies tell the servers behind them
/// (oauth2-proxy, Google IAP, AWS ALB, Azure App Service, Envoy, web
/// servers' `REMOTE_USER`); by prefix below the exact names.
const AUTH_PROXY: &[&str] = &[
    "remote-user",
    "x-remote-user",
    "x-webauth-user",
    "x-forwarded-user",
    "x-user",
    "x-email",
    "x-script-name",
    "forwarded-for",
    "x-forwarded",
];
const AUTH_PROXY_PREFIXES: &[&str] = &[
    "x-auth-request-",
    "x-goog-authenticated-",
    "x-amzn-oidc-",
    "x-ms-client-principal",
    "x-envoy-",
    "x-webauth-",
];

/// Connection and user facts only a proxy may state; the agent's are
/// dropped.
fn is_forwarding(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "forwarded"
        || n.starts_with("x-forwarded-")
        || CLIENT_ADDRESS.contains(&n)
        || AUTH_PROXY.contains(&n)
        || AUTH_PROXY_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// A header name of letters, digits and `-`: the one spelling every server
/// reads alike (RFC 9110 allows more, which CGI, WSGI and PHP fold).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Headers the agent may send that are dropped: `Range` and `If-Range`
/// (an answer comes whole, so a credential an upstream echoes cannot come
/// back in pieces the scrubber does not recognise), `Cookie` (PHP's
/// `$_REQUEST` and others read cookies as parameters the gateway never
/// judged; the service's credential is what authenticates), and the
/// connection and user facts only a proxy may state.
fn is_dropped(name: &HeaderName) -> bool {
    name == header::RANGE
        || name == header::IF_RANGE
        || name == header::COOKIE
        || name.as_str() == "cookie2"
        || is_forwarding(name)
}

/// What a request's `Connection` header may name: the connection's own
/// options and the hop-by-hop headers, nothing the request is judged by.
fn names_only_hop_by_hop(token: &str) -> bool {
    token.eq_ignore_ascii_case("close")
        || token.eq_ignore_ascii_case("http2-settings")
        || super::http::HOP_BY_HOP
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h))
}

/// Methods whose body a server need not read (RFC 9110 9.3: no defined
/// meaning), so one left unread is taken for the next request.
fn takes_no_body(m: &Method) -> bool {
    // In any letter case: routes are matched on the upper-cased method,
    // and servers differ in whether `get` is GET.
    ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"]
        .iter()
        .any(|n| m.as_str().eq_ignore_ascii_case(n))
}

pub fn layer(sh: Arc<Shared>, req: Req, next: Next) -> super::stack::BoxFuture {
    Box::pin(run(sh, req, next))
}

async fn run(_: Arc<Shared>, mut req: Req, next: Next) -> Resp {
    let Some((_, trail)) = trail::parts(&req) else {
        return call(next, req).await;
    };
    if let Err(r) = check(req.headers()) {
        return trail.refuse(r);
    }
    // A body hyper knows to be empty (no length, a length of 0, HTTP/2's
    // end of stream with the headers) is what these methods may carry.
    if takes_no_body(req.method()) && !req.body().is_end_stream() {
        return trail.refuse(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unexpected-body",
            format!(
                "a {} request with a body: servers need not read it, and one left unread would be taken for another request; send the body with POST, PUT or PATCH",
                req.method()
            ),
        ));
    }
    let h = req.headers_mut();
    let drop: Vec<HeaderName> = h.keys().filter(|n| is_dropped(n)).cloned().collect();
    for n in drop {
        h.remove(n);
    }
    call(next, req).await
}

/// `400 ambiguous-header` naming header `label`.
fn ambiguous(label: &str, why: String) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "ambiguous-header",
        format!("`{label}`: {why}; the gateway forwards only requests every reader reads alike"),
    )
}

/// The value of a header that must be given at most once, in visible
/// ASCII (surrounding blanks trimmed); refused (`ambiguous-header`)
/// otherwise, since two readers could pick different ones.
#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
pub fn single(
    h: &HeaderMap,
    name: impl header::AsHeaderName,
    label: &str,
) -> Result<Option<String>, Refusal> {
    let all: Vec<&HeaderValue> = h.get_all(name).iter().collect();
    match all[..] {
        [] => Ok(None),
        [v] => v
            .to_str()
            .map(|s| Some(s.trim().to_string()))
            .map_err(|_| ambiguous(label, "the value is not visible ASCII".into())),
        _ => Err(ambiguous(
            label,
            format!("given {} times; send it once", all.len()),
        )),
    }
}

#[expect(
    clippy::result_large_err,
    reason = "a refusal is built once per refused request; boxing it buys nothing"
)]
fn check(h: &HeaderMap) -> Result<(), Refusal> {
    if let Some(name) = h.keys().find(|n| !is_plain_name(n.as_str())) {
        let plain: String = name
            .as_str()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        return Err(ambiguous(
            name.as_str(),
            format!(
                "servers that turn header names into variables (CGI, WSGI, PHP) read a name's `_`, `.` and other marks as one another, so this is `{plain}` to them; send names of letters, digits and `-` only"
            ),
        ));
    }
    for v in h.get_all(header::CONNECTION) {
        let v = v
            .to_str()
            .map_err(|_| ambiguous("Connection", "the value is not visible ASCII".into()))?;
        if let Some(t) = v
            .split(',')
            .map(str::trim)
            .find(|t| !t.is_empty() && !names_only_hop_by_hop(t))
        {
            return Err(ambiguous(
                "Connection",
                format!(
                    "names `{}`, which would be dropped after the gateway judged the request by it; name only hop-by-hop headers (`close`, `keep-alive`, `upgrade`, `te`)",
                    t.escape_debug()
                ),
            ));
        }
    }
    if let Some(ct) = single(h, header::CONTENT_TYPE, "Content-Type")? {
        media_type(&ct).map_err(|why| ambiguous("Content-Type", why))?;
    }
    if let Some(ce) = single(h, header::CONTENT_ENCODING, "Content-Encoding")?
        && !ce.eq_ignore_ascii_case("identity")
    {
        return Err(ambiguous(
            "Content-Encoding",
            format!(
                "`{}`: the gateway judges unencoded bodies only",
                ce.escape_debug()
            ),
        ));
    }
    let cl = single(h, header::CONTENT_LENGTH, "Content-Length")?;
    if let Some(cl) = &cl
        && (cl.is_empty() || !cl.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ambiguous(
            "Content-Length",
            format!("`{}` is not one length", cl.escape_debug()),
        ));
    }
    if let Some(te) = single(h, header::TRANSFER_ENCODING, "Transfer-Encoding")? {
        if !te.eq_ignore_ascii_case("chunked") {
            return Err(ambiguous(
                "Transfer-Encoding",
                format!("`{}`: only `chunked` is accepted", te.escape_debug()),
            ));
        }
        if cl.is_some() {
            return Err(ambiguous(
                "Transfer-Encoding",
                "given together with Content-Length".into(),
            ));
        }
    }
    if h.contains_key(header::CONTENT_RANGE) {
        return Err(ambiguous(
            "Content-Range",
            "a partial body would be applied to another resource state than the one judged".into(),
        ));
    }
    if let Some(name) = ROUTING_OVERRIDES.iter().find(|n| h.contains_key(**n)) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "routing-override",
            format!(
                "header `{name}` asks the upstream for another method or path than the request's own, which is what the gateway judged; send the request you mean instead"
            ),
        ));
    }
    Ok(())
}

/// A media type the gateway reads one way only: `type/subtype`, at most
/// one value, each parameter once, and a charset (if any) of UTF-8.
/// Returns the lower-cased `type/subtype` and whether a charset was named.
fn media_type(v: &str) -> Result<(String, bool), String> {
    if v.contains(',') {
        return Err(format!("`{}` names more than one type", v.escape_debug()));
    }
    let mut parts = v.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => {}
        _ => return Err(format!("`{}` is not a media type", v.escape_debug())),
    }
    let mut seen: Vec<String> = Vec::new();
    let mut charset = false;
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let Some((k, val)) = p.split_once('=') else {
            return Err(format!("parameter `{}` has no value", p.escape_debug()));
        };
        let k = k.trim().to_ascii_lowercase();
        let val = val.trim();
        let val = val
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(val);
        if !token(&k) || val.contains(['"', '\\']) {
            return Err(format!("parameter `{}` is malformed", p.escape_debug()));
        }
        if seen.contains(&k) {
            return Err(format!("parameter `{k}` is given twice"));
        }
        if k == "charset" {
            if !val.eq_ignore_ascii_case("utf-8") {
                return Err(format!(
                    "charset `{}`: the gateway reads bodies as UTF-8 only",
                    val.escape_debug()
                ));
            }
            charset = true;
        }
        seen.push(k);
    }
    Ok((essence, charset))
}

/// Set the one `Content-Type` the forwarded body was judged by: its
/// lower-cased media type, and `charset=utf-8` if a charset was named.
/// Other parameters do not change how JSON or a form is read and are
/// dropped. (`check` has already refused anything ambiguous.)
pub fn canonical(h: &mut HeaderMap) {
    let Some(v) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        h.remove(header::CONTENT_TYPE);
        return;
    };
    match media_type(v) {
        Ok((essence, charset)) => {
            let text = if charset {
                format!("{essence}; charset=utf-8")
            } else {
                essence
            };
            match HeaderValue::from_str(&text) {
                Ok(v) => {
                    h.insert(header::CONTENT_TYPE, v);
                }
                Err(_) => {
                    h.remove(header::CONTENT_TYPE);
                }
            }
        }
        Err(_) => {
            h.remove(header::CONTENT_TYPE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match check(&headers(pairs)) {
            Err(r) => format!("{} {}", r.reason, r.message),
            Ok(()) => panic!("accepted: {pairs:?}"),
        }
    }

    #[test]
    fn ambiguous_body_headers_are_refused() {
        let ct = "content-type";
        for (pairs, names) in [
            (
                vec![
                    (ct, "application/json"),
                    (ct, "application/x-www-form-urlencoded"),
                ],
                "`Content-Type`: given 2 times",
            ),
            (
                vec![(ct, "application/json, application/x-www-form-urlencoded")],
                "more than one type",
            ),
            (
                vec![(ct, "application/json; charset=utf-8; charset=utf-16")],
                "`charset` is given twice",
            ),
            (vec![(ct, "application/json; charset=utf-16")], "UTF-8 only"),
            (vec![(ct, "json")], "not a media type"),
            (vec![("content-encoding", "gzip")], "unencoded bodies only"),
            (
                vec![
                    ("content-encoding", "identity"),
                    ("content-encoding", "gzip"),
                ],
                "given 2 times",
            ),
            (
                vec![("content-length", "5"), ("content-length", "5")],
                "`Content-Length`: given 2 times",
            ),
            (vec![("content-length", "5, 5")], "not one length"),
            (
                vec![("content-length", "5"), ("transfer-encoding", "chunked")],
                "together with Content-Length",
            ),
            (
                vec![("transfer-encoding", "gzip, chunked")],
                "only `chunked`",
            ),
            (vec![("content-range", "bytes 0-4/10")], "Content-Range"),
        ] {
            let r = refused(&pairs);
            assert!(r.starts_with("ambiguous-header"), "{pairs:?}: {r}");
            assert!(r.contains(names), "{pairs:?}: {r}");
        }
    }

    #[test]
    fn second_spellings_and_connection_named_headers_are_refused() {
        for (pairs, names) in [
            (
                vec![("x_http_method_override", "DELETE")],
                "`x-http-method-override`",
            ),
            (vec![("x_forwarded_for", "10.0.0.1")], "`x-forwarded-for`"),
            (
                vec![("x.http.method.override", "DELETE")],
                "`x-http-method-override`",
            ),
            (vec![("mcp.session.id", "s1")], "`mcp-session-id`"),
            (vec![("x-real.ip", "10.0.0.1")], "`x-real-ip`"),
            (vec![("connection", "content-type")], "names `content-type`"),
            (
                vec![("connection", "keep-alive, Authorization")],
                "names `Authorization`",
            ),
        ] {
            let r = refused(&pairs);
            assert!(r.starts_with("ambiguous-header"), "{pairs:?}: {r}");
            assert!(r.contains(names), "{pairs:?}: {r}");
        }
        for ok in [
            vec![("connection", "close")],
            vec![("connection", "keep-alive, Upgrade, TE")],
            vec![("connection", "")],
        ] {
            assert!(check(&headers(&ok)).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn routing_overrides_are_refused() {
        for name in ROUTING_OVERRIDES {
            let r = refused(&[(name, "DELETE")]);
            assert!(r.starts_with("routing-override"), "{r}");
            assert!(r.contains(name), "{r}");
        }
    }

    #[test]
    fn plain_requests_pass_and_get_one_canonical_type() {
        for ok in [
            vec![("content-type", "Application/JSON; Charset=\"UTF-8\"")],
            vec![("content-type", "application/x-www-form-urlencoded")],
            vec![("content-length", "12"), ("accept", "a, b")],
            vec![("transfer-encoding", "chunked")],
            vec![("content-encoding", "identity")],
            vec![],
        ] {
            assert!(check(&headers(&ok)).is_ok(), "{ok:?}");
        }
        let mut h = headers(&[("content-type", "Application/JSON; Charset=\"UTF-8\"; x=1")]);
        canonical(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "application/json; charset=utf-8");
        let mut h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        canonical(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "application/x-www-form-urlencoded");
    }

    #[test]
    fn forwarding_claims_are_recognised() {
        for n in [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-real-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "remote-user",
            "x-goog-authenticated-user-email",
            "x-amzn-oidc-identity",
            "x-envoy-external-address",
        ] {
            assert!(is_forwarding(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!is_forwarding(&header::ACCEPT));
    }
}
