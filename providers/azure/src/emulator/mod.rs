//! An emulator of Entra ID's token endpoint for federated identity credentials, faithful where
//! keyfed could go wrong. `POST /{tenant}/oauth2/v2.0/token` takes the client-credentials grant
//! with a client assertion and checks it as Entra does for an app registration or user-assigned
//! managed identity with federated identity credentials: the tenant (GUID or domain,
//! AADSTS90002), the request's parameters (AADSTS900144), the app (AADSTS700016), the scope —
//! one `<resource>/.default` (AADSTS70011, AADSTS1002012) of a resource the tenant knows
//! (AADSTS500011) — then the assertion: a JWT (AADSTS50027) signed with RS256 only
//! (AADSTS5002738); a credential with exactly its `iss` (AADSTS700211); its signature against
//! the issuer's JWKS found through OIDC discovery (keyfed-core's [`OidcVerifier`]; AADSTS50166
//! when the keys cannot be fetched, AADSTS700027 when the signature does not verify); `exp −
//! iat` at most 1.01:00:00, `iat` required (AADSTS70023); `nbf`/`iat`/`exp` against the clock
//! with five minutes of skew (AADSTS700024); a credential with exactly its `sub`, compared
//! case-sensitively (AADSTS700213, or AADSTS7002138 when only the case differs); a matching
//! credential's audience in its `aud` (AADSTS700212). An app with no credentials, or whose
//! matching credential is still propagating, gets AADSTS70021 naming the assertion's issuer,
//! subject and audience. Every refusal is Entra's JSON: `error`, `error_description` (with the
//! trace and correlation IDs and timestamp, as Entra words it), `error_codes`, `timestamp`,
//! `trace_id`, `correlation_id`, `error_uri`. A success is `{token_type: "Bearer", expires_in,
//! ext_expires_in, access_token}` with a JWT-shaped access token for the scope's resource.
//!
//! Also served, for MSAL-based SDKs pointed at the emulator: tenant discovery
//! (`GET /{tenant}/v2.0/.well-known/openid-configuration`) and instance discovery
//! (`GET /common/discovery/instance`).
//!
//! Simplifications: one tenant (with domain aliases); access tokens are shaped like Entra's but
//! signed by nobody; the order of checks is a plausible one (Entra's own is not documented);
//! the wordings come from Entra answers seen in public issue threads. Time comes from an
//! injected clock; request counters and fault injection come through [`Control`]. Used by
//! keyfed's tests and `keyfed demo`; never by production code.

mod routes;
mod token;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::emulator::{Control, IssuesSecrets, OidcVerifier, RunningServer, TestCa, serve};
use keyfed_core::{ExposeSecret as _, SecretString};

use crate::config::AUDIENCE;

/// The tenant an emulator serves unless [`Builder::tenant`] says otherwise.
pub const DEFAULT_TENANT: &str = "00000000-0000-4000-8000-00000000f00d";

/// The most federated identity credentials Entra lets one app or managed identity have.
pub const MAX_FEDERATED_CREDENTIALS: usize = 20;

/// Resources every tenant knows (their first-party service principals); more with
/// [`Builder::resource`].
pub const BUILT_IN_RESOURCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://vault.azure.net",
    "https://storage.azure.com",
    "https://graph.microsoft.com",
    "https://database.windows.net",
    "https://ossrdbms-aad.database.windows.net",
    "https://cognitiveservices.azure.com",
    "https://eventhubs.azure.net",
    "https://servicebus.azure.net",
    "https://monitor.azure.com",
];

/// How many issued tokens the emulator remembers: enough for any test, bounded for a demo.
const ISSUED_KEPT: usize = 4096;

/// A federated identity credential: the issuer and subject a token must carry exactly, and
/// the audience its `aud` must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
}

impl FederatedCredential {
    /// A credential with Entra's default audience, [`AUDIENCE`].
    pub fn new(issuer: &str, subject: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            audience: AUDIENCE.to_owned(),
        }
    }

    #[must_use]
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = audience.to_owned();
        self
    }
}

/// An app registration or user-assigned managed identity, with its federated credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub client_id: String,
    /// A user-assigned managed identity rather than an app registration (its tokens carry
    /// `xms_mirid`).
    pub managed_identity: bool,
    /// Each credential, and how many more matching requests it refuses with AADSTS70021
    /// before it has "propagated" (0: in effect).
    pub federated_credentials: Vec<(FederatedCredential, u32)>,
}

