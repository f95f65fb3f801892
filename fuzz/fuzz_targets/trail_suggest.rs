//! `palisade policy suggest` and `palisade policy unused` over a trail
//! file: records written by the daemon but kept on disk where an operator
//! (or whoever reached the disk) may have edited them, and whose fields an
//! agent chose (its tools, actions, resources, parameters, destinations).
//!
//! Properties: never a panic; a suggestion is either made or refused for
//! an identity the current policy lacks, never `Internal` (the generator
//! wrote a policy that does not load, or that does not allow what the
//! trail shows the identity did).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::discovery::{DiscoveryError, suggest_from_trail, unused, unused_from_trail};
use palisade_fuzz::{example_policies, scratch_file};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let path = scratch_file("audit.jsonl", text);
    let paths = [path];
    let policies = example_policies();
    let policy = &policies[usize::from(pick) % policies.len()];
    let identity = &policy.identities[usize::from(pick >> 4) % policy.identities.len()].id;
    let current = (pick & 0x08 != 0).then_some(policy);
    match suggest_from_trail(&paths, identity, None, current, Some(Some("policy.yaml"))) {
        Ok(s) => {
            assert!(!s.policy.is_empty());
        }
        Err(DiscoveryError::Internal(e)) => panic!("suggest wrote a wrong policy: {e}"),
        Err(_) => {}
    }
    if let Ok(report) = unused_from_trail(&paths, policy, None) {
        let _ = unused::human(&report);
    }
});
