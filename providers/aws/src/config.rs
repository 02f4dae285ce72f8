//! A target's `aws` table (`[targets.NAME.aws]`) as written ([`RawAws`]) and as checked
//! ([`AwsTarget`]): the role to assume and the region (required), `session_name`, `duration`,
//! `endpoint_url`, `fips`, the session policies `policy` and `policy_arns`, and the shared HTTP
//! keys (`ca_file`, `allow_insecure_http`, `connect_timeout`, `timeout`). Errors name the key
//! within the table; keyfed's host adds the table's path and the file.

use std::time::Duration;

use keyfed_core::config::{Context, HumanDuration, KeyError, WithHttp, url};
use keyfed_core::http::HttpSettings;
use serde::Deserialize;
use url::Url;

use crate::settings::{MAX_DURATION_SECS, MIN_DURATION_SECS};
use crate::{AssumeRoleRequest, StsSettings, session_name};

/// The audience STS expects of a web identity token: an IAM OIDC provider's usual client ID,
/// and a target's `audience` when it has an `aws` table and sets none.
pub const AUDIENCE: &str = "sts.amazonaws.com";

/// What STS and an IAM OIDC identity provider require of a web identity token: an RSA or EC
/// signature (no `kid` needed while the JWKS holds one key), an issuer URL without a port,
/// and at most 20,000 characters (`WebIdentityToken`'s limit). STS fetches the issuer's
/// discovery document and JWKS from the internet.
pub const SUBJECT_TOKEN: keyfed_core::token_rules::SubjectTokenRules =
    keyfed_core::token_rules::SubjectTokenRules {
        cloud: "AWS STS",
        audience_setting: "the IAM OIDC identity provider's audiences (client ID list)",
        algorithms: &[
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
        ],
        kid_required: false,
        issuer_port_allowed: false,
        max_subject_bytes: None,
        max_lifetime: None,
        max_token_bytes: Some(20_000),
        uploaded_jwks: None,
    };

/// How long the credentials live unless `duration` says otherwise.
const DEFAULT_DURATION: Duration = Duration::from_secs(3600);

/// The `aws` table's own keys, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsKeys {
    pub role_arn: String,
    pub region: String,
    /// A template: `{hostname}` and `{target}` are expanded (default `{hostname}`).
    pub session_name: Option<String>,
    pub duration: Option<HumanDuration>,
    pub endpoint_url: Option<String>,
    pub fips: Option<bool>,
    pub policy: Option<String>,
    pub policy_arns: Option<Vec<String>>,
}

/// The `aws` table as written: its own keys and the HTTP keys.
pub type RawAws = WithHttp<RawAwsKeys>;

/// A target's `aws` table, checked: AssumeRoleWithWebIdentity of one role at one STS endpoint.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    pub role_arn: String,
    pub region: String,
    /// Already expanded and made acceptable to STS.
    pub session_name: String,
    pub duration: Duration,
    pub endpoint_url: Option<Url>,
    pub fips: bool,
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub http: HttpSettings,
}

impl AwsTarget {
    /// Where and how to reach STS.
    pub fn sts_settings(&self) -> StsSettings {
        StsSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            fips: self.fips,
            http: self.http.clone(),
        }
    }

    /// The call's parameters, apart from the token.
    pub fn assume_role_request(&self) -> AssumeRoleRequest {
        AssumeRoleRequest {
            role_arn: self.role_arn.clone(),
            session_name: self.session_name.clone(),
            duration: self.duration,
            policy: self.policy.clone(),
            policy_arns: self.policy_arns.clone(),
        }
    }
}

/// Checks the `aws` table of the target named `target` (its name may appear in the session
/// name). Nothing falls back to a default when a value is wrong.
pub fn resolve(raw: &RawAws, target: &str, cx: &dyn Context) -> Result<AwsTarget, KeyError> {
    if !is_role_arn(&raw.role_arn) {
        return Err(KeyError::new(
            "role_arn",
            format!(
                "expected a role ARN such as \"arn:aws:iam::123456789012:role/name\", found \"{}\"",
                raw.role_arn
            ),
        ));
    }
    let region_ok = !raw.region.is_empty()
        && raw
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && raw.region.contains('-');
    if !region_ok {
        return Err(KeyError::new(
            "region",
            format!(
                "expected an AWS region such as \"eu-west-1\", found \"{}\"",
                raw.region
            ),
        ));
    }
    let duration = raw.duration.map_or(DEFAULT_DURATION, |d| d.0);
    if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&duration.as_secs()) {
        return Err(KeyError::new(
            "duration",
            format!(
                "expected between 15m and 12h (STS DurationSeconds 900–43200), found {}",
                HumanDuration(duration)
            ),
        ));
    }
    let template = raw.session_name.as_deref().unwrap_or("{hostname}");
    let session_name = session_name(template, cx.hostname(), target);
    let http = raw.http();
    let endpoint_url = raw
        .endpoint_url
        .as_deref()
        .map(|u| url(cx, "endpoint_url", u, http.allow_insecure_http()))
        .transpose()?;
    let fips = raw.fips.unwrap_or(false);
    if fips && endpoint_url.is_some() {
        // The client refuses the pair too; saying so here lets `keyfed check` catch it.
        return Err(KeyError::new(
            "fips",
            "fips = true selects AWS's FIPS endpoint and cannot be combined with endpoint_url; \
             put the FIPS endpoint's URL into endpoint_url instead",
        ));
    }
    if let Some(policy) = &raw.policy {
        serde_json::from_str::<serde_json::Value>(policy).map_err(|e| {
            KeyError::new(
                "policy",
                format!("expected a JSON IAM policy document: {e}"),
            )
        })?;
    }
    let policy_arns = raw.policy_arns.clone().unwrap_or_default();
    if let Some(bad) = policy_arns.iter().find(|a| !a.starts_with("arn:aws")) {
        return Err(KeyError::new(
            "policy_arns",
            format!("expected managed policy ARNs, found \"{bad}\""),
        ));
    }
    Ok(AwsTarget {
        role_arn: raw.role_arn.clone(),
        region: raw.region.clone(),
        session_name,
        duration,
        endpoint_url,
        fips,
        policy: raw.policy.clone(),
        policy_arns,
        http: http.resolve(cx)?,
    })
}

