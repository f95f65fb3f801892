//! Masking JSON fail-closed, shared by HTTP responses and MCP messages.
//! Servers put the same data in many shapes (JSON inside strings, text
//! with JSON after a prefix, JSON Lines, base64 blobs in any charset), so:
//!
//! - the paths apply to the document (MCP: at every depth of the message,
//!   so `card.number` masks a `number` inside any `card`; HTTP: from its
//!   root, as written);
//! - every string that names a masked field is searched for JSON (the whole
//!   string, or each JSON value inside it), masked with the paths at every
//!   depth (the gateway cannot know where such a document sits), and
//!   written back; a `blob` is decoded first (byte-order mark, charset);
//! - a string that still names a masked field as a JSON member outside any
//!   JSON the gateway could parse makes the document unmaskable: the
//!   caller refuses or withholds it;
//! - MCP, unless the service passes text (`mask_text: pass`): a text item
//!   (`text`) or a blob that decodes to text must be JSON as a whole (JSON
//!   Lines too); YAML, XML, CSV, Markdown or prose is withheld, whatever
//!   names it uses. Inside it, and in `structuredContent`, a string that
//!   names a masked field in any letter case must be JSON as a whole too.
//!
//! A document with nothing masked is left as it was (passed byte for byte).

mod charset;

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

/// How a string is judged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// JSON is searched for inside it; what is left must not name a masked
    /// field as a member.
    Loose,
    /// A text item: JSON as a whole, or unmaskable.
    Item,
    /// Inside a text item's JSON: naming a masked field in any case makes
    /// it a text item.
    InItem,
}

pub struct Masks {
    /// Applied to the document itself.
    root: Vec<Vec<MaskSeg>>,
    /// Applied to JSON found in strings: each path at every depth.
    nested: Vec<Vec<MaskSeg>>,
    /// The field names the paths mask.
    names: Vec<String>,
    /// A path that names no field (`*`, `**`): any member is suspect.
    any: bool,
    /// Text items and text blobs must be JSON as a whole (MCP).
    strict_text: bool,
}

fn anywhere(p: &MaskPath) -> Vec<MaskSeg> {
    let mut segs = p.segs.clone();
    if segs.first() != Some(&MaskSeg::AnyDepth) {
        segs.insert(0, MaskSeg::AnyDepth);
    }
    segs
}

impl Masks {
    /// MCP messages: paths at every depth; `strict_text`: text items that
    /// are not JSON are unmaskable.
    pub fn new(paths: &[MaskPath], strict_text: bool) -> Self {
        let nested: Vec<_> = paths.iter().map(anywhere).collect();
        Self {
            root: nested.clone(),
            ..Self::http(paths, strict_text)
        }
    }

