//! Path globs for cgroup selectors: `*` matches within one path segment,
//! `?` one character, `**` any number of whole segments.
//!
//! `/kubepods.slice/**/cri-containerd-*.scope` selects every containerd
//! container scope at any depth below `kubepods.slice`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`
    AnyDepth,
    Pattern(Vec<char>),
}

impl Glob {
    /// Parse an absolute path pattern (`/a/b*/**`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "cgroup pattern `{text}` must be an absolute path below the cgroup root, like \"/system.slice/agent.service\""
            ));
        };
        let mut segments = Vec::new();
        for seg in rest.split('/').filter(|s| !s.is_empty()) {
            if seg == "**" {
                segments.push(Segment::AnyDepth);
            } else if seg.contains("**") {
                return Err(format!(
                    "`**` must be a whole path segment in `{text}` (write `/a/**/b`, not `/a**b`)"
                ));
            } else if seg == "." || seg == ".." {
                return Err(format!("`{seg}` is not allowed in cgroup pattern `{text}`"));
            } else {
                segments.push(Segment::Pattern(seg.chars().collect()));
            }
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the absolute path `path` (e.g. `/system.slice/x.service`) match?
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match_segments(&self.segments, &parts)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::AnyDepth, rest)) => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((Segment::Pattern(p), rest)) => match parts.split_first() {
            Some((first, tail)) => match_chars(p, first) && match_segments(rest, tail),
            None => false,
        },
    }
}

/// Wildcard match of `text` (`*` and `?`), iterative with backtracking.
/// `text` is walked in place by byte offset, a character at a time: this
/// runs for every rule a `Decide` call is checked against, so it does not
/// allocate.
fn match_chars(pattern: &[char], text: &str) -> bool {
    let next = |at: usize| text[at..].chars().next();
    let (mut p, mut t) = (0, 0);
    // The last `*` seen, and where in `text` its run now ends.
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = next(t) {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == c) {
            p += 1;
            t += c.len_utf8();
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star
            && let Some(skipped) = next(st)
        {
            let st = st + skipped.len_utf8();
            p = sp + 1;
            t = st;
            star = Some((sp, st));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// A flat pattern for tool, action and resource names: `*` matches any run
/// of characters (dots and slashes included), `?` one character; anything
/// else matches itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    chars: Vec<char>,
    /// `chars` in lower case (`matches_ignoring_case`).
    lower: Vec<char>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty pattern".into());
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "pattern `{text}` contains whitespace or control characters"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            chars: text.chars().collect(),
            lower: text.to_lowercase().chars().collect(),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match_chars(&self.chars, name)
    }

    /// `matches`, with pattern and name compared in lower case.
    pub fn matches_ignoring_case(&self, name: &str) -> bool {
        match_chars(&self.lower, &name.to_lowercase())
    }

    /// True when the pattern matches everything (`*`, `**`…).
    pub fn is_wildcard(&self) -> bool {
        self.chars.iter().all(|c| *c == '*')
    }

    /// True when the pattern has no wildcard at all.
    pub fn is_literal(&self) -> bool {
        !self.chars.iter().any(|c| matches!(c, '*' | '?'))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        Glob::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn exact_and_star() {
        assert!(g("/system.slice/agent.service").matches("/system.slice/agent.service"));
        assert!(g("/system.slice/agent-*.service").matches("/system.slice/agent-7.service"));
        assert!(!g("/system.slice/agent-*.service").matches("/system.slice/x/agent-7.service"));
        assert!(g("/a/?b").matches("/a/xb"));
        assert!(!g("/a/?b").matches("/a/xxb"));
    }

    #[test]
    fn any_depth() {
        let k = g("/kubepods.slice/**/cri-containerd-*.scope");
        assert!(k.matches("/kubepods.slice/cri-containerd-abc.scope"));
        assert!(k.matches(
            "/kubepods.slice/kubepods-burstable.slice/pod1.slice/cri-containerd-abc.scope"
        ));
        assert!(!k.matches("/other.slice/cri-containerd-abc.scope"));
        assert!(g("/a/**").matches("/a"));
        assert!(g("/a/**").matches("/a/b/c"));
    }

    #[test]
    fn flat_patterns() {
        let p = Pattern::parse("github.*").unwrap();
        assert!(p.matches("github.create_issue"));
        assert!(!p.matches("gitlab.create_issue"));
        assert!(Pattern::parse("*").unwrap().is_wildcard());
        assert!(Pattern::parse("stripe").unwrap().is_literal());
        assert!(
            Pattern::parse("repo:org/*")
                .unwrap()
                .matches("repo:org/app/sub")
        );
        assert!(Pattern::parse("a b").is_err());
    }

    #[test]
    fn wildcards_backtrack_over_multibyte_characters() {
        let m = |p: &str, t: &str| Pattern::parse(p).unwrap().matches(t);
        assert!(m("a*é?c", "aXéXéYc"));
        assert!(m("*ü", "üüü"));
        assert!(m("?", "ß"));
        assert!(!m("?", "ßß"));
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(!m("a*b*c", "a-b-b-"));
        assert!(!m("stripe", "stripes"));
        assert!(m("st*e", "stripe"));
        assert!(g("/ä/*ö").matches("/ä/üö"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(Glob::parse("relative/path").is_err());
        assert!(Glob::parse("/a**b").is_err());
        assert!(Glob::parse("/a/../b").is_err());
    }
}
