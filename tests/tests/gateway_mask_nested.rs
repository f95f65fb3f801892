//! HTTP response masking looks inside JSON carried in a string, as the MCP
//! masker does: an upstream that nests the customer record as a JSON
//! document in a string field (`payload`, and a string in a string) gets
//! the route's masks (`email`, `cards.number`, `**.ssn`) applied inside
//! it; a string that names a masked field as a member without being JSON
//! makes the response unmaskable (502), never passed on. Control: the
//! plain record is masked as before, and the upstream did send the values.

use palisade_tests::{
    gateway::{agent, request},
    gateway_fixture::start,
};
use serde_json::Value;

const RAW: [&str; 3] = ["jane@example.com", "078-05-1120", "4000056655665556"];

#[test]
fn json_carried_in_strings_is_masked_or_refused() {
    let Some(f) = start("gw-mask-nested") else {
        return;
    };
    let out = agent(
        &f.env,
        "finance-agent",
        "requests",
        &f.base(),
        &[
            request("GET", "/v1/customers/cus_42"),
            request("GET", "/v1/customers/nested"),
            request("GET", "/v1/customers/nested-nojson"),
        ],
    );
    // Control: the record as plain members.
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["body"]["email"], "[masked]");
    // The record carried in strings: masked inside them.
    let n = &out[1];
    assert_eq!(n["status"], 200, "{n}");
    let payload: Value = serde_json::from_str(n["body"]["payload"].as_str().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("payload is JSON: {e}: {n}"));
    assert_eq!(payload["email"], "[masked]", "{n}");
    assert_eq!(payload["ssn"], "[masked]", "{n}");
    assert_eq!(payload["cards"][0]["number"], "[masked]", "{n}");
    assert_eq!(payload["cards"][0]["brand"], "visa", "{n}");
    assert_eq!(n["body"]["name"], "Jane Roe");
    // Not JSON, yet names the fields as members: refused.
    assert_eq!(out[2]["status"], 502, "{}", out[2]);
    assert_eq!(out[2]["body"]["error"]["reason"], "unmaskable-response");
    let seen = serde_json::to_string(&out).unwrap_or_default();
    for raw in RAW {
        assert!(!seen.contains(raw), "{raw} reached the agent: {seen}");
    }
    // The upstream answered all three (what was masked was sent).
    let paths: Vec<Value> = f
        .upstream
        .requests()
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    for p in ["/v1/customers/nested", "/v1/customers/nested-nojson"] {
        assert!(
            paths.iter().any(|x| x == p),
            "{p} reached the upstream: {paths:?}"
        );
    }
}
