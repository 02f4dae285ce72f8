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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, rfc3339};
use keyfed_core::exchange::Side;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::backoff::Backoff;
use super::schedule::refresh_at;
use super::source::{FetchError, Source, fetch_within};
use crate::credential::Credential;
use crate::outputs::{Output, OutputError};

/// A credential handed out within this margin of its expiry could expire in the consumer's
/// hands; it counts as expired.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// A credential and when it is due for refresh.
#[derive(Debug)]
pub struct Issued {
    pub credential: Credential,
    pub refresh_at: SystemTime,
}

impl Issued {
    pub fn usable_at(&self, now: SystemTime) -> bool {
        now + EXPIRY_MARGIN < self.credential.expires_at()
    }
}

/// Why no credential can be handed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("target '{target}' has no credential yet: {reason}")]
    NotYet { target: String, reason: String },
    #[error(
        "target '{target}': the last credential expired at {expired}; the last refresh failed: {reason}"
    )]
    Expired {
        target: String,
        expired: String,
        reason: String,
    },
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

#[derive(Debug, Default)]
struct State {
    current: Option<Arc<Issued>>,
    attempts: u64,
    failures: u32,
    last_error: Option<FetchError>,
    retry_at: Option<SystemTime>,
    refreshing: bool,
    output_errors: Vec<String>,
    stats: Stats,
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
}

/// How one output is written: [`Output::write`], or a test's stand-in.
type WriteFn = dyn Fn(&Output, &Credential) -> Result<(), OutputError> + Send + Sync;

/// The output writer's queue: at most one credential waits, the newest handed over.
#[derive(Debug, Default)]
struct Writes {
    /// The newest credential not yet taken by the writer; its sequence number is `handed`.
    pending: Option<Arc<Issued>>,
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
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
    writes: Mutex<Writes>,
    /// The sequence number of the newest credential the writer is done with.
    written: watch::Sender<u64>,
    /// Set when a reload replaces this engine: it writes no more outputs, and its background
    /// loop stops.
    retired: watch::Sender<bool>,
    /// Callers waiting for a refresh (they had no usable credential).
    waiting: AtomicUsize,
}

