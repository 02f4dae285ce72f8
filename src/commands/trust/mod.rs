//! `keyfed trust <target>`: the cloud-side setup a target needs, printed as commands for the
//! cloud's CLI (`--format shell`), the API's JSON documents (`json`) or Terraform resources of
//! the official providers (`terraform`); with `--keycloak`, the Keycloak side instead.
//!
//! The setup is built from the target's configuration and the claims of a real token fetched
//! from its issuer (`iss`, `sub`, and the target's audience, which keyfed has checked the token
//! carries), so what it trusts is exactly what keyfed will present. Each cloud has a module
//! (`aws.rs`, `gcp.rs`, `azure.rs`); `public.rs` says whether a cloud can reach the issuer and
//! `jwks.rs` cuts the issuer's keys down to what Google takes when it cannot; `terraform.rs`
//! names the providers Terraform output needs. The setup goes to standard output and nothing
//! else does: notes and warnings go to standard error. Every value in a printed command or
//! Terraform is quoted by `keyfed_core::quote`; JSON is written by serde_json.

mod aws;
mod azure;
mod gcp;
mod jwks;
mod keycloak;
mod terraform;
// `keyfed doctor` judges issuers with it too.
pub(super) mod public;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::TrustFormat;
use crate::config::Exchange;
use crate::exit::UsageError;
use keyfed_core::quote;

/// The flags of `keyfed trust` besides the target.
#[derive(Debug)]
pub struct Options {
    pub format: TrustFormat,
    pub keycloak: bool,
    /// Where a GCP target's JWKS goes when Google cannot fetch it (`--jwks-file`).
    pub jwks_file: Option<PathBuf>,
}

/// What the cloud must trust, from the configuration and a real token.
#[derive(Debug)]
struct Facts {
    /// The target's name.
    target: String,
    /// The token's `iss`.
    issuer: String,
    /// The token's `sub`: the Keycloak client's service account.
    subject: String,
    /// The audience the cloud must accept: the target's, which the token's `aud` holds.
    audience: String,
    /// Every value of the token's `aud`.
    token_audiences: Vec<String>,
    /// The Keycloak client this host authenticates as (names the Azure credential).
    client_id: String,
}

pub async fn run(path: &Path, target: &str, options: Options) -> anyhow::Result<()> {
    if options.keycloak {
        return keycloak::run(path, target, options.format).await;
    }
    let config = super::load(path)?;
    let Some(configured) = config.targets.get(target) else {
        return Err(super::unknown_target(&config, target).into());
    };
    if matches!(configured.exchange, Exchange::Token) {
        return Err(token_target(target).into());
    }
    let (client, target) = super::client_for(config, target)?;
    let token = client.fetch_token(&target.request).await.with_context(|| {
        format!(
            "cannot get a token for target \"{}\" to build its trust setup from; \
             `keyfed doctor {}` checks each step on the way",
            target.name,
            quote::sh(&target.name)
        )
    })?;
    let decoded = token.decoded();
    let issuer = decoded
        .string_claim("iss")
        .context("the token has no iss claim")?
        .to_owned();
    let subject = token
        .subject()
        .filter(|s| !s.is_empty())
        .context("the token has no sub claim, so a cloud has no identity to trust")?
        .to_owned();
    let facts = Facts {
        target: target.name.clone(),
        issuer,
        subject,
        audience: target.request.audience.clone(),
        token_audiences: token.audience().0,
        client_id: client.settings().client_id.clone(),
    };
    let setup = match &target.exchange {
        Exchange::Aws(aws) => aws::setup(&facts, aws, options.format)?,
        Exchange::Gcp(gcp) => {
            let jwks_file = options
                .jwks_file
                .unwrap_or_else(|| default_jwks_file(&facts.target));
            gcp::setup(&facts, gcp, options.format, &client, &jwks_file).await?
        }
        Exchange::Azure(azure) => azure::setup(&facts, azure, options.format)?,
        Exchange::Token => return Err(token_target(&facts.target).into()),
    };
    for warning in warnings(&facts, &target.exchange) {
        eprintln!("warning: {warning}");
    }
    crate::stdout::write(setup)?;
    Ok(())
}

/// The refusal of a token target: it trusts no cloud.
fn token_target(target: &str) -> UsageError {
    UsageError(format!(
        "target \"{target}\" trades its token with no cloud (it has no aws, gcp or azure \
         table), so there is nothing to set up on a cloud's side; `keyfed trust {} --keycloak` \
         prints what Keycloak needs for it",
        quote::sh(target)
    ))
}

/// `./<target>-jwks.json`, the target's name made safe for a file name. Not a Terraform label
/// (`quote::label`): a file name keeps the `.` a target's name may hold, and `/` must go.
fn default_jwks_file(target: &str) -> PathBuf {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(format!("./{safe}-jwks.json"))
}

