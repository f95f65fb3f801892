//! The L7 gateway's endpoints: the local addresses and ports where the
//! daemon serves the services a policy protects. An enrolled process may
//! open TCP connections to them whatever its egress rules say (the gateway
//! judges every request on them); nothing else on those addresses is open.

/// Key of `GATEWAY_EPS`: an IPv4 address (host order) and a TCP port.
#[inline(always)]
pub const fn endpoint_key(addr: u32, port: u16) -> u64 {
    ((addr as u64) << 16) | port as u64
}
