//! IPv6 addresses that lead to an IPv4 host (6to4, NAT64 well-known and
//! local-use, IPv4-compatible, Teredo) are judged as that IPv4 address, not
//! by IPv6 rules: a policy that allows `::/0` and one IPv4 host does not open
//! the IPv4 host next to it through a 6to4 relay or NAT64 gateway. This
//! kernel has no sit/NAT64 to build the relay, so the attack is observed at
//! the hook: `EPERM` and an audit record naming the embedded IPv4 address,
//! next to the same forms of the allowed IPv4 address, which the hook lets
//! through (the connect then fails for want of a route, not with `EPERM`).
//! As root and unprivileged, TCP connect and UDP sendto; `policy explain`
//! agrees.
//!
//! Addresses: denied 10.232.0.2, allowed 10.232.0.9, ports 932x.

use palisade_tests::{DaemonProc, Probe, TestEnv, palisade_bin, root_or_skip};

/// (form, denied address, allowed address)
const FORMS: &[(&str, &str, &str)] = &[
    ("6to4", "2002:ae8:2::1", "2002:ae8:9::1"),
    ("nat64", "64:ff9b::10.232.0.2", "64:ff9b::10.232.0.9"),
    (
        "nat64-local",
        "64:ff9b:1::10.232.0.2",
        "64:ff9b:1::10.232.0.9",
    ),
    ("compat", "::10.232.0.2", "::10.232.0.9"),
    (
        "teredo",
        "2001:0:c000:201:0:ffff:f517:fffd",
        "2001:0:c000:201:0:ffff:f517:fff6",
    ),
];

const EPERM: i64 = 1;

#[test]
fn ipv6_forms_of_a_denied_ipv4_host_are_denied() {
    if !root_or_skip("ipv6_forms_of_a_denied_ipv4_host_are_denied") {
        return;
    }
    let env = TestEnv::new("nf-embed", "version: 1\n");
    let sel = env.make_cgroup("sel");
    let policy = format!(
        "version: 1
identities:
  - id: agent
    selectors: [{{cgroup: {sel}}}]
    egress:
      allow:
        - cidr: ::/0
        - cidr: 10.232.0.9/32
",
        sel = env.selector_path("sel")
    );
    env.write_policy(&policy);
    env.write_config("");
    let _daemon = DaemonProc::start(&env);

    let mut port = 9320u16;
    for &(form, denied, allowed) in FORMS {
        for user in [None, Some("65534")] {
            for action in ["tcp", "udp"] {
                port += 1;
                let p = port.to_string();
                let mut args: Vec<&str> = Vec::new();
                if let Some(uid) = user {
                    args.extend(["as-user", uid]);
                }
                args.extend([action, denied, p.as_str()]);
                let o = Probe::in_cgroup(&sel, &args);
                assert_eq!(
                    o.errno(),
                    Some(EPERM),
                    "{form} {denied} ({action}, uid {user:?}) was not refused: {}",
                    o.0
                );
                let rec = env.wait_audit(&format!("deny for {form} port {p}"), |e| {
                    e["verdict"] == "deny" && e["dst_port"] == port
                });
                assert_eq!(
                    rec["dst_ip"], "10.232.0.2",
                    "{form}: the record must name the IPv4 host reached: {rec}"
                );
                args.pop();
                args.pop();
                args.extend([allowed, p.as_str()]);
                let o = Probe::in_cgroup(&sel, &args);
                assert_ne!(
                    o.errno(),
                    Some(EPERM),
                    "{form} {allowed} ({action}, uid {user:?}) leads to an allowed IPv4 host: {}",
                    o.0
                );
            }
        }
        // `policy explain` judges the same way.
        let explain = |dst: &str| {
            let out = std::process::Command::new(palisade_bin())
                .args(["policy", "explain", "--policy"])
                .arg(&env.policy)
                .args([
                    "--identity",
                    "agent",
                    "--destination",
                    &format!("[{dst}]:443"),
                ])
                .output()
                .unwrap_or_else(|e| panic!("policy explain: {e}"));
            String::from_utf8_lossy(&out.stdout).to_lowercase()
        };
        let d = explain(denied);
        assert!(
            d.contains("10.232.0.2") && d.contains("deny"),
            "{form}: explain {denied}: {d}"
        );
        let a = explain(allowed);
        assert!(
            a.contains("allow") && !a.contains("deny"),
            "{form}: explain {allowed}: {a}"
        );
    }
}
