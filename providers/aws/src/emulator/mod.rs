//! An emulator of AWS STS, faithful where keyfed could go wrong: the Query protocol (form POST
//! or GET with `Action` and `Version=2011-06-15`), the XML answers the SDKs and the AWS CLI
//! parse, and the errors and HTTP statuses real STS gives. AssumeRoleWithWebIdentity verifies
//! the token as an IAM OIDC identity provider and a role trust policy would (JWKS signature,
//! issuer, audiences, expiry with STS's 5-minute grace, `StringEquals`/`StringLike`
//! conditions, MaxSessionDuration); GetCallerIdentity checks the SigV4 signature of calls made
//! with the keys it issued. Time comes from an injected clock; request counters and fault
//! injection come through [`Control`]. Used by keyfed's tests and `keyfed demo`; never by
//! production code.

mod assume;
mod caller;
mod iam;
mod routes;
mod sigv4;
mod verify;
pub(crate) mod xml;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use keyfed_core::SecretString;
use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::emulator::{Control, IssuesSecrets, OidcVerifier, RunningServer, TestCa, serve};

pub use iam::{Condition, OidcProvider, Role};

/// The account the emulator pretends to be unless told otherwise.
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// Credentials the emulator issued; the secret parts stay inside the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub role_arn: String,
    pub assumed_role_arn: String,
    /// `AROA…:<session name>`, GetCallerIdentity's `UserId`.
    pub assumed_role_id: String,
    pub session_name: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's audience that matched the provider's client ID list.
    pub audience: String,
    pub expiration: SystemTime,
}

/// What the latest AssumeRoleWithWebIdentity asked for (the token left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenAssumeRole {
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub duration_seconds: Option<String>,
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub version: Option<String>,
}

/// An issued key with its secrets, for checking signed calls.
#[derive(Debug)]
pub(crate) struct Issued {
    pub public: IssuedCredentials,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
}

/// A role with the id STS shows for it.
#[derive(Debug)]
pub(crate) struct RoleEntry {
    pub role: Role,
    /// `AROA` followed by 17 characters.
    pub role_id: String,
}

/// Emulator state shared by the request handlers.
#[derive(Debug)]
pub(crate) struct State {
    pub account: String,
    pub providers: Vec<OidcProvider>,
    pub roles: Vec<RoleEntry>,
    pub clock: Arc<dyn Clock>,
    pub verifier: OidcVerifier,
    pub issued: Mutex<Vec<Issued>>,
    pub assume_role_calls: AtomicU64,
    pub last_assume_role: Mutex<Option<SeenAssumeRole>>,
}

impl State {
    pub fn role_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:role/{name}", self.account)
    }
}

/// Options for starting an emulator.
#[derive(Debug)]
pub struct Builder {
    account: String,
    providers: Vec<OidcProvider>,
    roles: Vec<Role>,
    bind: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    trusted_cas: Vec<String>,
    clock: Arc<dyn Clock>,
}

/// A running emulator; dropping it stops the server.
#[derive(Debug)]
pub struct StsEmulator {
    server: RunningServer,
    state: Arc<State>,
    control: Control,
}

impl Builder {
    /// The 12-digit account id in every ARN (default [`DEFAULT_ACCOUNT`]).
    pub fn account(mut self, account: &str) -> Self {
        account.clone_into(&mut self.account);
        self
    }

    /// Registers an IAM OIDC identity provider.
    pub fn provider(mut self, provider: OidcProvider) -> Self {
        self.providers.push(provider);
        self
    }

    /// Creates a role trusting one of the providers.
    pub fn role(mut self, role: Role) -> Self {
        self.roles.push(role);
        self
    }

    /// Listen on this address (default `127.0.0.1:0`, an ephemeral port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Serve HTTPS with a certificate from `ca`, and trust `ca` when fetching issuers' keys
    /// (so a Keycloak emulator using the same CA works).
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some(ca.server_config());
        self.trusted_cas.push(ca.ca_pem().to_owned());
        self
    }

    /// Trust `ca` when fetching issuers' discovery documents and JWKS over HTTPS.
    pub fn trust_issuer_ca(mut self, ca: &TestCa) -> Self {
        self.trusted_cas.push(ca.ca_pem().to_owned());
        self
    }

    /// The emulator's idea of "now": token expiry and issued credentials' expiry follow it.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub async fn start(self) -> std::io::Result<StsEmulator> {
        let verifier = OidcVerifier::new(self.trusted_cas.iter().map(String::as_str))?;
        let control = Control::default();
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        let roles = self
            .roles
            .into_iter()
            .map(|role| RoleEntry {
                role,
                role_id: assume::random_id("AROA", 17),
            })
            .collect();
        let state = Arc::new(State {
            account: self.account,
            providers: self.providers,
            roles,
            clock: self.clock,
            verifier,
            issued: Mutex::new(Vec::new()),
            assume_role_calls: AtomicU64::new(0),
            last_assume_role: Mutex::new(None),
        });
        let router = routes::router(Arc::clone(&state));
        let server = serve(router, listener, self.tls, control.clone())?;
        Ok(StsEmulator {
            server,
            state,
            control,
        })
    }
}

impl StsEmulator {
    pub fn builder() -> Builder {
        Builder {
            account: DEFAULT_ACCOUNT.to_owned(),
            providers: Vec::new(),
            roles: Vec::new(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            trusted_cas: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The URL to give clients as `endpoint_url`, e.g. `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn account(&self) -> &str {
        &self.state.account
    }

    /// `arn:aws:iam::<account>:role/<name>`.
    pub fn role_arn(&self, name: &str) -> String {
        self.state.role_arn(name)
    }

    /// `arn:aws:iam::<account>:oidc-provider/<url without scheme>`.
    pub fn provider_arn(&self, url: &str) -> String {
        format!(
            "arn:aws:iam::{}:oidc-provider/{}",
            self.state.account,
            crate::provider_name::provider_name(url)
        )
    }

    /// Fault injection and request counters. Every STS action is a request to `/`, so faults
    /// are injected on `"/"` and `hits("/")` counts every request, faulted ones included.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// AssumeRoleWithWebIdentity requests that reached the emulator (faulted ones do not),
    /// refused ones included.
    pub fn assume_role_calls(&self) -> u64 {
        self.state.assume_role_calls.load(Ordering::Relaxed)
    }

    pub fn last_assume_role(&self) -> Option<SeenAssumeRole> {
        self.state
            .last_assume_role
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every set of credentials issued so far, oldest first.
    pub fn issued_credentials(&self) -> Vec<IssuedCredentials> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|i| i.public.clone())
            .collect()
    }
}

/// The SecretAccessKey and SessionToken of every set of credentials issued so far.
impl IssuesSecrets for StsEmulator {
    fn secret_kind(&self) -> &'static str {
        "an AWS secret key or session token the STS emulator issued"
    }

    fn issued_secrets(&self) -> Vec<String> {
        use keyfed_core::ExposeSecret as _;
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|i| {
                [
                    i.secret_access_key.expose_secret().to_owned(),
                    i.session_token.expose_secret().to_owned(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
