//! `keyfed demo`: keyfed's main job on built-in defaults. Starts the Keycloak, AWS STS, Google
//! Cloud (STS and IAM Credentials) and Entra ID (over TLS with a test CA made at start) emulators
//! on loopback, writes a demo configuration,
//! client secret and AWS CLI profile into a folder, and runs the real daemon against them:
//! credentials are written to files and served on the control socket (for `keyfed
//! credential-process`) and the local endpoint (IMDSv2, container, GCE metadata) until Ctrl-C.
//! `--once` stops after the first round. The commands it prints run as printed: they name this
//! binary by its path unless `keyfed` on `PATH` is this binary.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::clock::rfc3339;
use keyfed_core::emulator::TestCa;
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal_set};
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};

use crate::engine::Engine;
use crate::outputs::{FileSpec, write_atomic};

const CLIENT_ID: &str = "keyfed-demo";
const ROLE: &str = "keyfed-demo";
const API_AUDIENCE: &str = "https://api.demo.keyfed.internal";
const GCP_PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/keyfed-demo/providers/keycloak";
const GCP_SERVICE_ACCOUNT: &str = "keyfed-demo@keyfed-demo.iam.gserviceaccount.com";
const AZURE_TENANT: &str = "0d3a4b5c-6e7f-4a8b-9c0d-1e2f3a4b5c6d";
const AZURE_CLIENT: &str = "7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b";

