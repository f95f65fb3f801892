//! `palisade audit verify`: walk one or more trail files and report every
//! edited, missing, reordered or duplicated record with its file and line.
//!
//! Files are put in chain order by the `seq` of their first record, so a
//! shell glob (`audit.jsonl*`) can be passed in any order. The walk streams:
//! memory stays proportional to the number of gaps, not to the trail.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use super::chain::{GENESIS, unseal};

#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct VerifyError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Where a record sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub line: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One problem, at the place it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub at: Place,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Files in the order they were checked (chain order).
    pub files: Vec<PathBuf>,
    pub records: u64,
    pub first_seq: Option<u64>,
    /// The highest record and its hash: the head to compare with an
    /// exported copy (SIEM) to detect truncation.
    pub last: Option<(u64, String)>,
    /// The first record links to a record not in the files given. Fine
    /// when a retention record in the trail accounts for exactly what is
    /// missing (`retention`); a finding otherwise (the beginning was
    /// removed without one).
    pub starts_mid_chain: bool,
    /// The retention record that accounts for the missing beginning.
    pub retention: Option<Place>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Records known so far: the one with the highest `seq`.
struct Tip {
    seq: u64,
    hash: String,
    at: Place,
}

/// Check `paths` as one trail.
pub fn verify(paths: &[PathBuf]) -> Result<Report, VerifyError> {
    let mut ordered = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        ordered.push((first_seq(p)?.unwrap_or(u64::MAX), i, p.clone()));
    }
    ordered.sort();
    let mut report = Report::default();
    let mut tip: Option<Tip> = None;
    // Missing seq ranges (inclusive) → where the gap was seen.
    let mut gaps: BTreeMap<u64, (u64, Place, Place)> = BTreeMap::new();
    // The first record (seq, prev_hash, place), and the retention record
    // that deleted the most (through seq, through hash, place).
    let mut first: Option<(u64, String, Place)> = None;
    let mut retained: Option<(u64, String, Place)> = None;
    for (_, _, path) in ordered {
        report.files.push(path.clone());
        let file = File::open(&path).map_err(|source| VerifyError {
            path: path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut raw = Vec::new();
        let mut line_no = 0u64;
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|source| VerifyError {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            // Bytes that are not text are something to report, not a
            // reason to stop reading the trail.
            let Ok(buf) = std::str::from_utf8(&raw) else {
                report.findings.push(Finding {
                    at: Place {
                        file: path.clone(),
                        line: line_no,
                    },
                    message: "the line is not valid UTF-8: no record was written like this".into(),
                });
                continue;
            };
            if buf.trim().is_empty() {
                continue;
            }
            let at = Place {
                file: path.clone(),
                line: line_no,
            };
            if !buf.ends_with('\n') {
                report.findings.push(Finding {
                    at: at.clone(),
                    message: "the last line is incomplete (torn write)".into(),
                });
            }
            let rec = match unseal(buf) {
                Ok(r) => r,
                Err(e) => {
                    report.findings.push(Finding {
                        at,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            report.records += 1;
            report.first_seq.get_or_insert(rec.seq);
            if first.is_none() {
                first = Some((rec.seq, rec.prev_hash.clone(), at.clone()));
            }
            if let Some((through, hash)) = &rec.retention
                && retained.as_ref().is_none_or(|r| *through > r.0)
            {
                retained = Some((*through, hash.clone(), at.clone()));
            }
            if !rec.intact {
                report.findings.push(Finding {
                    at: at.clone(),
                    message: format!(
                        "record seq {} was modified: its content does not match its hash",
                        rec.seq
                    ),
                });
            }
            match &tip {
                None => {
                    if rec.seq != 1 || rec.prev_hash != GENESIS {
                        report.starts_mid_chain = true;
                    }
                }
                Some(t) if rec.seq == t.seq + 1 => {
                    if rec.prev_hash != t.hash {
                        report.findings.push(Finding {
                            at: at.clone(),
                            message: format!(
                                "record seq {} does not link to seq {} at {}: a record was replaced or the chain rewritten",
                                rec.seq, t.seq, t.at
                            ),
                        });
                    }
                }
                Some(t) if rec.seq > t.seq + 1 => {
                    gaps.insert(t.seq + 1, (rec.seq - 1, t.at.clone(), at.clone()));
                }
                Some(t) => {
                    let message = match take_from_gaps(&mut gaps, rec.seq) {
                        true => format!(
                            "record seq {} is out of order: it comes after seq {} at {} (records were moved)",
                            rec.seq, t.seq, t.at
                        ),
                        false => format!(
                            "record seq {} appears again after seq {} at {} (duplicated or replayed)",
                            rec.seq, t.seq, t.at
                        ),
                    };
                    report.findings.push(Finding { at, message });
                    continue;
                }
            }
            tip = Some(Tip {
                seq: rec.seq,
                hash: rec.hash,
                at,
            });
        }
    }
    for (from, (to, before, after)) in gaps {
        let what = if from == to {
            format!("record seq {from} is missing")
        } else {
            format!(
                "records seq {from}–{to} ({} records) are missing",
                to - from + 1
            )
        };
        report.findings.push(Finding {
            at: after,
            message: format!("{what}: expected between {before} and here"),
        });
    }
    if let Some((seq, prev, at)) = first
        && (seq != 1 || prev != GENESIS)
    {
        match retained {
            Some((through, hash, r)) if through + 1 == seq && hash == prev => {
                report.retention = Some(r);
            }
            // Retention recorded a deletion, but not (all of) this one.
            Some((through, _, r)) if through + 1 < seq => report.findings.push(Finding {
                at,
                message: format!(
                    "the trail begins at seq {seq}: retention deleted records up to seq {through} ({r}), records seq {}–{} were removed without a record",
                    through + 1,
                    seq - 1
                ),
            }),
            Some((through, _, r)) if through + 1 == seq => report.findings.push(Finding {
                at,
                message: format!(
                    "record seq {seq} does not link to the last record retention deleted ({r}): the beginning was replaced"
                ),
            }),
            // A retention record that claims more than is missing: its
            // files are still there (deleted after the record), nothing lost.
            Some((_, _, r)) => report.retention = Some(r),
            None => report.findings.push(Finding {
                at,
                message: format!(
                    "the trail begins at seq {seq}: records before it are missing and no retention record accounts for them (its beginning was removed)"
                ),
            }),
        }
    }
    report
        .findings
        .sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
    report.last = tip.map(|t| (t.seq, t.hash));
    Ok(report)
}

/// Remove `seq` from the recorded gaps; true if it was in one.
fn take_from_gaps(gaps: &mut BTreeMap<u64, (u64, Place, Place)>, seq: u64) -> bool {
    let Some((&from, &(to, _, _))) = gaps.range(..=seq).next_back() else {
        return false;
    };
    if seq > to {
        return false;
    }
    let Some((_, before, after)) = gaps.remove(&from) else {
        return false;
    };
    if from < seq {
        gaps.insert(from, (seq - 1, before.clone(), after.clone()));
    }
    if seq < to {
        gaps.insert(seq + 1, (to, before, after));
    }
    true
}

/// The `seq` of the first sealed record of a file, if any.
pub fn first_seq(path: &Path) -> Result<Option<u64>, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError {
        path: path.to_path_buf(),
        source,
    })?;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|source| VerifyError {
            path: path.to_path_buf(),
            source,
        })?;
        // A line that is not text is not a record: look further.
        if let Ok(text) = std::str::from_utf8(&line)
            && let Ok(r) = unseal(text)
        {
            return Ok(Some(r.seq));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{
        AuditEvent, EventKind,
        chain::{ChainHead, seal},
    };

    fn trail(n: u64) -> Vec<String> {
        let mut head = ChainHead::genesis();
        (0..n)
            .map(|i| {
                let mut ev = AuditEvent::new(EventKind::Network, "deny", "default-deny");
                ev.dst_port = Some(i as u16);
                let (line, next) = seal(&mut ev, &head).unwrap_or_else(|e| panic!("{e}"));
                head = next;
                line
            })
            .collect()
    }

    fn check(name: &str, files: &[Vec<String>]) -> Report {
        let dir =
            std::env::temp_dir().join(format!("palisade-verify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, lines)| {
                let p = dir.join(format!("t{i}.jsonl"));
                std::fs::write(
                    &p,
                    lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
                )
                .unwrap_or_else(|e| panic!("{e}"));
                p
            })
            .rev() // out of order on purpose: verify sorts by seq
            .collect();
        let r = verify(&paths).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn messages(r: &Report) -> Vec<String> {
        r.findings
            .iter()
            .map(|f| format!("{}:{}", f.at.line, f.message))
            .collect()
    }

    #[test]
    fn intact_trail_across_files() {
        let t = trail(10);
        let r = check("intact", &[t[..4].to_vec(), t[4..].to_vec()]);
        assert!(r.intact(), "{:?}", r.findings);
        assert_eq!(r.records, 10);
        assert_eq!(r.last.as_ref().map(|l| l.0), Some(10));
        assert!(!r.starts_mid_chain);
        let r = check("mid", &[t[3..].to_vec()]);
        assert!(r.starts_mid_chain);
        let m = messages(&r);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("1:the trail begins at seq 4: records before it are missing"),
            "{m:?}"
        );
    }

    #[test]
    fn a_beginning_deleted_by_retention_is_told_from_one_removed_by_hand() {
        // Records 1–4, then retention deletes 1–3 and says so in record 5.
        let mut head = ChainHead::genesis();
        let mut lines = Vec::new();
        let mut heads = Vec::new();
        for i in 0..4u16 {
            let mut ev = AuditEvent::new(EventKind::Network, "deny", "default-deny");
            ev.dst_port = Some(i);
            let (line, next) = seal(&mut ev, &head).unwrap_or_else(|e| panic!("{e}"));
            lines.push(line);
            heads.push(next.clone());
            head = next;
        }
        let mut ev = AuditEvent::new(EventKind::Retention, "deleted", "audit-retention");
        ev.retention = Some(crate::audit::RetentionDetail {
            files: vec!["audit.jsonl.1".into()],
            through_seq: 3,
            through_hash: heads[2].hash.clone(),
        });
        let (line, _) = seal(&mut ev, &head).unwrap_or_else(|e| panic!("{e}"));
        lines.push(line);
        // What retention left: records 4 and 5.
        let r = check("retained", &[lines[3..].to_vec()]);
        assert!(r.intact(), "{:?}", r.findings);
        assert!(r.starts_mid_chain && r.retention.is_some());
        // One more record removed by hand: flagged, with the range.
        let r = check("cut", &[lines[4..].to_vec()]);
        let m = messages(&r);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("retention deleted records up to seq 3") && m[0].contains("seq 4–4"),
            "{m:?}"
        );
        // Retention's record written, files not deleted yet: nothing lost.
        let r = check("not-yet", &[lines.clone()]);
        assert!(r.intact(), "{:?}", r.findings);
    }

    #[test]
    fn edit_delete_swap_and_duplicate_are_reported_where_they_are() {
        let t = trail(6);
        let mut edited = t.clone();
        edited[2] = edited[2].replace("default-deny", "deny-rule");
        let m = messages(&check("edit", &[edited]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("3:record seq 3 was modified"), "{m:?}");

        let mut deleted = t.clone();
        deleted.remove(2);
        let m = messages(&check("delete", &[deleted]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("3:record seq 3 is missing"), "{m:?}");

        let mut swapped = t.clone();
        swapped.swap(2, 3);
        let m = messages(&check("swap", &[swapped]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("4:record seq 3 is out of order"), "{m:?}");

        let mut dup = t.clone();
        dup.insert(4, t[1].clone());
        let m = messages(&check("dup", &[dup]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("seq 2 appears again"), "{m:?}");

        // A forged record with a recomputed hash breaks the next link.
        let mut forged = t.clone();
        let mut head = ChainHead {
            seq: 1,
            hash: unseal(&t[0]).unwrap_or_else(|e| panic!("{e}")).hash,
        };
        let mut ev = AuditEvent::new(EventKind::Network, "allow", "forged");
        let (line, next) = seal(&mut ev, &head).unwrap_or_else(|e| panic!("{e}"));
        forged[1] = line;
        head = next;
        let _ = head;
        let m = messages(&check("forged", &[forged]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("3:record seq 3 does not link to seq 2"),
            "{m:?}"
        );

        let m = messages(&check(
            "garbage",
            &[vec![t[0].clone(), "oops".into(), t[1].clone()]],
        ));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("2:not a sealed audit record"), "{m:?}");
    }

    #[test]
    fn a_missing_file_in_the_middle_is_a_gap() {
        let t = trail(9);
        let r = check("midfile", &[t[..3].to_vec(), t[6..].to_vec()]);
        let m = messages(&r);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("1:records seq 4–6 (3 records) are missing"),
            "{m:?}"
        );
    }
}
