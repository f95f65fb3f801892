//! `palisade audit verify FILE…`: check the hash chain of audit trail files.

use std::{path::PathBuf, process::ExitCode};

use crate::audit::verify;

/// Exit 0 when the chain is intact, 1 with every problem as
/// `file:line: message`, 2 when a file cannot be read.
pub fn verify(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let report = match verify::verify(files) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade: {}", super::error_chain(&e));
            return Ok(ExitCode::from(2));
        }
    };
    for f in &report.findings {
        println!("{f}");
    }
    let names: Vec<String> = report
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let range = match (report.first_seq, &report.last) {
        (Some(first), Some((last, _))) => format!("seq {first}–{last}"),
        _ => "no sealed records".to_string(),
    };
    if report.intact() {
        println!(
            "{}: {} records, {range}, chain intact",
            names.join(", "),
            report.records
        );
        if let Some(at) = &report.retention {
            println!(
                "note: the trail begins after records deleted by retention, as recorded at {at}"
            );
        }
        if let Some((seq, hash)) = &report.last {
            println!(
                "head: seq {seq} hash {hash} (compare with an exported copy to detect truncation)"
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{}: {} records, {range}: {} problem{} found",
            names.join(", "),
            report.records,
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}
