//! The `palisade` command line. Every command that talks to a running daemon
//! goes through the gRPC API; there are no side doors.

mod approver;
mod audit;
mod daemon;
mod decision;
mod discovery;
mod doctor;
mod elevation;
mod events;
mod exec;
mod keys;
mod mount;
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
        /// Run the command as this user (`name`, `uid` or `uid:gid`),
        /// switched to once the agent is confined: an agent started as
        /// root and dropping its own privileges is root until it does.
        #[arg(long)]
        user: Option<String>,
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
    /// Break-glass: let an identity hold one of its elevated roles for a
    /// time (operator), or end an elevation early with `--end ID`.
    Elevate {
        #[arg(required_unless_present = "end")]
        identity: Option<String>,
        #[arg(long, required_unless_present = "end")]
        role: Option<String>,
        /// How long, e.g. 30m or 2h (at most a day).
        #[arg(long = "for", required_unless_present = "end")]
        duration: Option<String>,
        /// Why (required to start one; recorded in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
        /// End this elevation now.
        #[arg(long, conflicts_with_all = ["identity", "role", "duration"])]
        end: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// List active elevations (operator).
    Elevations {
        #[arg(long)]
        json: bool,
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
    /// Ask whether a tool call may happen (run enrolled, e.g. under `palisade
    /// exec`). Exit 0 = ALLOW, 1 = DENY, 3 = APPROVAL_REQUIRED.
    Decide {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        tool: String,
        #[arg(long)]
        action: String,
        #[arg(long, default_value = "")]
        resource: String,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Context as a JSON object.
        #[arg(long, default_value = "{}")]
        context: String,
        /// The override token of an approved approval.
        #[arg(long)]
        override_token: Option<String>,
        /// On APPROVAL_REQUIRED, wait up to this many seconds for an
        /// operator, then make the approved call.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print a fresh single-use token for the caller's identity (run enrolled).
    Token {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Lifetime in seconds (0 = the daemon's default).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
    },
    /// List pending approvals (operator).
    Approvals {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Include resolved approvals.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending approval (operator), or apply a signed approval
    /// (`--signed FILE`, from an approver the policy lists).
    Approve {
        #[arg(required_unless_present = "signed")]
        id: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// A signed approval (compact JWS), e.g. from `palisade keys sign-approval`.
        #[arg(long, conflicts_with = "id")]
        signed: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Reject a pending approval (operator).
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask for a just-in-time egress grant for the caller's identity.
    Egress {
        /// An address or CIDR.
        destination: String,
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u32>,
        #[arg(long, default_value = "any")]
        protocol: String,
        /// e.g. "15m" (default: the rule's max_ttl).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The token signing keys: generate, rotate, JWKS, operator tokens.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Remove every pinned program and map: enforcement ends.
    Uninstall {
        /// The daemon's pin directory.
        #[arg(long, default_value = "/sys/fs/bpf/palisade")]
        bpffs: PathBuf,
    },
    /// Mount what the daemon needs and cannot mount itself (bpffs, tracefs,
    /// securityfs) in the host's mount namespace, and make it visible in
    /// this one. The systemd unit runs it as `ExecStartPre=+`.
    Mount {
        /// The daemon's config (its pin directory); defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check this host for what Palisade needs; say what is missing and how to fix it.
    Doctor {
        /// The daemon's config (pin directory, cgroup); defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Work with the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Show audit events: stream them from the daemon (--follow) or read trail files.
    Events {
        /// Stream events from the daemon as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Only this identity (repeatable).
        #[arg(long = "identity", value_name = "ID")]
        identities: Vec<String>,
        /// Only this kind: network, socket, policy, enrolment, kill_switch, loss, daemon (repeatable).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only this verdict: deny, audit, allow, … (repeatable).
        #[arg(long = "verdict", value_name = "VERDICT")]
        verdicts: Vec<String>,
        /// Print the records as JSON lines, as in the trail.
        #[arg(long)]
        json: bool,
        /// Trail files to read (without --follow).
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain: report every edited, missing or reordered record.
    Verify {
        /// Trail files, in any order (e.g. /var/log/palisade/audit.jsonl*).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if cli.command.prints_a_report() {
        stop_quietly_when_the_reader_leaves();
    }
    let result = match cli.command {
        Command::Daemon { config, detach } => daemon::run(&config, detach),
        Command::Exec {
            socket,
            identity,
            user,
            command,
        } => exec::run(&socket, &identity, user.as_deref(), &command),
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
        Command::Elevate {
            identity,
            role,
            duration,
            reason,
            end,
            json,
            socket,
        } => elevation::elevate(
            &socket,
            &elevation::ElevateArgs {
                identity: identity.as_deref(),
                role: role.as_deref(),
                duration: duration.as_deref(),
                reason: &reason,
                end: end.as_deref(),
                json,
            },
        ),
        Command::Elevations { json, socket } => elevation::list(&socket, json),
        Command::Reload { socket } => ops::reload(&socket),
        Command::Uninstall { bpffs } => ops::uninstall(&bpffs),
        Command::Decide {
            socket,
            tool,
            action,
            resource,
            params,
            context,
            override_token,
            wait,
            json,
        } => decision::decide(
            &socket,
            &tool,
            &action,
            &resource,
            &params,
            &context,
            override_token.as_deref(),
            wait,
            json,
        ),
        Command::Token { socket, ttl } => decision::token(&socket, ttl),
        Command::Approvals { socket, all, json } => decision::approvals(&socket, all, json),
        Command::Approve {
            id,
            reason,
            signed,
            socket,
        } => match signed {
            Some(file) => decision::apply_signed(&socket, &file),
            None => decision::resolve(&socket, &id.unwrap_or_default(), true, &reason),
        },
        Command::Reject { id, reason, socket } => decision::resolve(&socket, &id, false, &reason),
        Command::Egress {
            destination,
            ports,
            protocol,
            ttl,
            reason,
            socket,
        } => decision::egress(
            &socket,
            &destination,
            &ports,
            &protocol,
            ttl.as_deref(),
            &reason,
        ),
        Command::Keys { command } => keys::run(command),
        Command::Mount { config } => mount::run(config.as_deref()),
        Command::Doctor { config, json } => doctor::run(config.as_deref(), json),
        Command::Audit { command } => match command {
            AuditCommand::Verify { files } => audit::verify(&files),
        },
        Command::Events {
            follow,
            socket,
            identities,
            kinds,
            verdicts,
            json,
            files,
        } => events::run(
            &socket,
            follow,
            &files,
            events::Filters {
                identities,
                kinds,
                verdicts,
            },
            json,
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Commands whose output is a report read by a person or a pipe
    /// (`palisade status | head`). Not the daemon, whose sockets must see
    /// EPIPE as an error, nor `exec`, which hands its process to the agent.
    fn prints_a_report(&self) -> bool {
        matches!(
            self,
            Command::Status { .. }
                | Command::Policy { .. }
                | Command::Audit { .. }
                | Command::Doctor { .. }
                | Command::Approvals { .. }
                | Command::Elevations { .. }
        )
    }
}

/// The Rust runtime ignores SIGPIPE, which turns a closed pipe into a
/// panic in `println!`. A report whose reader has gone ends the way other
/// Unix tools end: by the signal, without a message.
fn stop_quietly_when_the_reader_leaves() {
    // SAFETY: resets one signal's disposition to the default before any
    // other thread exists; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
