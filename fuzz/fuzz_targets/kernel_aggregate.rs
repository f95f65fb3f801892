//! What the daemon reads from the aggregation maps at the end of a period
//! (`AGG` keys and values, `AGG_OVERFLOW` counters), as the kernel left
//! them: counts and times an enrolled process drives, indexes and
//! generations from earlier daemons. The input is cut into
//! (`AggKey`, `AggValue`) pairs and overflow rows and turned into records
//! by the daemon's own `aggregate_records`.
//!
//! Properties: never a panic (counts near `u64::MAX`, times from before
//! boot or far ahead, unknown hooks and reasons); every record serialises
//! and its sealed line verifies; every counted denial is in some record.
#![no_main]

use std::{sync::OnceLock, time::SystemTime};

use agent_common::aggregate::{AGG_REASONS, AggKey, AggOverflow, AggValue};
use libfuzzer_sys::fuzz_target;
use palisade::{
    audit::chain::{ChainHead, seal, unseal},
    bpf::aggregate::SlotCounts,
    daemon::aggregate_records,
};
use palisade_fuzz::{FixedDaemon, example_policies};

const PAIR: usize = size_of::<AggKey>() + size_of::<AggValue>();
const OVERFLOW: usize = 4 + size_of::<AggOverflow>();

fn daemon() -> &'static FixedDaemon {
    static D: OnceLock<FixedDaemon> = OnceLock::new();
    D.get_or_init(|| {
        let all = example_policies();
        FixedDaemon::new(&all[0], &all[2])
    })
}

/// Plain-old-data from bytes (the maps hand the daemon exactly this).
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; T is a repr(C) map type without padding, for
    // which every bit pattern is valid (aya::Pod).
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n_kinds, rest)) = data.split_first() else {
        return;
    };
    let mut counts = SlotCounts::default();
    let mut rest = rest;
    for _ in 0..n_kinds {
        if rest.len() < PAIR {
            break;
        }
        let (pair, tail) = rest.split_at(PAIR);
        counts
            .kinds
            .push((read(pair), read(&pair[size_of::<AggKey>()..])));
        rest = tail;
    }
    while rest.len() >= OVERFLOW {
        let (row, tail) = rest.split_at(OVERFLOW);
        counts.overflow.push((
            u32::from_ne_bytes([row[0], row[1], row[2], row[3]]),
            read(&row[4..]),
        ));
        rest = tail;
    }
    let now = SystemTime::now();
    let span = (!rest.is_empty()).then_some((now, now));
    let records = aggregate_records(daemon(), &counts, span);

    let mut head = ChainHead::genesis();
    let mut total: u128 = 0;
    for mut r in records {
        total += u128::from(r.count.unwrap_or(0));
        let (line, next) = seal(&mut r, &head).expect("a record seals");
        let back = unseal(&line).expect("a sealed record unseals");
        assert!(back.intact, "an aggregate record does not verify: {line}");
        head = next;
    }
    // Every denial not already sent as an event record is counted once.
    let expected: u128 = counts
        .kinds
        .iter()
        .map(|(_, v)| u128::from(v.count.saturating_sub(u64::from(v.emitted != 0))))
        .chain(counts.overflow.iter().flat_map(|(_, o)| {
            o.deny
                .iter()
                .chain(o.audit.iter())
                .take(2 * AGG_REASONS)
                .map(|n| u128::from(*n))
        }))
        .sum();
    // (Counts near u64::MAX are not reachable from the kernel, and a sum
    // of them saturates.)
    if expected < u128::from(u64::MAX) {
        assert_eq!(
            total, expected,
            "records count {total} denials of {expected}"
        );
    }
});
