use std::{os::unix::process::CommandExt, path::Path, process::ExitCode};

use crate::{api::client, proto};

/// Environment variables that carry operator credentials: never handed to
/// an agent (an enrolled process is never an operator, but a credential in
/// its environment would still leak to whatever it talks to).
fn is_operator_credential(name: &str) -> bool {
    name.starts_with("PALISADE_OPERATOR")
}

/// Enrol this very process (the daemon sees our pid through the socket),
/// close what it inherited that its guard cannot judge, confine it
/// (namespaces, read-only host controls, capabilities, no_new_privs,
/// Landlock scoping, the seccomp filter),
/// then replace it with the command: the command starts confined.
pub fn run(socket: &Path, identity: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let enrolled = super::block_on(async {
        let mut c = client::connect(socket).await?;
        let r = c
            .enroll(proto::EnrollRequest {
                identity: identity.to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("enrolment refused: {}", s.message()))?;
        anyhow::Ok(r.into_inner())
    })??;
    tracing::debug!(identity = %enrolled.identity, cgroup = %enrolled.cgroup, "enrolled");
    let Some((program, args)) = command.split_first() else {
        anyhow::bail!("no command given");
    };
    let daemon_paths = crate::confine::DaemonPaths {
        protected: enrolled.protected_paths.iter().map(Into::into).collect(),
        hidden: enrolled.hidden_paths.iter().map(Into::into).collect(),
        read_only_root: enrolled.read_only_root,
        writable: enrolled.writable.iter().map(Into::into).collect(),
    };
    let closed = crate::inherited::close_unjudged(
        enrolled.keep_inherited_sockets,
        &crate::confine::inherited_file_rule(&daemon_paths, socket),
    )?;
    for (fd, kind) in &closed {
        tracing::info!(fd, %kind, "closed an inherited descriptor the agent may not keep");
    }
    let applied = crate::confine::apply(&enrolled.keep_capabilities, &daemon_paths)
        .map_err(|e| anyhow::anyhow!("confining the agent: {e}"))?;
    // After no_new_privs (set by `apply`), before the agent runs.
    if enrolled.unscoped {
        tracing::debug!("confinement.unscoped: no Landlock scoping");
    } else {
        let scoped = crate::landlock::scope_to_own_processes().map_err(|e| {
            anyhow::anyhow!(
                "scoping the agent to its own processes: {e}; without it the agent could take over \
                 processes outside its identity (/proc/PID/mem). Set `confinement.unscoped: true` \
                 for identity `{}` to run it anyway",
                enrolled.identity
            )
        })?;
        tracing::debug!(abi = scoped.abi, "{}", scoped.describe());
    }
    tracing::debug!(
        namespaces = applied.namespaces,
        read_only = ?applied.read_only,
        hidden = ?applied.hidden,
        dropped = ?applied.dropped,
        "confined"
    );
    crate::seccomp::install(crate::seccomp::FilterOptions {
        allow_ptrace: enrolled.keep_capabilities.iter().any(|c| c == "sys_ptrace"),
    })
    .map_err(|e| anyhow::anyhow!("installing the seccomp filter: {e}"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_operator_credential) {
            cmd.env_remove(name);
        }
    }
    let err = cmd.exec();
    eprintln!("palisade: cannot run `{program}`: {err}");
    Ok(ExitCode::from(127))
}
