//! Logs go to standard error through `tracing`; `KEYFED_LOG` takes a filter such as `debug` or
//! `keyfed=debug,reqwest=trace` (default: `info` for keyfed, `warn` for libraries). No secret
//! is ever a field of a log event: secrets are types without `Display`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("KEYFED_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::new("warn,keyfed=info,keyfed_keycloak=info,keyfed_core=info")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}