    /// HTTP responses: paths from the document's root, as written.
    pub fn http(paths: &[MaskPath], strict_text: bool) -> Self {
        let mut names = Vec::new();
        let mut any = false;
        for p in paths {
            match p.segs.iter().rev().find_map(|s| match s {
                MaskSeg::Key(k) => Some(k.clone()),
                _ => None,
            }) {
                Some(k) if !names.contains(&k) => names.push(k),
                Some(_) => {}
                None => any = true,
            }
        }
        Self {
            root: paths.iter().map(|p| p.segs.clone()).collect(),
            nested: paths.iter().map(anywhere).collect(),
            names,
            any,
            strict_text,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Mask a whole document; how many values were replaced. A document
    /// that is a string (a body or event that is not JSON) is a text item.
    pub fn message(&self, v: &mut Value) -> Result<usize, Unmaskable> {
        if let Value::String(s) = v {
            let lvl = if self.strict_text {
                Level::Item
            } else {
                Level::Loose
            };
            return Ok(match self.text(s, 0, lvl)? {
                Some((new, k)) => {
                    *s = new;
                    k
                }
                None => 0,
            });
        }
        self.value(v, 0, Level::Loose)
    }

    fn value(&self, v: &mut Value, depth: usize, lvl: Level) -> Result<usize, Unmaskable> {
        // Paths first: a value masked whole needs no search.
        let paths = if depth == 0 { &self.root } else { &self.nested };
        let n: usize = paths.iter().map(|p| mask::apply(v, p)).sum();
        Ok(n + self.strings(v, depth, lvl)?)
    }

    fn strings(&self, v: &mut Value, depth: usize, lvl: Level) -> Result<usize, Unmaskable> {
        match v {
            Value::String(s) => Ok(match self.text(s, depth, lvl)? {
                Some((new, k)) => {
                    *s = new;
                    k
                }
                None => 0,
            }),
            Value::Array(a) => {
                let mut n = 0;
                for x in a {
                    n += self.strings(x, depth, lvl)?;
                }
                Ok(n)
            }
            Value::Object(o) => {
                let mime = o
                    .get("mimeType")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let mut n = 0;
                for (k, x) in o.iter_mut() {
                    if self.mentions(k) && self.suspect(k) {
                        return Err(Unmaskable(
                            "has a member name that holds a masked field".into(),
                        ));
                    }
                    n += match (k.as_str(), x) {
                        ("blob", Value::String(b)) => self.blob(b, mime.as_deref(), depth, lvl)?,
                        ("text", Value::String(t)) if self.strict_text => {
                            match self.text(t, depth, Level::Item)? {
                                Some((new, k)) => {
                                    *t = new;
                                    k
                                }
                                None => 0,
                            }
                        }
                        // Structured content is the answer's data: a string
                        // in it that names a masked field must be JSON.
                        ("structuredContent", x) if self.strict_text => {
                            self.strings(x, depth, Level::InItem)?
                        }
                        (_, x) => self.strings(x, depth, lvl)?,
                    };
                }
                Ok(n)
            }
            _ => Ok(0),
        }
    }

    /// A base64 blob: masked as text when it decodes to text (byte-order
    /// mark, the mime type's charset, UTF-8 or UTF-16) and written back in
    /// its encoding. Binary content of a binary mime type passes; a blob
    /// of a text mime type that cannot be read is unmaskable (MCP).
    fn blob(
        &self,
        b: &mut String,
        mime: Option<&str>,
        depth: usize,
        lvl: Level,
    ) -> Result<usize, Unmaskable> {
        let declared = mime.is_some_and(charset::textual);
        let unreadable = |why: &str| {
            if self.strict_text && declared {
                Err(Unmaskable(format!(
                    "has a blob of type {} that {why}",
                    mime.unwrap_or_default()
                )))
            } else {
                Ok(0)
            }
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let Ok(raw) = engine.decode(b.trim()) else {
            return unreadable("is not base64");
        };
        let Some((text, enc)) = charset::decode(&raw, mime) else {
            return unreadable("is in an encoding the gateway cannot read");
        };
        let lvl = if self.strict_text { Level::Item } else { lvl };
        Ok(match self.text(&text, depth, lvl)? {
            Some((new, k)) => {
                let Some(bytes) = charset::encode(&new, enc) else {
                    return Err(Unmaskable(
                        "has a blob that cannot be written back in its encoding once masked".into(),
                    ));
                };
                *b = engine.encode(bytes);
                k
            }
            None => 0,
        })
    }

    /// Mask the JSON in a string: `Some` with the new text when something
    /// was masked.
    fn text(
        &self,
        s: &str,
        depth: usize,
        lvl: Level,
    ) -> Result<Option<(String, usize)>, Unmaskable> {
        let relevant = match lvl {
            Level::Loose => self.mentions(s),
            Level::Item => !s.trim().is_empty(),
            Level::InItem => self.mentions_any_case(s),
        };
        if !relevant {
            return Ok(None);
        }
        if depth >= MAX_NESTING {
            return Err(Unmaskable(format!(
                "nests JSON in strings deeper than {MAX_NESTING} levels"
            )));
        }
        if lvl != Level::Loose {
            return self.whole(s, depth);
        }
        if let Ok(mut j) = serde_json::from_str::<Value>(s) {
            let k = self.value(&mut j, depth + 1, Level::Loose)?;
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
                    let k = self.value(&mut j, depth + 1, Level::Loose)?;
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

    /// A string that must be JSON as a whole (one value, or several
    /// separated by white space), each masked; a JSON string in it is a
    /// text item again.
    fn whole(&self, s: &str, depth: usize) -> Result<Option<(String, usize)>, Unmaskable> {
        let not_json = || {
            Unmaskable(
                "holds text that is not JSON (the service masks fields and does not pass text: `mask_text`)"
                    .into(),
            )
        };
        let mut out = String::new();
        let (mut last, mut n) = (0, 0);
        let mut it = serde_json::Deserializer::from_str(s).into_iter::<Value>();
        let mut prev = 0;
        while let Some(next) = it.next() {
            let mut j = next.map_err(|_| not_json())?;
            let end = it.byte_offset();
            let start = prev + (s[prev..end].len() - s[prev..end].trim_start().len());
            prev = end;
            let k = match &mut j {
                Value::String(inner) => match self.text(inner, depth + 1, Level::Item)? {
                    Some((new, k)) => {
                        *inner = new;
                        k
                    }
                    None => 0,
                },
                j => self.value(j, depth + 1, Level::InItem)?,
            };
            if k > 0 {
                out.push_str(&s[last..start]);
                out.push_str(&j.to_string());
                last = end;
                n += k;
            }
        }
        if !s[prev..].trim().is_empty() {
            return Err(not_json());
        }
        out.push_str(&s[last..]);
        Ok((n > 0).then_some((out, n)))
    }

    /// `mentions`, in any letter case.
    fn mentions_any_case(&self, s: &str) -> bool {
        if self.any {
            return true;
        }
        let d = if s.contains('\\') {
            unescape(s)
        } else {
            s.to_string()
        }
        .to_lowercase();
        self.names
            .iter()
            .any(|n| d.contains(n.to_lowercase().as_str()))
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
        Masks::new(&paths, false)
    }

    fn strict(p: &[&str]) -> Masks {
        let paths: Vec<MaskPath> = p.iter().map(|x| MaskPath::parse(x).unwrap()).collect();
        Masks::new(&paths, true)
    }

    fn item(m: &Masks, text: &str) -> Result<Value, Unmaskable> {
        let mut v = json!({"result": {"content": [{"type": "text", "text": text}]}});
        m.message(&mut v).map(|_| v)
    }

    #[test]
    fn text_items_must_be_json_when_strict() {
        let m = strict(&["**.number"]);
        for bad in [
            "card:\n  number: \"4242\"",
            "{did: x, card: {number: 4242}}",
            "<card><number>4242</number></card>",
            "card.number=4242",
            "did,number\nx,4242",
            "| number | 4242 |",
            "{card:{number:\"4242\"}}",
            "{\"card\":{\"number\" /*c*/ :\"4242\"}}",
            "Jane Roe, 4242",
            "Result: {\"card\":{\"number\":\"4242\"}}",
            "\"card:\\n  number: 4242\"",
            "{\"out\": \"Card Number: 4242\"}",
        ] {
            assert!(item(&m, bad).is_err(), "{bad}");
        }
        let ok = item(&m, "{\"card\":{\"number\":\"4242\"}}\n{\"number\":1}\n").unwrap();
        assert!(!ok.to_string().contains("4242"), "{ok}");
        let clean = item(&m, " {\"holder\": \"Jane Roe\"} ").unwrap();
        assert!(clean.to_string().contains("Jane Roe"));
        assert!(item(&m, "").is_ok());
        let mut v = json!({"structuredContent": {"out": "card:\n  Number: 4242", "n": "Jane"}});
        assert!(m.message(&mut v).is_err());
        // Without strict text, prose passes.
        assert!(item(&masks(&["**.number"]), "Jane Roe, 4242").is_ok());
        // Blobs: text types decoded in their charset and masked, or withheld.
        let engine = base64::engine::general_purpose::STANDARD;
        let doc = "{\"card\":{\"number\":\"4242\"}}";
        let le: Vec<u8> = doc.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut v = json!({"blob": engine.encode(&le), "mimeType": "application/json"});
        assert_eq!(m.message(&mut v).unwrap(), 1);
        let back = engine.decode(v["blob"].as_str().unwrap()).unwrap();
        assert!(
            String::from_utf16_lossy(
                &back
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<_>>()
            )
            .contains("[masked]")
        );
        let mut v = json!({"blob": engine.encode(b"number: 4242"), "mimeType": "text/yaml"});
        assert!(m.message(&mut v).is_err());
        let mut v = json!({"blob": engine.encode([0xC3, 0x28]), "mimeType": "text/plain"});
        assert!(m.message(&mut v).is_err());
        let mut v = json!({"blob": engine.encode([0xC3, 0x28]), "mimeType": "image/png"});
        assert_eq!(m.message(&mut v).unwrap(), 0);
    }

    #[test]
    fn http_paths_from_the_root_and_json_in_strings_everywhere() {
        let paths = [MaskPath::parse("card.number").unwrap()];
        let m = Masks::http(&paths, false);
        let mut v = json!({"x": {"card": {"number": "1"}}, "card": {"number": "2"},
            "payload": "{\"card\": {\"number\": \"3\"}, \"d\": {\"card\": {\"number\": \"4\"}}}"});
        assert_eq!(m.message(&mut v).unwrap(), 3);
        let out = v.to_string();
        assert!(
            out.contains("\"1\"") && !out.contains("\\\"3") && !out.contains("\\\"4"),
            "{out}"
        );
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
