//! The engine's rules with time driven by the test: refreshes on schedule for a simulated day,
//! keeps serving the last good credential through an outage but never past its expiry, recovers
//! within one backoff step, makes one upstream call for a burst of demand (callers held at a
//! latch while the upstream call is under way), never retries sooner than the backoff allows,
//! survives a panicking source, writes outputs off the refresh path and never backwards, and
//! hands its state on at a reload. A failure advised to stop waits the longest backoff step
//! (and is retried at once on a reload); an exchange whose subject token the cloud refused is
//! tried once more with a fresh token.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_aws::AwsCredentials;
use keyfed_core::clock::{Clock, ManualClock};
use keyfed_core::exchange::{Advice, Side};

use super::*;
use crate::credential::Credential;
use crate::outputs::{Output, OutputError, OutputKind};

const T0: u64 = 1_800_000_000;

#[derive(Debug)]
struct Fake {
    clock: ManualClock,
    lifetime: Duration,
    calls: AtomicU32,
    failing: AtomicBool,
    /// What a failure advises (backoff unless a test says otherwise).
    advice: Mutex<Advice>,
    /// A latch: while closed, fetches wait (counted in `held`) until the test opens it.
    gate: tokio::sync::watch::Sender<bool>,
    held: AtomicU32,
}

impl Fake {
    fn new(clock: &ManualClock, lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock: clock.clone(),
            lifetime,
            calls: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            advice: Mutex::new(Advice::Backoff),
            gate: tokio::sync::watch::Sender::new(true),
            held: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// From now on every fetch fails with `advice`.
    fn fail_with(&self, advice: Advice) {
        *self.advice.lock().unwrap_or_else(PoisonError::into_inner) = advice;
        self.failing.store(true, Ordering::SeqCst);
    }

    fn close(&self) {
        self.gate.send_replace(false);
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Lets tasks run until `n` fetches wait at the closed gate.
    async fn until_held(&self, n: u32) {
        for _ in 0..100_000 {
            if self.held.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} fetches held, not {n}", self.held.load(Ordering::SeqCst));
    }
}

#[derive(Debug)]
struct Shared(Arc<Fake>);

impl Source for Shared {
    fn fetch(&self) -> Fetch<'_> {
        Box::pin(async move {
            let fake = &self.0;
            fake.calls.fetch_add(1, Ordering::SeqCst);
            let mut gate = fake.gate.subscribe();
            if !*gate.borrow_and_update() {
                fake.held.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|&open| open).await;
                fake.held.fetch_sub(1, Ordering::SeqCst);
            }
            if fake.failing.load(Ordering::SeqCst) {
                return Err(FetchError {
                    message: "InvalidIdentityToken: upstream is down".to_owned(),
                    advice: *fake.advice.lock().unwrap_or_else(PoisonError::into_inner),
                });
            }
            Ok(Credential::Aws(AwsCredentials {
                access_key_id: format!("ASIA{}", fake.calls.load(Ordering::SeqCst)),
                secret_access_key: "secret".into(),
                session_token: "session".into(),
                expiration: fake.clock.now() + fake.lifetime,
                assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/r/s".to_owned(),
            }))
        })
    }

    fn consumer_window(&self) -> Duration {
        Duration::from_secs(15 * 60)
    }
}

/// Target "t" on `clock` with the default backoff.
fn engine(clock: &ManualClock, source: Box<dyn Source>, outputs: Vec<Output>) -> TargetEngine {
    TargetEngine::new(
        "t".to_owned(),
        source,
        outputs,
        Arc::new(clock.clone()),
        Backoff::DEFAULT,
        Duration::from_secs(60),
    )
}

fn target(clock: &ManualClock, fake: &Arc<Fake>) -> Arc<TargetEngine> {
    Arc::new(engine(
        clock,
        Box::new(Shared(Arc::clone(fake))),
        Vec::new(),
    ))
}

/// The usual world: a clock at T0, an upstream issuing one-hour credentials, a target on it.
fn hour_target() -> (ManualClock, Arc<Fake>, Arc<TargetEngine>) {
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    let t = target(&clock, &fake);
    (clock, fake, t)
}

/// A caller asking for a credential on a task of its own; whether it got one.
fn caller(t: &Arc<TargetEngine>) -> tokio::task::JoinHandle<bool> {
    let t = Arc::clone(t);
    tokio::spawn(async move { t.credential().await.is_ok() })
}

/// Closes the gate and starts a caller, whose fetch waits at it; the caller.
async fn a_caller_held_at_the_upstream(
    t: &Arc<TargetEngine>,
    fake: &Fake,
) -> tokio::task::JoinHandle<bool> {
    fake.close();
    let first = caller(t);
    fake.until_held(1).await;
    first
}

