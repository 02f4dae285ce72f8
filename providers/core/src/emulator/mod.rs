//! Plumbing for keyfed's emulators of outside systems (Keycloak, AWS STS, …): an HTTP/1.1
//! server over plain TCP or TLS, a test certificate authority, fault injection and request
//! counters that tests drive directly, the OIDC token verification the emulated clouds share
//! (`oidc`), the rows of the README's reliability table (`report`), and the one way an emulator tells tests which secrets it handed out. Each provider
//! crate builds its own routes on top.

mod control;
pub mod oidc;
pub mod report;
mod server;
mod tls;

pub use control::{Control, Fault, Latch};
pub use oidc::{Claims, OidcFailure, OidcVerifier, Policy, UnverifiedJwt, VerifiedJwt};
pub use server::{RunningServer, serve};
pub use tls::TestCa;

/// An emulator that hands out secrets (tokens, keys), so a test can check that none of them
/// shows up where it must not (keyfed's logs and output): the leak check holds every emulator
/// of a run as one of these and asks each at the moment it checks.
pub trait IssuesSecrets: Send + Sync {
    /// What a leaked secret of this emulator is called in a failure message, e.g. "an AWS
    /// secret key or session token the STS emulator issued". Never the secret itself.
    fn secret_kind(&self) -> &'static str;

    /// Every secret issued so far, each as the part that makes it usable (a JWT's signature,
    /// not its readable header and claims).
    fn issued_secrets(&self) -> Vec<String>;
}
