//! `cgroup_skb/egress`: the last look at a packet of an enrolled socket
//! before it leaves.
//!
//! * Source routes: a packet carrying IPv4 options (loose or strict source
//!   routing among them) or an IPv6 routing header (segment routing…) goes
//!   through hops the process chose, to a final destination the connect and
//!   sendmsg hooks never judged. The socket options are refused earlier
//!   (`sockopt`); this catches the same headers given per message as
//!   control data, by TCP or UDP, and anything else that builds them.
//! * Permissions that end: a connected socket's destination is judged
//!   again when the policy generation or the grants changed, or the grant
//!   that admitted it expired, and its packets are dropped once it is no
//!   longer allowed (`rejudge`).
//! * Kill switch: every packet of a revoked identity's sockets is dropped,
//!   so established TCP connections and connected UDP sockets stop carrying
//!   data at once (a bare RST still leaves, so the daemon can tear the
//!   connection down cleanly).
//!
//! Sockets of unenrolled processes carry no identity stamp: for them the
//! program asks for the stamp (a pointer test in the kernel) and reads one
//! byte of the IP header.

use agent_common::{
    AF_INET, AF_INET6, Hook, IDENT_DNS, IPPROTO_TCP, IPPROTO_UDP, MAX_CGROUP_DEPTH, NO_RULE,
    NormAddr, Reason, Verdict,
    guard::{JUDGED_CUT, JUDGED_VALID, JUDGED_VIA_LEARNED, SOCK_KILL_REPORTED, SockGuard},
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock},
    helpers::{
        bpf_ktime_get_boot_ns,
        generated::{bpf_sk_ancestor_cgroup_id, bpf_sk_cgroup_id, bpf_sk_fullsock},
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{
    dns,
    emit::{self, Decision},
    gateway, identity,
    maps::CGROUP_IDENT,
    policy, sockets,
};

const PASS: i32 = 1;
const DROP: i32 = 0;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv6 extension headers walked looking for a routing header.
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers examined before giving up (the kernel itself builds at
/// most hop-by-hop, destination, routing, destination, fragment).
const MAX_EXT_HEADERS: u32 = 8;
const TCP_RST: u8 = 0x04;
/// Bytes of the IP header `header_byte` reads in place.
const HEADER_PEEK: usize = 8;
/// `rejudge`: nothing decided, the packet goes on to the other checks.
const GO_ON: i32 = -1;

/// What the IP header says.
struct Packet {
    dst: NormAddr,
    /// Transport protocol and where its header starts, when found.
    l4: u8,
    l4_off: usize,
    /// IPv4 options or an IPv6 routing header.
    source_routed: bool,
    /// Bytes after the IP header(s), from the IP length field.
    l4_len: u32,
}

#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the kernel hands a valid __sk_buff; `sk` may be null.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    // SAFETY: helper call on the packet's socket.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return PASS; // request and time-wait sockets: no storage, no data
    }
    // Identity 0 is never assigned and a null stamp means none: plain
    // values rather than Options, whose payload would be an uninitialised
    // register on the `None` path, which the verifier refuses to spill.
    let guard = sockets::guard_of(sk.cast());
    let (stamped, judged_flags) = if guard.is_null() {
        (0, 0)
    } else {
        // SAFETY: `guard` is this socket's storage.
        unsafe { ((*guard).identity, (*guard).judged.flags) }
    };
    // SAFETY: reading skb->protocol (network order).
    let proto = u16::from_be(unsafe { (*skb).protocol } as u16);

    if stamped != 0 && policy::killed(stamped) {
        return killed(&ctx, proto, stamped, guard);
    }
    // One byte tells whether there is anything to look at: IPv4 options,
    // or an IPv6 extension header. Most packets of the host go on at once.
    // First, so that a source-routed packet (whose header names its first
    // hop, not what the hooks judged) is recorded for what it is.
    if may_be_routed(skb, &ctx, proto) && source_route(&ctx, proto, sk, stamped) == DROP {
        return DROP;
    }
    if stamped != 0 && judged_flags != 0 && !still_judged(&ctx, proto, sk, guard) {
        let verdict = rejudge(&ctx, proto, sk, stamped, guard);
        if verdict != GO_ON {
            return verdict;
        }
    }
    PASS
}

