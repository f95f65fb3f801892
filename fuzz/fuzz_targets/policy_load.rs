//! The policy loader, through the entry points its users call: the file is
//! read from disk by `policy::load` (what `palisade policy check` runs) and
//! by `policy::load_for_daemon` (start, reload, push; its JSON fast path
//! takes policies that begin with `{`). A policy that loads is compiled for
//! the kernel and for the DNS proxy as a reload would.
//!
//! Properties: the two loaders agree (a policy `check` accepts is one the
//! daemon accepts, with the same rules, and the other way round); the
//! compiled tables decide as the policy's own semantics do for addresses
//! around every rule.
#![no_main]

use agent_common::{IPPROTO_TCP, IPPROTO_UDP, NormAddr};
use libfuzzer_sys::fuzz_target;
use palisade::{
    dns::judge::Judges,
    policy::{self, Policy, tables},
};
use palisade_fuzz::scratch_file;

fuzz_target!(|data: &[u8]| {
    // JSON policies are usually named .json; the loaders do not look.
    let name = if data.first() == Some(&b'{') {
        "policy.json"
    } else {
        "policy.yaml"
    };
    let path = scratch_file(name, data);
    let checked = policy::load(&path);
    let daemon = policy::load_for_daemon(&path);
    match (&checked, &daemon) {
        (Ok(c), Ok(d)) => same_policy(&c.policy, &d.policy),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("`policy check` accepts what the daemon rejects: {e}"),
        (Err(e), Ok(_)) => panic!("the daemon accepts what `policy check` rejects: {e}"),
    }
    if let Ok(loaded) = daemon {
        compile(&loaded.policy);
    }
});

fn same_policy(a: &Policy, b: &Policy) {
    assert_eq!(a.version, b.version);
    let ids = |p: &Policy| {
        p.identities
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(a), ids(b), "identities differ");
    let rules = |p: &Policy| {
        p.rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), p.summary(i as u32).to_string(), r.action))
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(a), rules(b), "rules differ");
    for (x, y) in a.identities.iter().zip(&b.identities) {
        assert_eq!(
            (&x.allow, &x.deny),
            (&y.allow, &y.deny),
            "egress of {}",
            x.id
        );
        assert_eq!(
            (&x.allow_hosts, &x.deny_hosts),
            (&y.allow_hosts, &y.deny_hosts),
            "host rules of {}",
            x.id
        );
        assert_eq!(x.mode, y.mode);
        assert_eq!(x.selectors, y.selectors);
    }
}

fn compile(p: &Policy) {
    let index_of = |name: &str| {
        p.identities
            .iter()
            .position(|i| i.id == name)
            .map(|i| i as u32 + 1)
    };
    // Identity indexes of the kernel are bounded; a policy with more
    // identities is refused at compile time, which must be an error.
    let Ok(t) = tables::compile(p, 1, &index_of) else {
        return;
    };
    let _ = Judges::from_policy(p, true, &index_of);
    let _ = policy::diff::diff(p, p);
    for ident in &p.identities {
        let Some(index) = index_of(&ident.id) else {
            continue;
        };
        for rule in ident.allow.iter().chain(&ident.deny) {
            for addr in probes(rule.cidr) {
                let ports = rule.ports.first().map_or((0, 0), |r| (r.lo, r.hi));
                for (port, proto) in [
                    (ports.0, IPPROTO_TCP),
                    (ports.1, IPPROTO_UDP),
                    (1, IPPROTO_TCP),
                ] {
                    let (kernel, _) = t.judge(index, &addr, port, proto);
                    let reference = p.judge_cidr(&ident.id, &addr, port, proto);
                    assert_eq!(
                        kernel, reference,
                        "compiled tables and policy disagree for {} on {:?}:{port}/{proto}",
                        ident.id, addr
                    );
                }
            }
        }
    }
}

/// The first and last address of a prefix, and the ones just outside it.
fn probes(c: policy::Cidr) -> Vec<NormAddr> {
    let bits = if c.is_v6 { 128 } else { 32 };
    let mut v = u128::from_be_bytes(c.bytes);
    if !c.is_v6 {
        v >>= 96;
    }
    let host_bits = bits - u32::from(c.len);
    let mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let first = v & !mask;
    let last = first | mask;
    let max = if c.is_v6 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    };
    let mut out = vec![first, last];
    if first > 0 {
        out.push(first - 1);
    }
    if last < max {
        out.push(last + 1);
    }
    out.into_iter()
        .map(|a| {
            let mut bytes = [0u8; 16];
            if c.is_v6 {
                bytes = a.to_be_bytes();
            } else {
                bytes[..4].copy_from_slice(&(a as u32).to_be_bytes());
            }
            NormAddr {
                bytes,
                is_v6: c.is_v6,
            }
        })
        .collect()
}
