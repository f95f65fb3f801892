//! `palisade audit verify` over trail files someone may have tampered
//! with: the input is cut at NUL bytes (never in a trail: JSON escapes
//! them) into up to four files, `audit.jsonl`, `audit.jsonl.1`…, given in
//! reverse order (verify puts them in chain order itself).
//!
//! Properties: never a panic and never an error for content (only for I/O);
//! a trail found intact with three or more records in one file is no
//! longer intact once a record in its middle is removed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::audit::verify::verify;
use palisade_fuzz::scratch_file;

fuzz_target!(|data: &[u8]| {
    let files: Vec<&[u8]> = data.split(|b| *b == 0).take(4).collect();
    let mut paths = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        let name = match i {
            0 => "audit.jsonl".to_string(),
            n => format!("audit.jsonl.{n}"),
        };
        paths.push(scratch_file(&name, bytes));
    }
    paths.reverse();
    let report = match verify(&paths) {
        Ok(r) => r,
        Err(e) => panic!("verify fails on content instead of reporting it: {e}"),
    };
    for f in &report.findings {
        let _ = f.to_string();
    }
    if files.len() != 1 || !report.intact() || report.records < 3 {
        return;
    }
    // Cut the second non-empty line.
    let text = files[0];
    let mut lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let Some(second) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .nth(1)
        .map(|(i, _)| i)
    else {
        return;
    };
    lines.remove(second);
    let cut = scratch_file("audit.jsonl", &lines.concat());
    let again = verify(&[cut]).expect("verify reads the cut trail");
    assert!(
        !again.intact(),
        "a record removed from the middle of an intact trail goes unnoticed"
    );
});
