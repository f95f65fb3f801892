//! What a root agent could reach of the host beyond the daemon: other
//! users' files through a user namespace of its own (every id mapped, every
//! capability exec dropped held again there), and root's kernel keyring,
//! which is not namespaced and so shared with the host's root processes.
//! Under `palisade exec` both are refused, as root and as another user;
//! the same script outside any agent reads both (the control).

use std::{os::unix::fs::PermissionsExt, path::Path};

use palisade_tests::{
    DaemonProc, TestEnv,
    gateway::{exec, exec_as_user, python_dir},
    root_or_skip,
};
use serde_json::Value;

const POLICY: &str = "version: 1\nidentities:\n  - id: agent\n    egress:\n      allow:\n        - {cidr: 127.0.0.1, ports: [1], protocol: tcp}\n";
const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEYCTL_UNLINK: libc::c_long = 9;

fn outcomes(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "the script printed {text:?} ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A key in root's user keyring, as a host service would keep a secret
/// there; unlinked on drop.
struct HostKey(libc::c_long);

impl HostKey {
    fn add(desc: &str, payload: &str) -> Self {
        let (kind, desc) = (
            c"user",
            std::ffi::CString::new(desc).unwrap_or_else(|e| panic!("{e}")),
        );
        // SAFETY: add_key with valid strings and a payload of its length.
        let id = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                kind.as_ptr(),
                desc.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                KEY_SPEC_USER_KEYRING,
            )
        };
        assert!(id > 0, "add_key: {}", std::io::Error::last_os_error());
        Self(id)
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        // SAFETY: keyctl(KEYCTL_UNLINK, key, keyring).
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_UNLINK,
                self.0,
                KEY_SPEC_USER_KEYRING,
            )
        };
    }
}

#[test]
fn agents_reach_neither_other_users_files_through_a_user_namespace_nor_roots_keyring() {
    if !root_or_skip(
        "agents_reach_neither_other_users_files_through_a_user_namespace_nor_roots_keyring",
    ) {
        return;
    }
    let env = TestEnv::new("host-stores", POLICY);
    // Another user's secret: 0600, uid 1234.
    let secret = env.dir.join("uid1234-secret.txt");
    std::fs::write(&secret, "secret-of-1234").unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::chown(&secret, Some(1234), Some(1234)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let desc = format!("palisade-test-host-secret-{}", std::process::id());
    let _key = HostKey::add(&desc, "TOPSECRET-in-roots-keyring");
    let script = python_dir().join("host_stores.py");
    let args = [
        script.to_str().unwrap_or("-"),
        secret.to_str().unwrap_or("-"),
        &desc,
    ];
    let python = Path::new("/usr/bin/python3");

    // The control: outside any agent, as root, both stores answer.
    let host = outcomes(
        &std::process::Command::new(python)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(host["userns"], "ok: secret-of-1234", "control: {host}");
    assert_eq!(
        host["keyring"], "ok: TOPSECRET-in-roots-keyring",
        "control: {host}"
    );
    assert_eq!(host["clone3"], "ok: child", "control: {host}");

    let _d = DaemonProc::start(&env);
    for (who, mut agent) in [
        ("root", exec(&env, "agent", python, &args)),
        (
            "uid 65534",
            exec_as_user(&env, "agent", "65534", python, &args),
        ),
    ] {
        let r = outcomes(&agent.output().unwrap_or_else(|e| panic!("exec: {e}")));
        for (attempt, want) in [
            ("userns", "EPERM"),
            ("clone-userns", "EPERM"),
            // No filter can read clone3's flags: C libraries fall back to
            // clone, which is judged.
            ("clone3", "ENOSYS"),
            ("keyring", "EPERM"),
            ("add-key", "EPERM"),
            // An ordinary child still starts.
            ("fork", "ok: 7"),
        ] {
            assert_eq!(r[attempt], want, "{who}, {attempt}: {r}");
        }
    }
}
