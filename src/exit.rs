//! Exit statuses, and how an error reaches the operator: `error: ` and the whole cause chain on
//! standard error.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the work failed: an upstream refused, a token failed its checks, the network failed |
//! | 2 | usage: bad flags or arguments, an unknown target name |
//! | 3 | configuration: the file is missing, unreadable or invalid |

use std::process::ExitCode;

use crate::config::ConfigError;

/// A mistake on the command line (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const CONFIG: u8 = 3;

pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(status_of(&error))
        }
    }
}

fn status_of(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<ConfigError>().is_some() {
        CONFIG
    } else if error.downcast_ref::<UsageError>().is_some() {
        USAGE
    } else {
        FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn statuses_survive_context() {
        let config = ConfigError::file(std::path::Path::new("/x"), "bad");
        let wrapped = Err::<(), _>(config)
            .context("loading")
            .map_err(|e| status_of(&e));
        assert_eq!(wrapped, Err(CONFIG));
        assert_eq!(status_of(&UsageError("x".into()).into()), USAGE);
        assert_eq!(status_of(&anyhow::anyhow!("upstream")), FAILURE);
    }
}
