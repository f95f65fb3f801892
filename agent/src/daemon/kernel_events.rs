//! From kernel ring buffers to the audit trail and the cgroup selectors.

use std::{sync::Arc, time::Duration};

use tracing::{error, warn};

use super::{ActivePolicy, Daemon, DaemonError, history::Generation};
use crate::{
    audit::{AuditEvent, EventKind},
    bpf::{
        events::{self, CgroupChange, KernelEvent},
        lock,
    },
    policy::Protocol,
};

pub(super) fn spawn(daemon: &Arc<Daemon>) -> Result<(), DaemonError> {
    let ring = lock(&daemon.maps.events)
        .take()
        .ok_or_else(|| DaemonError::Config("kernel event reader already running".into()))?;
    let d = daemon.clone();
    tokio::spawn(async move {
        let result = events::drain(ring, |raw| match KernelEvent::decode(raw) {
            Some(ev) => d.audit.emit(to_audit(d.as_ref(), &ev)),
            None => warn!(len = raw.len(), "short kernel event"),
        })
        .await;
        if let Err(e) = result {
            error!(error = %e, "kernel event reader stopped");
        }
    });

    if let Some(ring) = lock(&daemon.maps.cgroup_events).take() {
        let d = daemon.clone();
        tokio::spawn(async move {
            let result = events::drain(ring, |raw| {
                let Some(change) = CgroupChange::decode(raw) else {
                    return;
                };
                if !change.created {
                    return;
                }
                let active = d.active();
                if let Err(e) =
                    d.selector_sync()
                        .on_created(&active.policy, change.id, &change.path)
                {
                    warn!(error = %e, cgroup = %change.path, "enrolling new cgroup");
                }
            })
            .await;
            if let Err(e) = result {
                error!(error = %e, "cgroup event reader stopped");
            }
        });
    }

    // Report kernel-side losses as audit records as soon as they are seen,
    // including those that happened while no daemon was running: the count
    // already reported is kept next to the trail, so a restarted daemon
    // reports exactly the difference.
    let weak = Arc::downgrade(daemon);
    let state = daemon
        .config
        .audit
        .file
        .as_ref()
        .map(|f| crate::audit::trail::side_file(f, "kernel-lost"));
    tokio::spawn(async move {
        let mut reported: Option<u64> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(d) = weak.upgrade() else { break };
            let Ok(lost) = d.maps.events_lost() else {
                continue;
            };
            let before = *reported.get_or_insert_with(|| {
                let saved = state
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    // A smaller count means the pins were recreated.
                    .filter(|v| *v <= lost);
                match saved {
                    Some(v) => v,
                    None => {
                        save_reported(state.as_deref(), lost);
                        lost
                    }
                }
            });
            if lost > before {
                let mut ev = AuditEvent::new(EventKind::Loss, "lost", "kernel-ring-buffer-full");
                ev.count = Some(lost - before);
                ev.detail = Some(
                    "kernel event records dropped: the ring buffer was full; each was the first denial of its kind in its period, and is still counted in that kind's aggregate record".into(),
                );
                ev.policy_version = Some(d.active().policy.version.to_string());
                d.audit.emit(ev);
                // Only once the record is in the trail does it count as told.
                d.audit.flush().await;
                save_reported(state.as_deref(), lost);
                reported = Some(lost);
            }
        }
    });
    Ok(())
}

