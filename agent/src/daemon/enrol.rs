//! Enrolment and the kill switch: the operations that change who is
//! confined and how.

use std::path::PathBuf;

use tracing::info;

use super::{Daemon, DaemonError};
use crate::{
    audit::{AuditEvent, EventKind},
    identity::CgroupFs,
};

/// Who is calling, as the kernel attests it (SO_PEERCRED).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Where a process was enrolled.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub identity: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub policy_version: String,
}

impl Daemon {
    /// The identity a process is enrolled as, if any: the nearest enrolled
    /// cgroup among its own and its ancestors (as the kernel decides).
    pub fn identity_of_pid(&self, pid: u32) -> Result<Option<(String, u32)>, DaemonError> {
        let rel = CgroupFs::cgroup_of_pid(pid)
            .map_err(|e| DaemonError::Unauthenticated(format!("process {pid}: {e}")))?;
        let enrolled: std::collections::HashMap<u64, u32> =
            self.maps.enrolled_cgroups()?.into_iter().collect();
        for id in self.cgroups.ancestry_ids(&rel) {
            if let Some(index) = enrolled.get(&id) {
                let name = self
                    .registry
                    .name_of(*index)
                    .unwrap_or_else(|| format!("#{index}"));
                return Ok(Some((name, *index)));
            }
        }
        Ok(None)
    }

    /// Is this caller an operator (root, or in the configured group)?
    pub fn is_operator(&self, caller: &Caller) -> bool {
        if caller.uid == 0 {
            return true;
        }
        let Some(group) = &self.config.socket_group else {
            return false;
        };
        let Ok(Some(group)) = nix::unistd::Group::from_name(group) else {
            return false;
        };
        if group.gid.as_raw() == caller.gid {
            return true;
        }
        let Ok(Some(user)) = nix::unistd::User::from_uid(caller.uid.into()) else {
            return false;
        };
        group.mem.contains(&user.name)
    }

    fn require_operator(&self, caller: &Caller, what: &str) -> Result<(), DaemonError> {
        if self.is_operator(caller) {
            Ok(())
        } else {
            Err(DaemonError::PermissionDenied(format!(
                "{what} needs an operator (root or group `{}`); uid {} is not one",
                self.config.socket_group.as_deref().unwrap_or("root"),
                caller.uid
            )))
        }
    }

    /// Move the caller into `identity`'s managed cgroup. The caller is the
    /// socket peer, never a pid from the request.
    pub fn enrol(&self, caller: &Caller, identity: &str) -> Result<Enrolled, DaemonError> {
        self.require_operator(caller, "enrolling a process")?;
        let active = self.active();
        if active.policy.identity(identity).is_none() {
            return Err(DaemonError::UnknownIdentity(identity.to_string()));
        }
        if let Some((current, _)) = self.identity_of_pid(caller.pid)?
            && current != identity
        {
            return Err(DaemonError::PermissionDenied(format!(
                "process {} is enrolled as `{current}` and cannot change identity",
                caller.pid
            )));
        }
        let dir: PathBuf = self.managed.join(identity);
        std::fs::create_dir_all(&dir).map_err(DaemonError::Cgroup)?;
        let cgroup_id = CgroupFs::id_of(&dir).map_err(DaemonError::Cgroup)?;
        let index = self.registry.ensure(identity)?;
        // Map first, then move: the process is never in an unmapped cgroup.
        self.maps.enrol_cgroup(cgroup_id, index)?;
        CgroupFs::move_pid(&dir, caller.pid).map_err(DaemonError::Cgroup)?;
        let cgroup = self.cgroups.relative(&dir).unwrap_or_default();
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
        })
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
        self.audit.emit(ev);
        Ok(())
    }

    pub fn require_operator_for(&self, caller: &Caller, what: &str) -> Result<(), DaemonError> {
        self.require_operator(caller, what)
    }
}
