use std::{io, path::PathBuf};

/// Errors from loading, attaching and using the eBPF programs and maps.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("preparing bpffs directory {path}: {source}")]
    BpfFs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening cgroup {path} to attach programs: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading kernel BTF (is /sys/kernel/btf/vmlinux there?): {0}")]
    Btf(#[source] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("program `{program}`: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program `{program}`: {action} link {path}: {source}")]
    Link {
        program: &'static str,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("kernel structure offsets for the lineage programs: {0}")]
    KernelBtf(#[from] super::btf::BtfError),
    #[error(
        "this kernel has no BPF LSM hook `bpf_lsm_socket_create` (built without CONFIG_BPF_LSM)"
    )]
    NoLsmHook,
    #[error("this kernel refuses BPF LSM programs: {0}")]
    LsmRefused(#[source] io::Error),
    #[error("sock_diag: {0}")]
    SockDiag(#[source] io::Error),
    #[error("identity index {0} is out of range")]
    IdentityIndex(u32),
    #[error("waiting for running BPF programs (map-of-maps update): {0}")]
    Barrier(#[source] io::Error),
}

impl BpfError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map { map, source }
    }

    pub(crate) fn program(
        program: &'static str,
    ) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        move |source| Self::Program { program, source }
    }
}
