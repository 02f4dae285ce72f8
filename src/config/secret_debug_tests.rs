//! issue 11: every type of keyfed's that holds a secret prints it redacted under `{:?}` and
//! `{:#?}` — what a `tracing` field, a panic or an assertion message would show. The secrets are
//! real: a configuration loaded from files (a client secret in a file, inline and in the
//! environment, an HS256 secret, a private key), and credentials of every kind fetched by the
//! real engine from the emulators of Keycloak, STS, Google Cloud and Entra ID.

use std::path::Path;
use std::sync::Arc;

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::clock::SystemClock;
use keyfed_core::emulator::{IssuesSecrets as _, TestCa, report};
use keyfed_core::{ExposeSecret as _, SecretString};
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal_set};
use keyfed_keycloak::emulator::{ClientSpec, Credential as KcCredential, KeycloakEmulator, Realm};

use super::{Host, parse};
use crate::credential::Credential;

const SECRET: &str = "file-s3cr3t:with+plus%percent&amp space=eq";
const INLINE: &str = "inline-s3cr3t-0123456789abcdef";
const ENV: &str = "env-s3cr3t-fedcba9876543210";
const HS256: &str = "hs256-shared-secret-of-enough-length-0123456789";
const API_AUD: &str = "https://api.example.internal";
const PROVIDER: &str =
    "projects/123456789/locations/global/workloadIdentityPools/onprem/providers/keycloak";
const SERVICE_ACCOUNT: &str = "app@keyfed-test.iam.gserviceaccount.com";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";

fn gcp_audience() -> String {
    format!("//iam.googleapis.com/{PROVIDER}")
}

/// `Basic` credentials as keyfed sends them (RFC 6749 §2.3.1).
fn basic(client_id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(client_id),
        encode(secret)
    ))
}

/// The realm: a client per way of authenticating, audiences for every cloud.
fn realm(public_key_pem: &str) -> Realm {
    let scopes = [
        "aws-audience",
        "gcp-audience",
        "azure-audience",
        "api-audience",
    ];
    let client = |id: &str, credential| ClientSpec::new(id, credential).optional_scopes(&scopes);
    Realm::new("infra")
        .scope("aws-audience", &["sts.amazonaws.com"])
        .scope("gcp-audience", &[&gcp_audience()])
        .scope("azure-audience", &["api://AzureADTokenExchange"])
        .scope("api-audience", &[API_AUD])
        .client(client("host-file", KcCredential::Secret(SECRET.into())))
        .client(client("host-inline", KcCredential::Secret(INLINE.into())))
        .client(client("host-env", KcCredential::Secret(ENV.into())))
        .client(client("host-hs256", KcCredential::SecretJwt(HS256.into())))
        .client(client(
            "host-es256",
            KcCredential::SignedJwt {
                public_key_pem: public_key_pem.to_owned(),
                algorithm: "ES256".into(),
                key_id: "k1".into(),
            },
        ))
}

