//! The trail is the spool. A sink (the OTLP exporter) reads records back
//! from the trail files behind the writer, and keeps its position — the
//! last `seq` it delivered — in a cursor file. A sink that is down simply
//! falls behind; when it is back it catches up from disk, across rotations
//! and daemon restarts. Records that retention deleted before the sink got
//! to them show up as a gap in `seq`, which the sink counts and reports.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{
    chain::unseal,
    trail::{TrailFiles, inode},
};

/// One record read back.
#[derive(Clone, Debug)]
pub struct SpoolRecord {
    pub seq: u64,
    /// The sealed line, as written (no newline).
    pub line: String,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<SpoolRecord>,
    /// Records between the cursor and this batch that no longer exist.
    pub missing: u64,
}

struct Open {
    reader: BufReader<File>,
    ino: u64,
    /// Bytes consumed (complete lines only).
    offset: u64,
}

pub struct TrailReader {
    files: TrailFiles,
    cursor_path: PathBuf,
    /// Last delivered (committed) seq.
    committed: u64,
    /// Last seq read (delivered or not).
    read: u64,
    open: Option<Open>,
}

impl TrailReader {
    /// Read the cursor (0 = nothing delivered yet).
    pub fn new(files: TrailFiles, cursor_path: PathBuf) -> io::Result<Self> {
        let committed = match fs::read_to_string(&cursor_path) {
            Ok(text) => text.trim().parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cursor file {} does not hold a sequence number ({e}); remove it to deliver the whole trail again",
                        cursor_path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            files,
            cursor_path,
            committed,
            read: committed,
            open: None,
        })
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Persist `seq` as delivered (write a temp file, rename over).
    pub fn commit(&mut self, seq: u64) -> io::Result<()> {
        let tmp = self.cursor_path.with_extension("tmp");
        fs::write(&tmp, format!("{seq}\n"))?;
        fs::rename(&tmp, &self.cursor_path)?;
        self.committed = seq;
        Ok(())
    }

    /// Up to `max` records after the last one read.
    pub fn next_batch(&mut self, max: usize) -> io::Result<Batch> {
        let mut batch = Batch::default();
        if self.open.is_none() && !self.position()? {
            return Ok(batch);
        }
        let mut line = String::new();
        while batch.records.len() < max {
            let Some(open) = self.open.as_mut() else {
                break;
            };
            line.clear();
            let n = open.reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                // End of what is written. Go back to the start of a partial
                // line; move on if the writer has rotated this file away.
                open.reader.seek(SeekFrom::Start(open.offset))?;
                if inode(&self.files.current) == Some(open.ino) {
                    break;
                }
                // Rotated: everything it will ever hold is there; read the
                // rest, then continue in the next file.
                let mut rest = String::new();
                let mut more = false;
                loop {
                    rest.clear();
                    let n = open.reader.read_line(&mut rest)?;
                    if n == 0 || !rest.ends_with('\n') {
                        break;
                    }
                    open.offset += n as u64;
                    if let Some(r) = take(&mut self.read, &rest, &mut batch) {
                        batch.records.push(r);
                        more = true;
                    }
                }
                let ino = open.ino;
                if !self.next_file(ino)? {
                    break;
                }
                if more && batch.records.len() >= max {
                    break;
                }
                continue;
            }
            open.offset += n as u64;
            if let Some(r) = take(&mut self.read, &line, &mut batch) {
                batch.records.push(r);
            }
        }
        Ok(batch)
    }

    /// Open the file that holds the record after `read`: the last file
    /// whose first record is at or before it (or the first file).
    fn position(&mut self) -> io::Result<bool> {
        let all = self.files.all()?;
        let mut chosen = None;
        for path in &all {
            match first_seq(path)? {
                Some(first) if first <= self.read + 1 => chosen = Some(path.clone()),
                Some(_) => break,
                None => {}
            }
        }
        let Some(path) = chosen.or_else(|| all.first().cloned()) else {
            return Ok(false);
        };
        self.open_at_start(&path)
    }

    /// After the file with inode `ino` is exhausted, open the one after it.
    fn next_file(&mut self, ino: u64) -> io::Result<bool> {
        let all = self.files.all()?;
        let at = all.iter().position(|p| inode(p) == Some(ino));
        self.open = None;
        let next = match at {
            Some(i) => all.get(i + 1).cloned(),
            // Our file is gone (retention): find our place again.
            None => return self.position(),
        };
        match next {
            Some(p) => self.open_at_start(&p),
            None => Ok(false),
        }
    }

    fn open_at_start(&mut self, path: &Path) -> io::Result<bool> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let ino = file.metadata()?.ino();
        self.open = Some(Open {
            reader: BufReader::new(file),
            ino,
            offset: 0,
        });
        Ok(true)
    }
}

/// Keep a line if it is past `read`; count a gap before it.
fn take(read: &mut u64, line: &str, batch: &mut Batch) -> Option<SpoolRecord> {
    let rec = unseal(line).ok()?;
    if rec.seq <= *read {
        return None;
    }
    if rec.seq > *read + 1 {
        batch.missing += rec.seq - *read - 1;
    }
    *read = rec.seq;
    Some(SpoolRecord {
        seq: rec.seq,
        line: line.trim_end_matches(['\n', '\r']).to_string(),
    })
}

fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).lines() {
        if let Ok(r) = unseal(&line?) {
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
        chain::seal,
        trail::{TrailOptions, TrailWriter},
    };

    #[test]
    fn follows_the_writer_across_rotation_and_resumes_from_the_cursor() {
        let dir = std::env::temp_dir().join(format!("palisade-spool-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let (mut w, _) = TrailWriter::open(
            &path,
            TrailOptions {
                rotate_bytes: 1200,
                keep: 0,
                fsync: false,
                keep_min_age: std::time::Duration::ZERO,
                export_cursor: None,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let write = |w: &mut TrailWriter, n: usize| {
            for _ in 0..n {
                let mut ev = AuditEvent::new(EventKind::Daemon, "x", "y");
                let (line, head) = seal(&mut ev, w.head()).unwrap_or_else(|e| panic!("{e}"));
                w.append(&[line], head).unwrap_or_else(|e| panic!("{e}"));
            }
        };
        let cursor = dir.join("cursor");
        let mut r =
            TrailReader::new(w.files().clone(), cursor.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mut seen = Vec::new();
        write(&mut w, 7);
        loop {
            let b = r.next_batch(3).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(b.missing, 0);
            if b.records.is_empty() {
                break;
            }
            seen.extend(b.records.iter().map(|x| x.seq));
        }
        r.commit(7).unwrap_or_else(|e| panic!("{e}"));
        write(&mut w, 20);
        // A new reader (a restarted daemon) resumes after the cursor.
        let mut r = TrailReader::new(w.files().clone(), cursor).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.committed(), 7);
        loop {
            let b = r.next_batch(4).unwrap_or_else(|e| panic!("{e}"));
            if b.records.is_empty() {
                break;
            }
            seen.extend(b.records.iter().map(|x| x.seq));
        }
        assert_eq!(seen, (1..=27).collect::<Vec<u64>>());
        assert!(w.files().rotated().unwrap_or_default().len() >= 2);
        let _ = fs::remove_dir_all(&dir);
    }
}
