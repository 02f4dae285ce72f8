//! A target's credential as environment variables, for `keyfed exec` and `keyfed env`
//! (issue 12). One place decides the names and where the values come from:
//!
//! - AWS: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AWS_CREDENTIAL_EXPIRATION` (RFC 3339) — the AWS CLI's and every SDK's environment
//!   provider.
//! - GCP: `CLOUDSDK_AUTH_ACCESS_TOKEN` (gcloud) and `GOOGLE_OAUTH_ACCESS_TOKEN` (Terraform's
//!   google provider) — the target's access token (its main credential is always one; ID tokens
//!   come from the GCE metadata face).
//! - Azure: `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` — the daemon's App Service face and a header
//!   bound to this one target and to the calling user (see `crate::endpoint::pairs`): a fresh
//!   one for `keyfed exec`, the user's live one for the target (if any) for `keyfed env` — and
//!   `AZURE_CLIENT_ID`. The SDK asks the face, which keeps the token fresh, for as long as the
//!   pair lives; a process of another user (`sudo -u`) is refused.
//! - A `token` target is refused: its consumers take a bearer token, `keyfed token <target>`.
//!
//! Variables of the caller's environment that would make an SDK take another identity than the
//! one keyfed hands out are left out of the command's (`keyfed env` unsets them): for AWS
//! `AWS_PROFILE` and `AWS_DEFAULT_PROFILE` (the JavaScript SDK v3 prefers a named profile to
//! the keys in the environment); for Azure those that pick another of azure-identity's
//! credentials before the managed identity, or another managed-identity protocol — see
//! [`AZURE_REMOVES`]. `AZURE_TENANT_ID` stays: on its own it picks nothing (every credential
//! that reads it needs one of the removed variables too), and other tools may want it.
//!
//! Values are fixed once handed out: the daemon refreshes first what would last under 15
//! minutes where it can, and a note on standard error says when what is handed out expires
//! within 15 minutes.
//!
//! The credential comes from the running daemon over the control socket (access-checked by
//! the caller's uid, as for `keyfed credential-process`). Without a daemon, AWS and GCP targets
//! are exchanged once, directly, through the same sources the daemon uses; an Azure target
//! needs the daemon's endpoint, and the error says how to start one.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, SystemClock, from_unix_seconds};
use serde::Deserialize;
use tokio::net::UnixStream;

use crate::config::{self, Exchange};
use crate::control::client::{AskError, ask_and_keep};
use crate::control::{Request, Response};
use crate::exit::UsageError;
use crate::sources;

/// How long to wait for the daemon (it may be mid-refresh), as `credential-process` does.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(90);

/// Values expiring sooner than this get a note on standard error.
const NOTE_UNDER: Duration = Duration::from_secs(15 * 60);

/// AWS variables that override the keys keyfed sets: a named profile, which the JavaScript SDK
/// v3 (and any SDK given a profile explicitly) prefers to keys in the environment.
const AWS_REMOVES: &[&str] = &["AWS_PROFILE", "AWS_DEFAULT_PROFILE"];

/// Azure variables that make azure-identity (and the other Azure SDKs, which follow it) take
/// another identity than the pair's, or speak another protocol to `IDENTITY_ENDPOINT`:
/// `EnvironmentCredential`'s secret, certificate and user (it runs first, and keyfed sets
/// `AZURE_CLIENT_ID`, which it pairs them with), `WorkloadIdentityCredential`'s token file,
/// `AZURE_TOKEN_CREDENTIALS` (which can leave the managed identity out of
/// `DefaultAzureCredential`), and the variables of the Service Fabric, Azure Arc, App Service
/// 2017 and Cloud Shell managed-identity protocols.
pub const AZURE_REMOVES: &[&str] = &[
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
];

/// What the variables are for: a command `keyfed exec` runs (an Azure pair lives while keyfed
/// holds its control connection) or exports `keyfed env` prints (an Azure pair lives until the
/// target's current token expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Exec,
    Env,
}

/// One variable. Its value may be a secret: never logged, and `Debug` hides it.
pub struct Var {
    pub name: &'static str,
    pub value: String,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, keyfed_core::REDACTED)
    }
}

