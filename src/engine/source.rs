//! Where a target's credentials come from: a [`Source`] makes one upstream attempt, for the
//! target's main credential or for one of its keyed variants ([`SlotKey`]) that the source says
//! it has. The engine decides when to call it; sources know nothing of schedules, files or
//! endpoints.
//!
//! A failed attempt carries the upstream's words and its [`Advice`]: the engine backs off after
//! a passing trouble and, when the advice is to stop, waits the longest backoff step and says
//! which side must change.

use std::fmt::{self, Debug};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use keyfed_core::exchange::{Advice, Advise, Side, SlotKey};

use crate::credential::Credential;

/// Why an attempt failed, in the upstream's own words, and what to do about it. A stopped
/// attempt reads "stopped: needs a change on <side>: <words>" wherever it is shown.
#[derive(Debug, Clone)]
pub struct FetchError {
    pub message: String,
    pub advice: Advice,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.advice.stopped() {
            Some(side) => write!(f, "stopped: needs a change on {side}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// An upstream's error, with its advice.
    pub fn new(error: &dyn Advise) -> Self {
        Self {
            message: error.to_string(),
            advice: error.advice(),
        }
    }

    /// A variant the source does not issue: only a change of keyfed's configuration (or of
    /// the consumer asking for it) helps. The engine refuses such requests before calling the
    /// source; this is the source's own guard.
    pub fn no_slot(slot: &SlotKey) -> Self {
        Self {
            message: format!("this target's cloud issues no credential for {slot}"),
            advice: Advice::Stop { side: Side::Config },
        }
    }

    /// A passing trouble of keyfed's own (a timeout, a task that failed): retried with backoff.
    pub fn passing(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            advice: Advice::Backoff,
        }
    }

    /// The side that must change, when the attempt stopped.
    pub fn stopped(&self) -> Option<Side> {
        self.advice.stopped()
    }
}

pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<Credential, FetchError>> + Send + 'a>>;

/// One attempt by `source` at its main credential, given up after `timeout` (`[engine]
/// attempt_timeout`): a hung upstream ends as a failed attempt, retried with backoff.
pub async fn fetch_within(
    source: &dyn Source,
    timeout: Duration,
) -> Result<Credential, FetchError> {
    fetch_slot_within(source, None, timeout).await
}

/// [`fetch_within`] for the variant `slot` (`None`: the main credential).
pub async fn fetch_slot_within(
    source: &dyn Source,
    slot: Option<&SlotKey>,
    timeout: Duration,
) -> Result<Credential, FetchError> {
    tokio::time::timeout(timeout, source.fetch(slot))
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::passing(format!(
                "no answer within {} s (engine.attempt_timeout)",
                timeout.as_secs_f32()
            )))
        })
}

/// One target's upstream.
pub trait Source: Send + Sync + Debug {
    /// One attempt at a new credential: the main one (`slot` is `None`), or the variant `slot`,
    /// which [`Source::has_slot`] accepted.
    fn fetch<'a>(&'a self, slot: Option<&'a SlotKey>) -> Fetch<'a>;

    /// Whether the source issues the variant `slot`; none by default (AWS, a bare token).
    fn has_slot(&self, slot: &SlotKey) -> bool {
        let _ = slot;
        false
    }

    /// How long before expiry the credential's consumers ask for a new one; the engine
    /// refreshes before that when the lifetime allows.
    fn consumer_window(&self) -> Duration;

    /// The same for the subject token ([`SlotKey::SubjectToken`]), whose consumers are others:
    /// those of the files it is written to (Azure SDKs re-read a federated token file every
    /// 600 s). None by default: the file's reader re-reads it when it needs it.
    fn subject_window(&self) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_attempt_names_the_side_and_keeps_the_upstreams_words() {
        let stopped = FetchError {
            message: "STS refused AssumeRoleWithWebIdentity: AccessDenied: \"Not authorized\""
                .to_owned(),
            advice: Advice::Stop { side: Side::Cloud },
        };
        assert_eq!(
            stopped.to_string(),
            "stopped: needs a change on the cloud side: STS refused AssumeRoleWithWebIdentity: AccessDenied: \"Not authorized\""
        );
        assert_eq!(stopped.stopped(), Some(Side::Cloud));
        let passing = FetchError::passing("connection refused");
        assert_eq!(passing.to_string(), "connection refused");
        assert_eq!(passing.stopped(), None);
    }
}