pub async fn run(dir: &Path, once: bool) -> anyhow::Result<()> {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let gcp_audience = format!("https://iam.googleapis.com/{GCP_PROVIDER}");
    let client = ClientSpec::new(CLIENT_ID, Credential::Secret(secret.clone())).optional_scopes(&[
        "api-audience",
        "aws-audience",
        "gcp-audience",
        "azure-audience",
    ]);
    // The Entra app's federated credential names the service account's subject.
    let subject = client.service_account_id.clone();
    let realm = Realm::new("demo")
        .scope("api-audience", &[API_AUDIENCE])
        .scope("aws-audience", &["sts.amazonaws.com"])
        .scope("gcp-audience", &[&gcp_audience])
        .scope("azure-audience", &[keyfed_azure::config::AUDIENCE])
        // Keycloak's default 5 minutes is too short for an Azure federated token file (SDKs
        // re-read it every 10 minutes); keyfed would warn, as it should for a real realm.
        .lifespan(Duration::from_secs(20 * 60))
        .client(client);
    let keycloak = KeycloakEmulator::builder(realm)
        .start()
        .await
        .context("cannot start the Keycloak emulator")?;
    let sts = StsEmulator::builder()
        .provider(OidcProvider {
            url: keycloak.issuer_url(),
            client_ids: vec!["sts.amazonaws.com".to_owned()],
        })
        .role(Role::new(ROLE, &keycloak.issuer_url()))
        .start()
        .await
        .context("cannot start the AWS STS emulator")?;
    let provider = PoolProvider::new(GCP_PROVIDER, &keycloak.issuer_url());
    let gcp = GcpEmulator::builder()
        .service_account(
            ServiceAccount::new(GCP_SERVICE_ACCOUNT).bind(&principal_set(provider.pool())),
        )
        .provider(provider)
        .start()
        .await
        .context("cannot start the Google Cloud emulator")?;
    let ca = TestCa::new().map_err(|e| anyhow::anyhow!("cannot make the demo's test CA: {e}"))?;
    let entra = EntraEmulator::builder()
        .tenant(AZURE_TENANT)
        .app(
            App::new(AZURE_CLIENT)
                .federated_credential(FederatedCredential::new(&keycloak.issuer_url(), &subject)),
        )
        .tls(&ca)
        .start()
        .await
        .context("cannot start the Entra ID emulator")?;

    let dir = std::path::absolute(dir).context("cannot resolve the demo folder")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("cannot find a free port for the endpoint")?;
    let config_file = dir.join("keyfed.toml");
    let exe = std::env::current_exe().context("cannot find the keyfed executable")?;
    let keyfed = command_name(&exe);
    let credential_process = format!(
        "{} --config {} credential-process aws",
        exe.display(),
        config_file.display()
    );
    let write = |name: &str, content: &str, spec: FileSpec| {
        let path = dir.join(name);
        write_atomic(&path, content.as_bytes(), spec)
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write("client-secret", &secret, FileSpec::PRIVATE)?;
    // Entra is served over TLS: its CA, for keyfed's `ca_file` and the SDKs.
    write("azure/entra-ca.pem", ca.ca_pem(), FileSpec::mode(0o644))?;
    write(
        "keyfed.toml",
        &demo_config(
            &keycloak.issuer_url(),
            &sts.endpoint_url(),
            &sts.role_arn(ROLE),
            &gcp.base_url(),
            &entra.authority_host(),
            port,
        ),
        FileSpec::mode(0o644),
    )?;
    write(
        "aws/config",
        &format!(
            "[profile keyfed-demo]\ncredential_process = {credential_process}\nregion = us-east-1\nendpoint_url = {}\n",
            sts.endpoint_url()
        ),
        FileSpec::mode(0o644),
    )?;

    let summary = |engine: &Engine| {
        let mut report = String::new();
        for target in engine.targets() {
            let s = target.snapshot();
            let state = match (&s.last_error, s.expires_at, s.next_refresh) {
                (Some(e), _, _) => format!("FAILED: {e}"),
                (None, Some(exp), Some(next)) => {
                    format!(
                        "fresh until {}, next refresh {}",
                        rfc3339(exp),
                        rfc3339(next)
                    )
                }
                _ => "pending".to_owned(),
            };
            let _ = writeln!(report, "  {:<4} {state}", target.name());
            for output in target.outputs() {
                let _ = writeln!(
                    report,
                    "         {:<24} {}",
                    output.name,
                    output.path.display()
                );
            }
        }
        let config = config_file.display();
        let aws_config = dir.join("aws/config");
        let mut text = format!(
            "keyfed demo — the real daemon against built-in emulators\n\
             Keycloak emulator: {issuer} (client \"{CLIENT_ID}\", secret in {dir}/client-secret)\n\
             AWS STS emulator:  {sts_url} (role {role_arn})\n\
             Google emulator:   {gcp_url} (service account {GCP_SERVICE_ACCOUNT})\n\
             Entra ID emulator: {entra_url} (tenant {AZURE_TENANT}, app {AZURE_CLIENT}; CA in {dir}/azure/entra-ca.pem)\n\
             configuration:     {config}\n\
             targets:\n{report}\n\
             Try, while the demo runs:\n  \
               {keyfed} --config {config} status\n  \
               {keyfed} --config {config} credential-process aws\n  \
               AWS_CONFIG_FILE={aws_config} aws --profile keyfed-demo sts get-caller-identity\n  \
               AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:{port}/aws/demo AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={dir}/container-token aws sts get-caller-identity --endpoint-url {sts_url}\n  \
               AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{port}/ aws sts get-caller-identity --endpoint-url {sts_url} --region us-east-1\n  \
               curl http://127.0.0.1:{port}/metrics\n  \
               {keyfed} --config {config} token api --decode\n\
             Google Cloud — Google's libraries and gcloud take either of:\n  \
               GOOGLE_APPLICATION_CREDENTIALS={dir}/gcp/external-account.json\n  \
               GCE_METADATA_HOST=127.0.0.1:{port} GCE_METADATA_IP=127.0.0.1:{port}\n\
             and by hand:\n  \
               curl -H 'Metadata-Flavor: Google' http://127.0.0.1:{port}/computeMetadata/v1/instance/service-accounts/default/token\n  \
               {keyfed} --config {config} gcp-subject-token gcp\n\
             Azure — SDK-native workload identity (azure-identity's WorkloadIdentityCredential):\n  \
               AZURE_FEDERATED_TOKEN_FILE={dir}/azure/federated-token.jwt AZURE_CLIENT_ID={AZURE_CLIENT} AZURE_TENANT_ID={AZURE_TENANT} AZURE_AUTHORITY_HOST={entra_url} REQUESTS_CA_BUNDLE={dir}/azure/entra-ca.pem\n\
             or keyfed's managed-identity faces (ManagedIdentityCredential, every Azure SDK):\n  \
               IDENTITY_ENDPOINT=http://127.0.0.1:{port}/msi/token IDENTITY_HEADER=$(cat {dir}/identity-header)\n  \
               AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:{port}\n\
             and the access token keyfed keeps in {dir}/azure/management.json",
            gcp_url = gcp.base_url(),
            entra_url = entra.authority_host(),
            issuer = keycloak.issuer_url(),
            dir = dir.display(),
            sts_url = sts.endpoint_url(),
            role_arn = sts.role_arn(ROLE),
            aws_config = aws_config.display(),
        );
        if !once {
            text.push_str("\n\nServing until Ctrl-C.");
        }
        text.push('\n');
        // A reader that went away does not stop the demo's daemon: it serves on unseen.
        let _ = crate::stdout::write(text);
    };
    super::run::daemon(&config_file, once, summary).await?;
    // Keep the emulators alive until the daemon has stopped.
    drop((keycloak, sts, gcp, entra));
    tokio::time::sleep(Duration::ZERO).await;
    Ok(())
}

/// How the printed commands name keyfed: `keyfed` when that is this binary on `PATH`, else the
/// binary's own path, so each command runs as printed.
fn command_name(exe: &Path) -> String {
    let this = std::fs::canonicalize(exe).ok();
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let found = std::fs::canonicalize(dir.join("keyfed")).ok();
            found.is_some() && found == this
        })
    });
    if on_path {
        "keyfed".to_owned()
    } else {
        exe.display().to_string()
    }
}