/// `arn:aws…:iam::<12-digit account>:role/<name>` (any partition: `aws`, `aws-cn`, `aws-us-gov`).
fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.split(':');
    arn.starts_with("arn:aws")
        && parts
            .nth(4)
            .is_some_and(|a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()))
        && parts
            .next()
            .is_some_and(|r| r.starts_with("role/") && r.len() > 5)
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

    const ROLE: &str =
        "role_arn = \"arn:aws:iam::123456789012:role/app\"\nregion = \"eu-west-1\"\n";

    fn resolve_toml(text: &str) -> Result<AwsTarget, String> {
        let raw: RawAws = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        resolve(&raw, "prod", &Host).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_filled_in() {
        let aws = resolve_toml(ROLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(aws.session_name, "web-01.example.com");
        assert_eq!(aws.duration, Duration::from_secs(3600));
        assert_eq!(aws.http.timeout, Duration::from_secs(30));
        assert!(!aws.fips && aws.endpoint_url.is_none() && aws.policy_arns.is_empty());
        assert_eq!(aws.sts_settings().region, "eu-west-1");
        assert_eq!(aws.assume_role_request().session_name, aws.session_name);
        let named = resolve_toml(&format!(
            "{ROLE}session_name = \"{{target}}@{{hostname}}\"\n"
        ));
        assert_eq!(
            named.map(|a| a.session_name).ok().as_deref(),
            Some("prod@web-01.example.com")
        );
    }

    #[test]
    fn each_mistake_is_named_by_its_key() {
        let arn_err = "role_arn: expected a role ARN such as \"arn:aws:iam::123456789012:role/name\", found \"arn:aws:iam::1234:role/app\"";
        for (text, says) in [
            (ROLE.replace("123456789012", "1234"), arn_err.to_owned()),
            (
                ROLE.replace(":role/app", ":user/app"),
                "role_arn: expected a role ARN".to_owned(),
            ),
            (
                ROLE.replace("eu-west-1", "Frankfurt"),
                "region: expected an AWS region such as \"eu-west-1\", found \"Frankfurt\""
                    .to_owned(),
            ),
            (
                format!("{ROLE}duration = \"5m\"\n"),
                "duration: expected between 15m and 12h (STS DurationSeconds 900–43200), found 5m"
                    .to_owned(),
            ),
            (
                format!("{ROLE}duration = \"13h\"\n"),
                "duration: expected between 15m and 12h".to_owned(),
            ),
            (
                format!("{ROLE}endpoint_url = \"http://sts.example.com\"\n"),
                "endpoint_url: http://sts.example.com/ uses plain http://".to_owned(),
            ),
            (
                format!("{ROLE}endpoint_url = \"${{STS}}\"\n"),
                "endpoint_url: a variable in \"${STS}\" is not set".to_owned(),
            ),
            (
                format!("{ROLE}policy = \"{{not json\"\n"),
                "policy: expected a JSON IAM policy document".to_owned(),
            ),
            (
                format!("{ROLE}policy_arns = [\"ReadOnlyAccess\"]\n"),
                "policy_arns: expected managed policy ARNs, found \"ReadOnlyAccess\"".to_owned(),
            ),
            (
                format!("{ROLE}timeout = \"0s\"\n"),
                "timeout: expected a duration greater than zero".to_owned(),
            ),
            (
                format!("{ROLE}ca_file = \"missing-ca.pem\"\n"),
                "ca_file: /etc/keyfed/missing-ca.pem is not a readable file".to_owned(),
            ),
            (
                format!("{ROLE}role = \"x\"\n"),
                "unknown field `role`, expected one of `role_arn`, `region`, `session_name`, \
                 `duration`, `endpoint_url`, `fips`, `policy`, `policy_arns`, `ca_file`, \
                 `allow_insecure_http`, `connect_timeout`, `timeout`"
                    .to_owned(),
            ),
            (
                "region = \"eu-west-1\"\n".to_owned(),
                "missing field `role_arn`".to_owned(),
            ),
        ] {
            let err = resolve_toml(&text).err().unwrap_or_default();
            assert!(err.starts_with(&says), "{text}: {err}");
        }
    }

    /// issue 9: `keyfed check` accepted `fips = true` with an `endpoint_url`, which the client
    /// then refused when the daemon started.
    #[test]
    fn fips_with_an_endpoint_url_is_refused_when_checked_issue_9() {
        let err = resolve_toml(&format!(
            "{ROLE}fips = true\nendpoint_url = \"https://sts.eu-west-1.amazonaws.com\"\n"
        ))
        .err()
        .unwrap_or_default();
        assert!(
            err.starts_with("fips: fips = true selects AWS's FIPS endpoint"),
            "{err}"
        );
        let plain = resolve_toml(&format!(
            "{ROLE}endpoint_url = \"http://127.0.0.1:9000\"\nallow_insecure_http = false\n"
        ));
        assert!(plain.is_ok_and(|a| a.endpoint_url.is_some()));
        let insecure = resolve_toml(&format!(
            "{ROLE}endpoint_url = \"http://sts.internal\"\nallow_insecure_http = true\n"
        ));
        assert!(insecure.is_ok_and(|a| a.http.allow_insecure_http));
    }
}
