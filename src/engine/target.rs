//! One target kept fresh: its current credential, a single-flight refresh (however many
//! callers want a credential during a refresh, one upstream call is made and all of them get
//! its outcome), backoff after failures (which no caller can shorten), and the rule that a
//! credential is never handed out or written once expired.
//!
//! A failure whose advice is to stop (the configuration, the issuer or the cloud must change)
//! leaves the target stopped: it is retried only after the longest backoff step, whoever asks,
//! and at once when a reload hands it to a new engine — the reload may be the change it needs.
//!
//! Outputs are written on a blocking thread of their own, after the credential is published and
//! outside the single-flight lock, so a slow or stuck file (a merge lock held by someone else)
//! delays neither consumers nor the next refresh. One writer per target takes the newest
//! credential handed to it: files are replaced only by a fresh credential and never go back to
//! an older one. An engine retired by a reload writes nothing more.
//!
//! A target holds its main credential and keyed variants of it ("slots": scopes, ID-token
//! audiences, resources; `slot.rs`), each under the rules above with a state and a single
//! flight of its own, so a failing variant leaves the main credential alone and the other way
//! round. Variants named by the target's configuration are refreshed in the background like the
//! main credential. A variant a consumer asks for on demand ([`TargetEngine::credential_for`])
//! is fetched on the first ask (concurrent askers share the one upstream call) and cached; it
//! is refreshed only on demand, never by the background loop: a consumer asking once it is due
//! is served the cached credential at once while one refresh runs behind it, and one nobody
//! asks for again simply expires where it lies, costing no upstream call. At most
//! [`Slots::on_demand`] variants are kept; beyond that the least recently asked for one that
//! holds nothing worth keeping is dropped (counted in [`Snapshot::slot_evictions`]), and a
//! dropped variant is fetched anew if asked for again. A variant the target's cloud does not
//! issue (any variant of AWS or of a bare token) is refused at once
//! ([`Unavailable::UnknownSlot`]), with no upstream call. Outputs are written from the main
//! credential only.
//!
//! Local consumers choose the variants they ask for, so new ones are held within bounds before
//! any upstream call (`slot.rs` has the rules): at most
//! [`NEW_VARIANTS_PER_MINUTE`](super::slot::NEW_VARIANTS_PER_MINUTE) a minute, never by
//! dropping a variant that is being fetched or waits for its retry time (so a stopped variant
//! is still retried only at the longest backoff step, however many others are asked for), and
//! refused otherwise ([`Unavailable::TooManyVariants`]). And while the main credential is
//! stopped on the Keycloak side or keyfed's configuration, a new variant is refused at once
//! with the main credential's error ([`Unavailable::NotYet`]): it would need the same Keycloak
//! token, and asking again would only repeat a request known to be refused. A stop on the cloud
//! side holds no variant back — the cloud may refuse one set of scopes or one resource and
//! grant another. Variants already cached are served under their own rules in both cases.

use std::collections::BTreeMap;
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, rfc3339};
use keyfed_core::exchange::Side;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::SlotKey;
use super::backoff::Backoff;
use super::schedule::{
    due, first_attempt, jitter, refresh_at, refresh_for_readers, too_short_for,
    too_short_for_readers,
};
use super::slot::{OnDemand, Slot, SlotSnapshot, Slots, State, TooMany, UnknownSlot, Waiting};
use super::source::{FetchError, Source, fetch_slot_within};
use crate::credential::Credential;
use crate::outputs::{Output, OutputError};

/// A credential handed out within this margin of its expiry could expire in the consumer's
/// hands; it counts as expired.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// The one rule for whether a credential expiring at `expires` may be handed out at `now`:
/// before [`usable_until`].
pub fn usable(expires: SystemTime, now: SystemTime) -> bool {
    usable_until(expires).is_some_and(|until| now < until)
}

/// When a credential expiring at `expires` stops being usable: [`EXPIRY_MARGIN`] before it
/// expires (`None` only for a time too early to subtract from, never usable).
pub fn usable_until(expires: SystemTime) -> Option<SystemTime> {
    expires.checked_sub(EXPIRY_MARGIN)
}

/// A credential and when it is due for refresh.
#[derive(Debug)]
pub struct Issued {
    pub credential: Credential,
    pub refresh_at: SystemTime,
}

impl Issued {
    pub fn usable_at(&self, now: SystemTime) -> bool {
        usable(self.credential.expires_at(), now)
    }
}

/// Why no credential can be handed out. `slot` names the variant asked for (`None`: the main
/// credential).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("target '{target}'{} has no credential yet: {reason}", for_slot(.slot.as_ref()))]
    NotYet {
        target: String,
        slot: Option<SlotKey>,
        reason: String,
    },
    #[error(
        "target '{target}'{}: the last credential expired at {expired}; the last refresh failed: {reason}",
        for_slot(.slot.as_ref())
    )]
    Expired {
        target: String,
        slot: Option<SlotKey>,
        expired: String,
        reason: String,
    },
    /// A variant the target's cloud does not issue: a refusal, not an outage.
    #[error(transparent)]
    UnknownSlot(#[from] UnknownSlot),
    /// A new on-demand variant refused to keep the upstream calls local consumers can cause
    /// within bounds: a refusal for now, not an outage; asking again later can succeed.
    #[error("target '{target}' ({slot}): not fetched: {why}; retry later")]
    TooManyVariants {
        target: String,
        slot: SlotKey,
        why: TooMany,
    },
}