/// The variables for a target, and what keeps them valid.
#[derive(Debug)]
pub struct ChildEnv {
    pub vars: Vec<Var>,
    /// Variables to leave out of the command's environment (see the module's documentation).
    pub removes: &'static [&'static str],
    /// When they stop working; `None` while `hold` stays open.
    pub expires: Option<SystemTime>,
    /// The control connection an Azure pair of `keyfed exec` lives on: close it (drop) only once
    /// the command has ended.
    pub hold: Option<UnixStream>,
}

/// The variables for `target` under the configuration at `path`.
pub async fn fetch(path: &Path, target: &str, usage: Use) -> anyhow::Result<ChildEnv> {
    let env = ask(path, target, usage).await?;
    if let Some(at) = env.expires {
        let left = at.duration_since(SystemClock.now()).unwrap_or_default();
        if left < NOTE_UNDER {
            // A closed standard error is no reason to fail (`eprintln!` would panic).
            let _ = writeln!(std::io::stderr(), "note: {}", expiring(target, left, at));
        }
    }
    Ok(env)
}

/// What the note on standard error says of values that expire `left` from now, at `at`.
fn expiring(target: &str, left: Duration, at: SystemTime) -> String {
    format!(
        "the values for target \"{target}\" expire in {} (at {}), and nothing renews them \
         once handed out",
        humantime::format_duration(Duration::from_secs(left.as_secs())),
        keyfed_core::clock::rfc3339(at)
    )
}

/// The variables, from the daemon or, without one, from a direct exchange.
async fn ask(path: &Path, target: &str, usage: Use) -> anyhow::Result<ChildEnv> {
    let socket = config::control_socket(path, &super::env_var, &super::host())?;
    let request = Request::Environment {
        target: target.to_owned(),
        hold: usage == Use::Exec,
    };
    let (response, stream) = match ask_and_keep(&socket, &request, DAEMON_TIMEOUT).await {
        Ok(answer) => answer,
        Err(AskError::NoDaemon(at)) => {
            tracing::debug!("no daemon at {at}; exchanging directly");
            return direct(path, target, &at).await;
        }
        Err(e) => return Err(e.into()),
    };
    match response {
        Response::Credential {
            kind,
            document,
            expires_at,
        } => from_document(target, &kind, &document, from_unix_seconds(expires_at)),
        Response::IdentityPair {
            endpoint,
            header,
            client_id,
            expires_at,
        } => Ok(ChildEnv {
            vars: vec![
                var("IDENTITY_ENDPOINT", endpoint),
                var("IDENTITY_HEADER", header),
                var("AZURE_CLIENT_ID", client_id),
            ],
            removes: AZURE_REMOVES,
            expires: expires_at.map(from_unix_seconds),
            hold: expires_at.is_none().then_some(stream),
        }),
        Response::Error {
            code: crate::control::ErrorCode::UnknownTarget | crate::control::ErrorCode::BadRequest,
            message,
        } => Err(UsageError(message).into()),
        Response::Error { message, .. } => anyhow::bail!("{message}"),
        Response::Status { .. } => anyhow::bail!("the daemon answered something else"),
    }
}

fn var(name: &'static str, value: String) -> Var {
    Var { name, value }
}

/// The `credential_process` document of an AWS credential.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsDocument {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// A Google Cloud token's document (`crate::credential::gcp_token_json`).
#[derive(Deserialize)]
struct GcpDocument {
    access_token: String,
}

/// The variables of a credential's document (what the control socket hands out, and what
/// `Credential::process_document` gives the direct exchange), which expires at `expires`.
fn from_document(
    target: &str,
    kind: &str,
    document: &str,
    expires: SystemTime,
) -> anyhow::Result<ChildEnv> {
    // serde's own message may quote a value of the document: it is left out.
    let unreadable =
        |_| anyhow::anyhow!("the {kind} credential of target \"{target}\" is not readable");
    match kind {
        "aws" => {
            let doc: AwsDocument = serde_json::from_str(document).map_err(unreadable)?;
            Ok(ChildEnv {
                vars: vec![
                    var("AWS_ACCESS_KEY_ID", doc.access_key_id),
                    var("AWS_SECRET_ACCESS_KEY", doc.secret_access_key),
                    var("AWS_SESSION_TOKEN", doc.session_token),
                    var("AWS_CREDENTIAL_EXPIRATION", doc.expiration),
                ],
                removes: AWS_REMOVES,
                expires: Some(expires),
                hold: None,
            })
        }
        "gcp" => {
            let doc: GcpDocument = serde_json::from_str(document).map_err(unreadable)?;
            Ok(ChildEnv {
                vars: vec![
                    var("CLOUDSDK_AUTH_ACCESS_TOKEN", doc.access_token.clone()),
                    var("GOOGLE_OAUTH_ACCESS_TOKEN", doc.access_token),
                ],
                removes: &[],
                expires: Some(expires),
                hold: None,
            })
        }
        other => Err(refused(target, other).into()),
    }
}

