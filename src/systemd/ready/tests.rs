//! Readiness waits for the engine's changes, not for a timer (issue 13, review).

use std::time::{Duration, UNIX_EPOCH};

use keyfed_core::clock::ManualClock;
use tokio::sync::watch;

use super::*;
use crate::systemd::testing;

/// issue 13 (review): readiness used to look at the targets every 20 ms (up to 180,000 times
/// with an hour's start_jitter). It now waits for the engine to say a target changed: the
/// first poll after the first round ends finds it ready, with no timer to wait for.
#[tokio::test]
async fn issue_13_readiness_comes_with_the_change_that_makes_it() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_714_564_800));
    let (_open, gate) = watch::channel(true);
    for policy in [Ready::All, Ready::Any] {
        let served = testing::served(&clock, Duration::from_secs(3600), &gate, &["a", "b"]);
        let mut ready = std::pin::pin!(settled(&served.engine, policy, &clock));
        assert!(futures::poll!(&mut ready).is_pending(), "{policy:?}");
        let a = served.engine.target("a").unwrap_or_else(|| panic!("a"));
        a.refresh().await.unwrap_or_else(|e| panic!("{e}"));
        if policy == Ready::All {
            assert!(
                futures::poll!(&mut ready).is_pending(),
                "all: b has not been tried"
            );
            let b = served.engine.target("b").unwrap_or_else(|| panic!("b"));
            b.refresh().await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(
            futures::poll!(&mut ready).is_ready(),
            "{policy:?}: ready at the first look after the change"
        );
    }
}
