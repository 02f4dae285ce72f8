//! The engine's rules with time driven by the test: refreshes on schedule for a simulated day,
//! keeps serving the last good credential through an outage but never past its expiry, recovers
//! within one backoff step, and makes one upstream call for a burst of demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use keyfed_aws::AwsCredentials;
use keyfed_core::clock::{Clock, ManualClock};

use super::*;
use crate::credential::Credential;

const T0: u64 = 1_800_000_000;

#[derive(Debug)]
struct Fake {
    clock: ManualClock,
    lifetime: Duration,
    calls: AtomicU32,
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

impl Fake {
    fn new(clock: &ManualClock, lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock: clock.clone(),
            lifetime,
            calls: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        })
    }
}

#[derive(Debug)]
struct Shared(Arc<Fake>);

impl Source for Shared {
    fn fetch(&self) -> Fetch<'_> {
        Box::pin(async move {
            let fake = &self.0;
            fake.calls.fetch_add(1, Ordering::SeqCst);
            let delay = fake.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if fake.failing.load(Ordering::SeqCst) {
                return Err(FetchError {
                    message: "InvalidIdentityToken: upstream is down".to_owned(),
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

fn target(clock: &ManualClock, fake: &Arc<Fake>) -> Arc<TargetEngine> {
    Arc::new(TargetEngine::new(
        "t".to_owned(),
        Box::new(Shared(Arc::clone(fake))),
        Vec::new(),
        Arc::new(clock.clone()),
        Backoff::DEFAULT,
        Duration::from_secs(60),
    ))
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
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    let t = target(&clock, &fake);
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
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    let t = target(&clock, &fake);
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
    let err = t
        .credential()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
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
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    fake.failing.store(true, Ordering::SeqCst);
    let t = target(&clock, &fake);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_demand_makes_one_upstream_call() {
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    fake.delay_ms.store(300, Ordering::SeqCst);
    let t = target(&clock, &fake);
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.credential().await.map(|c| c.credential.expires_at()) })
        })
        .collect();
    for caller in callers {
        let got = caller.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(got.is_ok(), "{got:?}");
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_usable_credential_is_served_at_once_while_a_slow_refresh_is_due() {
    // Regression: consumers used to wait for a due refresh; with a hanging upstream the SDKs'
    // 1–2 s timeouts expired although a good credential was at hand.
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    let t = target(&clock, &fake);
    let first = t.credential().await.unwrap_or_else(|e| panic!("{e}"));
    clock.advance(Duration::from_secs(50 * 60)); // past 2/3 of the lifetime: a refresh is due
    // From now on the upstream hangs; a refresh is under way.
    fake.delay_ms.store(30_000, Ordering::SeqCst);
    let hanging = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.refresh().await.is_ok() }
    });
    settle().await;
    let served = tokio::time::timeout(Duration::from_millis(200), t.credential())
        .await
        .unwrap_or_else(|_| panic!("the consumer waited for the refresh"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(Arc::ptr_eq(&served, &first));
    hanging.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_giving_up_does_not_cancel_the_refresh() {
    let clock = start();
    let fake = Fake::new(&clock, Duration::from_secs(3600));
    fake.delay_ms.store(300, Ordering::SeqCst);
    let t = target(&clock, &fake);
    let impatient = {
        let t = Arc::clone(&t);
        tokio::spawn(async move { t.credential().await.is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    impatient.abort();
    let patient = t.credential().await;
    assert!(patient.is_ok(), "{patient:?}");
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "the abandoned refresh was not repeated"
    );
}
