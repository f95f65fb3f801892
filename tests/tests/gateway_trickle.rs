//! What the gateway holds back of a streamed answer must not hand the
//! credential out in pieces: an upstream that writes the credential a few
//! bytes at a time, with pauses shorter than the scrubber's hold, has it
//! redacted whole (the hold counted from the first held byte released it
//! half-written).
//!
//! Real daemon, the HTTPS upstream of the gateway fixture, Python enrolled
//! with `palisade exec` as root and as uid 65534.

use palisade_tests::{
    gateway::exec_as,
    gateway_fixture::{Fixture, start},
};

/// The fixture's policy with the streaming route used here.
fn policy(f: &Fixture) -> String {
    f.policy_with(
        "      - {method: GET, path: /v1/trickle, action: stream}\n",
        "",
    )
}

const READ: &str = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 9001, timeout=30)
c.request("GET", sys.argv[2])
r = c.getresponse()
sys.stdout.write("%d %s" % (r.status, r.read().decode()))
"#;

fn read(f: &Fixture, root: bool, path: &str) -> String {
    let gw = f.gateway();
    let out = exec_as(
        &f.env,
        "finance-agent",
        root,
        "/usr/bin/python3",
        &["-c", READ, &gw, path],
    )
    .output()
    .unwrap_or_else(|e| panic!("reader: {e}"));
    assert!(
        out.status.success(),
        "reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_credential_written_a_few_bytes_at_a_time_comes_back_redacted() {
    let Some(f) = start("gw-trickle") else { return };
    f.reload_policy(&policy(&f));
    let want = "200 auth: Bearer [redacted by palisade]\ndone\n";
    for root in [true, false] {
        // 4 bytes every 50 ms, 10 ms, and all at once (the control).
        for gap in ["0.05", "0.01", "0"] {
            let got = read(&f, root, &format!("/v1/trickle?gap={gap}&piece=4"));
            assert!(
                !got.contains(&f.secret[8..]),
                "the credential reached the agent (root {root}, gap {gap}): {got:?}"
            );
            assert_eq!(got, want, "root {root}, gap {gap}");
        }
    }
}
