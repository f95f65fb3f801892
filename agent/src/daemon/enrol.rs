//! Enrolment and the kill switch: the operations that change who is
//! confined and how.

use std::{os::unix::fs::DirBuilderExt, path::PathBuf, sync::Arc};

use tracing::info;

use super::{Daemon, DaemonError};
use crate::links::resolve_links;
use crate::{
    audit::{AuditEvent, EventKind},
    identity::{CgroupFs, PeerProcess},
};

/// Who is calling, as the kernel attests it (SO_PEERCRED on the Unix
/// socket, taken at accept), plus an operator token when the request
/// carries one.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The process that connected, pinned at accept (see `caller.rs`).
    /// A Unix caller without one is refused.
    pub peer: Option<Arc<PeerProcess>>,
    /// Over the loopback TCP listener there are no peer credentials: only an
    /// operator token can authenticate the caller.
    pub over_tcp: bool,
    /// (the daemon's end, the peer's end) of a TCP caller's connection, to
    /// find the local process behind it.
    pub tcp_peer: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// `authorization: Bearer <operator token>`.
    pub operator_token: Option<String>,
}

impl Caller {
    /// A caller on the Unix socket: the pinned process that connected.
    pub fn peer(peer: Arc<PeerProcess>) -> Self {
        Self {
            pid: peer.pid,
            uid: peer.uid,
            gid: peer.gid,
            peer: Some(peer),
            ..Self::default()
        }
    }
}

/// Where a process was enrolled.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub identity: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub policy_version: String,
    /// `confinement` of the identity.
    pub confinement: crate::policy::Confinement,
    /// The daemon's files `palisade exec` makes read-only for the agent.
    pub protected_paths: Vec<PathBuf>,
    /// The daemon's secrets `palisade exec` hides from the agent.
    pub hidden_paths: Vec<PathBuf>,
    /// Links to daemon files in shared directories (`exposed_links`).
    pub exposed_links: Vec<PathBuf>,
}

impl Daemon {
    /// The identity a process is enrolled as, if any: the identity its
    /// lineage carries (wherever it moved since), else the nearest enrolled
    /// cgroup among its own and its ancestors — as the kernel decides.
    pub fn identity_of_pid(&self, pid: u32) -> Result<Option<(String, u32)>, DaemonError> {
        Ok(self.identity_index_of_pid(pid)?.map(|index| {
            let name = self
                .registry
                .name_of(index)
                .unwrap_or_else(|| format!("#{index}"));
            (name, index)
        }))
    }

    /// Is this uid root or a member of the operator group?
    fn operator_uid(&self, caller: &Caller) -> Option<String> {
        if caller.over_tcp {
            return None;
        }
        let name = nix::unistd::User::from_uid(caller.uid.into())
            .ok()
            .flatten()
            .map(|u| u.name);
        let label = || format!("uid {} ({})", caller.uid, name.as_deref().unwrap_or("?"));
        if caller.uid == 0 {
            return Some(label());
        }
        let group = nix::unistd::Group::from_name(self.config.socket_group.as_ref()?)
            .ok()
            .flatten()?;
        (group.gid.as_raw() == caller.gid || name.as_ref().is_some_and(|n| group.mem.contains(n)))
            .then(label)
    }

    /// The operator behind `caller` (root, a member of `socket_group`, or the
    /// holder of an operator token), named for the audit trail. An enrolled
    /// process is an agent and never an operator, whatever its uid or token:
    /// agents cannot approve, revoke or widen their own scope.
    pub fn operator(&self, caller: &Caller, what: &str) -> Result<String, DaemonError> {
        if let Some((identity, _)) = self.caller_identity(caller)? {
            return Err(DaemonError::PermissionDenied(format!(
                "{what} needs an operator; the caller is agent `{identity}`"
            )));
        }
        if let Some(token) = &caller.operator_token {
            return self
                .decisions
                .tokens
                .verify_operator(token)
                .map(|c| format!("operator {}", c.sub))
                .map_err(DaemonError::Token);
        }
        self.operator_uid(caller).ok_or_else(|| {
            DaemonError::PermissionDenied(format!(
                "{what} needs an operator (root, group `{}`, or an operator token); {} is not one",
                self.config.socket_group.as_deref().unwrap_or("-"),
                if caller.over_tcp {
                    "a TCP caller without a token".to_string()
                } else {
                    format!("uid {}", caller.uid)
                }
            ))
        })
    }

    fn require_operator(&self, caller: &Caller, what: &str) -> Result<(), DaemonError> {
        self.operator(caller, what).map(drop)
    }