/// Closes the gate and starts the background loop, whose refresh (due now) waits at it; the
/// loop.
async fn a_loop_held_at_the_upstream(
    t: &Arc<TargetEngine>,
    fake: &Fake,
) -> tokio::task::JoinHandle<()> {
    fake.close();
    let task = tokio::spawn(Arc::clone(t).run());
    fake.until_held(1).await;
    task
}

/// The error a caller gets now, as text.
async fn refusal(t: &Arc<TargetEngine>) -> String {
    t.credential()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// `work`, bounded: a test whose `what` waits for something it must not (a stuck write) fails
/// instead of hanging.
async fn promptly<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| panic!("{what}"))
}

/// Lets the background loop run until it waits on the clock again.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn start() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0))
}

#[tokio::test]
async fn refreshes_on_schedule_for_a_simulated_day() {
    let (clock, fake, t) = hour_target();
    let task = tokio::spawn(Arc::clone(&t).run());
    settle().await;
    for minute in 0..24 * 60 {
        let served = t
            .credential()
            .await
            .unwrap_or_else(|e| panic!("minute {minute}: {e}"));
        let left = served
            .credential
            .expires_at()
            .duration_since(clock.now())
            .unwrap_or_default();
        // Consumers (botocore) want more than 15 minutes; the engine always has that.
        assert!(
            left > Duration::from_secs(15 * 60),
            "minute {minute}: {left:?} left"
        );
        clock.advance(Duration::from_secs(60));
        settle().await;
    }
    // 1 h credentials refreshed at 2/3 of their life (±10 %): 36 a day, give or take jitter.
    let calls = fake.calls.load(Ordering::SeqCst);
    assert!((33..=40).contains(&calls), "{calls} refreshes in 24 h");
    task.abort();
}

#[tokio::test]
async fn an_outage_keeps_the_old_credential_until_expiry_and_recovery_is_quick() {
    let (clock, fake, t) = hour_target();
    let task = tokio::spawn(Arc::clone(&t).run());
    settle().await;
    let first = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    let expiry = first.credential.expires_at();
    fake.failing.store(true, Ordering::SeqCst);

    // Through the outage: the old credential is served while valid, and the target backs off.
    let mut attempts_before = fake.calls.load(Ordering::SeqCst);
    let mut backed_off = false;
    while clock.now() + super::target::EXPIRY_MARGIN < expiry - Duration::from_secs(1) {
        let served = t
            .credential()
            .await
            .unwrap_or_else(|e| panic!("during outage: {e}"));
        assert!(Arc::ptr_eq(&served, &first));
        backed_off |= t.snapshot().phase == Phase::BackingOff;
        clock.advance(Duration::from_secs(30));
        settle().await;
    }
    assert!(
        fake.calls.load(Ordering::SeqCst) > attempts_before,
        "it kept retrying"
    );
    assert!(backed_off, "the target reported backing off");

    // Past expiry: nothing is served, and the reason is the upstream's.
    clock.set(expiry + Duration::from_secs(1));
    settle().await;
    let err = refusal(&t).await;
    assert!(
        err.contains("expired") && err.contains("upstream is down"),
        "{err}"
    );
    assert_eq!(t.snapshot().phase, Phase::Expired);

    // Recovery: within one backoff step (at most the 300 s ceiling) a fresh credential is back.
    fake.failing.store(false, Ordering::SeqCst);
    attempts_before = fake.calls.load(Ordering::SeqCst);
    let mut waited = Duration::ZERO;
    while t.snapshot().phase != Phase::Fresh {
        assert!(
            waited <= Duration::from_secs(300),
            "no recovery after {waited:?}"
        );
        clock.advance(Duration::from_secs(1));
        waited += Duration::from_secs(1);
        settle().await;
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), attempts_before + 1);
    assert!(t.credential().await.is_ok());
    task.abort();
}

#[tokio::test]
async fn demand_during_backoff_does_not_reach_the_upstream() {
    let (_clock, fake, t) = hour_target();
    fake.failing.store(true, Ordering::SeqCst);
    assert!(t.credential().await.is_err());
    for _ in 0..50 {
        assert!(t.credential().await.is_err());
    }
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "callers wait out the backoff"
    );
}