fn write(dir: &Path, name: &str, content: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap_or_else(|e| panic!("{name}: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// Every line of key bits of a PEM but the first (the same for every key of a kind).
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// A value formatted with `{:?}` and `{:#?}`, and the name of its type.
trait Formatted {
    fn formatted(&self) -> [String; 2];
    fn type_name(&self) -> &'static str;
}

impl<T: std::fmt::Debug> Formatted for T {
    fn formatted(&self) -> [String; 2] {
        [format!("{self:?}"), format!("{self:#?}")]
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// What each value looked like: its description, its type, one formatting.
#[derive(Default)]
struct Shown(Vec<(&'static str, &'static str, String)>);

impl Shown {
    fn add(&mut self, what: &'static str, value: &dyn Formatted) {
        for text in value.formatted() {
            self.0.push((what, value.type_name(), text));
        }
    }
}

/// Fails naming the secret if any of `shown` holds one of `secrets`.
fn assert_redacted(what: &str, shown: &[String], secrets: &[(String, String)]) {
    for text in shown {
        for (name, secret) in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the Debug output of {what} shows {name}:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn issue_11_no_secret_type_shows_its_secret_under_debug() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap_or_else(|e| panic!("{e}"));
    let realm = realm(&key.public_key_pem());
    let env_sub = realm
        .clients
        .iter()
        .find(|c| c.client_id == "host-env")
        .map(|c| c.service_account_id.clone())
        .unwrap_or_default();
    let kc = KeycloakEmulator::builder(realm)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let issuer = kc.issuer_url();
    let sts = StsEmulator::builder()
        .provider(OidcProvider::new(&issuer, &["sts.amazonaws.com"]))
        .role(Role::new("app", &issuer))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let provider = PoolProvider::new(PROVIDER, &issuer);
    let gcp = GcpEmulator::builder()
        .service_account(ServiceAccount::new(SERVICE_ACCOUNT).bind(&principal_set(provider.pool())))
        .provider(provider)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
    let entra = EntraEmulator::builder()
        .tenant(TENANT)
        .tls(&ca)
        .app(App::new(APP).federated_credential(FederatedCredential::new(&issuer, &env_sub)))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let d = dir.path();
    write(d, "secret", &format!("{SECRET}\n"));
    write(d, "hs256", HS256);
    write(d, "key.pem", &key.serialize_pem());
    write(d, "entra-ca.pem", entra.ca_pem().unwrap_or_default());
    let issuer_block = |name: &str, client: &str, credential: &str| {
        format!("[issuers.{name}]\nurl = \"{issuer}\"\nclient_id = \"{client}\"\n{credential}\n\n")
    };
    let config = [
        issuer_block("file", "host-file", "client_secret_file = \"secret\""),
        issuer_block(
            "inline",
            "host-inline",
            &format!("auth = \"client_secret_post\"\nclient_secret = \"{INLINE}\""),
        ),
        issuer_block("env", "host-env", "client_secret_env = \"KC_SECRET\""),
        issuer_block(
            "hs256",
            "host-hs256",
            "auth = \"client_secret_jwt\"\nclient_secret_file = \"hs256\"",
        ),
        issuer_block(
            "key",
            "host-es256",
            "auth = \"private_key_jwt\"\nprivate_key_file = \"key.pem\"\nalgorithm = \"ES256\"\nkey_id = \"k1\"",
        ),
        format!(
            "[targets.aws]\nissuer = \"file\"\nscope = \"aws-audience\"\n\
             aws = {{ role_arn = \"{}\", region = \"us-east-1\", endpoint_url = \"{}\" }}\n\n",
            sts.role_arn("app"),
            sts.endpoint_url()
        ),
        format!(
            "[targets.gcp]\nissuer = \"inline\"\naudience = \"{}\"\nscope = \"gcp-audience\"\n\n\
             [targets.gcp.gcp]\nprovider = \"{PROVIDER}\"\nproject_id = \"keyfed-test\"\n\
             service_account = \"{SERVICE_ACCOUNT}\"\nsts_url = \"{}\"\niam_url = \"{}\"\n\n",
            gcp_audience(),
            gcp.sts_url(),
            gcp.base_url()
        ),
        format!(
            "[targets.azure]\nissuer = \"env\"\nscope = \"azure-audience\"\n\n\
             [targets.azure.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\n\
             scopes = [\"https://management.azure.com/.default\"]\nauthority_host = \"{}\"\n\
             ca_file = \"entra-ca.pem\"\n\n",
            entra.authority_host()
        ),
        format!(
            "[targets.api]\nissuer = \"key\"\naudience = \"{API_AUD}\"\nscope = \"api-audience\"\n\n\
             [targets.hs256]\nissuer = \"hs256\"\naudience = \"{API_AUD}\"\nscope = \"api-audience\"\n\n\
             [control]\nsocket = \"keyfed.sock\"\n"
        ),
    ]
    .concat();
    write(d, "keyfed.toml", &config);
    let file = d.join("keyfed.toml");
    let env = |name: &str| (name == "KC_SECRET").then(|| ENV.to_owned());
    let host = Host {
        hostname: "web-01".into(),
        is_root: false,
    };

    let mut shown = Shown::default();
    let mut show = |what: &'static str, value: &dyn Formatted| shown.add(what, value);
    let raw = parse(&file, &config).unwrap_or_else(|e| panic!("{e}"));
    show("the raw configuration", &raw);
    let loaded = super::load(&file, &env, &host).unwrap_or_else(|e| panic!("{e}"));
    show("the configuration", &loaded);
    for issuer in loaded.issuers.values() {
        show("an issuer", issuer);
        show("an issuer's settings", &issuer.settings);
        show("a client authentication", &issuer.settings.auth);
    }
    for target in loaded.targets.values() {
        show("a target", target);
    }
    let served = crate::served::Served::build(loaded, Arc::new(SystemClock), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut credentials: Vec<Credential> = Vec::new();
    for (name, outcome) in served.engine.refresh_all().await {
        let issued = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        show("an issued credential", &issued);
        let document = issued.credential.process_document();
        show(
            "the control socket's credential response",
            &crate::control::Response::Credential {
                kind: issued.credential.kind().to_owned(),
                document,
                expires_at: 0,
            },
        );
        credentials.push(issued.credential.clone());
    }
    show("the daemon's served state, credentials held", &served);
    show("the engine", &served.engine);
    for credential in &credentials {
        match credential {
            Credential::Token(t) => show("a Keycloak access token", t),
            Credential::Aws(c) => show("AWS credentials", c),
            Credential::Gcp(t) => show("a Google Cloud token", t),
            Credential::Azure(t) => show("an Azure access token", t),
        }
        show("a credential", credential);
    }
    let kinds: Vec<&str> = credentials.iter().map(Credential::kind).collect();
    for kind in ["token", "aws", "gcp", "azure"] {
        assert!(kinds.contains(&kind), "no {kind} credential: {kinds:?}");
    }
    show("a secret", &SecretString::from(SECRET));

    // Every secret of the run, in every form it takes on the wire.
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (client, secret) in [
        ("host-file", SECRET),
        ("host-inline", INLINE),
        ("host-env", ENV),
        ("host-hs256", HS256),
    ] {
        secrets.push((format!("the secret of {client}"), secret.to_owned()));
        let urlencoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        secrets.push((
            format!("the secret of {client}, form-urlencoded"),
            urlencoded,
        ));
        secrets.push((
            format!("the Basic value of {client}"),
            basic(client, secret),
        ));
    }
    for line in key_lines(&key.serialize_pem()) {
        secrets.push(("a line of the private key".to_owned(), line));
    }
    for token in kc.issued_tokens() {
        let signature = token.rsplit('.').next().unwrap_or_default().to_owned();
        secrets.push(("a Keycloak token's signature".to_owned(), signature));
    }
    for (what, issued) in [
        ("an STS secret", sts.issued_secrets()),
        ("a Google token", gcp.issued_secrets()),
        ("an Entra token", entra.issued_secrets()),
    ] {
        assert!(!issued.is_empty(), "{what}: none issued");
        secrets.extend(issued.into_iter().map(|s| (what.to_owned(), s)));
    }
    for credential in &credentials {
        let parts = match credential {
            Credential::Token(t) => vec![t.expose().to_owned()],
            Credential::Aws(c) => vec![
                c.secret_access_key.expose_secret().to_owned(),
                c.session_token.expose_secret().to_owned(),
            ],
            Credential::Gcp(t) => vec![t.token.expose_secret().to_owned()],
            Credential::Azure(t) => vec![t.token.expose_secret().to_owned()],
        };
        secrets.extend(parts.into_iter().map(|p| ("a credential".to_owned(), p)));
    }
    secrets.retain(|(_, s)| s.len() >= 8);

    for (what, _, text) in &shown.0 {
        assert_redacted(what, std::slice::from_ref(text), &secrets);
    }
    let types: std::collections::BTreeSet<&str> = shown.0.iter().map(|(_, t, _)| *t).collect();
    // The redaction shows, so the check is not looking at empty output.
    let config_shown = &shown
        .0
        .iter()
        .find(|(w, _, _)| *w == "the configuration")
        .map(|(_, _, t)| t.clone())
        .unwrap_or_default();
    assert!(
        config_shown.contains(keyfed_core::REDACTED),
        "{config_shown}"
    );
    report::held(
        "Secret hygiene: Debug output of every secret type",
        "the configuration (raw and loaded: client secrets from a file, inline and the \
         environment, an HS256 secret, an ES256 private key), issuers, client authentication, \
         targets, the engine and the daemon's served state holding credentials, every issued \
         credential (Keycloak token, AWS keys, Google token, Entra token) and the control socket's \
         credential response, each formatted with {:?} and {:#?}: none shows a secret, in any \
         form it takes on the wire; each provider crate has its own such test",
        &format!(
            "{} values of {} types formatted twice, {} secrets checked, 0 found",
            shown.0.len() / 2,
            types.len(),
            secrets.len()
        ),
    );
}