fn save_reported(path: Option<&std::path::Path>, lost: u64) {
    let Some(path) = path else { return };
    let tmp = path.with_extension("tmp");
    let result =
        std::fs::write(&tmp, format!("{lost}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        warn!(error = %e, file = %path.display(), "saving the reported kernel loss count");
    }
}

/// What turning kernel records into audit records needs from the daemon:
/// identity names by kernel index and the policies of recent generations.
/// Kernel records are attacker-influenced (the process picks its `comm`,
/// its destinations, and races reloads), so the conversion is a plain
/// function over this view, which the fuzz targets supply too.
pub trait RecordContext {
    fn identity_name(&self, index: u32) -> Option<String>;
    fn policy_at(&self, generation: u32) -> Option<Generation>;
    fn active_policy(&self) -> Arc<ActivePolicy>;
    /// The id of the elevation whose kernel grants carry `number`.
    fn elevation_id(&self, _number: u32) -> Option<String> {
        None
    }
}

impl RecordContext for Daemon {
    fn identity_name(&self, index: u32) -> Option<String> {
        self.registry.name_of(index)
    }

    fn policy_at(&self, generation: u32) -> Option<Generation> {
        Daemon::policy_at(self, generation)
    }

    fn active_policy(&self) -> Arc<ActivePolicy> {
        self.active()
    }

    fn elevation_id(&self, number: u32) -> Option<String> {
        self.elevation_by_number(number).map(|e| e.id)
    }
}

/// The audit record of one kernel decision record.
pub fn to_audit(cx: &dyn RecordContext, ev: &KernelEvent) -> AuditEvent {
    let kind = match ev.dst {
        Some(_) => EventKind::Network,
        None => EventKind::Socket,
    };
    let verdict = match ev.verdict {
        Some(agent_common::Verdict::Allow) => "allow",
        Some(agent_common::Verdict::Deny) => "deny",
        Some(agent_common::Verdict::Audit) => "audit",
        None => "unknown",
    };
    let reason = ev.reason.map_or("unknown", agent_common::Reason::name);
    let mut out = AuditEvent::at(ev.time, kind, verdict, reason);
    let identity = cx.identity_name(ev.identity);
    let at = cx.policy_at(ev.generation);
    if let Some(at) = &at {
        out.policy_version = Some(at.version());
        out.rule = ev.rule.and_then(|r| at.rule_id(r));
        out.mode = identity
            .as_deref()
            .and_then(|i| at.mode_of(i))
            .map(|m| m.name().to_string());
    } else {
        out.detail = Some(format!(
            "policy generation {} is no longer known",
            ev.generation
        ));
    }
    if ev.reason == Some(agent_common::Reason::Elevation) {
        // The rule field carries the elevation's number, not a rule.
        out.rule = None;
        let number = ev.rule.unwrap_or(0) & !agent_common::grants::ELEVATION_RULE;
        out.elevation = Some(
            cx.elevation_id(number)
                .unwrap_or_else(|| format!("elv-{number:08x}")),
        );
    }
    out.identity = identity.or_else(|| Some(format!("#{}", ev.identity)));
    out.pid = Some(ev.pid);
    out.tid = Some(ev.tid);
    out.uid = Some(ev.uid);
    out.comm = Some(ev.comm.clone());
    out.cgroup_id = Some(ev.cgroup_id);
    out.hook = ev.hook.map(|h| h.name().to_string());
    match ev.dst {
        Some((ip, port)) => {
            out.dst_ip = Some(ip);
            out.dst_port = Some(port);
            out.protocol = Some(
                Protocol::from_number(ev.protocol)
                    .map_or_else(|| ev.protocol.to_string(), |p| p.name().to_string()),
            );
        }
        None => out.protocol = Some(socket_description(ev.family, ev.sock_type, ev.protocol)),
    }
    out.detail = out.detail.take().or_else(|| guard_detail(ev));
    out
}

fn socket_description(family: u16, sock_type: u8, protocol: u16) -> String {
    let fam = match family {
        agent_common::AF_INET => "inet",
        agent_common::AF_INET6 => "inet6",
        agent_common::AF_PACKET => "packet",
        1 => "unix",
        16 => "netlink",
        40 => "vsock",
        44 => "xdp",
        0xffff => "io_uring",
        _ => "other",
    };
    let ty = match sock_type {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        _ => "other",
    };
    format!("{fam}/{ty}/{protocol}")
}

/// What the guard hooks add to their records.
fn guard_detail(ev: &KernelEvent) -> Option<String> {
    let enforced = ev.verdict == Some(agent_common::Verdict::Deny);
    if ev.reason == Some(agent_common::Reason::SocketUntracked) {
        return Some(
            "the kernel could not stamp the socket with its identity (no memory, or the socket's option memory spent): refused, since the kill switch could not reach it"
                .into(),
        );
    }
    match ev.hook? {
        agent_common::Hook::Setsockopt => {
            let (level, option) = ev.sockopt?;
            let name = match (level, option) {
                (0, 4) => "IP_OPTIONS",
                (0, 7) => "IP_RETOPTS",
                (41, 5) => "IPV6_2292RTHDR",
                (41, 6) => "IPV6_2292PKTOPTIONS",
                (41, 57) => "IPV6_RTHDR",
                _ => "a source-route option",
            };
            Some(format!("setsockopt({name}) refused"))
        }
        agent_common::Hook::Egress if ev.reason == Some(agent_common::Reason::SourceRoute) => {
            Some("packet with IPv4 options or an IPv6 routing header dropped".into())
        }
        agent_common::Hook::Egress if ev.reason == Some(agent_common::Reason::PermissionEnded) => {
            Some(if enforced {
                "the permission this connection was opened under has ended (grant or elevation over, rule removed): its packets are dropped".into()
            } else {
                "the permission this connection was opened under has ended (audit mode: recorded only)".into()
            })
        }
        agent_common::Hook::Egress => Some("packet of a revoked identity dropped".into()),
        agent_common::Hook::SocketSyscall if enforced => Some(
            "process killed (SIGKILL): this kernel refuses BPF LSM, the syscall tracepoint stands in"
                .into(),
        ),
        _ => None,
    }
}
