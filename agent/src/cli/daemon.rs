use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{api, config::Config, daemon::Daemon};

pub fn run(config_path: &Path, detach: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    crate::memory::tune();
    raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let socket = config.socket.clone();
        let daemon = match Daemon::start(config).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("palisade: {}", super::error_chain(&e));
                return Ok(ExitCode::from(2));
            }
        };
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let reloader = daemon.clone();
        tokio::spawn(async move {
            let mut stop_tx = Some(stop_tx);
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM"); break; }
                    _ = int.recv() => { info!("SIGINT"); break; }
                    _ = hup.recv() => {
                        info!("SIGHUP: reloading policy");
                        let _ = reloader.reload_from(crate::daemon::Trigger::Signal).await;
                    }
                }
            }
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(());
            }
        });
        let served = api::serve(Arc::clone(&daemon), &socket, async {
            let _ = stop_rx.await;
        })
        .await;
        if let Err(e) = &served {
            warn!(error = %e, "API stopped");
        }
        let _ = std::fs::remove_file(&socket);
        daemon.shutdown(detach).await;
        Ok(if served.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Every API connection costs the daemon two descriptors (the connection
/// and its caller's pidfd), besides the gateway's and the DNS proxy's:
/// with the 1024 a service gets by default, callers could use them all up
/// and the operator's `revoke` would wait. Take what the hard limit allows.
fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            warn!(error = %std::io::Error::last_os_error(), "raising the descriptor limit");
        }
    }
}
