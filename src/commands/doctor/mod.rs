//! `keyfed doctor [target] [--json]`: every check of each target (or the one named) end to end,
//! in order, each `✓`, `✗` or `!` with what it found and, when not `✓`, the fix:
//!
//! 1. the configuration loads (else that one failure, as `keyfed check` words it, and nothing
//!    else runs); the issuer's secret or key file is readable by its owner only (`files`);
//! 2. Keycloak is reachable, its TLS certificate is accepted (the problem named as rustls found
//!    it), its discovery document and JWKS are fetched, and this host's clock is within 30 s of
//!    the server's `Date` (`keycloak`);
//! 3. a token is obtained and passes keyfed's checks (`token`), and its claims meet what the
//!    target's cloud requires (`claims`, from the cloud crate's `SUBJECT_TOKEN` rules) — for a
//!    token keyfed refuses, read without trusting it, to say which claim is wrong;
//! 4. the cloud's exchange itself, its refusal translated into cause and fix (`exchange`);
//! 5. a reminder of the URLs the cloud fetches from the internet (`public`).
//!
//! A check that needs one that failed is shown as skipped. Doctor writes no output file and
//! does not ask the daemon: it talks to Keycloak and the cloud as the daemon would, once.
//! `report` says how the result is printed (text, or one JSON document with `--json`).
//!
//! Exit status: 0 when no check failed (warnings do not fail), 1 when one did, 3 when the
//! configuration does not load, 2 for a target the configuration does not have (reported as
//! one failed check, `target`, after the configuration's).

mod claims;
mod exchange;
mod files;
mod keycloak;
mod public;
mod report;
mod token;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyfed_core::Clock as _;
use keyfed_core::clock::{SystemClock, from_unix_seconds};
use keyfed_core::http::is_loopback;
use keyfed_core::token_facts::printable;
use keyfed_core::token_rules::SubjectTokenRules;
use keyfed_keycloak::KeycloakClient;
use url::Url;

use crate::config::{self, Exchange, SecretSource, Target};

use report::{Check, Report, TargetReport};
use token::Obtained;

pub async fn run(path: &Path, target: Option<&str>, json: bool) -> anyhow::Result<()> {
    let config = match config::load(path, &super::env_var, &super::host()) {
        Ok(config) => config,
        Err(e) => {
            let report = Report::new(
                path.to_path_buf(),
                vec![files::config_failed(&e)],
                Vec::new(),
            );
            print(&report, json)?;
            return Err(
                anyhow::Error::new(e).context("keyfed doctor: the configuration does not load")
            );
        }
    };
    let names: Vec<String> = match target {
        Some(name) if !config.targets.contains_key(name) => {
            // Said in the report too, so that `--json` always prints a document.
            let error = super::unknown_target(&config, name);
            let mut checks = files::config_ok(&config, &[]);
            checks.truncate(1);
            checks.push(Check::fail(
                "target",
                error.0.clone(),
                "name a target the configuration has, or none to check them all",
            ));
            print(&Report::new(config.file.clone(), checks, Vec::new()), json)?;
            return Err(error.into());
        }
        Some(name) => vec![name.to_owned()],
        None => config.targets.keys().cloned().collect(),
    };
    let checked_issuers: Vec<&str> = names
        .iter()
        .filter_map(|n| config.targets.get(n))
        .map(|t| t.issuer.as_str())
        .collect();
    let config_checks = files::config_ok(&config, &checked_issuers);
    let file = config.file.clone();
    let timeout = config.engine.attempt_timeout;
    let issuers: BTreeMap<String, Issuer> = config
        .issuers
        .into_iter()
        .map(|(name, issuer)| {
            let client = KeycloakClient::new(issuer.settings, Arc::new(SystemClock))
                .map_err(|e| e.to_string());
            let entry = Issuer {
                source: issuer.secret_source,
                client,
            };
            (name, entry)
        })
        .collect();
    let mut targets = Vec::new();
    for name in &names {
        let Some(target) = config.targets.get(name) else {
            continue;
        };
        let Some(issuer) = issuers.get(&target.issuer) else {
            anyhow::bail!("the configuration lost issuer {}", target.issuer);
        };
        targets.push(check_target(target, issuer, timeout).await);
    }
    let report = Report::new(file, config_checks, targets);
    print(&report, json)?;
    let failures = report.failures();
    match failures.len() {
        0 => Ok(()),
        n => anyhow::bail!(
            "keyfed doctor: {n} check{} failed: {}",
            if n == 1 { "" } else { "s" },
            failures.join(", ")
        ),
    }
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        crate::stdout::write(format!(
            "{}\n",
            serde_json::to_string_pretty(&report.json())?
        ))?;
    } else {
        crate::stdout::write(report.text())?;
    }
    Ok(())
}

