//! What every keyfed provider crate shares, and nothing more: the injected clock, the secret
//! type, the exchange contract (a subject token in, a credential with an exact expiry out, and
//! the advice every error carries: back off, fetch a fresh subject token, or stop), the outbound
//! HTTP client (rustls, system roots plus an optional CA file, proxies from
//! `HTTPS_PROXY`/`NO_PROXY`, timeouts, the loopback-only rule for plain `http://`; `proxy`: what
//! a proxy that refused a tunnel said), the pieces
//! each provider reads its own configuration table with (`config`: human durations, the shared
//! HTTP keys, errors naming a key within the table), the unverified claims of a token that
//! hints quote (`token_facts`), what each cloud requires of the token it is given
//! (`token_rules`), the quoting of values in printed commands and Terraform (`quote`), and —
//! behind
//! the `emulator` feature — the HTTP(S) server plumbing with fault injection that the providers'
//! emulators are built on.
//!
//! Provider crates depend on this one; it knows nothing of keyfed's files, endpoints or systemd.

pub mod clock;
pub mod config;
pub mod exchange;
pub mod http;
pub mod proxy;
pub mod quote;
pub mod secret;
pub mod token_facts;
pub mod token_rules;

#[cfg(feature = "emulator")]
pub mod emulator;

pub use clock::{Clock, ManualClock, SystemClock};
pub use exchange::{Advice, Advise, Exchange, Expiring, Side};
pub use secret::{ExposeSecret, REDACTED, SecretString};
