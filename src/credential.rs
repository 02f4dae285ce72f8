//! What a target hands out, and the exact formats its consumers read: the `credential_process`
//! JSON document (`{"Version":1,…,"Expiration":"…Z"}`), the AWS shared-credentials profile, a
//! Google Cloud token's JSON, and the raw JWT.

use std::time::SystemTime;

use keyfed_aws::AwsCredentials;
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;
use keyfed_gcp::{GcpToken, GcpTokenKind};
use keyfed_keycloak::AccessToken;
use serde_json::json;

/// A target's current credential.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The Keycloak token itself (`token` targets).
    Token(AccessToken),
    /// Credentials from AWS STS.
    Aws(AwsCredentials),
    /// A Google Cloud access token or ID token.
    Gcp(GcpToken),
}

impl Credential {
    pub fn expires_at(&self) -> SystemTime {
        match self {
            Self::Token(t) => t.expires_at(),
            Self::Aws(c) => c.expiration,
            Self::Gcp(t) => t.expires_at,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::Aws(_) => "aws",
            Self::Gcp(_) => "gcp",
        }
    }

    /// What `keyfed credential-process` prints for this credential, and so what the control
    /// socket hands it: the `credential_process` document for AWS, the raw JWT for a token.
    pub fn process_document(&self) -> String {
        match self {
            Self::Token(token) => token.expose().to_owned(),
            Self::Aws(c) => credential_process_json(c),
            Self::Gcp(t) => gcp_token_json(t),
        }
    }

    /// A short, secret-free description for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Self::Token(t) => format!("token with aud {}", t.audience()),
            Self::Aws(c) => format!("AWS credentials for {}", c.assumed_role_arn),
            Self::Gcp(t) => match &t.kind {
                GcpTokenKind::Access {
                    service_account: Some(sa),
                    ..
                } => format!("Google Cloud access token for {sa}"),
                GcpTokenKind::Access {
                    service_account: None,
                    ..
                } => "Google Cloud federated access token".to_owned(),
                GcpTokenKind::Id {
                    audience,
                    service_account,
                    ..
                } => format!("Google Cloud ID token of {service_account} for {audience:?}"),
            },
        }
    }
}

impl From<GcpToken> for Credential {
    fn from(t: GcpToken) -> Self {
        Self::Gcp(t)
    }
}

/// A Google Cloud token as the `gcp-access-token` output's JSON format and the control socket
/// hand it out: `{"access_token","expires_at":"<RFC 3339, Z>","token_type":"Bearer"}`.
pub fn gcp_token_json(t: &GcpToken) -> String {
    json!({
        "access_token": t.token.expose_secret(),
        "expires_at": rfc3339(t.expires_at),
        "token_type": "Bearer",
    })
    .to_string()
}

impl From<AwsCredentials> for Credential {
    fn from(c: AwsCredentials) -> Self {
        Self::Aws(c)
    }
}

/// The document `credential_process` prints and SDKs parse. `Expiration` is always present:
/// without it an SDK never refreshes.
pub fn credential_process_json(c: &AwsCredentials) -> String {
    json!({
        "Version": 1,
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key.expose_secret(),
        "SessionToken": c.session_token.expose_secret(),
        "Expiration": rfc3339(c.expiration),
    })
    .to_string()
}

/// The three lines of an AWS shared-credentials profile (without the `[name]` header).
pub fn profile_lines(c: &AwsCredentials) -> [(&'static str, String); 3] {
    [
        ("aws_access_key_id", c.access_key_id.clone()),
        (
            "aws_secret_access_key",
            c.secret_access_key.expose_secret().to_owned(),
        ),
        (
            "aws_session_token",
            c.session_token.expose_secret().to_owned(),
        ),
    ]
}
