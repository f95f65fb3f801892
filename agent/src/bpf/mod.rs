//! Everything that touches the kernel's BPF objects: loading and attaching
//! the programs, pinning and adopting them, and typed access to the maps.

pub mod aggregate;
mod barrier;
mod btf;
mod error;
pub mod events;
pub mod guards;
mod lineage;
mod loader;
mod maps;
pub mod pins;
pub mod sockdiag;
mod sockmap;
mod sys;
pub mod watchdog;

pub use btf::{BtfError, KernelBtf};
pub use error::BpfError;
pub use loader::{Kernel, LoadOptions, PacketGuard, uninstall};
pub use maps::{KernelMaps, lock};
