//! Wiring: each configured target becomes a [`TargetEngine`] with its upstream [`Source`] —
//! a Keycloak token alone, or a Keycloak token traded with AWS STS — and its outputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyfed_aws::{AssumeRoleRequest, Retry, StsClient, StsSettings};
use keyfed_core::clock::Clock;
use keyfed_keycloak::{KeycloakClient, TokenRequest};

use crate::config::{AwsExchange, Config, Exchange, Target};
use crate::credential::Credential;
use crate::engine::{Engine, Fetch, FetchError, Source, TargetEngine};

/// botocore asks for new process/container credentials with less than 15 minutes left.
pub const AWS_CONSUMER_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The Keycloak token itself.
#[derive(Debug)]
pub struct TokenSource {
    keycloak: Arc<KeycloakClient>,
    request: TokenRequest,
}

impl Source for TokenSource {
    fn fetch(&self) -> Fetch<'_> {
        Box::pin(async move {
            self.keycloak
                .fetch_token(&self.request)
                .await
                .map(Credential::Token)
                .map_err(|e| FetchError::new(&e))
        })
    }

    fn consumer_window(&self) -> Duration {
        Duration::ZERO
    }
}

/// A fresh Keycloak token traded with AWS STS.
#[derive(Debug)]
pub struct AwsSource {
    keycloak: Arc<KeycloakClient>,
    request: TokenRequest,
    sts: StsClient,
    assume: AssumeRoleRequest,
}

impl Source for AwsSource {
    fn fetch(&self) -> Fetch<'_> {
        Box::pin(async move {
            let mut fresh_token_retry = true;
            loop {
                // Keycloak tokens are short-lived: each exchange gets a new one.
                let token = self
                    .keycloak
                    .fetch_token(&self.request)
                    .await
                    .map_err(|e| FetchError::new(&e))?;
                match self
                    .sts
                    .assume_role_with_web_identity(&self.assume, token.secret())
                    .await
                {
                    Ok(credentials) => return Ok(Credential::Aws(credentials)),
                    Err(e) if fresh_token_retry && e.retry() == Retry::FreshTokenOnce => {
                        tracing::info!("STS refused the token ({e}); retrying once with a new one");
                        fresh_token_retry = false;
                    }
                    Err(e) => return Err(FetchError::new(&e)),
                }
            }
        })
    }

    fn consumer_window(&self) -> Duration {
        AWS_CONSUMER_WINDOW
    }
}

fn aws_source(
    keycloak: Arc<KeycloakClient>,
    request: TokenRequest,
    aws: &AwsExchange,
) -> anyhow::Result<AwsSource> {
    let sts = StsClient::new(StsSettings {
        region: aws.region.clone(),
        endpoint_url: aws.endpoint_url.clone(),
        fips: aws.fips,
        http: aws.http.clone(),
    })?;
    Ok(AwsSource {
        keycloak,
        request,
        sts,
        assume: AssumeRoleRequest {
            role_arn: aws.role_arn.clone(),
            session_name: aws.session_name.clone(),
            duration: aws.duration,
            policy: aws.policy.clone(),
            policy_arns: aws.policy_arns.clone(),
        },
    })
}

/// The source for one target.
pub fn source(keycloak: Arc<KeycloakClient>, target: &Target) -> anyhow::Result<Box<dyn Source>> {
    Ok(match &target.exchange {
        Exchange::Token => Box::new(TokenSource {
            keycloak,
            request: target.request.clone(),
        }),
        Exchange::Aws(aws) => Box::new(aws_source(keycloak, target.request.clone(), aws)?),
    })
}

/// One client per issuer, shared by its targets.
pub fn keycloak_clients(
    config: &mut Config,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<BTreeMap<String, Arc<KeycloakClient>>> {
    std::mem::take(&mut config.issuers)
        .into_iter()
        .map(|(name, issuer)| {
            let client = KeycloakClient::new(issuer.settings, Arc::clone(clock))?;
            Ok((name, Arc::new(client)))
        })
        .collect()
}

/// The engine for every target in `config`.
pub fn engine(mut config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Engine> {
    let clients = keycloak_clients(&mut config, &clock)?;
    let mut targets = Vec::new();
    for target in config.targets.into_values() {
        let keycloak = clients
            .get(&target.issuer)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("target {} lost its issuer", target.name))?;
        let source = source(keycloak, &target)?;
        targets.push(TargetEngine::new(
            target.name,
            source,
            target.outputs,
            Arc::clone(&clock),
            config.engine.backoff,
            config.engine.attempt_timeout,
        ));
    }
    Ok(Engine::new(targets))
}
