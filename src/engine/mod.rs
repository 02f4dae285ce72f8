//! The engine keeps every target fresh: one background task per target refreshes its
//! credential on schedule (`schedule.rs`), backs off after failures (`backoff.rs`), and lets
//! consumers ask for a credential at any time with one upstream call per refresh, and writes
//! outputs on a thread of its own (`target.rs`). Time comes from an injected clock; upstreams
//! from a [`Source`], whose failures carry advice: back off, or stop (retried only at the
//! longest backoff step, and at once on a reload) until the side they name changes. A target
//! holds its main credential and keyed variants of it ([`SlotKey`], `slot.rs`): those its
//! configuration names are kept fresh like the main one, those asked for on demand are cached,
//! bounded and refreshed only on demand; new ones are limited in rate, never evict one waiting
//! for its retry time, and are refused while the main credential is stopped on the Keycloak
//! side or keyfed's configuration.

mod backoff;
mod schedule;
mod slot;
mod source;
mod target;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

pub use backoff::Backoff;
pub use keyfed_core::exchange::SlotKey;
pub use schedule::{refresh_at, too_short_for_readers};
pub use slot::Slots;
pub use source::{Fetch, FetchError, Source, fetch_within};
#[cfg(test)]
pub use target::{EXPIRY_MARGIN, Phase};
pub use target::{Issued, LATENCY_BUCKETS, Snapshot, TargetEngine};

/// What the endpoint faces and `status` will read of the variants (issue 9 part 2: the GCE face
/// asks for scopes and audiences); until then only the engine's tests do.
#[cfg_attr(
    not(test),
    expect(
        unused_imports,
        reason = "the faces asking for variants come with Google Cloud"
    )
)]
pub use {
    slot::{SlotSnapshot, TooMany, UnknownSlot},
    target::Unavailable,
};

#[cfg(test)]
mod herd;
#[cfg(test)]
mod tests;

/// Every target's engine, by name.
#[derive(Debug)]
pub struct Engine {
    targets: BTreeMap<String, Arc<TargetEngine>>,
    /// Bumped by every target at each change of its state ([`Engine::changes`]).
    changes: watch::Sender<u64>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Engine {
    pub fn new(targets: Vec<TargetEngine>) -> Self {
        let changes = watch::Sender::new(0);
        Self {
            targets: targets
                .into_iter()
                .map(|t| {
                    let t = t.with_changes(changes.clone());
                    (t.name().to_owned(), Arc::new(t))
                })
                .collect(),
            changes,
        }
    }

    /// Changes whenever any target's state does — an attempt starts or ends, outputs are
    /// written, a reload hands a target its predecessor's state — so a watcher (readiness,
    /// systemd's STATUS=) wakes for changes instead of polling. Time alone changes how a
    /// target is judged only when its credential stops being usable
    /// ([`Snapshot::usable_until`]): a watcher that cares sleeps until then.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn target(&self, name: &str) -> Option<&Arc<TargetEngine>> {
        self.targets.get(name)
    }

    pub fn targets(&self) -> impl Iterator<Item = &Arc<TargetEngine>> {
        self.targets.values()
    }

    /// Starts one background task per target; they stop when the returned set is dropped.
    pub fn spawn(&self) -> tokio::task::JoinSet<()> {
        let mut set = tokio::task::JoinSet::new();
        for target in self.targets.values() {
            set.spawn(Arc::clone(target).run());
        }
        set
    }

    /// Retires every target when a reload replaces this engine: none writes outputs any more,
    /// and their background loops stop.
    pub fn retire(&self) {
        for target in self.targets.values() {
            target.retire();
        }
    }

    /// Completes once every target's outputs hold its latest credential (or failed to).
    pub async fn outputs_written(&self) {
        for target in self.targets.values() {
            target.outputs_written().await;
        }
    }

    /// Refreshes every target once — its main credential and the variants its outputs read —
    /// concurrently, and waits for their outputs to be written; returns each target's outcome.
    pub async fn refresh_all(&self) -> Vec<(String, Result<Arc<Issued>, FetchError>)> {
        let mut set = tokio::task::JoinSet::new();
        for target in self.targets.values() {
            let target = Arc::clone(target);
            set.spawn(async move {
                let outcome = target.refresh_with_variants().await;
                (target.name().to_owned(), outcome)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => outcomes.push((
                    "?".to_owned(),
                    Err(FetchError::passing(format!("the refresh task failed: {e}"))),
                )),
            }
        }
        self.outputs_written().await;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        outcomes
    }
}
