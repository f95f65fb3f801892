//! Builds the eBPF object (embedded in the binary) and the gRPC code.
//!
//! The eBPF programs need the pinned nightly below with `rust-src` and a
//! `bpf-linker` built against that nightly's LLVM; `cargo xtask setup`
//! installs both, bpf-linker under `~/.cache/palisade/llvm-<toolchain>/bin`,
//! which is put on PATH here so a plain `cargo build` works.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// Keep in step with `xtask/src/toolchain.rs`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-29";

fn main() -> anyhow::Result<()> {
    build_protos()?;
    build_ebpf()
}

/// `protox` is a protobuf compiler in Rust that carries the well-known
/// types (`google/protobuf/struct.proto`…): the build needs no `protoc`
/// and no include files from the host.
fn build_protos() -> anyhow::Result<()> {
    let files = ["../proto/palisade/v1/palisade.proto"];
    for f in &files {
        println!("cargo::rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["../proto"])
        .map_err(|e| anyhow!("compiling proto/palisade/v1: {e}"))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)
        .context("generating the gRPC code for proto/palisade/v1")
}

fn build_ebpf() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=PALISADE_BPF_LINKER_DIR");
    let linker_dir = match env::var_os("PALISADE_BPF_LINKER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
            PathBuf::from(home)
                .join(".cache/palisade")
                .join(format!("llvm-{EBPF_TOOLCHAIN}"))
                .join("bin")
        }
    };
    if !linker_dir.join("bpf-linker").exists() && which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found in {} nor on PATH: run `cargo xtask setup`",
            linker_dir.display()
        ));
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![linker_dir];
    dirs.extend(env::split_paths(&path));
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", env::join_paths(dirs)?) };

    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir: "../agent-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}

fn which_bpf_linker() -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).find_map(|dir| {
        let candidate = dir.join("bpf-linker");
        candidate.exists().then_some(candidate)
    })
}
