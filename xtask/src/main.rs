//! Developer tasks: `cargo xtask setup | build | test | bench | fuzz | demo`.

mod bench;
mod clients;
mod debian;
mod demo;
mod fresh_host;
mod fuzz;
mod leftovers;
mod setup;
mod test;
mod toolchain;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

  setup            install what builds and tests need (idempotent)
  build            build the daemon (release) and the test binaries
  test             build everything and run the whole suite (needs root)
  bench <name>     run a benchmark: connect, policy, dns, decide, suggest, spawn,
                   gateway, state
  fuzz <target>    fuzz one target (or all) [--seconds N, default 60];
                   without a target, list them
  demo             start a daemon, run an agent that reaches its API and is
                   blocked from exfiltrating, show the audit trail, clean up
  fresh-host       follow the README on a brand-new Debian 12 root (debootstrap)
                   [--until setup|demo|test|.ci/run] [--keep]
                   with nothing done by hand; report each step's time (root, slow)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build") => test::build(),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("demo") => demo::run(),
        Some("fresh-host") => fresh_host::run(&args[1..]),
        Some("fresh-host-inside") => fresh_host::inside(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
