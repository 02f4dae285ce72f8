//! The control socket: a Unix stream socket on which local clients (`keyfed credential-process`,
//! later `keyfed status`) ask the running daemon for a target's credential. One JSON request
//! line in, one JSON response line out.
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
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The `credential_process` JSON document for AWS targets (kind "aws"), the raw JWT for
    /// token targets (kind "token").
    Credential {
        kind: String,
        document: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownTarget,
    Unavailable,
}
