//! `palisade mount`: what the daemon needs mounted, mounted where it lasts.

use std::{path::Path, process::ExitCode};

use crate::{
    config::Config,
    mounts::{Mounted, service},
};

pub fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => Config::default(),
    };
    let outcomes = service::mount_for_service(&config.bpffs)?;
    let mut failed = false;
    for o in &outcomes {
        match &o.host {
            Ok(how) => println!(
                "{}: {} {}{}",
                o.fs,
                o.path,
                match how {
                    Mounted::Present => "was mounted",
                    Mounted::Now => "mounted",
                },
                if o.attached {
                    "; made visible in this mount namespace"
                } else {
                    ""
                }
            ),
            // Without securityfs only the LSM check is blind; the rest is fatal.
            Err(e) if o.fs == "securityfs" => {
                eprintln!(
                    "{}: not mounted ({e}); `palisade doctor` cannot list the LSMs",
                    o.fs
                );
            }
            Err(e) => {
                eprintln!("{}: {} could not be mounted: {e}", o.fs, o.path);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
