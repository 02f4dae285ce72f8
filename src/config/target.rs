//! `[targets.NAME]`: which issuer and audience, the exchange (`aws = {…}` or none for a plain
//! token), and the outputs — each checked against the exchange it belongs to.

use std::collections::BTreeMap;
use std::time::Duration;

use keyfed_core::http::HttpSettings;
use keyfed_keycloak::TokenRequest;
use url::Url;

use super::raw::{RawAws, RawOutput, RawOutputKind, RawTarget};
use super::resolve::{Ctx, Issuer};
use super::{ConfigError, perm};
use crate::outputs::{Output, OutputKind};

const DEFAULT_MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The audience AWS STS expects of a web identity token.
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";

/// A target: which issuer, which audience, what to trade the token for, where it goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub issuer: String,
    pub request: TokenRequest,
    pub exchange: Exchange,
    pub outputs: Vec<Output>,
    /// The container face's path for this target (AWS targets).
    pub container_path: Option<String>,
    /// Who may have this target's credentials from the control socket and the endpoint.
    pub access: Access,
}

/// Local users and groups allowed a target's credentials; both empty means everyone local.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
}

impl Access {
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// What a target trades its token for. `gcp` and `azure` join this enum with their issues.
#[derive(Debug, Clone)]
pub enum Exchange {
    /// No exchange: the Keycloak token is the credential.
    Token,
    Aws(Box<AwsExchange>),
}

impl Exchange {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Aws(_) => "aws",
        }
    }
}

/// `aws = {…}`: AssumeRoleWithWebIdentity.
#[derive(Debug, Clone)]
pub struct AwsExchange {
    pub role_arn: String,
    pub region: String,
    /// Already expanded and sanitised.
    pub session_name: String,
    pub duration: Duration,
    pub endpoint_url: Option<Url>,
    pub fips: bool,
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub http: HttpSettings,
}

pub(super) fn resolve(
    ctx: &mut Ctx<'_>,
    name: &str,
    raw: &RawTarget,
    issuers: &BTreeMap<String, Issuer>,
) -> Result<Target, ConfigError> {
    let key = |k: &str| format!("targets.{name}.{k}");
    if !issuers.contains_key(&raw.issuer) {
        let known: Vec<&str> = issuers.keys().map(String::as_str).collect();
        return Err(ctx.err(
            &key("issuer"),
            format!(
                "no issuer named \"{}\" (defined: {})",
                raw.issuer,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let exchange = match &raw.aws {
        Some(aws) => Exchange::Aws(Box::new(aws_exchange(ctx, name, aws)?)),
        None => Exchange::Token,
    };
    let audience = match (&raw.audience, &exchange) {
        (Some(a), _) if a.trim().is_empty() => {
            return Err(ctx.err(
                &key("audience"),
                "expected the audience the token must carry, found an empty string",
            ));
        }
        (Some(a), _) => a.clone(),
        (None, Exchange::Aws(_)) => AWS_AUDIENCE.to_owned(),
        (None, Exchange::Token) => {
            return Err(ctx.err(
                &key("audience"),
                "is required: the audience the token must carry",
            ));
        }
    };
    let scope = match &raw.scope {
        None => None,
        Some(list) => {
            let items = list.items();
            if items.is_empty()
                || items
                    .iter()
                    .any(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                return Err(ctx.err(&key("scope"), "expected client scope names without spaces"));
            }
            Some(items.join(" "))
        }
    };
    if let Some(resource) = &raw.resource {
        Url::parse(resource).map_err(|e| {
            ctx.err(
                &key("resource"),
                format!("expected an absolute URI (RFC 8707), found \"{resource}\" ({e})"),
            )
        })?;
    }
    let outputs = raw
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| output(ctx, &format!("targets.{name}.outputs[{i}]"), o, &exchange))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Target {
        name: name.to_owned(),
        issuer: raw.issuer.clone(),
        request: TokenRequest {
            audience,
            strict_audience: raw.strict_audience.unwrap_or(false),
            scope,
            resource: raw.resource.clone(),
            audience_parameter: raw.audience_parameter.unwrap_or(false),
            min_remaining: raw
                .min_token_lifetime
                .map_or(DEFAULT_MIN_TOKEN_LIFETIME, |d| d.0),
        },
        exchange,
        outputs,
        container_path: raw.container_path.clone(),
        access: Access {
            users: raw
                .allow_users
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, u)| perm::user(ctx, &key(&format!("allow_users[{i}]")), u))
                .collect::<Result<_, _>>()?,
            groups: raw
                .allow_groups
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, g)| perm::group(ctx, &key(&format!("allow_groups[{i}]")), g))
                .collect::<Result<_, _>>()?,
        },
    })
}

