//! Where the DNS proxy meets the daemon: started with it, told about each
//! policy before and after the generation flip, saved at shutdown.

use std::sync::Arc;

use tracing::warn;

use super::{Daemon, DaemonError};
use crate::{
    audit::AuditPipeline,
    bpf::Kernel,
    config::Config,
    dns::{DnsMaps, DnsService, judge::Judges},
    policy::{KernelTables, Policy},
};

/// Start the proxy (or, with `dns.enabled: false`, switch steering off).
pub(super) async fn start(
    config: &Config,
    kernel: &mut Kernel,
    audit: &AuditPipeline,
) -> Result<Option<Arc<DnsService>>, DaemonError> {
    let maps = DnsMaps::take(kernel.ebpf_mut())?;
    if !config.dns.enabled {
        DnsService::disable(&maps)?;
        return Ok(None);
    }
    Ok(Some(
        DnsService::start(config.dns.clone(), maps, audit.clone()).await?,
    ))
}

impl Daemon {
    /// Before the flip: sockets for identities that name hosts, and the
    /// steering flag in their compiled configs.
    pub(super) async fn dns_prepare(
        &self,
        policy: &Policy,
        tables: &mut KernelTables,
    ) -> Result<(), DaemonError> {
        if let Some(dns) = &self.dns {
            let judges = Judges::from_policy(policy, self.config.dns.steer_audit, &|name| {
                self.registry.index_of(name)
            });
            dns.prepare(judges, tables).await?;
        }
        Ok(())
    }

    /// After the flip: learned addresses re-judged against the new rules.
    pub(super) async fn dns_commit(&self) {
        if let Some(dns) = &self.dns
            && let Err(e) = dns.commit().await
        {
            warn!(error = %e, "re-judging learned DNS addresses");
        }
    }

    pub(super) fn dns_save(&self) {
        if let Some(dns) = &self.dns {
            dns.save();
        }
    }
}