/// A packet that may carry IPv4 options or an IPv6 routing header: drop it
/// when it does and the socket is an enrolled process's. Each check that
/// records lives in a function of its own (a BPF-to-BPF call): together in
/// `egress` they would pass the 512-byte stack.
#[inline(never)]
fn source_route(ctx: &SkBuffContext, proto: u16, sk: *mut bpf_sock, stamped: u32) -> i32 {
    let Some(packet) = parse(ctx, proto) else {
        return PASS;
    };
    if !packet.source_routed {
        return PASS;
    }
    // Options are rare: only now is it worth finding a socket's identity
    // the hard way when it carries no stamp (made before enrolment).
    let identity = if stamped != 0 {
        stamped
    } else {
        unstamped_identity(sk, packet.l4)
    };
    if identity == 0 {
        return PASS;
    }
    let generation = policy::active_generation();
    let audit = matches!(policy::identity_config(generation, identity), Some(c) if c.audit != 0);
    emit::record(&Decision {
        hook: Hook::Egress,
        identity,
        generation,
        verdict: if audit { Verdict::Audit } else { Verdict::Deny },
        reason: Reason::SourceRoute,
        rule: NO_RULE,
        addr: packet.dst.bytes,
        port: dst_port(ctx, &packet),
        family: if packet.dst.is_v6 { AF_INET6 } else { AF_INET },
        protocol: u16::from(packet.l4),
        sock_type: 0,
    });
    if audit { PASS } else { DROP }
}

/// A revoked identity's socket: drop, except a bare RST (no data, and it
/// lets the peer know at once). The first drop of each socket is recorded,
/// the rest counted.
#[inline(never)]
fn killed(ctx: &SkBuffContext, proto: u16, identity: u32, stamp: *mut SockGuard) -> i32 {
    let packet = parse(ctx, proto);
    if let Some(p) = &packet
        && bare_rst(ctx, p)
    {
        return PASS;
    }
    // SAFETY: `stamp` is this socket's (non-null) storage.
    let first = unsafe {
        let first = (*stamp).flags & SOCK_KILL_REPORTED == 0;
        (*stamp).flags |= SOCK_KILL_REPORTED;
        first
    };
    if !first {
        emit::count(identity, Verdict::Deny);
        return DROP;
    }
    let (addr, is_v6, l4, port) = match &packet {
        Some(p) => (p.dst.bytes, p.dst.is_v6, p.l4, dst_port(ctx, p)),
        None => ([0; 16], false, 0, 0),
    };
    emit::record(&Decision {
        hook: Hook::Egress,
        identity,
        generation: policy::active_generation(),
        verdict: Verdict::Deny,
        reason: Reason::KillSwitch,
        rule: NO_RULE,
        addr,
        port,
        family: if is_v6 { AF_INET6 } else { AF_INET },
        protocol: u16::from(l4),
        sock_type: 0,
    });
    DROP
}

/// A TCP segment with RST set and no data: it carries nothing out, and
/// lets the peer know at once that the connection is over.
#[inline(always)]
fn bare_rst(ctx: &SkBuffContext, p: &Packet) -> bool {
    p.l4 == IPPROTO_TCP
        && ctx
            .load::<u8>(p.l4_off + 12)
            .is_ok_and(|doff| p.l4_len == u32::from(doff >> 4) * 4)
        && ctx
            .load::<u8>(p.l4_off + 13)
            .is_ok_and(|flags| flags & TCP_RST != 0)
}

