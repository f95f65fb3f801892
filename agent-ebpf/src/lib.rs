//! Stub library target: lets `agent` name this crate as a build-dependency so
//! cargo rebuilds the daemon when the eBPF programs change. The programs are
//! the `agent` binary target, built for the bpf target by `agent/build.rs`.
#![no_std]
