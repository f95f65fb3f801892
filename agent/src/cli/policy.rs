//! `palisade policy check | test | explain | diff | schema`: policy as code,
//! without a daemon.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::policy::{self, Loaded, PolicyErrors, Protocol, decide::ToolCall, explain, suite};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate policy files or directories; prints `file:line:column:
    /// message` per problem and exits 1 on any error.
    Check {
        /// Treat lint warnings as errors.
        #[arg(long)]
        strict: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run test suites: every case reported, exit 1 if any fails.
    Test {
        /// Policy to test (default: the `policy:` key of each suite).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(required = true)]
        suites: Vec<PathBuf>,
    },
    /// Show which rules decide a destination or a tool call, and why.
    Explain {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        identity: String,
        /// `ADDRESS:PORT`, `[IPV6]:PORT` or `HOST:PORT`.
        #[arg(long, conflicts_with = "tool")]
        destination: Option<String>,
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[arg(long, requires = "action")]
        tool: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value = "")]
        resource: String,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Caller context as a JSON object.
        #[arg(long, default_value = "{}")]
        context: String,
        /// Clock for the decision (RFC 3339); default now.
        #[arg(long)]
        now: Option<String>,
        /// A request to a gateway service (`--service S --request 'POST
        /// /v1/x?y=1'`), mapped to its tool call as the gateway maps it.
        #[arg(long, requires = "request", conflicts_with_all = ["tool", "destination"])]
        service: Option<String>,
        #[arg(long, requires = "service")]
        request: Option<String>,
        /// The request's JSON body.
        #[arg(long, requires = "request", conflicts_with = "form")]
        json: Option<String>,
        /// The request's form body (`a=1&b=2`).
        #[arg(long, requires = "request")]
        form: Option<String>,
    },
    /// What becomes allowed or denied going from OLD to NEW.
    Diff { old: PathBuf, new: PathBuf },
    /// Print the JSON Schema of policy files (for editors).
    Schema,
    /// The smallest policy that allows what an identity did, from the
    /// audit trail; with --tests, its least-privilege test suite.
    Suggest(super::discovery::SuggestArgs),
    /// Rules, roles and tool permissions that decided nothing in the
    /// trail's window: what to tighten.
    Unused(super::discovery::UnusedArgs),
    /// Send policy files to the running daemon (operator): validated whole,
    /// written to its policy location, applied.
    Push {
        #[arg(long, default_value = super::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { strict, paths } => check(&paths, strict),
        PolicyCommand::Test { policy, suites } => test(policy.as_deref(), &suites),
        PolicyCommand::Explain {
            policy,
            identity,
            destination,
            protocol,
            tool,
            action,
            resource,
            params,
            context,
            now,
            service,
            request,
            json,
            form,
        } => {
            let p = load_or_print(&policy)?;
            let (tool, action, resource, params) = match (service, request) {
                (Some(service), Some(request)) => {
                    let s = p
                        .service(&service)
                        .with_context(|| format!("no service `{service}` in the policy"))?;
                    let (method, target) = request
                        .split_once(' ')
                        .with_context(|| format!("--request `{request}`: write `METHOD PATH`"))?;
                    let (ct, body) = match (&json, &form) {
                        (Some(j), _) => (Some("application/json"), j.as_bytes()),
                        (None, Some(f)) => {
                            (Some("application/x-www-form-urlencoded"), f.as_bytes())
                        }
                        (None, None) => (None, &[][..]),
                    };
                    let req = policy::service::HttpRequest {
                        method,
                        target: target.trim(),
                        content_type: ct,
                        body,
                    };
                    match s.call_for(&p, &req) {
                        Ok(call) => {
                            println!(
                                "request: {method} {} → route {} ({})",
                                target.trim(),
                                call.route.id,
                                call.route.path
                            );
                            (
                                Some(call.tool),
                                Some(call.action),
                                call.resource,
                                serde_json::Value::Object(call.params).to_string(),
                            )
                        }
                        Err(e) => {
                            println!("verdict: deny ({}): {e}", e.code());
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
                _ => (tool, action, resource, params),
            };
            let lines = match (destination, tool) {
                (Some(dest), None) => {
                    let proto = parse_protocol(&protocol)?;
                    let target = suite::parse_destination(&dest, proto).with_context(|| {
                        format!("`{dest}`: write ADDRESS:PORT, [IPV6]:PORT or HOST:PORT")
                    })?;
                    explain::egress(&p, &identity, &target)
                }
                (None, Some(tool)) => {
                    let params = json_object(&params, "--params")?;
                    let context = json_object(&context, "--context")?;
                    let now = match now {
                        None => std::time::SystemTime::now(),
                        Some(t) => humantime::parse_rfc3339_weak(&t)
                            .with_context(|| format!("--now `{t}`"))?,
                    };
                    let call = ToolCall {
                        identity: &identity,
                        tool: &tool,
                        action: action.as_deref().unwrap_or_default(),
                        resource: &resource,
                        params: &params,
                        context: &context,
                        now,
                    };
                    explain::tool(&p, &call)
                }
                _ => bail!("give either --destination or --tool with --action"),
            };
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Diff { old, new } => {
            let (a, b) = (load_or_print(&old)?, load_or_print(&new)?);
            let changes = policy::diff::diff(&a, &b);
            println!("{} -> {}", a.version, b.version);
            if changes.is_empty() {
                println!("no change in what is allowed or denied");
            }
            for c in changes {
                println!("  {c}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Push { socket, files } => super::decision::push(&socket, &files),
        PolicyCommand::Suggest(args) => super::discovery::suggest(&args),
        PolicyCommand::Unused(args) => super::discovery::unused(&args),
        PolicyCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&policy::schema::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_errors(e: &PolicyErrors) {
    for d in &e.diagnostics {
        eprintln!("{d}");
    }
}

/// Load a policy, printing its problems; an invalid policy is an error.
pub(super) fn load_or_print(path: &Path) -> anyhow::Result<policy::Policy> {
    match policy::load(path) {
        Ok(Loaded { policy, warnings }) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            Ok(policy)
        }
        Err(e) => {
            print_errors(&e);
            bail!("{} is not a valid policy", path.display())
        }
    }
}

fn check(paths: &[PathBuf], strict: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in paths {
        let result = if strict {
            policy::load_strict(path)
        } else {
            policy::load(path)
        };
        match result {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                let p = &loaded.policy;
                println!(
                    "{}: ok ({} identities, {} roles, {} rules, version {})",
                    path.display(),
                    p.identities.len(),
                    p.roles.len(),
                    p.rules.len(),
                    p.version
                );
            }
            Err(errors) => {
                failed = true;
                print_errors(&errors);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn test(policy_override: Option<&Path>, suites: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in suites {
        let s = match suite::Suite::load(file) {
            Ok(s) => s,
            Err(e) => {
                print_errors(&e);
                failed += 1;
                continue;
            }
        };
        let Some(policy_path) = policy_override
            .map(Path::to_path_buf)
            .or_else(|| s.policy_path())
        else {
            eprintln!(
                "{}: no policy: set `policy:` in the suite or pass --policy",
                file.display()
            );
            failed += 1;
            continue;
        };
        let p = match load_or_print(&policy_path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
                continue;
            }
        };
        println!(
            "{} against {} ({})",
            file.display(),
            policy_path.display(),
            p.version
        );
        for r in s.run(&p) {
            if r.passed {
                passed += 1;
                println!("  PASS {}: {}", r.name, r.got);
            } else {
                failed += 1;
                println!(
                    "  FAIL {} ({}): expected {}, got {}",
                    r.name, r.loc, r.expected, r.got
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn json_object(
    text: &str,
    flag: &str,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text).with_context(|| format!("{flag} is not JSON"))? {
        serde_json::Value::Object(m) => Ok(m),
        other => bail!("{flag} must be a JSON object, got {other}"),
    }
}

fn parse_protocol(text: &str) -> anyhow::Result<Protocol> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "any" => Ok(Protocol::Any),
        other => bail!("--protocol `{other}`: use tcp, udp or any"),
    }
}
