//! Daemon files reached through links stay out of a root agent's reach.
//! `palisade exec` makes the daemon's directories read-only for the agent
//! and hides the signing key's; when the policy is a link into a
//! ConfigMap-style directory (`policy.yaml` -> `..data/policy.yaml`,
//! `..data` -> `..2026_12_02`) or the key a link into a secrets directory,
//! every directory holding a link on the way is read-only and the key's
//! real directory is hidden too: a root agent could otherwise swap
//! `..data` to a policy of its own (applied at the operator's next
//! reload) or read the key and mint tokens.
//!
//! Real daemon and kernel; the agent is root under `palisade exec`; the
//! far end is a listener on a loopback address the policy does not allow.

use std::{path::Path, process::Command, thread, time::Duration};

use palisade_tests::{
    DaemonProc, Probe, Scratch, TcpServer, TestEnv,
    gateway::{exec, exec_as_user},
    root_or_skip,
};

const ALLOWED: &str = "127.142.7.1";
const DENIED: &str = "127.142.7.2";

fn policy(allowed: &str) -> String {
    format!(
        "version: 1
identities:
  - id: agent
    egress:
      allow: [{{cidr: {allowed}/32}}]
"
    )
}

/// What kubelet does to update a ConfigMap volume: a new data directory,
/// then `..data` swapped to it by a rename.
fn swap_script(cm: &Path, text: &str) -> String {
    let cm = cm.display();
    format!(
        "set -e; mkdir -p {cm}/..swap; printf '%s' '{text}' > {cm}/..swap/policy.yaml; \
         ln -sfn ..swap {cm}/..data_tmp; mv -T {cm}/..data_tmp {cm}/..data"
    )
}

/// After the operator's reload the agent (`connect`) still gets EPERM at
/// the denied host, and nothing arrived there.
fn still_denied_after_reload(
    d: &DaemonProc,
    far: &TcpServer,
    what: &str,
    connect: impl Fn() -> palisade_tests::Outcome,
) {
    d.hup();
    thread::sleep(Duration::from_millis(1500));
    connect().expect_eperm(what);
    assert_eq!(
        far.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing reached the denied host"
    );
}

/// The control: once the operator made the same change and reloaded, the
/// agent (`connect`) gets through, so the path led to the policy.
fn through_after_reload(
    d: &DaemonProc,
    far: &TcpServer,
    connect: impl Fn() -> palisade_tests::Outcome,
) {
    d.hup();
    thread::sleep(Duration::from_millis(1500));
    connect().expect_ok("the control: the operator's policy allows the host");
    assert_eq!(far.wait_accepted(1), 1, "the control's connection arrived");
}

