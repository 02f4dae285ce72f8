//! What every scenario is made of: its upstreams prepared ahead ([`prepare`]), its daemon and
//! what it looks through ([`Run`]), each look checked by the [`Ledger`] against where the
//! scenario stands ([`Moment`]), attempts during trouble checked against the backoff
//! ([`Run::rate`]), the recovery timed ([`Run::recover`]), and the daemon left running until
//! every scenario beside it is done ([`Finish`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::kinds::{Kind, Side, Trouble, reaches};
use super::ledger::{Expect, Ledger, MARGIN};
use super::observe::{Answer, Look, Probe, TARGETS};
use super::upstreams::{ATTEMPT_TIMEOUT, RETRY_MAX, RETRY_MIN, TIMEOUT, Upstreams};
use crate::util::Daemon;

/// How often a scenario looks at everything, and how often while waiting for a recovery.
pub const EVERY: Duration = Duration::from_secs(1);
const RECOVERY_EVERY: Duration = Duration::from_millis(100);

/// Attempts and upstream requests during one outage.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    pub seconds: f64,
    /// Failed attempts per minute of the target the trouble reaches most often, and the most
    /// the backoff allows.
    pub attempts_per_minute: f64,
    pub allowed_per_minute: f64,
    /// Requests that reached the struck upstreams, per minute (none while down: refused).
    pub requests_per_minute: f64,
}

/// Where a scenario stands at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// The daemon started in trouble: the targets it reaches in an outage, the others getting
    /// their first credential.
    Starting,
    /// The trouble has lasted since before the targets' current credentials were issued.
    Trouble,
    /// Trouble starting, ending or flapping.
    Changing,
    /// No trouble, and none since the credentials were issued.
    Settled,
}

/// A scenario's daemon and what it looks through.
pub struct Run {
    pub up: Upstreams,
    pub trouble: Trouble,
    pub daemon: Daemon,
    pub probe: Probe,
    pub ledger: Ledger,
}

impl Run {
    /// Configures the daemon (see [`Upstreams::configure`]) and starts it.
    pub async fn start(mut up: Upstreams, trouble: Trouble, scenario: &str) -> Self {
        up.configure();
        let daemon = up.fx.daemon().await;
        let probe = Probe::new(&up).await;
        Self {
            up,
            trouble,
            daemon,
            probe,
            ledger: Ledger::new(scenario),
        }
    }

    /// Looks at everything, and checks it against the rules for `moment`: in trouble, the
    /// targets it reaches are in an outage (their reasons naming the trouble) and the others
    /// healthy.
    pub async fn look(&mut self, moment: Moment) -> Look {
        let look = self.probe.look().await;
        let side = self.trouble.side;
        let (words, stops) = match moment {
            Moment::Starting | Moment::Trouble => {
                (self.trouble.kind.words(), self.trouble.kind.stops(side))
            }
            Moment::Changing | Moment::Settled => (&[][..], None),
        };
        let expect = |target: &str| match moment {
            Moment::Starting | Moment::Trouble if reaches(side, target) => Expect::Outage,
            Moment::Trouble | Moment::Settled => Expect::Healthy,
            Moment::Starting | Moment::Changing => Expect::Changing,
        };
        self.ledger.record(&look, expect, words, stops);
        look
    }

    /// Heals the trouble and looks until every target is usable on every face; how long that
    /// took. At most one backoff step (a stopped target's: the longest and a tenth more), then
    /// one attempt, then a look — and before the step, for a slow upstream, the attempt still
    /// waiting for it until its timeout.
    pub async fn recover(&mut self) -> Duration {
        self.trouble.heal();
        let healed = Instant::now();
        let in_flight = match self.trouble.kind {
            Kind::Slow => ATTEMPT_TIMEOUT,
            _ => Duration::ZERO,
        };
        let bound = in_flight + RETRY_MAX.mul_f64(1.1) + TIMEOUT + Duration::from_secs(1);
        loop {
            let look = self.look(Moment::Changing).await;
            let all_usable = look.targets.values().all(|v| {
                v.status.expires.is_some_and(|e| e > look.after + MARGIN)
                    && v.faces.iter().all(|(_, a)| matches!(a, Answer::Served(_)))
            });
            if all_usable && look.ready {
                return healed.elapsed();
            }
            assert!(
                healed.elapsed() < bound,
                "{}: not every target resumed within {bound:?} of the recovery: {:?}",
                self.trouble.names(),
                look.targets
            );
            tokio::time::sleep(RECOVERY_EVERY).await;
        }
    }

