//! The audit trail in OCSF: a real daemon writes every kind of record
//! (kernel verdicts in enforce and audit mode, DNS lookups, decisions,
//! approvals, grants, the kill switch, its own lifecycle); the OCSF file
//! and the OTLP exporter in `ocsf` format carry each as an OCSF 1.8.0
//! event that validates against the vendored class schemas (Python
//! `jsonschema`), with the fields that map taken from the record.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use palisade_tests::{
    DaemonProc, Probe, TcpServer, TestEnv, client_python,
    dns::{self, Dnsmasq, upstream_ip},
    http::Collector,
    probe::{RpcAs, rpc},
    root_or_skip, wait_for,
};
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// Validate JSON lines against the vendored schemas; every event must pass.
fn validate(file: &Path) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ocsf/validate.py");
    let out = Command::new(client_python())
        .arg(&script)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("validator said {l:?}: {e}")))
        .collect();
    let failed: Vec<&Value> = results.iter().filter(|r| r["ok"] != true).collect();
    assert!(
        out.status.success() && failed.is_empty() && !results.is_empty(),
        "OCSF validation of {} failed: {failed:#?}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

#[test]
fn every_record_is_a_valid_ocsf_event_in_the_file_and_over_otlp() {
    if !root_or_skip("every_record_is_a_valid_ocsf_event_in_the_file_and_over_otlp") {
        return;
    }
    let n = dns::slot();
    let env = TestEnv::new("ocsf", "version: 1\n");
    let open = TcpServer::start(&format!("127.180.{n}.20"));
    let closed = TcpServer::start(&format!("127.180.{n}.21"));
    let granted = TcpServer::start(&format!("127.180.{n}.22"));
    env.write_policy(&format!(
        r#"version: 1
label: ocsf
identities:
  - id: enf
    exec_only: true
    egress:
      allow:
        - {{id: api, host: api.test, protocol: tcp}}
        - {{id: open, cidr: 127.180.{n}.20, ports: [{open}], protocol: tcp}}
      deny:
        - {{id: no-closed, cidr: 127.180.{n}.21}}
      grantable:
        - {{id: window, cidr: 127.180.{n}.22, ports: [{granted}], protocol: tcp, max_ttl: 2s}}
    tools:
      allow:
        - id: payments
          tool: stripe
          actions: [create_payment]
          when: params.amount <= 5000
          approval_if: params.amount > 1000
  - id: shadow
    mode: audit
    exec_only: true
"#,
        open = open.addr.port(),
        granted = granted.addr.port(),
    ));
    let collector = Collector::start();
    let ocsf_file = env.dir.join("ocsf.jsonl");
    env.write_config_with(
        &format!(
            "  otlp:\n    endpoint: http://{}\n    format: ocsf\n    batch: 16\n  ocsf:\n    file: {}\n",
            collector.addr,
            ocsf_file.display()
        ),
        &dns::config(n, &env.dir, ""),
    );
    let _upstream = Dnsmasq::start(
        &env.dir,
        None,
        &upstream_ip(n),
        &[format!("--host-record=api.test,{}", dns::answer_ip(n, 1))],
    );
    let mut daemon = DaemonProc::start(&env);

    // Kernel verdicts, enforced and shadowed, TCP and UDP.
    Probe::enrolled(
        &env,
        "enf",
        &["tcp", &closed.addr.ip().to_string(), &closed.port()],
    )
    .expect_eperm("a deny rule");
    Probe::enrolled(
        &env,
        "enf",
        &["tcp", &open.addr.ip().to_string(), &open.port()],
    )
    .expect_ok("an allow rule");
    Probe::enrolled(
        &env,
        "shadow",
        &["tcp", &closed.addr.ip().to_string(), &closed.port()],
    )
    .expect_ok("shadow mode lets it through");
    Probe::enrolled(&env, "shadow", &["udp", &closed.addr.ip().to_string(), "9"])
        .expect_ok("shadow mode, a datagram");
    // Lookups, allowed and refused.
    let r = Probe::enrolled(&env, "enf", &["dns", "udp", &upstream_ip(n), "api.test"]);
    assert_eq!(r.0["rcode"], "NOERROR", "{}", r.0);
    let r = Probe::enrolled(&env, "enf", &["dns", "udp", &upstream_ip(n), "evil.test"]);
    assert_eq!(r.0["rcode"], "NXDOMAIN", "{}", r.0);
    // Decisions, an approval, a grant that expires, the kill switch.
    let pay = |amount: u32| {
        rpc(
            &env,
            RpcAs::Identity("enf"),
            &[
                "decide",
                "fresh",
                "stripe",
                "create_payment",
                &format!(r#"{{"amount": {amount}}}"#),
            ],
        )
    };
    assert_eq!(pay(100)["verdict"], "ALLOW");
    assert_eq!(pay(9000)["verdict"], "DENY");
    let asked = pay(2000);
    assert_eq!(asked["verdict"], "APPROVAL_REQUIRED", "{asked}");
    let approval = asked["approval_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    env.cli_ok(&["approve", &approval, "--reason", "ticket 7"]);
    let g = rpc(
        &env,
        RpcAs::Identity("enf"),
        &[
            "egress",
            &granted.addr.ip().to_string(),
            &granted.port(),
            "2",
        ],
    );
    assert_eq!(g["granted"], true, "{g}");
    env.cli_ok(&["revoke", "shadow", "--reason", "drill"]);
    env.cli_ok(&["restore", "shadow"]);
    env.wait_audit("for the grant to expire", |e| {
        e["kind"] == "grant" && e["verdict"] == "expired"
    });

    // The OCSF file catches up with the trail: one event per record.
    let trail_count = || env.audit_events().len();
    let caught_up = wait_for(Duration::from_secs(10), || {
        let n = trail_count();
        (lines(&ocsf_file).len() >= n && n > 0).then_some(n)
    });
    assert!(
        caught_up.is_some(),
        "the OCSF file did not catch up with the trail"
    );
    let trail: BTreeMap<u64, (Value, String)> = env
        .audit_lines()
        .into_iter()
        .map(|l| {
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}"));
            (v["seq"].as_u64().unwrap_or(0), (v, l))
        })
        .collect();
    let events = lines(&ocsf_file);
    for e in &events {
        let seq = e["metadata"]["sequence"].as_u64().unwrap_or(0);
        let (rec, line) = trail
            .get(&seq)
            .unwrap_or_else(|| panic!("OCSF event for unknown seq {seq}: {e}"));
        assert_eq!(
            e["raw_data"].as_str(),
            Some(line.as_str()),
            "raw_data is the sealed line"
        );
        assert_eq!(e["metadata"]["uid"], rec["hash"]);
        if let Some(pv) = rec["policy_version"].as_str() {
            assert_eq!(e["policy"]["version"], pv);
        }
    }
    let results = validate(&ocsf_file);
    let classes: std::collections::BTreeSet<u64> = results
        .iter()
        .filter_map(|r| r["class_uid"].as_u64())
        .collect();
    for want in [0, 3005, 4001, 4003, 6003] {
        assert!(
            classes.contains(&want),
            "no event of class {want}: {classes:?}"
        );
    }

    // What maps, maps.
    let find = |pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| pred(e))
            .cloned()
            .unwrap_or_else(|| panic!("no such OCSF event"))
    };
    let blocked = find(&|e| e["class_uid"] == 4001 && e["disposition"] == "Blocked");
    let rec = &trail[&blocked["metadata"]["sequence"].as_u64().unwrap_or(0)].0;
    assert_eq!(blocked["dst_endpoint"]["ip"], rec["dst_ip"]);
    assert_eq!(blocked["dst_endpoint"]["port"], rec["dst_port"]);
    assert_eq!(blocked["actor"]["process"]["pid"], rec["pid"]);
    assert_eq!(blocked["actor"]["user"]["name"], "enf");
    assert_eq!(blocked["firewall_rule"]["uid"], "no-closed");
    assert_eq!(blocked["connection_info"]["protocol_name"], "tcp");
    let shadowed = find(&|e| e["class_uid"] == 4001 && e["activity_name"] == "Traffic");
    assert_eq!(shadowed["disposition"], "No Action");
    assert_eq!(shadowed["action"], "Allowed");
    let nx = find(&|e| e["class_uid"] == 4003 && e["rcode"] == "NXDOMAIN");
    assert_eq!(nx["query"]["hostname"], "evil.test");
    let answered = find(&|e| e["class_uid"] == 4003 && e["rcode"] == "NOERROR");
    assert_eq!(answered["answers"][0]["rdata"], dns::answer_ip(n, 1));
    let approved = find(&|e| e["class_uid"] == 6003 && e["disposition"] == "Approved");
    assert_eq!(approved["api"]["operation"], "stripe.create_payment");
    assert_eq!(approved["api"]["request"]["uid"], approval);
    assert!(
        approved["actor"]["user"]["name"]
            .as_str()
            .is_some_and(|a| a.contains("uid 0")),
        "the approver acts: {approved}"
    );
    let denied = find(&|e| e["class_uid"] == 6003 && e["disposition"] == "Blocked");
    assert_eq!(denied["status_detail"], "no-matching-rule");
    let grant = find(&|e| e["class_uid"] == 3005 && e["activity_id"] == 1);
    assert!(
        grant["privileges"][0]
            .as_str()
            .is_some_and(|p| p.contains(&granted.addr.ip().to_string())),
        "{grant}"
    );
    find(&|e| e["class_uid"] == 3005 && e["unmapped"]["kind"] == "kill_switch");

    // The OTLP exporter sends the same events.
    let all = trail.keys().copied().max().unwrap_or(0);
    let delivered = wait_for(Duration::from_secs(15), || {
        (collector.seqs().iter().copied().max() >= Some(all)).then_some(())
    });
    assert!(delivered.is_some(), "OTLP did not deliver up to seq {all}");
    let bodies = env.dir.join("otlp-bodies.jsonl");
    let received = collector
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    std::fs::write(
        &bodies,
        received
            .iter()
            .map(|r| format!("{}\n", r.line))
            .collect::<String>(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let otlp = validate(&bodies);
    assert_eq!(otlp.len(), received.len());
    for r in &received {
        let e: Value = serde_json::from_str(&r.line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e["metadata"]["sequence"], r.seq, "{e}");
    }

    // A restart continues the file where it stopped: no gap, no repeat.
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    let before = lines(&ocsf_file).len();
    let _daemon = DaemonProc::start(&env);
    let grown = wait_for(Duration::from_secs(10), || {
        let n = env.audit_events().len();
        (lines(&ocsf_file).len() == n && n > before).then_some(n)
    });
    assert!(
        grown.is_some(),
        "the OCSF file did not follow after a restart: {} events for {} records",
        lines(&ocsf_file).len(),
        env.audit_events().len()
    );
    let seqs: Vec<u64> = lines(&ocsf_file)
        .iter()
        .map(|e| e["metadata"]["sequence"].as_u64().unwrap_or(0))
        .collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every seq once, in order");
}
