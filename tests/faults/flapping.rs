//! The flapping story: the upstream goes down for [`FLAP_DOWN`] and up for [`FLAP_UP`], over
//! and over for [`FLAPPING`], across the credentials' refresh time. Only the rules that hold
//! whatever happens are checked at each look (nothing expired served or written, a usable
//! credential always served); at the end every target must have been refreshed through the
//! gaps, and all be fresh within one backoff step.

use std::time::{Duration, Instant};

use super::kinds::Trouble;
use super::observe::{Look, View};
use super::run::{EVERY, Finish, Moment, Run};
use super::upstreams::Upstreams;

/// Down this long, up that long, for this long in all.
const FLAP_DOWN: Duration = Duration::from_secs(3);
const FLAP_UP: Duration = Duration::from_secs(2);
const FLAPPING: Duration = Duration::from_secs(100);

/// What a flapping scenario measured.
#[derive(Debug, Clone, Default)]
pub struct Flapping {
    pub flaps: u32,
    /// Successful refreshes and failed attempts of all targets while flapping.
    pub refreshed: u64,
    pub failed: u64,
    /// Face answers: served, and 503 (a credential that expired before an attempt got
    /// through).
    pub served: u64,
    pub refused: u64,
    pub resumed: Duration,
}

/// See the module's doc.
pub async fn flapping((up, trouble): (Upstreams, Trouble)) -> (Flapping, Finish) {
    let scenario = format!("{} flapping (issue 11)", trouble.names());
    let mut run = Run::start(up, trouble, &scenario).await;
    crate::util::wait_ready(&run.up.base).await;
    let first = run.look(Moment::Settled).await;
    let started = Instant::now();
    let mut flaps = 0;
    let mut last = first.clone();
    while started.elapsed() < FLAPPING {
        run.trouble.strike();
        flaps += 1;
        let until = Instant::now() + FLAP_DOWN;
        while Instant::now() < until {
            tokio::time::sleep(EVERY).await;
            last = run.look(Moment::Changing).await;
        }
        run.trouble.heal();
        let until = Instant::now() + FLAP_UP;
        while Instant::now() < until {
            tokio::time::sleep(EVERY).await;
            last = run.look(Moment::Changing).await;
        }
    }
    let total = |look: &Look, f: fn(&View) -> u64| -> u64 {
        look.targets
            .iter()
            .filter(|(name, _)| run.trouble.reaches(name))
            .map(|(_, v)| f(v))
            .sum()
    };
    let refreshed = total(&last, |v| v.successes) - total(&first, |v| v.successes);
    for (name, b) in &last.targets {
        if run.trouble.reaches(name) {
            assert!(
                b.successes > first.targets[name].successes,
                "{scenario}: target {name} was never refreshed while its upstream flapped"
            );
        }
    }
    let figures = Flapping {
        flaps,
        refreshed,
        failed: total(&last, |v| v.failures) - total(&first, |v| v.failures),
        served: run.ledger.tracks.values().map(|t| t.served).sum(),
        refused: run.ledger.tracks.values().map(|t| t.refused).sum(),
        resumed: run.recover().await,
    };
    // Settled: every target fresh, no error left, everything agrees.
    run.look(Moment::Settled).await;
    (figures, run.finish(&scenario))
}
