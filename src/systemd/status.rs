//! The `STATUS=` line `systemctl status` shows for `keyfed run`: one short line summing up the
//! targets from the engine's snapshots, judged as `keyfed status` and `/readyz` judge them
//! ([`Snapshot::usable_at`], [`Snapshot::attempted`]):
//!
//! - `starting: 1 of 3 targets done` until keyfed is ready;
//! - `3 targets fresh, next refresh 12:41Z` when all is well;
//! - `2 of 3 targets fresh; aws-prod failing since 12:03Z (retry 12:05Z)` when not: the target
//!   in trouble longest is named (`stopped (needs a change on cloud)` for a stopped one,
//!   `serving until …` while its last credential is still handed out), the others counted;
//! - `reloading` and `stopping`, sent by `commands/run.rs` with `RELOADING=1` and `STOPPING=1`.
//!
//! Only names, counts, sides and times (UTC, to the minute): the upstream's own words and any
//! path stay in `keyfed status` and the log. The line is computed when something it depends on
//! changes — a target's state ([`crate::engine::Engine::changes`]), a reload's new engine, the
//! first credential to stop being usable ([`Snapshot::usable_until`], the one change time alone
//! brings) — and sent only when it changed. Looks are at least [`RUNNING_TICK`] apart
//! ([`STARTING_TICK`] while starting), so a burst of refreshes costs at most one datagram per
//! tick; an idle daemon does not wake at all. When a target got into trouble is not in the
//! engine's state: the reporter notes when it first saw it so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, rfc3339};
use tokio::sync::{Notify, watch};

use crate::engine::Snapshot;
use crate::served::Served;

/// The shortest time between two looks at the targets while keyfed starts.
pub const STARTING_TICK: Duration = Duration::from_millis(250);

/// The same once keyfed is ready.
pub const RUNNING_TICK: Duration = Duration::from_secs(1);

/// Keeps systemd's `STATUS=` up to date for as long as it lives.
pub struct Reporter {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How assignments reach systemd: [`super::notify`], or a test's stand-in.
type SendFn = dyn Fn(&str) + Send + Sync;

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    send: Box<SendFn>,
    /// Tests: how many times the reporter looked at the targets.
    #[cfg(test)]
    looks: std::sync::atomic::AtomicU64,
}

