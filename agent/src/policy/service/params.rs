//! A request's parameters for the decision: path variables, the query,
//! and a JSON or form body, merged into one map. Everything the upstream
//! would act on is judged: a body the gateway cannot read is refused.

use serde_json::{Map, Number, Value};

use crate::policy::{ParamType, ToolSchema};

pub use form::{encode as form_encode, pairs as form_pairs};

/// Deepest JSON nesting accepted in a body (like the decision API).
const MAX_DEPTH: usize = crate::decision::input::MAX_DEPTH;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("parameter `{0}` is given twice (path, query and body share one namespace)")]
    Duplicate(String),
    #[error("the JSON body does not parse: {0}")]
    BadJson(String),
    #[error("the JSON body must be an object (its members are the call's parameters)")]
    NotObject,
    #[error("the body is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the body is {0}; the gateway judges JSON and form bodies only")]
    Unreadable(String),
    #[error("the query or form body is not valid percent-encoded UTF-8")]
    BadForm,
    #[error(
        "the query or form body holds a bare `;`, which some servers read as a separator between parameters; send it as %3B"
    )]
    Semicolon,
}

impl ParamsError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreadable(_) => "unsupported-body",
            _ => "bad-request",
        }
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `application/x-www-form-urlencoded`, both ways.
mod form {
    use super::ParamsError;

    /// `a=1&b=x+y` → pairs, `+` as space, percent-decoded. A bare `;` is
    /// refused: servers that split pairs on it too would read parameters
    /// the gateway never saw.
    pub fn pairs(text: &str) -> Result<Vec<(String, String)>, ParamsError> {
        if text.contains(';') {
            return Err(ParamsError::Semicolon);
        }
        text.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((decode(k)?, decode(v)?))
            })
            .collect()
    }

    fn decode(s: &str) -> Result<String, ParamsError> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b'%' => {
                    let hex = s.get(i + 1..i + 3).ok_or(ParamsError::BadForm)?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| ParamsError::BadForm)?);
                    i += 3;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| ParamsError::BadForm)
    }

    /// Pairs → `a=1&b=x+y`.
    pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let enc = |s: &str| {
            let mut out = String::new();
            for b in s.bytes() {
                match b {
                    b' ' => out.push('+'),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                        out.push(b as char)
                    }
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        pairs
            .into_iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Decimal text every number reader reads as the same value: an optional
/// `-`, digits without a leading zero, and (where `fraction`) a `.` and
/// digits. No exponent, `+`, leading or trailing `.`, or spaces: Rust's
/// float parser reads `99999e-100` as almost 0, JavaScript's `parseInt`
/// and Ruby's `to_i` as 99999.
fn canonical_decimal(text: &str, fraction: bool) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) if fraction => (i, Some(f)),
        Some(_) => return false,
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(all_digits)
}

/// Text from the path, the query or a form: typed as the schema declares
/// it, so `amount=7200` compares as the number it is. A value that does
/// not convert, or is not written in canonical decimal (`canonical_decimal`),
/// stays text, and the decision refuses it (`parameter-type`).
fn typed(text: String, ty: Option<ParamType>) -> Value {
    match ty {
        Some(ParamType::Number) if !canonical_decimal(&text, true) => Value::String(text),
        Some(ParamType::Integer) if !canonical_decimal(&text, false) => Value::String(text),
        Some(ParamType::Number) => text
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Value::from(n as i64)
                } else {
                    Number::from_f64(n).map_or(Value::Null, Value::Number)
                }
            })
            .unwrap_or(Value::String(text)),
        Some(ParamType::Integer) => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        Some(ParamType::Bool) => match text.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text),
        },
        _ => Value::String(text),
    }
}

