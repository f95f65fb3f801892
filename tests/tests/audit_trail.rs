//! The audit trail is a hash chain: `palisade audit verify` proves it intact
//! and finds any edited, deleted or moved record, across rotated files and
//! daemon restarts.

use std::{path::Path, process::Command};

use nix::sys::signal::Signal;
use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, palisade_bin, root_or_skip};

const POLICY: &str = "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 10.99.0.0/16}\n";

fn verify(files: &[&Path]) -> (Option<i32>, String) {
    let out = Command::new(palisade_bin())
        .args(["audit", "verify"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("palisade audit verify: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `n` denied connects, to `n` ports from `first`: each a kind of its own,
/// so each its own record (repeats of one kind are aggregated).
fn denied_connects(env: &TestEnv, first: u16, n: u32) {
    let r = Probe::enrolled(
        env,
        "agent",
        &["tcp-ports", "127.0.0.1", &first.to_string(), &n.to_string()],
    );
    assert_eq!(r.0["eperm"], n, "all denied: {}", r.0);
}

#[test]
fn verify_finds_a_modified_a_deleted_and_a_swapped_record() {
    if !root_or_skip("verify_finds_a_modified_a_deleted_and_a_swapped_record") {
        return;
    }
    let target = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("trail-verify", POLICY);
    let mut d = DaemonProc::start(&env);
    // A second daemon on the same trail refuses before touching anything.
    let second = Command::new(palisade_bin())
        .args(["daemon", "--config"])
        .arg(&env.config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another palisade daemon"), "{err}");
    env.status();
    denied_connects(&env, target.addr.port(), 6);
    let six = palisade_tests::wait_for(std::time::Duration::from_secs(5), || {
        let n = env
            .audit_events()
            .iter()
            .filter(|e| e["verdict"] == "deny")
            .count();
        (n == 6).then_some(())
    });
    assert!(six.is_some(), "six deny records: {:?}", env.audit_events());
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));

    let text = std::fs::read_to_string(&env.audit).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 8, "{text}");
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["seq"], i as u64 + 1, "{l}");
        for key in ["time", "kind", "verdict", "reason", "prev_hash", "hash"] {
            assert!(!v[key].is_null(), "record lacks `{key}`: {l}");
        }
    }
    let (code, out) = verify(&[&env.audit]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("chain intact"), "{out}");

    let write = |name: &str, lines: &[String]| {
        let p = env.dir.join(name);
        std::fs::write(
            &p,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        p
    };
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    // Line 4 is a deny: turn it into an allow, as someone covering tracks would.
    let mut modified = owned.clone();
    let deny_at = owned
        .iter()
        .position(|l| l.contains("\"verdict\":\"deny\""))
        .unwrap_or_else(|| panic!("no deny in {text}"));
    modified[deny_at] = modified[deny_at].replace("\"verdict\":\"deny\"", "\"verdict\":\"allow\"");
    let p = write("modified.jsonl", &modified);
    let (code, out) = verify(&[&p]);
    assert_eq!(code, Some(1), "{out}");
    let want = format!(
        "{}:{}: record seq {} was modified",
        p.display(),
        deny_at + 1,
        deny_at + 1
    );
    assert!(out.contains(&want), "want `{want}` in:\n{out}");

    let mut deleted = owned.clone();
    deleted.remove(deny_at);
    let p = write("deleted.jsonl", &deleted);
    let (code, out) = verify(&[&p]);
    assert_eq!(code, Some(1), "{out}");
    let want = format!(
        "{}:{}: record seq {} is missing",
        p.display(),
        deny_at + 1,
        deny_at + 1
    );
    assert!(out.contains(&want), "want `{want}` in:\n{out}");

    let mut swapped = owned.clone();
    swapped.swap(deny_at, deny_at + 1);
    let p = write("swapped.jsonl", &swapped);
    let (code, out) = verify(&[&p]);
    assert_eq!(code, Some(1), "{out}");
    let want = format!(
        "{}:{}: record seq {} is out of order",
        p.display(),
        deny_at + 2,
        deny_at + 1
    );
    assert!(out.contains(&want), "want `{want}` in:\n{out}");

    let (code, out) = verify(&[&env.dir.join("no-such-file")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no-such-file"), "{out}");
}

#[test]
fn rotation_and_restarts_keep_one_chain() {
    if !root_or_skip("rotation_and_restarts_keep_one_chain") {
        return;
    }
    let env = TestEnv::new("trail-rotate", POLICY);
    env.write_config_with("  rotate_bytes: 4096\n  keep: 0\n", "");
    let all_files = || {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&env.dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // What `audit.jsonl*` matches in a shell: side files are hidden.
                n.starts_with("audit.jsonl")
            })
            .collect();
        files.sort();
        files.reverse(); // verify must not depend on the order given
        files
    };
    let count_records = |files: &[std::path::PathBuf]| {
        files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum::<usize>()
    };
    for round in 0..2u16 {
        let mut d = DaemonProc::start(&env);
        denied_connects(&env, 20000 + round * 100, 15);
        assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0), "round {round}");
    }
    // A crash (SIGKILL) in the middle of the trail's life, too.
    let mut d = DaemonProc::start(&env);
    denied_connects(&env, 20500, 5);
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.kill9();
    let mut d = DaemonProc::start(&env);
    assert_eq!(d.signal_and_wait(Signal::SIGTERM), Some(0));

    let files = all_files();
    assert!(
        files.len() >= 4,
        "expected rotation into several files: {files:?}"
    );
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let (code, out) = verify(&refs);
    assert_eq!(code, Some(0), "{out}");
    let records = count_records(&files);
    assert!(
        out.contains(&format!("{records} records, seq 1–{records}, chain intact")),
        "{out}"
    );
    // Rotation happens between batches: a file passes rotate_bytes by at
    // most the one batch that did not fit.
    for f in &files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 3 * 4096, "{} is {size} bytes", f.display());
    }

    // Remove a rotated file from the middle: the gap is found and located.
    let middle = env.dir.join("audit.jsonl.2");
    let gone = std::fs::read_to_string(&middle).unwrap_or_else(|e| panic!("{e}"));
    let first_gone: u64 =
        serde_json::from_str::<serde_json::Value>(gone.lines().next().unwrap_or_default())
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .unwrap_or_else(|| panic!("no seq in {}", middle.display()));
    std::fs::remove_file(&middle).unwrap_or_else(|e| panic!("{e}"));
    let files = all_files();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let (code, out) = verify(&refs);
    assert_eq!(code, Some(1), "{out}");
    // The file held one record or several (how the batches fell).
    let at = env.dir.join("audit.jsonl.3").display().to_string();
    let several = format!("{at}:1: records seq {first_gone}–");
    let one = format!("{at}:1: record seq {first_gone} is missing");
    assert!(
        out.contains(&several) || out.contains(&one),
        "want `{several}` or `{one}` in:\n{out}"
    );
}