    /// Move the caller into `identity`'s managed cgroup. The caller is the
    /// socket peer, never a pid from the request.
    pub fn enrol(&self, caller: &Caller, identity: &str) -> Result<Enrolled, DaemonError> {
        let active = self.active();
        if active.policy.identity(identity).is_none() {
            return Err(DaemonError::UnknownIdentity(identity.to_string()));
        }
        match self.caller_identity(caller)? {
            // An agent may start more of itself, nothing else.
            Some((current, _)) if current == identity => {}
            Some((current, _)) => {
                return Err(DaemonError::PermissionDenied(format!(
                    "process {} is enrolled as `{current}` and cannot change identity",
                    caller.pid
                )));
            }
            None => self.require_operator(caller, "enrolling a process")?,
        }
        let dir: PathBuf = self.managed.join(identity);
        std::fs::create_dir_all(&dir).map_err(DaemonError::Cgroup)?;
        let cgroup_id = CgroupFs::id_of(&dir).map_err(DaemonError::Cgroup)?;
        let index = self.registry.ensure(identity)?;
        // Map first, then move: the process is never in an unmapped cgroup.
        self.maps.enrol_cgroup(cgroup_id, index)?;
        CgroupFs::move_pid(&dir, caller.pid).map_err(DaemonError::Cgroup)?;
        self.confirm_moved(caller, identity)?;
        // The kernel records the move itself (`cgroup_attach_task`); this
        // covers threads it could not see, idempotently.
        let tids = self
            .cgroups
            .threads_below(&self.cgroups.relative(&dir).unwrap_or_default());
        self.maps.seed_lineage(&tids, index)?;
        let cgroup = self.cgroups.relative(&dir).unwrap_or_default();
        // Everything the answer needs, before the record: the record says
        // the enrolment is done, and the answer should follow it at once.
        // The daemon's files are listed once (their listing reads the
        // policy directory) and serve all three answers.
        let (files, secrets) = (self.daemon_files(), self.secret_files());
        let (protected_paths, hidden_paths, exposed_links) = (
            protected_of(files.iter().chain(&secrets).map(PathBuf::as_path)),
            self.hidden_paths(&secrets),
            exposed_of(files.iter().chain(&secrets)),
        );
        info!(pid = caller.pid, identity, cgroup = %cgroup, "process enrolled");
        let mut ev = AuditEvent::new(EventKind::Enrolment, "enrolled", "exec");
        ev.identity = Some(identity.to_string());
        ev.pid = Some(caller.pid);
        ev.uid = Some(caller.uid);
        ev.cgroup_id = Some(cgroup_id);
        ev.policy_version = Some(active.policy.version.to_string());
        self.audit.emit(ev);
        Ok(Enrolled {
            identity: identity.to_string(),
            cgroup,
            cgroup_id,
            policy_version: active.policy.version.to_string(),
            confinement: active
                .policy
                .identity(identity)
                .map(|i| i.confinement.clone())
                .unwrap_or_default(),
            protected_paths,
            hidden_paths,
            exposed_links,
        })
    }