#[tokio::test]
async fn a_usable_credential_is_served_at_once_while_a_slow_refresh_is_due() {
    // Regression: consumers used to wait for a due refresh; with a hanging upstream the SDKs'
    // 1–2 s timeouts expired although a good credential was at hand.
    let (clock, fake, t) = hour_target();
    let first = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    clock.advance(Duration::from_secs(50 * 60)); // past 2/3 of the lifetime: a refresh is due
    // From now on the upstream hangs; a refresh is under way.
    fake.close();
    let hanging = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.refresh().await.is_ok() }
    });
    fake.until_held(1).await;
    // The held refresh never ends on its own: a consumer waiting for it would hit the bound.
    let served = promptly("the consumer waited for the refresh", t.credential())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&served, &first));
    hanging.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_giving_up_does_not_cancel_the_refresh() {
    let (_clock, fake, t) = hour_target();
    let impatient = a_caller_held_at_the_upstream(&t, &fake).await;
    impatient.abort();
    let _ = impatient.await;
    fake.open();
    let patient = t.credential().await;
    assert!(patient.is_ok(), "{patient:?}");
    assert_eq!(fake.calls(), 1, "the abandoned refresh was not repeated");
}

/// A caller that asks for a credential `hops` scheduler turns from now (each hop is a task
/// that starts the next).
fn caller_after(hops: u32, t: Arc<TargetEngine>) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        if hops == 0 {
            t.credential().await.is_ok()
        } else {
            caller_after(hops - 1, t).await.unwrap_or(false)
        }
    })
}

/// issue 7 (single flight): a caller that finds no usable credential just as a held refresh
/// completes must share that refresh, not start a second upstream call. The caller used to read
/// the attempt counter only inside the spawned refresh task, after the refresh it raced with
/// had already counted itself, and so made another upstream call. The caller arrives a
/// different number of scheduler turns after the release each round, so it lands at every
/// point of the completing refresh.
#[tokio::test]
async fn issue_7_a_caller_arriving_as_a_refresh_completes_shares_it() {
    for hops in 0..16 {
        for inline in [true, false] {
            let (_clock, fake, t) = hour_target();
            let first = a_caller_held_at_the_upstream(&t, &fake).await;
            fake.open();
            let second = if inline {
                for _ in 0..hops {
                    tokio::task::yield_now().await;
                }
                t.credential().await.is_ok()
            } else {
                caller_after(hops, Arc::clone(&t))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            };
            assert!(second, "{hops} hops");
            assert!(first.await.unwrap_or_else(|e| panic!("{e}")), "{hops} hops");
            assert_eq!(
                fake.calls(),
                1,
                "{hops} hops ({}): a second upstream call",
                if inline { "inline" } else { "spawned" }
            );
        }
    }
}

