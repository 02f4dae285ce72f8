//! A target's `gcp` table (`[targets.NAME.gcp]`) as written ([`RawGcp`]) and as checked
//! ([`GcpTarget`]): the workload identity pool `provider` (required), the `service_account` to
//! impersonate, `scopes`, `lifetime`, `delegates`, `project_id`, `project_number`, `sts_url`,
//! `iam_url`, and the shared HTTP keys (`ca_file`, `allow_insecure_http`, `connect_timeout`,
//! `timeout`). Errors name the key within the table; keyfed's host adds the table's path and the
//! file.

use std::time::Duration;

use keyfed_core::config::{Context, HumanDuration, KeyError, WithHttp, url};
use keyfed_core::http::HttpSettings;
use serde::Deserialize;
use url::Url;

/// The scope a target's access token has unless `scopes` says otherwise.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google's token exchange endpoint (external_account's `token_url`).
pub const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";

/// Google's IAM Credentials API.
pub const DEFAULT_IAM_URL: &str = "https://iamcredentials.googleapis.com";

/// What Google's STS requires of a subject token: RS256 or ES256 with a `kid`, a `sub` of at
/// most 127 bytes once mapped (`google.subject=assertion.sub`), and `exp − iat` under 48 hours.
/// Google fetches the issuer's discovery document and JWKS from the internet, unless the
/// provider was given the JWKS.
pub const SUBJECT_TOKEN: keyfed_core::token_rules::SubjectTokenRules =
    keyfed_core::token_rules::SubjectTokenRules {
        cloud: "Google STS",
        audience_setting: "the workload identity pool provider's allowed audiences (by default https://iam.googleapis.com/<provider>; `--allowed-audiences`)",
        algorithms: &["RS256", "ES256"],
        kid_required: true,
        issuer_port_allowed: true,
        max_subject_bytes: Some(127),
        // Under 48 hours: a whole second less.
        max_lifetime: Some(Duration::from_secs(48 * 3600 - 1)),
        max_token_bytes: None,
        uploaded_jwks: Some(
            "a provider not reachable from the internet can be given the JWKS instead: `gcloud iam workload-identity-pools providers update-oidc <provider> --jwk-json-path=<file>` (`keyfed trust <target>` writes that file for an issuer that is not public)",
        ),
    };

/// How long an impersonated access token lives unless `lifetime` says otherwise.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest `generateAccessToken` grants (and only with the `iam.allowServiceAccount
/// CredentialLifetimeExtension` organization policy above one hour).
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The `gcp` table's own keys, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcpKeys {
    pub provider: String,
    pub service_account: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub lifetime: Option<HumanDuration>,
    pub delegates: Option<Vec<String>>,
    pub project_id: Option<String>,
    pub project_number: Option<String>,
    pub sts_url: Option<String>,
    pub iam_url: Option<String>,
}

/// The `gcp` table as written: its own keys and the HTTP keys.
pub type RawGcp = WithHttp<RawGcpKeys>;

/// A target's `gcp` table, checked.
#[derive(Debug, Clone)]
pub struct GcpTarget {
    /// `projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<id>`.
    pub provider: String,
    /// The service account to impersonate; `None` uses the federated token itself.
    pub service_account: Option<String>,
    /// The main access token's scopes (default [`CLOUD_PLATFORM`]).
    pub scopes: Vec<String>,
    /// An impersonated access token's lifetime (1 h unless set; at most 12 h).
    pub lifetime: Duration,
    /// Service accounts in the delegation chain, each `projects/-/serviceAccounts/<email>`.
    pub delegates: Vec<String>,
    pub project_id: Option<String>,
    /// From `project_number`, else the provider's `projects/<number>`.
    pub project_number: String,
    /// The full token URL (default [`DEFAULT_STS_URL`]).
    pub sts_url: Url,
    /// IAM Credentials' base URL (default [`DEFAULT_IAM_URL`]).
    pub iam_url: Url,
    pub http: HttpSettings,
}

impl GcpTarget {
    /// The `audience` parameter of the STS exchange: `//iam.googleapis.com/<provider>`.
    pub fn sts_audience(&self) -> String {
        format!("//iam.googleapis.com/{}", self.provider)
    }

    /// The audience the issuer's token carries unless the target says otherwise:
    /// `https://iam.googleapis.com/<provider>` (a provider's default allowed audience; the
    /// `https:` form is also a valid RFC 8707 resource).
    pub fn default_audience(&self) -> String {
        format!("https://iam.googleapis.com/{}", self.provider)
    }

