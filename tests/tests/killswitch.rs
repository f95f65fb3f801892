//! The kill switch ends what is already open: after `palisade revoke`, the
//! revoked identity's established TCP connection and connected UDP socket
//! stop carrying data at once (the kernel drops their packets where they
//! leave, and the daemon aborts the sockets), whether the agent runs as
//! root or unprivileged, while another identity's
//! streams to the same host go on. The far end — listeners in a namespace
//! the test creates — says when the last bytes of each arrived.
//!
//! Addresses: namespace `10.108.0.0/24`, listeners on `.2` ports 94xx.

use std::{thread, time::Duration};

use palisade_tests::{
    DaemonProc, TestEnv,
    capture::{Sink, exec_stream, now_ns},
    netns::NetNs,
    root_or_skip,
};

const HOST: &str = "10.108.0.2";

#[test]
fn revoke_stops_open_connections_at_once() {
    if !root_or_skip("revoke_stops_open_connections_at_once") {
        return;
    }
    let ns = NetNs::new("kill", 108);
    let env = TestEnv::new(
        "kill",
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{cidr: 10.108.0.0/24}]
  - id: other
    egress:
      allow: [{cidr: 10.108.0.0/24}]
",
    );
    let _d = DaemonProc::start(&env);
    let sink = Sink::start(&ns, HOST, &[9401, 9402, 9403], &[9411, 9412, 9413], 8000);
    let stream = |identity: &str, user: bool, tcp: u16, udp: u16| {
        exec_stream(&env.socket, identity, user, HOST, tcp, udp, 6000)
    };
    let agent = stream("agent", false, 9401, 9411);
    let other = stream("other", false, 9402, 9412);
    let unprivileged = stream("agent", true, 9403, 9413);
    thread::sleep(Duration::from_millis(1000));
    env.cli_ok(&["revoke", "agent", "--reason", "test"]);
    let revoked_at = now_ns();
    let agent = agent.join().unwrap_or_else(|_| panic!("agent stream"));
    let other = other.join().unwrap_or_else(|_| panic!("other stream"));
    let unprivileged = unprivileged
        .join()
        .unwrap_or_else(|_| panic!("unprivileged stream"));
    let seen = sink.finish();

    // The agent (root and unprivileged) saw its sockets fail; the other
    // identity did not.
    for agent in [&agent, &unprivileged] {
        assert!(agent.ok(), "{}", agent.0);
        assert!(
            agent.0["tcp_errno"].is_i64(),
            "the revoked TCP connection kept accepting writes: {}",
            agent.0
        );
        assert_eq!(
            agent.0["udp_errno"],
            i64::from(libc::EPERM),
            "the revoked UDP socket kept sending: {}",
            agent.0
        );
    }
    assert!(
        other.0["tcp_errno"].is_null() && other.0["udp_errno"].is_null(),
        "{}",
        other.0
    );
    // The far end: the agent's data flowed before the revoke and stopped
    // with it (a packet already on the wire may land a moment later); the
    // other identity's kept arriving until its stream ended.
    let grace = 100_000_000; // 100 ms
    for key in ["tcp/9401", "udp/9411", "tcp/9403", "udp/9413"] {
        let r = seen
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("nothing arrived on {key} before the revoke: {seen:?}"));
        assert!(r.first_ns < revoked_at, "{key}: {r:?}");
        assert!(
            r.last_ns < revoked_at + grace,
            "{key}: data arrived {} ms after the revoke",
            (r.last_ns - revoked_at) / 1_000_000
        );
    }
    for key in ["tcp/9402", "udp/9412"] {
        let r = seen.get(key).copied().unwrap_or_default();
        assert!(
            r.last_ns > revoked_at + 1_000_000_000,
            "the other identity's {key} stopped too: {r:?}"
        );
    }
    env.wait_audit("for the dropped packets of the revoked identity", |e| {
        e["hook"] == "egress" && e["reason"] == "kill-switch" && e["identity"] == "agent"
    });
}
