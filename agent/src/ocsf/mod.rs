//! The audit trail in the SIEM's own language: OCSF 1.8.0 events
//! (<https://schema.ocsf.io/1.8.0/>), for the OTLP exporter
//! (`audit.otlp.format: ocsf`) and an OCSF JSON-lines file
//! (`audit.ocsf.file`).
//!
//! | trail `kind` | OCSF class |
//! |---|---|
//! | `network` | Network Activity (4001) |
//! | `dns` | DNS Activity (4003) |
//! | `decision`, `approval` | API Activity (6003) |
//! | `grant`, `elevation`, `kill_switch` | User Access Management (3005) |
//! | anything else | Base Event (0) |
//!
//! Every event carries the sealed trail line in `raw_data` (a SIEM holds a
//! verifiable copy of the chain) and its `seq` and `hash` in `metadata`;
//! what has no OCSF attribute goes to `unmapped`. Events declare the
//! `security_control` profile (action, disposition, policy, rule) and the
//! `host` profile (actor process and user, device). The tests validate the
//! output against the class schemas vendored in `tests/ocsf/`.

mod classes;
pub mod sink;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use sink::OcsfFileConfig;

/// The OCSF version the events follow.
pub const VERSION: &str = "1.8.0";

/// What an exporter sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The sealed trail line itself.
    #[default]
    Palisade,
    /// An OCSF event (the sealed line in its `raw_data`).
    Ocsf,
}

/// The OCSF event for a sealed trail line; `None` if the line is not a
/// JSON object.
pub fn from_line(line: &str, host: &str) -> Option<Value> {
    let ev: Map<String, Value> = serde_json::from_str(line).ok()?;
    Some(Value::Object(classes::map(&ev, line, host)))
}

/// This host's name, for `device.hostname`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
