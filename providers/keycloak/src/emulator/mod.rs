//! An emulator of one Keycloak realm's OIDC endpoints, faithful where keyfed could go wrong:
//! discovery, JWKS, RS256 access tokens with `kid`, the four client authentication methods with
//! Keycloak's own checks and error bodies, client scopes whose audience mappers fill `aud`,
//! service-account claims, a configurable lifespan, and (through [`Control`]) request counters
//! and fault injection. Used by keyfed's tests and `keyfed demo`; never by production code.

mod auth;
mod realm;
mod routes;
mod signer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::emulator::{Control, IssuesSecrets, RunningServer, TestCa, serve};
use keyfed_core::{ExposeSecret as _, SecretString};

pub use realm::{ClientScope, ClientSpec, Credential, Realm};
pub use signer::Signer;

/// What the emulator saw of the latest token request, for tests to assert on.
#[derive(Debug, Clone, Default)]
pub struct SeenRequest {
    pub form: Vec<(String, String)>,
    pub basic_auth: bool,
}

impl SeenRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Emulator state shared by the request handlers.
#[derive(Debug)]
pub(crate) struct State {
    pub realm: Realm,
    pub base_url: String,
    pub signer: Signer,
    pub clock: Arc<dyn Clock>,
    pub used_jtis: Mutex<auth::JtiStore>,
    pub last_request: Mutex<Option<SeenRequest>>,
    /// Every access token issued, newest last (at most [`ISSUED_KEPT`]), for tests' leak checks.
    pub issued: Mutex<VecDeque<SecretString>>,
    /// Whether answers carry a `Date` header (the realm's "now").
    pub date_header: bool,
}

/// How many issued tokens the emulator remembers: enough for any test, bounded for a long demo.
pub(crate) const ISSUED_KEPT: usize = 4096;

impl State {
    pub fn issuer(&self) -> String {
        format!(
            "{}{}/realms/{}",
            self.base_url,
            self.realm.prefix(),
            self.realm.name
        )
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// The issuer as tokens and the discovery document name it.
    pub fn iss(&self) -> String {
        let issuer = self.issuer();
        if self.realm.trailing_slash_issuer {
            format!("{issuer}/")
        } else {
            issuer
        }
    }
}

/// Options for starting an emulator.
#[derive(Debug)]
pub struct Builder {
    realm: Realm,
    bind: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    clock: Arc<dyn Clock>,
    host: Option<String>,
    date_header: bool,
}

/// A running emulator; dropping it stops the server.
#[derive(Debug)]
pub struct KeycloakEmulator {
    server: RunningServer,
    state: Arc<State>,
    control: Control,
}

impl Builder {
    /// Listen on this address (default `127.0.0.1:0`, an ephemeral port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Serve HTTPS with a certificate from `ca`.
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some(ca.server_config());
        self
    }

    /// The emulator's idea of "now" (to inject clock skew).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Names itself `host` in its URLs and tokens' `iss` instead of `localhost` (TLS) or its
    /// address: a name the test maps to the emulator's address, so that clients take it for a
    /// remote host (issue 11: reached through a proxy). The TLS certificate must cover it.
    pub fn public_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// Sends no `Date` header, as Keycloak 26 (Quarkus) does not: a client must read the
    /// server's time elsewhere (`keyfed doctor`, from a token's `iat`).
    pub fn without_date_header(mut self) -> Self {
        self.date_header = false;
        self
    }

    pub async fn start(self) -> std::io::Result<KeycloakEmulator> {
        let signer = Signer::generate().map_err(std::io::Error::other)?;
        let control = Control::default();
        control.set_date_header(self.date_header);
        // Bind first so the issuer URL (which names the port) is known before serving.
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let base_url = match (&self.host, self.tls.is_some()) {
            (Some(host), true) => format!("https://{host}:{}", addr.port()),
            (Some(host), false) => format!("http://{host}:{}", addr.port()),
            (None, true) => format!("https://localhost:{}", addr.port()),
            (None, false) => format!("http://{addr}"),
        };
        let state = Arc::new(State {
            realm: self.realm,
            base_url,
            signer,
            clock: self.clock,
            used_jtis: Mutex::new(auth::JtiStore::default()),
            last_request: Mutex::new(None),
            issued: Mutex::new(VecDeque::new()),
            date_header: self.date_header,
        });
        let router = routes::router(Arc::clone(&state));
        let server = serve(router, listener, self.tls, control.clone())?;
        Ok(KeycloakEmulator {
            server,
            state,
            control,
        })
    }
}

impl KeycloakEmulator {
    pub fn builder(realm: Realm) -> Builder {
        Builder {
            realm,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            clock: Arc::new(SystemClock),
            host: None,
            date_header: true,
        }
    }

    /// The realm's issuer URL, e.g. `http://127.0.0.1:PORT/realms/infra`.
    pub fn issuer_url(&self) -> String {
        self.state.issuer()
    }

    pub fn token_endpoint(&self) -> String {
        self.state.token_endpoint()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Fault injection and request counters.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Token requests received so far, including refused and faulted ones.
    pub fn token_requests(&self) -> u64 {
        self.control.hits("/protocol/openid-connect/token")
    }

    pub fn last_request(&self) -> Option<SeenRequest> {
        self.state
            .last_request
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every access token issued so far (the most recent few thousand), oldest first: tests
    /// check that none of them shows up in keyfed's output.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|t| t.expose_secret().to_owned())
            .collect()
    }

    /// Requests for the JWKS (`…/protocol/openid-connect/certs`) so far.
    pub fn jwks_requests(&self) -> u64 {
        self.control.hits("/protocol/openid-connect/certs")
    }

    /// Starts signing with a new key (published in the JWKS alongside the old one).
    pub fn rotate_signing_key(&self) -> Result<(), String> {
        self.state.signer.rotate()
    }

    /// Signs tokens with a key that is not in the JWKS but claims the published `kid`.
    pub fn sign_with_foreign_key(&self, on: bool) -> Result<(), String> {
        self.state.signer.set_foreign(on)
    }

    /// Signs tokens with HS256 over a secret of the realm's (under the published `kid`), as a
    /// realm whose access token algorithm was set to HS256 does (issue 12).
    pub fn sign_with_hs256(&self, on: bool) {
        self.state.signer.set_hs256(on);
    }

    /// Signs `claims` as the realm would; for tests that need a hand-made token.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        self.state.signer.sign(claims)
    }

    pub fn lifespan(&self) -> Duration {
        self.state.realm.lifespan
    }
}

/// The signature of every access token issued so far: the part that makes a token usable
/// (its header and claims are not secret; `keyfed token --decode` prints them).
impl IssuesSecrets for KeycloakEmulator {
    fn secret_kind(&self) -> &'static str {
        "a Keycloak token the emulator issued"
    }

    fn issued_secrets(&self) -> Vec<String> {
        self.issued_tokens()
            .iter()
            .filter_map(|token| {
                token
                    .rsplit_once('.')
                    .map(|(_, signature)| signature.to_owned())
            })
            .collect()
    }
}
