//! What an agent started with `palisade exec` holds that reaches outside
//! its identity, carried out as the red team did, root and unprivileged:
//!
//! * another process: code written into an unenrolled process of the
//!   same user through `/proc/PID/mem` (it then connects to a denied host
//!   as itself), a signal to it, its abstract Unix socket;
//! * a socket the launcher opened before enrolment, above stdio and as
//!   stdio;
//! * the host's controls and the daemon's own files, as root.
//!
//! Each far end is a capture or listener in a namespace this file creates
//! (`c2-*`, 10.231.x.0/24); each attack has a control that goes through the
//! same path where the policy allows it (`confinement.unscoped`,
//! `confinement.keep_inherited_sockets`) or where an operator does it.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    process::{Child, Command, Output, Stdio},
    thread,
    time::Duration,
};

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv,
    capture::{Capture, Sink},
    launcher,
    netns::NetNs,
    palisade_bin, root_or_skip,
};

const NOBODY: &str = "65534";

/// An unenrolled process of the host (the launching shell, another
/// service), killed on drop.
struct Victim(Child);

impl Victim {
    fn start(user: Option<&str>) -> Self {
        let bin = Probe::bin();
        let mut args: Vec<&str> = Vec::new();
        if let Some(u) = user {
            // Through exec, as a login would: a process that only changed
            // its uid is not dumpable, and not reachable to its own user.
            args.extend(["as-user", u, "run", bin.to_str().unwrap_or_default()]);
        }
        args.extend(["idle", "20000"]);
        let child = Command::new(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the victim: {e}"));
        // Let it reach its sleep loop (after as-user).
        thread::sleep(Duration::from_millis(200));
        Self(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scoped_policy(allowed: &str) -> String {
    format!(
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{{cidr: {allowed}/32}}]
  - id: open
    egress:
      allow: [{{cidr: {allowed}/32}}]
    confinement: {{unscoped: true, keep_inherited_sockets: true, keep_capabilities: [sys_ptrace]}}
  - id: tracer
    egress:
      allow: [{{cidr: {allowed}/32}}]
    confinement: {{keep_capabilities: [sys_ptrace]}}
  - id: read-only-root
    egress:
      allow: [{{cidr: {allowed}/32}}]
    confinement: {{read_only_root: true}}
"
    )
}

#[test]
fn exec_agents_cannot_take_over_signal_or_reach_outside_processes() {
    if !root_or_skip("exec_agents_cannot_take_over_signal_or_reach_outside_processes") {
        return;
    }
    let ns = NetNs::named("c2-procmem", 231, 1);
    let denied = ns.peer_ip.clone();
    let env = TestEnv::new("c2procmem", &scoped_policy("10.231.1.9"));
    // Members of `nogroup` may use the socket: an unprivileged launcher.
    env.write_config("socket_group: nogroup\n");
    let _d = DaemonProc::start(&env);
    let probe = Probe::bin();
    let probe = probe.to_str().unwrap_or_default();
    let runs = [
        ("root", None, 9301u16),
        ("unprivileged", Some(NOBODY), 9311),
    ];
    let mut markers = Vec::new();
    for (_, _, base) in runs {
        markers.push(format!("port:{base}"));
        markers.push(format!("port:{}", base + 1));
    }
    markers.push("port:9321".to_string());
    let marker_refs: Vec<&str> = markers.iter().map(String::as_str).collect();
    let cap = Capture::start(&ns, 14000, &[&denied], &marker_refs);
    for (who, user, base) in runs {
        let as_agent = |identity: &str, action: &[&str]| {
            let mut args: Vec<&str> = Vec::new();
            if let Some(u) = user {
                args.extend(["as-user", u]);
            }
            args.extend_from_slice(action);
            Probe::enrolled(&env, identity, &args)
        };
        // The takeover: the victim would connect to the denied host. The
        // `tracer` identity keeps CAP_SYS_PTRACE (a root agent without it
        // is refused by the capability check alone): Landlock refuses it.
        let (attack_port, control_port) = (base.to_string(), (base + 1).to_string());
        let victim = Victim::start(user);
        for identity in ["agent", "tracer"] {
            let o = as_agent(
                identity,
                &[
                    "procmem-exec",
                    &victim.pid(),
                    probe,
                    "tcp",
                    &denied,
                    &attack_port,
                ],
            );
            assert!(
                !o.ok(),
                "{who} {identity}: the agent wrote into an outside process: {}",
                o.0
            );
            // EACCES/EPERM from the ptrace check, or ENOENT: the agent's
            // /proc shows no process it may not ptrace.
            assert!(
                o.errno() == Some(i64::from(libc::EACCES))
                    || o.errno() == Some(i64::from(libc::EPERM))
                    || o.errno() == Some(i64::from(libc::ENOENT)),
                "{who} {identity}: refused for another reason: {}",
                o.0
            );
        }
        let control = Victim::start(user);
        as_agent(
            "open",
            &[
                "procmem-exec",
                &control.pid(),
                probe,
                "tcp",
                &denied,
                &control_port,
            ],
        )
        .expect_ok(&format!("{who}: the unscoped control's takeover"));
        // Signals.
        let mut target = Victim::start(user);
        as_agent("agent", &["kill", &target.pid(), "15"])
            .expect_eperm(&format!("{who}: a signal to an outside process"));
        thread::sleep(Duration::from_millis(100));
        assert!(target.alive(), "{who}: the outside process was killed");
        let mut other = Victim::start(user);
        as_agent("open", &["kill", &other.pid(), "15"])
            .expect_ok(&format!("{who}: the unscoped control's signal"));
        thread::sleep(Duration::from_millis(300));
        assert!(!other.alive(), "{who}: the control signal did not arrive");
        // An abstract Unix socket of an outside process.
        let name = format!("c2-abstract-{}-{who}", std::process::id());
        let listener = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)
                .unwrap_or_else(|e| panic!("abstract name: {e}"));
            std::os::unix::net::UnixListener::bind_addr(&addr)
                .unwrap_or_else(|e| panic!("binding {name}: {e}"))
        };
        as_agent("agent", &["abstract-connect", &name])
            .expect_eperm(&format!("{who}: an outside abstract Unix socket"));
        as_agent("open", &["abstract-connect", &name])
            .expect_ok(&format!("{who}: the unscoped control's abstract socket"));
        drop(listener);
        // The agent still reaches the daemon's API (a path socket) and its
        // own children (kill of a child it started).
        let status = Command::new(palisade_bin())
            .args(["exec", "--socket"])
            .arg(&env.socket)
            .args(["--identity", "agent", "--", "/bin/sh", "-c"])
            .arg(format!(
                "sleep 5 & kill $! && wait $!; [ $? -eq 143 ] && {} status --socket {} >/dev/null",
                palisade_bin().display(),
                env.socket.display()
            ))
            .status()
            .unwrap_or_else(|e| panic!("exec: {e}"));
        assert!(
            status.success(),
            "the agent could not signal its own child or reach the API"
        );
        drop(victim);
        drop(control);
    }
    // An unprivileged launcher: exec itself runs as nobody (no namespaces,
    // no capabilities to drop), the agent is scoped all the same.
    let victim = Victim::start(Some(NOBODY));
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--groups", NOBODY])
        .arg(palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args(["--identity", "agent", "--", probe, "procmem-exec"])
        .args([&victim.pid(), probe, "tcp", &denied, "9321"])
        .output()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""ok":false"#)
            && (text.contains(r#""errno":13"#) || text.contains(r#""errno":1,"#)),
        "unprivileged launcher: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(victim);
    let counts = cap.finish();
    assert_eq!(counts["port:9321"], 0, "unprivileged launcher: {counts:?}");
    for (who, _, base) in runs {
        assert_eq!(
            counts[&format!("port:{base}")],
            0,
            "{who}: the taken-over process reached the denied host: {counts:?}"
        );
        assert!(
            counts[&format!("port:{}", base + 1)] >= 1,
            "{who}: the control takeover never reached the host: {counts:?}"
        );
    }
}

/// Run `palisade exec` with `sock` as descriptor `fd` of the agent.
fn exec_with_fd(env: &TestEnv, identity: &str, sock: &OwnedFd, fd: i32, agent: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let src = sock.as_raw_fd();
    let mut cmd = launcher::exec_probe(env, identity, agent);
    if fd == 0 {
        cmd.stdin(Stdio::from(
            sock.try_clone()
                .unwrap_or_else(|e| panic!("dup of the socket: {e}")),
        ));
    } else {
        // SAFETY: only dup2 and fcntl between fork and exec (both
        // async-signal-safe). The descriptor must survive exec, as a
        // launcher's would: dup2 onto a new number drops close-on-exec, but
        // when the socket already has that number dup2 does nothing, so the
        // flag is cleared explicitly.
        unsafe {
            cmd.pre_exec(move || {
                if src == fd {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(src, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running palisade exec: {e}"))
}

#[test]
fn exec_agents_cannot_use_sockets_opened_before_enrolment() {
    if !root_or_skip("exec_agents_cannot_use_sockets_opened_before_enrolment") {
        return;
    }
    let ns = NetNs::named("c2-inherit", 231, 2);
    let denied = ns.peer_ip.clone();
    let env = TestEnv::new("c2inherit", &scoped_policy("10.231.2.9"));
    let _d = DaemonProc::start(&env);
    // tcp/9401.. agent above stdio (root, unprivileged), 9403 control,
    // 9404 agent with a socket as stdin, 9405 its control; udp likewise.
    let tcp = [9401, 9402, 9403, 9404, 9405];
    let udp = [9411, 9412, 9413];
    let sink = Sink::start(&ns, &denied, &tcp, &udp, 9000);
    let connect_tcp = |port: u16| -> OwnedFd {
        std::net::TcpStream::connect((denied.as_str(), port))
            .unwrap_or_else(|e| panic!("the launcher's connection to {port}: {e}"))
            .into()
    };
    let connect_udp = |port: u16| -> OwnedFd {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("udp: {e}"));
        s.connect((denied.as_str(), port))
            .unwrap_or_else(|e| panic!("udp connect: {e}"));
        s.into()
    };
    let mut last = String::new();
    for (i, (who, prefix)) in [("root", vec![]), ("unprivileged", vec!["as-user", NOBODY])]
        .into_iter()
        .enumerate()
    {
        for (sock, kind) in [(connect_tcp(tcp[i]), "tcp"), (connect_udp(udp[i]), "udp")] {
            let mut args = prefix.clone();
            args.extend(["write-fd", "3", "INHERITED-EXFIL"]);
            let out = exec_with_fd(&env, "agent", &sock, 3, &args);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                last.contains(r#""errno":9"#),
                "{who}: an inherited {kind} socket was still open (EBADF expected): {last}"
            );
        }
    }
    // The control: an identity that keeps inherited sockets writes through.
    for (sock, kind) in [(connect_tcp(tcp[2]), "tcp"), (connect_udp(udp[2]), "udp")] {
        let out = exec_with_fd(&env, "open", &sock, 3, &["write-fd", "3", "KEPT"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(r#""ok":true"#), "control {kind}: {text}");
    }
    // A network socket as stdin: exec refuses to run the agent at all.
    let sock = connect_tcp(tcp[3]);
    let out = exec_with_fd(&env, "agent", &sock, 0, &["write-fd", "0", "STDIO-EXFIL"]);
    assert!(
        !out.status.success(),
        "exec ran an agent with a socket as stdin"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file descriptor 0") && err.contains("keep_inherited_sockets"),
        "the refusal does not say what and why: {err}"
    );
    let sock = connect_tcp(tcp[4]);
    let out = exec_with_fd(&env, "open", &sock, 0, &["write-fd", "0", "STDIO-KEPT"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""ok":true"#),
        "stdio control: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.finish();
    for (key, want) in [
        ("tcp/9401", false),
        ("tcp/9402", false),
        ("udp/9411", false),
        ("udp/9412", false),
        ("tcp/9404", false),
        ("tcp/9403", true),
        ("udp/9413", true),
        ("tcp/9405", true),
    ] {
        let bytes = got.get(key).map_or(0, |r| r.bytes);
        assert_eq!(
            bytes > 0,
            want,
            "{key}: {bytes} bytes arrived (expected {}) [{last}] {got:?}",
            if want { "some" } else { "none" }
        );
    }
}

/// An unconnected TCP socket whose option memory (`net.core.optmem_max`)
/// is spent: TCP-MD5 keys for addresses nobody uses, added until the
/// kernel refuses another, leave no room for the identity stamp. For
/// `launcher::with_socket_from`: system calls only.
fn socket_with_option_memory_spent() -> std::io::Result<i32> {
    // struct tcp_md5sig: a sockaddr_storage, flags, prefix length, key
    // length, ifindex, an 80-byte key.
    #[repr(C)]
    struct TcpMd5Sig {
        addr: libc::sockaddr_storage,
        flags: u8,
        prefixlen: u8,
        keylen: u16,
        ifindex: i32,
        key: [u8; 80],
    }
    const TCP_MD5SIG: libc::c_int = 14;
    let fd = launcher::inet_socket(libc::SOCK_STREAM, None)?;
    for i in 0..20_000u32 {
        // SAFETY: a zeroed plain C structure on the stack; setsockopt with
        // its size.
        let rc = unsafe {
            let mut sig: TcpMd5Sig = std::mem::zeroed();
            let sin = (&raw mut sig.addr).cast::<libc::sockaddr_in>();
            (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
            (*sin).sin_addr.s_addr = (0xc633_0000 | i).to_be(); // 198.51.x.x
            sig.keylen = 80;
            sig.key = [b'k'; 80];
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                TCP_MD5SIG,
                (&raw const sig).cast(),
                size_of::<TcpMd5Sig>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Refused for want of option memory, after many keys.
            return if i > 100 {
                Ok(fd)
            } else {
                Err(std::io::Error::other("the option memory was not spent"))
            };
        }
    }
    Err(std::io::Error::other(
        "20,000 TCP-MD5 keys fit: optmem_max unlimited?",
    ))
}

#[test]
fn sockets_the_kernel_cannot_stamp_are_refused() {
    if !root_or_skip("sockets_the_kernel_cannot_stamp_are_refused") {
        return;
    }
    let ns = NetNs::named("c2-untracked", 231, 5);
    let allowed = ns.peer_ip.clone();
    // The sink's address is allowed: what is refused is the socket, not
    // where it goes.
    let env = TestEnv::new("c2untracked", &scoped_policy(&allowed));
    let _d = DaemonProc::start(&env);
    let launcher_cgroup = env.make_cgroup("launcher");
    let sink = Sink::start(&ns, &allowed, &[9421, 9422], &[], 6000);
    // A launcher's socket whose option memory is spent, handed to an
    // identity that keeps inherited sockets: connected as the agent, it
    // would carry no stamp, so `palisade revoke` could neither drop its
    // packets nor abort it.
    let target = format!("{allowed}:9421");
    let out = launcher::with_socket_from(
        launcher::exec_probe(
            &env,
            "open",
            &["connect-fd", "3", &target, "UNTRACKED-EXFIL"],
        ),
        &launcher_cgroup,
        socket_with_option_memory_spent,
    )
    .output()
    .unwrap_or_else(|e| panic!("running palisade exec: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""step":"connect""#) && text.contains(r#""errno":1"#),
        "a socket the kernel could not stamp was connected (EPERM expected): {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_audit("for the refused untracked socket", |e| {
        e["reason"] == "socket-untracked" && e["identity"] == "open"
    });
    // The control: the same path with an ordinary socket.
    let target = format!("{allowed}:9422");
    let out = launcher::with_socket_from(
        launcher::exec_probe(&env, "open", &["connect-fd", "3", &target, "TRACKED"]),
        &launcher_cgroup,
        || launcher::inet_socket(libc::SOCK_STREAM, None),
    )
    .output()
    .unwrap_or_else(|e| panic!("running palisade exec: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""ok":true"#), "control: {text}");
    let got = sink.finish();
    let bytes = |k: &str| got.get(k).map_or(0, |r| r.bytes);
    assert_eq!(
        bytes("tcp/9421"),
        0,
        "the untracked socket's bytes arrived: {got:?}"
    );
    assert!(bytes("tcp/9422") > 0, "control: nothing arrived: {got:?}");
}

/// An IPv4/UDP packet from `src` to `dst:port` carrying `payload` (UDP
/// checksum 0: none, which IPv4 allows).
fn udp_packet(src: [u8; 4], dst: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap_or(u16::MAX);
    let mut p = vec![0x45, 0];
    p.extend(total.to_be_bytes());
    p.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend(src);
    p.extend(dst);
    let sum = (0..20)
        .step_by(2)
        .map(|i| u32::from(u16::from_be_bytes([p[i], p[i + 1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let check = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap_or(0);
    p[10..12].copy_from_slice(&check.to_be_bytes());
    p.extend(5555u16.to_be_bytes());
    p.extend(port.to_be_bytes());
    p.extend(u16::try_from(8 + payload.len()).unwrap_or(0).to_be_bytes());
    p.extend([0, 0]);
    p.extend(payload);
    p
}

/// A TUN device opened by the test (the launcher), its interface moved
/// into `ns` as 10.231.9.1/24: what is written to the descriptor arrives
/// there as received on that interface.
fn tun_into(ns: &NetNs) -> OwnedFd {
    use std::os::fd::FromRawFd;
    let name = format!("pt231t{}", std::process::id() % 10000);
    // SAFETY: open(2) of a device node; ioctl with a zeroed `ifreq`-sized
    // buffer holding the name and flags (IFF_TUN | IFF_NO_PI).
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0, "/dev/net/tun: {}", std::io::Error::last_os_error());
    let tun = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(0x0001u16 | 0x1000).to_ne_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip: {e}"));
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["link", "set", &name, "netns", &ns.name]);
    ip(&["-n", &ns.name, "addr", "add", "10.231.9.1/24", "dev", &name]);
    ip(&["-n", &ns.name, "link", "set", &name, "up"]);
    tun
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn exec_agents_cannot_keep_devices_or_host_paths_opened_before_enrolment() {
    if !root_or_skip("exec_agents_cannot_keep_devices_or_host_paths_opened_before_enrolment") {
        return;
    }
    let ns = NetNs::named("c2-devices", 231, 4);
    let far: [u8; 4] = [10, 231, 4, 2];
    let env = TestEnv::new("c2devices", &scoped_policy("10.231.4.9"));
    let _d = DaemonProc::start(&env);
    // udp/9431 root agent, 9432 unprivileged, 9433 an identity that keeps
    // inherited sockets: all through a TUN descriptor; 9434 the control,
    // the launcher writing the same packet through the same descriptor.
    let sink = Sink::start(&ns, &ns.peer_ip, &[], &[9431, 9432, 9433, 9434], 9000);
    let tun = tun_into(&ns);
    let packet = |port: u16| {
        hex(&udp_packet(
            [10, 231, 9, 2],
            far,
            port,
            b"VIA-INHERITED-TUN",
        ))
    };
    let runs = [
        ("root", "agent", vec![], 9431),
        ("unprivileged", "agent", vec!["as-user", NOBODY], 9432),
        ("keep_inherited_sockets", "open", vec![], 9433),
    ];
    for (who, identity, prefix, port) in &runs {
        let mut args = prefix.clone();
        let pkt = packet(*port);
        args.extend(["write-fd-hex", "3", pkt.as_str()]);
        let out = exec_with_fd(&env, identity, &tun, 3, &args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(r#""errno":9"#),
            "{who}: an inherited TUN descriptor was still open (EBADF expected): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = unsafe {
        let p = udp_packet([10, 231, 9, 2], far, 9434, b"LAUNCHER-CONTROL");
        libc::write(tun.as_raw_fd(), p.as_ptr().cast(), p.len())
    };
    assert!(
        written > 0,
        "the control packet: {}",
        std::io::Error::last_os_error()
    );

    // A directory, an O_PATH descriptor and a read-only copy of the
    // policy, each opened by the launcher: the root agent would rewrite
    // its policy through them (the policy's directory is read-only for it).
    let policy = env.dir.join("policy.yaml");
    let before = std::fs::read_to_string(&policy).unwrap_or_default();
    let root_dir: OwnedFd = std::fs::File::open("/")
        .unwrap_or_else(|e| panic!("open /: {e}"))
        .into();
    let rel = policy
        .strip_prefix("/")
        .unwrap_or(&policy)
        .display()
        .to_string();
    let out = exec_with_fd(
        &env,
        "agent",
        &root_dir,
        3,
        &["openat-write", "3", &rel, "X"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""errno":9"#),
        "a directory descriptor from the launcher was kept: {text}"
    );
    let path_only: OwnedFd = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&env.dir)
            .unwrap_or_else(|e| panic!("O_PATH: {e}"))
            .into()
    };
    let out = exec_with_fd(
        &env,
        "agent",
        &path_only,
        3,
        &["openat-write", "3", "policy.yaml", "X"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""errno":9"#),
        "an O_PATH descriptor from the launcher was kept: {text}"
    );
    let read_only: OwnedFd = std::fs::File::open(&policy)
        .unwrap_or_else(|e| panic!("{e}"))
        .into();
    let out = exec_with_fd(
        &env,
        "agent",
        &read_only,
        3,
        &["write-file", "/proc/self/fd/3", "X"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(r#""ok":true"#),
        "the policy reopened for writing through an inherited descriptor: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(&policy).unwrap_or_default(),
        before,
        "the policy was rewritten"
    );
    // Other handles a careless launcher leaks: a fanotify group (its
    // events hand out descriptors on the host's mounts) and its own
    // /proc/self/mem (write into the launcher, which runs unconfined).
    // SAFETY: fanotify_init(FAN_CLASS_NOTIF, O_RDONLY).
    let fan = unsafe { libc::fanotify_init(0, libc::O_RDONLY as u32) };
    assert!(
        fan >= 0,
        "fanotify_init: {}",
        std::io::Error::last_os_error()
    );
    let fan = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fan) };
    let mem: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .unwrap_or_else(|e| panic!("/proc/self/mem: {e}"))
        .into();
    // And a terminal's master side (what is written there is typed into
    // the shell on the other side, which runs it unconfined).
    let (mut ptm, mut pts) = (0, 0);
    // SAFETY: openpty fills two descriptors.
    let r = unsafe {
        libc::openpty(
            &mut ptm,
            &mut pts,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    let (ptm, _pts) = unsafe {
        (
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ptm),
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pts),
        )
    };
    for (what, fd) in [
        ("fanotify", &fan),
        ("/proc/self/mem", &mem),
        ("pty master", &ptm),
    ] {
        for (who, prefix) in [("root", vec![]), ("unprivileged", vec!["as-user", NOBODY])] {
            let mut args = prefix.clone();
            args.extend(["write-fd", "3", "x"]);
            let out = exec_with_fd(&env, "agent", fd, 3, &args);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(r#""errno":9"#),
                "{who}: an inherited {what} descriptor was kept: {text}"
            );
        }
    }
    // A read-only root: any file the launcher opened, reopened through
    // /proc/self/fd, would be writable as the host has it.
    let outside = std::env::temp_dir().join(format!("palisade-sealed-{}.txt", std::process::id()));
    std::fs::write(&outside, "before").unwrap_or_else(|e| panic!("{e}"));
    let reading: OwnedFd = std::fs::File::open(&outside)
        .unwrap_or_else(|e| panic!("{e}"))
        .into();
    let out = exec_with_fd(
        &env,
        "sealed",
        &reading,
        3,
        &["write-file", "/proc/self/fd/3", "after"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let after = std::fs::read_to_string(&outside).unwrap_or_default();
    let _ = std::fs::remove_file(&outside);
    assert_eq!(
        after, "before",
        "a read-only-root agent rewrote a host file: {text}"
    );

    // The launcher's own connection to the daemon's API (root, not
    // enrolled: an operator's): the agent would speak as the launcher.
    // Control: a Unix socket to another service is kept.
    let api: OwnedFd = std::os::unix::net::UnixStream::connect(&env.socket)
        .unwrap_or_else(|e| panic!("connecting to the API: {e}"))
        .into();
    let other_path =
        std::env::temp_dir().join(format!("palisade-other-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&other_path);
    let other_listener =
        std::os::unix::net::UnixListener::bind(&other_path).unwrap_or_else(|e| panic!("{e}"));
    let other: OwnedFd = std::os::unix::net::UnixStream::connect(&other_path)
        .unwrap_or_else(|e| panic!("{e}"))
        .into();
    for identity in ["agent", "open"] {
        let out = exec_with_fd(&env, identity, &api, 3, &["write-fd", "3", "x"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(r#""errno":9"#),
            "{identity}: the launcher's connection to the daemon was kept: {text}"
        );
    }
    let out = exec_with_fd(&env, "agent", &other, 3, &["write-fd", "3", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""ok":true"#),
        "a Unix socket to another service: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(other_listener);
    let _ = std::fs::remove_file(&other_path);

    // Such stdio: the agent is not run, and the refusal says why.
    let out = exec_with_fd(&env, "agent", &root_dir, 0, &["write-fd", "1", "x"]);
    assert!(
        !out.status.success(),
        "exec ran an agent with a directory as stdin"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file descriptor 0") && err.contains("directory"),
        "the refusal does not say what: {err}"
    );
    // Control: an ordinary file the launcher hands over is kept.
    let note = std::env::temp_dir().join(format!("palisade-handed-{}.txt", std::process::id()));
    std::fs::write(&note, "").unwrap_or_else(|e| panic!("{e}"));
    let file: OwnedFd = std::fs::OpenOptions::new()
        .append(true)
        .open(&note)
        .unwrap_or_else(|e| panic!("{e}"))
        .into();
    let out = exec_with_fd(&env, "agent", &file, 3, &["write-fd", "3", "KEPT"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""ok":true"#),
        "an ordinary inherited file: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_file(&note);

    let got = sink.finish();
    for (key, want) in [
        ("udp/9431", false),
        ("udp/9432", false),
        ("udp/9433", false),
        ("udp/9434", true),
    ] {
        let bytes = got.get(key).map_or(0, |r| r.bytes);
        assert_eq!(
            bytes > 0,
            want,
            "{key}: {bytes} bytes arrived (expected {}) {got:?}",
            if want { "some" } else { "none" }
        );
    }
}

/// Sets `dev.tty.legacy_tiocsti` to 1 for a test and back on drop: the
/// attack needs it, as on hosts that keep the legacy behaviour.
struct LegacyTiocsti(Option<String>);

impl LegacyTiocsti {
    const PATH: &str = "/proc/sys/dev/tty/legacy_tiocsti";

    fn on() -> Self {
        let before = std::fs::read_to_string(Self::PATH).ok();
        if before.as_deref().map(str::trim) != Some("1") {
            std::fs::write(Self::PATH, "1").unwrap_or_else(|e| panic!("{}: {e}", Self::PATH));
        }
        Self(before)
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            let _ = std::fs::write(Self::PATH, b.trim());
        }
    }
}

/// Run `program args` in a new session whose controlling terminal is a
/// fresh pty (as a shell in a terminal runs its commands), then return
/// what the terminal's reader would read next: the typed input left in
/// its queue.
fn in_a_terminal(program: &std::path::Path, args: &[&str]) -> (Output, String) {
    use std::os::{fd::FromRawFd, unix::process::CommandExt};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let stdio = || Stdio::from(slave.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(stdio())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: setsid and ioctl only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    // What waits in the terminal's input queue (a whole line), read from
    // the slave side as the shell would (non-blocking: nothing there
    // reads as EAGAIN).
    let mut queued = Vec::new();
    unsafe {
        libc::fcntl(slave.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        let mut buf = [0u8; 256];
        loop {
            let n = libc::read(slave.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            queued.extend_from_slice(&buf[..n as usize]);
        }
    }
    drop(master);
    (out, String::from_utf8_lossy(&queued).into_owned())
}

#[test]
fn exec_agents_cannot_type_into_the_terminal_they_were_started_from() {
    if !root_or_skip("exec_agents_cannot_type_into_the_terminal_they_were_started_from") {
        return;
    }
    let _legacy = LegacyTiocsti::on();
    let env = TestEnv::new("c2tty", &scoped_policy("10.231.5.9"));
    let _d = DaemonProc::start(&env);
    let probe = Probe::bin();
    let probe = probe.to_str().unwrap_or_default();
    let typed = "palisade approve apr-x\n";
    for (who, prefix) in [("root", vec![]), ("unprivileged", vec!["as-user", NOBODY])] {
        let mut args = vec!["exec", "--socket"];
        let socket = env.socket.display().to_string();
        args.extend([socket.as_str(), "--identity", "agent", "--", probe]);
        args.extend(prefix.iter().copied());
        args.extend(["tiocsti", typed]);
        let (out, queued) = in_a_terminal(&palisade_bin(), &args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(r#""errno":1"#),
            "{who}: TIOCSTI was not refused with EPERM: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !queued.contains("approve"),
            "{who}: the agent's input reached the terminal: {queued:?}"
        );
    }
    // Control: the same program outside exec types into the terminal.
    let (out, queued) = in_a_terminal(std::path::Path::new(probe), &["tiocsti", typed]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""ok":true"#),
        "the control could not type: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        queued.contains("palisade approve"),
        "the control's input: {queued:?}"
    );
}

#[test]
fn exec_agents_cannot_reach_the_hosts_shared_memory() {
    if !root_or_skip("exec_agents_cannot_reach_the_hosts_shared_memory") {
        return;
    }
    let env = TestEnv::new("c2ipc", &scoped_policy("10.231.6.9"));
    let _d = DaemonProc::start(&env);
    // A host worker's segment (root's, 0600): whoever writes it steers
    // the worker, which runs outside any identity.
    // SAFETY: shmget/shmat of a private segment, read back, removed.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
    struct Segment(i32);
    impl Drop for Segment {
        fn drop(&mut self) {
            // SAFETY: removing the test's own segment.
            unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
    let _segment = Segment(id);
    let read = || -> String {
        unsafe {
            let at = libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY);
            assert!(
                at as isize != -1,
                "shmat: {}",
                std::io::Error::last_os_error()
            );
            let bytes = std::slice::from_raw_parts(at.cast::<u8>(), 64).to_vec();
            libc::shmdt(at);
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .to_string()
        }
    };
    let id_text = id.to_string();
    let probe = Probe::bin();
    let out = Command::new(palisade_bin())
        .arg("exec")
        .arg("--socket")
        .arg(&env.socket)
        .args(["--identity", "agent", "--"])
        .arg(&probe)
        .args(["shm-write", &id_text, "run: connect 10.231.6.2"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(r#""ok":true"#),
        "the root agent wrote the host's segment: {text}"
    );
    assert_eq!(read(), "", "the segment changed");
    // Control: the same write outside exec lands.
    let out = Command::new(&probe)
        .args(["shm-write", &id_text, "CONTROL"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""ok":true"#));
    assert_eq!(read(), "CONTROL");
}

#[test]
fn root_exec_agents_cannot_rewrite_host_controls_or_the_daemons_files() {
    if !root_or_skip("root_exec_agents_cannot_rewrite_host_controls_or_the_daemons_files") {
        return;
    }
    let ns = NetNs::named("c2-hostctl", 231, 3);
    let denied = ns.peer_ip.clone();
    // `sealed`: everything read-only but one scratch directory.
    let host_dir = palisade_tests::Scratch::new("c2-host");
    let scratch = palisade_tests::Scratch::new("c2-scratch");
    let sealed = format!(
        "  - id: sealed
    confinement: {{read_only_root: true, writable: [{}]}}
",
        scratch.display()
    );
    let env = TestEnv::new("c2hostctl", &(scoped_policy("10.231.3.9") + &sealed));
    // A notifier secret written inline in the config, as the docs allow,
    // and an OCSF copy of the trail in a directory of its own.
    // (outside the installation's directory, which is protected whole).
    let siem = palisade_tests::Scratch::new("c2siem");
    env.write_config_with(
        &format!("  ocsf:\n    file: {}\n", siem.join("audit.ocsf.jsonl").display()),
        "approvals:\n  notify:\n    - {type: webhook, url: \"http://127.0.0.1:9/hook\", secret: INLINE-WEBHOOK-SECRET}\n",
    );
    let d = DaemonProc::start(&env);
    let cap = Capture::start(&ns, 9000, &[&denied], &["port:9501", "port:9502"]);
    // The red team's edit: let the agent's own identity go anywhere.
    let original = std::fs::read_to_string(&env.policy).unwrap_or_default();
    let widened = original.replace("10.231.3.9/32", "0.0.0.0/0");
    let policy = env.policy.to_str().unwrap_or_default();
    let o = Probe::enrolled(&env, "agent", &["write-file", policy, &widened]);
    assert_eq!(
        o.errno(),
        Some(i64::from(libc::EROFS)),
        "a root agent wrote the policy: {}",
        o.0
    );
    // sed -i replaces the file by a rename.
    let sed = Command::new(palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args([
            "--identity",
            "agent",
            "--",
            "sed",
            "-i",
            "s|10.231.3.9/32|0.0.0.0/0|",
        ])
        .arg(policy)
        .output()
        .unwrap_or_else(|e| panic!("exec sed: {e}"));
    assert!(!sed.status.success(), "sed -i on the policy succeeded");
    assert_eq!(
        std::fs::read_to_string(&env.policy).unwrap_or_default(),
        original
    );
    d.hup();
    thread::sleep(Duration::from_millis(1500));
    Probe::enrolled(&env, "agent", &["tcp", &denied, "9501"])
        .expect_eperm("the denied host after the agent's policy edit");
    // Its current contents, written back: the path itself is writable.
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let o = Probe::enrolled(
        &env,
        "agent",
        &[
            "write-file",
            "/proc/sys/kernel/core_pattern",
            pattern.trim_end(),
        ],
    );
    assert_eq!(
        o.errno(),
        Some(i64::from(libc::EROFS)),
        "a root agent wrote core_pattern: {}",
        o.0
    );
    Probe::plain(&[
        "write-file",
        "/proc/sys/kernel/core_pattern",
        pattern.trim_end(),
    ])
    .expect_ok("the control: root outside writes core_pattern");
    // The rest of the controls and the daemon's files, as the agent sees
    // them; outside, the same paths are writable.
    let paths = [
        "/sys",
        "/sys/fs/cgroup",
        "/proc/sys",
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        env.socket.to_str().unwrap_or_default(),
        env.audit.to_str().unwrap_or_default(),
        env.config.to_str().unwrap_or_default(),
        policy,
        // The learned DNS names' default home.
        "/var/lib/palisade",
        // How the daemon's gateway and notifiers resolve names.
        "/etc/hosts",
        "/etc/resolv.conf",
        // The OCSF copy's directory.
        siem.to_str().unwrap_or_default(),
    ];
    let mut args = vec!["read-only"];
    args.extend(
        paths
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(p).exists()),
    );
    let inside = Probe::enrolled(&env, "agent", &args);
    let outside = Probe::plain(&args);
    for p in &args[1..] {
        assert_eq!(
            inside.0["read_only"][p], true,
            "{p} writable for a root agent: {}",
            inside.0
        );
        if p.starts_with(env.dir.to_str().unwrap_or("-")) || p.starts_with("/proc/sys") {
            assert_eq!(outside.0["read_only"][p], false, "{p}: {}", outside.0);
        }
    }
    // The signing key reads empty; the daemon reads it fine.
    let key = env.dir.join("keys.yaml");
    if key.exists() {
        let o = Probe::enrolled(
            &env,
            "agent",
            &["read-file", key.to_str().unwrap_or_default()],
        );
        assert_eq!(o.0["len"], 0, "the agent read the signing key: {}", o.0);
    }
    // So does the config, with the notifier secret in it; outside, root
    // reads it whole.
    let config = env.config.to_str().unwrap_or_default();
    let o = Probe::enrolled(&env, "agent", &["read-file", config]);
    assert_eq!(o.0["len"], 0, "the agent read the daemon's config: {}", o.0);
    assert!(
        std::fs::read_to_string(&env.config)
            .unwrap_or_default()
            .contains("INLINE-WEBHOOK-SECRET"),
        "the control: the config holds the secret"
    );
    // Root's reach over others' files is gone.
    let c = Probe::enrolled(&env, "agent", &["confinement"]);
    let bnd = c.0["cap_bnd"].as_u64().unwrap_or(u64::MAX);
    for (name, bit) in [
        ("dac_override", 1),
        ("dac_read_search", 2),
        ("fowner", 3),
        ("mknod", 27),
        ("sys_time", 25),
        ("sys_boot", 22),
        ("sys_resource", 24),
        ("net_admin", 12),
        ("net_raw", 13),
        ("sys_admin", 21),
        ("bpf", 39),
    ] {
        assert_eq!(bnd & (1 << bit), 0, "CAP_{name} kept: {}", c.0);
    }
    // Host files as a whole (/etc/cron.d would start a process outside):
    // read-only for a `sealed` agent but its writable directory; the
    // other root agent (the control) writes the same host path.
    let host_file = host_dir.join("cron-job");
    let host_file = host_file.to_str().unwrap_or_default();
    let o = Probe::enrolled(
        &env,
        "sealed",
        &["write-file", host_file, "* * * * * root x"],
    );
    assert_eq!(o.errno(), Some(i64::from(libc::EROFS)), "sealed: {}", o.0);
    let o = Probe::enrolled(&env, "sealed", &["write-file", "/etc/c2-sealed-test", "x"]);
    assert_eq!(
        o.errno(),
        Some(i64::from(libc::EROFS)),
        "sealed /etc: {}",
        o.0
    );
    let own = scratch.join("own");
    Probe::enrolled(
        &env,
        "sealed",
        &["write-file", own.to_str().unwrap_or_default(), "x"],
    )
    .expect_ok("sealed: its writable directory");
    Probe::enrolled(
        &env,
        "agent",
        &["write-file", host_file, "* * * * * root x"],
    )
    .expect_ok("control: a root agent without read_only_root");
    // The control: the operator widens the policy; the same connect
    // reaches the host.
    std::fs::write(&env.policy, &widened).unwrap_or_else(|e| panic!("{e}"));
    d.hup();
    thread::sleep(Duration::from_millis(1500));
    Probe::enrolled(&env, "agent", &["tcp", &denied, "9502"]);
    let counts = cap.finish();
    assert_eq!(counts["port:9501"], 0, "{counts:?}");
    assert!(
        counts["port:9502"] >= 1,
        "the control never arrived: {counts:?}"
    );
}

/// `palisade exec -- probe sleep MS ARGS…` as `agent`, in the background:
/// an agent that acts after the operator has done something.
/// An agent that acts once the file `go` exists.
fn agent_later(env: &TestEnv, go: &std::path::Path, args: &[&str]) -> thread::JoinHandle<Output> {
    let mut cmd = Command::new(palisade_bin());
    cmd.args(["exec", "--socket"])
        .arg(&env.socket)
        .args(["--identity", "agent", "--"])
        .arg(Probe::bin())
        .arg("await")
        .arg(go)
        .args(args);
    thread::spawn(move || cmd.output().unwrap_or_else(|e| panic!("exec: {e}")))
}

fn last_json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("probe said {text:?}: {e}"))
}

/// The daemon and its operators replace files by renaming a new one over
/// the old: `policy push`, `keys rotate`, a restart recreating the socket.
/// A mount on the file itself vanishes from a running agent's view at that
/// moment (and the new file would be writable, or readable); the agent's
/// view is fixed by directory, so a root agent started before still cannot
/// rewrite the pushed policy, read the rotated key or take the new socket.
#[test]
fn root_exec_agents_stay_locked_out_when_the_daemons_files_are_replaced() {
    if !root_or_skip("root_exec_agents_stay_locked_out_when_the_daemons_files_are_replaced") {
        return;
    }
    let allowed = TcpServer::start("127.0.0.1");
    let forbidden = TcpServer::start("127.0.0.1");
    let policy = |port: &str| {
        format!(
            "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow: [{{cidr: 127.0.0.1/32, ports: [{port}]}}]\n"
        )
    };
    let env = TestEnv::new("c2-rename", &policy(&allowed.port())).laid_out_like_a_host();
    let d = DaemonProc::start(&env);
    let key = env.dir.join("lib/keys.yaml");
    assert!(key.exists(), "the daemon made no key at {}", key.display());
    let pushed = env.dir.join("pushed.yaml");
    std::fs::write(&pushed, policy(&allowed.port())).unwrap_or_else(|e| panic!("{e}"));
    let widened = policy(&format!("{}, {}", allowed.port(), forbidden.port()));
    let policy_path = env.policy.to_str().unwrap_or_default().to_string();
    let socket = env.socket.to_str().unwrap_or_default().to_string();

    // Agents already running when the files are replaced.
    let go = env.dir.join("go");
    let writer = agent_later(&env, &go, &["write-file", &policy_path, &widened]);
    let reader = agent_later(&env, &go, &["read-file", key.to_str().unwrap_or_default()]);
    let squatter = agent_later(&env, &go, &["run", "rm", "-f", &socket]);
    let config_path = env.config.to_str().unwrap_or_default().to_string();
    let config_reader = agent_later(&env, &go, &["read-file", &config_path]);
    // All four enrolled (and so confined) before anything is replaced.
    env.wait_enrolments("agent", 4);
    // The config edited as editors do (a new file renamed over it), with
    // a notifier secret written inline.
    let edited = format!(
        "{}approvals:\n  notify:\n    - {{type: webhook, url: \"http://127.0.0.1:9/hook\", secret: EDITED-INLINE-SECRET}}\n",
        std::fs::read_to_string(&env.config).unwrap_or_default()
    );
    let tmp_config = env.config.with_extension("yaml.new");
    std::fs::write(&tmp_config, edited).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp_config, &env.config).unwrap_or_else(|e| panic!("{e}"));
    env.cli_ok(&["policy", "push", pushed.to_str().unwrap_or_default()]);
    let rotated = Command::new(palisade_bin())
        .args(["keys", "rotate", "--file"])
        .arg(&key)
        .output()
        .unwrap_or_else(|e| panic!("keys rotate: {e}"));
    assert!(rotated.status.success(), "keys rotate: {rotated:?}");
    drop(d); // a restart: the new daemon recreates its socket
    let d = DaemonProc::start(&env);
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));

    let w = last_json(&writer.join().unwrap_or_else(|_| panic!("writer")));
    assert_eq!(
        w["errno"],
        i64::from(libc::EROFS),
        "a root agent rewrote the pushed policy: {w}"
    );
    assert_eq!(
        std::fs::read_to_string(&env.policy).unwrap_or_default(),
        policy(&allowed.port())
    );
    let r = last_json(&reader.join().unwrap_or_else(|_| panic!("reader")));
    assert!(
        !r["ok"].as_bool().unwrap_or(false) || r["len"] == 0,
        "a root agent read the rotated key: {r}"
    );
    let c = last_json(
        &config_reader
            .join()
            .unwrap_or_else(|_| panic!("config reader")),
    );
    assert!(
        !c["ok"].as_bool().unwrap_or(false) || c["len"] == 0,
        "a root agent read the edited config: {c}"
    );
    let s = squatter.join().unwrap_or_else(|_| panic!("squatter"));
    assert!(!s.status.success(), "a root agent removed the new socket");
    assert!(env.socket.exists());
    env.cli_ok(&["status"]);
    // Nor can it move the directory holding them aside to put a copy of
    // its own in their place (every directory above them is pinned; the
    // test does not try the system's own, /tmp).
    let top = env.dir.to_str().unwrap_or_default().to_string();
    for (from, to) in [
        (top.clone(), format!("{top}.swapped")),
        (format!("{top}/etc"), format!("{top}/etc.old")),
    ] {
        let mv = Command::new(palisade_bin())
            .args(["exec", "--socket"])
            .arg(&env.socket)
            .args(["--identity", "agent", "--", "mv", &from, &to])
            .output()
            .unwrap_or_else(|e| panic!("exec mv: {e}"));
        assert!(
            !mv.status.success(),
            "a root agent renamed {from}: {}",
            String::from_utf8_lossy(&mv.stderr)
        );
    }
    assert!(env.policy.exists() && env.socket.exists());
    d.hup();
    thread::sleep(Duration::from_millis(1500));

    // The far end: the forbidden listener was never reached; the allowed
    // one is (the control).
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &forbidden.port()])
        .expect_eperm("the destination the agent tried to allow itself");
    Probe::enrolled(&env, "agent", &["tcp", "127.0.0.1", &allowed.port()]).expect_ok("the control");
    assert_eq!(
        forbidden.wait_accepted(1),
        0,
        "the forbidden listener was reached"
    );
}

#[test]
fn exec_user_runs_the_agent_as_that_user_with_no_capability_left() {
    if !root_or_skip("exec_user_runs_the_agent_as_that_user_with_no_capability_left") {
        return;
    }
    let env = TestEnv::new("c2user", &scoped_policy("10.231.9.9"));
    let _d = DaemonProc::start(&env);
    let show = "id -u; id -g; id -G; echo \"$USER $HOME\"; grep CapEff /proc/self/status";
    let out = palisade_tests::gateway::exec_as_user(
        &env,
        "agent",
        "nobody",
        std::path::Path::new("sh"),
        &["-c", show],
    )
    .output()
    .unwrap_or_else(|e| panic!("exec --user: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "65534",
            "65534",
            "65534",
            "nobody /nonexistent",
            "CapEff:\t0000000000000000"
        ],
        "{text}"
    );
    // A user the host does not know is refused before anything runs.
    let unknown = palisade_tests::gateway::exec_as_user(
        &env,
        "agent",
        "no-such-agent-user",
        std::path::Path::new("true"),
        &[],
    )
    .output()
    .unwrap_or_else(|e| panic!("exec --user: {e}"));
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no user `no-such-agent-user`"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
