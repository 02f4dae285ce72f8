//! keyfed's client for AWS STS `AssumeRoleWithWebIdentity`: it trades an OIDC token from the
//! issuer (Keycloak) for temporary credentials of an IAM role. The call is unsigned and goes to
//! the region's STS endpoint (or `endpoint_url`, or the FIPS endpoint); the SDK's own retries
//! are off and every failure says, through its [`Advice`](keyfed_core::exchange::Advice),
//! whether to back off, fetch a fresh token and retry once, or stop until keyfed's configuration
//! or the AWS side changes (DESIGN §9). Errors quote STS's code and message and add a hint for
//! the usual IAM misconfigurations (OIDC provider URL and audiences, the role's trust policy,
//! MaxSessionDuration). [`StsExchange`] is AWS's side of keyfed's exchange contract.
//!
//! [`session_name`] builds a `RoleSessionName` STS accepts from the target's template.
//!
//! Behind the `emulator` feature sits an emulator of STS (Query protocol, XML answers) that
//! verifies tokens like an IAM OIDC identity provider and a role trust policy do, used by tests
//! and `keyfed demo`.
//!
//! Logging: at `trace` level `aws_smithy_runtime` logs whole requests and responses, which hold
//! the web identity token and the issued keys; a program using this crate must keep that target
//! at `debug` or quieter ([`LOG_DIRECTIVE`]).
//!
//! [`config`] reads and checks a target's `aws` table of keyfed's configuration; beyond that
//! table this crate knows nothing of keyfed's configuration files, outputs or endpoints.

mod client;
pub mod config;
mod credentials;
mod error;
mod exchange;
mod http_client;
mod provider_name;
mod session_name;
mod settings;
mod whole_document;

#[cfg(feature = "emulator")]
pub mod emulator;

#[cfg(test)]
mod debug_redaction;

#[cfg(all(test, feature = "emulator"))]
mod tests;

pub use client::StsClient;
pub use credentials::AwsCredentials;
pub use error::AwsError;
pub use exchange::StsExchange;
pub use session_name::session_name;
pub use settings::{AssumeRoleRequest, StsSettings};

/// A tracing filter directive that keeps the AWS SDK from logging request and response bodies
/// (the token, the secret key) at `trace` level; add it to the program's `EnvFilter`.
pub const LOG_DIRECTIVE: &str = "aws_smithy_runtime=debug";
