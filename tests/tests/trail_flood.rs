//! Flooding the trail away: an unprivileged enrolled agent that loops on a
//! denied `sendto` costs the trail a few records (repeats are counted in
//! the kernel and recorded with their count), every denial is accounted
//! for, retention keeps what is young, and `audit verify` tells a beginning
//! deleted by retention (recorded in the chain) from one removed by hand.

use std::{path::PathBuf, process::Command, time::Duration};

use palisade_tests::{
    DaemonProc, Probe, TestEnv, UdpServer, http::Scrape, palisade_bin, root_or_skip, wait_for,
};
use serde_json::Value;

const POLICY: &str = "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.140.0.0/16}\n";

/// Every trail file, oldest first.
fn trail_files(env: &TestEnv) -> Vec<PathBuf> {
    let mut rotated: Vec<(u64, PathBuf)> = std::fs::read_dir(&env.dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("audit.jsonl.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort();
    let mut all: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    all.push(env.audit.clone());
    all
}

fn records(files: &[PathBuf]) -> Vec<Value> {
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Denials of `identity` the records stand for: an event record is one,
/// an aggregate record is its `count`.
fn denials(records: &[Value], identity: &str) -> u64 {
    records
        .iter()
        .filter(|e| e["kind"] == "network" && e["identity"] == identity && e["verdict"] == "deny")
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum()
}

fn verify(files: &[PathBuf]) -> (i32, String) {
    let out = Command::new(palisade_bin())
        .args(["audit", "verify"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("audit verify: {e}"));
    // stderr too: an error (exit 2) says what it could not read.
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_unprivileged_sendto_flood_costs_a_few_records_and_every_denial_is_counted() {
    if !root_or_skip("an_unprivileged_sendto_flood_costs_a_few_records_and_every_denial_is_counted")
    {
        return;
    }
    let target = UdpServer::start("127.140.8.1");
    let env = TestEnv::new("trail-flood", POLICY);
    // Small files so that a flood would rotate many times; retention with
    // its defaults (keep 2 here, but nothing younger than 24 h goes).
    env.write_config_with(
        "  rotate_bytes: 2048\n  keep: 2\n",
        "kernel:\n  aggregate_ms: 1000\n",
    );
    let daemon = DaemonProc::start(&env);
    let before = records(&trail_files(&env));
    assert!(
        before.iter().any(|e| e["seq"] == 1),
        "the trail starts with seq 1"
    );

    // The attack: as uid 65534 inside the enrolled cgroup, 10 s of sendto.
    let out = Command::new(palisade_bin())
        .args(["exec", "--socket"])
        .arg(&env.socket)
        .args([
            "--identity",
            "agent",
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(Probe::bin())
        .args(["udp-flood", "127.140.8.1", &target.port(), "10000"])
        .output()
        .unwrap_or_else(|e| panic!("flood: {e}"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "flood said {:?} {:?}: {e}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(r["uid"], 65534, "{r}");
    let denied = r["eperm"].as_u64().unwrap_or(0);
    assert!(
        denied > 10_000 && r["sent"] == 0,
        "every sendto denied: {r}"
    );
    assert_eq!(target.received(), 0, "nothing arrived at the far end");

    // Every denial is in the trail: one event record per period and kind,
    // and the rest in aggregate records with their counts.
    let settled = wait_for(Duration::from_secs(15), || {
        let all = records(&trail_files(&env));
        (denials(&all, "agent") == denied).then_some(all)
    });
    let all = records(&trail_files(&env));
    let all = settled.unwrap_or_else(|| {
        panic!(
            "{denied} denials, the trail accounts for {}",
            denials(&all, "agent")
        )
    });
    let kernel = Scrape::fetch(&env.metrics_address())
        .value("palisade_verdicts_total{identity=\"agent\",verdict=\"deny\"}")
        .unwrap_or(-1.0) as u64;
    assert_eq!(kernel, denied, "the kernel's own deny counter");
    let network = all.iter().filter(|e| e["kind"] == "network").count();
    eprintln!(
        "{denied} denials in 10 s: {network} network records, {} in all",
        all.len()
    );
    assert!(network <= 40, "a flood costs a few records, not {network}");
    assert!(
        all.iter()
            .any(|e| e["kind"] == "network" && e["count"].as_u64().unwrap_or(0) > 1000),
        "an aggregate record carries the count"
    );

    // The earlier records are still there, and the chain checks out (with
    // the daemon stopped, so that no rotation runs while verify reads).
    drop(daemon);
    let files = trail_files(&env);
    for e in &before {
        assert!(
            all.iter()
                .any(|a| a["seq"] == e["seq"] && a["hash"] == e["hash"]),
            "lost {e}"
        );
    }
    let (code, text) = verify(&files);
    assert_eq!(code, 0, "verify: {text}");

    // The beginning removed by hand is flagged.
    assert!(files.len() >= 2, "the trail rotated: {files:?}");
    std::fs::remove_file(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    let (code, text) = verify(&files[1..]);
    assert_eq!(code, 1, "verify after removing the first file: {text}");
    assert!(
        text.contains("records before it are missing and no retention record accounts for them"),
        "{text}"
    );
}

#[test]
fn retention_deletes_with_a_record_and_verify_accepts_only_that() {
    if !root_or_skip("retention_deletes_with_a_record_and_verify_accepts_only_that") {
        return;
    }
    let env = TestEnv::new("trail-retention", POLICY);
    env.write_config_with(
        "  rotate_bytes: 1024\n  keep: 1\n  keep_min_age: 0s\n",
        "kernel:\n  aggregate_ms: 200\n",
    );
    let daemon = DaemonProc::start(&env);
    // Denials to many ports, in separate bursts (each written as a batch
    // of its own): the trail rotates several times.
    for burst in 0..5u16 {
        let first = (20000 + burst * 10).to_string();
        let r = Probe::enrolled(&env, "agent", &["tcp-ports", "127.140.8.2", &first, "10"]);
        assert_eq!(r.0["eperm"], 10, "{}", r.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let retained = wait_for(Duration::from_secs(10), || {
        let files = trail_files(&env);
        let all = records(&files);
        let gone = !all.iter().any(|e| e["seq"] == 1);
        let recorded = all.iter().any(|e| e["kind"] == "retention");
        (gone && recorded).then_some(files)
    });
    retained.unwrap_or_else(|| panic!("no retention: {:?}", records(&trail_files(&env))));
    // The daemon stopped, the files stay as they are: a running daemon may
    // rotate (and retention delete) between listing the files and verifying.
    drop(daemon);
    let files = trail_files(&env);
    let (code, text) = verify(&files);
    assert_eq!(code, 0, "a beginning deleted by retention verifies: {text}");
    assert!(text.contains("deleted by retention"), "{text}");
    // Now one more file removed by hand, past what retention recorded.
    if files.len() >= 2 {
        std::fs::remove_file(&files[0]).unwrap_or_else(|e| panic!("{e}"));
        let (code, text) = verify(&files[1..]);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("were removed without a record") || text.contains("no retention record"),
            "{text}"
        );
    }
}
