//! issue 10: Azure's managed-identity faces and federated token file through the real daemon,
//! against the Keycloak emulator and the Entra ID emulator (over TLS, its CA the targets'
//! `ca_file`), with Azure's own SDKs as consumers: azure-identity (Python, installed by
//! `tests/run` into `target/interop-venv`, driven by `tests/interop/azure_identity.py`) —
//! `ManagedIdentityCredential` through the App Service face for two resources and through the
//! IMDS face, `WorkloadIdentityCredential` on keyfed's `azure-federated-token` file — and the
//! Rust `azure_identity` crate's `ManagedIdentityCredential` through the App Service face. Every
//! token a consumer gets is one the Entra emulator says it issued, for the identity and
//! resource asked for. And 200 concurrent face requests reach Entra zero times while the token
//! is fresh, once while a token is being fetched, and once while an expiring one is refreshed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyfed_azure::emulator::{EntraEmulator, IssuedToken};
use keyfed_core::clock::{Clock as _, SystemClock};
use keyfed_core::emulator::Fault;

use crate::util::azure::{APP, IDENTITY, TENANT};
use crate::util::http::client;
use crate::util::{Daemon, Fixture, SecretFile, Serves, free_port, held, wait_ready, wait_until};

const MGMT: &str = "https://management.azure.com";
const VAULT: &str = "https://vault.azure.net";
const STORAGE: &str = "https://storage.azure.com";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/azure_identity.py"
);
/// Entra's token endpoint, as the emulator's request counters name it.
const TOKEN_PATH: &str = "/oauth2/v2.0/token";
/// What the daemon logs (at debug level) for each caller that waits for a token.
const WAITING: &str = "no usable credential: waiting for a refresh";

