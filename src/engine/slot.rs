//! A target's credentials, one per slot: its main credential (no key), the keyed variants its
//! configuration names ([`Slots::configured`]), and the variants local consumers ask for on
//! demand, kept in a cache of at most [`Slots::on_demand`] where the least recently used is
//! dropped ([`OnDemand`]). Each slot has a state of its own — credential, attempts, backoff,
//! last error, counters — and a single flight of its own, so a failing variant never touches
//! the main credential or another variant, and a slow one holds up no other. The refresh rules
//! are `target.rs`'s, the same for every slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::SlotKey;
use super::source::FetchError;
use super::target::{Issued, Snapshot, Stats};

/// How many variants asked for on demand a target keeps, unless its settings say otherwise.
pub const ON_DEMAND_SLOTS: usize = 32;

/// A target's variants besides its main credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// Variants kept fresh in the background like the main credential, from the target's
    /// configuration; every one must be a variant the target's cloud issues.
    pub configured: Vec<SlotKey>,
    /// How many variants asked for on demand are kept (at least one); beyond it the least
    /// recently used is dropped.
    pub on_demand: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            configured: Vec::new(),
            on_demand: ON_DEMAND_SLOTS,
        }
    }
}

/// A variant the target's cloud does not issue (every variant of AWS and of a bare token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target '{target}' has no credential for {slot}: its cloud issues none")]
pub struct UnknownSlot {
    pub target: String,
    pub slot: SlotKey,
}

/// One slot's state.
#[derive(Debug, Default)]
pub(super) struct State {
    pub current: Option<Arc<Issued>>,
    /// Attempts ended: a caller that saw this many shares the next one to end.
    pub attempts: u64,
    pub failures: u32,
    pub last_error: Option<FetchError>,
    pub retry_at: Option<SystemTime>,
    pub refreshing: bool,
    /// A refresh started for an on-demand slot whose credential is due but still served has
    /// not ended yet: however many consumers ask meanwhile, no second one is started.
    pub background: bool,
    pub stats: Stats,
}

/// One credential of a target and what keeps it: its state, its single flight, and the callers
/// waiting for it.
#[derive(Debug)]
pub(super) struct Slot {
    /// `None` for the main credential.
    pub key: Option<SlotKey>,
    state: Mutex<State>,
    /// Held by the refresh under way: one upstream call at a time for this slot.
    pub flight: tokio::sync::Mutex<()>,
    /// Callers waiting for a refresh (they had no usable credential).
    pub waiting: AtomicUsize,
}

impl Slot {
    pub fn new(key: Option<SlotKey>) -> Arc<Self> {
        Arc::new(Self {
            key,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes over what a reload must not lose from the slot this one replaces: credential,
    /// backoff, last error and counters. A stopped slot is retried at `now`: the reload may
    /// be the change it waits for.
    pub fn adopt(&self, old: &Slot, now: SystemTime) {
        let old = old.lock();
        let mut s = self.lock();
        s.current = old.current.clone();
        s.failures = old.failures;
        s.last_error = old.last_error.clone();
        s.retry_at = match &old.last_error {
            Some(e) if e.stopped().is_some() => old.retry_at.map(|_| now),
            _ => old.retry_at,
        };
        s.stats = old.stats.clone();
    }
}

/// Counts a caller waiting for a refresh for as long as it waits, even if it gives up.
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The variants asked for on demand, each with when it was last asked for; at most `bound`.
#[derive(Debug)]
pub(super) struct OnDemand {
    slots: HashMap<SlotKey, (Arc<Slot>, u64)>,
    /// Counts the asks, to order them.
    asked: u64,
    bound: usize,
    /// Variants dropped to stay within the bound.
    pub evictions: u64,
}

impl OnDemand {
    pub fn new(bound: usize) -> Self {
        Self {
            slots: HashMap::new(),
            asked: 0,
            bound: bound.max(1),
            evictions: 0,
        }
    }

    /// The slot for `key`, marked as the most recently asked for; a new one when there is
    /// none, dropping the least recently asked for beyond the bound. The keys dropped.
    pub fn ask(&mut self, key: &SlotKey) -> (Arc<Slot>, Vec<SlotKey>) {
        self.asked += 1;
        let asked = self.asked;
        if let Some((slot, last)) = self.slots.get_mut(key) {
            *last = asked;
            return (Arc::clone(slot), Vec::new());
        }
        let slot = Slot::new(Some(key.clone()));
        self.slots.insert(key.clone(), (Arc::clone(&slot), asked));
        (slot, self.trim())
    }

    /// Drops the least recently asked for beyond the bound (a linear look: the bound is small,
    /// and this runs only when a new variant arrives); the keys dropped.
    fn trim(&mut self) -> Vec<SlotKey> {
        let mut dropped = Vec::new();
        while self.slots.len() > self.bound {
            let oldest = self
                .slots
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(key, _)| key.clone());
            let Some(oldest) = oldest else { break };
            self.slots.remove(&oldest);
            self.evictions += 1;
            dropped.push(oldest);
        }
        dropped
    }

    /// Takes over the variants of the engine this one replaces on reload (those `keep` accepts),
    /// their order and the eviction count.
    pub fn adopt(&mut self, old: &OnDemand, now: SystemTime, keep: impl Fn(&SlotKey) -> bool) {
        for (key, (old_slot, last)) in &old.slots {
            if !keep(key) {
                continue;
            }
            let slot = Slot::new(Some(key.clone()));
            slot.adopt(old_slot, now);
            self.slots.insert(key.clone(), (slot, *last));
        }
        self.asked = self.asked.max(old.asked);
        self.evictions += old.evictions;
        self.trim();
    }

    pub fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.values().map(|(slot, _)| slot)
    }

    #[cfg(test)]
    pub fn get(&self, key: &SlotKey) -> Option<&Arc<Slot>> {
        self.slots.get(key).map(|(slot, _)| slot)
    }
}

/// A variant's state, for `keyfed status`.
#[derive(Debug, Clone)]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "`status` shows variants once a cloud has them")
)]
pub struct SlotSnapshot {
    pub key: SlotKey,
    /// Named by the target's configuration (refreshed in the background), not asked for on
    /// demand.
    pub configured: bool,
    /// The variant's own phase, expiry, last error and counters; the target's output errors
    /// and eviction count are in the target's snapshot, not here.
    pub state: Snapshot,
}
