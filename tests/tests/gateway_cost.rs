//! A condition is written by the policy but fed by the caller, through the
//! gateway as through `Decide`: a costly condition over a large request
//! body is denied once it has used its evaluation budget, and while one
//! identity keeps sending such requests another identity's requests keep
//! being answered (real daemon and kernel programs, the HTTPS upstream of
//! the gateway fixture, curl enrolled with `palisade exec`, as root and
//! as uid 65534).

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use palisade_tests::{
    gateway::{exec_as, exec_unprivileged},
    gateway_fixture::{Fixture, start},
};

/// The fixture's policy with one more route and an identity whose rule
/// for it has a quadratic condition over the body's `items`, each step
/// copying the body's `pad` (so a step costs what copying it costs).
fn costly_policy(f: &Fixture) -> String {
    f.policy_with(
        "      - {method: POST, path: /v1/batch, action: batch}\n",
        r#"  - id: heavy-agent
    tools:
      allow:
        - id: dedupe
          tool: stripe
          actions: [batch]
          when: params.items.all(x, params.items.exists(y, string(y) + params.pad == string(x) + params.pad))
"#,
    )
}

fn nothing_reached_the_costly_route(f: &Fixture) {
    assert!(
        f.upstream
            .requests()
            .iter()
            .all(|r| r["path"] != "/v1/batch"),
        "a costly request reached the upstream"
    );
}

/// `seconds` of back-to-back costly POSTs from `loops` curl loops.
fn flood(f: &Fixture, body: &std::path::Path, loops: usize, seconds: u32, root: bool) -> Child {
    let script = format!(
        "end=$(($(date +%s) + {seconds})); for i in $(seq {loops}); do \
         (while [ $(date +%s) -lt $end ]; do curl -s -o /dev/null -w '%{{http_code}}\\n' \
         -H 'Content-Type: application/json' --data-binary @{body} {base}/v1/batch; done) & done; wait",
        body = body.display(),
        base = f.base(),
    );
    let mut cmd = exec_as(&f.env, "heavy-agent", root, "/bin/sh", &["-c", &script]);
    cmd.stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("flood: {e}"))
}

#[test]
fn a_costly_condition_through_the_gateway_is_denied_and_does_not_hold_other_identities() {
    let Some(f) = start("gw-cost") else { return };
    assert!(
        f.env.dir.join("pki").join("ca.pem").exists(),
        "the fixture's CA is where this test expects it"
    );
    f.reload_policy(&costly_policy(&f));
    // 1,500 items and a 256 KiB pad: every step of the 2,250,000 copies
    // the pad twice, so without a budget one request is minutes of CPU.
    let items: Vec<u32> = (0..1_500).collect();
    let body = f.env.dir.join("batch.json");
    std::fs::write(
        &body,
        serde_json::json!({"items": items, "pad": "p".repeat(256 << 10)}).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&body, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));

    // One costly request, unprivileged: denied by the budget, quickly.
    let started = Instant::now();
    let one = exec_unprivileged(
        &f.env,
        "heavy-agent",
        "/usr/bin/curl",
        &[
            "-s",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("{}/v1/batch", f.base()),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("curl: {e}"));
    let took = started.elapsed();
    let answer: serde_json::Value = serde_json::from_slice(&one.stdout)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&one.stdout)));
    assert_eq!(
        answer["error"]["reason"], "evaluation-budget-exceeded",
        "{answer}"
    );
    assert!(took < Duration::from_secs(5), "denied after {took:?}");
    nothing_reached_the_costly_route(&f);

    // The flood: heavy-agent keeps 8 such requests in flight for 8 s (half
    // as root, half unprivileged) while other-agent reads a customer, one
    // request at a time, and times each.
    let floods = [flood(&f, &body, 4, 8, true), flood(&f, &body, 4, 8, false)];
    std::thread::sleep(Duration::from_millis(1500));
    let light = exec_unprivileged(
        &f.env,
        "other-agent",
        "/bin/sh",
        &[
            "-c",
            &format!(
                "for i in $(seq 20); do curl -s -o /dev/null -w '%{{http_code}} %{{time_total}}\\n' {}/v1/customers/o$i; done",
                f.base()
            ),
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("light: {e}"));
    let heavy: Vec<String> = floods
        .into_iter()
        .flat_map(|c| {
            let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let light = String::from_utf8_lossy(&light.stdout).to_string();
    eprintln!("other-agent during the flood:\n{light}heavy-agent's answers: {heavy:?}");
    let times: Vec<(String, f64)> = light
        .lines()
        .filter_map(|l| {
            let (code, t) = l.split_once(' ')?;
            Some((code.to_string(), t.parse().ok()?))
        })
        .collect();
    assert_eq!(times.len(), 20, "{light}");
    assert!(times.iter().all(|(c, _)| c == "200"), "{light}");
    let slowest = times.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    // Judged on the runtime's workers, each costly request held one of
    // them for the whole evaluation budget, and other-agent's reads waited
    // behind them (seconds).
    assert!(
        slowest < 1.0,
        "other-agent's slowest read during the flood took {slowest} s"
    );
    assert!(!heavy.is_empty());
    assert!(
        heavy.iter().all(|c| c == "403" || c == "429"),
        "heavy-agent's costly requests are denied (or told to wait): {heavy:?}"
    );
    nothing_reached_the_costly_route(&f);
    let ev = f.env.wait_audit("the budget deny", |e| {
        e["kind"] == "gateway" && e["reason"] == "evaluation-budget-exceeded"
    });
    assert_eq!(ev["identity"], "heavy-agent");
}