/// Keycloak, Entra, and the daemon serving target `azure` (app [`APP`], keeping the management
/// API's token fresh, writing the federated token file) on both faces, and (unless
/// [`Setup::app_only`]) target `mi` (the managed identity [`IDENTITY`]) for requests naming its
/// client ID.
struct Setup {
    fx: Fixture,
    entra: Arc<EntraEmulator>,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl Setup {
    async fn new() -> Self {
        Self::build(true).await
    }

    /// Target `azure` alone: the only one to ask Entra for a token at start, so a fault
    /// injected before the daemon starts meets its first token request and no other.
    async fn app_only() -> Self {
        Self::build(false).await
    }

    async fn build(managed_identity: bool) -> Self {
        let (fx, entra) = Fixture::azure().await;
        let port = free_port();
        let azure = fx.azure_target(
            &entra,
            "azure",
            APP,
            &[MGMT],
            "{ kind = \"azure-federated-token\", path = \"azure/federated.jwt\" }",
        );
        let mi = if managed_identity {
            fx.azure_target(&entra, "mi", IDENTITY, &[MGMT], "")
        } else {
            String::new()
        };
        fx.daemon_config(&format!(
            "{azure}\n{mi}\n[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\nazure_target = \"azure\"\n\
             container_token_file = \"container-token\"\nidentity_header_file = \"identity-header\"\n"
        ));
        fx.known
            .add_file(fx.path("identity-header"), SecretFile::Whole);
        fx.known
            .add_file(fx.path("azure/federated.jwt"), SecretFile::Jwt);
        Self {
            fx,
            entra,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts the daemon and waits until every target has its first token.
    async fn daemon(&self) -> Daemon {
        let daemon = self.fx.daemon().await;
        wait_ready(&self.base).await;
        daemon
    }

    /// The secret the App Service face wrote at start.
    fn identity_header(&self) -> String {
        std::fs::read_to_string(self.fx.path("identity-header"))
            .unwrap_or_else(|e| panic!("the identity header file: {e}"))
    }

    /// What the Entra emulator knows of `token`: it must have issued it.
    fn issued(&self, token: &str, whose: &str) -> IssuedToken {
        self.entra
            .token_info(token)
            .unwrap_or_else(|| panic!("{whose}: a token the Entra emulator did not issue"))
    }

    /// Requests that reached Entra's token endpoint.
    fn entra_calls(&self) -> u64 {
        self.entra.control().hits(TOKEN_PATH)
    }

    /// The App Service face's access token for `resource`, known to the leak check from now on.
    async fn app_service_token(&self, http: &reqwest::Client, resource: &str) -> String {
        let response = http
            .get(format!(
                "{}/msi/token?api-version=2019-08-01&{}",
                self.base,
                resource_query(resource)
            ))
            .header("X-IDENTITY-HEADER", self.identity_header())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.token_of(response).await
    }

    /// The IMDS face's access token for `resource`, known to the leak check from now on.
    async fn imds_token(&self, http: &reqwest::Client, resource: &str) -> String {
        let response = http
            .get(format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&{}",
                self.base,
                resource_query(resource)
            ))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.token_of(response).await
    }

    async fn token_of(&self, response: reqwest::Response) -> String {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        let document: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let token = document["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {document}"))
            .to_owned();
        self.fx.know("an access token from an Azure face", &token);
        token
    }

    /// Runs `tests/interop/azure_identity.py ARGS` with a clean environment plus `env`; the
    /// JSON lines it printed, its tokens checked as the emulator's and known from then on.
    async fn azure_identity(&self, args: &[&str], env: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let python =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
        assert!(
            python.exists(),
            "the interop venv is missing ({}): run tests/run, which installs it",
            python.display()
        );
        let what = format!("azure-identity {}", args.join(" "));
        let output = tokio::process::Command::new(python)
            .arg(SCRIPT)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.fx.dir.path())
            .envs(env.iter().copied())
            .current_dir(self.fx.dir.path())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let mut scrubbed = stdout.clone();
        for line in &lines {
            if let Some(token) = line["token"].as_str().filter(|t| !t.is_empty()) {
                scrubbed = scrubbed.replace(token, "<token>");
            }
        }
        self.fx
            .known
            .check(&what, Serves::Nothing, &scrubbed, &stderr);
        for line in &lines {
            if let Some(token) = line["token"].as_str() {
                self.fx.know("a token azure-identity got", token);
            }
        }
        lines
    }

    /// Asserts each line is a token the emulator issued to `client_id` for its scope's
    /// resource, with the expiry Entra gave it (see below); returns the tokens.
    fn assert_issued(
        &self,
        lines: &[serde_json::Value],
        client_id: &str,
        scopes: &[&str],
    ) -> Vec<String> {
        assert_eq!(lines.len(), scopes.len(), "{lines:?}");
        lines
            .iter()
            .zip(scopes)
            .map(|(line, scope)| {
                assert!(line["error"].is_null(), "{line}");
                assert_eq!(line["scope"], *scope, "{line}");
                let token = line["token"].as_str().unwrap_or_default();
                let info = self.issued(token, "azure-identity");
                assert_eq!(info.client_id, client_id, "{line}");
                assert_eq!(info.scope, *scope, "{line}");
                // Through IMDS the SDK adds `expires_in` (whole seconds left, rounded down) to
                // its own clock: never later than Entra's expiry, a moment earlier at most.
                let expires_on = keyfed_core::clock::unix_seconds(info.expires_at);
                let got = line["expires_on"].as_u64().unwrap_or_default();
                assert!(
                    got <= expires_on && got + 60 >= expires_on,
                    "{line}: Entra says {expires_on}"
                );
                token.to_owned()
            })
            .collect()
    }
}

/// `resource=…`, form-encoded.
fn resource_query(resource: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("resource", resource)
        .finish()
}

fn scope(resource: &str) -> String {
    format!("{resource}/.default")
}

