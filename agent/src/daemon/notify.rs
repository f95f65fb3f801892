//! systemd's readiness protocol (`Type=notify`): one datagram to
//! `$NOTIFY_SOCKET`. Without systemd the variable is unset and this does
//! nothing.

use std::os::unix::net::UnixDatagram;

use tracing::debug;

/// Send `state` (e.g. `READY=1`, `STOPPING=1`) to the service manager.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract socket address.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        debug!(error = %e, state, "sd_notify");
    }
}
