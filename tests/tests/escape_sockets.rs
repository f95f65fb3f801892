//! Sockets by another name: a packet socket made as `socket(AF_INET,
//! SOCK_PACKET)`, `AF_PACKET`, vsock, sock_diag netlink, the x32 ABI and
//! io_uring. An agent started with `palisade exec` (root keeping
//! `CAP_NET_RAW`, and unprivileged) gets `EPERM`; an agent selected by
//! cgroup on this host (no BPF LSM) is killed when it makes one. A capture
//! in the namespace counts the hand-built frames that arrive; the same
//! frame from a process that is not enrolled arrives.
//!
//! Addresses: namespace `10.101.0.0/24` (hand-built frames to `.2`).

use std::os::unix::process::ExitStatusExt;

use palisade_tests::{
    DaemonProc, Probe, TestEnv, capture::Capture, netns::NetNs, probe::Outcome, root_or_skip,
};

const AF_UNIX: &str = "1";
const AF_INET: &str = "2";
const AF_NETLINK: &str = "16";
const AF_PACKET: &str = "17";
const AF_VSOCK: &str = "40";
const SOCK_STREAM: &str = "1";
const SOCK_RAW: &str = "3";
const NETLINK_SOCK_DIAG: &str = "4";

fn setup(tag: &str, octet: u8) -> (NetNs, TestEnv, DaemonProc) {
    let ns = NetNs::new(tag, octet);
    let env = TestEnv::new(tag, "version: 1\n");
    env.make_cgroup("sel");
    env.write_policy(&format!(
        "version: 1
identities:
  - id: agent
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow: [{{cidr: 10.{octet}.0.1/32}}]
  - id: agent-raw
    confinement: {{keep_capabilities: [net_raw]}}
    egress:
      allow: [{{cidr: 10.{octet}.0.1/32}}]
",
        sel = env.selector_path("sel")
    ));
    let d = DaemonProc::start(&env);
    (ns, env, d)
}

#[track_caller]
fn eperm(o: &Outcome, what: &str) {
    assert!(!o.ok(), "{what}: allowed: {}", o.0);
    o.expect_eperm(what);
}

#[test]
fn exec_agents_get_eperm_for_every_socket_outside_the_allowlist() {
    if !root_or_skip("exec_agents_get_eperm_for_every_socket_outside_the_allowlist") {
        return;
    }
    let (ns, env, _d) = setup("sock", 101);
    let dst = "10.101.0.2";
    let cap = Capture::start(&ns, 2500, &[dst], &["SPKTEXE1", "SPKTPLN1"]);
    let spkt = |m| ["spkt", ns.host_if.as_str(), dst, m];
    // A root agent that keeps CAP_NET_RAW: the kernel would let it build
    // frames; the allowlist does not.
    let o = Probe::enrolled(&env, "agent-raw", &spkt("SPKTEXE1"));
    eperm(&o, "socket(AF_INET, SOCK_PACKET)");
    assert_eq!(o.0["step"], "socket", "{}", o.0);
    Probe::plain(&spkt("SPKTPLN1")).expect_ok("unenrolled SOCK_PACKET");
    let counts = cap.finish();
    assert!(
        counts["SPKTPLN1"] >= 1,
        "the control frame never arrived: {counts:?}"
    );
    assert_eq!(
        counts["SPKTEXE1"], 0,
        "a frame from the agent arrived: {counts:?}"
    );

    for (who, prefix) in [("root", vec![]), ("unprivileged", vec!["as-user", "65534"])] {
        let run = |id: &str, args: &[&str]| {
            let mut full = prefix.clone();
            full.extend_from_slice(args);
            Probe::enrolled(&env, id, &full)
        };
        let plain = |args: &[&str]| {
            let mut full = prefix.clone();
            full.extend_from_slice(args);
            Probe::plain(&full)
        };
        eperm(
            &run("agent-raw", &["socket", AF_PACKET, SOCK_RAW, "0"]),
            &format!("AF_PACKET ({who})"),
        );
        eperm(
            &run("agent", &["socket", AF_VSOCK, SOCK_STREAM, "0"]),
            &format!("AF_VSOCK ({who})"),
        );
        plain(&["socket", AF_VSOCK, SOCK_STREAM, "0"]).expect_ok("unenrolled AF_VSOCK");
        eperm(
            &run(
                "agent",
                &["socket", AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG],
            ),
            &format!("sock_diag netlink ({who})"),
        );
        plain(&["socket", AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG])
            .expect_ok("unenrolled sock_diag");
        // What the allowlist keeps working.
        run("agent", &["socket", AF_NETLINK, SOCK_RAW, "0"]).expect_ok("routing netlink");
        run("agent", &["socket", AF_UNIX, SOCK_STREAM, "0"]).expect_ok("Unix socket");
        // The x32 ABI: refused by the filter (the kernel itself would
        // answer ENOSYS where x32 is not built in, as for the control).
        eperm(
            &run("agent", &["x32-socket"]),
            &format!("x32 socket ({who})"),
        );
        assert_ne!(
            plain(&["x32-socket"]).errno(),
            Some(i64::from(libc::EPERM)),
            "the control shows x32 is not refused by anything else"
        );
        eperm(
            &run("agent", &["ia32-socket", AF_VSOCK, SOCK_STREAM, "0"]),
            &format!("AF_VSOCK through int 0x80 ({who})"),
        );
        eperm(&run("agent", &["io-uring"]), &format!("io_uring ({who})"));
        plain(&["io-uring"]).expect_ok("unenrolled io_uring");
    }
    // Inet sockets other than TCP and UDP are refused (and recorded) by the
    // kernel hook.
    eperm(
        &Probe::enrolled(&env, "agent-raw", &["socket", AF_INET, SOCK_RAW, "1"]),
        "raw inet socket",
    );
    env.wait_audit("for the refused raw socket", |e| {
        e["hook"] == "sock_create" && e["reason"] == "socket-type-refused"
    });
}