/// issue 10: azure-identity's `ManagedIdentityCredential`, pointed at the App Service face
/// (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), gets the app's tokens for two resources — the
/// management API's, kept fresh, and Key Vault's, fetched on demand — and, with `client_id`,
/// the managed identity's. The identity header file is 0640 with no trailing newline.
#[tokio::test]
async fn issue_10_azure_identity_through_the_app_service_face() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let secret = setup.identity_header();
    assert_eq!(secret.trim_end(), secret, "no trailing newline");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(setup.fx.path("identity-header"))
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
    let endpoint = format!("{}/msi/token", setup.base);
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", secret.as_str()),
    ];
    let (mgmt, vault) = (scope(MGMT), scope(VAULT));
    let lines = setup
        .azure_identity(&["managed", &mgmt, &vault], &env)
        .await;
    let tokens = setup.assert_issued(&lines, APP, &[&mgmt, &vault]);
    assert_ne!(tokens[0], tokens[1]);
    let lines = setup
        .azure_identity(&["managed", "--client-id", IDENTITY, &mgmt], &env)
        .await;
    setup.assert_issued(&lines, IDENTITY, &[&mgmt]);
    let wrong = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "not-the-secret"),
    ];
    let refused = setup.azure_identity(&["managed", &mgmt], &wrong).await;
    assert!(
        refused[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401") || e.contains("token is invalid")),
        "{refused:?}"
    );
    daemon.stop().await.ok();
}

