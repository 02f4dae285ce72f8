//! A target's `azure` table (`[targets.NAME.azure]`) as written ([`RawAzure`]) and as checked
//! ([`AzureTarget`]): the Entra ID `tenant_id` and the app registration's or user-assigned
//! managed identity's `client_id` (both required), the `scopes` kept fresh in the background
//! (default [`DEFAULT_SCOPE`]), the `authority_host` (default [`DEFAULT_AUTHORITY_HOST`]), and
//! the shared HTTP keys (`ca_file`, `allow_insecure_http`, `connect_timeout`, `timeout`). Errors
//! name the key within the table; keyfed's host adds the table's path and the file.

use std::time::Duration;

use keyfed_core::config::{Context, KeyError, WithHttp, url};
use keyfed_core::http::HttpSettings;
use serde::Deserialize;
use url::Url;

/// The audience Entra ID expects of a federated credential's assertion.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";

/// What Entra ID requires of a federated credential's assertion: RS256 only, and a lifetime
/// (`exp − iat`) of at most a day (AADSTS70023). Entra fetches the issuer's discovery document
/// and JWKS from the internet.
pub const SUBJECT_TOKEN: keyfed_core::token_rules::SubjectTokenRules =
    keyfed_core::token_rules::SubjectTokenRules {
        cloud: "Entra ID",
        audience_setting: "the federated identity credential's audiences (by default api://AzureADTokenExchange)",
        algorithms: &["RS256"],
        kid_required: false,
        issuer_port_allowed: true,
        max_subject_bytes: None,
        max_lifetime: Some(Duration::from_secs(24 * 3600)),
        max_token_bytes: None,
        uploaded_jwks: None,
    };

/// Azure's public cloud authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The scope a target keeps fresh unless `scopes` says otherwise.
pub const DEFAULT_SCOPE: &str = "https://management.azure.com/.default";

/// The `azure` table's own keys, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzureKeys {
    pub tenant_id: String,
    pub client_id: String,
    pub scopes: Option<Vec<String>>,
    pub authority_host: Option<String>,
}

/// The `azure` table as written: its own keys and the HTTP keys.
pub type RawAzure = WithHttp<RawAzureKeys>;

/// A target's `azure` table, checked.
#[derive(Debug, Clone)]
pub struct AzureTarget {
    /// The directory: a GUID or a verified domain name (`contoso.onmicrosoft.com`).
    pub tenant_id: String,
    /// The app registration's or user-assigned managed identity's client ID.
    pub client_id: String,
    /// Scopes kept fresh in the background, each `<resource>/.default`; the first is the
    /// target's main credential.
    pub scopes: Vec<String>,
    /// `https://login.microsoftonline.com` and the like: scheme, host and port, no path.
    pub authority_host: Url,
    pub http: HttpSettings,
}

impl AzureTarget {
    /// `<authority_host>/<tenant>/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host.as_str().trim_end_matches('/'),
            self.tenant_id
        )
    }
}

/// Checks a target's `azure` table. Nothing falls back to a default when a value is wrong.
pub fn resolve(raw: &RawAzure, cx: &dyn Context) -> Result<AzureTarget, KeyError> {
    let tenant_id = cx
        .expand(&raw.tenant_id)
        .map_err(|m| KeyError::new("tenant_id", m))?;
    check_tenant(&tenant_id).map_err(|m| KeyError::new("tenant_id", m))?;
    let client_id = cx
        .expand(&raw.client_id)
        .map_err(|m| KeyError::new("client_id", m))?;
    if !is_guid(&client_id) {
        return Err(KeyError::new(
            "client_id",
            format!(
                "expected the app's or managed identity's client ID, a GUID such as \
                 \"00000000-0000-0000-0000-000000000000\", found \"{}\"",
                client_id.escape_default()
            ),
        ));
    }
    let scopes = raw
        .scopes
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_SCOPE.to_owned()]);
    check_scopes(&scopes).map_err(|m| KeyError::new("scopes", m))?;
    let http = raw.http();
    let authority_host = url(
        cx,
        "authority_host",
        raw.authority_host
            .as_deref()
            .unwrap_or(DEFAULT_AUTHORITY_HOST),
        http.allow_insecure_http(),
    )?;
    if !matches!(authority_host.path(), "" | "/") {
        return Err(KeyError::new(
            "authority_host",
            format!(
                "expected the authority's scheme and host without a path, such as \
                 \"https://login.microsoftonline.us\" (keyfed adds /<tenant_id>/oauth2/v2.0/token), \
                 found \"{authority_host}\""
            ),
        ));
    }
    Ok(AzureTarget {
        tenant_id,
        client_id,
        scopes,
        authority_host,
        http: http.resolve(cx)?,
    })
}

