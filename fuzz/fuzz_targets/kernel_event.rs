//! Records from the kernel's ring buffers: the decision record every deny
//! and would-deny sends (`agent_common::Event`) and the cgroup lifecycle
//! record (`CgroupEvent`). An enrolled process chooses much of what is in
//! them (its `comm`, the destination, the socket family and type, the
//! names and depth of the cgroups it creates), and a record may come from a
//! generation the daemon has forgotten or name an index it never gave.
//!
//! Each record is decoded as the reader does, turned into its audit record
//! with the daemon's own conversion (`daemon::to_audit`, over a fixed view
//! of identities and two policy generations), sealed into the hash chain
//! and checked back; a cgroup path is matched against the selectors of
//! every example policy as a new cgroup would be.
//!
//! Properties: any bytes decode or are refused by length, never panic;
//! every audit record serialises and its sealed line verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade::{
    audit::chain::{ChainHead, seal, unseal},
    bpf::events::{CgroupChange, KernelEvent},
    daemon::to_audit,
    identity::selected_identity,
};
use palisade_fuzz::{FixedDaemon, example_policies};

fn daemons() -> &'static [FixedDaemon] {
    static D: OnceLock<Vec<FixedDaemon>> = OnceLock::new();
    D.get_or_init(|| {
        let all = example_policies();
        (0..all.len())
            .map(|i| FixedDaemon::new(&all[i], &all[(i + 1) % all.len()]))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(ev) = KernelEvent::decode(data) {
        for d in daemons() {
            let mut record = to_audit(d, &ev);
            let _ = record.human();
            let (line, head) = seal(&mut record, &ChainHead::genesis()).expect("a record seals");
            let back = unseal(&line).expect("a sealed record unseals");
            assert!(
                back.intact,
                "a sealed kernel record does not verify: {line}"
            );
            assert_eq!((back.seq, back.hash), (head.seq, head.hash));
        }
    }
    if let Some(change) = CgroupChange::decode(data) {
        for p in example_policies() {
            if let Some(name) = selected_identity(p, &change.path) {
                assert!(p.identity(name).is_some());
            }
        }
    }
});
