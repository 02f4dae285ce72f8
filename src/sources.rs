//! Wiring: each configured target becomes a [`TargetEngine`] with its upstream [`Source`] —
//! a Keycloak token alone ([`TokenSource`]), or a Keycloak token traded with a cloud
//! ([`ExchangedSource`], one for every cloud: AWS STS, Google Cloud) — and its outputs. A source
//! issues the keyed variants ("slots") its cloud has ([`Exchange::has_slot`]): Google Cloud's
//! scopes and ID tokens; AWS and bare tokens have none, so the engine refuses every slot of
//! theirs without an upstream call. Every exchanged source also has the subject token itself
//! ([`SlotKey::SubjectToken`]), for the files of consumers that make the exchange themselves.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_aws::{AssumeRoleRequest, StsClient, StsExchange, StsSettings};
use keyfed_azure::{EntraClient, EntraExchange};
use keyfed_core::SecretString;
use keyfed_core::clock::Clock;
use keyfed_core::exchange::{Advice, Advise as _, Exchange, Side, SlotKey};
use keyfed_gcp::{GcpClient, GcpExchange};
use keyfed_keycloak::{AccessToken, KeycloakClient, TokenRequest};

use crate::config::{
    AwsExchange, AzureExchange as AzureTarget, Config, Exchange as TargetExchange,
    GcpExchange as GcpTarget, Target,
};
use crate::credential::Credential;
use crate::engine::{Engine, Fetch, FetchError, Slots, Source, TargetEngine};

/// botocore asks for new process/container credentials with less than 15 minutes left.
pub const AWS_CONSUMER_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Google's libraries refresh an access token with less than 3 min 45 s left (google-auth's
/// `REFRESH_THRESHOLD`); keyfed refreshes earlier than that.
pub const GCP_CONSUMER_WINDOW: Duration = Duration::from_secs(225);

/// A target's issuer: its Keycloak client and token request.
#[derive(Debug)]
pub struct Issuer {
    keycloak: Arc<KeycloakClient>,
    request: TokenRequest,
}

impl Issuer {
    /// A fresh token, checked; a failure carries Keycloak's advice.
    async fn token(&self) -> Result<AccessToken, FetchError> {
        self.keycloak
            .fetch_token(&self.request)
            .await
            .map_err(|e| FetchError::new(&e))
    }
}

/// Where an [`ExchangedSource`] gets its subject tokens: the target's issuer, or a test's
/// stand-in.
pub trait SubjectTokens: Debug + Send + Sync {
    /// A fresh subject token; a failure carries its advice.
    fn subject_token(&self) -> impl Future<Output = Result<SecretString, FetchError>> + Send + '_;

    /// A fresh subject token as a credential of its own ([`SlotKey::SubjectToken`]); none by
    /// default (a test's stand-in).
    fn subject_credential(
        &self,
    ) -> impl Future<Output = Result<Credential, FetchError>> + Send + '_ {
        std::future::ready(Err(FetchError::no_slot(&SlotKey::SubjectToken)))
    }
}

impl SubjectTokens for Issuer {
    async fn subject_token(&self) -> Result<SecretString, FetchError> {
        self.token().await.map(|t| t.secret().clone())
    }

    async fn subject_credential(&self) -> Result<Credential, FetchError> {
        self.token().await.map(Credential::Token)
    }
}

/// The Keycloak token itself.
#[derive(Debug)]
pub struct TokenSource {
    issuer: Issuer,
}

impl Source for TokenSource {
    fn fetch<'a>(&'a self, slot: Option<&'a SlotKey>) -> Fetch<'a> {
        Box::pin(async move {
            match slot {
                None => self.issuer.token().await.map(Credential::Token),
                Some(slot) => Err(FetchError::no_slot(slot)),
            }
        })
    }

    fn consumer_window(&self) -> Duration {
        Duration::ZERO
    }
}

/// A fresh subject token traded with a cloud, for every cloud alike. Subject tokens are
/// short-lived (Keycloak's default is 300 s), so each exchange gets a new one; when the cloud
/// refuses it ([`Advice::FreshSubjectToken`]: expired on the way, signed with a key the cloud
/// has not fetched yet), one more token is fetched and tried. Refused again, the cloud does not
/// take the issuer's tokens: the attempt stops, naming the cloud side, with the cloud's words.
#[derive(Debug)]
pub struct ExchangedSource<E, T = Issuer> {
    tokens: T,
    exchange: E,
    consumer_window: Duration,
    subject_window: Duration,
}