/// Starts `n` callers and waits until every one of them waits for the refresh under way
/// (besides `already` callers waiting before them).
async fn callers_during_a_held_refresh(
    t: &Arc<TargetEngine>,
    fake: &Fake,
    n: usize,
    already: usize,
) -> Vec<tokio::task::JoinHandle<Result<String, String>>> {
    let callers: Vec<_> = (0..n)
        .map(|_| {
            let t = Arc::clone(t);
            tokio::spawn(async move {
                t.credential()
                    .await
                    .map(|c| match &c.credential {
                        Credential::Aws(aws) => aws.access_key_id.clone(),
                        Credential::Token(_) => String::new(),
                    })
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for _ in 0..1_000_000 {
        if t.waiting() >= already + n {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(t.waiting(), already + n, "callers waiting for the refresh");
    assert_eq!(
        fake.held.load(Ordering::SeqCst),
        1,
        "the upstream call is held"
    );
    callers
}

async fn all_got(callers: Vec<tokio::task::JoinHandle<Result<String, String>>>, key: &str) {
    for caller in callers {
        let got = caller.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.as_deref(), Ok(key));
    }
}

/// issue 7 (single flight): a thousand callers that arrive while the first fetch is held at
/// the upstream all wait for it and share its outcome: one upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_callers_during_a_held_first_fetch_share_one_upstream_call() {
    let (_clock, fake, t) = hour_target();
    let first = a_caller_held_at_the_upstream(&t, &fake).await;
    let callers = callers_during_a_held_refresh(&t, &fake, 1000, 1).await;
    assert_eq!(fake.calls(), 1);
    fake.open();
    all_got(callers, "ASIA1").await;
    assert!(first.await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(fake.calls(), 1);
    assert_eq!(t.waiting(), 0);
}

/// issue 7 (single flight): the same for a renewal — the credential has expired (after failed
/// refreshes), the background loop's retry is held at the upstream, and callers arriving now
/// share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_callers_during_a_held_renewal_share_one_upstream_call() {
    let (clock, fake, t) = hour_target();
    let first = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    clock.set(first.credential.expires_at());
    // The background loop finds the refresh due and starts it; it waits at the upstream.
    let task = a_loop_held_at_the_upstream(&t, &fake).await;
    let callers = callers_during_a_held_refresh(&t, &fake, 1000, 0).await;
    assert_eq!(fake.calls(), 2);
    fake.open();
    all_got(callers, "ASIA2").await;
    assert_eq!(fake.calls(), 2, "one upstream call for the renewal");
    task.abort();
}

/// issue 7 (single flight): while a renewal is held at the upstream and the old credential
/// is still usable, callers get the old one at once and cause no upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_callers_during_a_held_renewal_of_a_usable_credential_are_served_at_once() {
    let (clock, fake, t) = hour_target();
    let first = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    clock.set(first.refresh_at);
    let task = a_loop_held_at_the_upstream(&t, &fake).await;
    for _ in 0..1000 {
        let served = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(&served, &first));
    }
    assert_eq!(t.snapshot().phase, Phase::Refreshing);
    fake.open();
    until("the renewal to complete", || {
        t.snapshot().phase == Phase::Fresh && fake.calls() == 2
    })
    .await;
    let renewed = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!Arc::ptr_eq(&renewed, &first));
    assert_eq!(fake.calls(), 2);
    task.abort();
}

/// issue 7 (defect 10): however many callers ask during a failure period, the upstream is
/// reached only when the backoff allows — never before the retry time the engine announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_demand_during_an_outage_never_retries_sooner_than_the_backoff() {
    let (clock, fake, t) = hour_target();
    fake.failing.store(true, Ordering::SeqCst);
    let task = tokio::spawn(Arc::clone(&t).run());
    let mut retries = 0;
    for _ in 0..600 {
        settle().await;
        let before = fake.calls();
        let retry_at = t.snapshot().next_refresh;
        // Twenty callers at once, then the clock moves half a second.
        let callers: Vec<_> = (0..20).map(|_| caller(&t)).collect();
        for caller in callers {
            assert!(!caller.await.unwrap_or_else(|e| panic!("{e}")));
        }
        settle().await;
        let after = fake.calls();
        match retry_at {
            Some(at) if clock.now() < at => {
                assert_eq!(
                    after, before,
                    "an upstream call during backoff, before {at:?}"
                );
            }
            _ => {
                assert!(after <= before + 1, "{} calls at once", after - before);
                retries += after - before;
            }
        }
        clock.advance(Duration::from_millis(500));
    }
    // Five minutes of outage with backoff ceilings 1, 2, 4 … 256 s: a handful of attempts,
    // not thousands.
    assert!((2..=60).contains(&retries), "{retries} retries");
    task.abort();
}

#[derive(Debug)]
struct Panicking;

impl Source for Panicking {
    fn fetch(&self) -> Fetch<'_> {
        Box::pin(async { panic!("a bug in the source (on purpose)") })
    }

    fn consumer_window(&self) -> Duration {
        Duration::ZERO
    }
}

