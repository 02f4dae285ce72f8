//! Which events are logged: `KEYFED_LOG` (an `EnvFilter` filter) or the default, then
//! `--log-level` for keyfed's own crates.
//!
//! `--log-level LEVEL` combines with `KEYFED_LOG`: it replaces the level `KEYFED_LOG` (or the
//! default) gives each of keyfed's crates, and leaves every other directive alone — libraries
//! (`KEYFED_LOG=reqwest=debug --log-level debug` logs both at debug) and directives naming a
//! module inside keyfed (`keyfed::engine=trace`), which are more specific and so still apply.
//! Without `KEYFED_LOG` libraries stay at `warn`.
//!
//! A `KEYFED_LOG` that does not parse is not used, and not silently: the default applies (with
//! `--log-level`, if given) and one warning names the filter and what is wrong with it — not
//! UTF-8 included. An empty `KEYFED_LOG` counts as unset.

use std::ffi::OsStr;

use tracing_subscriber::EnvFilter;

use crate::cli::LogLevel;

/// keyfed's own crates, as `tracing` targets: every crate of the workspace (a unit test holds
/// this list to the workspace's members).
pub(super) const CRATES: [&str; 6] = [
    "keyfed",
    "keyfed_core",
    "keyfed_keycloak",
    "keyfed_aws",
    "keyfed_gcp",
    "keyfed_azure",
];

/// The filter to log with, and the warning to log once logging is up, if any.
pub(super) struct Chosen {
    pub filter: EnvFilter,
    pub warning: Option<String>,
}

/// The filter for `keyfed_log` (the value of `KEYFED_LOG`, if set) and `level`.
pub(super) fn choose(keyfed_log: Option<&OsStr>, level: Option<LogLevel>) -> Chosen {
    let given = keyfed_log.map(|f| f.to_str().map(str::trim).ok_or(f));
    let (base, problem) = match given {
        None | Some(Ok("")) => (default(), None),
        Some(Ok(f)) => match EnvFilter::builder().parse(f) {
            Ok(_) => (f.to_owned(), None),
            Err(e) => (
                default(),
                Some(format!("{f:?} is not a valid filter ({e})")),
            ),
        },
        Some(Err(f)) => (
            default(),
            Some(format!("{:?} is not UTF-8", f.to_string_lossy())),
        ),
    };
    let warning = problem.map(|problem| {
        format!(
            "KEYFED_LOG={problem}; logging with the default filter instead (see `keyfed --help`, \
             --log-level)"
        )
    });
    let directives = match level {
        // Later directives for the same target replace earlier ones.
        Some(level) => format!("{base},{}", own(level)),
        None => base,
    };
    // `directives` is a valid filter (`base` parsed, `own` is ours): the fallback is for form.
    let filter = EnvFilter::builder()
        .parse(&directives)
        .unwrap_or_else(|_| EnvFilter::new(default()));
    Chosen { filter, warning }
}

/// `info` for keyfed's crates, `warn` for everything else.
pub(super) fn default() -> String {
    format!("warn,{}", own(LogLevel::Info))
}

/// `level` for each of keyfed's crates, as filter directives.
fn own(level: LogLevel) -> String {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    CRATES.map(|c| format!("{c}={level}")).join(",")
}
