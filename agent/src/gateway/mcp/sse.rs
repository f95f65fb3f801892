//! Rewriting JSON-RPC messages in a response as it streams: a JSON body is
//! one message; a `text/event-stream` body carries one message per event.
//! Each event is rewritten when it is complete, so a stream is never held
//! back longer than its own events take; an event larger than the limit
//! ends the stream rather than pass through unrewritten.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use serde_json::Value;

use crate::gateway::{
    http::{Body, BoxError},
    trail::Trail,
};

/// Rewrites one message in place; returns whether it changed it.
pub type Rewrite = Box<dyn FnMut(&mut Value) -> bool + Send>;

pub struct SseRewrite {
    inner: Body,
    buf: BytesMut,
    max_event: usize,
    rewrite: Rewrite,
    /// Masking: data that is not JSON is checked too, and an event too
    /// large to check is replaced by an error before the stream ends.
    strict: bool,
    /// Masking: the id such an error answers, and the record it is noted in.
    withheld: Option<(Value, Trail)>,
    /// The stream's start was seen (a byte-order mark there is dropped).
    started: bool,
    done: bool,
}

impl SseRewrite {
    /// `withheld`: masking applies; an event too large to check becomes a
    /// JSON-RPC error answering this id, noted in this record.
    pub fn new(
        inner: Body,
        max_event: usize,
        rewrite: Rewrite,
        withheld: Option<(Value, Trail)>,
    ) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            max_event,
            rewrite,
            strict: withheld.is_some(),
            withheld,
            started: false,
            done: false,
        }
    }
}

/// Where the first event in `buf` ends (after its blank line). Lines end
/// with CRLF, LF or CR alone, as the event-stream format allows; a CR
/// last in `buf` ends a line only if it ends an empty one (an LF after it
/// would be one more, empty, line: nothing).
fn boundary(buf: &[u8]) -> Option<usize> {
    let mut line = 0;
    loop {
        let at = line + memchr::memchr2(b'\r', b'\n', &buf[line..])?;
        let len = match (buf[at], buf.get(at + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) if at != line => return None,
            _ => 1,
        };
        if at == line {
            return Some(at + len);
        }
        line = at + len;
    }
}

/// The lines of an event, split at CRLF, LF and CR.
fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['\r', '\n']) {
        out.push(&rest[..at]);
        let len = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + len..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Rewrite one event: its `data` lines are one JSON message (`strict`:
/// data that is not JSON is given to `rewrite` as a string, and the event
/// is always written anew — LF line ends, only the fields a client reads —
/// so the client reads exactly what was checked).
pub fn rewrite_event(event: &[u8], rewrite: &mut Rewrite, strict: bool) -> Bytes {
    let text = match std::str::from_utf8(event) {
        Ok(t) => t,
        Err(_) if strict => {
            let mut v = Value::String(String::from_utf8_lossy(event).into_owned());
            rewrite(&mut v);
            return event_of(&[], &v);
        }
        Err(_) => return Bytes::copy_from_slice(event),
    };
    let mut data = Vec::new();
    let mut other = Vec::new();
    for line in lines(text) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with(':') {
            other.push(line);
            continue;
        }
        // `name: value` (one space after the colon dropped), or a name
        // alone with an empty value.
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "data" => data.push(value),
            "event" | "id" | "retry" => other.push(line),
            // Fields a client ignores: dropped when the event is rewritten.
            _ if strict => {}
            _ => other.push(line),
        }
    }
    if data.is_empty() {
        return if strict {
            event_of_lines(&other, &[])
        } else {
            Bytes::copy_from_slice(event)
        };
    }
    let joined = data.join("\n");
    let mut v = match serde_json::from_str::<Value>(&joined) {
        Ok(v) => v,
        Err(_) if strict => Value::String(joined),
        Err(_) => return Bytes::copy_from_slice(event),
    };
    if rewrite(&mut v) {
        return event_of(&other, &v);
    }
    if strict {
        return event_of_lines(&other, &data);
    }
    Bytes::copy_from_slice(event)
}

