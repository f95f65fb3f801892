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
pub fn run(
    socket: &Path,
    identity: &str,
    user: Option<&str>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    // Checked before enrolling, so a typo enrols nothing.
    let user = user.map(parse_user).transpose()?;
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
        exposed_links: enrolled.exposed_links.iter().map(Into::into).collect(),
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
    if let Some(user) = &user {
        become_user(user).map_err(|e| anyhow::anyhow!("switching to {}: {e}", user.label))?;
    }
    // With the agent's own credentials and mounts, before it runs.
    if let Some(exposed) = crate::confine::replaceable_links(&daemon_paths.exposed_links).first() {
        anyhow::bail!("refusing to run the agent: {}", exposed_reason(exposed));
    }
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
    if let Some(user) = &user {
        if let Some(name) = &user.name {
            cmd.env("USER", name).env("LOGNAME", name);
        }
        if let Some(home) = &user.home {
            cmd.env("HOME", home);
        }
    }
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_operator_credential) {
            cmd.env_remove(name);
        }
    }
    let err = cmd.exec();
    eprintln!("palisade: cannot run `{program}`: {err}");
    Ok(ExitCode::from(127))
}

/// Why a daemon path in a shared directory the agent could write stops
/// exec, and what the operator can do.
fn exposed_reason(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("/")).display();
    let remedy = format!(
        "or run the agent as a user that cannot write {dir} (`--user`), or with \
         `confinement.read_only_root`"
    );
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        format!(
            "the daemon reaches one of its files through the link {} in {dir}, a directory this \
             agent could write, so it could re-point the link and have the daemon read a file of \
             its own (a policy, a key). Give the daemon the link's target ({}) in its \
             configuration, or keep the link in a directory of the daemon's own, {remedy}",
            path.display(),
            std::fs::canonicalize(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "it leads nowhere now".into()),
        )
    } else {
        format!(
            "the daemon keeps its file {} directly in {dir}, a directory this agent could write, \
             so it could plant what the daemon makes there (the file while it is missing, \
             temporary files, rotated segments) as links to files of its choosing. Give the \
             daemon a directory of its own for it (the defaults are), {remedy}",
            path.display(),
        )
    }
}

/// The user `--user` names.
struct AgentUser {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    /// Its passwd entry's name and home, when it has one (set as `USER`,
    /// `LOGNAME` and `HOME`, so the agent does not look for root's).
    name: Option<String>,
    home: Option<std::path::PathBuf>,
    label: String,
}

/// `name` (its primary group), `uid` (the group of its passwd entry, else
/// the same number) or `uid:gid`.
fn parse_user(spec: &str) -> anyhow::Result<AgentUser> {
    use nix::unistd::{Gid, Group, Uid, User};
    let label = format!("user `{spec}`");
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // A number need not have a passwd entry; a name must.
    let (uid, entry) = match user.parse::<u32>() {
        Ok(n) => (Uid::from_raw(n), User::from_uid(Uid::from_raw(n))?),
        Err(_) => {
            let e = User::from_name(user)?
                .ok_or_else(|| anyhow::anyhow!("--user {spec}: no user `{user}` on this host"))?;
            (e.uid, Some(e))
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => {
                Group::from_name(g)?
                    .ok_or_else(|| anyhow::anyhow!("--user {spec}: no group `{g}` on this host"))?
                    .gid
            }
        },
        None => entry
            .as_ref()
            .map_or_else(|| Gid::from_raw(uid.as_raw()), |e| e.gid),
    };
    Ok(AgentUser {
        uid,
        gid,
        name: entry.as_ref().map(|e| e.name.clone()),
        home: entry.map(|e| e.dir),
        label,
    })
}

/// Switch every id (no supplementary groups); leaving root clears the
/// capabilities that were left.
fn become_user(user: &AgentUser) -> nix::Result<()> {
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresgid(user.gid, user.gid, user.gid)?;
    nix::unistd::setresuid(user.uid, user.uid, user.uid)
}