/// issue 7 (defect 9): a panicking attempt is a failed attempt — backoff, last error, not left
/// "refreshing" for the background loop to retry at once.
#[tokio::test]
async fn issue_7_a_panicking_attempt_counts_as_a_failure_with_backoff() {
    let clock = start();
    let calls = Arc::new(AtomicU32::new(0));
    #[derive(Debug)]
    struct Counting(Arc<AtomicU32>);
    impl Source for Counting {
        fn fetch(&self) -> Fetch<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Panicking.fetch()
        }
        fn consumer_window(&self) -> Duration {
            Duration::ZERO
        }
    }
    let t = Arc::new(engine(
        &clock,
        Box::new(Counting(Arc::clone(&calls))),
        Vec::new(),
    ));
    let task = tokio::spawn(Arc::clone(&t).run());
    // Until the attempt ends (or, as before the fix, the loop retries at once).
    until("the first attempt ends", || {
        t.snapshot().stats.refreshes_failed > 0 || calls.load(Ordering::SeqCst) > 1
    })
    .await;
    settle().await;
    let s = t.snapshot();
    assert_eq!(s.phase, Phase::BackingOff);
    assert_eq!(s.stats.refreshes_failed, 1);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("the refresh panicked")),
        "{:?}",
        s.last_error
    );
    assert!(s.next_refresh.is_some_and(|at| at > clock.now()));
    // Neither the loop nor a caller retries before the backoff ends.
    let err = refusal(&t).await;
    assert!(err.contains("the refresh panicked"), "{err}");
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // After the backoff, the loop tries again, and the failures count up.
    clock.advance(Duration::from_secs(2));
    until("the retry after the backoff", || {
        t.snapshot().stats.refreshes_failed > 1
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    task.abort();
}

/// A gate a blocking output write waits at; the writes it let through, in order.
#[derive(Debug, Default)]
struct Disk {
    open: Mutex<bool>,
    opened: Condvar,
    blocked: AtomicU32,
    written: Mutex<Vec<String>>,
    fail: AtomicBool,
}

impl Disk {
    fn write(&self, credential: &Credential) -> Result<(), OutputError> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if !*open {
            self.blocked.fetch_add(1, Ordering::SeqCst);
            // Bounded only so that a failing test (a write holding a runtime worker) ends.
            let (guard, _) = self
                .opened
                .wait_timeout_while(open, Duration::from_secs(120), |open| !*open)
                .unwrap_or_else(PoisonError::into_inner);
            drop(guard);
            self.blocked.fetch_sub(1, Ordering::SeqCst);
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(OutputError {
                name: "credential-process-json",
                path: "/nowhere/process.json".into(),
                detail: "the disk is full".to_owned(),
            });
        }
        if let Credential::Aws(aws) = credential {
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(aws.access_key_id.clone());
        }
        Ok(())
    }

    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = open;
        self.opened.notify_all();
    }

    fn written(&self) -> Vec<String> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn with_disk(clock: &ManualClock, fake: &Arc<Fake>, disk: &Arc<Disk>) -> Arc<TargetEngine> {
    let output = Output {
        name: "credential-process-json",
        kind: OutputKind::CredentialProcessJson,
        path: "/nowhere/process.json".into(),
        mode: None,
        owner: None,
        group: None,
    };
    let disk = Arc::clone(disk);
    Arc::new(
        engine(clock, Box::new(Shared(Arc::clone(fake))), vec![output])
            .with_output_writer(move |_, credential| disk.write(credential)),
    )
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// issue 7 (defect 3, engine side): an output whose write hangs (a merge lock held by someone
/// else) delays neither consumers nor the next refresh; when it frees up, the newest credential
/// is written and the file never goes back to an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_stuck_output_delays_neither_consumers_nor_refreshes() {
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    let disk = Arc::new(Disk::default());
    let t = with_disk(&clock, &fake, &disk);

    // Bounded, so that a write on the refresh path fails the test instead of hanging it.
    // The first credential is published while its write hangs.
    let first = promptly(
        "the first caller waited for the stuck output",
        t.credential(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    until("the write blocks", || {
        disk.blocked.load(Ordering::SeqCst) == 1
    })
    .await;
    let served = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&served, &first));

    // Two more refreshes complete while that write still hangs.
    clock.set(first.refresh_at);
    let second = promptly(
        "the second refresh waited for the stuck output",
        t.refresh(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    clock.set(second.refresh_at);
    let third = promptly("the third refresh waited for the stuck output", t.refresh())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let served = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&served, &third), "consumers get the newest");
    assert_eq!(disk.blocked.load(Ordering::SeqCst), 1, "one writer thread");
    assert!(disk.written().is_empty());

    // Unblocked: the hung write ends, then the newest credential is written; the middle one,
    // overtaken while it waited, never is.
    disk.set_open(true);
    tokio::time::timeout(Duration::from_secs(30), t.outputs_written())
        .await
        .unwrap_or_else(|_| panic!("the outputs were never written"));
    assert_eq!(disk.written(), ["ASIA1", "ASIA3"]);
    assert!(t.snapshot().output_errors.is_empty());

    // A failing write reaches the snapshot; the credential is still served.
    disk.fail.store(true, Ordering::SeqCst);
    clock.set(third.refresh_at);
    let fourth = t.refresh().await.unwrap_or_else(|e| panic!("{e}"));
    t.outputs_written().await;
    let errors = t.snapshot().output_errors;
    assert!(
        errors.len() == 1 && errors[0].contains("the disk is full"),
        "{errors:?}"
    );
    let served = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&served, &fourth));
}

/// issue 7 (defect 9): after a reload retires an engine, a refresh of its still in flight
/// completes for its callers but writes none of the old configuration's outputs, and its
/// background loop stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_retired_engine_writes_no_outputs_and_stops_its_loop() {
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    let disk = Arc::new(Disk::default());
    disk.set_open(true);
    let t = with_disk(&clock, &fake, &disk);
    let task = a_loop_held_at_the_upstream(&t, &fake).await;
    t.retire();
    fake.open();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap_or_else(|_| panic!("the retired engine's loop kept running"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The refresh in flight still completed for whoever waits for it…
    let served = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fake.calls(), 1);
    assert!(served.usable_at(clock.now()));
    // …but nothing was written.
    t.outputs_written().await;
    assert!(disk.written().is_empty(), "{:?}", disk.written());
}

