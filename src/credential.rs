//! What a target hands out, and the exact formats its consumers read: the `credential_process`
//! JSON document (`{"Version":1,…,"Expiration":"…Z"}`), the AWS shared-credentials profile, a
//! Google Cloud token's JSON, and the raw JWT.

use std::time::SystemTime;

use keyfed_aws::AwsCredentials;
use keyfed_azure::AzureToken;
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::{rfc3339, unix_seconds};
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
    /// An access token from Entra ID for one scope.
    Azure(AzureToken),
}

impl Credential {
    pub fn expires_at(&self) -> SystemTime {
        match self {
            Self::Token(t) => t.expires_at(),
            Self::Aws(c) => c.expiration,
            Self::Gcp(t) => t.expires_at,
            Self::Azure(t) => t.expires_at,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::Aws(_) => "aws",
            Self::Gcp(_) => "gcp",
            Self::Azure(_) => "azure",
        }
    }

    /// What `keyfed credential-process` prints for this credential, and so what the control
    /// socket hands it: the `credential_process` document for AWS, the raw JWT for a token.
    pub fn process_document(&self) -> String {
        match self {
            Self::Token(token) => token.expose().to_owned(),
            Self::Aws(c) => credential_process_json(c),
            Self::Gcp(t) => gcp_token_json(t),
            Self::Azure(t) => azure_cli_json(t),
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
            Self::Azure(t) => format!("Azure access token of {} for {}", t.client_id, t.scope),
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

impl From<AzureToken> for Credential {
    fn from(t: AzureToken) -> Self {
        Self::Azure(t)
    }
}

/// An Azure access token as `az account get-access-token` prints it (and so as the
/// `azure-access-token` output's JSON format and the control socket hand it out):
/// `accessToken`, `expiresOn` (`YYYY-MM-DD HH:MM:SS.ffffff`, in UTC here where az prints local
/// time), `expires_on` (Unix seconds), `tokenType`, `tenant`.
pub fn azure_cli_json(t: &AzureToken) -> String {
    json!({
        "accessToken": t.token.expose_secret(),
        "expiresOn": cli_time(t.expires_at),
        "expires_on": unix_seconds(t.expires_at),
        "tokenType": "Bearer",
        "tenant": t.tenant_id,
    })
    .to_string()
}

/// `2026-11-25 20:10:00.000000`, as the Azure CLI writes `expiresOn` (in UTC).
fn cli_time(at: SystemTime) -> String {
    let text = rfc3339(at);
    // rfc3339 gives `2026-11-25T20:10:00Z`.
    format!(
        "{}.000000",
        text.trim_end_matches('Z').replacen('T', " ", 1)
    )
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// issue 10: the JSON format of `azure-access-token` is `az account get-access-token`'s,
    /// which scripts already parse.
    #[test]
    fn an_azure_token_reads_like_az_account_get_access_token_issue_10() {
        let token = AzureToken {
            token: "eyJ0eXAi.secret.token".into(),
            scope: "https://management.azure.com/.default".to_owned(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            client_id: "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".to_owned(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_101_400),
        };
        let doc: serde_json::Value =
            serde_json::from_str(&azure_cli_json(&token)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            doc,
            json!({
                "accessToken": "eyJ0eXAi.secret.token",
                "expiresOn": "2025-11-25 20:10:00.000000",
                "expires_on": 1_764_101_400,
                "tokenType": "Bearer",
                "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            })
        );
        let credential = Credential::from(token);
        assert_eq!(credential.kind(), "azure");
        assert_eq!(
            credential.describe(),
            "Azure access token of 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b for https://management.azure.com/.default"
        );
        assert!(!credential.describe().contains("secret"));
    }
}