/// " (scopes …)" after a target's name for a variant; nothing for the main credential.
fn for_slot(slot: Option<&SlotKey>) -> String {
    slot.map(|s| format!(" ({s})")).unwrap_or_default()
}

/// Where a target stands, for `keyfed status` and logs. A stopped target is backing off (or
/// expired) with [`Snapshot::stopped`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Fresh,
    Refreshing,
    BackingOff,
    Expired,
}

impl Phase {
    /// How bad the phase is for the target's consumers, to show the worst of several slots:
    /// fresh, refreshing, backing off (a usable credential still served), then none usable.
    fn severity(self) -> u8 {
        match self {
            Self::Fresh => 0,
            Self::Refreshing => 1,
            Self::BackingOff => 2,
            Self::Pending => 3,
            Self::Expired => 4,
        }
    }
}

/// Upper bounds (seconds) of the upstream latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Counters for /metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub refreshes_ok: u64,
    pub refreshes_failed: u64,
    pub last_success: Option<SystemTime>,
    /// Count of attempts at or under each of [`LATENCY_BUCKETS`] (cumulative), then all attempts.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    pub latency_count: u64,
    pub latency_sum: f64,
}

impl Stats {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.latency_buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.latency_count += 1;
        self.latency_sum += seconds;
    }
}

/// A snapshot of a target's state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: Phase,
    pub expires_at: Option<SystemTime>,
    pub next_refresh: Option<SystemTime>,
    /// The last error as shown everywhere ("stopped: needs a change on …: …" when stopped).
    pub last_error: Option<String>,
    /// Which side must change, while the last attempt's advice is to stop.
    pub stopped: Option<Side>,
    pub output_errors: Vec<String>,
    pub stats: Stats,
    /// On-demand variants dropped to stay within the bound, since the target started
    /// (`keyfed_slot_evictions_total`).
    pub slot_evictions: u64,
}

/// How a snapshot is judged, the same everywhere it is shown (`keyfed status`, `/readyz`, the
/// metrics, systemd's STATUS= and readiness).
impl Snapshot {
    /// Whether the target holds a credential that may be handed out at `now` (every variant
    /// its configuration names included): what `/readyz` and `keyfed_target_up` call ready.
    pub fn usable_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|e| usable(e, now))
    }

    /// When [`Snapshot::usable_at`] turns false with no refresh meanwhile (`None` without a
    /// credential): the one change in how a target is judged that time alone brings.
    pub fn usable_until(&self) -> Option<SystemTime> {
        self.expires_at.and_then(usable_until)
    }

    /// The state's name as `keyfed status` shows it; a stopped target is backing off (or
    /// expired) with the side that must change named.
    pub fn state(&self) -> &'static str {
        match (self.phase, self.stopped) {
            (Phase::Refreshing, _) => "refreshing",
            (Phase::BackingOff | Phase::Expired, Some(_)) => "stopped",
            (Phase::Pending, _) => "pending",
            (Phase::Fresh, _) => "fresh",
            (Phase::BackingOff, None) => "backing off",
            (Phase::Expired, None) => "expired",
        }
    }

    /// Whether the target's first attempt has ended, well or not (readiness waits for it).
    pub fn attempted(&self) -> bool {
        self.last_error.is_some() || !matches!(self.phase, Phase::Pending | Phase::Refreshing)
    }
}

/// How one output is written: [`Output::write`], or a test's stand-in.
type WriteFn = dyn Fn(&Output, &Credential) -> Result<(), OutputError> + Send + Sync;

/// The output writer's queue: at most one credential waits per slot with outputs, the newest
/// handed over.
#[derive(Debug, Default)]
struct Writes {
    /// Credentials not yet taken by the writer, oldest first: each slot's newest, with its
    /// sequence number.
    pending: Vec<(u64, Option<SlotKey>, Arc<Issued>)>,
    /// The sequence number of the newest credential handed over.
    handed: u64,
    /// Whether a blocking thread is writing (it takes whatever is pending before it stops).
    busy: bool,
}

