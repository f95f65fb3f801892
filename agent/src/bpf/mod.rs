//! Everything that touches the kernel's BPF objects: loading and attaching
//! the programs, pinning and adopting them, and typed access to the maps.

pub mod aggregate;
mod barrier;
mod error;
pub mod events;
mod loader;
mod maps;
pub mod pins;
mod sys;

pub use error::BpfError;
pub use loader::{Kernel, LoadOptions, PacketGuard, uninstall};
pub use maps::{KernelMaps, lock};
