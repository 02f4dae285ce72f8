//! What a target hands out, and the exact formats its consumers read: the `credential_process`
//! JSON document (`{"Version":1,…,"Expiration":"…Z"}`), the AWS shared-credentials profile, and
//! the raw JWT.

use std::time::SystemTime;

use keyfed_aws::AwsCredentials;
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;
use keyfed_keycloak::AccessToken;
use serde_json::json;

/// A target's current credential.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The Keycloak token itself (`token` targets).
    Token(AccessToken),
    /// Credentials from AWS STS.
    Aws(AwsCredentials),
}

impl Credential {
    pub fn expires_at(&self) -> SystemTime {
        match self {
            Self::Token(t) => t.expires_at(),
            Self::Aws(c) => c.expiration,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::Aws(_) => "aws",
        }
    }

    /// What `keyfed credential-process` prints for this credential, and so what the control
    /// socket hands it: the `credential_process` document for AWS, the raw JWT for a token.
    pub fn process_document(&self) -> String {
        match self {
            Self::Token(token) => token.expose().to_owned(),
            Self::Aws(c) => credential_process_json(c),
        }
    }

    /// A short, secret-free description for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Self::Token(t) => format!("token with aud {}", t.audience()),
            Self::Aws(c) => format!("AWS credentials for {}", c.assumed_role_arn),
        }
    }
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