/// A tenant as the token URL's path segment takes it: a GUID, or a domain name.
fn check_tenant(tenant: &str) -> Result<(), String> {
    let shown = tenant.escape_default();
    if matches!(
        tenant.to_ascii_lowercase().as_str(),
        "common" | "organizations" | "consumers"
    ) {
        return Err(format!(
            "\"{shown}\" names no single directory; the client-credentials flow needs the tenant's ID (a GUID) or one of its domain names"
        ));
    }
    if is_guid(tenant) || is_domain(tenant) {
        Ok(())
    } else {
        Err(format!(
            "expected the directory (tenant) ID, a GUID such as \"00000000-0000-0000-0000-000000000000\", \
             or a domain name such as \"contoso.onmicrosoft.com\", found \"{shown}\""
        ))
    }
}

/// `8-4-4-4-12` hexadecimal digits.
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Dot-separated labels of letters, digits and inner hyphens, at least two of them.
fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Each scope `<absolute URI>/.default`, none twice.
fn check_scopes(scopes: &[String]) -> Result<(), String> {
    const EXPECTED: &str = "expected scopes such as \"https://management.azure.com/.default\" (a resource followed by /.default, as the client-credentials flow requires)";
    if scopes.is_empty() {
        return Err(format!("{EXPECTED}, found none"));
    }
    for (i, scope) in scopes.iter().enumerate() {
        let resource = scope.strip_suffix("/.default").unwrap_or_default();
        let absolute = Url::parse(resource).is_ok();
        if resource.is_empty()
            || !absolute
            || scope.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("{EXPECTED}, found \"{}\"", scope.escape_default()));
        }
        if scopes[..i].contains(scope) {
            return Err(format!("\"{scope}\" is listed twice"));
        }
    }
    Ok(())
}

