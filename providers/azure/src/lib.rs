//! keyfed's client for Microsoft Entra ID federated identity credentials: an app registration or
//! user-assigned managed identity with no secret or certificate proves itself with the issuer's
//! (Keycloak's) token as a client assertion (`client_credentials` grant,
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, audience
//! `api://AzureADTokenExchange` by default) and gets an access token for one resource scope
//! (`<resource>/.default`) with its exact expiry — DESIGN §9. The request is keyfed's own, not
//! `azure_identity`'s `ClientAssertionCredential`: [`EntraClient`]'s module says why. Every failure quotes Entra's
//! `AADSTS` code and description, adds a hint for the usual federated-credential mistakes
//! (70021 no match, 700211 issuer, 700213 subject, 700024 validity, 70023 lifetime), and says
//! through its [`Advice`](keyfed_core::exchange::Advice) whether to back off, fetch a fresh
//! subject token and retry once, or stop. [`EntraExchange`] is Azure's side of keyfed's exchange
//! contract, with one keyed variant per resource.
//!
//! [`config`] reads and checks a target's `azure` table of keyfed's configuration.
//!
//! Behind the `emulator` feature sits an emulator of Entra's token endpoint that checks client
//! assertions as federated identity credentials do, used by tests and `keyfed demo`.

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

pub use client::EntraClient;
pub use error::{AzureError, Refusal};
pub use exchange::EntraExchange;
pub use token::{AzureToken, scope_for_resource};
