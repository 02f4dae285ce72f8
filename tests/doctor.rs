//! `keyfed doctor` (issue 12): the real binary against the emulators. A healthy configuration
//! with a target of each kind passes with exit 0 and writes nothing; one configuration with a
//! target broken on purpose for each check — a wrong audience, an array audience, an HS256
//! token, a trailing-slash issuer, a skewed Keycloak clock (by its `Date` header, and by a
//! token's `iat` from a Keycloak that sends no `Date`, as Keycloak 26 does), a secret file
//! its group may read, an unreachable Keycloak, a Keycloak whose CA is not trusted, and each
//! cloud's refusal (AWS: a client ID the IAM OIDC provider lacks, a trust policy that denies;
//! Google: an audience the provider does not allow, a missing binding; Entra: AADSTS70021 and
//! 700211) — fails with exit 1, and each check shows its fix; a configuration that does not load
//! is one failed check (exit 3). Every run's `--json` parses and says what the text says.

use std::sync::Arc;
use std::time::Duration;

use keyfed_aws::emulator::{Condition, OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::clock::{Clock as _, ManualClock, SystemClock};
use keyfed_core::emulator::TestCa;
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal_set};
use keyfed_keycloak::emulator::{KeycloakEmulator, Realm};
use serde_json::Value;

use crate::util::azure::{APP, TENANT, service_account_of};
use crate::util::doctor::{doctor, says};
use crate::util::gcp::{GCP_AUD, PROJECT_ID, PROVIDER, SERVICE_ACCOUNT, pool};
use crate::util::{AWS_AUD, Fixture, free_port, issuer, set_mode};

/// An Entra app with no federated credential at all (AADSTS70021).
const NO_CREDENTIAL_APP: &str = "5a1f0c3e-0000-4000-8000-000000000021";
/// An Entra app trusting the slash-less issuer of the realm whose tokens end `iss` with `/`.
const SLASH_APP: &str = "5a1f0c3e-0000-4000-8000-000000700211";
/// A pool provider that allows another audience than the one the token carries.
const STRICT_PROVIDER: &str =
    "projects/123456789/locations/global/workloadIdentityPools/onprem/providers/strict";
/// A service account no principal of the pool may impersonate.
const UNBOUND: &str = "unbound@keyfed-test.iam.gserviceaccount.com";
/// How far behind the real time the skewed Keycloak's clock runs.
const SKEW_SECS: u64 = 120;

fn aws_target(
    name: &str,
    scope: &str,
    audience: Option<&str>,
    sts: &StsEmulator,
    role: &str,
) -> String {
    format!(
        "[targets.{name}]\nissuer = \"corp\"\nscope = \"{scope}\"\n{}\
         aws = {{ role_arn = \"{}\", region = \"us-east-1\", endpoint_url = \"{}\" }}\n\n",
        audience
            .map(|a| format!("audience = \"{a}\"\n"))
            .unwrap_or_default(),
        sts.role_arn(role),
        sts.endpoint_url()
    )
}

fn gcp_target(name: &str, gcp: &GcpEmulator, provider: &str, extra: &str) -> String {
    format!(
        "[targets.{name}]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\n\
         [targets.{name}.gcp]\nprovider = \"{provider}\"\nproject_id = \"{PROJECT_ID}\"\n\
         sts_url = \"{}\"\niam_url = \"{}\"\n{extra}\n",
        gcp.sts_url(),
        gcp.base_url(),
    )
}

fn azure_target(name: &str, issuer: &str, entra: &EntraEmulator, client_id: &str) -> String {
    format!(
        "[targets.{name}]\nissuer = \"{issuer}\"\nscope = \"azure-audience\"\n\n\
         [targets.{name}.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{client_id}\"\n\
         authority_host = \"{}\"\nca_file = \"entra-ca.pem\"\n\n",
        entra.authority_host()
    )
}

