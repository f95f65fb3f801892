//! A `Decide` call as the API receives it: the protobuf `DecideRequest`
//! bytes (tool, action, resource, and the `params` and `context` structs a
//! runtime fills from the agent's own tool call), decoded by prost,
//! bounded by `decision::input`, and decided by the example policies'
//! rules, whose conditions the metered CEL evaluates; then budgets are
//! checked and charged as the daemon does.
//!
//! The first byte picks the policy and the identity the caller is (the
//! daemon takes it from the socket peer, never from the request).
//!
//! Properties: a decision always has a verdict and a reason; no charge of
//! an allowed or approval-required call is negative, not a number or
//! infinite (a negative charge would refill the budget); budgets never
//! report more remaining than their limit.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use palisade::{
    decision::{budgets::Budgets, input},
    policy::{ToolCall, ToolVerdict},
    proto::DecideRequest,
};
use palisade_fuzz::example_policies;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let Ok(req) = DecideRequest::decode(bytes) else {
        return;
    };
    let policies = example_policies();
    // Favour the conditions policy (last): it has the most CEL.
    let policy = if pick & 1 == 0 {
        &policies[policies.len() - 1]
    } else {
        &policies[usize::from(pick >> 1) % policies.len()]
    };
    let identity = &policy.identities[usize::from(pick >> 4) % policy.identities.len()].id;
    let (params, context) = match input::to_json(req.params.as_ref(), "params")
        .and_then(|p| input::to_json(req.context.as_ref(), "context").map(|c| (p, c)))
    {
        Ok(pc) => pc,
        Err(_) => return,
    };
    let _ = input::digest(&params);
    let call = ToolCall {
        identity,
        tool: &req.tool,
        action: &req.action,
        resource: &req.resource,
        params: &params,
        context: &context,
        // 2026-11-23T10:00:00Z, a Monday in working hours.
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000),
    };
    let mut d = policy.decide_tool(&call);
    assert!(!d.reason.is_empty());
    if d.verdict != ToolVerdict::Deny {
        for c in &d.charges {
            assert!(
                c.amount.is_finite() && c.amount >= 0.0,
                "{:?} call charges {} to budget `{}`",
                d.verdict,
                c.amount,
                c.budget
            );
        }
    }
    let budgets = Budgets::default();
    let used = budgets.used(identity, &d.charges);
    d.check_budgets(|b| used.get(b).copied().unwrap_or(0.0));
    if d.verdict == ToolVerdict::Allow {
        for _ in 0..2 {
            if let Ok(left) = budgets.charge(identity, &d.charges, false) {
                for r in left {
                    assert!(
                        r.remaining <= r.limit,
                        "budget `{}` has {} left of {}",
                        r.budget,
                        r.remaining,
                        r.limit
                    );
                }
            }
        }
    }
});
