//! An emulator of Google's Security Token Service and IAM Credentials API, faithful where keyfed
//! could go wrong: STS's token exchange (`POST /v1/token`, form) checks the subject token as a
//! workload identity pool's OIDC provider does — the issuer's JWKS signature (keyfed-core's
//! [`OidcVerifier`]), a `kid` in the header, RS256 or ES256 only, the provider's issuer, its
//! allowed audiences (by default the provider's name with or without `https:`), `exp` with
//! about a minute of skew, `exp − iat` under 48 hours, a mapped `google.subject`
//! (`assertion.sub`) of at most 127 bytes — and answers in RFC 6749 JSON with Google's words.
//! IAM Credentials (`POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken` and
//! `:generateIdToken`) takes only the bearer tokens the emulator issued, lets a federated
//! principal (`principal://iam.googleapis.com/<pool>/subject/<sub>`) act as a service account
//! only where it is bound as `roles/iam.workloadIdentityUser`, honours `lifetime` (1 h by
//! default, at most 12 h), and answers with Google's `{error:{code,message,status}}`. ID tokens
//! are RS256 JWTs signed with the emulator's own key, published at `GET /oauth2/v3/certs`.
//!
//! Simplifications: a delegation chain (`delegates`) is checked for existence and the caller's
//! binding on its first account only; real Google refuses lifetimes over 1 h unless an
//! organization policy allows them, the emulator allows 12 h. Time comes from an injected
//! clock; request counters and fault injection come through [`Control`]. Either API can be
//! left disabled on the pool's project ([`Builder::api_disabled`]): it then refuses every call
//! with Google's 403 `SERVICE_DISABLED` answer. Used by keyfed's tests and `keyfed demo`; never
//! by production code.

mod iam;
mod routes;
mod signer;
mod sts;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::emulator::{Control, IssuesSecrets, OidcVerifier, RunningServer, TestCa, serve};
use keyfed_core::{ExposeSecret as _, SecretString};
use rand::Rng as _;

use signer::Signer;

/// The issuer of the ID tokens the emulator signs, as Google's.
pub const ID_TOKEN_ISSUER: &str = "https://accounts.google.com";

/// How many issued tokens the emulator remembers (IAM checks bearers against them): enough for
/// any test, bounded for a long demo.
const ISSUED_KEPT: usize = 4096;

/// A workload identity pool provider (OIDC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolProvider {
    /// `projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<id>`.
    pub name: String,
    /// The issuer URI; a token's `iss` must be exactly this.
    pub issuer: String,
    /// The audiences a token's `aud` must hold one of; empty: the provider's own name as
    /// `//iam.googleapis.com/<name>` or `https://iam.googleapis.com/<name>`.
    pub allowed_audiences: Vec<String>,
    /// A disabled provider refuses every exchange (`invalid_target`).
    pub disabled: bool,
}

impl PoolProvider {
    pub fn new(name: &str, issuer: &str) -> Self {
        Self {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            allowed_audiences: Vec::new(),
            disabled: false,
        }
    }

    /// Replaces the default allowed audiences (`--allowed-audiences`).
    #[must_use]
    pub fn allowed_audiences(mut self, audiences: &[&str]) -> Self {
        self.allowed_audiences = audiences.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    #[must_use]
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// `projects/<number>/locations/global/workloadIdentityPools/<pool>`.
    pub fn pool(&self) -> &str {
        self.name
            .rsplit_once("/providers/")
            .map_or(self.name.as_str(), |(pool, _)| pool)
    }

    /// What `aud` may be: the configured list, or the provider's name with or without `https:`.
    pub fn audiences(&self) -> Vec<String> {
        if self.allowed_audiences.is_empty() {
            vec![
                format!("//iam.googleapis.com/{}", self.name),
                format!("https://iam.googleapis.com/{}", self.name),
            ]
        } else {
            self.allowed_audiences.clone()
        }
    }
}

/// The federated principal of subject `sub` in `pool`, as IAM bindings name it.
pub fn principal(pool: &str, subject: &str) -> String {
    format!("principal://iam.googleapis.com/{pool}/subject/{subject}")
}

/// Every identity of `pool`, as an IAM binding member.
pub fn principal_set(pool: &str) -> String {
    format!("principalSet://iam.googleapis.com/{pool}/*")
}

/// One of the APIs the emulator serves, as a project enables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleApi {
    /// The Security Token Service API, `sts.googleapis.com`.
    Sts,
    /// The IAM Service Account Credentials API, `iamcredentials.googleapis.com`.
    IamCredentials,
}