/// The parameters of a request.
pub fn extract(
    vars: &[(String, String)],
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    schema: Option<&ToolSchema>,
) -> Result<Map<String, Value>, ParamsError> {
    let ty = |name: &str| schema.and_then(|s| s.params.get(name).copied());
    let mut out = Map::new();
    let put = |k: String, v: Value, out: &mut Map<String, Value>| {
        if out.contains_key(&k) {
            return Err(ParamsError::Duplicate(k));
        }
        out.insert(k, v);
        Ok(())
    };
    for (k, v) in vars {
        put(k.clone(), typed(v.clone(), ty(k)), &mut out)?;
    }
    let mut textual: Vec<(String, String)> = match query {
        Some(q) => form_pairs(q)?,
        None => Vec::new(),
    };
    if !body.is_empty() {
        let ct = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ct == "application/json" || ct.ends_with("+json") {
            let v = super::strict_json::from_slice(body)
                .map_err(|e| ParamsError::BadJson(e.to_string()))?;
            let Value::Object(obj) = v else {
                return Err(ParamsError::NotObject);
            };
            if obj.values().map(depth).max().unwrap_or(0) + 1 > MAX_DEPTH {
                return Err(ParamsError::TooDeep);
            }
            for (k, v) in obj {
                put(k, v, &mut out)?;
            }
        } else if ct == "application/x-www-form-urlencoded" {
            let text = std::str::from_utf8(body).map_err(|_| ParamsError::BadForm)?;
            textual.extend(form_pairs(text)?);
        } else {
            return Err(ParamsError::Unreadable(if ct.is_empty() {
                "without a content type".into()
            } else {
                format!("`{ct}`")
            }));
        }
    }
    // A repeated query or form key is a list of its values.
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in textual {
        match grouped.iter_mut().find(|(g, _)| *g == k) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((k, vec![v])),
        }
    }
    for (k, mut vs) in grouped {
        let v = if vs.len() == 1 {
            typed(vs.remove(0), ty(&k))
        } else {
            Value::Array(vs.into_iter().map(Value::String).collect())
        };
        put(k, v, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::Pattern;

    fn schema() -> ToolSchema {
        ToolSchema {
            tool: Pattern::parse("stripe").unwrap(),
            actions: vec![],
            params: BTreeMap::from([
                ("amount".to_string(), ParamType::Number),
                ("n".to_string(), ParamType::Integer),
                ("live".to_string(), ParamType::Bool),
            ]),
        }
    }

    #[test]
    fn merges_and_types() {
        let vars = vec![("id".to_string(), "cus_1".to_string())];
        let p = extract(
            &vars,
            Some("n=3&tag=a&tag=b&live=true"),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"amount=7200.5&currency=usd&memo=hi+there%21",
            Some(&schema()),
        )
        .unwrap();
        assert_eq!(
            Value::Object(p),
            serde_json::json!({"id": "cus_1", "n": 3, "tag": ["a", "b"], "live": true,
                "amount": 7200.5, "currency": "usd", "memo": "hi there!"})
        );
        let p = extract(
            &[],
            None,
            Some("application/json"),
            br#"{"amount": 7200}"#,
            None,
        )
        .unwrap();
        assert_eq!(p["amount"], Value::from(7200));
        let p = extract(&[], Some("amount=abc"), None, b"", Some(&schema())).unwrap();
        assert_eq!(
            p["amount"],
            Value::from("abc"),
            "left for the decision to refuse"
        );
    }

    #[test]
    fn numbers_only_in_the_spelling_every_reader_reads_alike() {
        let read = |q: &str| extract(&[], Some(q), None, b"", Some(&schema())).unwrap();
        for (q, want) in [
            ("amount=100", Value::from(100)),
            ("amount=-0.25", serde_json::json!(-0.25)),
            ("amount=0", Value::from(0)),
            ("n=-3", Value::from(-3)),
        ] {
            assert_eq!(read(q).into_iter().next().unwrap().1, want, "{q}");
        }
        for q in [
            "amount=99999e-100",
            "amount=1E3",
            "amount=%2B100",
            "amount=.5",
            "amount=5.",
            "amount=0100",
            "amount=%20100",
            "amount=inf",
            "amount=0x10",
            "n=1.0",
            "n=1e2",
            "n=007",
        ] {
            let p = read(q);
            let v = p.values().next().unwrap();
            assert!(
                v.is_string(),
                "{q} read as {v}: it stays text to be refused"
            );
        }
        assert_eq!(
            extract(&[], Some("to=x;amount=99999"), None, b"", Some(&schema())),
            Err(ParamsError::Semicolon)
        );
        assert_eq!(
            extract(
                &[],
                None,
                Some("application/x-www-form-urlencoded"),
                b"amount=1;amount=99999",
                Some(&schema())
            ),
            Err(ParamsError::Semicolon)
        );
        assert_eq!(
            read("to=x%3Bamount")["to"],
            Value::from("x;amount"),
            "an encoded `;` is a character of its value"
        );
    }

    #[test]
    fn refuses_what_it_cannot_judge() {
        let dup = extract(&[("id".into(), "x".into())], Some("id=y"), None, b"", None);
        assert_eq!(dup, Err(ParamsError::Duplicate("id".into())));
        assert_eq!(
            extract(&[], None, Some("application/json"), b"[1]", None),
            Err(ParamsError::NotObject)
        );
        assert!(matches!(
            extract(&[], None, Some("application/json"), b"{", None),
            Err(ParamsError::BadJson(_))
        ));
        // A JSON name given twice, however it is spelled, is not judged.
        for dup in [
            &br#"{"amount":99999,"amount":100}"#[..],
            br#"{"amount":99999,"\u0061mount":100}"#,
        ] {
            assert!(matches!(
                extract(&[], None, Some("application/json"), dup, None),
                Err(ParamsError::BadJson(m)) if m.contains("given twice")
            ));
        }
        assert!(matches!(
            extract(&[], None, Some("application/octet-stream"), b"\x00", None),
            Err(ParamsError::Unreadable(_))
        ));
        assert!(matches!(
            extract(&[], None, None, b"x", None),
            Err(ParamsError::Unreadable(_))
        ));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20));
        assert_eq!(
            extract(&[], None, Some("application/json"), deep.as_bytes(), None),
            Err(ParamsError::TooDeep)
        );
        assert_eq!(
            extract(&[], Some("a=%zz"), None, b"", None),
            Err(ParamsError::BadForm)
        );
    }
}
