//! A policy test suite (`palisade policy test SUITE.yaml`), read by
//! `Suite::load` and run against every example policy: cases name
//! identities, destinations (`ADDRESS:PORT`, `[IPV6]:PORT`, `HOST:PORT`),
//! tool calls with parameters and context, budget use and a fixed clock.
//! Suites are written by hand and shared in repositories.
//!
//! Properties: never a panic; every case gets a result that says what was
//! expected and what came out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::policy::suite::Suite;
use palisade_fuzz::{example_policies, scratch_file};

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("suite.test.yaml", data);
    let Ok(suite) = Suite::load(&path) else {
        return;
    };
    let _ = suite.policy_path();
    for p in example_policies() {
        let results = suite.run(p);
        assert_eq!(results.len(), suite.doc.cases.len());
        for r in results {
            assert!(!r.got.is_empty() && !r.expected.is_empty());
        }
    }
});