/// The engine for one target.
pub struct TargetEngine {
    name: String,
    source: Box<dyn Source>,
    outputs: Vec<Output>,
    write: Box<WriteFn>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    attempt_timeout: Duration,
    /// When the background loop first asks for a slot holding nothing (`[engine]
    /// start_jitter`; consumers asking sooner are served at once). A reload's engine takes
    /// over its predecessor's, so a reload in the start window pushes no turn back.
    first_at: Mutex<SystemTime>,
    /// The main credential, the one the outputs are written from.
    main: Arc<Slot>,
    /// Variants named by the configuration, refreshed in the background like the main one.
    configured: Vec<Arc<Slot>>,
    /// Variants asked for on demand, at most [`Slots::on_demand`].
    on_demand: Mutex<OnDemand>,
    /// Each slot's outputs the last credential could not be written to, and why.
    output_errors: Mutex<BTreeMap<Option<SlotKey>, Vec<String>>>,
    writes: Mutex<Writes>,
    /// The sequence number of the newest credential the writer is done with.
    written: watch::Sender<u64>,
    /// Set when a reload replaces this engine: it writes no more outputs, and its background
    /// loop stops.
    retired: watch::Sender<bool>,
    /// Counts changes of the state snapshots show (an attempt starting or ending, outputs
    /// written), shared by the targets of one [`super::Engine`]: readiness and systemd's
    /// STATUS= wait for it instead of polling.
    changes: watch::Sender<u64>,
    /// Tests: a refresh that made its credential current waits for this to be true before it
    /// goes on.
    #[cfg(test)]
    after_current: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for TargetEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetEngine")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("outputs", &self.outputs)
            .field("retired", &self.is_retired())
            .finish_non_exhaustive()
    }
}

impl TargetEngine {
    pub fn new(
        name: String,
        source: Box<dyn Source>,
        outputs: Vec<Output>,
        clock: Arc<dyn Clock>,
        backoff: Backoff,
        attempt_timeout: Duration,
    ) -> Self {
        Self {
            name,
            source,
            outputs,
            write: Box::new(Output::write),
            first_at: Mutex::new(clock.now()),
            clock,
            backoff,
            attempt_timeout,
            main: Slot::new(None),
            configured: Vec::new(),
            on_demand: Mutex::new(OnDemand::new(Slots::default().on_demand)),
            output_errors: Mutex::new(BTreeMap::new()),
            writes: Mutex::new(Writes::default()),
            written: watch::Sender::new(0),
            retired: watch::Sender::new(false),
            changes: watch::Sender::new(0),
            #[cfg(test)]
            after_current: None,
        }
    }

    /// Counts this target's changes in `changes` (one counter for all of an engine's targets).
    pub(super) fn with_changes(mut self, changes: watch::Sender<u64>) -> Self {
        self.changes = changes;
        self
    }

    /// Says that the state snapshots show has changed.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Makes a refresh that made its credential current wait for `gate` to be true (tests:
    /// what others see at that moment).
    #[cfg(test)]
    pub fn pausing_after_current(mut self, gate: watch::Receiver<bool>) -> Self {
        self.after_current = Some(gate);
        self
    }

    /// Gives the target its variants: those to keep fresh in the background, and the bound on
    /// those asked for on demand. Refuses a configured variant the target's cloud does not
    /// issue; one named twice is kept once.
    pub fn with_slots(mut self, slots: Slots) -> Result<Self, UnknownSlot> {
        let mut configured: Vec<Arc<Slot>> = Vec::new();
        for key in slots.configured {
            if !self.source.has_slot(&key) {
                return Err(UnknownSlot {
                    target: self.name.clone(),
                    slot: key,
                });
            }
            if !configured.iter().any(|s| s.key.as_ref() == Some(&key)) {
                configured.push(Slot::new(Some(key)));
            }
        }
        self.configured = configured;
        self.on_demand = Mutex::new(OnDemand::new(slots.on_demand));
        Ok(self)
    }

    /// Makes the background loop wait a random part of `start_jitter` before it first asks for
    /// a slot that holds nothing (`[engine] start_jitter`: a fleet restarted together must not
    /// reach Keycloak in the same second). A slot holding a credential or a retry time, a
    /// consumer asking, and `keyfed once` never wait for it; only the daemon's first build
    /// draws it, never a reload (see `sources::Start`).
    pub fn with_start_jitter(self, start_jitter: Duration) -> Self {
        *self.first_at() = first_attempt(self.clock.now(), start_jitter, rand::random::<f64>());
        self
    }

