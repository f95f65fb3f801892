use std::{path::Path, process::ExitCode};

use crate::{api::client, proto};

pub(super) fn rpc_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

pub fn status(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let s = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.status(proto::StatusRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    })??;
    if json {
        let identities: Vec<serde_json::Value> = s
            .identities
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": i.id, "mode": i.mode, "killed": i.killed, "cgroups": i.cgroups,
                    "allowed": i.allowed, "denied": i.denied, "audited": i.audited,
                })
            })
            .collect();
        let v = serde_json::json!({
            "daemon_version": s.daemon_version,
            "policy_version": s.policy_version,
            "policy_generation": s.policy_generation,
            "events_lost": s.events_lost,
            "events_written": s.events_written,
            "bpffs": s.bpffs,
            "attach_cgroup": s.attach_cgroup,
            "last_reload_error": (!s.last_reload_error.is_empty()).then_some(&s.last_reload_error),
            "identities": identities,
            "health": s.health.as_ref().map(health_json),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "policy     {} (generation {})",
        s.policy_version, s.policy_generation
    );
    println!("pins       {}", s.bpffs);
    match s.health.as_ref().filter(|h| h.guard_repairs > 0) {
        None => println!("attached   {}", s.attach_cgroup),
        Some(h) => println!(
            "attached   {} — GUARD WAS DETACHED {} time(s), re-attached; last: {}",
            s.attach_cgroup, h.guard_repairs, h.guard_last_repair
        ),
    }
    println!(
        "events     {} written, {} lost in kernel",
        s.events_written, s.events_lost
    );
    if !s.last_reload_error.is_empty() {
        println!("last reload FAILED: {}", s.last_reload_error);
    }
    if let Some(h) = &s.health {
        print_health(h);
    }
    println!();
    println!(
        "{:<28} {:<14} {:>7} {:>10} {:>10} {:>10}  KILL SWITCH",
        "IDENTITY", "MODE", "CGROUPS", "ALLOWED", "DENIED", "AUDITED"
    );
    for i in &s.identities {
        println!(
            "{:<28} {:<14} {:>7} {:>10} {:>10} {:>10}  {}",
            i.id,
            i.mode,
            i.cgroups,
            i.allowed,
            i.denied,
            i.audited,
            if i.killed { "ON" } else { "off" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn health_json(h: &proto::DaemonHealth) -> serde_json::Value {
    let sinks: Vec<serde_json::Value> = h
        .sinks
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name, "endpoint": k.endpoint, "up": k.up,
                "delivered": k.delivered, "backlog": k.backlog, "errors": k.errors,
                "lost": k.lost,
                "last_error": (!k.last_error.is_empty()).then_some(&k.last_error),
            })
        })
        .collect();
    serde_json::json!({
        "packet_guard": h.packet_guard,
        "warnings": h.warnings,
        "metrics_address": (!h.metrics_address.is_empty()).then_some(&h.metrics_address),
        "api_tcp_address": (!h.api_tcp_address.is_empty()).then_some(&h.api_tcp_address),
        "audit_file": (!h.audit_file.is_empty()).then_some(&h.audit_file),
        "audit_seq": h.audit_seq,
        "audit_head_hash": (!h.audit_head_hash.is_empty()).then_some(&h.audit_head_hash),
        "audit_queue_dropped": h.audit_queue_dropped,
        "audit_trail_lost": h.audit_trail_lost,
        "last_reload_unix": (h.last_reload_unix > 0).then_some(h.last_reload_unix),
        "guard_repairs": h.guard_repairs,
        "guard_last_repair": (!h.guard_last_repair.is_empty()).then_some(&h.guard_last_repair),
        "sinks": sinks,
    })
}

fn print_health(h: &proto::DaemonHealth) {
    if h.guard_repairs > 0 {
        println!(
            "GUARD      detached/tampered {} time(s) since start, re-attached (last: {}); see the trail (reason guard-detached)",
            h.guard_repairs, h.guard_last_repair
        );
    }
    println!(
        "packets    {}",
        if h.packet_guard == "lsm" {
            "refused to every enrolled process (BPF LSM)"
        } else {
            "refused to agents started with `palisade exec` (seccomp; BPF LSM unavailable)"
        }
    );
    if h.audit_file.is_empty() {
        println!("trail      none (stderr only)");
    } else {
        let hash: String = h.audit_head_hash.chars().take(16).collect();
        println!(
            "trail      {} (seq {}, head {hash}…)",
            h.audit_file, h.audit_seq
        );
    }
    if h.audit_queue_dropped + h.audit_trail_lost > 0 {
        println!(
            "LOST       {} dropped (queue full), {} not written (trail errors)",
            h.audit_queue_dropped, h.audit_trail_lost
        );
    }
    for k in &h.sinks {
        println!(
            "sink       {} {}: {}, {} delivered, {} waiting, {} lost{}",
            k.name,
            k.endpoint,
            if k.up { "up" } else { "DOWN" },
            k.delivered,
            k.backlog,
            k.lost,
            if k.last_error.is_empty() {
                String::new()
            } else {
                format!(" (last error: {})", k.last_error)
            }
        );
    }
    println!(
        "metrics    {}",
        if h.metrics_address.is_empty() {
            "off".to_string()
        } else {
            format!("http://{}/metrics", h.metrics_address)
        }
    );
    for w in &h.warnings {
        println!("warning    {w}");
    }
}

pub fn kill_switch(
    socket: &Path,
    identity: &str,
    on: bool,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    super::block_on(async {
        let mut c = client::connect(socket).await?;
        // With the operator token of the environment, like the other
        // operator calls (needed over the TCP listener).
        if on {
            c.revoke(client::request(proto::RevokeRequest {
                identity: identity.to_string(),
                reason: reason.to_string(),
            }))
            .await
            .map_err(rpc_error)?;
        } else {
            c.restore(client::request(proto::RestoreRequest {
                identity: identity.to_string(),
                reason: reason.to_string(),
            }))
            .await
            .map_err(rpc_error)?;
        }
        anyhow::Ok(())
    })??;
    println!(
        "{identity}: kill switch {}",
        if on {
            "ON (all connections denied)"
        } else {
            "off"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn reload(socket: &Path) -> anyhow::Result<ExitCode> {
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.reload_policy(proto::ReloadPolicyRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    })??;
    report_applied(&r);
    Ok(ExitCode::SUCCESS)
}

/// What a reload or a push applied, and its warnings.
pub(super) fn report_applied(r: &proto::ReloadPolicyResponse) {
    for w in &r.warnings {
        eprintln!("{w}");
    }
    println!(
        "policy {} applied (generation {})",
        r.policy_version, r.policy_generation
    );
}

pub fn uninstall(bpffs: &Path) -> anyhow::Result<ExitCode> {
    crate::bpf::uninstall(bpffs)?;
    println!("removed {}: enforcement is off", bpffs.display());
    Ok(ExitCode::SUCCESS)
}