fn token_target(name: &str, issuer: &str) -> String {
    format!(
        "[targets.{name}]\nissuer = \"{issuer}\"\naudience = \"{}\"\nscope = \"api-audience\"\n\n",
        crate::util::API_AUD
    )
}

/// An issuer block for `host-secret` at `url`, its secret in `secret_file`, plus `extra` keys.
fn issuer_at(name: &str, url: &str, secret_file: &str, extra: &str) -> String {
    format!(
        "[issuers.{name}]\nurl = \"{url}\"\nclient_id = \"host-secret\"\nclient_secret_file = \"{secret_file}\"\n{extra}\n"
    )
}

/// Starts a Keycloak emulator of its own (another issuer in the configuration), known to the
/// leak check.
async fn keycloak(
    fx: &Fixture,
    builder: keyfed_keycloak::emulator::Builder,
) -> Arc<KeycloakEmulator> {
    let emulator = Arc::new(
        builder
            .start()
            .await
            .unwrap_or_else(|e| panic!("keycloak: {e}")),
    );
    fx.known.add_emulator(&emulator);
    emulator
}

#[tokio::test]
async fn issue_12_a_healthy_configuration_passes_and_writes_nothing() {
    let (mut fx, entra) = Fixture::azure().await;
    fx.start_sts().await;
    let gcp = fx.start_gcp().await;
    let aws = fx.aws_target(
        "aws",
        r#"{ kind = "aws-credentials", path = "out/aws/credentials" }"#,
    );
    let google = fx.gcp_target(
        &gcp,
        "gcp",
        &format!("service_account = \"{SERVICE_ACCOUNT}\""),
        r#"{ kind = "gcp-access-token", path = "out/gcp/token" }"#,
    );
    let azure = fx.azure_target(
        &entra,
        "azure",
        APP,
        &["https://management.azure.com"],
        r#"{ kind = "azure-access-token", path = "out/azure/token" }"#,
    );
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{aws}\n{google}\n{azure}\n{}",
        issuer("corp", "host-secret", "client_secret_basic"),
        token_target("api", "corp")
    ));
    let started = std::time::Instant::now();
    let (text, _, document) = doctor(&fx, &[]).await;
    text.ok();
    assert_eq!(document["ok"], true, "{document:#}");
    for target in ["aws", "gcp", "azure", "api"] {
        for id in [
            "secret",
            "keycloak.reachable",
            "keycloak.tls",
            "keycloak.discovery",
            "keycloak.jwks",
            "keycloak.clock",
            "token",
        ] {
            says(&document, target, id, "ok", &[]);
        }
    }
    for (target, issued) in [
        ("aws", "AWS credentials for"),
        ("gcp", SERVICE_ACCOUNT),
        ("azure", "Azure access token of"),
    ] {
        for id in [
            "claims.aud",
            "claims.alg",
            "claims.kid",
            "claims.iss",
            "claims.sub",
            "claims.lifetime",
        ] {
            says(&document, target, id, "ok", &[]);
        }
        says(
            &document,
            target,
            "exchange",
            "ok",
            &[issued, "not written"],
        );
        // The emulator's issuer is plain http with a port: fine for a stand-in on this host.
        says(&document, target, "claims.iss", "ok", &["stand-in"]);
        says(
            &document,
            target,
            "public-urls",
            "info",
            &[
                "/.well-known/openid-configuration",
                "/protocol/openid-connect/certs",
            ],
        );
    }
    says(
        &document,
        "gcp",
        "public-urls",
        "info",
        &["--jwk-json-path"],
    );
    says(&document, "aws", "claims.size", "ok", &["at most 20000"]);
    text.prints("no check failed");
    assert!(!fx.path("out").exists(), "doctor wrote an output file");
    // One target by name.
    let one = fx.keyfed(&["doctor", "aws", "--json"]).await;
    one.ok();
    let one: Value = serde_json::from_str(&one.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one["targets"].as_array().map(Vec::len), Some(1), "{one:#}");
    // A target it does not have: one failed check, in the text and the document alike.
    let (text, json, unknown) = doctor(&fx, &["nope"]).await;
    text.fails_with(2).says("no target named \"nope\"");
    json.fails_with(2);
    assert_eq!(unknown["ok"], false, "{unknown:#}");
    assert_eq!(unknown["targets"], Value::Array(Vec::new()));
    let config = unknown["config"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&Value> = config.iter().filter(|c| c["status"] == "fail").collect();
    assert_eq!(failed.len(), 1, "{unknown:#}");
    assert_eq!(failed[0]["id"], "target");
    let detail = failed[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("no target named \"nope\"") && detail.contains("aws, azure, gcp"),
        "{detail}"
    );
    eprintln!("issue 12: healthy doctor runs took {:?}", started.elapsed());
}

