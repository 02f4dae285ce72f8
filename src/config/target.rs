//! `[targets.NAME]`: which issuer and audience, what the token is traded for (a cloud's table,
//! such as `aws = {…}`, checked by that cloud's module; none for a plain token), who may have
//! the credential, and the outputs — each checked against the kind of target it belongs to.

use std::collections::BTreeMap;
use std::time::Duration;

use keyfed_keycloak::TokenRequest;
use url::Url;

use super::aws::{self, AwsExchange};
use super::azure::{self, AzureExchange};
use super::gcp::{self, GcpExchange};
use super::issuer::Issuer;
use super::raw::RawTarget;
use super::resolve::Ctx;
use super::{ConfigError, output, perm};
use crate::outputs::Output;

const DEFAULT_MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

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

/// What a target trades its token for: each cloud a variant, its settings checked by the cloud's
/// module (`aws.rs`, `gcp.rs`, `azure.rs`).
#[derive(Debug, Clone)]
pub enum Exchange {
    /// No exchange: the Keycloak token is the credential.
    Token,
    Aws(Box<AwsExchange>),
    Gcp(Box<GcpExchange>),
    Azure(Box<AzureExchange>),
}

impl Exchange {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Aws(_) => "aws",
            Self::Gcp(_) => "gcp",
            Self::Azure(_) => "azure",
        }
    }

    /// The audience a target gets when it sets none: what the cloud expects.
    pub fn default_audience(&self) -> Option<String> {
        match self {
            Self::Token => None,
            Self::Aws(_) => Some(keyfed_aws::config::AUDIENCE.to_owned()),
            Self::Gcp(gcp) => Some(gcp.default_audience()),
            Self::Azure(_) => Some(keyfed_azure::config::AUDIENCE.to_owned()),
        }
    }
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
    let exchange = exchange(ctx, name, raw)?;
    let audience = match (&raw.audience, exchange.default_audience()) {
        (Some(a), _) if a.trim().is_empty() => {
            return Err(ctx.err(
                &key("audience"),
                "expected the audience the token must carry, found an empty string",
            ));
        }
        (Some(a), _) => a.clone(),
        (None, Some(default)) => default,
        (None, None) => {
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
        .map(|(i, o)| {
            output::resolve(
                ctx,
                &format!("targets.{name}.outputs[{i}]"),
                o,
                name,
                &exchange,
            )
        })
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

/// The cloud the target's token is traded with, if any.
fn exchange(ctx: &Ctx<'_>, name: &str, raw: &RawTarget) -> Result<Exchange, ConfigError> {
    let tables = [
        ("aws", raw.aws.is_some()),
        ("gcp", raw.gcp.is_some()),
        ("azure", raw.azure.is_some()),
    ];
    let present: Vec<&str> = tables.iter().filter(|(_, p)| *p).map(|(t, _)| *t).collect();
    if let [first, second, ..] = present.as_slice() {
        return Err(ctx.err(
            &format!("targets.{name}.{second}"),
            format!("a target trades its token with one cloud, and this one has a table for {first} already"),
        ));
    }
    Ok(match (&raw.aws, &raw.gcp, &raw.azure) {
        (Some(table), _, _) => Exchange::Aws(Box::new(aws::exchange(ctx, name, table)?)),
        (_, Some(table), _) => Exchange::Gcp(Box::new(gcp::exchange(ctx, name, table)?)),
        (_, _, Some(table)) => Exchange::Azure(Box::new(azure::exchange(ctx, name, table)?)),
        (None, None, None) => Exchange::Token,
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
            let at = format!("targets.{}.outputs[{i}]", target.name);
            let extra = output.kind.extra_path().map(|p| (p, "subject_token_path"));
            for (path, key) in std::iter::once((output.path.as_path(), "path")).chain(extra) {
                let here = format!("{at}.{key}");
                if let Some(first) = seen.insert(path, here.clone()) {
                    return Err(ctx.err(
                        &here,
                        format!("{} is also written by {first}", path.display()),
                    ));
                }
            }
        }
    }
    Ok(())
}
