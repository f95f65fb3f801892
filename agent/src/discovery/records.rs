//! Reading the audit trail as evidence: one record at a time, in chain
//! order, never the whole trail in memory.
//!
//! Only the fields discovery needs are parsed, borrowed from the line where
//! the JSON has no escapes; everything else in a record is skipped by the
//! parser without being built.

use std::{
    borrow::Cow,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::DiscoveryError;

/// The parts of an audit record discovery reads.
#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub identity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub verdict: Cow<'a, str>,
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    #[serde(borrow, default)]
    pub rule: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub dst_ip: Option<Cow<'a, str>>,
    #[serde(default)]
    pub dst_port: Option<u16>,
    #[serde(borrow, default)]
    pub protocol: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub dns: Option<DnsPart<'a>>,
    #[serde(borrow, default)]
    pub call: Option<CallPart<'a>>,
    /// Set on records allowed only because of a break-glass elevation.
    #[serde(borrow, default)]
    pub elevation: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct DnsPart<'a> {
    #[serde(borrow)]
    pub query: Cow<'a, str>,
    #[serde(borrow, default)]
    pub cnames: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub answer: Vec<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CallPart<'a> {
    #[serde(borrow, default)]
    pub tool: Cow<'a, str>,
    #[serde(borrow, default)]
    pub action: Cow<'a, str>,
    #[serde(borrow, default)]
    pub resource: Cow<'a, str>,
    #[serde(borrow, default)]
    pub params: Vec<Cow<'a, str>>,
    #[serde(default)]
    pub numbers: std::collections::BTreeMap<String, f64>,
}

/// What the walk saw, for the header of what it writes.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub files: Vec<PathBuf>,
    /// Records read (inside the window or not).
    pub records: u64,
    /// Records inside the window.
    pub in_window: u64,
    /// Lines that were not audit records.
    pub unreadable: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Span {
    fn saw(&mut self, t: i64) {
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }
}

/// Which records count.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Unix seconds; older records are skipped.
    pub since: Option<i64>,
    /// Only lines that mention this identity are parsed (a fast pre-filter;
    /// the parsed record is still checked).
    pub identity: Option<String>,
}

/// Walk `paths` as one trail, in chain order (by the `seq` of each file's
/// first record, so a shell glob in any order works), calling `f` with
/// every record inside the window and its time (unix seconds).
pub fn walk(
    paths: &[PathBuf],
    window: &Window,
    mut f: impl FnMut(&Record<'_>, i64),
) -> Result<Span, DiscoveryError> {
    let mut ordered = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let first = crate::audit::verify::first_seq(p).map_err(|e| DiscoveryError::Read {
            path: e.path,
            source: e.source,
        })?;
        ordered.push((first.unwrap_or(u64::MAX), i, p.clone()));
    }
    ordered.sort();
    let needle = window
        .identity
        .as_ref()
        .map(|id| format!("\"identity\":{}", serde_json::Value::from(id.as_str())));
    let mut span = Span::default();
    for (_, _, path) in ordered {
        read_file(&path, window, needle.as_deref(), &mut span, &mut f)?;
        span.files.push(path);
    }
    Ok(span)
}

fn read_file(
    path: &Path,
    window: &Window,
    needle: Option<&str>,
    span: &mut Span,
    f: &mut impl FnMut(&Record<'_>, i64),
) -> Result<(), DiscoveryError> {
    let err = |source| DiscoveryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let mut reader = BufReader::with_capacity(1 << 18, file);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(err)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        span.records += 1;
        if needle.is_some_and(|n| !line.contains(n)) {
            continue;
        }
        let Ok(rec) = serde_json::from_str::<Record<'_>>(&line) else {
            span.unreadable += 1;
            continue;
        };
        let Some(t) = unix_seconds(&rec.time) else {
            span.unreadable += 1;
            continue;
        };
        if window.since.is_some_and(|s| t < s) {
            continue;
        }
        if let Some(id) = &window.identity
            && rec.identity.as_deref() != Some(id.as_str())
        {
            continue;
        }
        span.in_window += 1;
        span.saw(t);
        f(&rec, t);
    }
}

/// Unix seconds of an RFC 3339 UTC time as the trail writes it
/// (`2026-11-23T10:44:04.096613Z`); fractions are dropped. Hand-rolled:
/// it runs once per record, and the trail's format is fixed.
pub fn unix_seconds(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A unix time for people, to the second.
pub fn show(t: i64) -> String {
    let secs = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_humantime() {
        for t in [
            "2026-11-23T10:44:04.096613Z",
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999999999Z",
            "2099-12-31T12:00:00Z",
        ] {
            let want = humantime::parse_rfc3339_weak(t)
                .unwrap_or_else(|e| panic!("{t}: {e}"))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64;
            assert_eq!(unix_seconds(t), Some(want), "{t}");
        }
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(unix_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(show(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn records_borrow_and_skip_what_they_do_not_need() {
        let line = r#"{"time":"2026-11-23T10:00:00Z","kind":"decision","identity":"a","verdict":"allow","reason":"allowed","policy_version":"v","rule":"r\"1","call":{"tool":"stripe","action":"pay","params":["amount"],"numbers":{"amount":12.5}},"seq":1,"prev_hash":"x","hash":"y"}"#;
        let r: Record<'_> = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.rule.as_deref(), Some("r\"1"));
        let call = r.call.unwrap_or_default();
        assert_eq!(call.numbers.get("amount"), Some(&12.5));
        assert!(matches!(call.tool, Cow::Borrowed("stripe")));
    }
}