/// issue 7 (reload): a target unchanged by a reload keeps its backoff and last error; the new
/// engine makes no upstream call before the old backoff ends.
#[tokio::test]
async fn issue_7_adopt_keeps_backoff_and_the_last_error() {
    let (clock, fake, old) = hour_target();
    fake.failing.store(true, Ordering::SeqCst);
    assert!(old.credential().await.is_err());
    let before = old.snapshot();
    assert_eq!(before.phase, Phase::BackingOff);

    let new = target(&clock, &fake);
    new.adopt(&old);
    old.retire();
    let after = new.snapshot();
    assert_eq!(after.phase, Phase::BackingOff);
    assert_eq!(after.next_refresh, before.next_refresh);
    assert_eq!(after.last_error, before.last_error);
    assert_eq!(after.stats.refreshes_failed, 1);
    let task = tokio::spawn(Arc::clone(&new).run());
    settle().await;
    for _ in 0..10 {
        assert!(new.credential().await.is_err());
    }
    assert_eq!(fake.calls(), 1, "no retry before the backoff ends");
    // When the backoff ends, the new engine retries.
    fake.failing.store(false, Ordering::SeqCst);
    if let Some(at) = before.next_refresh {
        clock.set(at);
    }
    until("the retry after the backoff", || {
        new.snapshot().phase == Phase::Fresh
    })
    .await;
    assert_eq!(fake.calls(), 2);
    task.abort();
}

const CLOUD: Advice = Advice::Stop { side: Side::Cloud };

/// How long from now until the target's next retry.
fn retry_in(t: &TargetEngine, clock: &ManualClock) -> Duration {
    t.snapshot()
        .next_refresh
        .unwrap_or_else(|| panic!("no retry scheduled"))
        .duration_since(clock.now())
        .unwrap_or_default()
}

/// issue 9: a failure advised to stop (AccessDenied: the cloud side must change) is retried
/// only after the longest backoff step, by the loop or by any caller, and says so everywhere;
/// it used to be retried like a network blip, after 1 s, 2 s, 4 s …
#[tokio::test]
async fn issue_9_a_stopped_target_waits_the_longest_backoff_step() {
    let (clock, fake, t) = hour_target();
    fake.fail_with(CLOUD);
    let task = tokio::spawn(Arc::clone(&t).run());
    until("the first attempt fails", || {
        t.snapshot().stats.refreshes_failed == 1
    })
    .await;
    let s = t.snapshot();
    assert_eq!(s.stopped, Some(Side::Cloud));
    assert_eq!(s.phase, Phase::BackingOff);
    assert_eq!(
        s.last_error.as_deref(),
        Some("stopped: needs a change on the cloud side: InvalidIdentityToken: upstream is down")
    );
    let wait = retry_in(&t, &clock);
    assert!(wait >= Backoff::DEFAULT.longest(), "{wait:?}");
    // Through every short step, neither the loop nor a caller reaches the upstream.
    while clock.now() + Duration::from_secs(1) < s.next_refresh.unwrap_or(clock.now()) {
        let err = refusal(&t).await;
        assert!(
            err.contains("has no credential yet: stopped: needs a change on the cloud side"),
            "{err}"
        );
        clock.advance(Duration::from_secs(1));
        settle().await;
        assert_eq!(
            fake.calls(),
            1,
            "retried at {:?}, before the longest step",
            clock.now()
        );
    }
    // At the longest step, one retry; still refused, it waits the longest step again.
    clock.advance(Duration::from_secs(1));
    until("the retry at the longest step", || {
        t.snapshot().stats.refreshes_failed == 2
    })
    .await;
    assert_eq!(fake.calls(), 2);
    assert!(retry_in(&t, &clock) >= Backoff::DEFAULT.longest());
    task.abort();
}

/// issue 9: a stopped target waits the longest step even while its credential nears expiry —
/// retrying sooner cannot help — where a passing failure retries sooner as expiry nears.
#[tokio::test]
async fn issue_9_a_stopped_target_is_not_hurried_by_an_expiring_credential() {
    let (clock, fake, t) = hour_target();
    let first = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    // Ten minutes left: a passing failure would retry within a quarter of that.
    clock.set(first.credential.expires_at() - Duration::from_secs(600));
    fake.fail_with(Advice::Backoff);
    assert!(t.refresh().await.is_err());
    assert!(retry_in(&t, &clock) <= Duration::from_secs(150));
    clock.advance(retry_in(&t, &clock));
    fake.fail_with(CLOUD);
    assert!(t.refresh().await.is_err());
    assert!(retry_in(&t, &clock) >= Backoff::DEFAULT.longest());
    // The credential is still served meanwhile.
    let served = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&served, &first));
    assert_eq!(t.snapshot().stopped, Some(Side::Cloud));
}