/// The path nearly every packet of a judged socket takes: its judgement
/// holds — valid and not cut, same policy generation and grants epoch, not
/// expired, and the packet still goes to the judged destination. Anything
/// else goes to `rejudge`. A function of its own: inlined, its locals
/// would push `egress` and `rejudge` together past the 512-byte stack.
#[inline(never)]
fn still_judged(ctx: &SkBuffContext, proto: u16, sk: *mut bpf_sock, guard: *mut SockGuard) -> bool {
    // SAFETY: `guard` is this socket's (non-null) storage.
    let judged = unsafe { &(*guard).judged };
    if judged.flags & (JUDGED_VALID | JUDGED_CUT) != JUDGED_VALID
        || judged.generation != policy::active_generation().number
        || judged.epoch != sockets::rejudge_epoch()
    {
        return false;
    }
    let Some((dst, port, _)) = destination(ctx, proto, sk) else {
        return true; // neither TCP nor UDP: nothing `rejudge` judges
    };
    port == judged.port
        && u8::from(dst.is_v6) == judged.is_v6
        && dst.bytes == judged.addr
        // SAFETY: plain helper call.
        && (judged.recheck_ns == u64::MAX || unsafe { bpf_ktime_get_boot_ns() } < judged.recheck_ns)
}

/// Where a packet goes (address, port, transport), for the judgement
/// record: a TCP segment to its socket's peer, read from the socket (no
/// header parsing on the path every TCP packet takes); a UDP datagram to
/// its own destination, read from the packet — a datagram corked while
/// one address was allowed leaves later for that address, whatever the
/// socket is connected to, and `sendto` on a connected socket goes
/// elsewhere than the peer. `None` for other transports.
#[inline(always)]
fn destination(ctx: &SkBuffContext, proto: u16, sk: *mut bpf_sock) -> Option<(NormAddr, u16, u8)> {
    // SAFETY: a full socket, whose fields a cgroup_skb program may read.
    let l4 = unsafe { (*sk).protocol } as u8;
    if l4 == IPPROTO_UDP {
        let p = parse(ctx, proto)?;
        if p.l4 != IPPROTO_UDP {
            return None;
        }
        let port = dst_port(ctx, &p);
        return Some((p.dst, port, IPPROTO_UDP));
    }
    if l4 != IPPROTO_TCP {
        return None;
    }
    // SAFETY: as above.
    unsafe {
        let dst = if (*sk).family == u32::from(AF_INET) {
            NormAddr::from_ip4_word((*sk).dst_ip4)
        } else {
            NormAddr::from_ip6_words([
                (*sk).dst_ip6[0],
                (*sk).dst_ip6[1],
                (*sk).dst_ip6[2],
                (*sk).dst_ip6[3],
            ])
        };
        Some((dst, u16::from_be((*sk).dst_port), IPPROTO_TCP))
    }
}