impl<E: Exchange, T: SubjectTokens> ExchangedSource<E, T> {
    /// `consumer_window`: how long before expiry the credential's consumers ask for a new one.
    pub fn new(tokens: T, exchange: E, consumer_window: Duration) -> Self {
        Self {
            tokens,
            exchange,
            consumer_window,
            subject_window: Duration::ZERO,
        }
    }

    /// How long before expiry the subject token's own consumers (a file's readers) need a new
    /// one ([`Source::subject_window`]).
    pub fn with_subject_window(mut self, window: Duration) -> Self {
        self.subject_window = window;
        self
    }
}

impl<E, T> Source for ExchangedSource<E, T>
where
    E: Exchange,
    E::Credential: Into<Credential>,
    T: SubjectTokens,
{
    fn fetch<'a>(&'a self, slot: Option<&'a SlotKey>) -> Fetch<'a> {
        Box::pin(async move {
            // The subject token goes to its consumers as it is: no cloud is involved.
            if slot == Some(&SlotKey::SubjectToken) {
                return self.tokens.subject_credential().await;
            }
            // Checked before the issuer is asked for a token the cloud would never see.
            if let Some(slot) = slot.filter(|s| !self.exchange.has_slot(s)) {
                return Err(FetchError::no_slot(slot));
            }
            let mut fresh_token_retry = true;
            loop {
                let token = self.tokens.subject_token().await?;
                let exchanged = match slot {
                    None => self.exchange.exchange(&token).await,
                    Some(slot) => match self.exchange.exchange_slot(&token, slot) {
                        Some(exchange) => exchange.await,
                        None => return Err(FetchError::no_slot(slot)),
                    },
                };
                let e = match exchanged {
                    Ok(credential) => return Ok(credential.into()),
                    Err(e) => e,
                };
                match e.advice() {
                    Advice::FreshSubjectToken if fresh_token_retry => {
                        tracing::info!(
                            "the cloud refused the token ({e}); retrying once with a new one"
                        );
                        fresh_token_retry = false;
                    }
                    Advice::FreshSubjectToken => {
                        return Err(FetchError {
                            message: e.to_string(),
                            advice: Advice::Stop { side: Side::Cloud },
                        });
                    }
                    Advice::Backoff | Advice::Stop { .. } => return Err(FetchError::new(&e)),
                }
            }
        })
    }

    fn has_slot(&self, slot: &SlotKey) -> bool {
        *slot == SlotKey::SubjectToken || self.exchange.has_slot(slot)
    }

    fn consumer_window(&self) -> Duration {
        self.consumer_window
    }

    fn subject_window(&self) -> Duration {
        self.subject_window
    }
}

/// A fresh Keycloak token traded with AWS STS.
pub type AwsSource = ExchangedSource<StsExchange>;

fn aws_source(issuer: Issuer, aws: &AwsExchange) -> anyhow::Result<AwsSource> {
    let sts = StsClient::new(StsSettings {
        region: aws.region.clone(),
        endpoint_url: aws.endpoint_url.clone(),
        fips: aws.fips,
        http: aws.http.clone(),
    })?;
    let request = AssumeRoleRequest {
        role_arn: aws.role_arn.clone(),
        session_name: aws.session_name.clone(),
        duration: aws.duration,
        policy: aws.policy.clone(),
        policy_arns: aws.policy_arns.clone(),
    };
    Ok(ExchangedSource::new(
        issuer,
        StsExchange { sts, request },
        AWS_CONSUMER_WINDOW,
    ))
}

/// A fresh Keycloak token traded with Google Cloud.
pub type GcpSource = ExchangedSource<GcpExchange>;

fn gcp_source(issuer: Issuer, gcp: &GcpTarget) -> anyhow::Result<GcpSource> {
    let client = GcpClient::new(gcp.clone())?;
    Ok(ExchangedSource::new(
        issuer,
        GcpExchange { client },
        GCP_CONSUMER_WINDOW,
    ))
}

