//! Palisade, the host daemon that keeps AI agents on a leash at the kernel.
//!
//! The library holds every capability; the `palisade` binary, the gRPC API
//! and the tests are thin users of it.

pub mod api;
pub mod audit;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod confine;
pub mod daemon;
pub mod decision;
pub mod discovery;
pub mod dns;
pub mod doctor;
pub mod gateway;
pub mod hex;
pub mod identity;
pub mod inherited;
pub mod landlock;
pub mod links;
pub mod memory;
pub mod metrics;
pub mod mounts;
pub mod notifier;
pub mod ocsf;
pub mod owned;
pub mod policy;
pub mod seccomp;
pub mod signed_approval;
pub mod state;
pub mod tokens;

/// Generated gRPC types for `proto/palisade/v1`.
pub mod proto {
    #![allow(
        clippy::all,
        clippy::allow_attributes_without_reason,
        unused_qualifications,
        reason = "generated code"
    )]
    tonic::include_proto!("palisade.v1");
}

/// The compiled eBPF object, embedded at build time by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent"));