    /// The files the daemon reads or writes that decide what agents may do
    /// or record what they did (secrets apart: `secret_files`).
    fn daemon_files(&self) -> Vec<PathBuf> {
        let c = &self.config;
        let ocsf_cursor = c
            .audit
            .ocsf
            .as_ref()
            .zip(c.audit.file.as_deref())
            .map(|(o, trail)| o.cursor_path(trail));
        let files = [
            c.loaded_from.as_deref(),
            c.policy.as_deref(),
            c.audit.file.as_deref(),
            c.audit.otlp.as_ref().and_then(|o| o.cursor.as_deref()),
            // The OCSF copy of the trail and where it has got to.
            c.audit.ocsf.as_ref().map(|o| o.file.as_path()),
            ocsf_cursor.as_deref(),
            c.dns.enabled.then_some(c.dns.state_file.as_path()),
            // Budgets, used tokens, approvals, grants, elevations.
            Some(c.state.file.as_path()),
            c.elevations_file.as_deref(),
            Some(c.socket.as_path()),
        ];
        // A policy directory's entries too, those the daemon reads: one
        // may be a link elsewhere.
        let entries: Vec<PathBuf> = c
            .policy
            .as_deref()
            .filter(|p| p.is_dir())
            .and_then(|p| std::fs::read_dir(p).ok())
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| crate::policy::is_policy_file(p))
                    .collect()
            })
            .unwrap_or_default();
        files
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .chain(entries)
            .filter_map(|p| std::path::absolute(p).ok())
            .collect()
    }

    /// Make the missing directories of the daemon's files and of the
    /// active policy's secrets (mode 0700), at start and as each policy
    /// is applied, before an agent can: one the daemon made only when it
    /// first wrote there could be made first by an agent, in a shared
    /// directory (`/tmp/palisade/elevations.json`), with a forgery in it;
    /// a credential file's could hold a credential of the agent's choosing.
    pub(super) fn make_own_directories(&self) {
        for f in self.daemon_files().into_iter().chain(self.secret_files()) {
            if let Some(dir) = f.parent().filter(|d| !d.exists())
                && let Err(e) = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
            {
                tracing::warn!(dir = %dir.display(), error = %e, "making a directory of the daemon's files");
            }
        }
    }

    /// The daemon's secrets: the token signing key, the notifiers' secrets,
    /// and the files the active policy's services take credentials from
    /// (a header's value, a stdio MCP server's environment).
    fn secret_files(&self) -> Vec<PathBuf> {
        let c = &self.config;
        let active = self.active();
        let services = active.policy.services.iter().flat_map(|s| {
            let credential = s.credential.as_ref().map(|c| &c.secret);
            let env = match &s.upstream {
                crate::policy::service::Upstream::Command(cmd) => {
                    cmd.env.iter().map(|(_, v)| v).collect()
                }
                crate::policy::service::Upstream::Url(_) => Vec::new(),
            };
            credential.into_iter().chain(env).filter_map(|v| match v {
                crate::policy::service::Secret::File(p) => Some(p.clone()),
                _ => None,
            })
        });
        std::iter::once(c.tokens.key_file.clone())
            .chain(
                c.approvals
                    .notify
                    .iter()
                    .filter_map(|t| t.secret_file.clone()),
            )
            .chain(services)
            .filter_map(|p| std::path::absolute(p).ok())
            .collect()
    }

    /// Secrets an agent must not read (`secret_files`). Like
    /// `protected_of`, by directory where the directory is the daemon's
    /// own (an empty one is mounted over it, so a key rotated by rename
    /// stays out of sight), unless the API socket lives there; else the
    /// file (covered with an empty one).
    fn hidden_paths(&self, secrets: &[PathBuf]) -> Vec<PathBuf> {
        let c = &self.config;
        let socket = std::fs::canonicalize(&c.socket).unwrap_or_else(|_| c.socket.clone());
        // The secret where it is named and where its links lead; the
        // config file too (notifier secrets may be written in it: a
        // webhook's `secret:`, a Slack or Teams URL). By directory: a file
        // covered alone shows again in running agents once it is replaced
        // by a rename (an editor, `keys rotate`).
        let places: Vec<PathBuf> = secrets
            .iter()
            .cloned()
            .chain(c.loaded_from.clone())
            .flat_map(|f| {
                let real = resolve_links(&f).real;
                [f, real]
            })
            .collect();
        let hidden = canonical(
            places
                .iter()
                .map(|f| hiding_dir(f, &socket).unwrap_or(f.as_path())),
        );
        // What a covered directory holds is hidden with it.
        hidden
            .iter()
            .filter(|p| !hidden.iter().any(|d| d != *p && p.starts_with(d)))
            .cloned()
            .collect()
    }

    /// Turn an identity's kill switch on (`killed`) or off. Takes effect in
    /// the kernel at once and survives daemon restarts.
    pub fn set_kill_switch(
        &self,
        caller: &Caller,
        identity: &str,
        killed: bool,
        reason: &str,
    ) -> Result<(), DaemonError> {
        self.require_operator(caller, "the kill switch")?;
        let active = self.active();
        let index = match self.registry.index_of(identity) {
            Some(i) => i,
            None if active.policy.identity(identity).is_some() => self.registry.ensure(identity)?,
            None => return Err(DaemonError::UnknownIdentity(identity.to_string())),
        };
        self.maps.set_killed(index, killed)?;
        let mut aborted = None;
        if killed {
            // Everything the identity holds stops working, not only for
            // as long as the switch is on.
            self.decisions.tokens.revoke_issued(identity)?;
            self.withdraw_grants_of(identity);
            aborted = Some(self.destroy_sockets_of(identity, index));
            self.end_elevations_of(identity, "revoked");
        }
        info!(identity, killed, reason, "kill switch");
        let mut ev = AuditEvent::new(
            EventKind::KillSwitch,
            if killed { "on" } else { "off" },
            if reason.is_empty() {
                "operator"
            } else {
                reason
            },
        );
        ev.identity = Some(identity.to_string());
        ev.uid = Some(caller.uid);
        ev.pid = Some(caller.pid);
        ev.policy_version = Some(active.policy.version.to_string());
        ev.detail = aborted.map(|n| format!("{n} open socket(s) of the identity aborted"));
        self.audit.emit(ev);
        Ok(())
    }

    pub fn require_operator_for(&self, caller: &Caller, what: &str) -> Result<(), DaemonError> {
        self.require_operator(caller, what)
    }

    /// The identity of a calling agent; an unenrolled caller is refused (and
    /// recorded).
    pub fn agent_identity(
        &self,
        caller: &Caller,
        what: &str,
    ) -> Result<(String, u32), DaemonError> {
        if caller.over_tcp {
            return Err(DaemonError::Unauthenticated(format!(
                "{what} needs the Unix socket: over TCP the kernel cannot say who is calling"
            )));
        }
        match self.caller_identity(caller)? {
            Some(found) => Ok(found),
            None => {
                let mut ev = AuditEvent::new(EventKind::Decision, "deny", "caller-not-enrolled");
                ev.pid = Some(caller.pid);
                ev.uid = Some(caller.uid);
                ev.detail = Some(format!("{what} from a process that is not enrolled"));
                ev.policy_version = Some(self.active().policy.version.to_string());
                self.audit.emit(ev);
                Err(DaemonError::Unauthenticated(format!(
                    "{what}: process {} is not enrolled in any identity",
                    caller.pid
                )))
            }
        }
    }
}