impl App {
    /// An app registration.
    pub fn new(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            managed_identity: false,
            federated_credentials: Vec::new(),
        }
    }

    /// A user-assigned managed identity.
    pub fn managed_identity(client_id: &str) -> Self {
        Self {
            managed_identity: true,
            ..Self::new(client_id)
        }
    }

    /// Adds a federated identity credential that is in effect.
    #[must_use]
    pub fn federated_credential(self, credential: FederatedCredential) -> Self {
        self.new_federated_credential(credential, 0)
    }

    /// Adds a federated identity credential created a moment ago: the first `calls` requests
    /// it would match are refused with AADSTS70021, as while a new credential propagates.
    #[must_use]
    pub fn new_federated_credential(mut self, credential: FederatedCredential, calls: u32) -> Self {
        self.federated_credentials.push((credential, calls));
        self
    }
}

/// What the emulator knows of an access token it issued; the token itself stays inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub client_id: String,
    /// The scope asked for, `<resource>/.default`.
    pub scope: String,
    /// The token's `aud`: the resource.
    pub resource: String,
    /// The assertion's `iss` and `sub`.
    pub issuer: String,
    pub subject: String,
    pub expires_at: SystemTime,
}

#[derive(Debug)]
pub(crate) struct Issued {
    pub token: SecretString,
    pub public: IssuedToken,
}

/// An app as the emulator keeps it: its service principal's object ID, for tokens' `oid`.
#[derive(Debug)]
pub(crate) struct AppEntry {
    pub app: App,
    pub object_id: String,
}

/// Emulator state shared by the request handlers.
#[derive(Debug)]
pub(crate) struct State {
    pub tenant_id: String,
    pub domains: Vec<String>,
    pub apps: Mutex<Vec<AppEntry>>,
    pub resources: Vec<String>,
    pub token_lifetime: Duration,
    pub base_url: String,
    pub clock: Arc<dyn Clock>,
    pub verifier: OidcVerifier,
    pub issued: Mutex<VecDeque<Issued>>,
    pub token_calls: AtomicU64,
}

impl State {
    pub fn remember(&self, token: &SecretString, public: IssuedToken) {
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        if issued.len() == ISSUED_KEPT {
            issued.pop_front();
        }
        issued.push_back(Issued {
            token: token.clone(),
            public,
        });
    }

    /// Whether `tenant` (a path segment) names this tenant: its ID or one of its domains.
    pub fn is_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id)
            || self.domains.iter().any(|d| d.eq_ignore_ascii_case(tenant))
    }

    /// The resource a scope's resource part names, as the tenant knows it (trailing slash and
    /// case aside).
    pub fn knows_resource(&self, resource: &str) -> bool {
        let wanted = resource.trim_end_matches('/');
        self.resources
            .iter()
            .any(|r| r.trim_end_matches('/').eq_ignore_ascii_case(wanted))
    }
}

/// Options for starting an emulator.
#[derive(Debug)]
pub struct Builder {
    tenant_id: String,
    domains: Vec<String>,
    apps: Vec<App>,
    resources: Vec<String>,
    token_lifetime: Duration,
    bind: SocketAddr,
    tls: Option<(Arc<rustls::ServerConfig>, String)>,
    trusted_cas: Vec<String>,
    clock: Arc<dyn Clock>,
}

impl Builder {
    /// The tenant's ID (default [`DEFAULT_TENANT`]).
    #[must_use]
    pub fn tenant(mut self, tenant_id: &str) -> Self {
        tenant_id.clone_into(&mut self.tenant_id);
        self
    }

    /// Another name of the tenant in the token URL, e.g. `contoso.onmicrosoft.com`.
    #[must_use]
    pub fn domain(mut self, domain: &str) -> Self {
        self.domains.push(domain.to_owned());
        self
    }

    /// Registers an app or managed identity.
    #[must_use]
    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    /// A resource the tenant knows besides [`BUILT_IN_RESOURCES`] (an API's application ID
    /// URI, e.g. `api://my-api`).
    #[must_use]
    pub fn resource(mut self, resource: &str) -> Self {
        self.resources.push(resource.to_owned());
        self
    }

