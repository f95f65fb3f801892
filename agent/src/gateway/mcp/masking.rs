//! Masking what an MCP server sends, fail-closed. Servers put the same
//! data in many shapes (structured content, JSON text, embedded resources,
//! `_meta`, `error.data`, log notifications, text with JSON after a
//! prefix, JSON Lines, base64 blobs), so every JSON-RPC message is masked
//! whole:
//!
//! - each `mask:` path applies at every depth of the message (`card.number`
//!   masks a `number` inside any `card`);
//! - every string that names a masked field is searched for JSON (the whole
//!   string, or each JSON value inside it), which is masked the same way
//!   and written back; a resource's `blob` is decoded first;
//! - a string that still names a masked field as a JSON member outside any
//!   JSON the gateway could parse makes the message unmaskable: the caller
//!   withholds it.
//!
//! A message with nothing masked is left as it was (passed byte for byte).

use base64::Engine;
use serde_json::Value;

use crate::gateway::mask;
use crate::policy::service::{MaskPath, MaskSeg};

/// How deep JSON inside strings inside JSON is followed.
const MAX_NESTING: usize = 8;
/// `{`/`[` in one string tried as the start of JSON.
const MAX_ATTEMPTS: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unmaskable(pub String);

pub struct Masks {
    /// Each path, anchored at every depth.
    paths: Vec<Vec<MaskSeg>>,
    /// The field names the paths mask.
    names: Vec<String>,
    /// A path that names no field (`*`, `**`): any member is suspect.
    any: bool,
}

impl Masks {
    pub fn new(paths: &[MaskPath]) -> Self {
        let mut names = Vec::new();
        let mut any = false;
        let paths = paths
            .iter()
            .map(|p| {
                match p.segs.iter().rev().find_map(|s| match s {
                    MaskSeg::Key(k) => Some(k.clone()),
                    _ => None,
                }) {
                    Some(k) if !names.contains(&k) => names.push(k),
                    Some(_) => {}
                    None => any = true,
                }
                let mut segs = p.segs.clone();
                if segs.first() != Some(&MaskSeg::AnyDepth) {
                    segs.insert(0, MaskSeg::AnyDepth);
                }
                segs
            })
            .collect();
        Self { paths, names, any }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Mask a whole message; how many values were replaced.
    pub fn message(&self, v: &mut Value) -> Result<usize, Unmaskable> {
        self.value(v, 0)
    }

    fn value(&self, v: &mut Value, depth: usize) -> Result<usize, Unmaskable> {
        // Paths first: a value masked whole needs no search.
        let n: usize = self.paths.iter().map(|p| mask::apply(v, p)).sum();
        Ok(n + self.strings(v, depth)?)
    }

    fn strings(&self, v: &mut Value, depth: usize) -> Result<usize, Unmaskable> {
        match v {
            Value::String(s) => Ok(match self.text(s, depth)? {
                Some((new, k)) => {
                    *s = new;
                    k
                }
                None => 0,
            }),
            Value::Array(a) => {
                let mut n = 0;
                for x in a {
                    n += self.strings(x, depth)?;
                }
                Ok(n)
            }
            Value::Object(o) => {
                let mut n = 0;
                for (k, x) in o.iter_mut() {
                    if self.mentions(k) && self.suspect(k) {
                        return Err(Unmaskable(
                            "has a member name that holds a masked field".into(),
                        ));
                    }
                    n += match (k.as_str(), x) {
                        ("blob", Value::String(b)) => self.blob(b, depth)?,
                        (_, x) => self.strings(x, depth)?,
                    };
                }
                Ok(n)
            }
            _ => Ok(0),
        }
    }

    /// A base64 blob: masked as text when it decodes to text (binary
    /// content is passed as it is).
    fn blob(&self, b: &mut String, depth: usize) -> Result<usize, Unmaskable> {
        let engine = base64::engine::general_purpose::STANDARD;
        let Ok(raw) = engine.decode(b.trim()) else {
            return Ok(0);
        };
        let Ok(text) = String::from_utf8(raw) else {
            return Ok(0);
        };
        Ok(match self.text(&text, depth)? {
            Some((new, k)) => {
                *b = engine.encode(new);
                k
            }
            None => 0,
        })
    }

    /// Mask the JSON in a string: `Some` with the new text when something
    /// was masked.
    fn text(&self, s: &str, depth: usize) -> Result<Option<(String, usize)>, Unmaskable> {
        if !self.mentions(s) {
            return Ok(None);
        }
        if depth >= MAX_NESTING {
            return Err(Unmaskable(format!(
                "nests JSON in strings deeper than {MAX_NESTING} levels"
            )));
        }
        if let Ok(mut j) = serde_json::from_str::<Value>(s) {
            let k = self.value(&mut j, depth + 1)?;
            return Ok((k > 0).then(|| (j.to_string(), k)));
        }
        // JSON inside text (after a prefix, one value per line…): each
        // value that starts at a `{` or `[`.
        let mut out = String::new();
        let mut residue = String::new();
        let (mut last, mut kept, mut i, mut n, mut attempts) = (0, 0, 0, 0, 0);
        while let Some(off) = memchr::memchr2(b'{', b'[', &s.as_bytes()[i..]) {
            let start = i + off;
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                break;
            }
            let mut it = serde_json::Deserializer::from_str(&s[start..]).into_iter::<Value>();
            match it.next() {
                Some(Ok(mut j)) if j.is_object() || j.is_array() => {
                    let end = start + it.byte_offset();
                    let k = self.value(&mut j, depth + 1)?;
                    residue.push_str(&s[kept..start]);
                    residue.push(' ');
                    kept = end;
                    if k > 0 {
                        out.push_str(&s[last..start]);
                        out.push_str(&j.to_string());
                        last = end;
                        n += k;
                    }
                    i = end;
                }
                _ => i = start + 1,
            }
        }
        residue.push_str(&s[kept..]);
        // What is left outside the JSON found must not name a masked field.
        if self.suspect(&residue) {
            return Err(Unmaskable(
                "holds text that names a masked field but is not JSON the gateway can parse".into(),
            ));
        }
        out.push_str(&s[last..]);
        Ok((n > 0).then_some((out, n)))
    }

