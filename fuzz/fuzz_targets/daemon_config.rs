//! The daemon's config file (`palisade daemon --config FILE`), read by the
//! daemon's own `Config::load`: YAML, unknown keys refused with a place,
//! paths resolved against the file, values checked. A config file is
//! written by operators, and often generated (ConfigMaps, templates).
//!
//! Properties: never a panic; a config that loads has the values the
//! daemon relies on without checking again (a power-of-two event buffer
//! of at least 4096 bytes, an aggregation period in range, loopback-only
//! TCP API, parseable durations, an absolute-or-relative policy path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::config::Config;
use palisade_fuzz::scratch_file;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("palisade.yaml", data);
    let Ok(cfg) = Config::load(&path) else {
        return;
    };
    let size = cfg.kernel.event_buffer_bytes;
    assert!(
        size.is_power_of_two() && size >= 4096,
        "event buffer {size}"
    );
    assert!((100..=3_600_000).contains(&cfg.kernel.aggregate_ms));
    assert!(cfg.kernel.events_per_identity > 0);
    if let Some(tcp) = &cfg.api.tcp {
        let addr: std::net::SocketAddr = tcp.parse().expect("api.tcp was checked");
        assert!(addr.ip().is_loopback());
    }
    for d in [&cfg.tokens.ttl, &cfg.tokens.max_ttl, &cfg.approvals.ttl] {
        humantime::parse_duration(d).expect("durations were checked");
    }
    let _ = cfg.audit_options();
    let _ = cfg.policy_path();
});