/// A fresh Keycloak token traded with Entra ID.
pub type AzureSource = ExchangedSource<EntraExchange>;

/// Azure SDKs re-read `AZURE_FEDERATED_TOKEN_FILE` at most every 600 s, so the token in it must
/// stay valid for more than 10 minutes after every write; a minute more covers the write and a
/// slow clock.
pub const AZURE_FEDERATED_TOKEN_WINDOW: Duration = Duration::from_secs(660);

fn azure_source(issuer: Issuer, azure: &AzureTarget) -> anyhow::Result<AzureSource> {
    let client = EntraClient::new(azure.clone())?;
    Ok(ExchangedSource::new(
        issuer,
        EntraExchange { client },
        keyfed_azure::config::CONSUMER_WINDOW,
    )
    .with_subject_window(AZURE_FEDERATED_TOKEN_WINDOW))
}

/// The source for one target.
pub fn source(keycloak: Arc<KeycloakClient>, target: &Target) -> anyhow::Result<Box<dyn Source>> {
    let issuer = Issuer {
        keycloak,
        request: target.request.clone(),
    };
    Ok(match &target.exchange {
        TargetExchange::Token => Box::new(TokenSource { issuer }),
        TargetExchange::Aws(aws) => Box::new(aws_source(issuer, aws)?),
        TargetExchange::Gcp(gcp) => Box::new(gcp_source(issuer, gcp)?),
        TargetExchange::Azure(azure) => Box::new(azure_source(issuer, azure)?),
    })
}

/// The variants of its credential a target keeps fresh besides the main one — those its
/// outputs are written from (the subject token, for external_account files) — and how many
/// asked for on demand it keeps.
fn slots(target: &Target) -> Slots {
    let mut configured: Vec<SlotKey> = Vec::new();
    let scopes = match &target.exchange {
        TargetExchange::Azure(azure) => crate::config::azure_slots(azure),
        TargetExchange::Token | TargetExchange::Aws(_) | TargetExchange::Gcp(_) => Vec::new(),
    };
    for slot in target
        .outputs
        .iter()
        .filter_map(|o| o.kind.slot())
        .chain(scopes)
    {
        if !configured.contains(&slot) {
            configured.push(slot);
        }
    }
    Slots {
        configured,
        ..Slots::default()
    }
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

/// `target`'s credential from one exchange, as the daemon's first attempt would make it (bounded
/// by `[engine] attempt_timeout`): for commands that run without a daemon.
pub async fn fetch_once(
    config: &mut Config,
    target: &Target,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Credential> {
    let clients = keycloak_clients(config, clock)?;
    let keycloak = clients
        .get(&target.issuer)
        .cloned()
        .context("the configuration lost the target's issuer")?;
    let source = source(keycloak, target)?;
    Ok(crate::engine::fetch_within(&*source, config.engine.attempt_timeout).await?)
}

/// Whether the targets of a new engine wait their part of `[engine] start_jitter` before their
/// first refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The daemon starting: a fleet restarted together spreads its first requests.
    Jittered,
    /// A reload, `keyfed once` and `keyfed demo --once`: a reload is how an operator asks for a
    /// stopped or changed target to be retried at once (and a target it keeps keeps its drawn
    /// turn, see `TargetEngine::adopt`); `once` never waits.
    AtOnce,
}

/// The engine for every target in `config`.
pub fn engine(mut config: Config, clock: Arc<dyn Clock>, start: Start) -> anyhow::Result<Engine> {
    let start_jitter = match start {
        Start::Jittered => config.engine.start_jitter,
        Start::AtOnce => std::time::Duration::ZERO,
    };
    let clients = keycloak_clients(&mut config, &clock)?;
    let mut targets = Vec::new();
    for target in config.targets.into_values() {
        let keycloak = clients
            .get(&target.issuer)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("target {} lost its issuer", target.name))?;
        let source = source(keycloak, &target)?;
        let slots = slots(&target);
        targets.push(
            TargetEngine::new(
                target.name,
                source,
                target.outputs,
                Arc::clone(&clock),
                config.engine.backoff,
                config.engine.attempt_timeout,
            )
            .with_start_jitter(start_jitter)
            .with_slots(slots)?,
        );
    }
    Ok(Engine::new(targets))
}
