//! Host name patterns in egress rules: `internal-ehr.myorg` or `*.suffix`.
//! Case-insensitive, a trailing dot tolerated.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name strictly below `example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lowered = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lowered.clone()),
        };
        if name.is_empty() {
            return Err(format!("`{text}` is not a host name"));
        }
        if name.len() > 253 {
            return Err(format!("host name `{text}` is longer than 253 characters"));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                let hint = if label.contains('*') {
                    " (a wildcard is only allowed as the whole first label: `*.example.com`)"
                } else {
                    ""
                };
                return Err(format!(
                    "`{text}` is not a valid host name: bad label `{label}`{hint}"
                ));
            }
        }
        Ok(if wild {
            Self::Suffix(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Does the (query) name match? Case-insensitive, trailing dot ignored.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Self::Exact(n) => name == *n,
            Self::Suffix(s) => {
                name.len() > s.len() + 1
                    && name.ends_with(s.as_str())
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_suffix() {
        let e = HostPattern::parse("Internal-EHR.myorg.").unwrap_or_else(|e| panic!("{e}"));
        assert!(e.matches("internal-ehr.myorg"));
        assert!(e.matches("INTERNAL-ehr.MYORG."));
        assert!(!e.matches("x.internal-ehr.myorg"));
        let s = HostPattern::parse("*.githubusercontent.com").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.matches("raw.githubusercontent.com"));
        assert!(s.matches("a.b.githubusercontent.com"));
        assert!(!s.matches("githubusercontent.com"));
        assert!(!s.matches("evilgithubusercontent.com"));
    }

    #[test]
    fn rejects_bad_names() {
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("").is_err());
        assert!(HostPattern::parse("bad name.com").is_err());
        assert!(HostPattern::parse("-x.com").is_err());
    }
}
