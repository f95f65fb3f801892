//! The journal on a real file: what is appended comes back, a rewrite keeps
//! what is appended while it runs, and damage is found and moved aside.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::*;

/// A directory of the test's own, removed when the test is done.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("palisade-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn config(dir: &Path, fsync: &str) -> StateConfig {
    StateConfig {
        file: dir.join("state.journal"),
        fsync: fsync.into(),
        fsync_interval: "1ms".into(),
    }
}

fn used(n: u64) -> Record {
    Record::Used {
        identity: "a".into(),
        jti: format!("{n:032x}"),
        exp: u64::MAX,
    }
}

/// A journal whose live state is the records appended to it (as a
/// component would keep them).
fn started(cfg: &StateConfig) -> (Arc<Journal>, Arc<Mutex<Vec<Record>>>, Found) {
    let opened = open(cfg).unwrap();
    let live = Arc::new(Mutex::new(Vec::new()));
    let l = live.clone();
    opened
        .journal
        .begin(Box::new(move || Some(l.lock().unwrap().clone())))
        .unwrap();
    (opened.journal, live, opened.found)
}

#[test]
fn records_survive_a_reopen_and_a_second_daemon_is_refused() {
    let dir = scratch("reopen");
    let cfg = config(&dir, "always");
    let (j, _, found) = started(&cfg);
    assert!(matches!(found, Found::Nothing));
    let since = j.replay_since();
    for n in 0..10 {
        let seq = j.append(&used(n)).unwrap();
        j.durable(seq).unwrap();
    }
    assert!(matches!(open(&cfg), Err(StateError::InUse(..))));
    j.close();
    drop(j);
    let again = open(&cfg).unwrap();
    assert!(matches!(again.found, Found::Clean { records: 11 }));
    assert_eq!(
        again.journal.replay_since(),
        since,
        "the record still covers the same span"
    );
    assert_eq!(again.snapshot.used["a"].len(), 10);
}

#[test]
fn a_truncated_or_edited_journal_is_kept_aside_and_reported() {
    for (name, damage) in [("truncated", 0usize), ("edited", 1usize), ("empty", 2usize)] {
        let dir = scratch(name);
        let cfg = config(&dir, "batch");
        let (j, _, _) = started(&cfg);
        for n in 0..5 {
            j.append(&used(n)).unwrap();
        }
        j.close();
        drop(j);
        let mut bytes = std::fs::read(&cfg.file).unwrap();
        match damage {
            0 => bytes.truncate(bytes.len() - 7),
            1 => {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x20;
            }
            _ => bytes.clear(),
        }
        std::fs::write(&cfg.file, &bytes).unwrap();
        let opened = open(&cfg).unwrap();
        let Found::Damaged {
            kept_aside, lines, ..
        } = &opened.found
        else {
            panic!("{name}: damage not found: {:?}", opened.found);
        };
        assert_eq!(
            std::fs::read(kept_aside).unwrap(),
            bytes,
            "{name}: kept aside as it was"
        );
        assert!(!cfg.file.exists(), "{name}: moved, not copied");
        assert!(!lines.is_empty());
        if damage == 0 {
            assert!(lines[0].what.contains("ends inside a record"), "{lines:?}");
            // Everything before the torn record was still read.
            assert_eq!(opened.snapshot.used["a"].len(), 4);
        }
        assert!(
            opened.journal.replay_since() >= record::now_ms(),
            "{name}: tokens from before are refused"
        );
    }
}

#[test]
fn a_rewrite_keeps_what_is_appended_while_it_runs() {
    let dir = scratch("rewrite");
    let cfg = config(&dir, "batch");
    let (j, live, _) = started(&cfg);
    const N: u64 = 20_000;
    let writer = {
        let (j, live) = (j.clone(), live.clone());
        std::thread::spawn(move || {
            for n in 0..N {
                // Like a component: change, then journal, under its lock.
                let mut l = live.lock().unwrap();
                l.push(used(n));
                j.append(&used(n)).unwrap();
                drop(l);
            }
        })
    };
    let mut rewrites = 0;
    while !writer.is_finished() || rewrites < 3 {
        j.rewrite().unwrap();
        rewrites += 1;
    }
    writer.join().unwrap();
    let n = N;
    j.close();
    drop(j);
    let back = open(&cfg).unwrap();
    assert!(matches!(back.found, Found::Clean { .. }));
    assert_eq!(back.snapshot.used["a"].len() as u64, n, "no record lost");
}

#[test]
fn config_is_checked() {
    let mut c = StateConfig::default();
    assert_eq!(c.check(), Ok(SyncMode::Interval(Duration::from_millis(10))));
    c.fsync = "sometimes".into();
    assert!(c.check().unwrap_err().contains("state.fsync"));
    c.fsync = "batch".into();
    c.fsync_interval = "soon".into();
    assert!(c.check().unwrap_err().contains("state.fsync_interval"));
}

#[test]
fn fail_closed_drops_live_approvals_only() {
    let mut s = Snapshot::default();
    for (id, state) in [("p", "pending"), ("a", "approved"), ("c", "consumed")] {
        s.approvals.insert(
            id.into(),
            ApprovalRecord {
                id: id.into(),
                state: state.into(),
                identity: "x".into(),
                tool: "t".into(),
                action: "a".into(),
                resource: String::new(),
                params_digest: String::new(),
                policy_version: "v".into(),
                rules: vec![],
                created_ms: 0,
                expires_ms: u64::MAX,
                approver: String::new(),
                reason: String::new(),
                override_token: None,
                egress: None,
            },
        );
    }
    s.used.entry("x".into()).or_default().insert("1".into(), 9);
    let dropped = s.fail_closed(1234);
    let ids: Vec<&str> = dropped.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a", "p"]);
    assert!(s.approvals.contains_key("c"));
    assert!(s.used.is_empty());
    assert_eq!(s.budget_floor_ms, Some(1234));
}

#[test]
fn a_journal_others_may_write_is_kept_aside_unread() {
    let dir = scratch("foreign");
    let cfg = config(&dir, "batch");
    let (j, _, _) = started(&cfg);
    for n in 0..3 {
        j.append(&used(n)).unwrap();
    }
    j.close();
    drop(j);
    // Whole and well formed, but writable by anyone: it may not be ours.
    std::fs::set_permissions(
        &cfg.file,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let opened = open(&cfg).unwrap();
    let Found::Damaged {
        kept_aside,
        lines,
        records,
    } = &opened.found
    else {
        panic!("not set aside: {:?}", opened.found);
    };
    assert!(kept_aside.to_string_lossy().contains(".untrusted-"));
    assert!(lines[0].to_string().contains("mode 666"), "{lines:?}");
    assert_eq!(*records, 0);
    assert!(opened.snapshot.used.is_empty(), "nothing of it was read");
    assert!(opened.journal.replay_since() >= record::now_ms());
}