    /// How long issued access tokens live (default 3599 s, as Entra usually says).
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Listen on this address (default `127.0.0.1:0`, an ephemeral port).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Serve HTTPS with a certificate from `ca`, and trust `ca` when fetching issuers' keys
    /// (so a Keycloak emulator using the same CA works).
    #[must_use]
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.server_config(), ca.ca_pem().to_owned()));
        self.trusted_cas.push(ca.ca_pem().to_owned());
        self
    }

    /// Trust `ca` when fetching issuers' discovery documents and JWKS over HTTPS.
    #[must_use]
    pub fn trust_issuer_ca(mut self, ca: &TestCa) -> Self {
        self.trusted_cas.push(ca.ca_pem().to_owned());
        self
    }

    /// The emulator's idea of "now": assertion checks and issued tokens' expiry follow it.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub async fn start(self) -> std::io::Result<EntraEmulator> {
        if let Some(app) = self
            .apps
            .iter()
            .find(|a| a.federated_credentials.len() > MAX_FEDERATED_CREDENTIALS)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "app {} has {} federated identity credentials; Entra allows at most {MAX_FEDERATED_CREDENTIALS}",
                    app.client_id,
                    app.federated_credentials.len()
                ),
            ));
        }
        let verifier = OidcVerifier::new(self.trusted_cas.iter().map(String::as_str))?;
        let control = Control::default();
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        // As `RunningServer::base_url` says it: TLS certificates name `localhost`.
        let base_url = match &self.tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let mut resources: Vec<String> =
            BUILT_IN_RESOURCES.iter().map(|r| (*r).to_owned()).collect();
        resources.extend(self.resources);
        let state = Arc::new(State {
            tenant_id: self.tenant_id,
            domains: self.domains,
            apps: Mutex::new(
                self.apps
                    .into_iter()
                    .map(|app| AppEntry {
                        app,
                        object_id: uuid::Uuid::new_v4().to_string(),
                    })
                    .collect(),
            ),
            resources,
            token_lifetime: self.token_lifetime,
            base_url,
            clock: self.clock,
            verifier,
            issued: Mutex::new(VecDeque::new()),
            token_calls: AtomicU64::new(0),
        });
        let (tls, ca_pem) = match self.tls {
            Some((config, pem)) => (Some(config), Some(pem)),
            None => (None, None),
        };
        let router = routes::router(Arc::clone(&state));
        let server = serve(router, listener, tls, control.clone())?;
        Ok(EntraEmulator {
            server,
            state,
            control,
            ca_pem,
        })
    }
}

/// A running emulator; dropping it stops the server.
#[derive(Debug)]
pub struct EntraEmulator {
    server: RunningServer,
    state: Arc<State>,
    control: Control,
    ca_pem: Option<String>,
}

impl EntraEmulator {
    pub fn builder() -> Builder {
        Builder {
            tenant_id: DEFAULT_TENANT.to_owned(),
            domains: Vec::new(),
            apps: Vec::new(),
            resources: Vec::new(),
            token_lifetime: Duration::from_secs(3599),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            trusted_cas: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// `https://localhost:PORT` (or `http://127.0.0.1:PORT` without TLS): the target's
    /// `authority_host` and SDKs' `AZURE_AUTHORITY_HOST`.
    pub fn authority_host(&self) -> String {
        self.server.base_url()
    }

    /// The tenant's ID.
    pub fn tenant_id(&self) -> &str {
        &self.state.tenant_id
    }

    /// The tenant's token URL.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host(),
            self.state.tenant_id
        )
    }

    /// The CA certificate (PEM) that signs the emulator's TLS certificate, when it serves TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Fault injection and request counters: the token endpoint's path ends in
    /// `/oauth2/v2.0/token`.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Token requests that reached the token endpoint (faulted ones do not), refused ones
    /// included.
    pub fn token_calls(&self) -> u64 {
        self.state.token_calls.load(Ordering::Relaxed)
    }

    /// Creates a federated identity credential on a registered app while the emulator runs;
    /// the first `propagation_calls` requests it would match are refused with AADSTS70021.
    pub fn add_federated_credential(
        &self,
        client_id: &str,
        credential: FederatedCredential,
        propagation_calls: u32,
    ) -> Result<(), String> {
        let mut apps = self
            .state
            .apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = apps
            .iter_mut()
            .find(|e| e.app.client_id == client_id)
            .ok_or_else(|| format!("no app {client_id}"))?;
        if entry.app.federated_credentials.len() >= MAX_FEDERATED_CREDENTIALS {
            return Err(format!(
                "app {client_id} already has {MAX_FEDERATED_CREDENTIALS} federated identity credentials, the most Entra allows"
            ));
        }
        entry
            .app
            .federated_credentials
            .push((credential, propagation_calls));
        Ok(())
    }

    /// What the emulator issued as `token`, if it did.
    pub fn token_info(&self, token: &str) -> Option<IssuedToken> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|i| i.token.expose_secret() == token)
            .map(|i| i.public.clone())
    }

    /// Every token issued so far (the most recent few thousand), oldest first.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|i| i.public.clone())
            .collect()
    }
}

/// The signature of every access token issued: its header and claims are readable and not
/// secret, as with Entra's.
impl IssuesSecrets for EntraEmulator {
    fn secret_kind(&self) -> &'static str {
        "an Entra ID access token the Entra emulator issued"
    }

    fn issued_secrets(&self) -> Vec<String> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|i| {
                let token = i.token.expose_secret();
                token
                    .rsplit_once('.')
                    .map_or(token, |(_, signature)| signature)
                    .to_owned()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
