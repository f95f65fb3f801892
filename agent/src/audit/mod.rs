//! The audit trail: one event model for kernel and daemon decisions, sealed
//! into a hash chain and written as JSON lines (rotated by size), mirrored
//! as readable lines on stderr, streamed to watchers and optionally exported
//! over OTLP. Losses are counted and become records of their own.

pub mod chain;
mod event;
pub mod fold;
pub mod otlp;
mod pipeline;
pub mod spool;
pub mod trail;
pub mod verify;

pub use event::{
    AggregateDetail, AuditEvent, CallDetail, DnsDetail, EventKind, HttpDetail, RetentionDetail,
    clip, terminal_safe,
};
pub use pipeline::{AuditOptions, AuditPipeline, AuditStats};
