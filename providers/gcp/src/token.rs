//! What Google Cloud hands keyfed: an access token (federated, or a service account's) or a
//! service account's ID token, each with its exact expiry.

use std::time::SystemTime;

use keyfed_core::SecretString;
use keyfed_core::exchange::Expiring;

/// A token from Google; the secret stays behind [`SecretString`] (redacted in `Debug`).
#[derive(Debug, Clone)]
pub struct GcpToken {
    pub kind: GcpTokenKind,
    pub token: SecretString,
    /// The exact moment Google said it stops working.
    pub expires_at: SystemTime,
}

/// Which kind of token, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcpTokenKind {
    /// An OAuth 2.0 access token (`token_type` Bearer) for `scopes`: the federated token from
    /// STS when `service_account` is `None`, else the impersonated service account's.
    Access {
        scopes: Vec<String>,
        service_account: Option<String>,
    },
    /// A service account's OpenID Connect ID token for `audience` (`full`: with the fuller
    /// claim set GCE's `format=full` asks for; IAM Credentials' `includeEmail`).
    Id {
        audience: String,
        full: bool,
        service_account: String,
    },
}

impl Expiring for GcpToken {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}
