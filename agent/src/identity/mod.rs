//! Who a process is: cgroups, the identity registry, selectors, enrolment.

pub mod cgroupfs;
pub mod peer;
mod registry;
mod selectors;

pub use cgroupfs::CgroupFs;
pub use peer::{PeerError, PeerProcess, PinKind};
pub use registry::{IdentityError, Registry};
pub use selectors::{SelectorSync, desired_selections, selected_identity};
