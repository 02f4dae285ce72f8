//! Logs go to standard error through `tracing`; `KEYFED_LOG` takes a filter such as `debug` or
//! `keyfed=debug,reqwest=trace` (default: `info` for keyfed, `warn` for libraries). No secret
//! is ever a field of a log event: secrets are types without `Display`. Whatever the filter, the
//! AWS SDK's runtime is capped at `debug`, because at `trace` it logs whole requests and
//! responses (the web identity token, the issued keys).
//!
//! `keyfed gcp-subject-token` logs nothing: Google's libraries read the executable's standard
//! error and output as one stream and parse it as JSON, so a single warning would break them
//! (its failures are in the JSON it prints, and in its exit status).

use std::io::IsTerminal as _;

use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

const DEFAULT: &str =
    "warn,keyfed=info,keyfed_keycloak=info,keyfed_core=info,keyfed_aws=info,keyfed_gcp=info";

/// Sets up logging to standard error, or none at all when `to_stderr` is false.
pub fn init(to_stderr: bool) {
    if !to_stderr {
        return;
    }
    let wanted = std::env::var("KEYFED_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT));
    let cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("aws_smithy_runtime", LevelFilter::DEBUG);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .with_filter(wanted.and(cap));
    tracing_subscriber::registry().with(layer).init();
}
