use std::{path::Path, process::ExitCode};

use crate::{api::client, proto};

fn rpc_error(s: tonic::Status) -> anyhow::Error {
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
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "policy     {} (generation {})",
        s.policy_version, s.policy_generation
    );
    println!("pins       {}", s.bpffs);
    println!("attached   {}", s.attach_cgroup);
    println!(
        "events     {} written, {} lost in kernel",
        s.events_written, s.events_lost
    );
    if !s.last_reload_error.is_empty() {
        println!("last reload FAILED: {}", s.last_reload_error);
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

pub fn kill_switch(
    socket: &Path,
    identity: &str,
    on: bool,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    super::block_on(async {
        let mut c = client::connect(socket).await?;
        if on {
            c.revoke(proto::RevokeRequest {
                identity: identity.to_string(),
                reason: reason.to_string(),
            })
            .await
            .map_err(rpc_error)?;
        } else {
            c.restore(proto::RestoreRequest {
                identity: identity.to_string(),
                reason: reason.to_string(),
            })
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
    for w in &r.warnings {
        eprintln!("{w}");
    }
    println!(
        "policy {} applied (generation {})",
        r.policy_version, r.policy_generation
    );
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(bpffs: &Path) -> anyhow::Result<ExitCode> {
    crate::bpf::uninstall(bpffs)?;
    println!("removed {}: enforcement is off", bpffs.display());
    Ok(ExitCode::SUCCESS)
}
