//! How many request-body bytes the gateway holds at once, per identity and
//! in all. Bodies are read whole before they are judged; without a bound,
//! one agent opening many HTTP/2 streams that each send most of a large
//! body and never finish makes the daemon hold them all (its memory is
//! every identity's gateway, DNS proxy and decision API). A request
//! reserves its declared length (or the largest body allowed, when it
//! declares none) before its body is read, and gives it back when it is
//! done; a request that does not fit is refused at once (503
//! `gateway-busy`), without reading its body.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Bodies of the largest allowed size one identity may have in flight.
pub const PER_IDENTITY: usize = 16;
/// The same, for all identities together.
pub const TOTAL: usize = 64;

/// Answers read whole (to be masked, or scrubbed and given their new
/// length) are held from the time they are read until the agent has taken
/// the last byte: an agent that asks for large answers and reads none
/// would otherwise make the daemon hold them all. Answers of the largest
/// size (`max_mask_bytes`) one identity may have held at once, and all
/// identities together; past that an answer that needs only scrubbing
/// streams through (the agent's reading paces it), and one to mask is
/// refused (503 `gateway-busy`).
pub const ANSWERS_PER_IDENTITY: usize = 4;
pub const ANSWERS_TOTAL: usize = 16;

#[derive(Default)]
pub struct BodyBudget {
    held: Mutex<(HashMap<String, usize>, usize)>,
}

/// Bytes reserved for one request's body; returned when dropped.
pub struct Reserved {
    budget: Arc<BodyBudget>,
    identity: String,
    bytes: usize,
}

impl BodyBudget {
    /// Reserve `bytes` for `identity` within `per_identity` and `total`.
    pub fn reserve(
        self: &Arc<Self>,
        identity: &str,
        bytes: usize,
        per_identity: usize,
        total: usize,
    ) -> Option<Reserved> {
        let mut g = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = g.0.get(identity).copied().unwrap_or(0);
        if mine + bytes > per_identity || g.1 + bytes > total {
            return None;
        }
        *g.0.entry(identity.to_string()).or_default() += bytes;
        g.1 += bytes;
        Some(Reserved {
            budget: self.clone(),
            identity: identity.to_string(),
            bytes,
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut g = self
            .budget
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = g.0.get_mut(&self.identity) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                g.0.remove(&self.identity);
            }
        }
        g.1 = g.1.saturating_sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_per_identity_and_in_all_and_given_back() {
        let b = Arc::new(BodyBudget::default());
        let a1 = b.reserve("a", 6, 10, 15);
        assert!(a1.is_some());
        assert!(b.reserve("a", 5, 10, 15).is_none(), "over a's share");
        let b1 = b.reserve("b", 9, 10, 15);
        assert!(b1.is_some());
        assert!(b.reserve("c", 1, 10, 15).is_none(), "over the total");
        drop(a1);
        assert!(b.reserve("c", 1, 10, 15).is_some(), "given back");
        assert!(
            b.reserve("a", 10, 10, 15).is_none(),
            "total still holds b's"
        );
    }
}
