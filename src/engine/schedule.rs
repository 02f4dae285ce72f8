//! When to refresh a credential: one small pure function, property-tested.
//!
//! A credential is refreshed when about two thirds of its lifetime has passed (±10 % jitter, so
//! a fleet of hosts started together does not refresh together), and never later than the
//! consumer's own refresh window before expiry when the lifetime allows it: botocore refreshes
//! process and container credentials with under 15 minutes left, so an AWS credential is
//! refreshed while it still has more than that. Nor later than the moment the engine stops
//! serving it ([`EXPIRY_MARGIN`] before expiry), so a short-lived token (under about 90 s) is
//! replaced before it stops being usable rather than after.
//!
//! Before its first credential a target waits a random part of `[engine] start_jitter` (none by
//! default), so a fleet restarted together does not reach Keycloak in the same second; a target
//! holding a credential, a retry time or a caller waiting for a credential never waits for it.
//! The fleet-wide effect of these rules and of the backoff's is simulated in `herd.rs`.

use std::time::{Duration, SystemTime};

use super::target::EXPIRY_MARGIN;

/// The refresh jitter [`refresh_at`] takes, from a random `unit` in [0, 1): ±10 %.
pub fn jitter(unit: f64) -> f64 {
    unit * 0.2 - 0.1
}

/// The moment a target started at `started` first asks for a credential: a random part
/// (`unit`, in [0, 1)) of `start_jitter` later.
pub fn first_attempt(started: SystemTime, start_jitter: Duration, unit: f64) -> SystemTime {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    started + start_jitter.mul_f64(unit)
}

/// When a target's background loop next acts for a credential: at its retry time after a
/// failure, else at its credential's refresh time, else (nothing held, nothing failed yet) at
/// its [`first_attempt`].
pub fn due(
    retry_at: Option<SystemTime>,
    refresh_at: Option<SystemTime>,
    first_at: SystemTime,
) -> SystemTime {
    retry_at.or(refresh_at).unwrap_or(first_at)
}

/// The moment to refresh a credential issued at `issued` that expires at `expires`.
///
/// `jitter` is clamped to ±0.1. `consumer_window` is how long before expiry consumers start
/// asking for a new credential (zero when none does); the engine's own [`EXPIRY_MARGIN`] counts
/// as one too.
pub fn refresh_at(
    issued: SystemTime,
    expires: SystemTime,
    jitter: f64,
    consumer_window: Duration,
) -> SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or(Duration::ZERO);
    let jitter = if jitter.is_finite() {
        jitter.clamp(-0.1, 0.1)
    } else {
        0.0
    };
    let base = lifetime.mul_f64(2.0 / 3.0 * (1.0 + jitter));
    // Each bound is honoured only while it leaves at least a third of the lifetime before the
    // refresh, so a short-lived credential is not refreshed the moment it arrives. The engine's
    // own margin is a bound of its own: a consumer window too wide for the lifetime must not
    // also lose the refresh before the engine stops serving the credential.
    let within = |latest: Duration| (latest >= lifetime / 3).then_some(latest);
    let after = [
        within(lifetime.saturating_sub(consumer_window.max(EXPIRY_MARGIN))),
        within(lifetime.saturating_sub(EXPIRY_MARGIN)),
    ]
    .into_iter()
    .flatten()
    .fold(base, Duration::min);
    issued + after
}

/// The least time a token written for a file's readers lives before it is replaced.
const READERS_MINIMUM: Duration = Duration::from_secs(60);