/// A judged socket's packet whose record `still_judged` found wanting
/// (connected, or a datagram the sendmsg hook allowed), judged again: its
/// allow verdict may have lapsed since —
/// the policy generation or the grants changed, or the grant that admitted
/// it expired — or when it goes somewhere else than the destination that
/// was judged (`destination`; a connect the hook allowed can still fail in
/// the kernel, leaving the earlier peer). Still allowed: the record is
/// brought up to date and the packet goes on (`GO_ON`). No longer allowed:
/// recorded once as `permission-ended`, and this packet and every later
/// one is dropped (a bare RST excepted) until an allowed connect or send
/// judges the socket afresh; in audit mode only recorded. A connection
/// admitted by an address learned from DNS outlives the name's TTL: it is
/// kept while nothing denies it and the identity still has host rules.
/// Packets to the DNS proxy or the L7 gateway were judged by the hooks
/// that steered or admitted them.
///
/// A function of its own, like `killed` and `source_route`.
#[inline(never)]
fn rejudge(
    ctx: &SkBuffContext,
    proto: u16,
    sk: *mut bpf_sock,
    identity: u32,
    guard: *mut SockGuard,
) -> i32 {
    // SAFETY: `guard` is this socket's (non-null) storage.
    let judged = unsafe { (*guard).judged };
    if judged.flags & JUDGED_CUT != 0 {
        if let Some(p) = parse(ctx, proto)
            && bare_rst(ctx, &p)
        {
            return PASS;
        }
        emit::count(identity, Verdict::Deny);
        return DROP;
    }
    if judged.flags & JUDGED_VALID == 0 {
        return GO_ON;
    }
    let Some((dst, port, l4)) = destination(ctx, proto, sk) else {
        return GO_ON;
    };
    let same_destination =
        port == judged.port && u8::from(dst.is_v6) == judged.is_v6 && dst.bytes == judged.addr;
    // `still_judged` found the record no longer holds: judge afresh.
    let generation = policy::active_generation();
    let epoch = sockets::rejudge_epoch();
    if !same_destination
        && ((l4 == IPPROTO_TCP && gateway::is_endpoint(&dst, port))
            || matches!(dns::config(), Some(c) if dns::is_proxy(&c, &dst)))
    {
        return GO_ON;
    }
    // Plain values, not an Option (see `egress`).
    let mut keep = false;
    let mut keep_until: u64 = u64::MAX;
    let mut rule = NO_RULE;
    let mut audit = false;
    if let Some(cfg) = policy::identity_config(generation, identity) {
        let j = policy::judge(ctx, generation, &cfg, identity, &dst, port, l4);
        if j.allows() {
            keep = true;
            keep_until = j.until_ns;
        } else if same_destination
            && j.reason == Reason::DefaultDeny
            && judged.flags & JUDGED_VIA_LEARNED != 0
            && cfg.flags & IDENT_DNS != 0
        {
            keep = true;
        }
        rule = j.rule;
        audit = cfg.audit != 0;
    }
    if keep {
        if same_destination {
            // SAFETY: as above.
            unsafe {
                (*guard).judged.generation = generation.number;
                (*guard).judged.epoch = epoch;
                (*guard).judged.recheck_ns = keep_until;
            }
        }
        return GO_ON;
    }
    emit::record(&Decision {
        hook: Hook::Egress,
        identity,
        generation,
        verdict: if audit { Verdict::Audit } else { Verdict::Deny },
        reason: Reason::PermissionEnded,
        rule,
        addr: dst.bytes,
        port,
        family: if dst.is_v6 { AF_INET6 } else { AF_INET },
        protocol: u16::from(l4),
        sock_type: 0,
    });
    // SAFETY: as above.
    unsafe {
        (*guard).judged.flags = if audit { 0 } else { judged.flags | JUDGED_CUT };
    }
    if audit {
        return GO_ON;
    }
    match parse(ctx, proto) {
        Some(p) if bare_rst(ctx, &p) => GO_ON,
        _ => DROP,
    }
}

#[inline(always)]
fn may_be_routed(skb: *mut __sk_buff, ctx: &SkBuffContext, proto: u16) -> bool {
    match proto {
        ETH_P_IP => header_byte(skb, ctx, 0).is_some_and(|vihl| vihl & 0xf > 5),
        ETH_P_IPV6 => header_byte(skb, ctx, 6).is_some_and(|next| {
            matches!(
                next,
                NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
            )
        }),
        _ => false,
    }
}

/// One byte of the IP header: read in place where the header is in the
/// linear part of the packet (always, for what the host sends), else
/// copied out by the helper.
#[inline(always)]
fn header_byte(skb: *mut __sk_buff, ctx: &SkBuffContext, off: usize) -> Option<u8> {
    // SAFETY: reading the packet bounds the kernel hands cgroup_skb programs.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    // Eight bytes (every IP header is longer): a one-byte check compiles to
    // `data < end`, from which the verifier learns no readable range.
    if off < HEADER_PEEK && data + HEADER_PEEK <= end {
        // SAFETY: within [data, data_end), checked just above.
        return Some(unsafe { *((data + off) as *const u8) });
    }
    ctx.load::<u8>(off).ok()
}

