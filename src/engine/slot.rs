//! A target's credentials, one per slot: its main credential (no key), the keyed variants its
//! configuration names ([`Slots::configured`]), and the variants local consumers ask for on
//! demand, kept in a cache of at most [`Slots::on_demand`] ([`OnDemand`]). Each slot has a state
//! of its own — credential, attempts, backoff, last error, counters — and a single flight of its
//! own, so a failing variant never touches the main credential or another variant, and a slow
//! one holds up no other. The refresh rules are `target.rs`'s, the same for every slot.
//!
//! A local consumer names the variants it asks for, so the cache also bounds what a local user
//! can make keyfed ask upstream for (every new variant costs a Keycloak token and a cloud call):
//! - At most [`NEW_VARIANTS_PER_MINUTE`] new variants a minute start a first fetch, per target
//!   (a token bucket on the engine's clock holding as many, refilled evenly over the minute).
//!   Past it a new variant is refused ([`TooMany::PerMinute`]) with no upstream call; variants
//!   already cached are served as ever.
//! - A full cache makes room by dropping the least recently asked for variant that holds
//!   nothing worth keeping. A variant whose fetch is under way or waited for, or whose retry
//!   time is still ahead (backing off or stopped), keeps its place: dropped and asked for again
//!   it would start a second fetch, or be retried before its time. When every cached variant is
//!   such, a new one is refused ([`TooMany::AllBusy`]) instead. This was chosen over keeping a
//!   record of dropped variants' retry times: nothing outlives its slot, so there is no second
//!   bound to keep, and a cache full of failing variants is the case where refusing is right.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::SlotKey;
use super::source::FetchError;
use super::target::{Issued, Snapshot, Stats};

/// How many variants asked for on demand a target keeps, unless its settings say otherwise.
pub const ON_DEMAND_SLOTS: usize = 32;

/// How many new on-demand variants a target starts a first fetch for in a minute (and at once,
/// after a quiet minute); past it a new variant is refused.
pub const NEW_VARIANTS_PER_MINUTE: u32 = 10;

/// The clock time one new variant costs the token bucket: a minute shared evenly.
const NEW_VARIANT_COST: Duration = Duration::from_millis(60_000 / NEW_VARIANTS_PER_MINUTE as u64);

/// The bucket's capacity, as clock time: a minute's worth of new variants.
const NEW_VARIANT_BURST: Duration = Duration::from_secs(60);

/// A target's variants besides its main credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// Variants kept fresh in the background like the main credential, from the target's
    /// configuration; every one must be a variant the target's cloud issues.
    pub configured: Vec<SlotKey>,
    /// How many variants asked for on demand are kept (at least one); beyond it the least
    /// recently used one that holds nothing worth keeping is dropped (`slot.rs`).
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

/// Why a new on-demand variant is refused, with no upstream call: keyfed keeps what a local
/// consumer can make it ask upstream for within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    /// More new variants were asked for than [`NEW_VARIANTS_PER_MINUTE`].
    #[error("more than {limit} new variants were asked for within a minute")]
    PerMinute { limit: u32 },
    /// Every variant kept is being fetched, or waits out a failure before its retry; dropping
    /// one would lose its place in line.
    #[error("all {kept} variants kept are being fetched or waiting to be retried")]
    AllBusy { kept: usize },
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

    /// Whether dropping this slot from the cache would lose something: a fetch under way or
    /// waited for (asked for again, the variant would start a second one beside it), or a
    /// retry time still ahead (asked for again, it would be retried before its time).
    fn holds_its_place(&self, now: SystemTime) -> bool {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let s = self.lock();
        s.refreshing || s.background || s.retry_at.is_some_and(|t| now < t)
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
    /// Limits how many new variants start a first fetch.
    bucket: Bucket,
}

impl OnDemand {
    pub fn new(bound: usize) -> Self {
        Self {
            slots: HashMap::new(),
            asked: 0,
            bound: bound.max(1),
            evictions: 0,
            bucket: Bucket::default(),
        }
    }

