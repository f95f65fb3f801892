//! The elevation RPCs: convert, call the daemon, convert back.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{server::caller, to_status};
use crate::{
    daemon::{Daemon, ElevateRequest},
    decision::elevations::Elevation,
    proto,
};

fn message(e: Elevation) -> proto::Elevation {
    proto::Elevation {
        id: e.id,
        identity: e.identity,
        role: e.role,
        reason: e.reason,
        granted_by: e.by,
        started_at: e.started_unix as i64,
        expires_at: (e.expires_unix_ms / 1000) as i64,
    }
}

pub async fn elevate(
    daemon: &Arc<Daemon>,
    req: Request<proto::ElevateRequest>,
) -> Result<Response<proto::Elevation>, Status> {
    let caller = caller(&req)?;
    let r = req.into_inner();
    let e = daemon
        .elevate(
            &caller,
            ElevateRequest {
                identity: r.identity,
                role: r.role,
                ttl: Duration::from_secs(u64::from(r.ttl_seconds)),
                reason: r.reason,
            },
        )
        .map_err(to_status)?;
    Ok(Response::new(message(e)))
}

pub async fn end_elevation(
    daemon: &Arc<Daemon>,
    req: Request<proto::EndElevationRequest>,
) -> Result<Response<proto::Elevation>, Status> {
    let caller = caller(&req)?;
    let r = req.get_ref();
    let e = daemon
        .end_elevation(&caller, &r.id, &r.reason)
        .map_err(to_status)?;
    Ok(Response::new(message(e)))
}

pub async fn list_elevations(
    daemon: &Arc<Daemon>,
    req: Request<proto::ListElevationsRequest>,
) -> Result<Response<proto::ListElevationsResponse>, Status> {
    let caller = caller(&req)?;
    let list = daemon.list_elevations(&caller).map_err(to_status)?;
    Ok(Response::new(proto::ListElevationsResponse {
        elevations: list.into_iter().map(message).collect(),
    }))
}
