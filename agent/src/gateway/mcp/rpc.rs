//! JSON-RPC 2.0 as MCP uses it: what a message is, and the error responses
//! the gateway answers with (which MCP clients show to the model and user).

use hyper::{StatusCode, header};
use serde_json::{Value, json};

use crate::gateway::{
    http::{Resp, full},
    reply::Refusal,
};

/// JSON-RPC error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// A call the policy refuses (an implementation-defined server error).
pub const REFUSED: i64 = -32001;
/// A message of the server withheld because it could not be masked.
pub const UNMASKABLE: i64 = -32002;

/// What an incoming message is.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A request or notification (`id` absent for a notification).
    Call {
        id: Option<Value>,
        method: String,
        params: Option<Value>,
    },
    /// The client's answer to a request of the server.
    Response,
}

/// Read one message; `Err` is the JSON-RPC error to answer with.
pub fn parse(body: &[u8]) -> Result<Message, (i64, String)> {
    // A name given twice is refused: the upstream server may read the other one.
    let v = crate::policy::service::strict_json::from_slice(body).map_err(|e| {
        (
            PARSE_ERROR,
            format!("Parse error: the body is not JSON ({e})"),
        )
    })?;
    let Value::Object(mut m) = v else {
        return Err(if v.is_array() {
            (
                INVALID_REQUEST,
                "Invalid Request: batches are not accepted through the gateway; send one message per request".into(),
            )
        } else {
            (
                INVALID_REQUEST,
                "Invalid Request: a message is a JSON object".into(),
            )
        });
    };
    // Names the protocol gives meaning to must be spelled exactly: a
    // reader that matches names ignoring case (Go's `encoding/json`) takes
    // `"Method"` for `method` where the gateway would not.
    exact_spelling(
        &m,
        &["jsonrpc", "id", "method", "params", "result", "error"],
    )?;
    if let Some(Value::Object(p)) = m.get("params") {
        exact_spelling(p, &["name", "arguments", "_meta", "uri", "cursor"])?;
    }
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            INVALID_REQUEST,
            "Invalid Request: `jsonrpc` must be \"2.0\"".into(),
        ));
    }
    match m.remove("method") {
        Some(Value::String(method)) => Ok(Message::Call {
            id: m.remove("id"),
            method,
            params: m.remove("params"),
        }),
        Some(_) => Err((
            INVALID_REQUEST,
            "Invalid Request: `method` must be a string".into(),
        )),
        None if m.contains_key("result") || m.contains_key("error") => Ok(Message::Response),
        None => Err((
            INVALID_REQUEST,
            "Invalid Request: neither a request nor a response".into(),
        )),
    }
}

/// Refuses a name in `obj` that is one of `members` in another letter case.
fn exact_spelling(
    obj: &serde_json::Map<String, Value>,
    members: &[&str],
) -> Result<(), (i64, String)> {
    use crate::policy::service::strict_json::fold;
    for name in obj.keys() {
        let f = fold(name);
        if let Some(m) = members.iter().find(|m| **m == f && **m != name) {
            return Err((
                INVALID_REQUEST,
                format!(
                    "Invalid Request: `{}` is `{m}` spelled another way, which some servers read as `{m}`; spell it `{m}`",
                    name.escape_debug()
                ),
            ));
        }
    }
    Ok(())
}

/// An error response (HTTP 200 for a well-formed request, 400 otherwise).
pub fn error(
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Resp {
    let mut err = json!({"code": code, "message": message});
    if let Some(d) = data {
        err["data"] = d;
    }
    let body = json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err});
    let mut r = hyper::Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The gateway's refusal of a call, as a JSON-RPC error.
pub fn refused(id: Option<&Value>, r: &Refusal) -> Resp {
    let data = serde_json::to_value(r).unwrap_or(Value::Null);
    error(
        StatusCode::OK,
        id,
        REFUSED,
        &format!("palisade: {} ({})", r.message, r.reason),
        Some(data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_garbage() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}"#),
            Ok(Message::Call {
                id: Some(json!(3)),
                method: "tools/call".into(),
                params: Some(json!({"name": "x"})),
            })
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Call {
                id: None,
                method: "notifications/initialized".into(),
                params: None
            })
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Ok(Message::Response)
        );
        for (bad, code) in [
            (&b"\x00\x01garbage"[..], PARSE_ERROR),
            (b"[{\"jsonrpc\":\"2.0\"}]", INVALID_REQUEST),
            (b"{\"id\":1,\"method\":\"x\"}", INVALID_REQUEST),
            (b"{\"jsonrpc\":\"2.0\",\"method\":7}", INVALID_REQUEST),
            (b"{\"jsonrpc\":\"2.0\",\"id\":1}", INVALID_REQUEST),
            (b"42", INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete_all","name":"safe_read"}}"#,
                PARSE_ERROR,
            ),
            (
                br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","\u006dethod":"x"}"#,
                PARSE_ERROR,
            ),
            (
                br#"{"jsonrpc":"2.0","id":5,"Method":"tools/call","result":{}}"#,
                INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"safe_read","Arguments":{"x":1}}}"#,
                INVALID_REQUEST,
            ),
        ] {
            assert_eq!(parse(bad).map_err(|e| e.0), Err(code), "{bad:?}");
        }
    }
}
