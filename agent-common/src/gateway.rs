//! The L7 gateway's endpoints: the local addresses and ports where the
//! daemon serves the services a policy protects. An enrolled process may
//! open TCP connections to them whatever its egress rules say (the gateway
//! judges every request on them); nothing else on those addresses is open.

/// Key of `GATEWAY_EPS`: an IPv4 address (host order) and a TCP port.
#[inline(always)]
pub const fn endpoint_key(addr: u32, port: u16) -> u64 {
    ((addr as u64) << 16) | port as u64
}

/// `BIND_RESERVED` key for `port` of `addr` (a listener of the daemon's
/// own, such as its metrics endpoint).
#[inline(always)]
pub const fn reserved_endpoint(addr: u32, port: u16) -> u64 {
    endpoint_key(addr, port)
}

/// `BIND_RESERVED` key for every port of `addr` (the gateway's address).
#[inline(always)]
pub const fn reserved_address(addr: u32) -> u64 {
    endpoint_key(addr, 0)
}

/// `BIND_RESERVED` key for `port` on the unspecified address (`0.0.0.0`,
/// `::`): a wildcard bind there would take connections meant for the
/// daemon's listener on that port while it is not listening.
#[inline(always)]
pub const fn reserved_wildcard_port(port: u16) -> u64 {
    endpoint_key(0, port)
}