/// The moment to replace a token that readers take from a file and keep using for up to
/// `readers_window` (Azure SDKs re-read `AZURE_FEDERATED_TOKEN_FILE` every 600 s): before it
/// has less than `readers_window` left whenever the lifetime leaves a minute before that, since
/// a reader holding an expired token fails — not only when a third of the lifetime remains, as
/// [`refresh_at`] asks of consumers that merely refresh early.
pub fn refresh_for_readers(
    issued: SystemTime,
    expires: SystemTime,
    jitter: f64,
    readers_window: Duration,
) -> SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or(Duration::ZERO);
    let latest = lifetime.saturating_sub(readers_window);
    if latest >= READERS_MINIMUM {
        refresh_at(issued, expires, jitter, Duration::ZERO).min(issued + latest)
    } else {
        refresh_at(issued, expires, jitter, readers_window)
    }
}

/// Whether a token living `lifetime` is too short for a file's readers that keep it up to
/// `readers_window`: [`refresh_for_readers`] cannot keep it valid for them.
pub fn too_short_for_readers(lifetime: Duration, readers_window: Duration) -> bool {
    !readers_window.is_zero() && lifetime.saturating_sub(readers_window) < READERS_MINIMUM
}

/// Whether a credential living `lifetime` is too short for consumers that ask for a new one
/// `consumer_window` before it expires: the window would leave less than a third of the
/// lifetime, so [`refresh_at`] cannot honour it and consumers see a credential they consider
/// stale (Azure SDKs re-reading a federated token file every 600 s; botocore with 15 minutes).
pub fn too_short_for(lifetime: Duration, consumer_window: Duration) -> bool {
    !consumer_window.is_zero() && lifetime.saturating_sub(consumer_window) < lifetime / 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn examples() {
        let window = Duration::from_secs(15 * 60);
        // 1 h AWS credential: 2/3 is 40 min, leaving 20 min — already outside botocore's window.
        assert_eq!(
            refresh_at(at(T0), at(T0 + 3600), 0.0, window),
            at(T0 + 2400)
        );
        // 30 min credential: 2/3 would leave 10 min, so refresh with 15 min left.
        assert_eq!(refresh_at(at(T0), at(T0 + 1800), 0.0, window), at(T0 + 900));
        // 15 min credential: the window cannot be honoured; 2/3 it is.
        assert_eq!(refresh_at(at(T0), at(T0 + 900), 0.0, window), at(T0 + 600));
        // A 300 s Keycloak token with no consumer window.
        assert_eq!(
            refresh_at(at(T0), at(T0 + 300), 0.0, Duration::ZERO),
            at(T0 + 200)
        );
        // A 60 s token is replaced before the engine stops serving it, 30 s before expiry.
        assert_eq!(
            refresh_at(at(T0), at(T0 + 60), 0.0, Duration::ZERO),
            at(T0 + 30)
        );
        // issue 9: a consumer window wider than the lifetime (google-auth's 225 s against a
        // 60 s token) still leaves the refresh before the engine stops serving it.
        assert_eq!(
            refresh_at(at(T0), at(T0 + 60), 0.0, Duration::from_secs(225)),
            at(T0 + 30)
        );
        // Already expired (clock skew): refresh at once.
        assert_eq!(refresh_at(at(T0), at(T0 - 5), 0.0, window), at(T0));
    }

    /// issue 10 (review): a 15-minute Keycloak token is replaced with 660 s left for the
    /// readers of an Azure federated token file (2/3 would leave 300 s); a 300 s one cannot be.
    #[test]
    fn file_readers_get_their_window_whenever_a_minute_is_left() {
        let readers = Duration::from_secs(660);
        assert_eq!(
            refresh_for_readers(at(T0), at(T0 + 900), 0.0, readers),
            at(T0 + 240)
        );
        assert_eq!(
            refresh_for_readers(at(T0), at(T0 + 3600), 0.0, readers),
            at(T0 + 2400)
        );
        assert!(!too_short_for_readers(Duration::from_secs(900), readers));
        assert!(too_short_for_readers(Duration::from_secs(700), readers));
        assert!(too_short_for_readers(Duration::from_secs(300), readers));
        assert!(!too_short_for_readers(
            Duration::from_secs(300),
            Duration::ZERO
        ));
    }

    /// issue 10: a 300 s Keycloak token cannot stay valid 11 minutes after each write of an
    /// Azure federated token file; a 1 h one can.
    #[test]
    fn credentials_too_short_for_their_consumers_are_told_apart() {
        let azure = Duration::from_secs(660);
        assert!(too_short_for(Duration::from_secs(300), azure));
        assert!(too_short_for(Duration::from_secs(900), azure));
        assert!(!too_short_for(Duration::from_secs(3600), azure));
        assert!(!too_short_for(Duration::from_secs(300), Duration::ZERO));
    }

    /// issue 11: the first attempt waits a part of `start_jitter`, and only while nothing is
    /// held and nothing has failed.
    #[test]
    fn the_start_jitter_delays_only_a_target_holding_nothing() {
        let spread = Duration::from_secs(60);
        assert_eq!(first_attempt(at(T0), Duration::ZERO, 0.7), at(T0));
        assert_eq!(first_attempt(at(T0), spread, 0.5), at(T0 + 30));
        assert!(first_attempt(at(T0), spread, 0.999_999) < at(T0 + 60));
        assert_eq!(first_attempt(at(T0), spread, f64::NAN), at(T0));
        assert_eq!(first_attempt(at(T0), spread, -1.0), at(T0));
        let first = first_attempt(at(T0), spread, 0.5);
        assert_eq!(due(None, None, first), at(T0 + 30));
        assert_eq!(due(None, Some(at(T0 + 5)), first), at(T0 + 5));
        assert_eq!(due(Some(at(T0 + 7)), Some(at(T0 + 5)), first), at(T0 + 7));
        assert_eq!(due(Some(at(T0 + 1)), None, first), at(T0 + 1));
        assert!((jitter(0.0) + 0.1).abs() < 1e-12);
        assert!(jitter(0.5).abs() < 1e-12);
        assert!(jitter(0.999_999) < 0.1);
    }

    proptest! {
        #[test]
        fn refresh_falls_inside_the_lifetime_and_the_window(
            lifetime in 3u64..(48 * 3600),
            jitter in -0.2f64..0.2,
            window in 0u64..(4 * 3600),
        ) {
            let (issued, expires) = (at(T0), at(T0 + lifetime));
            let window = Duration::from_secs(window);
            let r = refresh_at(issued, expires, jitter, window);
            let after = r.duration_since(issued).unwrap_or_default();
            let life = Duration::from_secs(lifetime);
            // Never before a third of the lifetime (no hot loop), always before expiry.
            prop_assert!(after >= life / 3 - Duration::from_millis(1), "{after:?} of {life:?}");
            prop_assert!(r < expires);
            // Within ±10 % of two thirds, or pulled earlier by the window.
            prop_assert!(after <= life.mul_f64(2.0 / 3.0 * 1.1) + Duration::from_millis(1));
            // The consumer window is honoured whenever it leaves a third of the lifetime.
            if life.saturating_sub(window) >= life / 3 {
                prop_assert!(expires.duration_since(r).unwrap_or_default() >= window);
            }
            // issue 9: so is the engine's margin, whatever the window.
            if life.saturating_sub(EXPIRY_MARGIN) >= life / 3 {
                prop_assert!(expires.duration_since(r).unwrap_or_default() >= EXPIRY_MARGIN);
            }
        }

        #[test]
        fn jitter_spreads_but_is_bounded(lifetime in 60u64..86_400, jitter in -1.0f64..1.0) {
            let r = refresh_at(at(T0), at(T0 + lifetime), jitter, Duration::ZERO);
            let plain = refresh_at(at(T0), at(T0 + lifetime), 0.0, Duration::ZERO);
            let spread = if r > plain { r.duration_since(plain) } else { plain.duration_since(r) };
            let bound = Duration::from_secs(lifetime).mul_f64(2.0 / 3.0 * 0.1) + Duration::from_millis(1);
            prop_assert!(spread.unwrap_or_default() <= bound);
        }
    }
}