/// issue 10: azure-identity's `ManagedIdentityCredential`, pointed at the IMDS face with
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST`, gets the app's token, and with `client_id` the managed
/// identity's.
#[tokio::test]
async fn issue_10_azure_identity_through_the_imds_face() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let env = [("AZURE_POD_IDENTITY_AUTHORITY_HOST", setup.base.as_str())];
    let (mgmt, storage) = (scope(MGMT), scope(STORAGE));
    let lines = setup
        .azure_identity(&["managed", &mgmt, &storage], &env)
        .await;
    setup.assert_issued(&lines, APP, &[&mgmt, &storage]);
    let lines = setup
        .azure_identity(&["managed", "--client-id", IDENTITY, &mgmt], &env)
        .await;
    setup.assert_issued(&lines, IDENTITY, &[&mgmt]);
    daemon.stop().await.ok();
}

/// issue 10: the Rust `azure_identity` crate's `ManagedIdentityCredential`, pointed at the App
/// Service face, gets keyfed's token. The crate reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
/// from the process environment, which this test binary may not change (no `unsafe`), so it
/// runs in a child — this binary again, running only
/// [`rust_azure_identity_in_a_child_process`] with those variables set.
#[tokio::test]
async fn issue_10_the_rust_azure_identity_crate_through_the_app_service_face() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let served = setup.app_service_token(&client(), MGMT).await;
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let output = tokio::process::Command::new(exe)
        .args([
            "azure_faces::rust_azure_identity_in_a_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("IDENTITY_ENDPOINT", format!("{}/msi/token", setup.base))
        .env("IDENTITY_HEADER", setup.identity_header())
        .env("KEYFED_TEST_AZURE_SCOPE", scope(MGMT))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run the child: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| {
            l.split_once("azure_identity token: ")
                .map(|(_, token)| token.trim())
        })
        .unwrap_or_else(|| panic!("the child printed no token:\n{stdout}\n{stderr}"));
    assert_eq!(line, served, "the token keyfed serves");
    let info = setup.issued(line, "azure_identity");
    assert_eq!(
        (info.client_id.as_str(), info.scope.as_str()),
        (APP, scope(MGMT).as_str())
    );
    daemon.stop().await.ok();
}

/// Run by [`issue_10_the_rust_azure_identity_crate_through_the_app_service_face`] in a child
/// process whose environment names the face; prints the token the crate got.
#[tokio::test]
#[ignore = "run by issue_10_the_rust_azure_identity_crate_through_the_app_service_face, in a child process with IDENTITY_ENDPOINT and IDENTITY_HEADER set"]
async fn rust_azure_identity_in_a_child_process() {
    use azure_core::credentials::TokenCredential as _;
    for name in [
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "KEYFED_TEST_AZURE_SCOPE",
    ] {
        assert!(std::env::var(name).is_ok(), "{name} is not set");
    }
    let scope = std::env::var("KEYFED_TEST_AZURE_SCOPE").unwrap_or_default();
    let credential = azure_identity::ManagedIdentityCredential::new(None)
        .unwrap_or_else(|e| panic!("ManagedIdentityCredential::new: {e}"));
    let token = credential
        .get_token(&[scope.as_str()], None)
        .await
        .unwrap_or_else(|e| panic!("get_token: {e}"));
    let left = token.expires_on - azure_core::time::OffsetDateTime::now_utc();
    assert!(
        left.whole_seconds() > 3000,
        "expires_on {:?}",
        token.expires_on
    );
    println!("azure_identity token: {}", token.token.secret());
}

/// issue 10: azure-identity's `WorkloadIdentityCredential` on keyfed's `azure-federated-token`
/// file (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
/// `AZURE_AUTHORITY_HOST` on the Entra emulator, its CA trusted) makes the exchange itself and
/// gets a token for the app.
#[tokio::test]
async fn issue_10_workload_identity_credential_on_the_federated_token_file() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let file = setup.fx.path("azure/federated.jwt");
    wait_until("the federated token file", async || file.exists()).await;
    let (file, ca) = (
        file.display().to_string(),
        setup.fx.entra_ca().display().to_string(),
    );
    let authority = setup.entra.authority_host();
    let env = [
        ("AZURE_FEDERATED_TOKEN_FILE", file.as_str()),
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
        ("REQUESTS_CA_BUNDLE", ca.as_str()),
        ("SSL_CERT_FILE", ca.as_str()),
    ];
    let before = setup.entra_calls();
    let vault = scope(VAULT);
    let lines = setup.azure_identity(&["workload", &vault], &env).await;
    setup.assert_issued(&lines, APP, &[&vault]);
    assert_eq!(setup.entra_calls(), before + 1, "the SDK's own exchange");
    daemon.stop().await.ok();
}

/// `n` concurrent token requests for `resource`, all started at once, half through each face;
/// `beside` runs with them. Every access token they got.
async fn concurrent_tokens(
    setup: &Setup,
    n: usize,
    resource: &str,
    beside: impl Future<Output = ()>,
) -> Vec<String> {
    let http = client();
    let requests = futures::future::join_all((0..n).map(|i| {
        let http = &http;
        async move {
            if i % 2 == 0 {
                setup.app_service_token(http, resource).await
            } else {
                setup.imds_token(http, resource).await
            }
        }
    }));
    let (tokens, ()) = tokio::join!(requests, beside);
    tokens
}

/// issue 10: 200 concurrent face requests while the token is fresh reach Entra (and Keycloak)
/// zero times; 200 for a resource whose token is still being fetched — they arrive, and the
/// daemon logs each one waiting, while the one fetch they share is held at Entra — reach it
/// once; and 200 more for that resource, zero times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_concurrent_face_requests_reach_entra_zero_times_fresh_and_once_while_fetching() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let first = setup.imds_token(&client(), MGMT).await;
    let (entra_before, keycloak_before) =
        (setup.entra_calls(), setup.fx.keycloak().token_requests());
    let tokens = concurrent_tokens(&setup, 200, MGMT, async {}).await;
    assert!(tokens.iter().all(|t| *t == first), "one token for all");
    assert_eq!(
        setup.entra_calls(),
        entra_before,
        "no request reached Entra"
    );
    assert_eq!(setup.fx.keycloak().token_requests(), keycloak_before);

    // From now on Entra holds every token request until released.
    let latch = setup.entra.control().hold(TOKEN_PATH);
    let waiting_before = daemon.log_so_far().matches(WAITING).count();
    let n = 200;
    let release = async {
        wait_until("every request to wait inside the daemon", async || {
            daemon.log_so_far().matches(WAITING).count() >= waiting_before + n
        })
        .await;
        held(&latch, 1, "the fetch of the new resource's token").await;
        assert_eq!(latch.waiting(), 1, "one fetch, held at Entra");
        latch.release();
    };
    let tokens = concurrent_tokens(&setup, n, STORAGE, release).await;
    assert!(tokens.iter().all(|t| *t == tokens[0]), "one token for all");
    let info = setup.issued(&tokens[0], "the faces");
    assert_eq!(info.scope, scope(STORAGE));
    assert_eq!(
        setup.entra_calls(),
        entra_before + 1,
        "one token request for all 200"
    );
    let again = concurrent_tokens(&setup, n, STORAGE, async {}).await;
    assert!(
        again.iter().all(|t| *t == tokens[0]),
        "held, not fetched again"
    );
    assert_eq!(setup.entra_calls(), entra_before + 1);
    daemon.stop().await.ok();
}

/// issue 10: 200 concurrent face requests during a refresh of the target's expiring token reach
/// Entra once, and Keycloak once. Entra's first answer (injected) lives 36 s: the daemon stops
/// serving it 30 s before its end, well before its background refresh (at 2/3 of its life) is
/// due, so the requests find no usable token and share one refresh, held at Entra while they
/// arrive; all 200 get the one new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_face_requests_during_a_refresh_reach_entra_once() {
    const LIFETIME: Duration = Duration::from_secs(36);
    let setup = Setup::app_only().await;
    let short_lived = "eyJ0eXAiOiJKV1QifQ.short-lived-first-token.of-the-azure-faces-test";
    setup.fx.know("the short-lived first token", short_lived);
    setup.entra.control().inject(
        TOKEN_PATH,
        Fault::Status {
            status: 200,
            body: serde_json::json!({
                "token_type": "Bearer",
                "expires_in": LIFETIME.as_secs(),
                "ext_expires_in": LIFETIME.as_secs(),
                "access_token": short_lived,
            })
            .to_string(),
        },
        Some(1),
    );
    let daemon = setup.daemon().await;
    // The daemon counts the lifetime from before its request, which was before now.
    let expires = SystemClock.now() + LIFETIME;
    assert_eq!(setup.app_service_token(&client(), MGMT).await, short_lived);
    // From now on Entra holds every token request until released.
    let latch = setup.entra.control().hold(TOKEN_PATH);
    // The daemon hands out no token within 30 s of its end.
    wait_until("the first token to be too old to hand out", async || {
        SystemClock.now() + Duration::from_secs(30) >= expires
    })
    .await;
    let (entra_before, keycloak_before) =
        (setup.entra_calls(), setup.fx.keycloak().token_requests());
    let waiting_before = daemon.log_so_far().matches(WAITING).count();
    let n = 200;
    let release = async {
        wait_until("every request to wait inside the daemon", async || {
            daemon.log_so_far().matches(WAITING).count() >= waiting_before + n
        })
        .await;
        held(&latch, 1, "the refresh").await;
        assert_eq!(latch.waiting(), 1, "one refresh, held at Entra");
        latch.release();
    };
    let tokens = concurrent_tokens(&setup, n, MGMT, release).await;
    assert!(tokens.iter().all(|t| *t == tokens[0]), "one token for all");
    assert_ne!(tokens[0], short_lived, "a renewed token");
    let info = setup.issued(&tokens[0], "the faces");
    assert_eq!(
        (info.client_id.as_str(), info.scope.as_str()),
        (APP, scope(MGMT).as_str())
    );
    assert_eq!(
        setup.entra_calls(),
        entra_before + 1,
        "one token request for all 200"
    );
    assert_eq!(
        setup.fx.keycloak().token_requests(),
        keycloak_before + 1,
        "one subject token"
    );
    daemon.stop().await.ok();
}
