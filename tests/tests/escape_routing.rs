//! Source routing around the verdict: the hooks judge the address a process
//! names, an IPv6 routing header or an IPv4 source route sends the packet
//! to another. An enrolled agent (root and unprivileged) tries both, by
//! socket option and per message, TCP and UDP, and on a socket it prepared
//! before it was enrolled; a capture on the forbidden host counts what
//! arrives. The same attack from a process that is not enrolled arrives.
//!
//! Setting IPv4 options at all takes `CAP_NET_RAW` (the kernel's rule), which
//! `palisade exec` drops: the IPv4 attacks run as a root agent whose policy
//! keeps it. IPv6 routing headers need no privilege.
//!
//! Addresses: each test its own namespace `10.<n>.0.0/24`, `fd00:<n>::/64`
//! (n = 100, 104, 105); `.2`/`::2` is the allowed host, `.3`/`::3` the
//! forbidden one (same link). Markers are fixed-length so none contains
//! another.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use palisade_tests::{
    DaemonProc, Probe, TestEnv, capture::Capture, netns::NetNs, probe::Outcome, root_or_skip,
    wait_for,
};

const NOBODY: &str = "65534";

struct Setup {
    // The daemon is dropped before the environment it runs in.
    _daemon: DaemonProc,
    ns: NetNs,
    env: TestEnv,
    allowed4: String,
    forbidden4: String,
    allowed6: String,
    forbidden6: String,
}

/// A namespace with the allowed and the forbidden host, and a daemon whose
/// `agent` may reach only the allowed one (`agent-raw` the same, keeping
/// `CAP_NET_RAW`); cgroup `sel` is selected for `agent`.
fn setup(tag: &str, octet: u8) -> Setup {
    let ns = NetNs::new(tag, octet);
    let (allowed4, forbidden4) = (format!("10.{octet}.0.2"), format!("10.{octet}.0.3"));
    let (allowed6, forbidden6) = (format!("fd00:{octet}::2"), format!("fd00:{octet}::3"));
    ns.add_addr(&format!("{forbidden4}/24"), true);
    ns.add_addr(&format!("fd00:{octet}::1/64"), false);
    ns.add_addr(&format!("{allowed6}/64"), true);
    ns.add_addr(&format!("{forbidden6}/64"), true);
    let env = TestEnv::new(tag, "version: 1\n");
    env.make_cgroup("sel");
    env.make_cgroup("outside");
    let allow =
        format!("      allow:\n        - cidr: {allowed4}/32\n        - cidr: {allowed6}/128\n");
    env.write_policy(&format!(
        "version: 1
identities:
  - id: agent
    selectors: [{{cgroup: {sel}}}]
    egress:
{allow}  - id: agent-raw
    confinement: {{keep_capabilities: [net_raw]}}
    egress:
{allow}",
        sel = env.selector_path("sel"),
    ));
    let daemon = DaemonProc::start(&env);
    Setup {
        ns,
        env,
        _daemon: daemon,
        allowed4,
        forbidden4,
        allowed6,
        forbidden6,
    }
}

#[track_caller]
fn refused(o: &Outcome, what: &str) {
    assert!(!o.ok(), "{what}: the attack went through: {}", o.0);
    o.expect_eperm(what);
}