/// What a root agent could rewrite to change its own rules or the record
/// of what it did (`daemon_files` and `secret_files`) is made read-only.
/// What to make read-only for these daemon files: each one's directory
/// alone where it is the daemon's own (`dir_of`): a bind on the file too
/// would add nothing, and a file replaced while `exec` sets up (the trail
/// rotating) would fail the confinement. A file that is a link elsewhere
/// has the target's directory (or the target) protected as well as the
/// link's.
fn protected_of<'a>(files: impl Iterator<Item = &'a std::path::Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in files {
        dirs.push(dir_of(f).to_path_buf());
        let links = resolve_links(f);
        dirs.push(dir_of(&links.real).to_path_buf());
        // Every directory holding a link on the way (a ConfigMap's
        // `..data`, a link to a release directory): re-pointing one would
        // lead the daemon to a file of the agent's choosing. Links in
        // shared directories stay as they are (their file-by-file
        // protection is the target's, above).
        dirs.extend(
            links
                .links
                .iter()
                .filter_map(|l| l.parent())
                .filter(|d| !is_shared(d))
                .map(PathBuf::from),
        );
    }
    // Never a shared directory or `/` as a whole (a link that leads to
    // one): that would freeze the host for the agent, not the daemon.
    dirs.retain(|d| d.is_file() || !is_shared(d));
    canonical(dirs.iter().map(PathBuf::as_path))
}

/// What on the way to `files` sits directly in a shared directory, where
/// exec cannot freeze the directory for the agent: the links met (which it
/// could re-point), and a file itself (which, or whose neighbours the
/// daemon makes — temporary files, rotated segments —, it could plant as
/// links of its own while missing).
fn exposed_of<'a>(files: impl Iterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for f in files {
        let resolved = resolve_links(f);
        // What is missing on the way is made by the daemon later, in the
        // deepest directory that exists now: the first missing one counts
        // as the file (`/tmp/palisade/` not made yet: `/tmp/palisade`).
        let made = first_missing(&resolved.real).unwrap_or(resolved.real);
        for p in resolved.links.into_iter().chain([made]) {
            if p.parent().is_some_and(is_shared) && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The shallowest missing path on the way to `path` (`path` itself when
/// only it is missing), if any is.
fn first_missing(path: &std::path::Path) -> Option<PathBuf> {
    path.ancestors()
        .take_while(|a| std::fs::symlink_metadata(a).is_err())
        .last()
        .map(PathBuf::from)
}

/// A directory shared with the rest of the host (`dir_of`'s list, and
/// `/` and its children).
pub(crate) fn is_shared(dir: &std::path::Path) -> bool {
    dir_of(&dir.join("-")) != dir
}

fn canonical<'a>(paths: impl IntoIterator<Item = &'a std::path::Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if let Ok(c) = std::fs::canonicalize(p)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}

/// The directory exec covers whole to hide the secret `file`: its own
/// directory, unless that is a shared one or holds the API socket
/// (`socket`, canonical); `None` when the file is covered alone (and a
/// replacement of it by a rename shows in running agents).
pub(crate) fn hiding_dir<'a>(
    file: &'a std::path::Path,
    socket: &std::path::Path,
) -> Option<&'a std::path::Path> {
    let dir = dir_of(file);
    let dir_canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    (dir != file && !socket.starts_with(&dir_canon)).then_some(dir)
}