/// Why a target of `kind` has no variables.
fn refused(target: &str, kind: &str) -> UsageError {
    UsageError(match kind {
        "token" => crate::control::no_environment_for_token_target(target),
        other => format!("target \"{target}\" is of kind {other}, which has no variables here"),
    })
}

/// Without a daemon: AWS and GCP targets exchanged once, as the daemon would; Azure and token
/// targets refused, saying why.
async fn direct(path: &Path, name: &str, socket: &str) -> anyhow::Result<ChildEnv> {
    let mut config = super::load(path)?;
    let Some(target) = config.targets.remove(name) else {
        return Err(super::unknown_target(&config, name).into());
    };
    match &target.exchange {
        Exchange::Aws(_) | Exchange::Gcp(_) => {}
        Exchange::Azure(_) => anyhow::bail!(
            "target \"{name}\" is an Azure target: its command gets IDENTITY_ENDPOINT and \
             IDENTITY_HEADER served by the daemon's App Service face, and no daemon answers at \
             {socket}: start keyfed run with an [endpoint] naming an Azure target in \
             azure_target"
        ),
        Exchange::Token => return Err(refused(name, "token").into()),
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let credential = sources::fetch_once(&mut config, &target, &clock).await?;
    from_document(
        name,
        credential.kind(),
        &credential.process_document(),
        credential.expires_at(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(env: &ChildEnv) -> Vec<&str> {
        env.vars.iter().map(|v| v.name).collect()
    }

    #[test]
    fn aws_and_gcp_documents_become_their_clouds_variables_issue_12() {
        let aws = from_document(
            "aws",
            "aws",
            r#"{"Version":1,"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cret","SessionToken":"tok","Expiration":"2030-01-02T03:04:05Z"}"#,
            from_unix_seconds(1_893_553_445),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            names(&aws),
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_CREDENTIAL_EXPIRATION"
            ]
        );
        assert_eq!(aws.vars[3].value, "2030-01-02T03:04:05Z");
        assert_eq!(
            aws.expires.map(keyfed_core::clock::unix_seconds),
            Some(1_893_553_445)
        );
        let gcp = from_document(
            "gcp",
            "gcp",
            r#"{"access_token":"ya29.x","expires_at":"2030-01-02T03:04:05Z","token_type":"Bearer"}"#,
            from_unix_seconds(1_893_553_445),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            names(&gcp),
            ["CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN"]
        );
        assert!(gcp.vars.iter().all(|v| v.value == "ya29.x"));
    }

    #[test]
    fn token_targets_and_unreadable_documents_are_refused_without_their_secrets_issue_12() {
        let token = from_document("api", "token", "eyJ.secret.sig", SystemTime::UNIX_EPOCH)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(token.contains("keyfed token api"), "{token}");
        assert!(!token.contains("secret"), "{token}");
        let broken = from_document(
            "aws",
            "aws",
            r#"{"SecretAccessKey":["s3cret-value"]}"#,
            SystemTime::UNIX_EPOCH,
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(broken.contains("not readable"), "{broken}");
        assert!(!broken.contains("s3cret-value"), "{broken}");
    }

    #[test]
    fn debug_hides_every_value_issue_12() {
        let env = ChildEnv {
            vars: vec![var("AWS_SECRET_ACCESS_KEY", "s3cret-value".to_owned())],
            removes: AWS_REMOVES,
            expires: None,
            hold: None,
        };
        let shown = format!("{env:?}");
        assert!(
            shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