#[test]
fn root_agents_cannot_swap_a_linked_policy_or_read_a_linked_key() {
    if !root_or_skip("root_agents_cannot_swap_a_linked_policy_or_read_a_linked_key") {
        return;
    }
    // Policy in etc/, socket in run/, the key in lib/, as on a host.
    let env = TestEnv::new("links", &policy(ALLOWED)).laid_out_like_a_host();
    // The key made where the daemon puts it, then moved to a secrets
    // directory of its own and linked back.
    drop(DaemonProc::start(&env));
    let secrets = Scratch::new("links-sec");
    let key = env.state.with_file_name("keys.yaml");
    std::fs::rename(&key, secrets.join("keys.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(secrets.join("keys.yaml"), &key).unwrap_or_else(|e| panic!("{e}"));
    // The policy in a ConfigMap-style directory, linked from the daemon's.
    let cm = Scratch::new("links-cm");
    let data = cm.join("..2026_12_02");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.join("policy.yaml"), policy(ALLOWED)).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("..2026_12_02", cm.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("..data/policy.yaml", cm.join("policy.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&env.policy).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(cm.join("policy.yaml"), &env.policy)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = DaemonProc::start(&env);
    let far = TcpServer::start(DENIED);
    let port = far.port();
    Probe::enrolled(&env, "agent", &["tcp", DENIED, &port]).expect_eperm("the denied host");

    // The key, read through its real path: hidden from the agent.
    let real_key = secrets.join("keys.yaml");
    let real_key = real_key.to_str().unwrap_or_default();
    let read = Probe::enrolled(&env, "agent", &["read-file", real_key]);
    eprintln!("the agent reading the key: {}", read.0);
    assert!(
        read.0["ok"] != true || read.0["len"] == 0,
        "a root agent read the signing key: {}",
        read.0
    );
    Probe::plain(&["read-file", real_key]).expect_ok("the control: root outside reads the key");

    // The swap, as root inside: refused, `..data` unchanged, and after the
    // operator's reload the denied host stays denied.
    // A policy of its own: the denied host allowed.
    let wide = policy(DENIED);
    let attack = exec(
        &env,
        "agent",
        Path::new("sh"),
        &["-c", &swap_script(&cm, &wide)],
    )
    .output()
    .unwrap_or_else(|e| panic!("exec sh: {e}"));
    assert!(
        !attack.status.success(),
        "a root agent swapped the ConfigMap's data: {}",
        String::from_utf8_lossy(&attack.stderr)
    );
    assert_eq!(
        std::fs::read_link(cm.join("..data")).unwrap_or_default(),
        Path::new("..2026_12_02")
    );
    still_denied_after_reload(
        &d,
        &far,
        "the denied host after the agent's swap and a reload",
        || Probe::enrolled(&env, "agent", &["tcp", DENIED, &port]),
    );

    // The control: the same swap by the operator outside works and, once
    // reloaded, lets the agent through, so the path led to the policy.
    let outside = Command::new("sh")
        .args(["-c", &swap_script(&cm, &wide)])
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    assert!(
        outside.status.success(),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );
    through_after_reload(&d, &far, || {
        Probe::enrolled(&env, "agent", &["tcp", DENIED, &port])
    });
    drop(d);
}

#[test]
fn root_agents_cannot_rewrite_a_linked_trail_once_it_rotated() {
    if !root_or_skip("root_agents_cannot_rewrite_a_linked_trail_once_it_rotated") {
        return;
    }
    let env = TestEnv::new("links-trail", &policy(ALLOWED)).laid_out_like_a_host();
    // The trail kept on another volume, linked from the daemon's log/
    // before the volume has a trail (a fresh volume).
    let volume = Scratch::new("links-trail-vol");
    let _ = std::fs::remove_file(&env.audit);
    std::os::unix::fs::symlink(volume.join("audit.jsonl"), &env.audit)
        .unwrap_or_else(|e| panic!("{e}"));
    env.write_config_with("  rotate_bytes: 1024\n", "");
    let _d = DaemonProc::start(&env);
    // Denials until the trail has rotated.
    let segments = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("audit.jsonl."))
                    })
                    .filter_map(|p| p.to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..20 {
        if !segments(&volume).is_empty() {
            break;
        }
        Probe::enrolled(&env, "agent", &["tcp", DENIED, "9"]).expect_eperm("the denied host");
        thread::sleep(Duration::from_millis(300));
    }
    let rotated = segments(&volume);
    assert!(
        !rotated.is_empty(),
        "the trail rotated beside the file its link names: {:?} / {:?}",
        segments(&volume),
        segments(env.audit.parent().unwrap_or(Path::new("/")))
    );
    // The link still names the live trail.
    assert_eq!(
        std::fs::read_link(&env.audit).unwrap_or_default(),
        volume.join("audit.jsonl")
    );
    // An agent started after the rotation sees every segment read-only;
    // outside, the same files are writable.
    let mut args = vec![
        "read-only".to_string(),
        volume.join("audit.jsonl").display().to_string(),
    ];
    args.extend(rotated);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let inside = Probe::enrolled(&env, "agent", &args);
    let outside = Probe::plain(&args);
    for p in &args[1..] {
        assert_eq!(
            inside.0["read_only"][p], true,
            "{p} writable for a root agent: {}",
            inside.0
        );
        assert_eq!(outside.0["read_only"][p], false, "{p}: {}", outside.0);
    }
}

#[test]
fn root_agents_cannot_rewrite_a_policy_directory_entry_linked_elsewhere() {
    if !root_or_skip("root_agents_cannot_rewrite_a_policy_directory_entry_linked_elsewhere") {
        return;
    }
    let mut env = TestEnv::new("links-dir", &policy(ALLOWED)).laid_out_like_a_host();
    // A policy directory whose agents' file is a snippet linked from a
    // directory of shared snippets (as sites-enabled links sites-available).
    env.policy = env.dir.join("etc/policy.d");
    std::fs::create_dir_all(&env.policy).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        env.policy.join("00-base.yaml"),
        "version: 1\nlabel: links\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let snippets = Scratch::new("links-snippets");
    let snippet = snippets.join("agents.yaml");
    std::fs::write(&snippet, policy(ALLOWED)).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&snippet, env.policy.join("10-agents.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Entries the daemon does not read, linked to the host's root and to
    // /tmp: nothing of them is frozen for the agent, and exec still works.
    std::os::unix::fs::symlink("/", env.policy.join("README")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("/tmp", env.policy.join("scratch"))
        .unwrap_or_else(|e| panic!("{e}"));
    env.write_config("");
    let d = DaemonProc::start(&env);
    let far = TcpServer::start(DENIED);
    let port = far.port();
    Probe::enrolled(&env, "agent", &["tcp", DENIED, &port]).expect_eperm("the denied host");
    let tmp = Probe::enrolled(&env, "agent", &["read-only", "/tmp"]);
    assert_eq!(tmp.0["read_only"]["/tmp"], false, "{}", tmp.0);

    // Through the link and at the snippet itself: both refused (the
    // link's directory, beside the daemon's config, is hidden: not found;
    // the snippet's is read-only).
    let wide = policy(DENIED);
    let entry = env.policy.join("10-agents.yaml");
    for (path, errno) in [(&entry, libc::ENOENT), (&snippet, libc::EROFS)] {
        let path = path.to_str().unwrap_or_default();
        let o = Probe::enrolled(&env, "agent", &["write-file", path, &wide]);
        assert_eq!(
            o.errno(),
            Some(i64::from(errno)),
            "a root agent wrote {path}: {}",
            o.0
        );
    }
    assert_eq!(
        std::fs::read_to_string(&snippet).unwrap_or_default(),
        policy(ALLOWED)
    );
    still_denied_after_reload(
        &d,
        &far,
        "the denied host after the agent's writes and a reload",
        || Probe::enrolled(&env, "agent", &["tcp", DENIED, &port]),
    );

    // The control: the operator's same write through the link, reloaded,
    // lets the agent through.
    std::fs::write(&entry, &wide).unwrap_or_else(|e| panic!("{e}"));
    through_after_reload(&d, &far, || {
        Probe::enrolled(&env, "agent", &["tcp", DENIED, &port])
    });
}

/// A link, file or directory the test puts right in /tmp, removed on drop.
struct LinkInTmp(std::path::PathBuf);

impl Drop for LinkInTmp {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.0).is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn a_policy_linked_from_a_shared_directory_is_refused_to_agents_that_could_re_point_it() {
    if !root_or_skip(
        "a_policy_linked_from_a_shared_directory_is_refused_to_agents_that_could_re_point_it",
    ) {
        return;
    }
    // The daemon's policy named by a link in /tmp (a directory exec cannot
    // freeze for the agent), owned by root.
    let mut env = TestEnv::new("links-shared", &policy(ALLOWED)).laid_out_like_a_host();
    let real = env.policy.clone();
    let link = LinkInTmp(std::path::PathBuf::from("/tmp").join(format!(
        "palisade-{}links-shared-{}.yaml",
        palisade_tests::run_tag(),
        std::process::id()
    )));
    let _ = std::fs::remove_file(&link.0);
    std::os::unix::fs::symlink(&real, &link.0).unwrap_or_else(|e| panic!("{e}"));
    env.policy = link.0.clone();
    std::fs::write(
        env.dir.join("etc/sealed.yaml"),
        format!(
            "{}  - id: sealed
    egress:
      allow: [{{cidr: {ALLOWED}/32}}]
    confinement: {{read_only_root: true}}
",
            policy(ALLOWED)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(env.dir.join("etc/sealed.yaml"), &real).unwrap_or_else(|e| panic!("{e}"));
    env.write_config("");
    // The agent's own policy, which allows the denied host.
    let evil = env.dir.join("evil.yaml");
    std::fs::write(&evil, policy(DENIED)).unwrap_or_else(|e| panic!("{e}"));
    let d = DaemonProc::start(&env);
    let far = TcpServer::start(DENIED);
    let port = far.port();
    let repoint = format!(
        "ln -sfn {} {} && echo re-pointed",
        evil.display(),
        link.0.display()
    );

    // An agent's attempt: whether it re-pointed the link, and stderr
    // (exec's refusal or the shell's error).
    let attempt = |mut agent: Command| -> (bool, String) {
        let o = agent.output().unwrap_or_else(|e| panic!("exec sh: {e}"));
        (
            String::from_utf8_lossy(&o.stdout).contains("re-pointed"),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    // Root, which owns /tmp's link: exec refuses to start it, naming the
    // link; the link is unchanged.
    let (repointed, stderr) = attempt(exec(&env, "agent", Path::new("sh"), &["-c", &repoint]));
    assert!(
        !repointed,
        "a root agent re-pointed the daemon's policy link: {stderr}"
    );
    assert!(
        stderr.contains("refusing to run the agent") && stderr.contains(&*link.0.to_string_lossy()),
        "the refusal names the link: {stderr}"
    );
    // Unprivileged (`--user`): started, and cannot replace root's link in
    // sticky /tmp.
    let (repointed, nobody_err) = attempt(exec_as_user(
        &env,
        "agent",
        "65534",
        Path::new("sh"),
        &["-c", &repoint],
    ));
    assert!(
        !nobody_err.contains("refusing") && !repointed,
        "uid 65534: {nobody_err}"
    );
    assert!(
        nobody_err.contains("Operation not permitted"),
        "{nobody_err}"
    );
    // Root with a read-only root: started, and its write is refused.
    let (repointed, sealed_err) = attempt(exec(&env, "sealed", Path::new("sh"), &["-c", &repoint]));
    assert!(
        !sealed_err.contains("refusing") && !repointed,
        "a root agent with read_only_root: {sealed_err}"
    );
    assert!(sealed_err.contains("Read-only file system"), "{sealed_err}");
    assert_eq!(std::fs::read_link(&link.0).unwrap_or_default(), real);

    // After the operator's reload the denied host stays denied.
    still_denied_after_reload(
        &d,
        &far,
        "the denied host after the agents' attempts and a reload",
        || Probe::enrolled_as_user(&env, "agent", "65534", &["tcp", DENIED, &port]),
    );

    // The control: the operator re-points the link and reloads; the agent
    // gets through, so the link led to the policy.
    let _ = std::fs::remove_file(&link.0);
    std::os::unix::fs::symlink(&evil, &link.0).unwrap_or_else(|e| panic!("{e}"));
    through_after_reload(&d, &far, || {
        Probe::enrolled_as_user(&env, "agent", "65534", &["tcp", DENIED, &port])
    });
    drop(d);
}

#[test]
fn an_agent_started_inside_the_daemons_directories_sees_them_protected() {
    if !root_or_skip("an_agent_started_inside_the_daemons_directories_sees_them_protected") {
        return;
    }
    // Launched from /tmp (which exec pins: the installation lies below
    // it) and from the key's own directory (which exec hides): relative
    // paths from where the agent starts meet the same protection as
    // absolute ones.
    let env = TestEnv::new("links-cwd", &policy(ALLOWED)).laid_out_like_a_host();
    let d = DaemonProc::start(&env);
    let far = TcpServer::start(DENIED);
    let port = far.port();
    let key = env.state.with_file_name("keys.yaml");
    let key_text = std::fs::read_to_string(&key).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        key_text.contains("secret"),
        "the control: root outside reads the key"
    );
    let parent = env.dir.parent().unwrap_or(Path::new("/"));
    let relative = |p: &Path| {
        p.strip_prefix(parent)
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string()
    };
    let wide = policy(DENIED);
    let attack = format!(
        "cat {key}; printf '%s' '{wide}' > {policy} && echo rewrote",
        key = relative(&key),
        policy = relative(&env.policy),
    );
    let mut from_tmp = exec(&env, "agent", Path::new("sh"), &["-c", &attack]);
    from_tmp.current_dir(parent);
    let mut from_key_dir = exec(&env, "agent", Path::new("sh"), &["-c", "cat keys.yaml"]);
    from_key_dir.current_dir(key.parent().unwrap_or(Path::new("/")));
    for (from, mut agent) in [("/tmp", from_tmp), ("the key's directory", from_key_dir)] {
        let o = agent.output().unwrap_or_else(|e| panic!("exec: {e}"));
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            !out.contains("secret"),
            "a root agent started from {from} read the key: {out}"
        );
        assert!(
            !out.contains("rewrote"),
            "a root agent started from {from} rewrote the policy: {err}"
        );
        assert!(err.contains("No such file or directory"), "{from}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(&env.policy).unwrap_or_default(),
        policy(ALLOWED)
    );
    still_denied_after_reload(
        &d,
        &far,
        "the denied host after the agent's attempt and a reload",
        || Probe::enrolled(&env, "agent", &["tcp", DENIED, &port]),
    );
    // The control: the operator's same write, reloaded, lets the agent
    // through.
    std::fs::write(&env.policy, &wide).unwrap_or_else(|e| panic!("{e}"));
    through_after_reload(&d, &far, || {
        Probe::enrolled(&env, "agent", &["tcp", DENIED, &port])
    });
}

#[test]
fn a_daemon_file_right_in_a_shared_directory_refuses_exec() {
    if !root_or_skip("a_daemon_file_right_in_a_shared_directory_refuses_exec") {
        return;
    }
    // The elevations file configured right in /tmp, not made yet: any
    // agent could make it first (a forged break-glass elevation), or a
    // link there to a file of its choosing.
    let env = TestEnv::new("links-plant", &policy(ALLOWED)).laid_out_like_a_host();
    let planted = LinkInTmp(std::path::PathBuf::from("/tmp").join(format!(
        "palisade-{}links-plant-{}.json",
        palisade_tests::run_tag(),
        std::process::id()
    )));
    let _ = std::fs::remove_file(&planted.0);
    env.write_config(&format!("elevations_file: {}\n", planted.0.display()));
    let d = DaemonProc::start(&env);
    let far = TcpServer::start(ALLOWED);
    let port = far.port();
    let touch = format!("touch {} && echo made", planted.0.display());
    for (who, mut agent) in [
        (
            "root",
            exec(&env, "agent", Path::new("sh"), &["-c", &touch]),
        ),
        (
            "uid 65534",
            exec_as_user(&env, "agent", "65534", Path::new("sh"), &["-c", &touch]),
        ),
    ] {
        let o = agent.output().unwrap_or_else(|e| panic!("exec: {e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("made"),
            "{who} made the daemon's file: {err}"
        );
        assert!(
            err.contains("refusing to run the agent") && err.contains("links-plant"),
            "{who}: exec must refuse, naming the file: {err}"
        );
    }
    assert!(!planted.0.exists(), "nothing made it");
    assert_eq!(far.accepted.load(std::sync::atomic::Ordering::Relaxed), 0);
    drop(d);
    // The control: the same daemon with the file in a directory of its
    // own (one in /tmp it had not made yet: it makes it at start, before
    // any agent runs) starts both agents, and the file stays out of their
    // reach.
    let own = LinkInTmp(planted.0.with_extension("d"));
    let _ = std::fs::remove_dir_all(&own.0);
    let in_own = own.0.join("elevations.json");
    env.write_config(&format!("elevations_file: {}\n", in_own.display()));
    let _d = DaemonProc::start(&env);
    let o = exec(
        &env,
        "agent",
        Path::new("sh"),
        &["-c", &format!("touch {} && echo made", in_own.display())],
    )
    .output()
    .unwrap_or_else(|e| panic!("exec: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("made")
            && err.contains("Read-only file system"),
        "a root agent in the daemon's own directory: {err}"
    );
    Probe::enrolled(&env, "agent", &["tcp", ALLOWED, &port]).expect_ok("the control, root");
    Probe::enrolled_as_user(&env, "agent", "65534", &["tcp", ALLOWED, &port])
        .expect_ok("the control, uid 65534");
    assert_eq!(far.wait_accepted(2), 2, "the controls' connections arrived");
}

#[test]
fn a_credential_directory_the_policy_names_is_the_daemons_before_any_agent_runs() {
    if !root_or_skip("a_credential_directory_the_policy_names_is_the_daemons_before_any_agent_runs")
    {
        return;
    }
    // A service's credential file in a directory right in /tmp that nobody
    // has made yet, named by a policy pushed while the daemon runs: an
    // agent making it first would choose the credential the gateway sends
    // (a link to a file of its choosing), so exec used to refuse every
    // agent. The daemon makes it, 0700, as it applies the policy.
    let env = TestEnv::new("links-credential", &policy(ALLOWED)).laid_out_like_a_host();
    let dir = LinkInTmp(std::path::PathBuf::from("/tmp").join(format!(
        "palisade-{}links-credential-{}.d",
        palisade_tests::run_tag(),
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    let key = dir.0.join("stripe-key");
    let _d = DaemonProc::start(&env);
    let far = TcpServer::start(ALLOWED);
    let port = far.port();
    env.write_policy(&format!(
        "{}services:
  - id: stripe
    url: https://127.142.7.9
    port: 9101
    credential: {{header: Authorization, file: {}}}
    routes:
      - {{id: pay, method: POST, path: /v1/pay, action: create_payment}}
",
        policy(ALLOWED),
        key.display()
    ));
    env.cli_ok(&["reload"]);
    let meta = std::fs::metadata(&dir.0)
        .unwrap_or_else(|e| panic!("the daemon made {}: {e}", dir.0.display()));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o7777),
        (0, 0o700),
        "the credential directory is the daemon's own"
    );
    // A root agent started now cannot put a credential there: the
    // directory is out of its sight.
    let plant = format!("echo forged > {} && echo made", key.display());
    let o = exec(&env, "agent", Path::new("sh"), &["-c", &plant])
        .output()
        .unwrap_or_else(|e| panic!("exec: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("made") && !key.exists(),
        "a root agent planted the credential: {err}"
    );
    assert!(
        !err.contains("refusing to run the agent"),
        "the agent runs: {err}"
    );
    // The control: the agent started and works as its policy says.
    Probe::enrolled(&env, "agent", &["tcp", ALLOWED, &port]).expect_ok("the control");
    assert_eq!(far.wait_accepted(1), 1, "the control's connection arrived");
}
