//! Logs go to standard error through `tracing`, in one of three shapes chosen at start:
//!
//! - **Under systemd's journal** — `JOURNAL_STREAM` is set *and* names standard error's own
//!   device and inode (systemd's documented check: a child that inherited the variable but
//!   writes its standard error elsewhere is not talking to the journal): every line starts with
//!   a syslog priority prefix (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace) that
//!   journald turns into the entry's `PRIORITY=`, and carries no timestamp of its own (the
//!   journal stamps each entry) and no colour.
//! - **Text elsewhere**: a timestamp in UTC, RFC 3339 with milliseconds
//!   (`2026-01-02T12:41:05.123Z`); on a terminal only the time of day (`12:41:05.123Z`) and
//!   colours.
//! - **`--log-format json`**: one JSON object per line (see `json.rs`); under the journal still
//!   with the priority prefix, which journald strips: the entry's `MESSAGE=` is the bare JSON
//!   object and its `PRIORITY=` is right, which is what journal readers (Vector, Fluent Bit,
//!   Promtail, `journalctl -o json`) expect.
//!
//! Everywhere but a terminal one event is one line: in text a newline or other control
//! character inside a message or field is escaped (`\n`, `\x1b`; a backslash as `\\`), and JSON
//! escapes its own, so no line of a multi-line message reaches the journal without its prefix
//! or a log file without its timestamp. An event's text is cut at 8 KiB, so that journald never
//! splits a line (`line.rs`).
//!
//! Which events: `KEYFED_LOG` takes a filter such as `debug` or `keyfed=debug,reqwest=trace`
//! (default: `info` for keyfed's crates, `warn` for libraries); `--log-level` sets keyfed's own
//! crates' level over it (`filter.rs`). No secret is ever a field of a log event: secrets are
//! types without `Display`. Whatever the filter, the AWS SDK's runtime is capped at `debug`,
//! because at `trace` it logs whole requests and responses (the web identity token, the issued
//! keys).
//!
//! `keyfed gcp-subject-token` logs nothing: Google's libraries read the executable's standard
//! error and output as one stream and parse it as JSON, so a single warning would break them
//! (its failures are in the JSON it prints, and in its exit status).

mod filter;
mod json;
mod line;

#[cfg(test)]
mod tests;

use std::io::IsTerminal as _;
use std::sync::Arc;

use keyfed_core::clock::{Clock, SystemClock};
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::cli::{LogFormat, LogLevel};

/// What the command line asks of logging.
pub struct Settings {
    /// False for commands whose standard error must stay clean (`gcp-subject-token`).
    pub enabled: bool,
    pub format: Option<LogFormat>,
    pub level: Option<LogLevel>,
}

/// Where the lines go, as found at start: it decides their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// systemd's journal (a stream named by `JOURNAL_STREAM`).
    Journal,
    /// A terminal: short timestamps, colours.
    Terminal,
    /// Anything else: a file, a pipe, a container runtime's log.
    Other,
}

/// Sets up logging to standard error, or none at all when `settings.enabled` is false.
pub fn init(settings: Settings) {
    if !settings.enabled {
        return;
    }
    let destination = if line::is_journal(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        line::stderr_identity(),
    ) {
        Destination::Journal
    } else if std::io::stderr().is_terminal() {
        Destination::Terminal
    } else {
        Destination::Other
    };
    let chosen = filter::choose(std::env::var_os("KEYFED_LOG").as_deref(), settings.level);
    let format = settings.format.unwrap_or(LogFormat::Text);
    let layer = layer(format, destination, Arc::new(SystemClock), std::io::stderr);
    tracing_subscriber::registry()
        .with(layer.with_filter(chosen.filter.and(cap())))
        .init();
    if let Some(warning) = chosen.warning {
        tracing::warn!("{warning}");
    }
}

/// The AWS SDK's runtime never logs below `debug` (see the module's documentation).
fn cap() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("aws_smithy_runtime", LevelFilter::DEBUG)
}

/// The layer writing `format` lines for `destination` to `sink`, unfiltered.
fn layer<W>(
    format: LogFormat,
    destination: Destination,
    clock: Arc<dyn Clock>,
    sink: W,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let journal = destination == Destination::Journal;
    // A JSON object is one line already (`json.rs`); escaping it again would break it.
    let one_line = format == LogFormat::Text && destination != Destination::Terminal;
    let lines = line::Lines::new(sink, journal, one_line);
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(lines)
            .with_ansi(false)
            .fmt_fields(json::JsonFields)
            .event_format(json::JsonEvent::new(clock))
            .boxed(),
        LogFormat::Text => {
            let base = tracing_subscriber::fmt::layer()
                .with_writer(lines)
                .with_ansi(destination == Destination::Terminal)
                .with_target(false);
            match destination {
                // The journal stamps every entry itself.
                Destination::Journal => base.without_time().boxed(),
                Destination::Terminal => base.with_timer(line::Utc::short(clock)).boxed(),
                Destination::Other => base.with_timer(line::Utc::full(clock)).boxed(),
            }
        }
    }
}
