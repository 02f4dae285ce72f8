//! Exit statuses, and how an error reaches the operator: `error: ` and the whole cause chain on
//! standard error.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the work failed: an upstream refused, a token failed its checks, the network failed |
//! | 2 | usage: bad flags or arguments, an unknown target name |
//! | 3 | configuration: the file is missing, unreadable or invalid |
//! | 125 | `keyfed exec` only: keyfed itself failed (any of the above, a usage mistake included) and ran no command, as `env` and `timeout` do, so a script can tell keyfed's failure from its command's |
//! | 141 | standard output's reader went away before all was written (`keyfed doctor --json \| head -1`): keyfed stops quietly, as a shell reports a program killed by SIGPIPE (128 + 13) |

use std::io::Write as _;
use std::process::ExitCode;

use crate::config::ConfigError;

/// A mistake on the command line (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Any failure of `keyfed exec` itself, whatever its cause (exit status 125): the statuses
/// below 125 are its command's.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ExecFailure(#[from] pub anyhow::Error);

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const CONFIG: u8 = 3;
pub const EXEC: u8 = 125;
/// Standard output's reader went away: 128 + SIGPIPE.
pub const READER_GONE: u8 = 141;

pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let status = status_of(&error);
            if status != READER_GONE {
                // Written as `eprintln!` would, without its panic when standard error is closed.
                let _ = writeln!(std::io::stderr(), "error: {error:#}");
            }
            ExitCode::from(status)
        }
    }
}

fn status_of(error: &anyhow::Error) -> u8 {
    let reader_gone = error
        .chain()
        .filter_map(|e| e.downcast_ref::<crate::stdout::Error>())
        .any(crate::stdout::Error::reader_gone);
    if reader_gone {
        READER_GONE
    } else if error.downcast_ref::<ExecFailure>().is_some() {
        EXEC
    } else if error.downcast_ref::<ConfigError>().is_some() {
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

    /// issue 12 (review): only standard output's closed pipe is 141; another broken pipe (a
    /// connection the daemon closed) is a failure like any other.
    #[test]
    fn a_closed_standard_output_is_141_issue_12() {
        use std::io::Write as _;
        let (read, mut write) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        drop(read);
        let closed = write
            .write(b"x")
            .err()
            .unwrap_or_else(|| panic!("a write to a closed pipe succeeded"));
        assert_eq!(closed.kind(), std::io::ErrorKind::BrokenPipe);
        let stdout = crate::stdout::tests::error(closed);
        let wrapped = Err::<(), _>(stdout).context("printing the setup");
        assert_eq!(wrapped.map_err(|e| status_of(&e)), Err(READER_GONE));
        let socket = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(status_of(&anyhow::Error::from(socket)), FAILURE);
    }

    /// issue 12: whatever keyfed exec's failure was, its status is 125 and its message the
    /// whole chain, once.
    #[test]
    fn an_exec_failure_is_125_with_its_chain() {
        let usage = Err::<(), _>(anyhow::Error::new(UsageError("unknown target".into())))
            .context("keyfed exec")
            .map_err(|e| anyhow::Error::new(ExecFailure(e)));
        let Err(error) = usage else {
            panic!("an error");
        };
        assert_eq!(status_of(&error), EXEC);
        assert_eq!(format!("{error:#}"), "keyfed exec: unknown target");
    }
}
