//! The STATUS= line (issue 13): what it says for each standing of the targets, that it names
//! no upstream words, and that "since" is when trouble was first seen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyfed_core::exchange::Side;

use super::*;
use crate::engine::Phase;

/// 2024-05-01T12:00:00Z.
fn noon() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

fn at(minutes: u64) -> SystemTime {
    noon() + Duration::from_secs(minutes * 60)
}

fn snapshot(phase: Phase, expires: Option<SystemTime>, next: Option<SystemTime>) -> Snapshot {
    Snapshot {
        phase,
        expires_at: expires,
        next_refresh: next,
        last_error: None,
        stopped: None,
        output_errors: Vec::new(),
        stats: Default::default(),
        slot_evictions: 0,
    }
}

fn fresh(next: u64) -> Snapshot {
    snapshot(Phase::Fresh, Some(at(60)), Some(at(next)))
}

/// A target whose last attempt failed with words that must never reach the line.
fn failing(expires: Option<SystemTime>, retry: u64) -> Snapshot {
    let mut s = snapshot(Phase::BackingOff, expires, Some(at(retry)));
    s.last_error = Some("connection refused by 10.0.0.7 (secret-looking words)".to_owned());
    s
}

fn named(targets: Vec<(&str, Snapshot)>) -> Vec<(String, Snapshot)> {
    targets
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect()
}

fn line(board: &mut Board, targets: &[(String, Snapshot)], now: SystemTime) -> String {
    board.track(targets, now);
    board.line(targets, now)
}

#[test]
fn all_fresh_names_the_next_refresh() {
    let targets = named(vec![("a", fresh(41)), ("b", fresh(45)), ("c", fresh(50))]);
    assert_eq!(
        line(&mut Board::default(), &targets, noon()),
        "3 targets fresh, next refresh 12:41Z"
    );
    let one = named(vec![("a", fresh(41))]);
    assert_eq!(
        line(&mut Board::default(), &one, noon()),
        "1 target fresh, next refresh 12:41Z"
    );
    assert_eq!(
        line(&mut Board::default(), &[], noon()),
        "no targets configured"
    );
}

#[test]
fn a_failing_target_is_named_with_when_it_began_and_its_retry_never_its_error() {
    let mut board = Board::default();
    let mut targets = named(vec![
        ("aws-prod", failing(None, 5)),
        ("b", fresh(41)),
        ("c", fresh(45)),
    ]);
    assert_eq!(
        line(&mut board, &targets, at(3)),
        "2 of 3 targets fresh; aws-prod failing since 12:03Z (retry 12:05Z)"
    );
    // Still failing later: "since" stays when it was first seen.
    targets[0].1 = failing(None, 9);
    let later = line(&mut board, &targets, at(7));
    assert_eq!(
        later,
        "2 of 3 targets fresh; aws-prod failing since 12:03Z (retry 12:09Z)"
    );
    assert!(!later.contains("refused") && !later.contains("10.0.0.7"));
    // Recovered, then failing again: a new "since".
    targets[0].1 = fresh(50);
    assert_eq!(
        line(&mut board, &targets, at(8)),
        "3 targets fresh, next refresh 12:41Z"
    );
    targets[0].1 = failing(Some(at(30)), 12);
    assert_eq!(
        line(&mut board, &targets, at(10)),
        "2 of 3 targets fresh; aws-prod failing since 12:10Z (retry 12:12Z, serving until 12:30Z)"
    );
}

#[test]
fn a_stopped_target_names_the_side_and_the_others_are_counted() {
    let mut board = Board::default();
    let mut stopped = failing(None, 10);
    stopped.stopped = Some(Side::Cloud);
    let older = failing(None, 5);
    let mut targets = named(vec![("old", older), ("z", fresh(41))]);
    board.track(&targets, at(1));
    targets.push(("new".to_owned(), stopped));
    targets.push(("waiting".to_owned(), snapshot(Phase::Pending, None, None)));
    assert_eq!(
        line(&mut board, &targets, at(4)),
        "1 of 4 targets fresh; old failing since 12:01Z (retry 12:05Z); 1 more in trouble; 1 pending"
    );
    // Alone, the stopped one says which side must change.
    let alone = named(vec![("new", targets[2].1.clone())]);
    assert_eq!(
        line(&mut Board::default(), &alone, at(4)),
        "0 of 1 target fresh; new stopped (needs a change on the cloud side) since 12:04Z (retry 12:10Z)"
    );
}

