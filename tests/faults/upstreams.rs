//! The upstreams of one fault scenario, and the daemon's configuration against them: Keycloak,
//! AWS STS, Google (STS and IAM Credentials) and Entra ID, every one over TLS with one test CA
//! (keyfed trusts it through each `ca_file`, as a private CA), each issuing credentials that
//! live [`LIFETIME`] so an outage outlasts one in about a minute and a half. Each emulator reads
//! a clock of its own ([`Skewed`]) for clock skew; STS's runs 780 s behind so that its shortest
//! session (900 s) expires [`LIFETIME`] from now.
//!
//! The daemon keeps four targets — `token` (the Keycloak token itself), `aws`, `gcp`
//! (impersonating a service account, so both Google APIs are called) and `azure` — each writing
//! one output and served on every face of one endpoint address; short HTTP timeouts and
//! backoff steps ([`RETRY_MIN`], [`RETRY_MAX`]) keep each scenario within seconds.

use std::sync::Arc;
use std::time::Duration;

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::emulator::TestCa;
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal_set};
use keyfed_keycloak::emulator::KeycloakEmulator;

use super::clock::Skewed;
use crate::util::gcp::{GCP_AUD, PROJECT_ID, PROVIDER, SERVICE_ACCOUNT};
use crate::util::{API_AUD, AWS_AUD, Fixture, ROLE, SecretFile, free_port, issuer};

/// How long every credential lives: long enough that a refresh (at about 2/3 of it) comes
/// before the credential stops being served (30 s before it expires), so retries can fail
/// while it is still served.
pub const LIFETIME: Duration = Duration::from_secs(120);
/// `[engine] retry_min` and `retry_max`: ceilings of 1, 2, 4, 4 … seconds.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(4);
/// Every upstream's `timeout`, and `[engine] attempt_timeout`.
pub const TIMEOUT: Duration = Duration::from_secs(4);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// STS's shortest session: keyfed asks for it, STS's clock is set back to make it [`LIFETIME`].
const STS_SESSION: Duration = Duration::from_secs(900);

/// The Entra tenant and app whose federated credential trusts the realm's `host-secret`.
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
/// The resource the `azure` target keeps fresh, and that the Azure faces are asked for.
pub const MGMT: &str = "https://management.azure.com";

/// Each emulator's own clock.
#[derive(Debug, Clone)]
pub struct Clocks {
    pub keycloak: Skewed,
    pub sts: Skewed,
    pub gcp: Skewed,
    pub entra: Skewed,
}

/// The emulators, the fixture holding Keycloak and STS, and the endpoint's address.
pub struct Upstreams {
    pub fx: Fixture,
    pub ca: TestCa,
    pub clocks: Clocks,
    pub gcp: Arc<GcpEmulator>,
    pub entra: Arc<EntraEmulator>,
    /// `http://127.0.0.1:PORT` once configured.
    pub base: String,
}

impl Upstreams {
    /// Starts the four emulators (see the module's doc); [`Upstreams::configure`] writes
    /// `keyfed.toml`.
    pub async fn start() -> Self {
        let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
        let clocks = Clocks {
            keycloak: Skewed::default(),
            sts: Skewed::by(LIFETIME.as_secs() as i64 - STS_SESSION.as_secs() as i64),
            gcp: Skewed::default(),
            entra: Skewed::default(),
        };
        let mut fx = Fixture::new();
        let realm = fx.realm().lifespan(LIFETIME);
        let subject = realm
            .clients
            .iter()
            .find(|c| c.client_id == "host-secret")
            .map(|c| c.service_account_id.clone())
            .unwrap_or_else(|| panic!("no host-secret in the standard realm"));
        fx.start(
            KeycloakEmulator::builder(realm)
                .tls(&ca)
                .clock(Arc::new(clocks.keycloak.clone())),
        )
        .await;
        let issuer_url = fx.keycloak().issuer_url();

        let sts = StsEmulator::builder()
            .provider(OidcProvider::new(&issuer_url, &[AWS_AUD]))
            .role(Role::new(ROLE, &issuer_url))
            .tls(&ca)
            .clock(Arc::new(clocks.sts.clone()))
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}"));
        let sts = Arc::new(sts);
        fx.known.add_emulator(&sts);
        fx.sts = Some(sts);

        let provider = PoolProvider::new(PROVIDER, &issuer_url);
        let gcp = GcpEmulator::builder()
            .service_account(
                ServiceAccount::new(SERVICE_ACCOUNT).bind(&principal_set(provider.pool())),
            )
            .provider(provider)
            .tls(&ca)
            .clock(Arc::new(clocks.gcp.clone()))
            .access_token_lifetime_cap(LIFETIME)
            .start()
            .await
            .unwrap_or_else(|e| panic!("gcp emulator: {e}"));
        let gcp = Arc::new(gcp);
        fx.known.add_emulator(&gcp);