/// The directory of a daemon file, when it is the daemon's own (not a
/// shared one such as /tmp or /var/log, whose other files are not ours to
/// freeze); else the file itself.
fn dir_of(file: &std::path::Path) -> &std::path::Path {
    const SHARED: &[&str] = &[
        "/", "/etc", "/tmp", "/var", "/var/lib", "/var/log", "/var/tmp", "/run", "/home", "/root",
        "/usr", "/opt", "/srv",
    ];
    match file.parent() {
        Some(d)
            if d.is_absolute()
                && d.components().count() > 2
                && !SHARED.iter().any(|s| d == std::path::Path::new(s)) =>
        {
            d
        }
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_file_is_protected_by_its_own_directory_and_a_links_target_too() {
        let base = std::env::temp_dir().join(format!("palisade-protected-{}", std::process::id()));
        let (own, other) = (base.join("etc-palisade"), base.join("srv-policies"));
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(own.join("audit.jsonl"), "").unwrap();
        std::fs::write(other.join("policy.yaml"), "").unwrap();
        std::os::unix::fs::symlink(other.join("policy.yaml"), own.join("policy.yaml")).unwrap();
        let got = protected_of(
            [own.join("audit.jsonl"), own.join("policy.yaml")]
                .iter()
                .map(PathBuf::as_path),
        );
        let want = vec![
            std::fs::canonicalize(&own).unwrap(),
            std::fs::canonicalize(&other).unwrap(),
        ];
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn every_directory_holding_a_link_on_the_way_is_protected() {
        // A ConfigMap volume (`..data` -> `..2026_12_02`) reached through a
        // link from the daemon's own directory.
        let base = std::env::temp_dir().join(format!("palisade-links-{}", std::process::id()));
        let (own, cm) = (base.join("etc"), base.join("configmap"));
        std::fs::create_dir_all(cm.join("..2026_12_02")).unwrap();
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(cm.join("..2026_12_02").join("policy.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_02", cm.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/policy.yaml", cm.join("policy.yaml")).unwrap();
        std::os::unix::fs::symlink(cm.join("policy.yaml"), own.join("policy.yaml")).unwrap();
        let r = resolve_links(&own.join("policy.yaml"));
        let got = protected_of(std::iter::once(own.join("policy.yaml").as_path()));
        let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap();
        let want = vec![canon(&own), canon(&cm.join("..2026_12_02")), canon(&cm)];
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(r.real, cm.join("..2026_12_02").join("policy.yaml"));
        assert_eq!(got, want);
    }

    #[test]
    fn links_in_shared_directories_are_exposed_and_the_daemons_own_are_not() {
        let base = std::env::temp_dir().join(format!("palisade-exposed-{}", std::process::id()));
        let own = base.join("etc-palisade");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("key.pem"), "").unwrap();
        std::os::unix::fs::symlink(own.join("key.pem"), own.join("signing.pem")).unwrap();
        // A link right in /tmp (shared), leading into the daemon's own
        // directory through its own link.
        let in_tmp = std::path::Path::new("/tmp")
            .join(format!("palisade-exposed-{}.pem", std::process::id()));
        let _ = std::fs::remove_file(&in_tmp);
        std::os::unix::fs::symlink(own.join("signing.pem"), &in_tmp).unwrap();
        // A daemon file (made or not yet) right in /tmp; one in its own
        // directory is not exposed.
        let missing = std::path::Path::new("/tmp")
            .join(format!("palisade-exposed-{}.json", std::process::id()));
        let got = exposed_of(
            [
                in_tmp.clone(),
                own.join("signing.pem"),
                missing.clone(),
                own.join("not-yet.json"),
            ]
            .iter(),
        );
        std::fs::remove_file(&in_tmp).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(got, vec![in_tmp, missing.clone()]);
        // A file in a directory of /tmp not made yet: that directory.
        let dir_missing = missing.with_extension("d");
        let got = exposed_of([dir_missing.join("elevations.json")].iter());
        assert_eq!(got, vec![dir_missing]);
    }

    #[test]
    fn a_file_in_a_shared_directory_is_protected_alone() {
        assert_eq!(
            dir_of(std::path::Path::new("/etc/palisade.yaml")),
            std::path::Path::new("/etc/palisade.yaml")
        );
        assert_eq!(
            dir_of(std::path::Path::new("/var/lib/palisade/state.journal")),
            std::path::Path::new("/var/lib/palisade")
        );
    }
}