/// Claims the cloud would refuse, said briefly: `keyfed doctor` checks them all.
fn warnings(facts: &Facts, exchange: &Exchange) -> Vec<String> {
    let mut out = Vec::new();
    let doctor = format!("`keyfed doctor {}` says more", quote::sh(&facts.target));
    if facts.token_audiences.len() > 1 {
        out.push(format!(
            "the token's aud holds {} values ({}); {} expects it to be the single string {}; {doctor}",
            facts.token_audiences.len(),
            shown_list(&facts.token_audiences),
            exchange_name(exchange),
            shown(&facts.audience),
        ));
    }
    let aws = matches!(exchange, Exchange::Aws(_));
    let fetches_keys = aws || matches!(exchange, Exchange::Azure(_));
    if let Some(why) = public::not_public(&facts.issuer).filter(|_| fetches_keys) {
        out.push(format!(
            "{} fetches the issuer's discovery document and keys from the internet, over \
             https only, and it cannot reach {}: {why}; {doctor}",
            exchange_name(exchange),
            shown(&facts.issuer),
        ));
    }
    // Google can be given the keys of an issuer it cannot reach, but not a plain-http one.
    let gcp = matches!(exchange, Exchange::Gcp(_));
    if let Some(why) = public::not_https(&facts.issuer).filter(|_| gcp) {
        out.push(format!(
            "Google Cloud takes an https issuer only (the provider's issuer URI must start with \
             https://, even with its keys uploaded), and the token's iss {} is not one: {why}; \
             {doctor}",
            shown(&facts.issuer),
        ));
    }
    if let Some(port) = url::Url::parse(&facts.issuer)
        .ok()
        .and_then(|u| u.port())
        .filter(|_| aws)
    {
        out.push(format!(
            "the token's iss {} names port {port}, and IAM wants an OIDC provider's URL without \
             one; {doctor}",
            shown(&facts.issuer)
        ));
    }
    if aws && facts.issuer.ends_with('/') {
        out.push(format!(
            "the token's iss {} ends with a slash: the IAM provider's URL must be the iss \
             exactly, slash included, and its condition keys then end in \"/:aud\" and \
             \"/:sub\"; {doctor}",
            shown(&facts.issuer)
        ));
    }
    if matches!(exchange, Exchange::Gcp(_)) && facts.subject.len() > 127 {
        out.push(format!(
            "the token's sub is {} bytes long, and google.subject takes at most 127; {doctor}",
            facts.subject.len()
        ));
    }
    out
}

fn exchange_name(exchange: &Exchange) -> &'static str {
    match exchange {
        Exchange::Aws(_) => "AWS",
        Exchange::Gcp(_) => "Google Cloud",
        Exchange::Azure(_) => "Entra ID",
        Exchange::Token => "no cloud",
    }
}

/// A value as a JSON string, for comments and notes: quoted, with every control character
/// escaped, so that no value can end a comment line and start a command.
fn shown(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

fn shown_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| shown(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` as comment lines starting with `# ` (shell and Terraform alike), each of its lines
/// commented, so a value with a line break in it stays inside the comment.
fn comment(text: &str) -> String {
    comment_at("", text)
}

/// [`comment`], each line indented by `indent`.
fn comment_at(indent: &str, text: &str) -> String {
    text.lines()
        .map(|line| format!("{indent}# {line}\n"))
        .collect()
}

/// The closing comment of shell and Terraform output: which token the setup was built from
/// (its claims, never the token).
fn built_from(facts: &Facts) -> String {
    comment(&format!(
        "Built from a token of target {} with iss {}, sub {} and aud {}.",
        shown(&facts.target),
        shown(&facts.issuer),
        shown(&facts.subject),
        shown_list(&facts.token_audiences),
    ))
}

/// A shell command, one argument per continued line after the first `head` words.
fn command(head: &[String], args: &[String]) -> String {
    command_at("", head, args)
}

/// [`command`] indented by `indent`. Only the starts of the command's lines are indented,
/// never a line inside a quoted value, which must reach the program as it is.
fn command_at(indent: &str, head: &[String], args: &[String]) -> String {
    let mut out = format!("{indent}{}", head.join(" "));
    for arg in args {
        out.push_str(" \\\n");
        out.push_str(indent);
        out.push_str("  ");
        out.push_str(arg);
    }
    out.push('\n');
    out
}

/// `--flag=VALUE`, the value quoted for sh.
fn flag(name: &str, value: &str) -> String {
    format!("--{name}={}", quote::sh(value))
}

#[cfg(test)]
mod tests;
