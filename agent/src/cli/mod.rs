//! The `palisade` command line. Every command that talks to a running daemon
//! goes through the gRPC API; there are no side doors.

mod daemon;
mod exec;
mod ops;
mod policy;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

pub const DEFAULT_SOCKET: &str = "/run/palisade/palisade.sock";

#[derive(Parser, Debug)]
#[command(
    name = "palisade",
    version,
    about = "Kernel-level egress enforcement for AI agents"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM.
    Daemon {
        #[arg(long)]
        config: PathBuf,
        /// On exit, remove the pinned programs: enforcement ends with the daemon.
        #[arg(long)]
        detach: bool,
    },
    /// Run CMD enrolled as an identity (its children too).
    Exec {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        identity: String,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Policy as code: check, test, explain, diff, schema.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Show what the daemon enforces.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Kill switch: deny every connection of an identity, at once.
    Revoke {
        identity: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Lift an identity's kill switch.
    Restore {
        identity: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask the daemon to re-read its policy.
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Remove every pinned program and map: enforcement ends.
    Uninstall {
        /// The daemon's pin directory.
        #[arg(long, default_value = "/sys/fs/bpf/palisade")]
        bpffs: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Daemon { config, detach } => daemon::run(&config, detach),
        Command::Exec {
            socket,
            identity,
            command,
        } => exec::run(&socket, &identity, &command),
        Command::Policy { command } => policy::run(command),
        Command::Status { socket, json } => ops::status(&socket, json),
        Command::Revoke {
            identity,
            reason,
            socket,
        } => ops::kill_switch(&socket, &identity, true, &reason),
        Command::Restore {
            identity,
            reason,
            socket,
        } => ops::kill_switch(&socket, &identity, false, &reason),
        Command::Reload { socket } => ops::reload(&socket),
        Command::Uninstall { bpffs } => ops::uninstall(&bpffs),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line: `outer: inner: root cause`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A small runtime for one-shot API calls from the CLI.
fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}