    /// Fails unless every target the trouble reaches gave the trouble's own words as its
    /// reason at some look since the last call.
    pub fn named_the_trouble(&mut self, when: &str) {
        for (name, track) in &mut self.ledger.tracks {
            if self.trouble.reaches(name) {
                assert!(
                    track.named,
                    "{} {} {when}: target {name} never gave {:?} as its reason",
                    self.trouble.names(),
                    self.trouble.kind.title(),
                    self.trouble.kind.words()
                );
            }
            track.named = false;
        }
    }

    /// Failed attempts of every target so far.
    pub fn failures(look: &Look) -> BTreeMap<&'static str, u64> {
        look.targets
            .iter()
            .map(|(&name, v)| (name, v.failures))
            .collect()
    }

    /// The rate between two looks (`first`, `last`: each target's failures then), checked
    /// against the backoff for each target the trouble reaches.
    pub fn rate(
        &self,
        seconds: f64,
        first: &BTreeMap<&str, u64>,
        last: &BTreeMap<&str, u64>,
        hits: u64,
    ) -> Rate {
        let window = Duration::from_secs_f64(seconds);
        let stopped = self.trouble.kind.stops(self.trouble.side).is_some();
        let (most, least) = (most_attempts(window, stopped), least_attempts(window));
        let mut highest = 0;
        for (name, _, _) in TARGETS {
            if !self.trouble.reaches(name) {
                continue;
            }
            let attempts = last[name] - first.get(name).copied().unwrap_or_default();
            assert!(
                (least..=most).contains(&attempts),
                "{}: target {name} made {attempts} attempts in {seconds:.1} s of trouble; the \
                 backoff ({RETRY_MIN:?} to {RETRY_MAX:?}) allows {least} to {most}",
                self.trouble.names()
            );
            highest = highest.max(attempts);
        }
        let minutes = seconds / 60.0;
        Rate {
            seconds,
            attempts_per_minute: highest as f64 / minutes,
            allowed_per_minute: most as f64 / minutes,
            requests_per_minute: hits as f64 / minutes,
        }
    }
}

/// The most attempts the backoff lets a target make in `window` of trouble, by any reasonable
/// chance: full jitter draws each delay uniformly below its ceiling, half of it on average;
/// twice the attempts that the averages allow, and a few more for the steps a credential near
/// its expiry shortens, is far beyond chance and far below a retry loop that ignored the steps.
/// A stopped target waits the longest step (and up to a tenth more) between attempts.
pub fn most_attempts(window: Duration, stopped: bool) -> u64 {
    if stopped {
        return (window.as_secs_f64() / RETRY_MAX.as_secs_f64()).floor() as u64 + 2;
    }
    let mut elapsed = Duration::ZERO;
    let mut attempts = 0;
    for step in 0u32.. {
        let ceiling = RETRY_MIN.saturating_mul(1 << step.min(16)).min(RETRY_MAX);
        elapsed += ceiling / 2;
        if elapsed > window {
            break;
        }
        attempts += 1;
    }
    2 * attempts + 4
}

/// The fewest attempts a target still retrying makes in `window`: each waits at most the
/// longest step after the previous one ended, and an attempt lasts at most its timeout.
pub fn least_attempts(window: Duration) -> u64 {
    let longest = RETRY_MAX + ATTEMPT_TIMEOUT;
    (window.as_secs_f64() / longest.as_secs_f64()).floor() as u64
}

/// Starts a scenario's upstreams, and readies `kind` of trouble on `side` of them: the slow part
/// (keys, certificates), done for every scenario before any starts its clock.
pub async fn prepare(side: Side, kind: Kind) -> (Upstreams, Trouble) {
    let up = Upstreams::start().await;
    let trouble = Trouble::new(&up, side, kind);
    (up, trouble)
}

/// A scenario that held, its daemon still running: stopping it (and the leak check of its
/// log, which takes a while) waits until every scenario running beside it is done.
pub struct Finish {
    pub scenario: String,
    pub daemon: Daemon,
    /// Kept until the daemon stops.
    pub up: Upstreams,
}

impl Finish {
    /// Stops the daemon, which must exit 0.
    pub async fn stop(self) {
        let stopped = self.daemon.stop().await;
        assert_eq!(
            stopped.code,
            Some(0),
            "{}: {}",
            self.scenario,
            stopped.stderr
        );
        drop(self.up);
    }
}

impl Run {
    pub fn finish(self, scenario: &str) -> Finish {
        Finish {
            scenario: scenario.to_owned(),
            daemon: self.daemon,
            up: self.up,
        }
    }
}
