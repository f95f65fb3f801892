//! Gateway requests and `Decide` calls go to the trail through the
//! per-identity record budget (`audit::fold`): a flood is counted, not
//! written line by line, and the counts reach the trail when each period
//! ends (and at shutdown).

use std::{sync::Arc, time::SystemTime};

use super::Daemon;
use crate::audit::AuditEvent;

impl Daemon {
    /// Record a call (a gateway request or a `Decide` decision): written
    /// now, or counted into its kind's aggregate record.
    pub fn record_call(&self, ev: AuditEvent) {
        if let Some(ev) = self.call_records.admit(ev, SystemTime::now()) {
            self.audit.emit(ev);
        }
    }

    /// Write the aggregate records of the periods that ended (of all, at
    /// shutdown).
    pub(super) fn flush_call_records(&self, all: bool) {
        for ev in self.call_records.drain(SystemTime::now(), all) {
            self.audit.emit(ev);
        }
    }

    /// Look for ended periods several times a period, so an aggregate
    /// record follows its period closely.
    pub(super) fn spawn_call_records(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = (self.call_records.period() / 4).max(std::time::Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                d.flush_call_records(false);
            }
        });
    }
}
