//! Path templates (`/v1/customers/{id}`), resource templates
//! (`customer/{id}`) and mask paths (`data.*.card.number`, `**.ssn`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: one segment.
    Var(String),
    /// `{name*}`: the rest of the path (one or more segments), last only.
    Rest(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    pub text: String,
    pub segments: Vec<Segment>,
}

fn var_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path template `{text}` must start with `/`"));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, rest) = match inner.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if !var_name_ok(name) {
                    return Err(format!(
                        "`{{{inner}}}` in `{text}` is not a variable name (letters, digits, `_`)"
                    ));
                }
                if rest && i != last {
                    return Err(format!(
                        "`{{{inner}}}` in `{text}` takes the rest of the path: it must be the last segment"
                    ));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Var(n) | Segment::Rest(n) if n == name))
                {
                    return Err(format!("variable `{name}` appears twice in `{text}`"));
                }
                segments.push(if rest {
                    Segment::Rest(name.to_string())
                } else {
                    Segment::Var(name.to_string())
                });
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "segment `{part}` of `{text}`: a variable is a whole segment, `{{name}}`"
                ));
            } else if (part.is_empty() && i != last) || *part == "." || *part == ".." {
                return Err(format!("`{text}` has an empty or dot segment"));
            } else if part.contains(['?', '#', '%', '\\']) {
                return Err(format!(
                    "segment `{part}` of `{text}` holds a character paths are not matched on (`?`, `#`, `%`, `\\`)"
                ));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    /// The variables a template defines.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(n) | Segment::Rest(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Match request path segments; the variables' (percent-decoded) values.
    pub fn matches(&self, path: &[&str]) -> Option<Vec<(String, String)>> {
        let mut vars = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if path.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Var(n) => {
                    let v = path.get(i).filter(|v| !v.is_empty())?;
                    vars.push((n.clone(), decode(v)?));
                }
                Segment::Rest(n) => {
                    let rest = path.get(i..).filter(|r| !r.is_empty())?;
                    let decoded: Option<Vec<String>> = rest.iter().map(|s| decode(s)).collect();
                    vars.push((n.clone(), decoded?.join("/")));
                    return Some(vars);
                }
            }
        }
        (path.len() == self.segments.len()).then_some(vars)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Percent-decode one path segment; `None` for bad escapes or non-UTF-8.
pub(super) fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Text with `{var}` placeholders (a route's resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub text: String,
}

impl Template {
    /// Parse, checking every placeholder names one of `vars`.
    pub fn parse(text: &str, vars: &[&str]) -> Result<Self, String> {
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            let name = &after[..end];
            if !vars.contains(&name) {
                return Err(format!(
                    "`{{{name}}}` in `{text}` is not a variable of the route's path"
                ));
            }
            rest = &after[end + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray `}}` in `{text}`"));
        }
        Ok(Self {
            text: text.to_string(),
        })
    }

    pub fn render(&self, vars: &[(String, String)]) -> String {
        let mut out = self.text.clone();
        for (k, v) in vars {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskSeg {
    Key(String),
    /// `*`: every member of an object or element of an array.
    Any,
    /// `**`: this level and every level below.
    AnyDepth,
}

/// A JSON field to mask: dot-separated keys, `*`, `**`. Arrays are
/// traversed where a key is expected, so `data.email` masks the email of
/// every element of `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskPath {
    pub text: String,
    pub segs: Vec<MaskSeg>,
}

impl MaskPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            segs.push(match part {
                "" => return Err(format!("mask path `{text}` has an empty segment")),
                "*" => MaskSeg::Any,
                "**" => MaskSeg::AnyDepth,
                p if p.contains('*') => {
                    return Err(format!(
                        "mask path `{text}`: `*` and `**` stand alone between dots"
                    ));
                }
                p => MaskSeg::Key(p.to_string()),
            });
        }
        if matches!(segs.last(), Some(MaskSeg::AnyDepth)) {
            return Err(format!(
                "mask path `{text}` ends in `**`, which would mask the whole document"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            segs,
        })
    }
}