/// How long before expiry Azure SDKs ask again for an access token (azure-identity refreshes 5
/// minutes before expiry).
pub const CONSUMER_WINDOW: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    struct Host;

    impl Context for Host {
        fn expand(&self, value: &str) -> Result<String, String> {
            match value.find("${") {
                None => Ok(value.to_owned()),
                Some(_) => Err(format!("a variable in \"{value}\" is not set")),
            }
        }
        fn path(&self, value: &str) -> Result<PathBuf, String> {
            Ok(PathBuf::from("/etc/keyfed").join(self.expand(value)?))
        }
        fn hostname(&self) -> &str {
            "web-01.example.com"
        }
    }

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";

    fn ids() -> String {
        format!("tenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n")
    }

    fn resolve_toml(text: &str) -> Result<AzureTarget, String> {
        let raw: RawAzure = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        resolve(&raw, &Host).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_filled_in() {
        let azure = resolve_toml(&ids()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(azure.tenant_id, TENANT);
        assert_eq!(azure.client_id, CLIENT);
        assert_eq!(azure.scopes, [DEFAULT_SCOPE]);
        assert_eq!(
            azure.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(
            azure.token_url(),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(azure.http.timeout, Duration::from_secs(30));

        let full = resolve_toml(&format!(
            "tenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"{CLIENT}\"\n\
             scopes = [\"https://vault.azure.net/.default\", \"api://5f0c2a0e-1b1c-4a2b-9c3d-2e4f5a6b7c8d/.default\"]\n\
             authority_host = \"https://login.chinacloudapi.cn\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.scopes.len(), 2);
        assert_eq!(
            full.token_url(),
            "https://login.chinacloudapi.cn/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let emulator = resolve_toml(&format!(
            "{}authority_host = \"http://127.0.0.1:8443/\"\n",
            ids()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            emulator.token_url(),
            format!("http://127.0.0.1:8443/{TENANT}/oauth2/v2.0/token")
        );
    }

    #[test]
    fn each_mistake_is_named_by_its_key() {
        let client = format!("client_id = \"{CLIENT}\"\n");
        let tenant = format!("tenant_id = \"{TENANT}\"\n");
        for (text, says) in [
            (
                format!("tenant_id = \"https://login.microsoftonline.com/{TENANT}\"\n{client}"),
                "tenant_id: expected the directory (tenant) ID, a GUID such as",
            ),
            (
                format!("tenant_id = \"contoso tenant\"\n{client}"),
                "tenant_id: expected the directory (tenant) ID",
            ),
            (
                format!("tenant_id = \"contoso\"\n{client}"),
                "tenant_id: expected the directory (tenant) ID",
            ),
            (
                format!("tenant_id = \"common\"\n{client}"),
                "tenant_id: \"common\" names no single directory",
            ),
            (
                format!("tenant_id = \"${{AZURE_TENANT_ID}}\"\n{client}"),
                "tenant_id: a variable in \"${AZURE_TENANT_ID}\" is not set",
            ),
            (
                format!("{tenant}client_id = \"my-app\"\n"),
                "client_id: expected the app's or managed identity's client ID, a GUID such as \"00000000-0000-0000-0000-000000000000\", found \"my-app\"",
            ),
            (
                format!("{tenant}client_id = \"{CLIENT}x\"\n"),
                "client_id: expected the app's or managed identity's client ID",
            ),
            (
                format!("{}scopes = []\n", ids()),
                "scopes: expected scopes such as \"https://management.azure.com/.default\"",
            ),
            (
                format!("{}scopes = [\"https://management.azure.com\"]\n", ids()),
                "scopes: expected scopes such as \"https://management.azure.com/.default\" (a resource followed by /.default, as the client-credentials flow requires), found \"https://management.azure.com\"",
            ),
            (
                format!("{}scopes = [\"/.default\"]\n", ids()),
                "scopes: expected scopes such as",
            ),
            (
                format!("{}scopes = [\"management.azure.com/.default\"]\n", ids()),
                "scopes: expected scopes such as",
            ),
            (
                format!(
                    "{}scopes = [\"https://a.example.com/.default https://b.example.com/.default\"]\n",
                    ids()
                ),
                "scopes: expected scopes such as",
            ),
            (
                format!(
                    "{}scopes = [\"{DEFAULT_SCOPE}\", \"{DEFAULT_SCOPE}\"]\n",
                    ids()
                ),
                "scopes: \"https://management.azure.com/.default\" is listed twice",
            ),
            (
                format!("{}authority_host = \"http://login.example.com\"\n", ids()),
                "authority_host: http://login.example.com/ uses plain http://",
            ),
            (
                format!(
                    "{}authority_host = \"https://login.microsoftonline.com/{TENANT}\"\n",
                    ids()
                ),
                "authority_host: expected the authority's scheme and host without a path",
            ),
            (
                format!("{}authority_host = \"login.microsoftonline.us\"\n", ids()),
                "authority_host: expected an absolute URL",
            ),
            (
                format!("{}ca_file = \"missing-ca.pem\"\n", ids()),
                "ca_file: /etc/keyfed/missing-ca.pem is not a readable file",
            ),
            (
                format!("{}audience = \"api://AzureADTokenExchange\"\n", ids()),
                "unknown field `audience`, expected one of `tenant_id`, `client_id`, `scopes`, \
                 `authority_host`, `ca_file`, `allow_insecure_http`, `connect_timeout`, `timeout`",
            ),
            (client, "missing field `tenant_id`"),
        ] {
            let err = resolve_toml(&text).err().unwrap_or_default();
            assert!(err.starts_with(says), "{text}: {err}");
        }
    }

    #[test]
    fn plain_http_needs_loopback_or_allow_insecure_http() {
        let insecure = resolve_toml(&format!(
            "{}authority_host = \"http://login.internal\"\nallow_insecure_http = true\n",
            ids()
        ));
        assert!(insecure.is_ok_and(|a| a.http.allow_insecure_http));
        let err = resolve_toml(&format!(
            "{}authority_host = \"ftp://login.internal\"\nallow_insecure_http = true\n",
            ids()
        ))
        .err()
        .unwrap_or_default();
        assert!(err.starts_with("authority_host: "), "{err}");
    }

    #[test]
    fn guids_and_domains() {
        assert!(is_guid(TENANT) && is_guid(&TENANT.to_ascii_uppercase()));
        for bad in [
            "",
            "72f988bf86f141af91ab2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db4g",
        ] {
            assert!(!is_guid(bad), "{bad}");
        }
        assert!(is_domain("contoso.onmicrosoft.com") && is_domain("corp.example"));
        for bad in ["contoso", "a..b", "-a.b", "a/b.c", "a b.c", ".a.b"] {
            assert!(!is_domain(bad), "{bad}");
        }
    }
}
