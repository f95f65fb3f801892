//! What an MCP server sends back, on its way to the agent: every JSON-RPC
//! message (a JSON body, each event of a stream) is rewritten (tool lists)
//! and, when the service masks fields, masked whole; a message that cannot
//! be masked is replaced by a JSON-RPC error and recorded, never passed on.

use std::sync::Arc;

use hyper::{StatusCode, header};
use serde_json::{Value, json};
use tracing::warn;

use super::{rpc, sse};
use crate::gateway::masking::Masks;
use crate::gateway::{
    ServiceRt, Shared,
    bodies::{Collected, collect},
    http::{Resp, full},
    trail::Trail,
};
use crate::policy::service::MaskText;

/// Add `note` to the record's detail.
fn note(trail: &Trail, note: &str) {
    trail.with(|r| {
        r.detail = Some(match r.detail.take() {
            Some(d) => format!("{d}; {note}"),
            None => note.to_string(),
        });
    });
}

/// The JSON-RPC error that stands in for a message the gateway withholds:
/// an answer keeps its id; a request or notification of the server
/// becomes an error without one.
fn withheld(v: &Value, service: &str, why: &str) -> Value {
    let id = if v.get("method").is_some() {
        Value::Null
    } else {
        v.get("id").cloned().unwrap_or(Value::Null)
    };
    json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": rpc::UNMASKABLE,
        "message": format!("palisade: service `{service}` masks fields of its answers, and this message {why}: withheld rather than passed on unmasked (unmaskable-response)"),
        "data": {"reason": "unmaskable-response"},
    }})
}

/// Mask one message, or replace it; whether it changed.
fn mask_one(masks: &Masks, v: &mut Value, trail: &Trail, service: &str) -> bool {
    match masks.message(v) {
        Ok(0) => false,
        Ok(n) => {
            note(trail, &format!("{n} field(s) masked"));
            true
        }
        Err(e) => {
            warn!(service, why = %e, "MCP message withheld: it cannot be masked");
            note(
                trail,
                &format!("unmaskable-response: a message {e}; withheld"),
            );
            *v = withheld(v, service, &e.to_string());
            true
        }
    }
}

/// Rewrite the JSON-RPC message(s) of a response: an event stream as it
/// streams, any other body whole (up to `gateway.max_mask_bytes`).
pub async fn rewrite(
    sh: &Shared,
    trail: &Trail,
    rt: &ServiceRt,
    id: Option<&Value>,
    resp: Resp,
    rw: Option<sse::Rewrite>,
) -> Resp {
    let masks = Arc::new(Masks::new(
        &rt.service.mask,
        rt.service.mask_text == MaskText::Withhold,
    ));
    if masks.is_empty() && rw.is_none() {
        return resp;
    }
    let service = rt.service.id.clone();
    let refuse = |why: String| {
        note(trail, &format!("unmaskable-response: the answer {why}"));
        rpc::error(
            StatusCode::OK,
            id,
            rpc::UNMASKABLE,
            &format!(
                "palisade: service `{service}` masks fields of its answers, and this answer {why}: withheld rather than passed on unmasked (unmaskable-response)"
            ),
            None,
        )
    };
    let (mut parts, body) = resp.into_parts();
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !masks.is_empty()
        && parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity")
    {
        return refuse("is encoded".into());
    }
    let t = trail.clone();
    let m = masks.clone();
    let svc = service.clone();
    let mut rw = rw;
    let mut each: sse::Rewrite = Box::new(move |v: &mut Value| {
        let a = rw.as_mut().is_some_and(|f| v.is_object() && f(v));
        let b = !m.is_empty() && mask_one(&m, v, &t, &svc);
        a || b
    });
    let max = sh.settings.max_mask_bytes;
    if ct.starts_with("text/event-stream") {
        parts.headers.remove(header::CONTENT_LENGTH);
        let withheld =
            (!masks.is_empty()).then(|| (id.cloned().unwrap_or(Value::Null), trail.clone()));
        let body = sse::SseRewrite::new(body, max, each, withheld);
        return hyper::Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(body));
    }
    if masks.is_empty() && !ct.starts_with("application/json") {
        return hyper::Response::from_parts(parts, body);
    }
    let b = match tokio::time::timeout(sh.timeouts.upstream, collect(body, max)).await {
        Ok(Collected::Whole(b)) => b,
        Ok(Collected::TooLarge) => return refuse(format!("is larger than {max} bytes")),
        _ => return refuse("could not be read".into()),
    };
    let out = match serde_json::from_slice::<Value>(&b) {
        Ok(mut v) => each(&mut v).then(|| bytes::Bytes::from(v.to_string())),
        // Not JSON: passed as it is, unless it holds masked fields (then
        // the JSON in it is masked, or it is withheld).
        Err(_) if masks.is_empty() || b.is_empty() => None,
        Err(_) => match std::str::from_utf8(&b) {
            Ok(text) => {
                let mut v = Value::String(text.to_string());
                each(&mut v).then(|| match v {
                    Value::String(s) => bytes::Bytes::from(s),
                    other => bytes::Bytes::from(other.to_string()),
                })
            }
            Err(_) => return refuse("is not text".into()),
        },
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    hyper::Response::from_parts(parts, full(out.unwrap_or(b)))
}
