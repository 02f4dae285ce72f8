//! Retry delays after a failed refresh: exponential with full jitter (a random delay between
//! zero and the exponential ceiling), so a fleet that lost its upstream together does not come
//! back together. With the defaults the ceilings are 1 s, 2 s, 4 s, … 256 s, then 300 s.
//!
//! A stopped target (its upstream refused in a way only a change on some side can fix) skips
//! the short steps: it waits the longest step, plus up to a tenth of it so a fleet stopped
//! together is not retried together. Any other failure waits the jittered step, but no longer
//! than a quarter of the time its still usable credential has left ([`Backoff::after_failure`]).

use std::time::Duration;

/// Validated backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

/// The floor under any jittered delay, so "full jitter" never means "retry in a busy loop".
const FLOOR: Duration = Duration::from_millis(100);

impl Backoff {
    #[cfg(test)]
    pub const DEFAULT: Self = Self {
        min: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// Refuses a zero minimum and a maximum below the minimum.
    pub fn new(min: Duration, max: Duration) -> Result<Self, String> {
        if min.is_zero() {
            return Err("the minimum backoff must be greater than zero".to_owned());
        }
        if max < min {
            return Err(format!(
                "the maximum backoff ({max:?}) is below the minimum ({min:?})"
            ));
        }
        Ok(Self { min, max })
    }

    /// The exponential ceiling for retry number `attempt` (1 for the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.min
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before retrying a stopped target: the longest step, never less, plus up to a
    /// tenth of it; `unit` is a random number in [0, 1).
    pub fn stopped_delay(&self, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.max + (self.max / 10).mul_f64(unit)
    }

    /// The longest step (`[engine] retry_max`).
    #[cfg(test)]
    pub fn longest(&self) -> Duration {
        self.max
    }

    /// How long a target waits after a failed attempt, `failures` counting it: the longest step
    /// (and a little more) when the failure `stopped` it — only a change elsewhere helps, and
    /// retrying sooner would only repeat a refused request, whatever its credential's expiry —
    /// else the jittered step, made shorter as the expiry of a credential still usable for
    /// `usable_left` nears (a quarter of that, at least 1 s). `unit` is a random number in
    /// [0, 1).
    pub fn after_failure(
        &self,
        failures: u32,
        stopped: bool,
        usable_left: Option<Duration>,
        unit: f64,
    ) -> Duration {
        if stopped {
            return self.stopped_delay(unit);
        }
        let delay = self.delay(failures, unit);
        match usable_left {
            Some(left) => delay.min((left / 4).max(Duration::from_secs(1))),
            None => delay,
        }
    }

    /// The delay before retry number `attempt`; `unit` is a random number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.ceiling(attempt).mul_f64(unit).max(FLOOR.min(self.min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nonsense_bounds() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let b = Backoff::DEFAULT;
        let ceilings: Vec<u64> = (1..=11).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn delays_are_jittered_below_the_ceiling_with_a_floor() {
        let b = Backoff::DEFAULT;
        assert_eq!(b.delay(4, 0.5), Duration::from_secs(4));
        assert_eq!(b.delay(4, 0.0), FLOOR);
        assert_eq!(b.delay(20, 0.999_999).as_secs(), 299);
        assert_eq!(b.delay(3, f64::NAN), Duration::from_secs(4));
    }

    #[test]
    fn a_usable_credential_shortens_the_wait_but_not_a_stop() {
        let b = Backoff::DEFAULT;
        let left = |s| Some(Duration::from_secs(s));
        assert_eq!(
            b.after_failure(9, false, None, 0.5),
            Duration::from_secs(128)
        );
        assert_eq!(
            b.after_failure(9, false, left(200), 0.5),
            Duration::from_secs(50)
        );
        assert_eq!(
            b.after_failure(9, false, left(2), 0.5),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.after_failure(2, false, left(3600), 0.5),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.after_failure(1, true, left(2), 0.0),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn a_stopped_target_waits_the_longest_step_or_a_little_more() {
        let b = Backoff::DEFAULT;
        assert_eq!(b.stopped_delay(0.0), Duration::from_secs(300));
        assert_eq!(b.stopped_delay(0.5), Duration::from_secs(315));
        assert!(b.stopped_delay(0.999_999) < Duration::from_secs(330));
        assert_eq!(b.stopped_delay(f64::NAN), Duration::from_secs(300));
        assert_eq!(b.stopped_delay(-3.0), Duration::from_secs(300));
    }
}