#[test]
fn an_output_that_cannot_be_written_is_trouble() {
    let mut broken = fresh(41);
    broken.output_errors = vec!["cannot write /run/keyfed/a/credentials: …".to_owned()];
    let targets = named(vec![("a", broken)]);
    let shown = line(&mut Board::default(), &targets, noon());
    assert_eq!(
        shown,
        "0 of 1 target fresh; a failing to write outputs since 12:00Z (serving until 13:00Z)"
    );
}

#[test]
fn starting_counts_the_first_attempts_done() {
    let mut failed = snapshot(Phase::Refreshing, None, None);
    failed.last_error = Some("x".to_owned());
    let targets = named(vec![
        ("a", fresh(41)),
        ("b", snapshot(Phase::Refreshing, None, None)),
        ("c", snapshot(Phase::Pending, None, None)),
        ("d", failed),
    ]);
    assert_eq!(starting(&targets), "starting: 2 of 4 targets done");
}

/// What a test's reporter sent, one datagram a line.
type Sent = Arc<Mutex<Vec<String>>>;

/// A reporter on `served` that records what it sends, what it sent, and the end the daemon
/// publishes new engines on (kept, or the reporter stops watching for reloads).
fn recording(
    served: &Arc<Served>,
    clock: &keyfed_core::clock::ManualClock,
) -> (Reporter, Sent, watch::Sender<Arc<Served>>) {
    let sent: Sent = Arc::default();
    let log = Arc::clone(&sent);
    let (publish, current) = watch::channel(Arc::clone(served));
    let reporter = Reporter::with(
        true,
        Box::new(move |s: &str| {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(s.to_owned())
        }),
        current,
        Arc::new(clock.clone()),
    );
    (reporter, sent, publish)
}

/// Waits (a generous while) for a sent `STATUS=` line starting with `prefix`.
async fn sent_status(sent: &Mutex<Vec<String>>, prefix: &str) -> String {
    for _ in 0..1000 {
        let found = sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find_map(|s| s.strip_prefix("STATUS=").filter(|l| l.starts_with(prefix)))
            .map(str::to_owned);
        if let Some(line) = found {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no STATUS={prefix}… in {:?}",
        sent.lock().unwrap_or_else(PoisonError::into_inner)
    );
}

/// issue 13 (review): the reporter used to look at every target every second for the
/// daemon's whole life (86,400 wake-ups a day, idle or not). It now looks when a target
/// changes, when a reload brings a new engine, and when a credential stops being usable — the
/// one change time alone brings — and not otherwise: an idle day (on the engine's clock) and
/// idle real seconds cost no look at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_an_idle_reporter_does_not_wake() {
    let clock = keyfed_core::clock::ManualClock::new(noon());
    let (_open, gate) = watch::channel(true);
    // Two days' credentials: nothing becomes unusable within the idle day.
    let lifetime = Duration::from_secs(2 * 86_400);
    let served = crate::systemd::testing::served(&clock, lifetime, &gate, &["a"]);
    let a = Arc::clone(served.engine.target("a").unwrap_or_else(|| panic!("a")));
    a.refresh().await.unwrap_or_else(|e| panic!("{e}"));
    let (reporter, sent, _publish) = recording(&served, &clock);
    sent_status(&sent, "starting: 1 of 1 target done").await;
    reporter.running("READY=1");
    sent_status(&sent, "1 target fresh, next refresh ").await;
    let settled = reporter.looks();

    // A day on the engine's clock, a minute at a time, and a second and a half of real time
    // (the old reporter looked every second).
    for _ in 0..24 * 60 {
        clock.advance(Duration::from_secs(60));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        reporter.looks(),
        settled,
        "the reporter woke while nothing changed"
    );

    // A refresh wakes it, its start and end taken together or nearly so.
    let before = sent_status(&sent, "1 target fresh, next refresh ").await;
    a.refresh().await.unwrap_or_else(|e| panic!("{e}"));
    let mut after = before.clone();
    for _ in 0..1000 {
        after = sent_status(&sent, "1 target fresh, next refresh ").await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(after, before, "a refresh changes the next refresh time");
    let refreshed = reporter.looks();
    assert!(
        (settled + 1..=settled + 3).contains(&refreshed),
        "{} looks for one refresh",
        refreshed - settled
    );

    // Time alone: the credential stops being usable, and the reporter looks once to say so.
    let expires = a.snapshot().expires_at.unwrap_or_else(|| panic!("expiry"));
    clock.set(expires - crate::engine::EXPIRY_MARGIN);
    sent_status(&sent, "0 of 1 target fresh; 1 pending").await;
    // (One more when the refresh's last change came while the look before was under way.)
    assert!(
        (refreshed + 1..=refreshed + 2).contains(&reporter.looks()),
        "{} looks for one expiry",
        reporter.looks() - refreshed
    );
}