impl GoogleApi {
    /// The service name `gcloud services enable` takes.
    pub fn service(self) -> &'static str {
        match self {
            Self::Sts => "sts.googleapis.com",
            Self::IamCredentials => "iamcredentials.googleapis.com",
        }
    }

    /// The API's title, as Google's messages name it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Sts => "Security Token Service API",
            Self::IamCredentials => "IAM Service Account Credentials API",
        }
    }
}

/// A service account, and the members bound to it as `roles/iam.workloadIdentityUser`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub email: String,
    /// [`principal`]s or [`principal_set`]s allowed to impersonate it.
    pub workload_identity_users: Vec<String>,
}

impl ServiceAccount {
    pub fn new(email: &str) -> Self {
        Self {
            email: email.to_owned(),
            workload_identity_users: Vec::new(),
        }
    }

    /// Grants `roles/iam.workloadIdentityUser` to `member`.
    #[must_use]
    pub fn bind(mut self, member: &str) -> Self {
        self.workload_identity_users.push(member.to_owned());
        self
    }
}

/// A service account with the numeric unique id Google gives it (an ID token's `sub`).
#[derive(Debug)]
pub(crate) struct AccountEntry {
    pub account: ServiceAccount,
    pub unique_id: String,
}

/// Which kind of token the emulator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuedKind {
    /// A federated access token from STS, for the provider named.
    Federated { provider: String },
    /// A service account's access token from `generateAccessToken`.
    ServiceAccount { email: String },
    /// A service account's ID token from `generateIdToken`.
    IdToken { email: String, audience: String },
}

/// What the emulator knows of a token it issued; the token itself stays inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub kind: IssuedKind,
    /// The federated principal the token was issued to (for a service account's token, the
    /// principal that impersonated it).
    pub principal: String,
    pub scopes: Vec<String>,
    pub expires_at: SystemTime,
}

#[derive(Debug)]
pub(crate) struct Issued {
    pub token: SecretString,
    pub public: IssuedToken,
}

/// Emulator state shared by the request handlers.
#[derive(Debug)]
pub(crate) struct State {
    pub providers: Vec<PoolProvider>,
    pub accounts: Vec<AccountEntry>,
    pub clock: Arc<dyn Clock>,
    /// APIs not enabled on the consumer project: every call to them is refused.
    pub disabled_apis: Vec<GoogleApi>,
    /// The longest a `generateAccessToken` token lives, whatever the request asks.
    pub access_token_cap: Option<Duration>,
    pub verifier: OidcVerifier,
    pub signer: Signer,
    pub issued: Mutex<VecDeque<Issued>>,
    pub sts_calls: AtomicU64,
    pub access_token_calls: AtomicU64,
    pub id_token_calls: AtomicU64,
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

    /// What the emulator issued as `token`, if it did.
    pub fn lookup(&self, token: &str) -> Option<IssuedToken> {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|i| i.token.expose_secret() == token)
            .map(|i| i.public.clone())
    }

    pub fn account(&self, email: &str) -> Option<&AccountEntry> {
        self.accounts.iter().find(|a| a.account.email == email)
    }

    pub fn enabled(&self, api: GoogleApi) -> bool {
        !self.disabled_apis.contains(&api)
    }
}

/// `prefix` followed by `len` random characters of a URL-safe alphabet.
pub(crate) fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{tail}")
}

/// Options for starting an emulator.
#[derive(Debug)]
pub struct Builder {
    providers: Vec<PoolProvider>,
    accounts: Vec<ServiceAccount>,
    bind: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    trusted_cas: Vec<String>,
    clock: Arc<dyn Clock>,
    disabled_apis: Vec<GoogleApi>,
    access_token_cap: Option<Duration>,
}

impl Builder {
    /// Registers a workload identity pool provider.
    #[must_use]
    pub fn provider(mut self, provider: PoolProvider) -> Self {
        self.providers.push(provider);
        self
    }

    /// Creates a service account.
    #[must_use]
    pub fn service_account(mut self, account: ServiceAccount) -> Self {
        self.accounts.push(account);
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
        self.tls = Some(ca.server_config());
        self.trusted_cas.push(ca.ca_pem().to_owned());
        self
    }

    /// Trust `ca` when fetching issuers' discovery documents and JWKS over HTTPS.
    #[must_use]
    pub fn trust_issuer_ca(self, ca: &TestCa) -> Self {
        self.trusted_ca(ca.ca_pem())
    }

    /// Trust this PEM CA certificate when fetching issuers' keys over HTTPS.
    #[must_use]
    pub fn trusted_ca(mut self, pem: &str) -> Self {
        self.trusted_cas.push(pem.to_owned());
        self
    }

