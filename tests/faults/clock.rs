//! A clock an emulator reads, set ahead of or behind the real one while the test runs: the
//! upstream's own idea of "now", for clock skew and for credentials that expire within seconds
//! (an STS whose clock is 780 s behind issues 900 s credentials that expire 120 s from now).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, Sleep, SystemClock};

/// The real time shifted by an offset the test may change at any moment; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Skewed {
    offset_secs: Arc<AtomicI64>,
}

impl Skewed {
    pub fn by(offset_secs: i64) -> Self {
        let clock = Self::default();
        clock.set(offset_secs);
        clock
    }

    /// From now on the clock reads the real time plus `offset_secs` (minus, when negative).
    pub fn set(&self, offset_secs: i64) {
        self.offset_secs.store(offset_secs, Ordering::SeqCst);
    }

    pub fn offset(&self) -> i64 {
        self.offset_secs.load(Ordering::SeqCst)
    }
}

impl Clock for Skewed {
    fn now(&self) -> SystemTime {
        let offset = self.offset();
        let by = Duration::from_secs(offset.unsigned_abs());
        if offset >= 0 {
            SystemClock.now() + by
        } else {
            SystemClock.now() - by
        }
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        // Re-read often: the offset may change while a sleeper waits.
        Box::pin(async move {
            while let Ok(left) = deadline.duration_since(self.now()) {
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            }
        })
    }
}