fn aws_exchange(ctx: &mut Ctx<'_>, name: &str, raw: &RawAws) -> Result<AwsExchange, ConfigError> {
    let key = |k: &str| format!("targets.{name}.aws.{k}");
    let arn_ok = raw.role_arn.starts_with("arn:aws")
        && raw
            .role_arn
            .split(':')
            .nth(4)
            .is_some_and(|a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()))
        && raw
            .role_arn
            .split(':')
            .nth(5)
            .is_some_and(|r| r.starts_with("role/") && r.len() > 5);
    if !arn_ok {
        return Err(ctx.err(
            &key("role_arn"),
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
        return Err(ctx.err(
            &key("region"),
            format!(
                "expected an AWS region such as \"eu-west-1\", found \"{}\"",
                raw.region
            ),
        ));
    }
    let duration = raw.duration.map_or(Duration::from_secs(3600), |d| d.0);
    if !(900..=43_200).contains(&duration.as_secs()) {
        return Err(ctx.err(
            &key("duration"),
            format!(
                "expected between 15m and 12h (STS DurationSeconds 900–43200), found {}",
                super::duration::format(duration)
            ),
        ));
    }
    let template = raw.session_name.as_deref().unwrap_or("{hostname}");
    let session_name = keyfed_aws::session_name(template, &ctx.host.hostname, name);
    let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
    let endpoint_url = raw
        .endpoint_url
        .as_deref()
        .map(|u| ctx.url(&key("endpoint_url"), u, allow_insecure_http))
        .transpose()?;
    if let Some(policy) = &raw.policy {
        serde_json::from_str::<serde_json::Value>(policy).map_err(|e| {
            ctx.err(
                &key("policy"),
                format!("expected a JSON IAM policy document: {e}"),
            )
        })?;
    }
    let policy_arns = raw.policy_arns.clone().unwrap_or_default();
    if let Some(bad) = policy_arns.iter().find(|a| !a.starts_with("arn:aws")) {
        return Err(ctx.err(
            &key("policy_arns"),
            format!("expected managed policy ARNs, found \"{bad}\""),
        ));
    }
    let http = ctx.http(
        &format!("targets.{name}.aws"),
        raw.ca_file.as_deref(),
        allow_insecure_http,
        raw.connect_timeout,
        raw.timeout,
    )?;
    Ok(AwsExchange {
        role_arn: raw.role_arn.clone(),
        region: raw.region.clone(),
        session_name,
        duration,
        endpoint_url,
        fips: raw.fips.unwrap_or(false),
        policy: raw.policy.clone(),
        policy_arns,
        http,
    })
}

fn output(
    ctx: &Ctx<'_>,
    at: &str,
    raw: &RawOutput,
    exchange: &Exchange,
) -> Result<Output, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let kind = match raw.kind {
        RawOutputKind::AwsCredentials => OutputKind::AwsCredentials {
            profile: raw.profile.clone().unwrap_or_else(|| "default".to_owned()),
            merge: raw.merge.unwrap_or(false),
        },
        RawOutputKind::CredentialProcessJson => OutputKind::CredentialProcessJson,
        RawOutputKind::WebIdentityToken | RawOutputKind::Token => OutputKind::Token,
    };
    let needs = if kind.for_aws() { "aws" } else { "token" };
    if needs != exchange.kind() {
        return Err(ctx.err(
            &key("kind"),
            format!(
                "a \"{}\" output needs a target of kind {needs}, but this target is of kind {}",
                raw.kind.name(),
                exchange.kind()
            ),
        ));
    }
    if raw.kind != RawOutputKind::AwsCredentials {
        for (present, k) in [
            (raw.profile.is_some(), "profile"),
            (raw.merge.is_some(), "merge"),
        ] {
            if present {
                return Err(ctx.err(&key(k), "is only used with kind = \"aws-credentials\""));
            }
        }
    }
    if let OutputKind::AwsCredentials { profile, .. } = &kind
        && (profile.is_empty() || profile.contains(['[', ']', '\n']))
    {
        return Err(ctx.err(
            &key("profile"),
            format!("expected a profile name, found \"{profile}\""),
        ));
    }
    Ok(Output {
        name: raw.kind.name(),
        kind,
        path: ctx.path(&key("path"), &raw.path)?,
        mode: raw
            .mode
            .as_deref()
            .map(|m| perm::mode(ctx, &key("mode"), m))
            .transpose()?,
        owner: raw
            .owner
            .as_deref()
            .map(|u| perm::user(ctx, &key("owner"), u))
            .transpose()?,
        group: raw
            .group
            .as_deref()
            .map(|g| perm::group(ctx, &key("group"), g))
            .transpose()?,
    })
}

/// Two outputs writing one file would overwrite each other.
pub(super) fn check_unique_paths(
    ctx: &Ctx<'_>,
    targets: &BTreeMap<String, Target>,
) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&std::path::Path, String> = BTreeMap::new();
    for target in targets.values() {
        for (i, output) in target.outputs.iter().enumerate() {
            let here = format!("targets.{}.outputs[{i}].path", target.name);
            if let Some(first) = seen.insert(&output.path, here.clone()) {
                return Err(ctx.err(
                    &here,
                    format!("{} is also written by {first}", output.path.display()),
                ));
            }
        }
    }
    Ok(())
}
