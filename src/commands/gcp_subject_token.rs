//! `keyfed gcp-subject-token <target>`: the command an executable-sourced external_account file
//! names (`credential_source.executable.command`). Google's libraries run it (with
//! `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`) and read one JSON document from stdout:
//! `{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt",
//! "id_token":"<JWT>","expiration_time":<Unix seconds>}`; a failure is the same shape with
//! `"success":false`, `"code"` and `"message"`, and a non-zero exit.
//!
//! The token comes from the running daemon over the control socket (the target's subject
//! token, kept fresh there, only for users the target's `allow_users`/`allow_groups` admit):
//! the caller needs no access to the issuer's secret.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::config;
use crate::control::client::ask;
use crate::control::{Request, Response};
use crate::exit::UsageError;

/// How long to wait for the daemon (it may be fetching a token).
const DAEMON_TIMEOUT: Duration = Duration::from_secs(25);

/// The token type Google's libraries expect of an OIDC subject token.
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

pub async fn run(path: &Path, target: &str) -> anyhow::Result<()> {
    let outcome = subject_token(path, target).await;
    match outcome {
        Ok((token, expires_at)) => {
            let document = json!({
                "version": 1,
                "success": true,
                "token_type": JWT_TOKEN_TYPE,
                "id_token": token,
                "expiration_time": expires_at,
            });
            crate::stdout::write(format!("{document}\n"))?;
            Ok(())
        }
        Err(e) => {
            // Google's libraries show `message`; the exit status and stderr say it too (and
            // say it alone when the reader has gone).
            let document = json!({
                "version": 1,
                "success": false,
                "code": "KEYFED_ERROR",
                "message": format!("{e:#}"),
            });
            let _ = crate::stdout::write(format!("{document}\n"));
            Err(e)
        }
    }
}

async fn subject_token(path: &Path, target: &str) -> anyhow::Result<(String, u64)> {
    let socket = config::control_socket(path, &super::env_var, &super::host())?;
    let request = Request::SubjectToken {
        target: target.to_owned(),
    };
    match ask(&socket, &request, DAEMON_TIMEOUT).await? {
        Response::Credential {
            kind,
            document,
            expires_at,
        } if kind == "token" => Ok((document, expires_at)),
        Response::Credential { kind, .. } => Err(UsageError(format!(
            "the daemon answered with a {kind} credential instead of target \"{target}\"'s subject token"
        ))
        .into()),
        Response::Error { message, .. } => anyhow::bail!("{message}"),
        Response::Status { .. } | Response::IdentityPair { .. } => {
            anyhow::bail!("the daemon answered something else")
        }
    }
}