#[test]
fn agents_selected_by_cgroup_are_killed_for_a_packet_socket_without_bpf_lsm() {
    if !root_or_skip("agents_selected_by_cgroup_are_killed_for_a_packet_socket_without_bpf_lsm") {
        return;
    }
    let (ns, env, _d) = setup("sockcg", 106);
    let guard = env.status()["health"]["packet_guard"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dst = "10.106.0.2";
    let sel = env.attach.join("sel");
    let cap = Capture::start(&ns, 2500, &[dst], &["SPKTSEL1", "SPKTPLN2"]);
    let out = Probe::in_cgroup_cmd(&sel, &Probe::bin(), &["spkt", &ns.host_if, dst, "SPKTSEL1"]);
    let vsock = Probe::in_cgroup_cmd(&sel, &Probe::bin(), &["socket", AF_VSOCK, SOCK_STREAM, "0"]);
    // The same through the 32-bit entry point (int 0x80), which syscall
    // tracepoints do not report.
    let ia32 = Probe::in_cgroup_cmd(
        &sel,
        &Probe::bin(),
        &["ia32-socket", AF_VSOCK, SOCK_STREAM, "0"],
    );
    Probe::plain(&["ia32-socket", AF_VSOCK, SOCK_STREAM, "0"])
        .expect_ok("unenrolled AF_VSOCK through int 0x80");
    Probe::plain(&["spkt", &ns.host_if, dst, "SPKTPLN2"]).expect_ok("unenrolled SOCK_PACKET");
    let counts = cap.finish();
    assert!(
        counts["SPKTPLN2"] >= 1,
        "the control frame never arrived: {counts:?}"
    );
    assert_eq!(
        counts["SPKTSEL1"], 0,
        "a frame from the agent arrived: {counts:?}"
    );
    if guard == "lsm" {
        // A kernel that loads the LSM program refuses them cleanly.
        for o in [&out, &vsock, &ia32] {
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("\"errno\":1"),
                "{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
        return;
    }
    for (o, what) in [
        (&out, "SOCK_PACKET"),
        (&vsock, "AF_VSOCK"),
        (&ia32, "AF_VSOCK through int 0x80"),
    ] {
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "{what} in a selected cgroup: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let ev = env.wait_audit("for the kill", |e| {
        e["hook"] == "sys_enter_socket" && e["verdict"] == "deny"
    });
    assert!(
        ev["detail"].as_str().unwrap_or_default().contains("killed"),
        "{ev}"
    );
    // Inet sockets stay with the cgroup hook: EPERM, no kill.
    let raw = Probe::in_cgroup(&sel, &["socket", AF_INET, SOCK_RAW, "1"]);
    raw.expect_eperm("raw inet socket in a selected cgroup");
}