    /// The pool: `projects/<number>/locations/global/workloadIdentityPools/<pool>`.
    pub fn pool(&self) -> &str {
        self.provider
            .rsplit_once("/providers/")
            .map_or(self.provider.as_str(), |(pool, _)| pool)
    }

    /// IAM Credentials' method `method` (`generateAccessToken`, `generateIdToken`) for
    /// `service_account`.
    pub fn iam_method_url(&self, service_account: &str, method: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{service_account}:{method}",
            self.iam_url.as_str().trim_end_matches('/')
        )
    }
}

/// Checks a target's `gcp` table. Nothing falls back to a default when a value is wrong.
pub fn resolve(raw: &RawGcp, cx: &dyn Context) -> Result<GcpTarget, KeyError> {
    let provider = cx
        .expand(&raw.provider)
        .map_err(|m| KeyError::new("provider", m))?;
    let Some(number) = ProviderName::parse(&provider).map(|name| name.project_number) else {
        return Err(KeyError::new(
            "provider",
            format!(
                "expected a workload identity pool provider such as \
                 \"projects/123456789012/locations/global/workloadIdentityPools/POOL/providers/PROVIDER\", \
                 found \"{provider}\""
            ),
        ));
    };
    let service_account = raw
        .service_account
        .as_deref()
        .map(|sa| {
            let sa = cx
                .expand(sa)
                .map_err(|m| KeyError::new("service_account", m))?;
            if is_email(&sa) {
                Ok(sa)
            } else {
                Err(KeyError::new(
                    "service_account",
                    format!(
                        "expected a service account's email such as \
                         \"app@my-project.iam.gserviceaccount.com\", found \"{sa}\""
                    ),
                ))
            }
        })
        .transpose()?;
    let scopes = raw
        .scopes
        .clone()
        .unwrap_or_else(|| vec![CLOUD_PLATFORM.to_owned()]);
    if scopes.is_empty()
        || scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(KeyError::new(
            "scopes",
            "expected OAuth scope URLs without spaces, such as \
             [\"https://www.googleapis.com/auth/cloud-platform\"]",
        ));
    }
    if raw.lifetime.is_some() && service_account.is_none() {
        // A federated token lives as long as the subject token does (at most an hour); STS
        // takes no lifetime, so the key would be silently ignored.
        return Err(KeyError::new(
            "lifetime",
            "is only used with service_account (a federated token lives as long as the subject token, at most 1h)",
        ));
    }
    let lifetime = raw.lifetime.map_or(DEFAULT_LIFETIME, |d| d.0);
    if lifetime < Duration::from_secs(600) || lifetime > MAX_LIFETIME {
        return Err(KeyError::new(
            "lifetime",
            format!(
                "expected between 10m and 12h (generateAccessToken's lifetime), found {}",
                HumanDuration(lifetime)
            ),
        ));
    }
    let delegates = raw.delegates.clone().unwrap_or_default();
    if !delegates.is_empty() && service_account.is_none() {
        return Err(KeyError::new(
            "delegates",
            "is only used with service_account (a delegation chain ends at the impersonated account)",
        ));
    }
    if let Some(bad) = delegates
        .iter()
        .find(|d| !d.starts_with("projects/-/serviceAccounts/") || !is_email(&d[27..]))
    {
        return Err(KeyError::new(
            "delegates",
            format!("expected \"projects/-/serviceAccounts/<email>\" entries, found \"{bad}\""),
        ));
    }
    let project_number = match &raw.project_number {
        Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => n.clone(),
        Some(n) => {
            return Err(KeyError::new(
                "project_number",
                format!("expected the project's number, digits only, found \"{n}\""),
            ));
        }
        None => number.to_owned(),
    };
    if let Some(id) = raw.project_id.as_deref().filter(|id| !is_project_id(id)) {
        return Err(KeyError::new(
            "project_id",
            format!(
                "expected a project ID (6–30 lowercase letters, digits and hyphens, starting \
                 with a letter), found \"{id}\""
            ),
        ));
    }
    let http = raw.http();
    let insecure = http.allow_insecure_http();
    let sts_url = url(
        cx,
        "sts_url",
        raw.sts_url.as_deref().unwrap_or(DEFAULT_STS_URL),
        insecure,
    )?;
    let iam_url = url(
        cx,
        "iam_url",
        raw.iam_url.as_deref().unwrap_or(DEFAULT_IAM_URL),
        insecure,
    )?;
    Ok(GcpTarget {
        provider,
        service_account,
        scopes,
        lifetime,
        delegates,
        project_id: raw.project_id.clone(),
        project_number,
        sts_url,
        iam_url,
        http: http.resolve(cx)?,
    })
}

