use std::{path::PathBuf, process::ExitCode};

use crate::policy;

/// `palisade policy check FILE…`: every problem as `file:line:column:
/// message`; exit 1 if any file has an error.
pub fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for file in files {
        match policy::load(file) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                let p = &loaded.policy;
                println!(
                    "{}: ok ({} identities, {} rules, version {})",
                    file.display(),
                    p.identities.len(),
                    p.rules.len(),
                    p.version
                );
            }
            Err(errors) => {
                failed = true;
                for d in &errors.diagnostics {
                    eprintln!("{d}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
