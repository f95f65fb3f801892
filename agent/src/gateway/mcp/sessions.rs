//! Sessions of a remote MCP server, bound to the identity they were
//! issued to. The server cannot tell the gateway's callers apart (every
//! request arrives from the gateway, with the service's credential), so
//! the gateway remembers who received each `Mcp-Session-Id` and refuses it
//! to anyone else, as it does for the stdio servers it runs itself.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

/// Sessions remembered per identity and service; beyond it the identity's
/// oldest is forgotten (that identity's own loss, nobody else's).
const PER_IDENTITY: usize = 64;

#[derive(Default)]
pub struct RemoteSessions {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    owners: HashMap<String, Owner>,
    issued: u64,
}

struct Owner {
    identity: String,
    /// Order of issue, to find an identity's oldest.
    serial: u64,
}

impl RemoteSessions {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server issued session `id` in answer to `identity`. A session
    /// already bound stays its first identity's: an answer that names it
    /// again does not hand it to whoever the answer went to.
    pub fn issued(&self, id: &str, identity: &str) {
        let mut t = self.lock();
        if t.owners.contains_key(id) {
            return;
        }
        let mine: Vec<(&String, u64)> = t
            .owners
            .iter()
            .filter(|(_, o)| o.identity == identity)
            .map(|(k, o)| (k, o.serial))
            .collect();
        if mine.len() >= PER_IDENTITY
            && let Some(oldest) = mine
                .iter()
                .min_by_key(|(_, s)| *s)
                .map(|(k, _)| (*k).clone())
        {
            t.owners.remove(&oldest);
        }
        t.issued += 1;
        let serial = t.issued;
        t.owners.insert(
            id.to_string(),
            Owner {
                identity: identity.to_string(),
                serial,
            },
        );
    }

    /// Whether session `id` was issued to `identity`.
    pub fn belongs_to(&self, id: &str, identity: &str) -> bool {
        self.lock()
            .owners
            .get(id)
            .is_some_and(|o| o.identity == identity)
    }

    /// Session `id` was ended (`DELETE`).
    pub fn ended(&self, id: &str) {
        self.lock().owners.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_identitys_alone_and_bounded_per_identity() {
        let s = RemoteSessions::default();
        s.issued("a1", "alice");
        assert!(s.belongs_to("a1", "alice"));
        assert!(!s.belongs_to("a1", "bob"));
        assert!(!s.belongs_to("nope", "alice"));
        for i in 0..PER_IDENTITY + 5 {
            s.issued(&format!("b{i}"), "bob");
        }
        assert!(
            s.belongs_to("a1", "alice"),
            "bob's sessions evict only bob's"
        );
        assert!(!s.belongs_to("b0", "bob"), "bob's oldest is forgotten");
        assert!(s.belongs_to(&format!("b{}", PER_IDENTITY + 4), "bob"));
        s.issued("a1", "bob");
        assert!(
            s.belongs_to("a1", "alice"),
            "an answer naming it again moves nothing"
        );
        assert!(!s.belongs_to("a1", "bob"));
        s.ended("a1");
        assert!(!s.belongs_to("a1", "alice"));
    }
}
