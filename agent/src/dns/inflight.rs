//! Queries waiting on the upstream, counted per identity. One identity may
//! have at most its quota in flight; a new query beyond it cancels that
//! identity's own oldest one (which answers SERVFAIL), so a flood of slow
//! lookups never holds the proxy's upstream slots or memory for the others.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::oneshot;

use crate::bpf::lock;

#[derive(Default)]
struct Queue {
    /// (ticket id, how to cancel it), oldest first.
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// Per-identity queues of queries in flight.
#[derive(Default)]
pub struct InFlight {
    queues: Mutex<HashMap<u32, Queue>>,
    next: AtomicU64,
    /// Queries cancelled to make room for a newer one of the same identity.
    pub evicted: AtomicU64,
}

/// One query in flight; leaving the queue when dropped.
pub struct Ticket {
    owner: Arc<InFlight>,
    index: u32,
    id: u64,
    /// Fires when a newer query of the same identity took this one's place.
    pub cancelled: oneshot::Receiver<()>,
}

impl InFlight {
    /// Admit a query of identity `index`, cancelling its oldest beyond
    /// `quota`.
    pub fn admit(self: &Arc<Self>, index: u32, quota: usize) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut queues = lock(&self.queues);
        let q = queues.entry(index).or_default();
        while q.waiting.len() >= quota.max(1) {
            let Some((_, cancel)) = q.waiting.pop_front() else {
                break;
            };
            self.evicted.fetch_add(1, Ordering::Relaxed);
            let _ = cancel.send(());
        }
        q.waiting.push_back((id, tx));
        Ticket {
            owner: self.clone(),
            index,
            id,
            cancelled: rx,
        }
    }

    /// Queries of `index` in flight now.
    pub fn waiting(&self, index: u32) -> usize {
        lock(&self.queues)
            .get(&index)
            .map_or(0, |q| q.waiting.len())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut queues = lock(&self.owner.queues);
        if let Some(q) = queues.get_mut(&self.index) {
            q.waiting.retain(|(id, _)| *id != self.id);
            if q.waiting.is_empty() {
                queues.remove(&self.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_of_the_same_identity_makes_room() {
        let f = Arc::new(InFlight::default());
        let other = f.admit(2, 2);
        let mut a1 = f.admit(1, 2);
        let mut a2 = f.admit(1, 2);
        assert_eq!(f.waiting(1), 2);
        let a3 = f.admit(1, 2);
        assert!(a1.cancelled.try_recv().is_ok(), "the oldest is cancelled");
        assert!(a2.cancelled.try_recv().is_err(), "the next one is not");
        assert_eq!((f.waiting(1), f.waiting(2)), (2, 1));
        drop(a1);
        assert_eq!(f.waiting(1), 2, "a cancelled ticket already left");
        drop((a2, a3));
        assert_eq!(f.waiting(1), 0);
        assert_eq!(f.evicted.load(Ordering::Relaxed), 1);
        drop(other);
        assert_eq!(f.waiting(2), 0);
    }
}
