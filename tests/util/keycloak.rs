//! The real Keycloak server `tests/run` starts (pinned `keycloak-quarkus-dist`, `start-dev`,
//! in-memory database): its address in `KEYFED_TEST_KEYCLOAK_URL`, its bootstrap admin in
//! `KEYFED_TEST_KEYCLOAK_ADMIN` (`user:password`) and its log in `KEYFED_TEST_KEYCLOAK_LOG`; and
//! calls to its admin REST API, through which tests build realms the way the README's Keycloak
//! section tells users to.

use serde_json::{Value, json};

use crate::util::{API_AUD, AWS_AUD, EC_KID, Fixture, JWT_SECRET, RSA_KID, SECRET};

/// The running server, from `tests/run`'s environment.
pub struct Server {
    pub url: String,
    admin: (String, String),
    log: Option<String>,
    pub http: reqwest::Client,
    /// The admin token and when it was fetched: a password grant costs Keycloak a deliberately
    /// slow password hash, so one token serves the calls of the next minute.
    token: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// How long an admin token is reused: `admin-cli` tokens live 60 s.
const ADMIN_TOKEN_REUSE: std::time::Duration = std::time::Duration::from_secs(45);

impl Server {
    /// The server `tests/run` started. Without one the test fails, unless
    /// `KEYFED_TEST_ALLOW_SKIP=1` says to skip it knowingly (then `None`, with a `SKIPPED:` line).
    pub fn from_env(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var("KEYFED_TEST_KEYCLOAK_URL") else {
            super::cannot_run(
                test,
                "no real Keycloak: KEYFED_TEST_KEYCLOAK_URL is unset (tests/run starts one)",
                "run tests/run",
            );
            return None;
        };
        let admin = std::env::var("KEYFED_TEST_KEYCLOAK_ADMIN").unwrap_or_default();
        let (user, password) = admin.split_once(':').unwrap_or_else(|| {
            panic!("{test}: KEYFED_TEST_KEYCLOAK_ADMIN must be user:password (tests/run sets it)")
        });
        Some(Self {
            url,
            admin: (user.to_owned(), password.to_owned()),
            log: std::env::var("KEYFED_TEST_KEYCLOAK_LOG").ok(),
            http: crate::util::http::client(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The last lines of the server's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A token for the admin API, reused while young.
    pub async fn admin_token(&self) -> String {
        let mut cached = self.token.lock().await;
        if let Some((token, at)) = cached.as_ref()
            && at.elapsed() < ADMIN_TOKEN_REUSE
        {
            return token.clone();
        }
        let fetched_at = std::time::Instant::now();
        let answer: Value = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", &self.admin.0),
                ("password", &self.admin.1),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin token: {e}\n{}", self.log_tail()))
            .json()
            .await
            .unwrap_or_else(|e| panic!("admin token: {e}"));
        let token = answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no admin token: {answer}\n{}", self.log_tail()))
            .to_owned();
        *cached = Some((token.clone(), fetched_at));
        token
    }

    /// Calls the admin API at `path` (under `/admin/realms`): its status and JSON body (`Null`
    /// when empty or not JSON).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.admin_token().await;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let mut request = self
            .http
            .request(method.clone(), format!("{}/admin/realms{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs `body` to the admin API at `path`; expects 201 Created.
    pub async fn create(&self, path: &str, body: Value) {
        let (status, answer) = self.admin("POST", path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {answer}\n{}", self.log_tail());
    }

    /// A realm built as the README's Keycloak section says (see [`Clients`]); returns its
    /// issuer URL.
    pub async fn realm(&self, name: &str, keys: &Clients) -> String {
        self.create("", json!({ "realm": name, "enabled": true }))
            .await;
        for (scope, audience) in SCOPES {
            let mappers = match audience {
                Some(audience) => json!([{
                    "name": "audience",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {
                        "included.custom.audience": audience,
                        "access.token.claim": "true",
                        "id.token.claim": "false",
                    },
                }]),
                None => json!([]),
            };
            self.create(
                &format!("/{name}/client-scopes"),
                json!({ "name": scope, "protocol": "openid-connect", "protocolMappers": mappers }),
            )
            .await;
        }
        for client in keys.clients() {
            self.create(&format!("/{name}/clients"), client).await;
        }
        format!("{}/realms/{name}", self.url)
    }
}

/// The GCP provider audience the test realm's `gcp-audience` scope adds.
pub const GCP_AUD: &str = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/onprem/providers/keycloak";
/// The audience Entra ID expects of a federated credential's assertion.
pub const AZURE_AUD: &str = "api://AzureADTokenExchange";

/// The test realm's client scopes: one per cloud or API with an Audience mapper, one with no
/// mapper at all (a common mistake), and one that no client links.
pub const SCOPES: [(&str, Option<&str>); 6] = [
    ("aws-audience", Some(AWS_AUD)),
    ("gcp-audience", Some(GCP_AUD)),
    ("azure-audience", Some(AZURE_AUD)),
    ("api-audience", Some(API_AUD)),
    ("no-mapper", None),
    ("unlinked", Some(API_AUD)),
];

/// The default client scopes Keycloak gives a new client, less `roles`: these clients keep full
/// scope on, so `roles` would add `"account"` to their tokens (`host-roles` keeps it on purpose).
pub const DEFAULT_SCOPES: [&str; 5] = ["web-origins", "acr", "profile", "basic", "email"];

/// The scopes linked to every test client as Optional client scopes.
pub const LINKED: [&str; 5] = [
    "aws-audience",
    "gcp-audience",
    "azure-audience",
    "api-audience",
    "no-mapper",
];

/// The keys the test realm's *Signed JWT* clients register.
pub struct Clients {
    /// An RSA public key as a JWKS (`host-rs256`).
    pub rsa_jwks: String,
    /// An EC P-256 public key as a JWKS (`host-es256`).
    pub ec_jwks: String,
    /// A self-signed certificate of the RSA key, Base64 DER (`host-rs256-cert`).
    pub rsa_certificate: String,
}

impl Clients {
    /// The fixture's keys: its RSA key as a JWKS and as a certificate, its EC key as a JWKS.
    pub fn of(fx: &Fixture) -> Self {
        use base64::Engine as _;
        let pair = rcgen::KeyPair::from_pem(&fx.rsa.private_pem).unwrap_or_else(|e| panic!("{e}"));
        let certificate = rcgen::CertificateParams::new(vec!["host-rs256-cert".to_owned()])
            .and_then(|params| params.self_signed(&pair))
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        Self {
            rsa_jwks: jwks(&fx.rsa.private_pem, jsonwebtoken::Algorithm::RS256, RSA_KID),
            ec_jwks: jwks(&fx.ec.private_pem, jsonwebtoken::Algorithm::ES256, EC_KID),
            rsa_certificate: base64::engine::general_purpose::STANDARD.encode(certificate.der()),
        }
    }

    /// The realm's clients, one per authenticator Keycloak offers: *Client Id and Secret*
    /// (`host-secret`), *Signed JWT* with a JWKS (`host-rs256`, `host-es256`) or a certificate
    /// (`host-rs256-cert`), *Signed JWT with Client Secret* (`host-hs256`); one that keeps the
    /// default `roles` scope (`host-roles`), and one without service accounts.
    fn clients(&self) -> Vec<Value> {
        let secret = |id: &str| json!({ "clientId": id, "clientAuthenticatorType": "client-secret", "secret": SECRET });
        let signed = |id: &str, alg: &str, attributes: Value| {
            let mut client = json!({
                "clientId": id,
                "clientAuthenticatorType": "client-jwt",
                "attributes": attributes,
            });
            client["attributes"]["token.endpoint.auth.signing.alg"] = json!(alg);
            client
        };
        let jwks = |jwks: &str| json!({ "use.jwks.string": "true", "jwks.string": jwks });
        let mut roles = secret("host-roles");
        roles["defaultClientScopes"] = json!([DEFAULT_SCOPES.as_slice(), &["roles"]].concat());
        let mut no_service_account = secret("no-service-account");
        no_service_account["serviceAccountsEnabled"] = json!(false);
        let clients = [
            secret("host-secret"),
            signed("host-rs256", "RS256", jwks(&self.rsa_jwks)),
            signed("host-es256", "ES256", jwks(&self.ec_jwks)),
            signed(
                "host-rs256-cert",
                "RS256",
                json!({ "use.jwks.string": "false", "jwt.credential.certificate": self.rsa_certificate }),
            ),
            json!({
                "clientId": "host-hs256",
                "clientAuthenticatorType": "client-secret-jwt",
                "secret": JWT_SECRET,
                "attributes": { "token.endpoint.auth.signing.alg": "HS256" },
            }),
            roles,
            no_service_account,
        ];
        clients.into_iter().map(confidential).collect()
    }
}

/// `client` as the README tells users to make one: confidential, service accounts on, every
/// browser and password flow off, Keycloak's default scopes less `roles`, the audience scopes
/// linked as Optional (unless `client` says otherwise).
pub fn confidential(mut client: Value) -> Value {
    for (key, value) in [
        ("enabled", json!(true)),
        ("publicClient", json!(false)),
        ("standardFlowEnabled", json!(false)),
        ("implicitFlowEnabled", json!(false)),
        ("directAccessGrantsEnabled", json!(false)),
        ("serviceAccountsEnabled", json!(true)),
        ("defaultClientScopes", json!(DEFAULT_SCOPES)),
        ("optionalClientScopes", json!(LINKED)),
    ] {
        if client.get(key).is_none() {
            client[key] = value;
        }
    }
    client
}

/// The public half of a private key (PEM) as the JWKS a *Signed JWT* client registers.
fn jwks(private_pem: &str, alg: jsonwebtoken::Algorithm, kid: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap_or_else(|e| panic!("{e}"));
    jwk.common.key_id = Some(kid.to_owned());
    // Keycloak ignores a key without `use`.
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    json!({ "keys": [jwk] }).to_string()
}