fn demo_config(
    issuer_url: &str,
    sts_url: &str,
    role_arn: &str,
    gcp_url: &str,
    entra_url: &str,
    port: u16,
) -> String {
    format!(
        r#"# Written by `keyfed demo`: keyfed against its built-in Keycloak and AWS STS emulators.
# See config/keyfed.toml in keyfed's source for every key and its default.

[issuers.demo]
url = "{issuer_url}"
client_id = "{CLIENT_ID}"
client_secret_file = "client-secret"       # relative to this file

# AWS credentials from STS AssumeRoleWithWebIdentity, kept fresh by the daemon.
[targets.aws]
issuer = "demo"
scope = "aws-audience"                     # audience defaults to sts.amazonaws.com
aws = {{ role_arn = "{role_arn}", region = "us-east-1", endpoint_url = "{sts_url}", session_name = "{{hostname}}-demo", duration = "1h" }}
outputs = [
  {{ kind = "aws-credentials", path = "aws/credentials", profile = "default" }},
  {{ kind = "credential-process-json", path = "aws/credential-process.json" }},
]
container_path = "/aws/demo"               # served on the endpoint below

# Google Cloud: workload identity federation, impersonating a service account.
[targets.gcp]
issuer = "demo"
scope = "gcp-audience"                     # audience defaults to https://iam.googleapis.com/<provider>
outputs = [
  {{ kind = "gcp-access-token", path = "gcp/access-token.json", format = "json" }},
  # GOOGLE_APPLICATION_CREDENTIALS for Google's libraries, with its subject token beside it.
  {{ kind = "gcp-external-account", path = "gcp/external-account.json" }},
]

[targets.gcp.gcp]
provider = "{GCP_PROVIDER}"
service_account = "{GCP_SERVICE_ACCOUNT}"
project_id = "keyfed-demo"
sts_url = "{gcp_url}/v1/token"
iam_url = "{gcp_url}"

# Azure: an Entra app's federated credential (no client secret), its access token, and the
# federated token file for SDKs that exchange it themselves.
[targets.azure]
issuer = "demo"
scope = "azure-audience"                   # audience defaults to api://AzureADTokenExchange
outputs = [
  {{ kind = "azure-access-token", path = "azure/management.json", format = "json" }},
  {{ kind = "azure-federated-token", path = "azure/federated-token.jwt" }},
]

[targets.azure.azure]
tenant_id = "{AZURE_TENANT}"
client_id = "{AZURE_CLIENT}"
authority_host = "{entra_url}"
ca_file = "azure/entra-ca.pem"             # the emulator's test CA

# A token for your own API.
[targets.api]
issuer = "demo"
audience = "{API_AUDIENCE}"
scope = "api-audience"
strict_audience = true
outputs = [ {{ kind = "token", path = "tokens/api.jwt" }} ]

# A token for SDK-native web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN).
[targets.web-identity]
issuer = "demo"
audience = "sts.amazonaws.com"
scope = "aws-audience"
outputs = [ {{ kind = "web-identity-token", path = "tokens/web-identity.jwt" }} ]

[control]
socket = "keyfed.sock"

# The local metadata endpoint: AWS IMDSv2, container, GCE metadata, Azure IMDS and App Service
# faces, /healthz, /readyz, /metrics.
[endpoint]
listen = ["127.0.0.1:{port}"]
imds_target = "aws"
gce_target = "gcp"
azure_target = "azure"
"#
    )
}