#[test]
fn ipv6_routing_headers_never_leave_for_the_segment() {
    if !root_or_skip("ipv6_routing_headers_never_leave_for_the_segment") {
        return;
    }
    let s = setup("rt6", 100);
    let (allowed, forbidden) = (s.allowed6.as_str(), s.forbidden6.as_str());
    // UDP markers are in the datagram; a SYN carries no data, so TCP
    // attempts are counted by destination port.
    let cap = Capture::start(
        &s.ns,
        3000,
        &[forbidden],
        &[
            "RT6ROOT",
            "RT6USER",
            "RT6SEL",
            "port:9101",
            "RT6PLAIN",
            "port:9102",
        ],
    );
    let attack = |how: &'static str, port: &'static str, marker: &'static str| {
        ["rthdr", how, allowed, port, forbidden, marker]
    };
    let o = Probe::enrolled(&s.env, "agent", &attack("udp", "9", "RT6ROOT"));
    refused(&o, "IPV6_RTHDR as root");
    assert_eq!(o.0["step"], "setsockopt", "{}", o.0);
    let mut user = vec!["as-user", NOBODY];
    user.extend(attack("udp", "9", "RT6USER"));
    refused(
        &Probe::enrolled(&s.env, "agent", &user),
        "IPV6_RTHDR unprivileged",
    );
    refused(
        &Probe::enrolled(&s.env, "agent", &attack("tcp", "9101", "RT6TCPE")),
        "IPV6_RTHDR on TCP",
    );
    refused(
        &Probe::in_cgroup(&s.env.attach.join("sel"), &attack("udp", "9", "RT6SEL")),
        "IPV6_RTHDR, root in a selected cgroup",
    );
    // The controls: the same headers from a process that is not enrolled.
    Probe::plain(&attack("udp", "9", "RT6PLAIN")).expect_ok("unenrolled routing header");
    // Its SYN leaves for the segment (nothing answers there).
    let _ = Probe::plain(&attack("tcp", "9102", "RT6TCPP"));
    let counts = cap.finish();
    for m in ["RT6PLAIN", "port:9102"] {
        assert!(
            counts[m] >= 1,
            "control {m} never reached the segment: {counts:?}"
        );
    }
    for m in ["RT6ROOT", "RT6USER", "RT6SEL", "port:9101"] {
        assert_eq!(counts[m], 0, "{m} reached the forbidden host: {counts:?}");
    }
    s.env.wait_audit("for the refused IPV6_RTHDR", |e| {
        e["reason"] == "source-route" && e["hook"] == "setsockopt" && e["verdict"] == "deny"
    });
}

#[test]
fn ipv4_source_routes_never_leave_by_option_or_per_message() {
    if !root_or_skip("ipv4_source_routes_never_leave_by_option_or_per_message") {
        return;
    }
    let s = setup("rt4", 104);
    let (allowed, forbidden) = (s.allowed4.as_str(), s.forbidden4.as_str());
    let markers = [
        "LSRROPT1",
        "port:9103",
        "LSRRCMS1",
        "LSRRSEL1",
        "LSRRSEL2",
        "LSRRUSR1",
        "LSRRPLN1",
        "LSRRPLN2",
    ];
    let cap = Capture::start(&s.ns, 3000, &[forbidden], &markers);
    let attack = |how: &'static str, marker: &'static str| {
        let port = if how == "tcp" { "9103" } else { "9" };
        ["ipopt", how, allowed, port, forbidden, marker]
    };
    let o = Probe::enrolled(&s.env, "agent-raw", &attack("udp", "LSRROPT1"));
    refused(&o, "IP_OPTIONS as root with CAP_NET_RAW");
    assert_eq!(o.0["step"], "setsockopt", "{}", o.0);
    refused(
        &Probe::enrolled(&s.env, "agent-raw", &attack("tcp", "LSRRTCP1")),
        "IP_OPTIONS on TCP",
    );
    // Per message: no socket option hook sees it; the packet is dropped
    // where it leaves.
    let o = Probe::enrolled(&s.env, "agent-raw", &attack("cmsg", "LSRRCMS1"));
    refused(&o, "IP_RETOPTS control message");
    assert_eq!(o.0["step"], "sendmsg", "{}", o.0);
    // Without CAP_NET_RAW (the default) the kernel itself refuses them.
    refused(
        &Probe::enrolled(&s.env, "agent", &attack("cmsg", "LSRRCMS2")),
        "IP_RETOPTS without CAP_NET_RAW",
    );
    // Selected by cgroup rather than started by exec: root keeps every
    // capability, so only the hooks stand in the way.
    let sel = s.env.attach.join("sel");
    refused(
        &Probe::in_cgroup(&sel, &attack("udp", "LSRRSEL1")),
        "IP_OPTIONS, root in a selected cgroup",
    );
    refused(
        &Probe::in_cgroup(&sel, &attack("cmsg", "LSRRSEL2")),
        "IP_RETOPTS, root in a selected cgroup",
    );
    let mut user = vec!["as-user", NOBODY];
    user.extend(attack("udp", "LSRRUSR1"));
    refused(
        &Probe::in_cgroup(&sel, &user),
        "IP_OPTIONS, unprivileged in a selected cgroup",
    );
    Probe::plain(&attack("udp", "LSRRPLN1")).expect_ok("unenrolled IP_OPTIONS");
    Probe::plain(&attack("cmsg", "LSRRPLN2")).expect_ok("unenrolled IP_RETOPTS");
    let counts = cap.finish();
    for m in ["LSRRPLN1", "LSRRPLN2"] {
        assert!(
            counts[m] >= 1,
            "control {m} never reached the hop: {counts:?}"
        );
    }
    for m in &markers[..6] {
        assert_eq!(counts[*m], 0, "{m} reached the forbidden hop: {counts:?}");
    }
    let ev = s
        .env
        .wait_audit("for the dropped source-routed datagram", |e| {
            e["reason"] == "source-route" && e["hook"] == "egress"
        });
    assert_eq!(ev["dst_ip"], forbidden, "{ev}");
    assert_eq!(ev["verdict"], "deny", "{ev}");
}

