//! The control socket: a Unix stream socket on which local clients (`keyfed credential-process`,
//! `keyfed status`, `keyfed exec`, `keyfed env`) ask the running daemon for a target's
//! credential or every target's state. One JSON request line in, one JSON response line out;
//! `keyfed exec` then keeps the connection open for as long as the identity-header pair it got
//! must stay valid. A credential goes only to a peer (SO_PEERCRED) the target's `allow_users` /
//! `allow_groups` admit.
//!
//! Default path: `/run/keyfed/keyfed.sock` for root, else `$XDG_RUNTIME_DIR/keyfed.sock`
//! (`[control] socket` in the configuration overrides it); mode 0660, group configurable.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The target's current credential, in its consumer format.
    Credential { target: String },
    /// The issuer's token the target exchanges (for consumers that make the exchange
    /// themselves: `keyfed gcp-subject-token`).
    SubjectToken { target: String },
    /// Every target's state (no secrets).
    Status,
    /// What `keyfed exec` and `keyfed env` put in a command's environment (issue 12): an AWS
    /// or GCP target's credential (answered as `Credential`), or for an Azure target an
    /// identity-header pair bound to it and the asking uid (`IdentityPair`): a fresh one valid
    /// while this connection stays open with `hold`, else one valid until the target's current
    /// token expires (the same uid's live one for the target, if any). What is handed out
    /// without `hold` is refreshed first when it would last under 15 minutes. A token target
    /// is refused.
    Environment { target: String, hold: bool },
}

/// Why a token target has no variables for `keyfed exec` and `keyfed env`: what the daemon
/// answers to [`Request::Environment`] and what those commands say without a daemon.
pub fn no_environment_for_token_target(target: &str) -> String {
    format!(
        "target \"{target}\" is a token target: keyfed exec and keyfed env give cloud \
         credentials; pass its token yourself, e.g. \
         curl -H \"Authorization: Bearer $(keyfed token {target})\""
    )
}

/// One target's state, as `keyfed status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetStatus {
    pub name: String,
    pub kind: String,
    /// pending, fresh, refreshing, backing off, stopped, expired.
    pub state: String,
    /// While stopped: who must change something ("keyfed's configuration", "the Keycloak
    /// side", "the cloud side"); `last_error` has the upstream's words.
    #[serde(default)]
    pub stopped: Option<String>,
    pub expires: Option<String>,
    pub next_refresh: Option<String>,
    pub last_error: Option<String>,
    /// Outputs the last credential could not be written to, and why.
    #[serde(default)]
    pub output_errors: Vec<String>,
    pub outputs: Vec<String>,
    pub faces: Vec<String>,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The credential's process document (see `Credential::process_document`), with its kind
    /// and its expiry (Unix seconds).
    Credential {
        kind: String,
        document: String,
        #[serde(default)]
        expires_at: u64,
    },
    /// The targets the asking uid may have, and how many others there are.
    Status {
        targets: Vec<TargetStatus>,
        #[serde(default)]
        hidden: usize,
    },
    /// An identity-header pair for an Azure target (see `Request::Environment`):
    /// `IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, the target's client ID, and when the pair ends
    /// (Unix seconds; none while the asking connection holds it).
    IdentityPair {
        endpoint: String,
        header: String,
        client_id: String,
        #[serde(default)]
        expires_at: Option<u64>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// A credential's document is never shown (issue 11): a response printed for a protocol error
/// or a failed assertion must not carry it.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Credential {
                kind, expires_at, ..
            } => f
                .debug_struct("Credential")
                .field("kind", kind)
                .field("document", &keyfed_core::REDACTED)
                .field("expires_at", expires_at)
                .finish(),
            Self::IdentityPair {
                endpoint,
                client_id,
                expires_at,
                ..
            } => f
                .debug_struct("IdentityPair")
                .field("endpoint", endpoint)
                .field("header", &keyfed_core::REDACTED)
                .field("client_id", client_id)
                .field("expires_at", expires_at)
                .finish(),
            Self::Status { targets, hidden } => f
                .debug_struct("Status")
                .field("targets", targets)
                .field("hidden", hidden)
                .finish(),
            Self::Error { code, message } => f
                .debug_struct("Error")
                .field("code", code)
                .field("message", message)
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownTarget,
    Forbidden,
    Unavailable,
}
