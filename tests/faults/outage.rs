//! The outage story: the upstream is in trouble when the daemon starts (no credential may be
//! served, every view says why), recovers (the daemon resumes within one backoff step), then
//! falls into the same trouble again just after the credentials were issued and stays there
//! until every credential the trouble reaches has expired (each served on every face and file
//! until 30 s before its expiry, none after), then recovers again. Attempts during each outage
//! are counted from the daemon's own metrics and compared with what the backoff allows, and
//! requests reaching the upstream are counted by its emulator.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyfed_core::clock::{Clock as _, SystemClock};

use super::kinds::{Trouble, reaches};
use super::ledger::MARGIN;
use super::observe::{Look, TARGETS};
use super::run::{EVERY, Finish, Moment, Rate, Run};
use super::upstreams::{ATTEMPT_TIMEOUT, LIFETIME, Upstreams};

/// How long the trouble lasts at start (at least).
const AT_START: Duration = Duration::from_secs(8);
/// How long the trouble goes on after the last credential it reaches stopped being served.
const PAST_EXPIRY: Duration = Duration::from_secs(10);

/// What an outage scenario measured.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    pub at_start: Rate,
    /// From the trouble's end to every target usable again.
    pub resumed_at_start: Duration,
    pub mid_life: Rate,
    /// How long into the mid-life trouble the last valid credential was still served (the
    /// shortest of the targets), and how close to its expiry.
    pub served_into_outage: Duration,
    pub served_until_before_expiry: Duration,
    pub resumed_mid_life: Duration,
    pub looks: u64,
}

/// See the module's doc.
pub async fn outage((up, trouble): (Upstreams, Trouble)) -> (Outage, Finish) {
    let scenario = format!("{} {} (issue 11)", trouble.names(), trouble.kind.title());
    trouble.strike();
    let started = Instant::now();
    let hits_before = trouble.hits();
    let mut run = Run::start(up, trouble, &scenario).await;
    let mut last = run.look(Moment::Starting).await;
    // At least AT_START, and until every target it reaches has failed once (a slow upstream
    // takes a timeout per attempt).
    let side = run.trouble.side;
    let failed = |look: &Look| {
        look.targets
            .iter()
            .all(|(name, v)| !reaches(side, name) || v.status.last_error.is_some())
    };
    while started.elapsed() < AT_START || !failed(&last) {
        assert!(
            started.elapsed() < AT_START + ATTEMPT_TIMEOUT * 3,
            "{scenario}: not every target failed at start: {:?}",
            last.targets
        );
        tokio::time::sleep(EVERY).await;
        last = run.look(Moment::Starting).await;
    }
    for (name, view) in &last.targets {
        if run.trouble.reaches(name) {
            assert!(
                view.status.expires.is_none(),
                "{scenario}: target {name} got through the trouble at start: {:?}",
                view.status
            );
        }
    }
    run.named_the_trouble("at start");
    let mut figures = Outage {
        at_start: run.rate(
            started.elapsed().as_secs_f64(),
            &BTreeMap::new(),
            &Run::failures(&last),
            run.trouble.hits() - hits_before,
        ),
        resumed_at_start: run.recover().await,
        ..Outage::default()
    };

    // The same trouble again, at once: the credentials just issued must be served until they
    // stop being usable, and never after.
    run.trouble.strike();
    let struck = SystemClock.now();
    let hits_before = run.trouble.hits();
    let first = run.look(Moment::Trouble).await;
    let issued: BTreeMap<&str, _> = first
        .targets
        .iter()
        .map(|(&name, v)| (name, v.status.expires))
        .collect();
    let deadline = Instant::now() + LIFETIME + PAST_EXPIRY + Duration::from_secs(10);
    let mut first_failure: Option<(Instant, BTreeMap<&str, u64>)> = None;
    loop {
        tokio::time::sleep(EVERY).await;
        let look = run.look(Moment::Trouble).await;
        let failing = look
            .targets
            .iter()
            .any(|(name, v)| run.trouble.reaches(name) && v.status.last_error.is_some());
        if failing && first_failure.is_none() {
            first_failure = Some((Instant::now(), Run::failures(&first)));
        }
        let done = look.targets.iter().all(|(name, v)| {
            !run.trouble.reaches(name)
                || v.status
                    .expires
                    .is_some_and(|e| e + PAST_EXPIRY < look.before + MARGIN)
        });
        if done {
            let (since, failures) = first_failure
                .take()
                .unwrap_or_else(|| panic!("{scenario}: no attempt failed mid-life"));
            figures.mid_life = run.rate(
                since.elapsed().as_secs_f64(),
                &failures,
                &Run::failures(&look),
                run.trouble.hits() - hits_before,
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: the credentials did not expire in time: {:?}",
            look.targets
        );
    }
    // Each target the trouble reached was served until its credential stopped being usable.
    let mut served_into = Duration::MAX;
    let mut until_before = Duration::ZERO;
    for (name, expires) in &issued {
        // The bare token target has no face; the ledger saw its file keep it.
        let served_on_faces = TARGETS
            .iter()
            .any(|(n, faces, _)| n == name && !faces.is_empty());
        if !run.trouble.reaches(name) || !served_on_faces {
            continue;
        }
        let track = &run.ledger.tracks[name];
        let (Some(expires), Some(last)) = (expires, track.last_served) else {
            panic!("{scenario}: target {name} had no credential when the trouble struck");
        };
        served_into = served_into.min(last.duration_since(struck).unwrap_or_default());
        until_before = until_before.max(expires.duration_since(last).unwrap_or_default());
    }
    // Served to the end: the last look serving it came within a look (and the margin a look
    // cannot tell) of the moment keyfed stops serving it.
    assert!(
        until_before <= MARGIN + Duration::from_secs(5),
        "{scenario}: a credential stopped being served {until_before:?} before its expiry"
    );
    run.named_the_trouble("mid-life");
    figures.served_into_outage = served_into;
    figures.served_until_before_expiry = until_before;
    figures.resumed_mid_life = run.recover().await;
    figures.looks = run.ledger.looks;
    (figures, run.finish(&scenario))
}
