//! keyfed's client for an OIDC issuer's client-credentials grant, written for Keycloak and
//! honest with any OIDC provider: discovery, the four client authentication methods
//! (`client_secret_basic`, `client_secret_post`, `private_key_jwt`, `client_secret_jwt`),
//! audience requests by `scope`, RFC 8707 `resource` or an `audience` parameter, and a check of
//! every token before anyone uses it (`aud`, `iss`, `exp`, signature against the issuer's JWKS).
//!
//! Errors quote the issuer's own `error` and `error_description` and add a hint for the common
//! Keycloak misconfigurations. Behind the `emulator` feature sits an emulator of a Keycloak
//! realm's token endpoint, used by tests and `keyfed demo`.
//!
//! This crate knows nothing of keyfed's configuration files, outputs or endpoints.

mod assertion;
mod classify;
mod client;
mod discovery;
mod error;
mod jwt;
mod probe;
mod settings;
mod validate;

#[cfg(feature = "emulator")]
pub mod emulator;

#[cfg(all(test, feature = "emulator"))]
mod debug_redaction;
#[cfg(test)]
mod fuzz_tests;

pub use client::KeycloakClient;
pub use error::{KeycloakError, TokenProblem};
pub use jwt::{AccessToken, Audience, DecodedJwt, RefusedToken};
pub use probe::{Discovered, PublishedKey, PublishedKeys};
pub use settings::{
    AssertionAudience, ClientAuth, IssuerSettings, KeyError, SigningAlgorithm, SigningKey,
    TokenRequest,
};