struct State {
    mode: Mode,
    /// The last line sent, to send only changes.
    last: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Starting,
    Running,
    /// The caller said what keyfed is doing (`reloading`, `stopping`): no summary overwrites it.
    Held,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reporter {
    /// Starts reporting on whatever `current` serves; does nothing when systemd does not
    /// listen.
    pub fn start(current: watch::Receiver<Arc<Served>>, clock: Arc<dyn Clock>) -> Self {
        let listening = super::listening();
        if !listening {
            tracing::debug!(
                "NOTIFY_SOCKET is not set: no notifications to systemd, no status reporter"
            );
        }
        Self::with(listening, Box::new(super::notify), current, clock)
    }

    /// [`Reporter::start`] sending with `send`, reporting only when `listening`.
    fn with(
        listening: bool,
        send: Box<SendFn>,
        current: watch::Receiver<Arc<Served>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Starting,
                last: None,
            }),
            wake: Notify::new(),
            send,
            #[cfg(test)]
            looks: std::sync::atomic::AtomicU64::new(0),
        });
        let task = listening.then(|| {
            tracing::debug!("reporting the targets to systemd (STATUS=)");
            let shared = Arc::clone(&shared);
            tokio::spawn(report(shared, current, clock))
        });
        Self { shared, task }
    }

    /// Sends `assignments` (`READY=1`) and lets the summary follow at once.
    pub fn running(&self, assignments: &str) {
        let mut state = self.shared.state();
        (self.shared.send)(assignments);
        state.mode = Mode::Running;
        state.last = None;
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Sends `assignments` (`RELOADING=1`, `STOPPING=1`) with `STATUS=status` in one datagram,
    /// and sends no summary until [`Reporter::running`].
    pub fn hold(&self, assignments: &str, status: &str) {
        let mut state = self.shared.state();
        (self.shared.send)(&format!("{assignments}\nSTATUS={status}"));
        state.mode = Mode::Held;
        state.last = Some(status.to_owned());
    }

    /// Tests: how many times the reporter has looked at the targets.
    #[cfg(test)]
    fn looks(&self) -> u64 {
        self.shared.looks.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn report(
    shared: Arc<Shared>,
    mut current: watch::Receiver<Arc<Served>>,
    clock: Arc<dyn Clock>,
) {
    let mut board = Board::default();
    let mut served = Arc::clone(&current.borrow_and_update());
    let mut changes = served.engine.changes();
    // Once the daemon drops its end (it is stopping), no new engine comes.
    let mut reloads = true;
    loop {
        #[cfg(test)]
        shared
            .looks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        changes.borrow_and_update();
        let targets: Vec<(String, Snapshot)> = served
            .engine
            .targets()
            .map(|t| (t.name().to_owned(), t.snapshot()))
            .collect();
        let now = clock.now();
        board.track(&targets, now);
        let tick = {
            let mut state = shared.state();
            let line = match state.mode {
                Mode::Starting => Some(starting(&targets)),
                Mode::Running => Some(board.line(&targets, now)),
                Mode::Held => None,
            };
            if let Some(line) = line
                && state.last.as_ref() != Some(&line)
            {
                // Sent under the lock: a `hold` cannot be overtaken by an older summary.
                (shared.send)(&format!("STATUS={line}"));
                state.last = Some(line);
            }
            match state.mode {
                Mode::Starting => STARTING_TICK,
                Mode::Running | Mode::Held => RUNNING_TICK,
            }
        };
        let next_look = tokio::time::Instant::now() + tick;
        // The one change time alone brings: the first credential to stop being usable.
        let unusable = targets
            .iter()
            .filter_map(|(_, s)| s.usable_until())
            .filter(|&until| until > now)
            .min();
        let expiry = async {
            match unusable {
                Some(until) => clock.sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // `running` wants the summary at once.
            () = shared.wake.notified() => continue,
            _ = changes.changed() => {}
            reloaded = current.changed(), if reloads => match reloaded {
                Ok(()) => {
                    served = Arc::clone(&current.borrow_and_update());
                    changes = served.engine.changes();
                }
                Err(_) => reloads = false,
            },
            () = expiry => {}
        }
        // A burst of changes makes one look per tick.
        tokio::select! {
            () = tokio::time::sleep_until(next_look) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// `starting: 1 of 3 targets done`.
pub fn starting(targets: &[(String, Snapshot)]) -> String {
    let done = targets.iter().filter(|(_, s)| s.attempted()).count();
    format!("starting: {done} of {} done", targets_word(targets.len()))
}

/// When each target in trouble was first seen so.
#[derive(Debug, Default)]
pub struct Board {
    since: BTreeMap<String, SystemTime>,
}

/// How a target stands, as the line counts it.
enum Standing {
    Fresh,
    /// No credential yet (or an expired one) and no error: its attempt is under way or due.
    Pending,
    Trouble,
}

fn standing(s: &Snapshot, now: SystemTime) -> Standing {
    if s.last_error.is_some() || !s.output_errors.is_empty() {
        Standing::Trouble
    } else if s.usable_at(now) {
        Standing::Fresh
    } else {
        Standing::Pending
    }
}

impl Board {
    /// Notes which targets are in trouble at `now`, and forgets those that no longer are.
    pub fn track(&mut self, targets: &[(String, Snapshot)], now: SystemTime) {
        self.since.retain(|name, _| {
            targets
                .iter()
                .any(|(n, s)| n == name && matches!(standing(s, now), Standing::Trouble))
        });
        for (name, s) in targets {
            if matches!(standing(s, now), Standing::Trouble) {
                self.since.entry(name.clone()).or_insert(now);
            }
        }
    }

    /// The summary line for `targets` at `now` (after [`Board::track`]).
    pub fn line(&self, targets: &[(String, Snapshot)], now: SystemTime) -> String {
        let total = targets.len();
        if total == 0 {
            return "no targets configured".to_owned();
        }
        let mut fresh = 0usize;
        let mut pending = 0usize;
        let mut trouble: Vec<(&String, &Snapshot)> = Vec::new();
        for (name, s) in targets {
            match standing(s, now) {
                Standing::Fresh => fresh += 1,
                Standing::Pending => pending += 1,
                Standing::Trouble => trouble.push((name, s)),
            }
        }
        if fresh == total {
            let next = targets.iter().filter_map(|(_, s)| s.next_refresh).min();
            let mut line = format!("{} fresh", targets_word(total));
            if let Some(next) = next {
                line.push_str(&format!(", next refresh {}", minute(next)));
            }
            return line;
        }
        let mut line = format!("{fresh} of {} fresh", targets_word(total));
        // The target in trouble longest, then by name.
        trouble.sort_by_key(|(name, _)| (self.since.get(*name).copied().unwrap_or(now), *name));
        if let Some((name, s)) = trouble.first() {
            let what = match (s.stopped, &s.last_error) {
                (Some(side), _) => format!("stopped (needs a change on {side})"),
                (None, Some(_)) => "failing".to_owned(),
                (None, None) => "failing to write outputs".to_owned(),
            };
            let since = self.since.get(*name).copied().unwrap_or(now);
            line.push_str(&format!("; {name} {what} since {}", minute(since)));
            let mut notes = Vec::new();
            if s.last_error.is_some()
                && let Some(retry) = s.next_refresh
            {
                notes.push(format!("retry {}", minute(retry)));
            }
            if s.usable_at(now)
                && let Some(expires) = s.expires_at
            {
                notes.push(format!("serving until {}", minute(expires)));
            }
            if !notes.is_empty() {
                line.push_str(&format!(" ({})", notes.join(", ")));
            }
        }
        if trouble.len() > 1 {
            line.push_str(&format!("; {} more in trouble", trouble.len() - 1));
        }
        if pending > 0 {
            line.push_str(&format!("; {pending} pending"));
        }
        line
    }
}

/// "1 target", "3 targets".
fn targets_word(n: usize) -> String {
    if n == 1 {
        "1 target".to_owned()
    } else {
        format!("{n} targets")
    }
}

/// `12:41Z`: the time of day in UTC to the minute, all a one-line status has room for.
fn minute(t: SystemTime) -> String {
    let full = rfc3339(t);
    match full.get(11..16) {
        Some(hh_mm) => format!("{hh_mm}Z"),
        None => full,
    }
}

#[cfg(test)]
mod tests;
