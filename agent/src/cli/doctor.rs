//! `palisade doctor`: what this host has and lacks, and how to fix it.

use std::{path::Path, process::ExitCode};

use crate::{config::Config, doctor};

pub fn run(config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
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
    let report = doctor::run(&config);
    if json {
        let v = serde_json::json!({
            "ready": report.ready(),
            "checks": report.checks,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("palisade doctor: what this host needs for kernel enforcement\n");
        print!("{report}");
    }
    Ok(if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