    /// Writes outputs with `write` instead of [`Output::write`] (tests: a write that blocks).
    #[cfg(test)]
    pub fn with_output_writer(
        mut self,
        write: impl Fn(&Output, &Credential) -> Result<(), OutputError> + Send + Sync + 'static,
    ) -> Self {
        self.write = Box::new(write);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    fn on_demand(&self) -> MutexGuard<'_, OnDemand> {
        self.on_demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn output_errors(&self) -> MutexGuard<'_, BTreeMap<Option<SlotKey>, Vec<String>>> {
        self.output_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn writes(&self) -> MutexGuard<'_, Writes> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn first_at(&self) -> MutexGuard<'_, SystemTime> {
        self.first_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the background loop first asks for a slot holding nothing (tests of reloads).
    #[cfg(test)]
    pub fn first_attempt_at(&self) -> SystemTime {
        *self.first_at()
    }

    /// Retires the engine when a reload replaces it: an in-flight refresh may still finish
    /// (and answer the callers waiting for it), but no output is written from now on and the
    /// background loop stops.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// How many callers wait for a refresh of the main credential to end right now (tests:
    /// callers provably arrived during a refresh).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.main.waiting.load(Ordering::SeqCst)
    }

    /// The same for the variant `key`, configured or on demand.
    #[cfg(test)]
    pub fn waiting_for(&self, key: &SlotKey) -> usize {
        self.configured
            .iter()
            .find(|s| s.key.as_ref() == Some(key))
            .cloned()
            .or_else(|| self.on_demand().get(key).cloned())
            .map_or(0, |s| s.waiting.load(Ordering::SeqCst))
    }

    fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// Whether the configuration names the variant `key` (an output is written from it).
    pub fn keeps(&self, key: &SlotKey) -> bool {
        self.configured.iter().any(|s| s.key.as_ref() == Some(key))
    }

    /// The main credential for a consumer: [`TargetEngine::credential_for`] with no slot.
    #[cfg(test)]
    pub async fn credential(self: &Arc<Self>) -> Result<Arc<Issued>, Unavailable> {
        self.credential_for(None).await
    }

    /// A credential for a consumer: the main one (`slot` is `None`) or the variant `slot`. The
    /// current one whenever it is usable — refreshing it is the background loop's job (for an
    /// on-demand variant, a refresh started behind the consumer once it is due), so a slow
    /// upstream never holds a consumer up while a good credential exists. Without one, the
    /// outcome of a refresh shared with every concurrent caller; during backoff no upstream
    /// call is made. A variant the target's cloud does not issue is refused at once.
    pub async fn credential_for(
        self: &Arc<Self>,
        slot: Option<&SlotKey>,
    ) -> Result<Arc<Issued>, Unavailable> {
        let Some(key) = slot else {
            return self.serve(&self.main, false).await;
        };
        if let Some(configured) = self.configured.iter().find(|s| s.key.as_ref() == Some(key)) {
            return self.serve(configured, false).await;
        }
        if !self.source.has_slot(key) {
            return Err(UnknownSlot {
                target: self.name.clone(),
                slot: key.clone(),
            }
            .into());
        }
        let (slot, dropped) = {
            let mut on_demand = self.on_demand();
            match on_demand.cached(key) {
                Some(slot) => (slot, None),
                None => {
                    if let Some(stop) = self.stop_holding_variants_back() {
                        drop(on_demand);
                        tracing::debug!(target = %self.name, slot = %key, "new variant refused: the main credential is stopped");
                        return Err(Unavailable::NotYet {
                            target: self.name.clone(),
                            slot: Some(key.clone()),
                            reason: stop.to_string(),
                        });
                    }
                    match on_demand.admit(key, self.clock.now()) {
                        Ok(admitted) => admitted,
                        Err(why) => {
                            drop(on_demand);
                            tracing::debug!(target = %self.name, slot = %key, "new variant refused: {why}");
                            return Err(Unavailable::TooManyVariants {
                                target: self.name.clone(),
                                slot: key.clone(),
                                why,
                            });
                        }
                    }
                }
            }
        };
        if let Some(dropped) = dropped {
            tracing::info!(target = %self.name, slot = %dropped, "dropped the least recently asked for on-demand credential to stay within the bound");
        }
        self.serve(&slot, true).await
    }

    /// The main credential for a consumer that keeps what it gets without asking again
    /// (`keyfed exec` and `keyfed env` put it in an environment): [`TargetEngine::credential_for`],
    /// refreshed first when it has less than `wanted` left AND is past its refresh time — the
    /// background loop is late (backing off after failures, or the host was asleep). The
    /// second condition caps `wanted` by the credential's own lifetime: one the schedule will
    /// refresh soon enough (`schedule::refresh_at`) is never refreshed early here, however
    /// short-lived. The refresh is shared with any under way and makes no upstream call during
    /// backoff; when it fails, the credential held is still handed out while usable (the
    /// caller says how long it has left).
    pub async fn credential_lasting(
        self: &Arc<Self>,
        wanted: Duration,
    ) -> Result<Arc<Issued>, Unavailable> {
        let issued = self.credential_for(None).await?;
        let now = self.clock.now();
        let left = issued
            .credential
            .expires_at()
            .duration_since(now)
            .unwrap_or_default();
        if left >= wanted || now < issued.refresh_at {
            return Ok(issued);
        }
        tracing::debug!(target = %self.name, left_s = left.as_secs(), "refreshing for a consumer that keeps the credential");
        match self.refresh().await {
            Ok(fresh) => Ok(fresh),
            Err(e) => {
                tracing::debug!(target = %self.name, "refresh for a consumer that keeps the credential failed: {e}");
                self.usable_or(&self.main, e.to_string())
            }
        }
    }

    /// The main credential's error while it is stopped on a side every variant shares — the
    /// Keycloak side or keyfed's configuration — so a new variant would be refused the same.
    fn stop_holding_variants_back(&self) -> Option<FetchError> {
        let s = self.main.lock();
        s.last_error
            .as_ref()
            .filter(|e| matches!(e.stopped(), Some(Side::Issuer | Side::Config)))
            .cloned()
    }

    /// `slot`'s credential for a consumer; `on_demand`: start a refresh behind the consumer
    /// when the credential served is due (no background loop keeps such a slot).
    async fn serve(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        on_demand: bool,
    ) -> Result<Arc<Issued>, Unavailable> {
        let now = self.clock.now();
        // What the caller saw, and how many attempts had ended when it saw it, in one look: a
        // refresh ending after this look is one the caller shares rather than repeats.
        let (current, backing_off, seen) = {
            let s = slot.lock();
            (
                s.current.clone(),
                s.retry_at.is_some_and(|t| now < t),
                s.attempts,
            )
        };
        if let Some(c) = current.as_ref().filter(|c| c.usable_at(now)) {
            if on_demand && now >= c.refresh_at && !backing_off {
                self.refresh_behind(slot, seen);
            }
            return Ok(Arc::clone(c));
        }
        let reason = if backing_off {
            slot.lock()
                .last_error
                .as_ref()
                .map(FetchError::to_string)
                .unwrap_or_default()
        } else {
            tracing::debug!(target = %self.name, slot = %SlotName(slot), "no usable credential: waiting for a refresh");
            let _waiting = Waiting::new(&slot.waiting);
            match self.refresh_after(slot, seen).await {
                Ok(fresh) => return Ok(fresh),
                Err(e) => e.to_string(),
            }
        };
        self.usable_or(slot, reason)
    }

    /// Starts a refresh of `slot` that no consumer waits for, unless one started so is still
    /// under way: a burst of consumers asking for a due credential starts one.
    fn refresh_behind(self: &Arc<Self>, slot: &Arc<Slot>, seen: u64) {
        if std::mem::replace(&mut slot.lock().background, true) {
            return;
        }
        let me = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            let _ = me.refresh_after(&slot, seen).await;
            slot.lock().background = false;
        });
    }

    /// `slot`'s current credential if still usable, else why none is.
    fn usable_or(&self, slot: &Slot, reason: String) -> Result<Arc<Issued>, Unavailable> {
        let now = self.clock.now();
        let current = slot.lock().current.clone();
        match current {
            Some(c) if c.usable_at(now) => Ok(c),
            Some(c) => Err(Unavailable::Expired {
                target: self.name.clone(),
                slot: slot.key.clone(),
                expired: rfc3339(c.credential.expires_at()),
                reason,
            }),
            None => Err(Unavailable::NotYet {
                target: self.name.clone(),
                slot: slot.key.clone(),
                reason,
            }),
        }
    }

    /// One refresh of the main credential. Callers arriving while one is under way wait for it
    /// and share its outcome. The refresh runs as a task of its own, so a caller that gives up
    /// (an SDK timing out and closing its connection) cannot cancel it halfway and leave the
    /// next caller to start another upstream call. During backoff it makes no upstream call
    /// and returns the last error.
    pub async fn refresh(self: &Arc<Self>) -> Result<Arc<Issued>, FetchError> {
        let seen = self.main.lock().attempts;
        self.refresh_after(&self.main, seen).await
    }

    /// One refresh of the main credential, then of each variant the configuration names (those
    /// outputs are written from), for `keyfed once`: the main credential, or the first failure,
    /// a variant's naming it.
    pub async fn refresh_with_variants(self: &Arc<Self>) -> Result<Arc<Issued>, FetchError> {
        let main = self.refresh().await?;
        for slot in &self.configured {
            let seen = slot.lock().attempts;
            if let Err(e) = self.refresh_after(slot, seen).await {
                let key = slot
                    .key
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Err(FetchError {
                    message: format!("{key}: {}", e.message),
                    ..e
                });
            }
        }
        Ok(main)
    }

    /// A refresh of `slot` for a caller that saw `seen` attempts ended: if another ends before
    /// this one gets its turn, its outcome is the caller's too.
    async fn refresh_after(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        seen: u64,
    ) -> Result<Arc<Issued>, FetchError> {
        let me = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move { me.refresh_in_flight(slot, seen).await })
            .await
            .unwrap_or_else(|e| Err(FetchError::passing(format!("the refresh task failed: {e}"))))
    }

    async fn refresh_in_flight(
        self: Arc<Self>,
        slot: Arc<Slot>,
        seen: u64,
    ) -> Result<Arc<Issued>, FetchError> {
        let _flight = slot.flight.lock().await;
        {
            let mut s = slot.lock();
            if s.attempts != seen {
                return match (&s.last_error, &s.current) {
                    (None, Some(current)) => Ok(Arc::clone(current)),
                    (Some(e), _) => Err(e.clone()),
                    (None, None) => Err(FetchError::passing("no credential yet")),
                };
            }
            // Nothing reaches the upstream sooner than the backoff allows, whoever asks.
            if s.retry_at.is_some_and(|t| self.clock.now() < t) {
                return Err(s
                    .last_error
                    .clone()
                    .unwrap_or_else(|| FetchError::passing("backing off after a failed refresh")));
            }
            s.refreshing = true;
        }
        self.changed();
        let span = match &slot.key {
            None => tracing::info_span!("refresh", target = %self.name),
            Some(key) => tracing::info_span!("refresh", target = %self.name, slot = %key),
        };
        let started = std::time::Instant::now();
        // The attempt runs as a task of its own so that a panic in it (a bug) ends as a failed
        // attempt — backoff, last error, `refreshing` cleared — not as a target stuck
        // "refreshing" that the background loop retries at once.
        let attempt = tokio::spawn({
            let me = Arc::clone(&self);
            let slot = Arc::clone(&slot);
            async move { me.attempt(&slot).await }.instrument(span.clone())
        });
        let outcome = match attempt.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => Err(FetchError::passing(
                "the refresh panicked (a bug in keyfed; the log above has the details)",
            )),
            Err(e) => Err(FetchError::passing(format!("the refresh task failed: {e}"))),
        };
        let settled = self.settle(&slot, outcome, started, &span);
        #[cfg(test)]
        if settled.is_ok()
            && let Some(gate) = &self.after_current
        {
            let _ = gate.clone().wait_for(|&open| open).await;
        }
        settled
    }

    /// Records how an attempt on `slot` that began at `started` ended: its credential made
    /// current and handed to the writer, or its failure and when to retry.
    fn settle(
        self: &Arc<Self>,
        slot: &Slot,
        outcome: Result<Arc<Issued>, FetchError>,
        started: std::time::Instant,
        span: &tracing::Span,
    ) -> Result<Arc<Issued>, FetchError> {
        let mut s = slot.lock();
        s.refreshing = false;
        s.attempts += 1;
        s.stats.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(issued) => {
                if s.current.is_none() {
                    self.warn_if_too_short(slot, &issued);
                }
                s.stats.refreshes_ok += 1;
                s.stats.last_success = Some(self.clock.now());
                s.failures = 0;
                s.retry_at = None;
                s.last_error = None;
                s.current = Some(Arc::clone(&issued));
                // Handed over while the flight lock is held, so credentials reach the writer
                // in the order they were issued; and while the slot's lock is, so whoever sees
                // the credential current also finds it counted in `handed`: `outputs_written`
                // (READY=1) waits for its files.
                self.hand_to_writer(slot.key.as_ref(), &issued);
                drop(s);
                self.changed();
                Ok(issued)
            }
            Err(e) => {
                s.stats.refreshes_failed += 1;
                s.failures = s.failures.saturating_add(1);
                let now = self.clock.now();
                let delay = self.delay_after(&s, &e, now);
                s.retry_at = Some(now + delay);
                s.last_error = Some(e.clone());
                drop(s);
                self.changed();
                span.in_scope(|| {
                    if e.stopped().is_some() {
                        tracing::error!(target = %self.name, retry_in = ?delay, "refresh failed: {e}");
                    } else {
                        tracing::warn!(target = %self.name, retry_in = ?delay, "refresh failed: {e}");
                    }
                });
                Err(e)
            }
        }
    }

    /// Says once per slot, at its first credential, when that credential lives too short for
    /// its consumers' window: only the issuer's (or the cloud's) settings can change that.
    fn warn_if_too_short(&self, slot: &Slot, issued: &Issued) {
        let lifetime = issued
            .credential
            .expires_at()
            .duration_since(self.clock.now())
            .unwrap_or_default();
        let (window, short) = match &slot.key {
            Some(SlotKey::SubjectToken) => {
                let window = self.source.subject_window();
                (window, too_short_for_readers(lifetime, window))
            }
            _ => {
                let window = self.source.consumer_window();
                (window, too_short_for(lifetime, window))
            }
        };
        if short {
            tracing::warn!(
                target = %self.name,
                slot = %SlotName(slot),
                "the {} lives {} s, too short for its consumers, who ask for a new one {} s before \
                 it expires: keyfed refreshes it at 2/3 of its life instead; lengthen it (for a \
                 Keycloak token, the client's Access Token Lifespan)",
                issued.credential.describe(),
                lifetime.as_secs(),
                window.as_secs()
            );
        }
    }

    /// How long to wait after the failure `e`, `s.failures` counting it, by
    /// [`Backoff::after_failure`]: a stopped target waits the longest step whatever its
    /// credential's expiry; any other failure backs off exponentially, and sooner as the current
    /// credential's expiry nears (a source that passes on "fetch a fresh subject token" without
    /// doing so counts as that).
    fn delay_after(&self, s: &State, e: &FetchError, now: SystemTime) -> Duration {
        let usable_left = s.current.as_ref().filter(|c| c.usable_at(now)).map(|c| {
            c.credential
                .expires_at()
                .duration_since(now)
                .unwrap_or_default()
        });
        self.backoff.after_failure(
            s.failures,
            e.stopped().is_some(),
            usable_left,
            rand::random::<f64>(),
        )
    }

    async fn attempt(&self, slot: &Slot) -> Result<Arc<Issued>, FetchError> {
        let started = std::time::Instant::now();
        let credential =
            fetch_slot_within(&*self.source, slot.key.as_ref(), self.attempt_timeout).await?;
        let now = self.clock.now();
        let expires = credential.expires_at();
        if !usable(expires, now) {
            return Err(FetchError::passing(format!(
                "the new {} expires at {}, too soon to use (check the clocks)",
                credential.describe(),
                rfc3339(expires)
            )));
        }
        let jitter = jitter(rand::random::<f64>());
        let issued = Arc::new(Issued {
            refresh_at: match &slot.key {
                // The subject token's readers keep it for a while: keep their window.
                Some(SlotKey::SubjectToken) => {
                    refresh_for_readers(now, expires, jitter, self.source.subject_window())
                }
                _ => refresh_at(now, expires, jitter, self.source.consumer_window()),
            },
            credential,
        });
        tracing::info!(
            target = %self.name,
            credential = %issued.credential.describe(),
            expires = %rfc3339(expires),
            next_refresh = %rfc3339(issued.refresh_at),
            took_ms = started.elapsed().as_millis() as u64,
            "refreshed"
        );
        Ok(issued)
    }

    /// Queues `issued` for the outputs, replacing any older credential still waiting, and
    /// starts the writer thread unless it is running (it takes the queued credential when it
    /// is done with the one in hand).
    fn hand_to_writer(self: &Arc<Self>, key: Option<&SlotKey>, issued: &Arc<Issued>) {
        if !self.outputs.iter().any(|o| o.kind.slot().as_ref() == key) {
            return;
        }
        if self.is_retired() {
            tracing::debug!(target = %self.name, "retired by a reload: outputs left to the new configuration");
            return;
        }
        let start = {
            let mut w = self.writes();
            w.handed += 1;
            let seq = w.handed;
            w.pending.retain(|(_, k, _)| k.as_ref() != key);
            w.pending.push((seq, key.cloned(), Arc::clone(issued)));
            !std::mem::replace(&mut w.busy, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.drain_writes());
        }
    }

    /// The writer thread: writes queued credentials, oldest first and each slot's newest
    /// only, until none is left.
    fn drain_writes(&self) {
        loop {
            let (key, issued) = {
                let mut w = self.writes();
                if w.pending.is_empty() {
                    w.busy = false;
                    return;
                }
                let (_, key, issued) = w.pending.remove(0);
                (key, issued)
            };
            if let Some(errors) = self.write_outputs(key.as_ref(), &issued) {
                self.output_errors().insert(key, errors);
            }
            // Everything handed over before the oldest credential still waiting is written.
            let done = {
                let w = self.writes();
                w.pending.first().map_or(w.handed, |(seq, _, _)| seq - 1)
            };
            self.written.send_replace(done);
            self.changed();
        }
    }

    /// Writes the outputs of `key`'s slot with `issued`; `None` when it stopped early (the
    /// engine was retired, the credential expired in the meantime, or a newer one of the slot
    /// is waiting and will be written over it).
    fn write_outputs(&self, key: Option<&SlotKey>, issued: &Issued) -> Option<Vec<String>> {
        let mut errors = Vec::new();
        for output in self
            .outputs
            .iter()
            .filter(|o| o.kind.slot().as_ref() == key)
        {
            if self.is_retired() {
                tracing::debug!(target = %self.name, "retired by a reload: outputs left to the new configuration");
                return None;
            }
            if self
                .writes()
                .pending
                .iter()
                .any(|(_, k, _)| k.as_ref() == key)
            {
                return None;
            }
            if !issued.usable_at(self.clock.now()) {
                tracing::warn!(target = %self.name, "the credential expired before its outputs could be written");
                return None;
            }
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (self.write)(output, &issued.credential)
            }));
            let error = match written {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "writing the {} output {} panicked (a bug in keyfed)",
                    output.name,
                    output.path.display()
                ),
            };
            tracing::error!(target = %self.name, "{error}");
            errors.push(error);
        }
        Some(errors)
    }

    /// Completes once every credential handed to the outputs so far has been written (or
    /// passed over for a newer one); `keyfed once` waits for it before reporting.
    pub async fn outputs_written(&self) {
        let handed = self.writes().handed;
        let _ = self
            .written
            .subscribe()
            .wait_for(|&written| written >= handed)
            .await;
    }

    /// Takes over the state of the engine this one replaces on reload — every slot's
    /// credential, backoff, last error and counters, the on-demand variants still issued, and
    /// the output errors — so a reload neither drops a valid credential, nor refreshes every
    /// target at once, nor cuts a failing target's backoff short. A stopped slot is the
    /// exception: it is retried at once, since the change it waits for (a role's trust policy,
    /// a Keycloak client, a secret file) is what an operator reloads after. A target still
    /// waiting its start-jitter turn keeps the time it drew.
    pub fn adopt(&self, previous: &TargetEngine) {
        let now = self.clock.now();
        let previous_first_at = *previous.first_at();
        *self.first_at() = previous_first_at;
        self.main.adopt(&previous.main, now);
        let old_on_demand = previous.on_demand();
        for slot in &self.configured {
            let old = previous
                .configured
                .iter()
                .chain(old_on_demand.slots())
                .find(|old| old.key == slot.key);
            if let Some(old) = old {
                slot.adopt(old, now);
            }
        }
        self.on_demand().adopt(&old_on_demand, now, |key| {
            self.source.has_slot(key)
                && !self.configured.iter().any(|s| s.key.as_ref() == Some(key))
        });
        drop(old_on_demand);
        *self.output_errors() = previous.output_errors().clone();
        self.changed();
    }

    /// When the background loop should act next for `slot`.
    fn due_at(&self, slot: &Slot) -> SystemTime {
        let s = slot.lock();
        due(
            s.retry_at,
            s.current.as_ref().map(|c| c.refresh_at),
            *self.first_at(),
        )
    }

    /// Keeps the main credential and every configured variant fresh until the task is dropped
    /// or the engine retired; on-demand variants are left to their consumers.
    pub async fn run(self: Arc<Self>) {
        // Dropped with this task, which aborts the variants' loops with it.
        let mut variants = tokio::task::JoinSet::new();
        for slot in &self.configured {
            variants.spawn(Arc::clone(&self).keep_fresh(Arc::clone(slot)));
        }
        Arc::clone(&self).keep_fresh(Arc::clone(&self.main)).await;
        while variants.join_next().await.is_some() {}
    }

    /// One slot's background loop: refreshes it when due, until the engine is retired.
    async fn keep_fresh(self: Arc<Self>, slot: Arc<Slot>) {
        let mut retired = self.retired.subscribe();
        while !self.is_retired() {
            let due = self.due_at(&slot);
            if self.clock.now() >= due {
                let seen = slot.lock().attempts;
                let _ = self.refresh_after(&slot, seen).await;
            } else {
                tokio::select! {
                    () = self.clock.sleep_until(due) => {}
                    _ = retired.wait_for(|&r| r) => {}
                }
            }
        }
    }

    /// The main credential's state, the output errors and the eviction count.
    /// The target's state as `status`, `/readyz` and the metrics show it: the main credential's,
    /// made worse by any variant the configuration names (outputs are written from those too, so
    /// a failing subject token is the target's failure even while the main credential is fresh):
    /// the worst phase, the earliest expiry and next refresh, and the main credential's error or
    /// else the first failing variant's, named.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.snapshot_of(&self.main);
        for slot in &self.configured {
            let variant = self.snapshot_of(slot);
            if variant.phase.severity() > snapshot.phase.severity() {
                snapshot.phase = variant.phase;
            }
            snapshot.expires_at = match (snapshot.expires_at, variant.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
            snapshot.next_refresh = match (snapshot.next_refresh, variant.next_refresh) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if snapshot.last_error.is_none()
                && let Some(error) = variant.last_error
            {
                snapshot.last_error = Some(format!("{}: {error}", SlotName(slot)));
                snapshot.stopped = variant.stopped;
            }
        }
        snapshot.output_errors = self.output_errors().values().flatten().cloned().collect();
        snapshot.slot_evictions = self.on_demand().evictions;
        snapshot
    }

    /// On-demand variants dropped to stay within the bound (`keyfed_slot_evictions_total`).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the metric comes with the endpoint's rework")
    )]
    pub fn slot_evictions(&self) -> u64 {
        self.on_demand().evictions
    }

    /// Every variant's state: the configured ones in their order, then those asked for on
    /// demand, by key.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "`status` shows variants once a cloud has them")
    )]
    pub fn slot_snapshots(&self) -> Vec<SlotSnapshot> {
        let on_demand: Vec<Arc<Slot>> = self.on_demand().slots().cloned().collect();
        let mut on_demand: Vec<SlotSnapshot> = on_demand
            .iter()
            .filter_map(|slot| self.slot_snapshot(slot, false))
            .collect();
        on_demand.sort_by(|a, b| a.key.cmp(&b.key));
        self.configured
            .iter()
            .filter_map(|slot| self.slot_snapshot(slot, true))
            .chain(on_demand)
            .collect()
    }

    fn slot_snapshot(&self, slot: &Slot, configured: bool) -> Option<SlotSnapshot> {
        Some(SlotSnapshot {
            key: slot.key.clone()?,
            configured,
            state: self.snapshot_of(slot),
        })
    }

    fn snapshot_of(&self, slot: &Slot) -> Snapshot {
        let now = self.clock.now();
        let s = slot.lock();
        let usable = s.current.as_ref().is_some_and(|c| c.usable_at(now));
        let phase = if s.refreshing {
            Phase::Refreshing
        } else if s.current.is_some() && !usable {
            Phase::Expired
        } else if s.retry_at.is_some() {
            Phase::BackingOff
        } else if s.current.is_some() {
            Phase::Fresh
        } else {
            Phase::Pending
        };
        Snapshot {
            phase,
            expires_at: s.current.as_ref().map(|c| c.credential.expires_at()),
            next_refresh: s.retry_at.or(s.current.as_ref().map(|c| c.refresh_at)),
            last_error: s.last_error.as_ref().map(FetchError::to_string),
            stopped: s.last_error.as_ref().and_then(FetchError::stopped),
            output_errors: Vec::new(),
            stats: s.stats.clone(),
            slot_evictions: 0,
        }
    }
}

/// How a slot reads in a log line: "main", or its key.
struct SlotName<'a>(&'a Slot);

impl std::fmt::Display for SlotName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.key {
            None => f.write_str("main"),
            Some(key) => key.fmt(f),
        }
    }
}