    /// Could `s` hold a masked field at all? (A name as written, or
    /// written with JSON escapes.)
    fn mentions(&self, s: &str) -> bool {
        self.any
            || self.names.iter().any(|n| s.contains(n.as_str()))
            || (s.contains('\\') && {
                let d = unescape(s);
                self.names.iter().any(|n| d.contains(n.as_str()))
            })
    }

    /// Does `s` use a masked field's name as a member name (`"number":`,
    /// `\"number\" :`, `'number':`)?
    fn suspect(&self, s: &str) -> bool {
        let d = if s.contains('\\') {
            unescape(s)
        } else {
            s.to_string()
        };
        if self.any {
            return member_at(&d, 0).is_some()
                || d.match_indices(['"', '\''])
                    .any(|(i, _)| member_at(&d, i + 1).is_some());
        }
        self.names.iter().any(|name| {
            d.match_indices(name.as_str()).any(|(i, _)| {
                d[..i].ends_with(['"', '\'']) && member_at(&d, i + name.len()).is_some()
            })
        })
    }
}

/// After a name ending at `at`: quotes, backslashes, spaces, then `:`?
fn member_at(s: &str, at: usize) -> Option<()> {
    let rest = s.get(at..)?;
    let t = rest.trim_start_matches(['"', '\'', '\\', ' ', '\t', '\r', '\n']);
    (t.len() < rest.len() && t.starts_with(':')).then_some(())
}

/// `\uXXXX` and `\/` decoded, backslashes dropped: what a JSON parser
/// would read as a name.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.peek() {
            Some('u') => {
                it.next();
                let hex: String = it.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some('/') => {
                it.next();
                out.push('/');
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn masks(p: &[&str]) -> Masks {
        let paths: Vec<MaskPath> = p.iter().map(|x| MaskPath::parse(x).unwrap()).collect();
        Masks::new(&paths)
    }

    const DOC: &str = r#"{"card":{"number":"4242424242424242"},"ok":1}"#;

    #[test]
    fn masks_every_shape() {
        let m = masks(&["card.number"]);
        let pretty = format!(
            "Result:\n{}",
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(DOC).unwrap()).unwrap()
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(DOC);
        let mut v = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "content": [
                {"type": "text", "text": DOC},
                {"type": "text", "text": pretty},
                {"type": "text", "text": format!("{DOC}\n{DOC}\n")},
                {"type": "resource", "resource": {"uri": "f", "text": DOC, "blob": b64}},
                {"type": "text", "text": json!({"inner": DOC}).to_string()},
            ],
            "_meta": {"card": {"number": "4242424242424242"}},
        }, "error": {"data": {"x": {"card": {"number": "4242424242424242"}}}}});
        let n = m.message(&mut v).unwrap();
        let out = v.to_string();
        assert!(!out.contains("4242424242424242"), "{out}");
        let blob = v["result"]["content"][3]["resource"]["blob"]
            .as_str()
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap();
        assert!(!String::from_utf8(decoded).unwrap().contains("4242"));
        assert_eq!(n, 9, "{out}");
        assert!(out.contains(r#"\"ok\":1"#), "unmasked fields stay: {out}");
    }

    #[test]
    fn nothing_named_nothing_changed_and_unparseable_refused() {
        let m = masks(&["**.number"]);
        let mut clean = json!({"result": {"content": [{"type": "text", "text": "{\"phone_number\": 1} and {broken"}]}});
        let before = clean.clone();
        assert_eq!(m.message(&mut clean).unwrap(), 0);
        assert_eq!(clean, before);
        for bad in [
            "number: 1, but {\"number\": \"4242\"",
            "{'number': '4242'}",
            "{\"num\\u0062er\": \"4242\"",
            "x {\"a\": 1} \\\"number\\\": \"4242\"",
        ] {
            let mut v = json!({"result": {"content": [{"type": "text", "text": bad}]}});
            assert!(m.message(&mut v).is_err(), "{bad}");
        }
        let mut escaped = json!({"text": "{\"num\\u0062er\": \"4242\"}"});
        assert_eq!(m.message(&mut escaped).unwrap(), 1);
        assert!(!escaped.to_string().contains("4242"));
    }
}