#[inline(always)]
fn parse(ctx: &SkBuffContext, proto: u16) -> Option<Packet> {
    match proto {
        ETH_P_IP => {
            let vihl = ctx.load::<u8>(0).ok()?;
            let ihl = usize::from(vihl & 0xf) * 4;
            let total = u16::from_be(ctx.load::<u16>(2).ok()?);
            let l4 = ctx.load::<u8>(9).ok()?;
            let dst = ctx.load::<[u8; 4]>(16).ok()?;
            Some(Packet {
                dst: NormAddr::v4(dst),
                l4,
                l4_off: ihl,
                source_routed: ihl > 20,
                l4_len: u32::from(total).saturating_sub(ihl as u32),
            })
        }
        ETH_P_IPV6 => {
            let payload = u16::from_be(ctx.load::<u16>(4).ok()?);
            let mut next = ctx.load::<u8>(6).ok()?;
            let dst = ctx.load::<[u8; 16]>(24).ok()?;
            let mut off: usize = 40;
            let mut routed = false;
            let mut i = 0;
            while i < MAX_EXT_HEADERS {
                match next {
                    NEXTHDR_ROUTING => {
                        routed = true;
                        break;
                    }
                    NEXTHDR_HOP | NEXTHDR_DEST => {
                        let hdr = ctx.load::<[u8; 2]>(off).ok()?;
                        next = hdr[0];
                        off += (usize::from(hdr[1]) + 1) * 8;
                    }
                    NEXTHDR_AUTH => {
                        let hdr = ctx.load::<[u8; 2]>(off).ok()?;
                        next = hdr[0];
                        off += (usize::from(hdr[1]) + 2) * 4;
                    }
                    NEXTHDR_FRAGMENT => {
                        next = ctx.load::<u8>(off).ok()?;
                        off += 8;
                    }
                    _ => break,
                }
                i += 1;
            }
            Some(Packet {
                dst: NormAddr::v6(dst),
                l4: next,
                l4_off: off,
                source_routed: routed,
                l4_len: u32::from(payload).saturating_sub(off as u32 - 40),
            })
        }
        _ => None,
    }
}

#[inline(always)]
fn dst_port(ctx: &SkBuffContext, p: &Packet) -> u16 {
    if p.l4 != IPPROTO_TCP && p.l4 != IPPROTO_UDP {
        return 0;
    }
    ctx.load::<u16>(p.l4_off + 2).map_or(0, u16::from_be)
}

/// The identity of a socket without a stamp (made before its process was
/// enrolled), 0 for none: the process sending, for UDP (whose packets leave
/// in the sender's own system call), else the cgroup the socket was created
/// in.
#[inline(always)]
fn unstamped_identity(sk: *mut bpf_sock, l4: u8) -> u32 {
    if l4 == IPPROTO_UDP
        && let Some(identity) = identity::enrolled()
    {
        return identity;
    }
    // SAFETY: helper calls on a full socket.
    let own = unsafe { bpf_sk_cgroup_id(sk.cast()) };
    // SAFETY: plain u32 value.
    if let Some(identity) = unsafe { CGROUP_IDENT.get(&own) } {
        return *identity;
    }
    // Identity 0 is never assigned: it stands for "none" here, because an
    // Option's payload would be an uninitialised register on the path where
    // nothing is found, and the verifier refuses to spill one.
    let mut found: u32 = 0;
    let mut level: u32 = 1;
    while level <= MAX_CGROUP_DEPTH {
        // SAFETY: helper call on a full socket.
        let id = unsafe { bpf_sk_ancestor_cgroup_id(sk.cast(), level as i32) };
        if id == 0 || id == own {
            break;
        }
        // SAFETY: plain u32 value.
        if let Some(identity) = unsafe { CGROUP_IDENT.get(&id) } {
            found = *identity;
        }
        level += 1;
    }
    found
}
