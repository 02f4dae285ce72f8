//! One target kept fresh: its current credential, a single-flight refresh (however many
//! callers want a credential during a refresh, one upstream call is made and all of them get
//! its outcome), backoff after failures, and the rule that a credential is never handed out or
//! written once expired. Written outputs are replaced only by a fresh credential.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, rfc3339};
use tracing::Instrument as _;

use super::backoff::Backoff;
use super::schedule::refresh_at;
use super::source::{FetchError, Source};
use crate::credential::Credential;
use crate::outputs::Output;

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

/// Where a target stands, for `keyfed status` and logs.
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
    pub last_error: Option<String>,
    pub output_errors: Vec<String>,
    pub stats: Stats,
}

/// The engine for one target.
#[derive(Debug)]
pub struct TargetEngine {
    name: String,
    source: Box<dyn Source>,
    outputs: Vec<Output>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    attempt_timeout: Duration,
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
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
            clock,
            backoff,
            attempt_timeout,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
        }
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

    /// A credential for a consumer: the current one whenever it is usable — refreshing it is
    /// the background loop's job, so a slow upstream never holds a consumer up while a good
    /// credential exists. Without one, the outcome of a refresh shared with every concurrent
    /// caller; during backoff no upstream call is made.
    pub async fn credential(self: &Arc<Self>) -> Result<Arc<Issued>, Unavailable> {
        let now = self.clock.now();
        let (current, backing_off) = {
            let s = self.lock();
            (s.current.clone(), s.retry_at.is_some_and(|t| now < t))
        };
        if let Some(c) = current.as_ref().filter(|c| c.usable_at(now)) {
            return Ok(Arc::clone(c));
        }
        let reason = if backing_off {
            self.lock()
                .last_error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default()
        } else {
            match self.refresh().await {
                Ok(fresh) => return Ok(fresh),
                Err(e) => e.message,
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
    /// another upstream call.
    pub async fn refresh(self: &Arc<Self>) -> Result<Arc<Issued>, FetchError> {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.refresh_in_flight().await })
            .await
            .unwrap_or_else(|e| {
                Err(FetchError {
                    message: format!("the refresh task failed: {e}"),
                })
            })
    }

    async fn refresh_in_flight(&self) -> Result<Arc<Issued>, FetchError> {
        let seen = self.lock().attempts;
        let _flight = self.flight.lock().await;
        {
            let s = self.lock();
            if s.attempts != seen {
                return match (&s.last_error, &s.current) {
                    (None, Some(current)) => Ok(Arc::clone(current)),
                    (Some(e), _) => Err(e.clone()),
                    (None, None) => Err(FetchError {
                        message: "no credential yet".to_owned(),
                    }),
                };
            }
        }
        self.lock().refreshing = true;
        let span = tracing::info_span!("refresh", target = %self.name);
        let started = std::time::Instant::now();
        let outcome = self.attempt().instrument(span).await;
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
                Ok(issued)
            }
            Err(e) => {
                s.stats.refreshes_failed += 1;
                s.failures = s.failures.saturating_add(1);
                let now = self.clock.now();
                let mut delay = self.backoff.delay(s.failures, rand::random::<f64>());
                // Retry sooner as the current credential's expiry nears.
                if let Some(c) = s.current.as_ref().filter(|c| c.usable_at(now)) {
                    let left = c
                        .credential
                        .expires_at()
                        .duration_since(now)
                        .unwrap_or_default();
                    delay = delay.min((left / 4).max(Duration::from_secs(1)));
                }
                s.retry_at = Some(now + delay);
                s.last_error = Some(e.clone());
                tracing::warn!(target = %self.name, retry_in = ?delay, "refresh failed: {e}");
                Err(e)
            }
        }
    }

    async fn attempt(&self) -> Result<Arc<Issued>, FetchError> {
        let started = std::time::Instant::now();
        let credential = tokio::time::timeout(self.attempt_timeout, self.source.fetch())
            .await
            .map_err(|_| FetchError {
                message: format!(
                    "no answer within {} s (attempt timeout)",
                    self.attempt_timeout.as_secs_f32()
                ),
            })??;
        let now = self.clock.now();
        let expires = credential.expires_at();
        if now + EXPIRY_MARGIN >= expires {
            return Err(FetchError {
                message: format!(
                    "the new {} expires at {}, too soon to use (check the clocks)",
                    credential.describe(),
                    rfc3339(expires)
                ),
            });
        }
        let jitter = rand::random::<f64>() * 0.2 - 0.1;
        let issued = Arc::new(Issued {
            refresh_at: refresh_at(now, expires, jitter, self.source.consumer_window()),
            credential,
        });
        let mut output_errors = Vec::new();
        for output in &self.outputs {
            if let Err(e) = output.write(&issued.credential) {
                tracing::error!(target = %self.name, "{e}");
                output_errors.push(e.to_string());
            }
        }
        self.lock().output_errors = output_errors;
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

    /// Takes over a credential (and counters) from the engine this one replaces on reload, so
    /// a reload neither drops a valid credential nor refreshes every target at once.
    pub fn adopt(&self, previous: &TargetEngine) {
        let old = previous.lock();
        let mut s = self.lock();
        s.current = old.current.clone();
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

    /// Keeps the target fresh until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            let due = self.due_at();
            if self.clock.now() >= due {
                let _ = self.refresh().await;
            } else {
                self.clock.sleep_until(due).await;
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
            last_error: s.last_error.as_ref().map(|e| e.message.clone()),
            output_errors: s.output_errors.clone(),
            stats: s.stats.clone(),
        }
    }
}
