//! Every face of the local endpoint on one daemon (issue 11): the Keycloak, STS, Google and
//! Entra emulators, and targets `aws` (IMDSv2, and the container face at `/aws/app`), `gcp` (the
//! GCE metadata face's `default` account, federated without impersonation, so its token lives
//! only as long as Keycloak's and is refreshed on Keycloak's schedule) and `azure` (Azure IMDS
//! and App Service), all served on one address. With it, the table the abuse tests run over:
//! each face's legitimate request as its SDKs send it, what marks a credential in its answer, and
//! the status it promises for each refusal (README, "The local metadata endpoint").

use std::sync::Arc;
use std::time::Duration;

use keyfed_azure::emulator::EntraEmulator;
use keyfed_gcp::emulator::GcpEmulator;
use keyfed_keycloak::emulator::KeycloakEmulator;

use super::azure::{APP, service_account_of};
use super::{Fixture, SecretFile, free_port, raw_exchange};

/// The Azure faces' resource: the target's first scope, kept fresh.
const MGMT: &str = "https%3A%2F%2Fmanagement.azure.com";
/// Every face answers a foreign `Host`, an `Origin` or `Sec-Fetch-*` with this.
pub const REBOUND: u16 = 403;
/// hyper's answer to a request head over the endpoint's 16 KiB cap, on every face.
pub const OVERSIZED: u16 = 431;

/// The daemon's folder, emulators and endpoint.
pub struct EveryFace {
    pub fx: Fixture,
    pub gcp: Arc<GcpEmulator>,
    pub entra: Arc<EntraEmulator>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl EveryFace {
    /// The emulators (Keycloak's tokens living `lifespan`, when given) and `keyfed.toml`;
    /// `endpoint_keys` are more lines of `[endpoint]`.
    pub async fn new(lifespan: Option<Duration>, endpoint_keys: &str) -> Self {
        let mut fx = Fixture::new();
        let mut realm = fx.realm();
        if let Some(lifespan) = lifespan {
            realm = realm.lifespan(lifespan);
        }
        let sub = service_account_of(&realm);
        fx.start(KeycloakEmulator::builder(realm)).await;
        let entra = fx.start_entra(&sub).await;
        fx.start_sts().await;
        let gcp = fx.start_gcp().await;
        let port = free_port();
        // Tokens may live less than the default minimum of a minute (see `lifespan`).
        let short = |target: String, name: &str| {
            let table = format!("[targets.{name}]\n");
            target.replacen(&table, &format!("{table}min_token_lifetime = \"10s\"\n"), 1)
        };
        let targets = [
            short(fx.aws_target("aws", ""), "aws") + "container_path = \"/aws/app\"\n",
            short(fx.gcp_target(&gcp, "gcp", "", ""), "gcp"),
            short(
                fx.azure_target(&entra, "azure", APP, &["https://management.azure.com"], ""),
                "azure",
            ),
        ];
        fx.daemon_config(&format!(
            "{}\n[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\nimds_target = \"aws\"\n\
             gce_target = \"gcp\"\nazure_target = \"azure\"\n\
             container_token_file = \"container-token\"\nidentity_header_file = \"identity-header\"\n\
             {endpoint_keys}",
            targets.join("\n")
        ));
        fx.known
            .add_file(fx.path("identity-header"), SecretFile::Whole);
        Self {
            fx,
            gcp,
            entra,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `127.0.0.1:PORT`: the endpoint's address, and its own `Host`.
    pub fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The secrets each face's SDKs hold, from the running daemon: the container token and the
    /// App Service secret from their files, and a new IMDSv2 session token.
    pub async fn secrets(&self) -> Secrets {
        let read = |name: &str| {
            std::fs::read_to_string(self.fx.path(name))
                .unwrap_or_else(|e| panic!("the daemon's {name}: {e}"))
        };
        let put = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: {}\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.host()
        );
        let answer = raw_exchange(&self.base, put.as_bytes()).await;
        let session = answer
            .split_once("\r\n\r\n")
            .filter(|_| answer.starts_with("HTTP/1.1 200"))
            .map(|(_, body)| body.to_owned())
            .unwrap_or_else(|| panic!("no IMDSv2 session token: {answer:.300}"));
        self.fx.know("an IMDSv2 session token", &session);
        Secrets {
            container: read("container-token"),
            identity_header: read("identity-header"),
            imds_session: session,
        }
    }
}

/// What each face's SDKs present.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub container: String,
    pub identity_header: String,
    pub imds_session: String,
}

/// One face's legitimate request and the statuses it promises.
#[derive(Debug, Clone)]
pub struct FaceCase {
    /// The face, as its metrics label names it (with what the request does, for IMDSv2).
    pub name: &'static str,
    pub method: &'static str,
    pub path: String,
    /// The header its SDKs send: a secret, or a marker a web page cannot send unnoticed.
    pub sdk: (&'static str, String),
    /// What marks a credential (or, for IMDSv2's token request, an answer) in its 200 body.
    pub marker: &'static str,
    /// Its status for a request without [`FaceCase::sdk`].
    pub missing: u16,
    /// Its status for a request carrying `X-Forwarded-For`.
    pub forwarded: u16,
}

impl FaceCase {
    /// The request head as written by hand (`Connection: close`), `Host` as given, the SDK's
    /// header unless `sdk` is false, and `extra` headers.
    pub fn head(&self, host: &str, sdk: bool, extra: &[(&str, &str)]) -> String {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
            self.method, self.path
        );
        if self.method == "PUT" {
            head.push_str("Content-Length: 0\r\n");
        }
        if sdk {
            head.push_str(&format!("{}: {}\r\n", self.sdk.0, self.sdk.1));
        }
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}

/// Every credential face, two requests for IMDSv2 (the session token and the credentials).
pub fn faces(secrets: &Secrets) -> Vec<FaceCase> {
    let case = |name, method, path: &str, sdk: (&'static str, &str), marker, missing, forwarded| {
        FaceCase {
            name,
            method,
            path: path.to_owned(),
            sdk: (sdk.0, sdk.1.to_owned()),
            marker,
            missing,
            forwarded,
        }
    };
    vec![
        // Without its TTL header a token request is malformed: 400, as on EC2.
        case(
            "imds (token)",
            "PUT",
            "/latest/api/token",
            ("X-aws-ec2-metadata-token-ttl-seconds", "21600"),
            "",
            400,
            403,
        ),
        case(
            "imds",
            "GET",
            "/latest/meta-data/iam/security-credentials/aws",
            ("X-aws-ec2-metadata-token", &secrets.imds_session),
            "\"SecretAccessKey\"",
            401,
            403,
        ),
        case(
            "container",
            "GET",
            "/aws/app",
            ("Authorization", &secrets.container),
            "\"SecretAccessKey\"",
            401,
            403,
        ),
        case(
            "gce",
            "GET",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            ("Metadata-Flavor", "Google"),
            "\"access_token\"",
            403,
            403,
        ),
        case(
            "azure-imds",
            "GET",
            &format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={MGMT}"),
            ("Metadata", "true"),
            "\"access_token\"",
            400,
            400,
        ),
        case(
            "app-service",
            "GET",
            &format!("/msi/token?api-version=2019-08-01&resource={MGMT}"),
            ("X-IDENTITY-HEADER", &secrets.identity_header),
            "\"access_token\"",
            401,
            403,
        ),
    ]
}