/// Counts a caller waiting for a refresh for as long as it waits, even if it gives up.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
            clock,
            backoff,
            attempt_timeout,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
            writes: Mutex::new(Writes::default()),
            written: watch::Sender::new(0),
            retired: watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
        }
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

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writes(&self) -> MutexGuard<'_, Writes> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retires the engine when a reload replaces it: an in-flight refresh may still finish
    /// (and answer the callers waiting for it), but no output is written from now on and the
    /// background loop stops.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// How many callers wait for a refresh to end right now (tests: callers provably arrived
    /// during a refresh).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// A credential for a consumer: the current one whenever it is usable — refreshing it is
    /// the background loop's job, so a slow upstream never holds a consumer up while a good
    /// credential exists. Without one, the outcome of a refresh shared with every concurrent
    /// caller; during backoff no upstream call is made.
    pub async fn credential(self: &Arc<Self>) -> Result<Arc<Issued>, Unavailable> {
        let now = self.clock.now();
        // What the caller saw, and how many attempts had ended when it saw it, in one look: a
        // refresh ending after this look is one the caller shares rather than repeats.
        let (current, backing_off, seen) = {
            let s = self.lock();
            (
                s.current.clone(),
                s.retry_at.is_some_and(|t| now < t),
                s.attempts,
            )
        };
        if let Some(c) = current.as_ref().filter(|c| c.usable_at(now)) {
            return Ok(Arc::clone(c));
        }
        let reason = if backing_off {
            self.lock()
                .last_error
                .as_ref()
                .map(FetchError::to_string)
                .unwrap_or_default()
        } else {
            tracing::debug!(target = %self.name, "no usable credential: waiting for a refresh");
            let _waiting = Waiting::new(&self.waiting);
            match self.refresh_after(seen).await {
                Ok(fresh) => return Ok(fresh),
                Err(e) => e.to_string(),
            }
        };
        self.usable_or(reason)
    }

    /// The current credential if still usable, else why none is.
    fn usable_or(&self, reason: String) -> Result<Arc<Issued>, Unavailable> {
        let now = self.clock.now();
        match self.lock().current.clone() {
            Some(c) if c.usable_at(now) => Ok(c),
            Some(c) => Err(Unavailable::Expired {
                target: self.name.clone(),
                expired: rfc3339(c.credential.expires_at()),
                reason,
            }),
            None => Err(Unavailable::NotYet {
                target: self.name.clone(),
                reason,
            }),
        }
    }

    /// One refresh. Callers arriving while one is under way wait for it and share its outcome.
    /// The refresh runs as a task of its own, so a caller that gives up (an SDK timing out and
    /// closing its connection) cannot cancel it halfway and leave the next caller to start
    /// another upstream call. During backoff it makes no upstream call and returns the last
    /// error.
    pub async fn refresh(self: &Arc<Self>) -> Result<Arc<Issued>, FetchError> {
        let seen = self.lock().attempts;
        self.refresh_after(seen).await
    }

    /// A refresh for a caller that saw `seen` attempts ended: if another ends before this one
    /// gets its turn, its outcome is the caller's too.
    async fn refresh_after(self: &Arc<Self>, seen: u64) -> Result<Arc<Issued>, FetchError> {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.refresh_in_flight(seen).await })
            .await
            .unwrap_or_else(|e| Err(FetchError::passing(format!("the refresh task failed: {e}"))))
    }

    async fn refresh_in_flight(self: Arc<Self>, seen: u64) -> Result<Arc<Issued>, FetchError> {
        let _flight = self.flight.lock().await;
        {
            let mut s = self.lock();
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
        let span = tracing::info_span!("refresh", target = %self.name);
        let started = std::time::Instant::now();
        // The attempt runs as a task of its own so that a panic in it (a bug) ends as a failed
        // attempt — backoff, last error, `refreshing` cleared — not as a target stuck
        // "refreshing" that the background loop retries at once.
        let attempt = tokio::spawn({
            let me = Arc::clone(&self);
            async move { me.attempt().await }.instrument(span)
        });
        let outcome = match attempt.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => Err(FetchError::passing(
                "the refresh panicked (a bug in keyfed; the log above has the details)",
            )),
            Err(e) => Err(FetchError::passing(format!("the refresh task failed: {e}"))),
        };
        let mut s = self.lock();
        s.refreshing = false;
        s.attempts += 1;
        s.stats.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(issued) => {
                s.stats.refreshes_ok += 1;
                s.stats.last_success = Some(self.clock.now());
                s.failures = 0;
                s.retry_at = None;
                s.last_error = None;
                s.current = Some(Arc::clone(&issued));
                drop(s);
                // Handed over while the flight lock is held, so credentials reach the writer
                // in the order they were issued.
                self.hand_to_writer(&issued);
                Ok(issued)
            }
            Err(e) => {
                s.stats.refreshes_failed += 1;
                s.failures = s.failures.saturating_add(1);
                let now = self.clock.now();
                let delay = self.delay_after(&s, &e, now);
                s.retry_at = Some(now + delay);
                s.last_error = Some(e.clone());
                if e.stopped().is_some() {
                    tracing::error!(target = %self.name, retry_in = ?delay, "refresh failed: {e}");
                } else {
                    tracing::warn!(target = %self.name, retry_in = ?delay, "refresh failed: {e}");
                }
                Err(e)
            }
        }
    }

    /// How long to wait after the failure `e`, `s.failures` counting it. A stopped target waits
    /// the longest step whatever its credential's expiry: only a change elsewhere helps, and
    /// retrying sooner would only hammer the upstream with a request it refuses. Any other
    /// failure backs off exponentially, and sooner as the current credential's expiry nears
    /// (a source that passes on "fetch a fresh subject token" without doing so counts as that).
    fn delay_after(&self, s: &State, e: &FetchError, now: SystemTime) -> Duration {
        if e.stopped().is_some() {
            return self.backoff.stopped_delay(rand::random::<f64>());
        }
        let delay = self.backoff.delay(s.failures, rand::random::<f64>());
        match s.current.as_ref().filter(|c| c.usable_at(now)) {
            Some(c) => {
                let left = c
                    .credential
                    .expires_at()
                    .duration_since(now)
                    .unwrap_or_default();
                delay.min((left / 4).max(Duration::from_secs(1)))
            }
            None => delay,
        }
    }

    async fn attempt(&self) -> Result<Arc<Issued>, FetchError> {
        let started = std::time::Instant::now();
        let credential = fetch_within(&*self.source, self.attempt_timeout).await?;
        let now = self.clock.now();
        let expires = credential.expires_at();
        if now + EXPIRY_MARGIN >= expires {
            return Err(FetchError::passing(format!(
                "the new {} expires at {}, too soon to use (check the clocks)",
                credential.describe(),
                rfc3339(expires)
            )));
        }
        let jitter = rand::random::<f64>() * 0.2 - 0.1;
        let issued = Arc::new(Issued {
            refresh_at: refresh_at(now, expires, jitter, self.source.consumer_window()),
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
    fn hand_to_writer(self: &Arc<Self>, issued: &Arc<Issued>) {
        if self.outputs.is_empty() {
            return;
        }
        if self.is_retired() {
            tracing::debug!(target = %self.name, "retired by a reload: outputs left to the new configuration");
            return;
        }
        let start = {
            let mut w = self.writes();
            w.handed += 1;
            w.pending = Some(Arc::clone(issued));
            !std::mem::replace(&mut w.busy, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.drain_writes());
        }
    }

    /// The writer thread: writes queued credentials, newest only, until none is left.
    fn drain_writes(&self) {
        loop {
            let (seq, issued) = {
                let mut w = self.writes();
                match w.pending.take() {
                    Some(next) => (w.handed, next),
                    None => {
                        w.busy = false;
                        return;
                    }
                }
            };
            if let Some(errors) = self.write_outputs(&issued) {
                self.lock().output_errors = errors;
            }
            self.written.send_replace(seq);
        }
    }

    /// Writes every output with `issued`; `None` when it stopped early (the engine was
    /// retired, the credential expired in the meantime, or a newer one is waiting and will
    /// be written over it).
    fn write_outputs(&self, issued: &Issued) -> Option<Vec<String>> {
        let mut errors = Vec::new();
        for output in &self.outputs {
            if self.is_retired() {
                tracing::debug!(target = %self.name, "retired by a reload: outputs left to the new configuration");
                return None;
            }
            if self.writes().pending.is_some() {
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

    /// Takes over the state of the engine this one replaces on reload — credential, backoff,
    /// last error, output errors and counters — so a reload neither drops a valid credential,
    /// nor refreshes every target at once, nor cuts a failing target's backoff short. A stopped
    /// target is the exception: it is retried at once, since the change it waits for (a role's
    /// trust policy, a Keycloak client, a secret file) is what an operator reloads after.
    pub fn adopt(&self, previous: &TargetEngine) {
        let old = previous.lock();
        let mut s = self.lock();
        s.current = old.current.clone();
        s.failures = old.failures;
        s.last_error = old.last_error.clone();
        s.retry_at = match &old.last_error {
            Some(e) if e.stopped().is_some() => old.retry_at.map(|_| self.clock.now()),
            _ => old.retry_at,
        };
        s.output_errors = old.output_errors.clone();
        s.stats = old.stats.clone();
    }

    /// When the background loop should act next.
    fn due_at(&self) -> SystemTime {
        let s = self.lock();
        match (s.retry_at, &s.current) {
            (Some(retry), _) => retry,
            (None, Some(c)) => c.refresh_at,
            (None, None) => self.clock.now(),
        }
    }

    /// Keeps the target fresh until the task is dropped or the engine retired.
    pub async fn run(self: Arc<Self>) {
        let mut retired = self.retired.subscribe();
        while !self.is_retired() {
            let due = self.due_at();
            if self.clock.now() >= due {
                let _ = self.refresh().await;
            } else {
                tokio::select! {
                    () = self.clock.sleep_until(due) => {}
                    _ = retired.wait_for(|&r| r) => {}
                }
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = self.clock.now();
        let s = self.lock();
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
            output_errors: s.output_errors.clone(),
            stats: s.stats.clone(),
        }
    }
}
