//! What the journal holds: one self-contained record per change. Records
//! state absolute values (a bucket's level, an approval's whole state, an
//! identity's whole grant list), so replaying the journal keeps the last
//! record of each key and order within a key is all that matters.

use serde::{Deserialize, Serialize};

/// The journal format this daemon writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
#[expect(
    clippy::large_enum_variant,
    reason = "a record lives only while it is written or read back; boxing the large variant buys nothing"
)]
pub enum Record {
    /// First line of every journal file.
    Header {
        format: u32,
        /// Unix ms the file was written.
        written_ms: u64,
        /// Tokens issued at or before this second were issued while no
        /// complete record of used tokens was kept: never accept them.
        replay_since: u64,
        /// The same instant in unix ms (tokens carry their issue time in
        /// ms); absent in journals of earlier versions, which mean the end
        /// of `replay_since`'s second.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replay_since_ms: Option<u64>,
    },
    /// A budget bucket's level at `at_ms` (wall clock).
    Budget {
        identity: String,
        budget: String,
        tokens: f64,
        limit: f64,
        per: crate::policy::Window,
        at_ms: u64,
    },
    /// Every budget counts as spent at `at_ms` (state was lost then).
    BudgetFloor {
        at_ms: u64,
    },
    /// A token id presented once, remembered until `exp` (unix seconds).
    Used {
        identity: String,
        jti: String,
        exp: u64,
    },
    /// Tokens of `identity` issued at or before `at` never verify.
    Revoked {
        identity: String,
        at: u64,
        /// The same instant in unix ms (absent in earlier versions: the
        /// end of `at`'s second).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<u64>,
    },
    Approval(ApprovalRecord),
    /// The complete list of an identity's just-in-time grants.
    Grants {
        identity: String,
        grants: Vec<GrantRecord>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    pub id: String,
    /// pending | approved | rejected | expired | consumed
    pub state: String,
    pub identity: String,
    pub tool: String,
    pub action: String,
    pub resource: String,
    pub params_digest: String,
    pub policy_version: String,
    pub rules: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub approver: String,
    pub reason: String,
    /// The override token handed out when approved, until it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRecord {
    pub destination: String,
    pub ports: Vec<[u16; 2]>,
    pub protocol: String,
    pub ttl_ms: u64,
    pub rule: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRecord {
    pub cidr: String,
    pub ports: Vec<[u16; 2]>,
    pub protocol: String,
    pub rule: u32,
    pub rule_id: String,
    pub expires_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_ms() -> u64 {
    wall_ms(std::time::SystemTime::now())
}

pub fn from_ms(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

pub fn ports_to_record(ports: &[crate::policy::PortRange]) -> Vec<[u16; 2]> {
    ports.iter().map(|p| [p.lo, p.hi]).collect()
}

pub fn ports_from_record(ports: &[[u16; 2]]) -> Vec<crate::policy::PortRange> {
    ports
        .iter()
        .map(|[lo, hi]| crate::policy::PortRange { lo: *lo, hi: *hi })
        .collect()
}

pub fn protocol_from_name(name: &str) -> Option<crate::policy::Protocol> {
    use crate::policy::Protocol;
    match name {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "any" => Some(Protocol::Any),
        _ => None,
    }
}

/// An instant kept in ms, from a record that may hold only its second (the
/// end of that second: nothing issued within it passes).
pub fn ms_or_end_of_second(ms: Option<u64>, second: u64) -> u64 {
    ms.unwrap_or_else(|| second.saturating_mul(1000).saturating_add(999))
}

/// The second a ms instant falls in, rounded up: an earlier version
/// reading it refuses at least as much as it should.
pub const fn second_covering(ms: u64) -> u64 {
    ms.div_ceil(1000)
}
