//! What the policy says about one destination: deny rules first (they win),
//! then addresses learned from DNS, then allow rules, else deny by default.

use agent_common::grants::ELEVATION_RULE;
use agent_common::{
    IDENT_DNS, IDENT_HAS_DENY, IdentityConfig, LpmData, LpmValue, MAX_IDENTITIES, NO_RULE,
    NormAddr, OWN_RULE, PORTSET_RANGES, Reason, lpm_scope, maps::LPM_SCOPE_BITS,
};
use aya_ebpf::{EbpfContext, maps::lpm_trie::Key};
use aya_log_ebpf::warn;

use crate::maps::{ACTIVE_GEN, ALLOW_LPM, DENY_LPM, IDENT_CFG, IDENT_STATE, PORTSETS};

/// The policy generation every lookup of one decision uses.
#[derive(Clone, Copy)]
pub struct Generation {
    pub number: u32,
    pub slot: u32,
}

#[inline(always)]
pub fn active_generation() -> Generation {
    let number = ACTIVE_GEN.get(0).copied().unwrap_or(0);
    Generation {
        number,
        slot: number & 1,
    }
}

/// The identity's configuration in this generation; `None` when the policy
/// does not define it (the caller denies).
#[inline(always)]
pub fn identity_config(generation: Generation, identity: u32) -> Option<IdentityConfig> {
    if identity >= MAX_IDENTITIES {
        return None;
    }
    let cfg = IDENT_CFG.get(generation.slot * MAX_IDENTITIES + identity)?;
    if cfg.defined == 0 { None } else { Some(*cfg) }
}

#[inline(always)]
pub fn killed(identity: u32) -> bool {
    matches!(IDENT_STATE.get(identity), Some(state) if state.killed != 0)
}

/// A verdict on one destination and what it rests on.
#[derive(Clone, Copy)]
pub struct Judgement {
    /// allow-rule, elevation, deny-rule or default-deny.
    pub reason: Reason,
    /// The deciding rule index (`NO_RULE` for default-deny).
    pub rule: u32,
    /// Admitted by an address learned from DNS.
    pub via_learned: bool,
    /// When the admitting grant's range expires; `u64::MAX` when the
    /// verdict does not rest on a grant.
    pub until_ns: u64,
}

impl Judgement {
    #[inline(always)]
    const fn of(reason: Reason, rule: u32) -> Self {
        Self {
            reason,
            rule,
            via_learned: false,
            until_ns: u64::MAX,
        }
    }

    #[inline(always)]
    pub const fn allows(&self) -> bool {
        matches!(self.reason, Reason::AllowRule | Reason::Elevation)
    }
}

/// Judge a destination: deny rules, learned addresses, allow rules, grants,
/// else deny by default.
#[inline(always)]
pub fn judge(
    ctx: &impl EbpfContext,
    generation: Generation,
    cfg: &IdentityConfig,
    identity: u32,
    addr: &NormAddr,
    port: u16,
    proto: u8,
) -> Judgement {
    let key = Key::new(
        LPM_SCOPE_BITS + addr.max_prefix(),
        LpmData {
            scope: lpm_scope(generation.slot, addr.is_v6, identity),
            addr: addr.bytes,
        },
    );
    if cfg.flags & IDENT_HAS_DENY != 0
        && let Some(entry) = DENY_LPM.get(&key)
        && let Some(rule) = match_ports(ctx, entry, port, proto)
    {
        return Judgement::of(Reason::DenyRule, rule);
    }
    // Addresses learned from DNS answers: a learned deny beats every allow.
    if cfg.flags & IDENT_DNS != 0
        && let Some((reason, rule)) = crate::learned::judge(identity, addr, port, proto)
    {
        return Judgement {
            via_learned: true,
            ..Judgement::of(reason, rule)
        };
    }
    if let Some(entry) = ALLOW_LPM.get(&key)
        && let Some(rule) = match_ports(ctx, entry, port, proto)
    {
        return Judgement::of(Reason::AllowRule, rule);
    }
    // Only what the policy does not allow reaches here: the grants lookup
    // costs nothing on the allowed path.
    if let Some((rule, until_ns)) = crate::grants::judge(identity, addr, port, proto) {
        let reason = if rule & ELEVATION_RULE != 0 {
            Reason::Elevation
        } else {
            Reason::AllowRule
        };
        return Judgement {
            until_ns,
            ..Judgement::of(reason, rule)
        };
    }
    Judgement::of(Reason::DefaultDeny, NO_RULE)
}

/// The rule of the first range of the entry's port set that admits
/// (port, proto).
#[inline(always)]
fn match_ports(ctx: &impl EbpfContext, entry: &LpmValue, port: u16, proto: u8) -> Option<u32> {
    let Some(set) = PORTSETS.get(entry.portset) else {
        // The daemon writes port sets before the entries that use them.
        warn!(
            ctx,
            "palisade: trie entry points at missing port set {}", entry.portset
        );
        return None;
    };
    let len = set.len as usize;
    let mut i = 0;
    while i < PORTSET_RANGES {
        if i >= len {
            break;
        }
        let range = &set.ranges[i];
        if range.matches(port, proto) {
            return Some(if range.rule == OWN_RULE {
                entry.rule
            } else {
                range.rule
            });
        }
        i += 1;
    }
    None
}