/// issue 9: a passing failure (throttling, a 5xx, the network) keeps today's schedule: the
/// short steps, 1 s, 2 s, 4 s … ceilings, and the target is not stopped.
#[tokio::test]
async fn issue_9_a_passing_failure_backs_off_in_short_steps() {
    let (clock, fake, t) = hour_target();
    fake.fail_with(Advice::Backoff);
    for failure in 1..=6u32 {
        assert!(t.refresh().await.is_err());
        let s = t.snapshot();
        assert_eq!(s.stopped, None);
        assert_eq!(
            s.last_error.as_deref(),
            Some("InvalidIdentityToken: upstream is down")
        );
        let wait = retry_in(&t, &clock);
        assert!(
            wait <= Backoff::DEFAULT.ceiling(failure),
            "failure {failure}: {wait:?}"
        );
        clock.advance(wait);
    }
    assert_eq!(fake.calls(), 6);
}

/// issue 9: when the failure turns from "stop" into a passing one, the short steps are back.
#[tokio::test]
async fn issue_9_a_stopped_target_recovers_when_the_side_changed() {
    let (clock, fake, t) = hour_target();
    fake.fail_with(CLOUD);
    assert!(t.refresh().await.is_err());
    clock.advance(retry_in(&t, &clock));
    fake.failing.store(false, Ordering::SeqCst);
    assert!(t.refresh().await.is_ok());
    let s = t.snapshot();
    assert_eq!(
        (s.phase, s.stopped, s.last_error),
        (Phase::Fresh, None, None)
    );
}

/// issue 9 (reload): a stopped target handed to a new engine by a reload is retried at once —
/// the reload may be the change it waits for — where a backing-off one keeps its wait
/// (`issue_7_adopt_keeps_backoff_and_the_last_error`).
#[tokio::test]
async fn issue_9_a_reload_retries_a_stopped_target_at_once() {
    let (clock, fake, old) = hour_target();
    fake.fail_with(CLOUD);
    assert!(old.credential().await.is_err());
    assert!(retry_in(&old, &clock) >= Backoff::DEFAULT.longest());

    let new = target(&clock, &fake);
    new.adopt(&old);
    old.retire();
    let adopted = new.snapshot();
    assert_eq!(adopted.next_refresh, Some(clock.now()), "due now");
    assert_eq!(
        adopted.stopped,
        Some(Side::Cloud),
        "still stopped until retried"
    );
    fake.failing.store(false, Ordering::SeqCst);
    let task = tokio::spawn(Arc::clone(&new).run());
    until("the retry at the reload", || {
        new.snapshot().phase == Phase::Fresh
    })
    .await;
    assert_eq!(fake.calls(), 2);
    assert_eq!(new.snapshot().stopped, None);
    task.abort();
}

/// The issuer for [`ExchangedSource`] tests: numbered subject tokens, or a refusal.
#[derive(Debug, Default)]
struct Tokens {
    issued: AtomicU32,
    refuse: Mutex<Option<Advice>>,
}

impl crate::sources::SubjectTokens for Tokens {
    async fn subject_token(&self) -> Result<keyfed_core::SecretString, FetchError> {
        if let Some(advice) = *self.refuse.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(FetchError {
                message: "issuer 'corp' refused the token request: invalid_client".to_owned(),
                advice,
            });
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(format!("jwt-{n}").into())
    }
}

/// A cloud refusing the first `refusals` subject tokens with `advice`, then issuing one-hour
/// credentials; the tokens it saw, in order.
#[derive(Debug)]
struct Cloud {
    clock: ManualClock,
    refusals: AtomicU32,
    advice: Advice,
    seen: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("STS refused: the token was refused for this test")]
struct Refusal(Advice);

impl keyfed_core::exchange::Advise for Refusal {
    fn advice(&self) -> Advice {
        self.0
    }
}

impl keyfed_core::exchange::Exchange for Cloud {
    type Credential = AwsCredentials;
    type Error = Refusal;

