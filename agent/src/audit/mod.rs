//! The audit trail: one event model for kernel and daemon decisions, written
//! as JSON lines and as readable lines on stderr. Losses are counted and
//! become events of their own.

mod event;
mod pipeline;

pub use event::{AuditEvent, DnsDetail, EventKind};
pub use pipeline::{AuditPipeline, AuditStats};
