//! Time as a parameter: code that needs "now" takes a [`Clock`], so tests can drive refresh
//! schedules and expiry checks without sleeping. `SystemTime::now` is banned elsewhere by
//! `clippy.toml`; [`SystemClock`] is the one place that reads the real time.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// A future returned by [`Clock::sleep_until`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of wall-clock time, and a way to wait for a moment of it.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> SystemTime;

    /// Completes at (or soon after) `deadline` as this clock reads time.
    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_>;
}

/// The host's real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The longest single timer [`SystemClock`] arms. Timers run on the monotonic clock, which
/// stops while the host is suspended; re-reading the wall clock at least this often keeps a
/// refresh from sleeping through a suspend and past its credential's expiry.
const MAX_TIMER: Duration = Duration::from_secs(300);

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the single sanctioned reader of the real time
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        Box::pin(async move {
            while let Ok(left) = deadline.duration_since(self.now()) {
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(MAX_TIMER)).await;
            }
        })
    }
}

/// A clock that moves only when told to; clones share the same time, and sleepers wake when
/// the time they wait for is reached.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<SystemTime>>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// A manual clock starting at the real current time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }

    pub fn set(&self, to: SystemTime) {
        self.now.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        let mut changes = self.now.subscribe();
        Box::pin(async move {
            while *changes.borrow_and_update() < deadline {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// Seconds since the Unix epoch, saturating at zero for times before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The time `secs` seconds after the Unix epoch (saturating far in the future).
pub fn from_unix_seconds(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)))
}

/// RFC 3339 in UTC with a `Z` suffix and whole seconds, the form every cloud SDK accepts.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = i64::try_from(unix_seconds(t)).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|dt| {
            dt.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// RFC 3339 in UTC with milliseconds, `2026-01-02T12:41:05.123Z`: the timestamps of log lines.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|dt| dt.replace_nanosecond(since.subsec_nanos()).ok())
        .and_then(|dt| {
            dt.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned())
}

/// The IMF-fixdate form of HTTP's `Date` header (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// `t` as an HTTP `Date` header value (whole seconds, UTC).
pub fn http_date(t: SystemTime) -> String {
    let secs = i64::try_from(unix_seconds(t)).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|dt| dt.format(HTTP_DATE).ok())
        .unwrap_or_else(|| "Fri, 31 Dec 9999 23:59:59 GMT".to_owned())
}

/// An HTTP `Date` header value read back: the IMF-fixdate form every current server sends;
/// `None` for anything else (the obsolete RFC 850 and asctime forms included).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parsed = time::PrimitiveDateTime::parse(text.trim(), HTTP_DATE).ok()?;
    let secs = u64::try_from(parsed.assume_utc().unix_timestamp()).ok()?;
    Some(from_unix_seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let other = clock.clone();
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
        other.advance(Duration::from_secs(90));
        assert_eq!(unix_seconds(clock.now()), 90);
    }

    #[tokio::test]
    async fn manual_sleepers_wake_when_time_is_reached() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap_or_else(|_| panic!("the sleeper did not wake"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn system_sleep_until_the_past_returns_at_once() {
        let past = SystemTime::UNIX_EPOCH;
        tokio::time::timeout(Duration::from_secs(1), SystemClock.sleep_until(past))
            .await
            .unwrap_or_else(|_| panic!("slept"));
    }

    #[test]
    fn http_dates_round_trip_and_garbage_is_none() {
        let t = from_unix_seconds(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        for text in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "yesterday",
        ] {
            assert_eq!(parse_http_date(text), None, "{text}");
        }
    }

    #[test]
    fn rfc3339_is_utc_with_z() {
        assert_eq!(
            rfc3339(from_unix_seconds(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rfc3339_millis_keeps_milliseconds_cut_not_rounded() {
        let t = from_unix_seconds(1_700_000_000) + Duration::from_micros(250_999);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.250Z");
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z",
            "before the epoch: the epoch, as rfc3339 does"
        );
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999Z",
            "past the year 9999"
        );
        // The same text as humantime's, which logs were stamped with before.
        for millis in [
            0,
            999,
            951_782_400_001,
            1_700_000_000_250,
            253_402_300_799_999,
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(
                rfc3339_millis(t),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }
}