    /// Leaves `api` disabled on the pool's project, as on a fresh project: every call to it is
    /// refused with Google's 403 `PERMISSION_DENIED` ("… has not been used in project <number>
    /// before or it is disabled …", reason `SERVICE_DISABLED`).
    #[must_use]
    pub fn api_disabled(mut self, api: GoogleApi) -> Self {
        self.disabled_apis.push(api);
        self
    }

    /// The emulator's idea of "now": token checks and issued tokens' expiry follow it.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Issues service-account access tokens living at most `cap`, whatever `lifetime` the
    /// request asks for (keyfed asks for 10 minutes or more): tests that need credentials to
    /// expire within seconds. Real Google never shortens a lifetime.
    #[must_use]
    pub fn access_token_lifetime_cap(mut self, cap: Duration) -> Self {
        self.access_token_cap = Some(cap);
        self
    }

    pub async fn start(self) -> std::io::Result<GcpEmulator> {
        let verifier = OidcVerifier::new(self.trusted_cas.iter().map(String::as_str))?;
        let signer = Signer::generate().map_err(std::io::Error::other)?;
        let control = Control::default();
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        let accounts = self
            .accounts
            .into_iter()
            .map(|account| AccountEntry {
                account,
                unique_id: format!(
                    "1{}",
                    rand::rng().random_range(10u128.pow(19)..10u128.pow(20))
                ),
            })
            .collect();
        let state = Arc::new(State {
            providers: self.providers,
            accounts,
            clock: self.clock,
            disabled_apis: self.disabled_apis,
            access_token_cap: self.access_token_cap,
            verifier,
            signer,
            issued: Mutex::new(VecDeque::new()),
            sts_calls: AtomicU64::new(0),
            access_token_calls: AtomicU64::new(0),
            id_token_calls: AtomicU64::new(0),
        });
        let router = routes::router(Arc::clone(&state));
        let server = serve(router, listener, self.tls, control.clone())?;
        Ok(GcpEmulator {
            server,
            state,
            control,
        })
    }
}

/// A running emulator; dropping it stops the server.
#[derive(Debug)]
pub struct GcpEmulator {
    server: RunningServer,
    state: Arc<State>,
    control: Control,
}

impl GcpEmulator {
    pub fn builder() -> Builder {
        Builder {
            providers: Vec::new(),
            accounts: Vec::new(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            trusted_cas: Vec::new(),
            clock: Arc::new(SystemClock),
            disabled_apis: Vec::new(),
            access_token_cap: None,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://localhost:PORT` with TLS): the target's `iam_url`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// STS's token URL, the target's `sts_url` and external_account's `token_url`.
    pub fn sts_url(&self) -> String {
        format!("{}/v1/token", self.base_url())
    }

    /// Where the public keys of the ID tokens it signs are (a JWKS).
    pub fn jwks_url(&self) -> String {
        format!("{}/oauth2/v3/certs", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Fault injection and request counters: STS is `/v1/token`, IAM Credentials' methods end
    /// in `:generateAccessToken` and `:generateIdToken`.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Token exchanges that reached STS (faulted ones do not), refused ones included.
    pub fn sts_calls(&self) -> u64 {
        self.state.sts_calls.load(Ordering::Relaxed)
    }

    /// `generateAccessToken` calls that reached IAM Credentials, refused ones included.
    pub fn generate_access_token_calls(&self) -> u64 {
        self.state.access_token_calls.load(Ordering::Relaxed)
    }

    /// `generateIdToken` calls that reached IAM Credentials, refused ones included.
    pub fn generate_id_token_calls(&self) -> u64 {
        self.state.id_token_calls.load(Ordering::Relaxed)
    }

    /// What the emulator issued as `token` (an access token or ID token), if it did.
    pub fn token_info(&self, token: &str) -> Option<IssuedToken> {
        self.state.lookup(token)
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

    /// The numeric unique id of a service account (its ID tokens' `sub` and `azp`).
    pub fn unique_id(&self, email: &str) -> Option<&str> {
        self.state.account(email).map(|a| a.unique_id.as_str())
    }
}

/// Every access token issued, and the signature of every ID token (its readable claims are
/// not secret).
impl IssuesSecrets for GcpEmulator {
    fn secret_kind(&self) -> &'static str {
        "a Google access or ID token the GCP emulator issued"
    }

    fn issued_secrets(&self) -> Vec<String> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|i| {
                let token = i.token.expose_secret();
                match i.public.kind {
                    IssuedKind::IdToken { .. } => token
                        .rsplit_once('.')
                        .map_or(token, |(_, signature)| signature)
                        .to_owned(),
                    IssuedKind::Federated { .. } | IssuedKind::ServiceAccount { .. } => {
                        token.to_owned()
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
