//! Where a target's credentials come from: a [`Source`] makes one upstream attempt. The engine
//! decides when to call it; sources know nothing of schedules, files or endpoints.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::credential::Credential;

/// Why an attempt failed, in the upstream's own words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub message: String,
}

impl FetchError {
    pub fn new(error: &dyn std::error::Error) -> Self {
        Self {
            message: error.to_string(),
        }
    }
}

pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<Credential, FetchError>> + Send + 'a>>;

/// One attempt by `source`, given up after `timeout` (`[engine] attempt_timeout`): a hung
/// upstream ends as a failed attempt.
pub async fn fetch_within(
    source: &dyn Source,
    timeout: Duration,
) -> Result<Credential, FetchError> {
    tokio::time::timeout(timeout, source.fetch())
        .await
        .unwrap_or_else(|_| {
            Err(FetchError {
                message: format!(
                    "no answer within {} s (engine.attempt_timeout)",
                    timeout.as_secs_f32()
                ),
            })
        })
}

/// One target's upstream.
pub trait Source: Send + Sync + Debug {
    /// One attempt at a new credential.
    fn fetch(&self) -> Fetch<'_>;

    /// How long before expiry the credential's consumers ask for a new one; the engine
    /// refreshes before that when the lifetime allows.
    fn consumer_window(&self) -> Duration;
}