/// An event of `other` lines and `data` lines, LF-terminated.
fn event_of_lines(other: &[&str], data: &[&str]) -> Bytes {
    let mut out = String::new();
    for l in other {
        out.push_str(l);
        out.push('\n');
    }
    for l in data {
        out.push_str("data: ");
        out.push_str(l);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// An event of `other` lines and `v` as its data (a string as its lines).
fn event_of(other: &[&str], v: &Value) -> Bytes {
    let mut out = String::new();
    for l in other {
        out.push_str(l);
        out.push('\n');
    }
    match v {
        Value::String(s) => {
            for l in lines(s) {
                out.push_str("data: ");
                out.push_str(l);
                out.push('\n');
            }
        }
        v => {
            out.push_str("data: ");
            out.push_str(&v.to_string());
            out.push('\n');
        }
    }
    out.push('\n');
    Bytes::from(out)
}

impl HttpBody for SseRewrite {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if !this.started {
                // One byte-order mark at the start is not part of the
                // first line (clients drop it too).
                const BOM: &[u8] = b"\xEF\xBB\xBF";
                if this.buf.starts_with(BOM) {
                    let _ = this.buf.split_to(BOM.len());
                    this.started = true;
                } else if this.done || !BOM.starts_with(&this.buf) {
                    this.started = true;
                }
            }
            if let Some(end) = boundary(&this.buf).filter(|_| this.started) {
                let event = this.buf.split_to(end);
                return Poll::Ready(Some(Ok(Frame::data(rewrite_event(
                    &event,
                    &mut this.rewrite,
                    this.strict,
                )))));
            }
            if this.buf.len() > this.max_event {
                this.done = true;
                this.buf.clear();
                if let Some((id, trail)) = &this.withheld {
                    // Masking: the agent is told with an error message,
                    // and the stream ends (nothing of the event passes).
                    let why = format!(
                        "an event of the stream is larger than {} bytes and cannot be checked for masked fields",
                        this.max_event
                    );
                    tracing::warn!(why, "MCP event stream ended");
                    trail.with(|r| {
                        let note = format!("unmaskable-response: {why}; withheld");
                        r.detail = Some(match r.detail.take() {
                            Some(d) => format!("{d}; {note}"),
                            None => note,
                        });
                    });
                    let v = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
                        "code": super::rpc::UNMASKABLE,
                        "message": format!("palisade: {why}: withheld, stream ended (unmaskable-response)"),
                        "data": {"reason": "unmaskable-response"},
                    }});
                    return Poll::Ready(Some(Ok(Frame::data(event_of(&[], &v)))));
                }
                return Poll::Ready(Some(Err(format!(
                    "an event of the stream is larger than {} bytes and cannot be checked",
                    this.max_event
                )
                .into())));
            }
            if this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = this.buf.split();
                return Poll::Ready(Some(Ok(Frame::data(rewrite_event(
                    &rest,
                    &mut this.rewrite,
                    this.strict,
                )))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => this.buf.extend_from_slice(&d),
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn rewrites_each_event_across_chunks() {
        let parts = [
            "event: message\ndata: {\"id\":1,",
            "\"result\":{\"x\":1}}\n\n: comment\n\ndata: not json\n\ndata: {\"id\":2}\r\n\r\n",
        ];
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from(p.to_string()))))
            .collect();
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed_unsync();
        let rewrite: Rewrite = Box::new(|v: &mut Value| {
            if v["id"] == 1 {
                v["result"]["x"] = json!(2);
                true
            } else {
                false
            }
        });
        let out = SseRewrite::new(body, 1 << 20, rewrite, None)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "event: message\ndata: {\"id\":1,\"result\":{\"x\":2}}\n\n: comment\n\ndata: not json\n\ndata: {\"id\":2}\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn masking_checks_text_data_and_ends_on_an_event_too_large() {
        let path = crate::policy::service::MaskPath::parse("card.number").unwrap();
        let masks = crate::gateway::masking::Masks::new(&[path], false);
        let rewrite: Rewrite = Box::new(move |v: &mut Value| match masks.message(v) {
            Ok(n) => n > 0,
            Err(_) => {
                *v = json!({"withheld": true});
                true
            }
        });
        let text = format!(
            "data: Result: {{\"card\":{{\"number\":\"4242\"}}}}\n\ndata: {{'number': '4242'}}\n\ndata: {}",
            "x".repeat(200)
        );
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Ok(Frame::data(Bytes::from(text)))];
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed_unsync();
        let trail = Trail::default();
        let out = SseRewrite::new(body, 100, rewrite, Some((json!(7), trail.clone())))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert!(!out.contains("4242") && !out.contains("xxx"), "{out}");
        assert!(
            out.starts_with("data: Result: {\"card\":{\"number\":\"[masked]\"}}\n\n"),
            "{out}"
        );
        assert!(out.contains("data: {\"withheld\":true}\n\n"), "{out}");
        assert!(out.contains("\"id\":7") && out.contains("-32002"), "{out}");
        assert!(
            trail
                .with(|r| r.detail.clone())
                .is_some_and(|d| d.contains("unmaskable-response"))
        );
    }

    #[tokio::test]
    async fn masking_reads_every_framing_the_format_allows() {
        let doc = "{\"id\":1,\"result\":{\"card\":{\"number\":\"4242\"}}}";
        for (name, chunks) in [
            ("cr", vec![format!("event: message\rdata: {doc}\r\r")]),
            (
                "crlf",
                vec![format!("event: message\r\ndata: {doc}\r\n\r\n")],
            ),
            ("bom", vec![format!("\u{feff}data: {doc}\n\n")]),
            (
                "bom split",
                vec!["\u{feff}".into(), format!("data: {doc}\n\n")],
            ),
            ("cr split", vec![format!("data: {doc}\r"), "\r".into()]),
            ("no space", vec![format!("data:{doc}\n\n")]),
            (
                "unknown field",
                vec![format!("x-data: {doc}\ndata: {doc}\n\n")],
            ),
        ] {
            let path = crate::policy::service::MaskPath::parse("card.number").unwrap();
            let masks = crate::gateway::masking::Masks::new(&[path], true);
            let rewrite: Rewrite = Box::new(move |v: &mut Value| match masks.message(v) {
                Ok(n) => n > 0,
                Err(_) => {
                    *v = json!({"withheld": true});
                    true
                }
            });
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
                .into_iter()
                .map(|c| Ok(Frame::data(Bytes::from(c))))
                .collect();
            let body = http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed_unsync();
            let out = SseRewrite::new(body, 1 << 20, rewrite, Some((json!(1), Trail::default())))
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let out = String::from_utf8(out.to_vec()).unwrap();
            assert!(!out.contains("4242"), "{name}: {out}");
            assert!(out.contains("[masked]"), "{name}: {out}");
            assert!(
                !out.contains('\r') && !out.contains('\u{feff}'),
                "{name}: {out:?}"
            );
        }
        assert_eq!(boundary(b"data: x\r\rdata: y"), Some(9));
        assert_eq!(boundary(b"data: x\r"), None);
        assert_eq!(boundary(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(lines("a\rb\r\nc\nd"), vec!["a", "b", "c", "d"]);
    }
}