/// An issuer's secret's source and its client (or why none could be built).
struct Issuer {
    source: SecretSource,
    client: Result<KeycloakClient, String>,
}

/// One target's checks, in order.
async fn check_target(target: &Target, issuer: &Issuer, timeout: Duration) -> TargetReport {
    let mut checks = vec![files::secret(&target.issuer, &issuer.source)];
    let (jwks_uri, obtained) = keycloak_and_token(target, issuer, &mut checks).await;
    if let Some(rules) = rules_of(&target.exchange) {
        let cloud = Cloud {
            target,
            rules,
            client_id: issuer
                .client
                .as_ref()
                .map_or("<client>", |c| c.settings().client_id.as_str()),
            configured: issuer
                .client
                .as_ref()
                .map_or("<issuer>".to_owned(), |c| c.settings().url.to_string()),
            jwks_uri,
        };
        cloud.check(&obtained, timeout, &mut checks).await;
    }
    TargetReport {
        name: target.name.clone(),
        kind: target.exchange.kind(),
        issuer: target.issuer.clone(),
        checks,
    }
}

/// The issuer's checks and the token: what the discovery document names as the JWKS, and the
/// token (or what it said of itself, or nothing).
async fn keycloak_and_token(
    target: &Target,
    issuer: &Issuer,
    checks: &mut Vec<Check>,
) -> (Option<Url>, Obtained) {
    let client = match &issuer.client {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check::fail_from(
                "keycloak.reachable",
                e,
                "correct the issuer's settings as the error says",
            ));
            checks.push(Check::skip("token", "no client for the issuer"));
            return (None, Obtained::Nothing);
        }
    };
    let reached = keycloak::check(client, checks).await;
    let obtained = match reached.blocked {
        Some(why) => {
            checks.push(Check::skip("token", why));
            Obtained::Nothing
        }
        None => token::check(client, target, checks).await,
    };
    let iat = obtained.claims().and_then(|(d, _)| d.time_claim("iat"));
    if let (Some(at), Some(iat)) = (reached.clock_from_token, iat) {
        checks[at] = keycloak::skew(from_unix_seconds(iat), SystemClock.now(), "the token's iat");
    }
    (reached.jwks_uri, obtained)
}

/// The checks of a target's cloud: the token's claims against its rules, the exchange, and
/// what it fetches from the internet.
struct Cloud<'a> {
    target: &'a Target,
    rules: &'static SubjectTokenRules,
    client_id: &'a str,
    /// The configured issuer URL, for when no token says it.
    configured: String,
    jwks_uri: Option<Url>,
}

impl Cloud<'_> {
    async fn check(&self, obtained: &Obtained, timeout: Duration, checks: &mut Vec<Check>) {
        let local_cloud = local_cloud(&self.target.exchange);
        let claimed = obtained.claims();
        match claimed {
            Some((decoded, length)) => checks.extend(claims::check(&claims::Claimed {
                target: self.target,
                client_id: self.client_id,
                rules: self.rules,
                local_cloud: local_cloud.as_ref(),
                decoded,
                length,
            })),
            None => checks.push(Check::skip("claims", "no token was issued")),
        }
        match obtained {
            Obtained::Accepted(token) => {
                let exchange = &self.target.exchange;
                checks.extend(exchange::check(exchange, token.secret(), timeout).await);
            }
            Obtained::Refused(_) => {
                checks.push(Check::skip("exchange", "no token that keyfed accepts"));
            }
            Obtained::Nothing => checks.push(Check::skip("exchange", "no token was issued")),
        }
        let iss = claimed
            .and_then(|(decoded, _)| decoded.string_claim("iss"))
            .map_or_else(|| self.configured.clone(), printable);
        checks.push(public::remind(
            self.rules,
            &iss,
            self.jwks_uri.as_ref(),
            local_cloud.as_ref(),
        ));
    }
}

/// What the target's cloud requires of its token; none for a bare token target.
fn rules_of(exchange: &Exchange) -> Option<&'static SubjectTokenRules> {
    match exchange {
        Exchange::Token => None,
        Exchange::Aws(_) => Some(&keyfed_aws::config::SUBJECT_TOKEN),
        Exchange::Gcp(_) => Some(&keyfed_gcp::config::SUBJECT_TOKEN),
        Exchange::Azure(_) => Some(&keyfed_azure::config::SUBJECT_TOKEN),
    }
}

/// The cloud's endpoint when it is on this host: an emulator or a local stand-in, which needs
/// no public issuer.
fn local_cloud(exchange: &Exchange) -> Option<Url> {
    let endpoint = match exchange {
        Exchange::Token => None,
        Exchange::Aws(aws) => aws.endpoint_url.clone(),
        Exchange::Gcp(gcp) => Some(gcp.sts_url.clone()),
        Exchange::Azure(azure) => Some(azure.authority_host.clone()),
    };
    endpoint.filter(is_loopback)
}
