//! When `keyfed run` tells systemd READY=1 (`[engine] ready`), and keeping systemd's start
//! timeout from killing a slow but progressing first round.
//!
//! Units ordered `After=keyfed.service` start once READY=1 is sent, so by default it waits for
//! every target's first attempt and the outputs it wrote ("all"); "any" waits for one target
//! with a usable credential and its outputs (or every first attempt, whichever comes first);
//! "immediately" does not wait at all (see `commands/run.rs`).
//!
//! The first round is bounded: a target's first attempt starts within `start_jitter`, ends
//! within `attempt_timeout` (Keycloak and the cloud together), and readiness waits at most
//! [`FIRST_WRITES`] more for its outputs. Within that budget keyfed sends
//! `EXTEND_TIMEOUT_USEC` every [`EXTEND_EVERY`], each granting [`EXTEND_BY`], so systemd's
//! `TimeoutStartSec=` (90 s by default) does not kill a start that is still within it — a
//! long `start_jitter` on a fleet, a slow Keycloak. Once the budget is spent keyfed stops
//! extending, and systemd's own timeout applies again (it fires at the earliest
//! [`EXTEND_BY`] later, and only if `TimeoutStartSec=` has passed too).

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::Clock;
use tokio::time::Instant;

use crate::config::{EngineSettings, Ready};
use crate::engine::{Engine, TargetEngine};

/// How long readiness waits for the first round's output files: writes run on threads of
/// their own and a stuck one (a merge lock held by someone else) must not hold READY=1 back.
pub const FIRST_WRITES: Duration = Duration::from_secs(10);

/// How often the start timeout is extended while the first round runs.
pub const EXTEND_EVERY: Duration = Duration::from_secs(2);

/// How much each extension grants: more than [`EXTEND_EVERY`], so a late tick (a loaded host
/// at boot) does not let the timeout fire between two extensions.
pub const EXTEND_BY: Duration = Duration::from_secs(5);

/// The longest an honest first round takes under `settings`: the start jitter, one attempt,
/// and the wait for its outputs.
pub fn budget(settings: &EngineSettings) -> Duration {
    settings.start_jitter + settings.attempt_timeout + FIRST_WRITES
}

/// Completes once `policy` says keyfed is ready (at once for [`Ready::Immediately`]),
/// extending systemd's start timeout meanwhile, for at most `budget` from now.
pub async fn wait(engine: &Engine, policy: Ready, budget: Duration, clock: &dyn Clock) {
    if policy == Ready::Immediately {
        return;
    }
    // The extensions end with this future: none is sent once readiness is reached.
    tokio::select! {
        () = settled(engine, policy, clock) => {}
        () = extend(budget) => {}
    }
}

/// Sends `EXTEND_TIMEOUT_USEC` every [`EXTEND_EVERY`] until `budget` is spent; never completes.
async fn extend(budget: Duration) {
    let spent = Instant::now() + budget;
    while Instant::now() < spent {
        super::notify(&format!("EXTEND_TIMEOUT_USEC={}", EXTEND_BY.as_micros()));
        tokio::time::sleep(EXTEND_EVERY).await;
    }
    std::future::pending::<()>().await;
}

/// Waits for the targets `policy` needs, then (for a while) for their outputs. It looks again
/// at each change of the engine's state, not on a timer: only a change can make it ready.
async fn settled(engine: &Engine, policy: Ready, clock: &dyn Clock) {
    let mut changes = engine.changes();
    let first: Option<Arc<TargetEngine>> = loop {
        changes.borrow_and_update();
        let now = clock.now();
        if policy == Ready::Any
            && let Some(t) = engine.targets().find(|t| t.snapshot().usable_at(now))
        {
            break Some(Arc::clone(t));
        }
        if engine.targets().all(|t| t.snapshot().attempted()) {
            break None;
        }
        if changes.changed().await.is_err() {
            // No target can change any more (cannot happen while `engine` is borrowed).
            break None;
        }
    };
    let written = async {
        match &first {
            Some(target) => target.outputs_written().await,
            None => engine.outputs_written().await,
        }
    };
    if tokio::time::timeout(FIRST_WRITES, written).await.is_err() {
        tracing::warn!("some outputs are still being written; ready without them");
    }
}

#[cfg(test)]
mod tests;