/// A configuration with a target broken on purpose for each check: extra Keycloak realms (one
/// signing HS256, one naming its issuer with a trailing slash, two whose clock runs behind — one
/// saying so in its `Date` header, one sending none — one over TLS from a CA keyfed does not
/// trust), a secret file its group may read, an issuer where nothing listens, and clouds that
/// refuse (an STS whose OIDC provider lists another client ID, a role whose trust policy wants
/// another `sub`, a pool provider allowing another audience, a service account without a
/// binding, Entra apps without a matching federated credential).
struct Broken {
    fx: Fixture,
    /// `host-secret`'s service account (`sub`) in the standard realm.
    sub: String,
    issuer_url: String,
    /// Kept running while doctor runs.
    _keycloaks: Vec<Arc<KeycloakEmulator>>,
    _clouds: (
        Arc<StsEmulator>,
        Arc<StsEmulator>,
        Arc<GcpEmulator>,
        Arc<EntraEmulator>,
    ),
}

impl Broken {
    async fn new() -> Self {
        let mut fx = Fixture::new();
        let realm = fx.realm();
        let sub = service_account_of(&realm);
        fx.start(KeycloakEmulator::builder(realm)).await;
        let issuer_url = fx.keycloak().issuer_url();
        fx.write_credentials();

        // Realms broken on purpose, each an issuer of its own.
        let hs256 = keycloak(&fx, KeycloakEmulator::builder(fx.realm())).await;
        hs256.sign_with_hs256(true);
        let slash_realm: Realm = fx.realm().trailing_slash_issuer(true);
        let slash_sub = service_account_of(&slash_realm);
        let slash = keycloak(&fx, KeycloakEmulator::builder(slash_realm)).await;
        let behind = SystemClock.now() - Duration::from_secs(SKEW_SECS);
        let skewed = keycloak(
            &fx,
            KeycloakEmulator::builder(fx.realm()).clock(Arc::new(ManualClock::new(behind))),
        )
        .await;
        let undated = keycloak(
            &fx,
            KeycloakEmulator::builder(fx.realm())
                .clock(Arc::new(ManualClock::new(behind)))
                .without_date_header(),
        )
        .await;
        let server_ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
        let other_ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
        let tls = keycloak(&fx, KeycloakEmulator::builder(fx.realm()).tls(&server_ca)).await;
        fx.write("other-ca.pem", other_ca.ca_pem());
        let loose = fx.write("loose-secret", &format!("{}\n", crate::util::SECRET));
        set_mode(&loose, 0o640);

        // AWS: one STS trusting the realm for sts.amazonaws.com (a role for all, one for nobody's
        // sub), one whose OIDC provider lists another client ID.
        let sts = Arc::new(
            StsEmulator::builder()
                .provider(OidcProvider::new(&issuer_url, &[AWS_AUD]))
                .role(Role::new("app", &issuer_url))
                .role(
                    Role::new("denied", &issuer_url)
                        .condition(Condition::string_equals("sub", &["someone-else"])),
                )
                .start()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let other_client = Arc::new(
            StsEmulator::builder()
                .provider(OidcProvider::new(&issuer_url, &["other-client-id"]))
                .role(Role::new("app", &issuer_url))
                .start()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        // Google: a provider allowing another audience, and a service account without a binding.
        let provider = PoolProvider::new(PROVIDER, &issuer_url);
        let gcp = Arc::new(
            GcpEmulator::builder()
                .service_account(
                    ServiceAccount::new(SERVICE_ACCOUNT).bind(&principal_set(provider.pool())),
                )
                .service_account(ServiceAccount::new(UNBOUND))
                .provider(provider)
                .provider(
                    PoolProvider::new(STRICT_PROVIDER, &issuer_url)
                        .allowed_audiences(&["https://other.example"]),
                )
                .start()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        // Entra: an app with no federated credential, one trusting the slash-less issuer.
        let entra_ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
        let entra = Arc::new(
            EntraEmulator::builder()
                .tenant(TENANT)
                .tls(&entra_ca)
                .app(
                    App::new(APP).federated_credential(FederatedCredential::new(&issuer_url, &sub)),
                )
                .app(App::new(NO_CREDENTIAL_APP))
                .app(
                    App::new(SLASH_APP).federated_credential(FederatedCredential::new(
                        &slash.issuer_url(),
                        &slash_sub,
                    )),
                )
                .start()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        fx.write("entra-ca.pem", entra_ca.ca_pem());
        for emulator in [&sts, &other_client] {
            fx.known.add_emulator(emulator);
        }
        fx.known.add_emulator(&gcp);
        fx.known.add_emulator(&entra);

        let down = format!("http://127.0.0.1:{}/realms/infra", free_port());
        let config = [
            issuer("corp", "host-secret", "client_secret_basic"),
            issuer_at("hs", &hs256.issuer_url(), "client-secret", ""),
            issuer_at("slash", &slash.issuer_url(), "client-secret", ""),
            issuer_at("skewed", &skewed.issuer_url(), "client-secret", ""),
            issuer_at("undated", &undated.issuer_url(), "client-secret", ""),
            issuer_at(
                "tls",
                &tls.issuer_url(),
                "client-secret",
                "ca_file = \"other-ca.pem\"\n",
            ),
            issuer_at("untrusted", &tls.issuer_url(), "client-secret", ""),
            issuer_at("loose", "{issuer}", "loose-secret", ""),
            issuer_at("down", &down, "client-secret", "connect_timeout = \"2s\"\n"),
            aws_target("wrong-aud", "api-audience", Some(AWS_AUD), &sts, "app"),
            aws_target("array-aud", "both", None, &sts, "app"),
            aws_target("aws-client-id", "aws-audience", None, &other_client, "app"),
            aws_target("aws-denied", "aws-audience", None, &sts, "denied"),
            gcp_target("gcp-aud", &gcp, STRICT_PROVIDER, ""),
            gcp_target(
                "gcp-binding",
                &gcp,
                PROVIDER,
                &format!("service_account = \"{UNBOUND}\""),
            ),
            azure_target("entra-70021", "corp", &entra, NO_CREDENTIAL_APP),
            azure_target("hs256", "hs", &entra, APP),
            azure_target("entra-700211", "slash", &entra, SLASH_APP),
            token_target("skewed", "skewed"),
            token_target("skewed-undated", "undated"),
            token_target("loose", "loose"),
            token_target("down", "down"),
            token_target("untrusted-ca", "untrusted"),
            token_target("wrong-ca", "tls"),
        ]
        .concat();
        fx.config(&config);
        Self {
            fx,
            sub,
            issuer_url,
            _keycloaks: vec![hs256, slash, skewed, undated, tls],
            _clouds: (sts, other_client, gcp, entra),
        }
    }
}

#[tokio::test]
async fn issue_12_each_check_fails_on_purpose_and_says_its_fix() {
    let Broken {
        fx,
        sub,
        issuer_url,
        ..
    } = &Broken::new().await;

    let started = std::time::Instant::now();
    let (text, _, d) = doctor(fx, &[]).await;
    eprintln!(
        "issue 12: the failing doctor runs took {:?}",
        started.elapsed()
    );
    text.fails_with(1).says("checks failed");
    assert_eq!(d["ok"], false);

    // The token's audience is not the target's: keyfed refuses it, and says which mapper.
    says(
        &d,
        "wrong-aud",
        "token",
        "fail",
        &["does not hold \"sts.amazonaws.com\""],
    );
    says(
        &d,
        "wrong-aud",
        "claims.aud",
        "fail",
        &[
            crate::util::API_AUD,
            "Included Custom Audience",
            "\"sts.amazonaws.com\"",
            "\"api-audience\"",
        ],
    );
    says(
        &d,
        "wrong-aud",
        "exchange",
        "skip",
        &["no token that keyfed accepts"],
    );
    // Two audiences: the cloud takes it, but the token is not meant for it alone, and aud
    // must be a single string.
    says(
        &d,
        "array-aud",
        "claims.aud",
        "fail",
        &[
            "array",
            "strict_audience = true",
            "Full scope allowed off",
            "keyfed trust array-aud --keycloak",
        ],
    );
    says(&d, "array-aud", "exchange", "ok", &[]);
    // HS256: refused by keyfed; the claim and the Keycloak setting named.
    says(&d, "hs256", "token", "fail", &["HS256"]);
    says(
        &d,
        "hs256",
        "claims.alg",
        "fail",
        &[
            "\"HS256\"",
            "RS256 only",
            "Access token signature algorithm",
        ],
    );
    says(&d, "hs256", "exchange", "skip", &[]);
    // A trailing slash: keyfed takes it, Entra does not.
    says(
        &d,
        "entra-700211",
        "claims.iss",
        "fail",
        &["ends with a slash", "AADSTS700211"],
    );
    says(
        &d,
        "entra-700211",
        "exchange",
        "fail",
        &["700211", "trailing slash"],
    );
    // Keycloak's clock, by its Date header.
    says(
        &d,
        "skewed",
        "keycloak.clock",
        "warn",
        &["ahead of Keycloak's", "timedatectl"],
    );
    says(&d, "skewed", "token", "ok", &[]);
    // Without a Date header (Keycloak 26 sends none), by the token's iat.
    says(
        &d,
        "skewed-undated",
        "keycloak.clock",
        "warn",
        &["ahead of Keycloak's", "the token's iat", "timedatectl"],
    );
    says(&d, "skewed-undated", "token", "ok", &[]);
    // A secret file the group may read.
    says(
        &d,
        "loose",
        "secret",
        "fail",
        &["0640", "its group", "chmod 600"],
    );
    // Nothing listening.
    says(
        &d,
        "down",
        "keycloak.reachable",
        "fail",
        &["nothing listens at 127.0.0.1:"],
    );
    for id in [
        "keycloak.tls",
        "keycloak.discovery",
        "keycloak.jwks",
        "keycloak.clock",
        "token",
    ] {
        says(&d, "down", id, "skip", &["Keycloak is not reachable"]);
    }
    // A CA keyfed does not trust; another CA of the same name in ca_file.
    says(&d, "untrusted-ca", "keycloak.reachable", "ok", &[]);
    says(
        &d,
        "untrusted-ca",
        "keycloak.tls",
        "fail",
        &[
            "does not lead to a CA this host trusts",
            "UnknownIssuer",
            "set ca_file",
        ],
    );
    says(&d, "untrusted-ca", "token", "skip", &["TLS certificate"]);
    says(
        &d,
        "wrong-ca",
        "keycloak.tls",
        "fail",
        &[
            "another CA of that name signed it",
            "BadSignature",
            "set ca_file",
        ],
    );
    // Each cloud's refusal, its fix from the provider's hint.
    says(
        &d,
        "aws-client-id",
        "exchange",
        "fail",
        &[
            "Incorrect token audience",
            "--client-id sts.amazonaws.com",
            "add-client-id-to-open-id-connect-provider",
        ],
    );
    says(
        &d,
        "aws-denied",
        "exchange",
        "fail",
        &[
            "AccessDenied",
            "trust policy",
            &format!(":sub\" (this token's sub is \"{sub}\")"),
        ],
    );
    // The target's audience names another provider than its own: allowed only if listed.
    says(
        &d,
        "gcp-aud",
        "claims.aud",
        "warn",
        &[
            &format!("\"https://iam.googleapis.com/{STRICT_PROVIDER}\""),
            "the provider's allowed audiences",
        ],
    );
    says(
        &d,
        "gcp-aud",
        "exchange",
        "fail",
        &[
            "invalid_grant",
            "audience",
            &format!("--allowed-audiences={GCP_AUD}"),
        ],
    );
    says(
        &d,
        "gcp-binding",
        "exchange",
        "fail",
        &[
            "PERMISSION_DENIED",
            "roles/iam.workloadIdentityUser",
            &format!("principal://iam.googleapis.com/{}/subject/{sub}", pool()),
        ],
    );
    says(
        &d,
        "entra-70021",
        "exchange",
        "fail",
        &[
            "AADSTS70021",
            &format!("issuer \"{issuer_url}\""),
            &format!("subject \"{sub}\""),
            "audience \"api://AzureADTokenExchange\"",
        ],
    );
    // The loose secret is the target's failure, not a second configuration warning.
    assert_eq!(
        d["config"].as_array().map(Vec::len),
        Some(1),
        "{:#}",
        d["config"]
    );
}

#[tokio::test]
async fn issue_12_a_configuration_that_does_not_load_is_one_failed_check() {
    let fx = Fixture::new();
    fx.config(
        "[issuers.corp]\nurl = \"https://sso.example.com/realms/infra\"\nclient_idd = \"x\"\n",
    );
    let (text, json, d) = doctor(&fx, &[]).await;
    text.fails_with(3);
    json.fails_with(3);
    assert_eq!(d["ok"], false);
    assert_eq!(d["targets"], Value::Array(Vec::new()));
    let config = &d["config"];
    assert_eq!(config.as_array().map(Vec::len), Some(1), "{config:#}");
    assert_eq!(config[0]["status"], "fail");
    let detail = config[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("keyfed.toml:3:1: issuers.corp.client_idd: unknown field"),
        "{detail}"
    );
}

/// Google takes an https issuer only (its provider's issuer URI, even with the keys uploaded):
/// `keyfed trust` warns of a plain-http one for a GCP target as it does for AWS and Entra ID,
/// and still prints the setup (issue 12).
#[tokio::test]
async fn issue_12_trust_warns_that_google_takes_no_plain_http_issuer() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    fx.config(&format!(
        "{}\n[targets.gcp]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\
         gcp = {{ provider = \"{PROVIDER}\" }}\n",
        issuer("corp", "host-secret", "client_secret_basic")
    ));
    let jwks = fx.path("gcp-jwks.json");
    let jwks_arg = jwks.display().to_string();
    let run = fx.keyfed(&["trust", "gcp", "--jwks-file", &jwks_arg]).await;
    run.ok();
    let iss = fx.keycloak().issuer_url();
    assert!(iss.starts_with("http://"), "{iss}");
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    for words in [
        "Google Cloud takes an https issuer only",
        &format!("\"{iss}\""),
        "served over http, not https",
        "keyfed doctor gcp",
    ] {
        assert!(warnings[0].contains(words), "{words}: {}", run.stderr);
    }
    assert!(
        run.stdout.contains(&format!("--issuer-uri={iss}")),
        "{}",
        run.stdout
    );
}
