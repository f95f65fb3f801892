use std::{os::unix::process::CommandExt, path::Path, process::ExitCode};

use crate::{api::client, proto};

/// Enrol this very process (the daemon sees our pid through the socket),
/// install the packet-socket filter, then replace the process with the
/// command: the command starts confined.
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
    crate::seccomp::refuse_packet_sockets()
        .map_err(|e| anyhow::anyhow!("installing the packet-socket filter: {e}"))?;
    let err = std::process::Command::new(program).args(args).exec();
    eprintln!("palisade: cannot run `{program}`: {err}");
    Ok(ExitCode::from(127))
}