/// Run `rthdr`/`ipopt … WAITFILE` outside the identity; once it has set
/// its option, `enrol` it (or not), then let it send.
fn prepared(s: &Setup, attack: &[&str], enrol: bool) -> Outcome {
    let wait = s.env.dir.join(format!("go-{}", attack[attack.len() - 1]));
    let outside = s.env.attach.join("outside/cgroup.procs");
    let procs = std::ffi::CString::new(outside.to_string_lossy().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(Probe::bin());
    cmd.args(attack).arg(&wait).stdout(Stdio::piped());
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("probe: {e}"));
    let ready = wait_for(Duration::from_secs(10), || {
        Path::new(&format!("{}.ready", wait.display()))
            .exists()
            .then_some(())
    });
    assert!(ready.is_some(), "the probe never prepared its socket");
    if enrol {
        std::fs::write(
            s.env.attach.join("sel/cgroup.procs"),
            child.id().to_string(),
        )
        .unwrap_or_else(|e| panic!("moving the probe into the selected cgroup: {e}"));
    }
    std::fs::write(&wait, "").unwrap_or_else(|e| panic!("{e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let line = String::from_utf8_lossy(&out.stdout);
    Outcome(
        serde_json::from_str(line.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("probe said {line:?}: {e}")),
    )
}

#[test]
fn options_set_before_enrolment_are_dropped_where_packets_leave() {
    if !root_or_skip("options_set_before_enrolment_are_dropped_where_packets_leave") {
        return;
    }
    let s = setup("rtpre", 105);
    let markers = ["PRERT6E", "port:9104", "PRERT6P", "port:9105"];
    let cap = Capture::start(&s.ns, 8000, &[&s.forbidden4, &s.forbidden6], &markers);
    let rt6 = |m| ["rthdr", "udp", &s.allowed6, "9", &s.forbidden6, m];
    let lsrr = |port, m| ["ipopt", "tcp", &s.allowed4, port, &s.forbidden4, m];
    refused(
        &prepared(&s, &rt6("PRERT6E"), true),
        "routing header set before enrolment",
    );
    let o = prepared(&s, &lsrr("9104", "PRETCPE"), true);
    assert!(
        !o.ok(),
        "TCP with a source route set before enrolment: {}",
        o.0
    );
    assert!(prepared(&s, &rt6("PRERT6P"), false).ok(), "control (IPv6)");
    // The control's SYN leaves for the hop; nothing answers it there.
    let _ = prepared(&s, &lsrr("9105", "PRETCPP"), false);
    let counts = cap.finish();
    for m in ["PRERT6P", "port:9105"] {
        assert!(counts[m] >= 1, "control {m} never left: {counts:?}");
    }
    for m in ["PRERT6E", "port:9104"] {
        assert_eq!(counts[m], 0, "{m} reached the forbidden host: {counts:?}");
    }
}
