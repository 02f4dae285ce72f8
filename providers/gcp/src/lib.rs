//! keyfed's client for Google Cloud workload identity federation: it trades an OIDC token from
//! the issuer (Keycloak) at Google's Security Token Service (RFC 8693 token exchange) for a
//! federated access token, and optionally trades that at IAM Credentials for a service
//! account's access token (`generateAccessToken`) or ID token (`generateIdToken`) — DESIGN §9.
//! Every expiry is the exact one Google gave (`expires_in`, `expireTime`, the ID token's `exp`);
//! every failure quotes Google's own words (RFC 6749 JSON from STS, `{error:{code,message,
//! status}}` from IAM Credentials), adds a hint for the usual pool, provider and binding
//! mistakes, and says through its [`Advice`](keyfed_core::exchange::Advice) whether to back off,
//! fetch a fresh subject token and retry once, or stop until keyfed's configuration or the
//! Google Cloud side changes. [`GcpExchange`] is Google Cloud's side of keyfed's exchange
//! contract, with the keyed variants GCE consumers ask for: other scopes, and ID tokens.
//!
//! Why a client of keyfed's own: the released `gcp_auth` crate has no workload identity
//! federation, and Google's `google-cloud-auth` hides the token's expiry, which keyfed's
//! refresh schedule and every output need.
//!
//! [`config`] reads and checks a target's `gcp` table of keyfed's configuration.
//!
//! Behind the `emulator` feature sits an emulator of STS and IAM Credentials that checks subject
//! tokens as a workload identity pool provider does, used by tests and `keyfed demo`.

mod client;
pub mod config;
mod error;
mod exchange;
mod token;

#[cfg(feature = "emulator")]
pub mod emulator;

#[cfg(test)]
mod debug_redaction;

#[cfg(all(test, feature = "emulator"))]
mod tests;

pub use client::GcpClient;
pub use error::{Call, GcpError};
pub use exchange::GcpExchange;
pub use token::{GcpToken, GcpTokenKind};