    /// The cached slot for `key`, marked as the most recently asked for.
    pub fn cached(&mut self, key: &SlotKey) -> Option<Arc<Slot>> {
        let asked = self.asked + 1;
        let (slot, last) = self.slots.get_mut(key)?;
        *last = asked;
        self.asked = asked;
        Some(Arc::clone(slot))
    }

    /// A new slot for `key`, which is not cached, marked as the most recently asked for; at the
    /// bound it takes the place of the least recently asked for slot that can give its place up
    /// (the key dropped is returned). Refused, changing nothing, when none can or when the
    /// bucket is empty.
    ///
    /// The new slot counts as refreshing from the start: its asker starts its first fetch right
    /// after this (`TargetEngine::credential_for`), and until then it must not be dropped for
    /// another new variant.
    pub fn admit(
        &mut self,
        key: &SlotKey,
        now: SystemTime,
    ) -> Result<(Arc<Slot>, Option<SlotKey>), TooMany> {
        let dropped = if self.slots.len() >= self.bound {
            let victim = self.least_recent(now, false).ok_or(TooMany::AllBusy {
                kept: self.slots.len(),
            })?;
            Some(victim)
        } else {
            None
        };
        if !self.bucket.take(now) {
            return Err(TooMany::PerMinute {
                limit: NEW_VARIANTS_PER_MINUTE,
            });
        }
        if let Some(victim) = &dropped {
            self.slots.remove(victim);
            self.evictions += 1;
        }
        let slot = Slot::new(Some(key.clone()));
        slot.lock().refreshing = true;
        self.asked += 1;
        self.slots
            .insert(key.clone(), (Arc::clone(&slot), self.asked));
        Ok((slot, dropped))
    }

    /// The least recently asked for slot that can give its place up or, when `any`, the least
    /// recently asked for of all if none can (a linear look: the bound is small, and this runs
    /// only when a new variant arrives).
    fn least_recent(&self, now: SystemTime, any: bool) -> Option<SlotKey> {
        let oldest = |free: bool| {
            self.slots
                .iter()
                .filter(|(_, (slot, _))| !free || !slot.holds_its_place(now))
                .min_by_key(|(_, (_, last))| *last)
                .map(|(key, _)| key.clone())
        };
        oldest(true).or_else(|| if any { oldest(false) } else { None })
    }

    /// Takes over the variants of the engine this one replaces on reload (those `keep` accepts),
    /// their order, the eviction count and the bucket. A smaller bound than before drops the
    /// least recently asked for, those that can give their place up first: the bound holds.
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
        self.bucket = old.bucket;
        while self.slots.len() > self.bound {
            let Some(victim) = self.least_recent(now, true) else {
                break;
            };
            self.slots.remove(&victim);
            self.evictions += 1;
        }
    }

    pub fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.values().map(|(slot, _)| slot)
    }

    #[cfg(test)]
    pub fn get(&self, key: &SlotKey) -> Option<&Arc<Slot>> {
        self.slots.get(key).map(|(slot, _)| slot)
    }
}

/// A token bucket of new variants, kept as clock time: each new variant costs
/// [`NEW_VARIANT_COST`], and the credit grows with the clock up to [`NEW_VARIANT_BURST`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    credit: Duration,
    /// The latest time the credit was brought up to; `None` before the first new variant. A
    /// clock stepping back adds nothing, and time is not counted twice when it steps forward
    /// again.
    at: Option<SystemTime>,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            credit: NEW_VARIANT_BURST,
            at: None,
        }
    }
}

impl Bucket {
    /// Takes one new variant's cost at `now`; false, changing nothing but the credit earned,
    /// when the credit falls short.
    fn take(&mut self, now: SystemTime) -> bool {
        if let Some(at) = self.at {
            let earned = now.duration_since(at).unwrap_or_default();
            self.credit = self.credit.saturating_add(earned).min(NEW_VARIANT_BURST);
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
        match self.credit.checked_sub(NEW_VARIANT_COST) {
            Some(left) => {
                self.credit = left;
                true
            }
            None => false,
        }
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
