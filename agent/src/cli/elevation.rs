//! `palisade elevate` and `palisade elevations`: break-glass elevation from
//! the operator's shell.

use std::{path::Path, process::ExitCode, time::Duration};

use super::ops::rpc_error;
use crate::{api::client, proto};

/// What `palisade elevate` was asked to do.
pub struct ElevateArgs<'a> {
    pub identity: Option<&'a str>,
    pub role: Option<&'a str>,
    pub duration: Option<&'a str>,
    pub reason: &'a str,
    pub end: Option<&'a str>,
    pub json: bool,
}

fn when(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print(e: &proto::Elevation, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": e.id,
                "identity": e.identity,
                "role": e.role,
                "reason": e.reason,
                "granted_by": e.granted_by,
                "started_at": e.started_at,
                "expires_at": e.expires_at,
            })
        );
    } else {
        println!(
            "{}  {} as {}  until {}  by {}  reason {:?}",
            e.id,
            e.identity,
            e.role,
            when(e.expires_at),
            e.granted_by,
            e.reason
        );
    }
}

pub fn elevate(socket: &Path, a: &ElevateArgs<'_>) -> anyhow::Result<ExitCode> {
    if let Some(id) = a.end {
        let e = super::block_on(async {
            let mut c = client::connect(socket).await?;
            anyhow::Ok(
                c.end_elevation(proto::EndElevationRequest {
                    id: id.to_string(),
                    reason: a.reason.to_string(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner(),
            )
        })??;
        if a.json {
            print(&e, true);
        } else {
            println!(
                "{}: ended ({} no longer holds {})",
                e.id, e.identity, e.role
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(identity), Some(role), Some(duration)) = (a.identity, a.role, a.duration) else {
        anyhow::bail!(
            "usage: palisade elevate IDENTITY --role ROLE --for DURATION --reason TEXT (or --end ID)"
        );
    };
    let ttl = humantime::parse_duration(duration)
        .map_err(|e| anyhow::anyhow!("--for {duration:?}: {e} (e.g. 30m, 2h)"))?;
    let ttl_seconds = u32::try_from(ttl.as_secs())
        .map_err(|_| anyhow::anyhow!("--for {duration:?} is too long"))?;
    let e = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.elevate(proto::ElevateRequest {
                identity: identity.to_string(),
                role: role.to_string(),
                ttl_seconds,
                reason: a.reason.to_string(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner(),
        )
    })??;
    print(&e, a.json);
    Ok(ExitCode::SUCCESS)
}

pub fn list(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let r = super::block_on(async {
        let mut c = client::connect(socket).await?;
        anyhow::Ok(
            c.list_elevations(proto::ListElevationsRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner(),
        )
    })??;
    if !json && r.elevations.is_empty() {
        println!("no active elevations");
    }
    for e in &r.elevations {
        print(e, json);
    }
    Ok(ExitCode::SUCCESS)
}
