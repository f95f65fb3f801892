//! Where decisions with conditions are evaluated: on the blocking pool, not
//! on the runtime workers that answer every other call, and at most a few
//! at a time per identity. An identity that sends costly calls waits for
//! its own slots (or is told the API is busy for it); other identities'
//! decisions keep their own slots and the runtime stays free.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bpf::lock;

/// Evaluations one identity may run at once.
const PER_IDENTITY: usize = 2;
/// Calls of one identity that may wait for a slot; more are refused.
const MAX_WAITING: usize = 32;
/// Longest wait for a slot before the call is refused.
const MAX_WAIT: Duration = Duration::from_secs(5);

struct IdentSlots {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
}

pub struct EvalSlots {
    /// All identities together (the blocking pool is shared).
    global: Arc<Semaphore>,
    idents: Mutex<HashMap<String, Arc<IdentSlots>>>,
}

/// Held while a decision is evaluated.
pub struct Slot {
    _identity: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Why no slot was given.
#[derive(Debug, thiserror::Error)]
#[error(
    "identity `{identity}` has {waiting} decisions waiting to be evaluated: too many at once (each identity evaluates at most {PER_IDENTITY} at a time)"
)]
pub struct Busy {
    pub identity: String,
    pub waiting: usize,
}

impl Default for EvalSlots {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            global: Arc::new(Semaphore::new((cores * 4).max(8))),
            idents: Mutex::new(HashMap::new()),
        }
    }
}

impl EvalSlots {
    pub async fn acquire(&self, identity: &str) -> Result<Slot, Busy> {
        let slots = lock(&self.idents)
            .entry(identity.to_string())
            .or_insert_with(|| {
                Arc::new(IdentSlots {
                    sem: Arc::new(Semaphore::new(PER_IDENTITY)),
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone();
        let busy = |waiting| Busy {
            identity: identity.to_string(),
            waiting,
        };
        let waiting = slots.waiting.fetch_add(1, Ordering::Relaxed);
        let _leave = Leave(&slots.waiting);
        if waiting >= MAX_WAITING {
            return Err(busy(waiting));
        }
        let own = tokio::time::timeout(MAX_WAIT, slots.sem.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| busy(waiting))?;
        // Per identity first: one identity never holds more than its own
        // slots of the global ones.
        let global = tokio::time::timeout(MAX_WAIT, self.global.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| busy(waiting))?;
        Ok(Slot {
            _identity: own,
            _global: global,
        })
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn an_identity_waits_for_its_own_slots_only() {
        let s = EvalSlots::default();
        let a1 = s.acquire("a").await.unwrap_or_else(|e| panic!("{e}"));
        let a2 = s.acquire("a").await.unwrap_or_else(|e| panic!("{e}"));
        // `a` is at its limit; `b` is not held up by it.
        let b = tokio::time::timeout(Duration::from_millis(100), s.acquire("b")).await;
        assert!(matches!(b, Ok(Ok(_))));
        let a3 = tokio::time::timeout(Duration::from_millis(100), s.acquire("a")).await;
        assert!(a3.is_err(), "a third slot for `a` waits");
        drop(a1);
        let a3 = tokio::time::timeout(Duration::from_millis(100), s.acquire("a")).await;
        assert!(matches!(a3, Ok(Ok(_))));
        drop(a2);
    }
}
