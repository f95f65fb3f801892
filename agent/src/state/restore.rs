//! Reading a journal back: every valid record, in order, and an account of
//! every line that is not one. Damage anywhere means records may be missing
//! whose absence would open something (a spent budget, a used token, a
//! consumed approval); the caller turns that into fail-closed defaults.

use std::{collections::HashMap, path::Path};

use super::{
    frame::{self, Bad},
    record::{ApprovalRecord, FORMAT, GrantRecord, Record},
};

/// What a journal says, last record of each key winning.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Unix ms (see `Record::Header`).
    pub replay_since: Option<u64>,
    pub budgets: HashMap<(String, String), BudgetLevel>,
    pub budget_floor_ms: Option<u64>,
    /// identity → jti → exp
    pub used: HashMap<String, HashMap<String, u64>>,
    /// identity → unix ms of its last revocation.
    pub revoked: HashMap<String, u64>,
    pub approvals: HashMap<String, ApprovalRecord>,
    pub grants: HashMap<String, Vec<GrantRecord>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BudgetLevel {
    pub tokens: f64,
    pub limit: f64,
    pub per: crate::policy::Window,
    pub at_ms: u64,
}

/// A line that is not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedLine {
    /// 1-based line number and byte offset of its start.
    pub line: usize,
    pub offset: u64,
    pub what: String,
}

impl std::fmt::Display for DamagedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Line 0: the file as a whole (not the daemon's own).
        if self.line == 0 {
            return write!(f, "the file: {}", self.what);
        }
        write!(
            f,
            "line {} (byte {}): {}",
            self.line, self.offset, self.what
        )
    }
}

/// The outcome of reading a journal file.
#[derive(Debug, Default)]
pub struct Read {
    pub snapshot: Snapshot,
    pub records: usize,
    pub damage: Vec<DamagedLine>,
}

impl Snapshot {
    fn apply(&mut self, r: Record) -> Result<(), String> {
        match r {
            Record::Header {
                format,
                replay_since,
                replay_since_ms,
                ..
            } => {
                if format != FORMAT {
                    return Err(format!(
                        "journal format {format}; this daemon reads format {FORMAT}"
                    ));
                }
                self.replay_since = Some(super::record::ms_or_end_of_second(
                    replay_since_ms,
                    replay_since,
                ));
            }
            Record::Budget {
                identity,
                budget,
                tokens,
                limit,
                per,
                at_ms,
            } => {
                self.budgets.insert(
                    (identity, budget),
                    BudgetLevel {
                        tokens,
                        limit,
                        per,
                        at_ms,
                    },
                );
            }
            Record::BudgetFloor { at_ms } => {
                self.budget_floor_ms = Some(self.budget_floor_ms.map_or(at_ms, |f| f.max(at_ms)));
            }
            Record::Used { identity, jti, exp } => {
                let e = self
                    .used
                    .entry(identity)
                    .or_default()
                    .entry(jti)
                    .or_insert(exp);
                *e = (*e).max(exp);
            }
            Record::Revoked {
                identity,
                at,
                at_ms,
            } => {
                let at = super::record::ms_or_end_of_second(at_ms, at);
                let e = self.revoked.entry(identity).or_insert(at);
                *e = (*e).max(at);
            }
            Record::Approval(a) => {
                self.approvals.insert(a.id.clone(), a);
            }
            Record::Grants { identity, grants } => {
                self.grants.insert(identity, grants);
            }
        }
        Ok(())
    }
}

/// Read `bytes` (a whole journal file).
pub fn parse(bytes: &[u8]) -> Read {
    let mut out = Read::default();
    if bytes.is_empty() {
        out.damage.push(DamagedLine {
            line: 1,
            offset: 0,
            what: "the file is empty (its header is missing)".into(),
        });
        return out;
    }
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let (line, next, complete) = match rest.iter().position(|b| *b == b'\n') {
            Some(n) => (&rest[..n], offset + n + 1, true),
            None => (rest, bytes.len(), false),
        };
        let result = if complete {
            frame::decode(line)
        } else {
            Err(Bad::Truncated)
        };
        let problem = match result {
            Ok(r) => {
                let is_header = matches!(r, Record::Header { .. });
                if line_no == 1 && !is_header {
                    Some("the first record is not the journal header".to_string())
                } else {
                    match out.snapshot.apply(r) {
                        Ok(()) => {
                            out.records += 1;
                            None
                        }
                        Err(e) => Some(e),
                    }
                }
            }
            Err(Bad::Truncated) => Some(format!(
                "the file ends inside a record ({} bytes without a newline)",
                line.len()
            )),
            Err(Bad::Checksum) => Some("checksum mismatch or malformed line".into()),
            Err(Bad::Unknown(e)) => Some(format!("record not understood: {e}")),
        };
        if let Some(what) = problem {
            out.damage.push(DamagedLine {
                line: line_no,
                offset: offset as u64,
                what,
            });
        }
        offset = next;
    }
    out
}

/// Read the journal at `path`; `Ok(None)` when there is none.
pub fn read(path: &Path) -> std::io::Result<Option<Read>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(parse(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
