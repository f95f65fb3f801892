//! The credential scrubber must not answer questions about the credential.
//! An agent that can make a streaming upstream echo text it chooses (a log
//! tail, an echo endpoint, a language model asked to repeat) sends guesses;
//! if the scrubber held back only what could begin the credential, each
//! guess that begins it would reach the agent later than one that does not,
//! and the agent would read the credential a character at a time. Real
//! daemon, the HTTPS upstream of the gateway fixture, Python's own HTTP
//! client enrolled with `palisade exec`, as root and as uid 65534.

use palisade_tests::{
    gateway::exec_as,
    gateway_fixture::{Fixture, start},
};
use serde_json::Value;

/// Reads the first piece of a streamed answer, timed, then the rest.
const READER: &str = r#"
import http.client, json, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(host, port, timeout=30)
t0 = time.monotonic()
c.request("GET", path)
r = c.getresponse()
first = r.read1(65536)
t1 = time.monotonic() - t0
rest = r.read()
print(json.dumps({"status": r.status, "first_s": t1, "first": first.decode(),
                  "body": (first + rest).decode()}))
"#;

fn reader(f: &Fixture, root: bool, text: &str) -> Value {
    let port = "9001";
    let path = format!("/v1/log?text={text}&pause=2");
    let gw = f.gateway();
    let args = ["-c", READER, gw.as_str(), port, path.as_str()];
    let out = exec_as(&f.env, "finance-agent", root, "/usr/bin/python3", &args)
        .output()
        .unwrap_or_else(|e| panic!("reader: {e}"));
    assert!(
        out.status.success(),
        "reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn when_an_echoed_guess_reaches_the_agent_says_nothing_about_the_credential() {
    let Some(f) = start("gw-oracle") else { return };
    f.reload_policy(&f.policy_with("      - {method: GET, path: /v1/log, action: stream}\n", ""));
    // All but the last character of the credential, and the same with
    // the first character changed: one begins the credential, one not.
    let begins = &f.secret[..f.secret.len() - 1];
    let other = format!("x{}", &begins[1..]);
    for root in [true, false] {
        let [a, b] = [begins, other.as_str()].map(|t| reader(&f, root, t));
        eprintln!("root {root}: begins {a}\nother {b}");
        for (r, text) in [(&a, begins), (&b, other.as_str())] {
            assert_eq!(r["status"], 200, "{r}");
            assert_eq!(r["body"], format!("log: {text}\ndone\n"), "{r}");
            // Before the fix, the guess that begins the credential stayed
            // held until the upstream's next line, 2 s later.
            let first = r["first_s"].as_f64().unwrap_or(99.0);
            assert!(first < 1.2, "the echoed line waited {first} s: {r}");
            assert_eq!(r["first"], format!("log: {text}"), "{r}");
        }
    }
    // The control: the credential itself, echoed, is still scrubbed.
    let whole = reader(&f, false, &f.secret);
    assert_eq!(
        whole["body"], "log: [redacted by palisade]\ndone\n",
        "{whole}"
    );
    // Every probe reached the upstream with the credential.
    let logs = f
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/v1/log")))
        .count();
    assert_eq!(logs, 5);
}