/// The parts of a workload identity pool provider's resource name,
/// `projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderName<'a> {
    pub project_number: &'a str,
    pub pool: &'a str,
    pub provider: &'a str,
}

impl<'a> ProviderName<'a> {
    /// `name`'s parts, when it has exactly that shape (a numeric project, lowercase ids).
    pub fn parse(name: &'a str) -> Option<Self> {
        let parts: Vec<&str> = name.split('/').collect();
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        match parts.as_slice() {
            [
                "projects",
                number,
                "locations",
                "global",
                "workloadIdentityPools",
                pool,
                "providers",
                provider,
            ] if !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
                && id_ok(pool)
                && id_ok(provider) =>
            {
                Some(Self {
                    project_number: number,
                    pool,
                    provider,
                })
            }
            _ => None,
        }
    }
}

/// `local@domain` with nothing odd in it (a service account's email).
fn is_email(s: &str) -> bool {
    s.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_'))
            && s.matches('@').count() == 1
    })
}

/// A project ID: 6–30 characters, lowercase letters, digits and hyphens, starting with a letter.
fn is_project_id(id: &str) -> bool {
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

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

    const PROVIDER_NAME: &str =
        "projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak";
    const PROVIDER: &str = "provider = \"projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak\"\n";
    const SA: &str = "service_account = \"app@my-project.iam.gserviceaccount.com\"\n";

    fn resolve_toml(text: &str) -> Result<GcpTarget, String> {
        let raw: RawGcp = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        resolve(&raw, &Host).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_filled_in() {
        let gcp = resolve_toml(PROVIDER).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gcp.provider, PROVIDER_NAME);
        assert_eq!(gcp.service_account, None);
        assert_eq!(gcp.scopes, [CLOUD_PLATFORM]);
        assert_eq!(gcp.lifetime, Duration::from_secs(3600));
        assert!(gcp.delegates.is_empty() && gcp.project_id.is_none());
        assert_eq!(gcp.project_number, "123456789012");
        assert_eq!(gcp.sts_url.as_str(), DEFAULT_STS_URL);
        assert_eq!(
            gcp.iam_url.as_str(),
            "https://iamcredentials.googleapis.com/"
        );
        assert_eq!(gcp.http.timeout, Duration::from_secs(30));
        assert_eq!(
            gcp.sts_audience(),
            format!("//iam.googleapis.com/{PROVIDER_NAME}")
        );
        assert_eq!(
            gcp.default_audience(),
            format!("https://iam.googleapis.com/{PROVIDER_NAME}")
        );
        assert_eq!(
            gcp.pool(),
            "projects/123456789012/locations/global/workloadIdentityPools/onprem"
        );
        assert_eq!(
            gcp.iam_method_url(
                "app@my-project.iam.gserviceaccount.com",
                "generateAccessToken"
            ),
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/app@my-project.iam.gserviceaccount.com:generateAccessToken"
        );

        let full = resolve_toml(&format!(
            "{PROVIDER}{SA}scopes = [\"https://www.googleapis.com/auth/devstorage.read_only\"]\n\
             lifetime = \"12h\"\ndelegates = [\"projects/-/serviceAccounts/hop@my-project.iam.gserviceaccount.com\"]\n\
             project_id = \"my-project\"\nproject_number = \"987\"\n\
             sts_url = \"http://127.0.0.1:9000/v1/token\"\niam_url = \"http://127.0.0.1:9000/\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            full.service_account.as_deref(),
            Some("app@my-project.iam.gserviceaccount.com")
        );
        assert_eq!(full.lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(full.project_id.as_deref(), Some("my-project"));
        assert_eq!(full.project_number, "987");
        assert_eq!(
            full.iam_method_url("app@my-project.iam.gserviceaccount.com", "generateIdToken"),
            "http://127.0.0.1:9000/v1/projects/-/serviceAccounts/app@my-project.iam.gserviceaccount.com:generateIdToken"
        );
    }

    #[test]
    fn each_mistake_is_named_by_its_key() {
        for (text, says) in [
            (
                PROVIDER.replace("/providers/keycloak", ""),
                "provider: expected a workload identity pool provider such as",
            ),
            (
                PROVIDER.replace("123456789012", "my-project"),
                "provider: expected a workload identity pool provider such as",
            ),
            (
                "provider = \"${WIF_PROVIDER}\"\n".to_owned(),
                "provider: a variable in \"${WIF_PROVIDER}\" is not set",
            ),
            (
                format!("{PROVIDER}service_account = \"app\"\n"),
                "service_account: expected a service account's email such as \"app@my-project.iam.gserviceaccount.com\", found \"app\"",
            ),
            (
                format!("{PROVIDER}scopes = []\n"),
                "scopes: expected OAuth scope URLs without spaces",
            ),
            (
                format!("{PROVIDER}scopes = [\"a b\"]\n"),
                "scopes: expected OAuth scope URLs without spaces",
            ),
            (
                format!("{PROVIDER}{SA}lifetime = \"5m\"\n"),
                "lifetime: expected between 10m and 12h (generateAccessToken's lifetime), found 5m",
            ),
            (
                format!("{PROVIDER}{SA}lifetime = \"13h\"\n"),
                "lifetime: expected between 10m and 12h",
            ),
            (
                format!("{PROVIDER}lifetime = \"2h\"\n"),
                "lifetime: is only used with service_account",
            ),
            (
                format!(
                    "{PROVIDER}delegates = [\"projects/-/serviceAccounts/a@b.iam.gserviceaccount.com\"]\n"
                ),
                "delegates: is only used with service_account",
            ),
            (
                format!("{PROVIDER}{SA}delegates = [\"hop@my-project.iam.gserviceaccount.com\"]\n"),
                "delegates: expected \"projects/-/serviceAccounts/<email>\" entries, found \"hop@my-project.iam.gserviceaccount.com\"",
            ),
            (
                format!("{PROVIDER}project_number = \"12a\"\n"),
                "project_number: expected the project's number, digits only, found \"12a\"",
            ),
            (
                format!("{PROVIDER}project_id = \"My Project\"\n"),
                "project_id: expected a project ID (6–30 lowercase letters, digits and hyphens, starting with a letter), found \"My Project\"",
            ),
            (
                format!("{PROVIDER}sts_url = \"http://sts.example.com/v1/token\"\n"),
                "sts_url: http://sts.example.com/v1/token uses plain http://",
            ),
            (
                format!("{PROVIDER}iam_url = \"not a url\"\n"),
                "iam_url: expected an absolute URL, found \"not a url\"",
            ),
            (
                format!("{PROVIDER}timeout = \"0s\"\n"),
                "timeout: expected a duration greater than zero",
            ),
            (
                format!("{PROVIDER}ca_file = \"missing-ca.pem\"\n"),
                "ca_file: /etc/keyfed/missing-ca.pem is not a readable file",
            ),
            (
                format!("{PROVIDER}lifetime = \"forever\"\n"),
                "expected a duration such as \"90s\", \"5m\" or \"1h\", found \"forever\"",
            ),
            (
                format!("{PROVIDER}audience = \"x\"\n"),
                "unknown field `audience`, expected one of `provider`, `service_account`, \
                 `scopes`, `lifetime`, `delegates`, `project_id`, `project_number`, `sts_url`, \
                 `iam_url`, `ca_file`, `allow_insecure_http`, `connect_timeout`, `timeout`",
            ),
            (SA.to_owned(), "missing field `provider`"),
        ] {
            let err = resolve_toml(&text).err().unwrap_or_default();
            assert!(err.starts_with(says), "{text}: {err}");
        }
    }

    /// issue 9: `lifetime` on a target without `service_account` was accepted and silently
    /// ignored (STS takes no lifetime; a federated token lives as long as the subject token).
    #[test]
    fn issue_9_lifetime_without_impersonation_is_refused() {
        let err = resolve_toml(&format!("{PROVIDER}lifetime = \"1h\"\n"))
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("lifetime: is only used with service_account"),
            "{err}"
        );
        assert!(resolve_toml(&format!("{PROVIDER}{SA}lifetime = \"1h\"\n")).is_ok());
    }

    #[test]
    fn plain_http_needs_loopback_or_allow_insecure_http() {
        let insecure = resolve_toml(&format!(
            "{PROVIDER}sts_url = \"http://sts.internal/v1/token\"\nallow_insecure_http = true\n"
        ));
        assert!(insecure.is_ok_and(|g| g.http.allow_insecure_http));
        let err = resolve_toml(&format!(
            "{PROVIDER}iam_url = \"ftp://iam.internal/\"\nallow_insecure_http = true\n"
        ))
        .err()
        .unwrap_or_default();
        assert!(err.starts_with("iam_url: "), "{err}");
    }
}
