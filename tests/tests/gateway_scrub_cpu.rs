//! The credential scrubber must not tell, by the CPU it spends, how far an
//! echoed text matches the credential. An agent that can make an upstream
//! echo text it chooses (a job runner, a log tail, a model asked to repeat)
//! sends guesses, each followed by an escape that is costly to read; a
//! scrubber that read on only while a guess matched would spend more on a
//! right guess, and any process that can read the daemon's
//! `/proc/<pid>/task/*/schedstat` would read the credential a character at
//! a time. Agents under exec cannot (their /proc does not show the
//! daemon); the test hands the agent the daemon's files opened outside,
//! as a process with the host's view would read them. Real daemon, the HTTPS job runner of the gateway fixture,
//! Python's own HTTP client enrolled with `palisade exec` as root and as
//! uid 65534, measuring the daemon's CPU as the attacker does.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use palisade_tests::{
    gateway::{exec_as, exec_unprivileged},
    gateway_fixture::{Fixture, start},
};
use serde_json::Value;

/// Sends each text to the job runner in rounds, shuffled, and reports the
/// daemon's CPU time (ms) per request, by label.
const AGENT: &str = r#"
import glob, http.client, json, random, sys
host, port, dpid, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
texts = json.loads(sys.argv[5])
ask = len(sys.argv) > 6 and sys.argv[6] == "ask"
def cpu():
    t, seen = 0, False
    if ask:
        # Read for the agent outside it, by a process with the host's view.
        print("cpu", flush=True)
        return int(sys.stdin.readline())
    for f in glob.glob("/proc/%s/task/*/schedstat" % dpid):
        try:
            t += int(open(f).read().split()[0]); seen = True
        except (OSError, ValueError):
            pass
    return t if seen else None
if cpu() is None:
    print(json.dumps({"readable": False})); sys.exit(0)
scripts, bodies = {}, {}
for label, (unit, size) in texts.items():
    scripts[label] = (unit * (size // len(unit) + 1))[:size].encode()
    bodies[label] = json.dumps({"script": scripts[label].decode()}).encode()
c = http.client.HTTPConnection(host, port, timeout=60)
ms = {label: [] for label in bodies}
for r in range(rounds + 1):
    order = list(bodies); random.shuffle(order)
    for label in order:
        c0 = cpu()
        c.request("POST", "/v1/run", body=bodies[label], headers={"Content-Type": "application/json"})
        resp = c.getresponse(); data = resp.read()
        c1 = cpu()
        if resp.status != 200 or data != scripts[label]:
            print("%s: status %d, %d bytes back of %d: %r" % (label, resp.status, len(data), len(scripts[label]), data[:300]), file=sys.stderr)
            sys.exit(1)
        if r > 0:
            ms[label].append((c1 - c0) / 1e6)
print(json.dumps({"readable": True, "ms": ms}))
"#;

/// An escape that is costly to read from its start and is not one in the
/// end (it never closes): nested three deep, each digit itself escaped.
fn heavy() -> String {
    format!("&#x{}&", format!("&#x{}30;", "0".repeat(14)).repeat(16))
}

/// The fixture's policy with the job runner's route, which finance-agent
/// may use.
fn runner_policy(f: &Fixture) -> String {
    f.policy_with("      - {method: POST, path: /v1/run, action: run}\n", "")
        .replace(
            "actions: [get_customer, big, text, stream]",
            "actions: [get_customer, big, text, stream, run]",
        )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds of the three texts measured (after one to warm up).
const ROUNDS: usize = 30;

/// The daemon's CPU time (ns, all its threads), read here: what an
/// attacker with the host's view of /proc reads (an agent selected by
/// cgroup), asked for by the agent under exec, whose /proc does not show
/// the daemon.
fn daemon_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `host_view`: the daemon's CPU is read here for the agent; else the
/// agent reads it itself, through its own /proc.
fn measure(f: &Fixture, root: bool, texts: &Value, host_view: bool) -> Option<Value> {
    use std::io::{BufRead, Write};
    let gw = f.gateway();
    let daemon = f.daemon_pid();
    let pid = daemon.to_string();
    let texts = texts.to_string();
    let rounds = ROUNDS.to_string();
    let mut args = vec![
        "-c",
        AGENT,
        gw.as_str(),
        "9001",
        pid.as_str(),
        rounds.as_str(),
        texts.as_str(),
    ];
    if host_view {
        args.push("ask");
    }
    let mut child = exec_as(&f.env, "finance-agent", root, "/usr/bin/python3", &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("agent: {e}"));
    let mut to_agent = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    let from_agent =
        std::io::BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let mut printed = Vec::new();
    for line in from_agent.lines() {
        let line = line.unwrap_or_else(|e| panic!("agent output: {e}"));
        if line == "cpu" {
            writeln!(to_agent, "{}", daemon_cpu_ns(daemon)).unwrap_or_else(|e| panic!("{e}"));
        } else {
            printed.push(line);
        }
    }
    drop(to_agent);
    let mut out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("agent: {e}"));
    out.stdout = printed.join("\n").into_bytes();
    assert!(
        out.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&out.stdout)));
    if v["readable"] == false {
        // The agent's /proc does not show the daemon: the channel is
        // closed before the scrubber is reached.
        assert!(!host_view, "the host's reading reached the agent");
        return None;
    }
    Some(v["ms"].clone())
}