    async fn exchange(
        &self,
        subject_token: &keyfed_core::SecretString,
    ) -> Result<AwsCredentials, Refusal> {
        use keyfed_core::ExposeSecret as _;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(subject_token.expose_secret().to_owned());
        let refuse = self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Err(Refusal(self.advice));
        }
        Ok(AwsCredentials {
            access_key_id: "ASIAEXCHANGED".to_owned(),
            secret_access_key: "secret".into(),
            session_token: "session".into(),
            expiration: self.clock.now() + Duration::from_secs(3600),
            assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/r/s".to_owned(),
        })
    }
}

/// A target whose source is an [`ExchangedSource`] over `tokens` and a cloud refusing the first
/// `refusals` tokens with `advice`.
fn exchanged(
    clock: &ManualClock,
    refusals: u32,
    advice: Advice,
) -> (Arc<Tokens>, Arc<Cloud>, Arc<TargetEngine>) {
    #[derive(Debug)]
    struct ByRef<T>(Arc<T>);
    impl crate::sources::SubjectTokens for ByRef<Tokens> {
        async fn subject_token(&self) -> Result<keyfed_core::SecretString, FetchError> {
            crate::sources::SubjectTokens::subject_token(&*self.0).await
        }
    }
    impl keyfed_core::exchange::Exchange for ByRef<Cloud> {
        type Credential = AwsCredentials;
        type Error = Refusal;
        async fn exchange(
            &self,
            subject_token: &keyfed_core::SecretString,
        ) -> Result<AwsCredentials, Refusal> {
            self.0.exchange(subject_token).await
        }
    }
    let tokens = Arc::new(Tokens::default());
    let cloud = Arc::new(Cloud {
        clock: clock.clone(),
        refusals: AtomicU32::new(refusals),
        advice,
        seen: Mutex::new(Vec::new()),
    });
    let source = crate::sources::ExchangedSource::new(
        ByRef(Arc::clone(&tokens)),
        ByRef(Arc::clone(&cloud)),
        Duration::from_secs(15 * 60),
    );
    let t = Arc::new(engine(clock, Box::new(source), Vec::new()));
    (tokens, cloud, t)
}

impl Cloud {
    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// issue 9: the cloud refusing the subject token once: a fresh token and one more exchange,
/// within the one attempt.
#[tokio::test]
async fn issue_9_a_refused_subject_token_is_retried_once_with_a_fresh_one() {
    let clock = start();
    let (tokens, cloud, t) = exchanged(&clock, 1, Advice::FreshSubjectToken);
    let issued = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(issued.usable_at(clock.now()));
    assert_eq!(
        cloud.seen(),
        ["jwt-1", "jwt-2"],
        "a fresh token, not the refused one"
    );
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 2);
    assert_eq!(t.snapshot().stats.refreshes_ok, 1, "one attempt");
}

/// issue 9: refused twice, the cloud does not take the issuer's tokens: the attempt stops,
/// naming the cloud side, after two exchanges — not three, not a backoff loop.
#[tokio::test]
async fn issue_9_a_subject_token_refused_twice_stops_on_the_cloud_side() {
    let clock = start();
    let (tokens, cloud, t) = exchanged(&clock, 2, Advice::FreshSubjectToken);
    let err = refusal(&t).await;
    assert!(
        err.contains(
            "stopped: needs a change on the cloud side: STS refused: the token was refused"
        ),
        "{err}"
    );
    assert_eq!(cloud.seen(), ["jwt-1", "jwt-2"]);
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 2);
    assert_eq!(t.snapshot().stopped, Some(Side::Cloud));
    assert!(retry_in(&t, &clock) >= Backoff::DEFAULT.longest());
}

/// issue 9: other advice passes through the exchanged source as it is: a passing failure is
/// not retried with a fresh token (one exchange), and an issuer refusing keyfed's client stops
/// on the Keycloak side before any exchange.
#[tokio::test]
async fn issue_9_only_a_refused_subject_token_gets_a_fresh_one() {
    let clock = start();
    let (tokens, cloud, t) = exchanged(&clock, 1, Advice::Backoff);
    assert!(t.credential().await.is_err());
    assert_eq!(cloud.seen(), ["jwt-1"]);
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 1);
    assert_eq!(t.snapshot().stopped, None);
    assert!(retry_in(&t, &clock) <= Backoff::DEFAULT.ceiling(1));

    let (tokens, cloud, t) = exchanged(&clock, 0, Advice::Backoff);
    *tokens.refuse.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(Advice::Stop { side: Side::Issuer });
    let err = refusal(&t).await;
    assert!(
        err.contains("stopped: needs a change on the Keycloak side: issuer 'corp' refused"),
        "{err}"
    );
    assert!(cloud.seen().is_empty());
    assert_eq!(t.snapshot().stopped, Some(Side::Issuer));
}