        let entra = EntraEmulator::builder()
            .tenant(TENANT)
            .tls(&ca)
            .trust_issuer_ca(&ca)
            .token_lifetime(LIFETIME)
            .clock(Arc::new(clocks.entra.clone()))
            .app(
                App::new(APP).federated_credential(FederatedCredential::new(&issuer_url, &subject)),
            )
            .start()
            .await
            .unwrap_or_else(|e| panic!("entra emulator: {e}"));
        let entra = Arc::new(entra);
        fx.known.add_emulator(&entra);

        fx.write("ca.pem", ca.ca_pem());
        Self {
            fx,
            ca,
            clocks,
            gcp,
            entra,
            base: String::new(),
        }
    }

    pub fn keycloak(&self) -> &KeycloakEmulator {
        self.fx.keycloak()
    }

    pub fn sts(&self) -> &StsEmulator {
        self.fx.sts()
    }

    /// Writes `keyfed.toml`, its endpoint on a port free right now: call it just before the
    /// daemon starts, so that no emulator started meanwhile takes the port.
    pub fn configure(&mut self) {
        self.configure_with("", TIMEOUT, ATTEMPT_TIMEOUT);
    }

    /// [`Upstreams::configure`] with `target_keys` added to every target's table, every
    /// upstream's `timeout` set to `timeout`, and `[engine] attempt_timeout` to `attempt`.
    pub fn configure_with(&mut self, target_keys: &str, timeout: Duration, attempt: Duration) {
        let port = free_port();
        self.base = format!("http://127.0.0.1:{port}");
        let fx = &self.fx;
        fx.write_credentials();
        let timeout = format!(
            "ca_file = \"ca.pem\"\ntimeout = \"{}s\"\n",
            timeout.as_secs()
        );
        let out = |name: &str| fx.path(&format!("out/{name}"));
        let config = format!(
            "{issuer}{timeout}\n\
             [control]\nsocket = \"keyfed.sock\"\n\n\
             [engine]\nretry_min = \"{min}s\"\nretry_max = \"{max}s\"\nattempt_timeout = \"{attempt}s\"\n\n\
             [targets.token]\nissuer = \"corp\"\naudience = \"{API_AUD}\"\nscope = \"api-audience\"\n\
             outputs = [{{ kind = \"token\", path = \"{token}\" }}]\n\n\
             [targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\ncontainer_path = \"/aws/app\"\n\
             outputs = [{{ kind = \"credential-process-json\", path = \"{aws}\" }}]\n\
             [targets.aws.aws]\nrole_arn = \"{role}\"\nregion = \"us-east-1\"\nendpoint_url = \"{sts}\"\n\
             duration = \"{session}s\"\n{timeout}\n\
             [targets.gcp]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\
             outputs = [{{ kind = \"gcp-access-token\", path = \"{gcp}\", format = \"json\" }}]\n\
             [targets.gcp.gcp]\nprovider = \"{PROVIDER}\"\nproject_id = \"{PROJECT_ID}\"\n\
             sts_url = \"{sts_url}\"\niam_url = \"{iam_url}\"\nservice_account = \"{SERVICE_ACCOUNT}\"\n\
             lifetime = \"10m\"\n{timeout}\n\
             [targets.azure]\nissuer = \"corp\"\nscope = \"azure-audience\"\n\
             outputs = [{{ kind = \"azure-access-token\", path = \"{azure}\", format = \"json\" }}]\n\
             [targets.azure.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\n\
             scopes = [\"{MGMT}/.default\"]\nauthority_host = \"{authority}\"\n{timeout}\n\
             [endpoint]\nlisten = [\"127.0.0.1:{port}\"]\nimds_target = \"aws\"\ngce_target = \"gcp\"\n\
             azure_target = \"azure\"\ncontainer_token_file = \"container-token\"\n\
             identity_header_file = \"identity-header\"\n",
            issuer = issuer("corp", "host-secret", "client_secret_basic"),
            min = RETRY_MIN.as_secs(),
            max = RETRY_MAX.as_secs(),
            attempt = attempt.as_secs(),
            token = out("token.jwt").display(),
            aws = out("aws.json").display(),
            gcp = out("gcp.json").display(),
            azure = out("azure.json").display(),
            role = self.sts().role_arn(ROLE),
            sts = self.sts().endpoint_url(),
            session = STS_SESSION.as_secs(),
            sts_url = self.gcp.sts_url(),
            iam_url = self.gcp.base_url(),
            authority = self.entra.authority_host(),
        );
        let config = ["token", "aws", "gcp", "azure"]
            .iter()
            .fold(config, |config, name| {
                let table = format!("[targets.{name}]\n");
                config.replacen(&table, &format!("{table}{target_keys}"), 1)
            });
        fx.config(&config);
        for name in ["token.jwt", "aws.json", "gcp.json", "azure.json"] {
            fx.known.add_file(out(name), SecretFile::Output);
        }
        fx.known
            .add_file(fx.path("identity-header"), SecretFile::Whole);
    }
}