#[test]
fn the_daemons_cpu_time_says_nothing_about_how_far_a_guess_matches() {
    let Some(f) = start("gw-scrub-cpu") else {
        return;
    };
    f.reload_policy(&runner_policy(&f));
    // All but the last character of the credential, and the same length
    // beginning with another character: one goes on to the escape as the
    // credential, one stops at its first byte.
    let right = &f.secret[..f.secret.len() - 1];
    let wrong = format!("x{}", &right[1..]);
    let size = 512 * 1024;
    let texts = serde_json::json!({
        "right": [format!("{right}{}", heavy()), size],
        "wrong": [format!("{wrong}{}", heavy()), size],
        // The control: a quarter more of the wrong guess, to show the
        // measurement sees a difference in work when there is one.
        "more": [format!("{wrong}{}", heavy()), size * 5 / 4],
    });
    // Under exec the daemon's accounting is out of sight, root or not.
    for root in [true, false] {
        assert!(
            measure(&f, root, &texts, false).is_none(),
            "an exec agent (root {root}) read the daemon's schedstat"
        );
    }
    // Someone with the host's view of /proc reads it (here: for the agent).
    for root in [true, false] {
        let Some(ms) = measure(&f, root, &texts, true) else {
            panic!("the host's reading reached the agent");
        };
        let series = |l: &str| -> Vec<f64> {
            ms[l]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let (r, w, m) = (series("right"), series("wrong"), series("more"));
        assert_eq!((r.len(), w.len(), m.len()), (ROUNDS, ROUNDS, ROUNDS));
        // Differences within each round (the three in a shuffled order),
        // so that the machine's load drifting between rounds cancels out.
        let paired = |a: &[f64]| -> f64 {
            median(&a.iter().zip(&w).map(|(x, y)| x - y).collect::<Vec<_>>())
        };
        let (guess, control) = (paired(&r), paired(&m));
        eprintln!(
            "root {root}: right {:+.2} ms, a quarter more text {control:+.2} ms over wrong ({:.2} ms)\n  right {r:.1?}\n  wrong {w:.1?}\n  more {m:.1?}",
            guess,
            median(&w)
        );
        // The control: a quarter more text costs clearly more.
        assert!(
            control > median(&w) * 0.1,
            "the measurement does not resolve 25% more work (root {root}): {control:+.2} ms"
        );
        // A right guess costs what a wrong one does: the difference is a
        // small part of what the control resolves (before, a right guess
        // cost two thirds to three quarters of the control).
        assert!(
            guess.abs() < control * 0.4,
            "a right guess costs {guess:+.2} ms over a wrong one (root {root}; 25% more text: {control:+.2} ms)"
        );
    }
    // The control that the credential is there to be found: echoed whole,
    // it comes back redacted.
    let gw = f.gateway();
    let probe = format!(
        "import http.client, json\nc = http.client.HTTPConnection('{gw}', 9001, timeout=30)\nbody = json.dumps({{'script': {:?}}})\nc.request('POST', '/v1/run', body=body, headers={{'Content-Type': 'application/json'}})\nprint(c.getresponse().read().decode())",
        format!("x{} ", f.secret).repeat(8)
    );
    let out = exec_as(
        &f.env,
        "finance-agent",
        false,
        "/usr/bin/python3",
        &["-c", &probe],
    )
    .output()
    .unwrap_or_else(|e| panic!("{e}"));
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        body.trim_end(),
        "x[redacted by palisade] ".repeat(8).trim_end(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `seconds` of back-to-back echoes of `body` from `loops` curl loops of
/// finance-agent.
fn flood(f: &Fixture, body: &std::path::Path, loops: usize, seconds: u32, root: bool) -> Child {
    let script = format!(
        "end=$(($(date +%s) + {seconds})); for i in $(seq {loops}); do \
         (while [ $(date +%s) -lt $end ]; do curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' \
         -H 'Content-Type: application/json' --data-binary @{body} {base}/v1/run; done) & done; wait",
        body = body.display(),
        base = f.base(),
    );
    exec_as(&f.env, "finance-agent", root, "/bin/sh", &["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("flood: {e}"))
}

/// other-agent's reads (seconds each) while finance-agent has `body`
/// echoed back, 8 requests in flight (half as root, half as uid 65534).
fn reads_during_a_flood_of(f: &Fixture, name: &str, text: &str) -> Vec<f64> {
    let body = f.env.dir.join(name);
    let copies = (512 << 10) / text.len();
    let json = serde_json::json!({"script": text.repeat(copies)}).to_string();
    std::fs::write(&body, json).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&body, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let floods = [flood(f, &body, 4, 8, true), flood(f, &body, 4, 8, false)];
    std::thread::sleep(Duration::from_millis(1500));
    let light = exec_unprivileged(
        &f.env,
        "other-agent",
        "/bin/sh",
        &[
            "-c",
            &format!(
                "for i in $(seq 30); do curl -s -o /dev/null -w '%{{http_code}} %{{time_total}}\\n' {}/v1/customers/o$i; sleep 0.1; done",
                f.base()
            ),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("light: {e}"));
    let echoed: Vec<String> = floods
        .into_iter()
        .flat_map(|c| {
            let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!echoed.is_empty(), "{name}: nothing was echoed");
    let whole = format!("200 {}", copies * text.len());
    assert!(
        echoed.iter().all(|l| *l == whole),
        "{name}: every echo comes back whole: {echoed:?}"
    );
    let light = String::from_utf8_lossy(&light.stdout).to_string();
    let times: Vec<f64> = light
        .lines()
        .filter_map(|l| {
            let (code, t) = l.split_once(' ')?;
            (code == "200").then_some(())?;
            t.parse().ok()
        })
        .collect();
    assert_eq!(times.len(), 30, "{name}: other-agent's reads: {light}");
    eprintln!(
        "{name}: {} echoes; other-agent median {:.1} ms, slowest {:.1} ms",
        echoed.len(),
        median(&times) * 1e3,
        times.iter().fold(0.0, |a: f64, &b| a.max(b)) * 1e3
    );
    times
}

#[test]
fn text_costly_to_scrub_does_not_hold_other_identities() {
    let Some(f) = start("gw-scrub-starve") else {
        return;
    };
    f.reload_policy(&runner_policy(&f));
    // The same volume of plain text is the control: what the flood costs
    // the machine anyway. `%` is what a scrubber that re-read escapes at
    // every position spent most on (a runtime worker held for a quarter
    // of a second per megabyte).
    let plain = reads_during_a_flood_of(&f, "plain.txt", "a");
    let marks = reads_during_a_flood_of(&f, "marks.txt", "%");
    let (mp, mm) = (median(&plain), median(&marks));
    // A scrubber that held a runtime worker for a whole answer took
    // other-agent's median from 26 ms (plain) to 223 ms; one that took
    // turns but re-read escapes, from 73 ms to 127 ms.
    assert!(
        mm < mp * 1.4 + 0.01,
        "other-agent's median read: {:.1} ms during the `%` flood, {:.1} ms during the plain one",
        mm * 1e3,
        mp * 1e3
    );
}
