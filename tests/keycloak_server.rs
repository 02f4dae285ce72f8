//! The real Keycloak server (issue 8, first part): `tests/run` fetches the pinned
//! `keycloak-quarkus-dist` release with Maven, starts it (`start-dev`, in-memory database) and
//! passes its address in `KEYFED_TEST_KEYCLOAK_URL`, its bootstrap admin in
//! `KEYFED_TEST_KEYCLOAK_ADMIN` (`user:password`) and its log in `KEYFED_TEST_KEYCLOAK_LOG`.
//! A realm is built here through the admin REST API the way the README's Keycloak section tells
//! users to, and one table of scenarios runs against it and against the emulator: the same
//! outcome and the same keyfed message, or the test fails naming the scenario and both answers.

use std::io::Write as _;

use serde_json::{Value, json};

use crate::util::{API_AUD, AWS_AUD, Fixture, JWT_SECRET, SECRET, issuer, target};

/// The running server, from `tests/run`'s environment.
struct Server {
    url: String,
    admin: (String, String),
    log: Option<String>,
    http: reqwest::Client,
}

impl Server {
    /// The server `tests/run` started. Without one the test fails, unless
    /// `KEYFED_TEST_ALLOW_SKIP=1` says to skip it knowingly (then `None`, with a `SKIPPED:` line).
    fn from_env(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var("KEYFED_TEST_KEYCLOAK_URL") else {
            let reason =
                "no real Keycloak: KEYFED_TEST_KEYCLOAK_URL is unset (tests/run starts one)";
            if std::env::var("KEYFED_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
                let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
                return None;
            }
            panic!("{test}: {reason}; run tests/run, or set KEYFED_TEST_ALLOW_SKIP=1 to skip it");
        };
        let admin = std::env::var("KEYFED_TEST_KEYCLOAK_ADMIN").unwrap_or_default();
        let (user, password) = admin.split_once(':').unwrap_or(("admin", "admin"));
        Some(Self {
            url,
            admin: (user.to_owned(), password.to_owned()),
            log: std::env::var("KEYFED_TEST_KEYCLOAK_LOG").ok(),
            http: crate::util::http::client(),
        })
    }

    /// The last lines of the server's log, for a failing test's message.
    fn log_tail(&self) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn admin_token(&self) -> String {
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
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no admin token: {answer}\n{}", self.log_tail()))
            .to_owned()
    }

    /// POSTs `body` to the admin API at `path` (under `/admin/realms`); expects 201 Created.
    async fn create(&self, token: &str, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}/admin/realms{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 201, "POST {path}: {text}\n{}", self.log_tail());
    }

    /// A realm built as the README's Keycloak section says: a client scope per audience with an
    /// Audience mapper (added to the access token), confidential clients with service accounts
    /// on, browser and direct-grant flows off, the scopes linked as Optional — one per way of
    /// authenticating (*Client Id and Secret*, *Signed JWT* with `rsa_jwks` registered as a
    /// JWKS, *Signed JWT with Client Secret*); and one client without service accounts.
    async fn realm(&self, name: &str, rsa_jwks: &str) -> String {
        let token = self.admin_token().await;
        self.create(&token, "", json!({ "realm": name, "enabled": true }))
            .await;
        for (scope, audience) in [("aws-audience", AWS_AUD), ("api-audience", API_AUD)] {
            self.create(
                &token,
                &format!("/{name}/client-scopes"),
                json!({
                    "name": scope,
                    "protocol": "openid-connect",
                    "protocolMappers": [{
                        "name": "audience",
                        "protocol": "openid-connect",
                        "protocolMapper": "oidc-audience-mapper",
                        "config": {
                            "included.custom.audience": audience,
                            "access.token.claim": "true",
                            "id.token.claim": "false",
                        },
                    }],
                }),
            )
            .await;
        }
        let secret = |id: &str, service_accounts: bool| {
            json!({
                "clientId": id,
                "clientAuthenticatorType": "client-secret",
                "secret": SECRET,
                "serviceAccountsEnabled": service_accounts,
            })
        };
        let clients = [
            secret("host-secret", true),
            secret("no-service-account", false),
            json!({
                "clientId": "host-rs256",
                "clientAuthenticatorType": "client-jwt",
                "serviceAccountsEnabled": true,
                "attributes": {
                    "use.jwks.string": "true",
                    "jwks.string": rsa_jwks,
                    "token.endpoint.auth.signing.alg": "RS256",
                },
            }),
            json!({
                "clientId": "host-hs256",
                "clientAuthenticatorType": "client-secret-jwt",
                "secret": JWT_SECRET,
                "serviceAccountsEnabled": true,
                "attributes": { "token.endpoint.auth.signing.alg": "HS256" },
            }),
        ];
        for mut client in clients {
            for (key, value) in [
                ("enabled", json!(true)),
                ("publicClient", json!(false)),
                ("standardFlowEnabled", json!(false)),
                ("implicitFlowEnabled", json!(false)),
                ("directAccessGrantsEnabled", json!(false)),
                (
                    "optionalClientScopes",
                    json!(["aws-audience", "api-audience"]),
                ),
            ] {
                client[key] = value;
            }
            self.create(&token, &format!("/{name}/clients"), client)
                .await;
        }
        format!("{}/realms/{name}", self.url)
    }
}

/// One scenario: a client, how it authenticates, the scope asked for, and what keyfed must say.
struct Scenario {
    name: &'static str,
    client: &'static str,
    auth: &'static str,
    secret: &'static str,
    scope: &'static str,
    audience: &'static str,
    /// `Ok(aud)`: a token with exactly that audience; `Err(text)`: keyfed fails saying it.
    expect: Result<&'static str, &'static str>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "client_secret_basic",
        client: "host-secret",
        auth: "client_secret_basic",
        secret: SECRET,
        scope: "aws-audience",
        audience: AWS_AUD,
        expect: Ok(AWS_AUD),
    },
    Scenario {
        name: "client_secret_post",
        client: "host-secret",
        auth: "client_secret_post",
        secret: SECRET,
        scope: "api-audience",
        audience: API_AUD,
        expect: Ok(API_AUD),
    },
    Scenario {
        name: "private_key_jwt (RS256, key registered as a JWKS)",
        client: "host-rs256",
        auth: "private_key_jwt:RS256",
        secret: SECRET,
        scope: "aws-audience",
        audience: AWS_AUD,
        expect: Ok(AWS_AUD),
    },
    Scenario {
        name: "client_secret_jwt",
        client: "host-hs256",
        auth: "client_secret_jwt",
        secret: SECRET,
        scope: "api-audience",
        audience: API_AUD,
        expect: Ok(API_AUD),
    },
    Scenario {
        name: "wrong secret",
        client: "host-secret",
        auth: "client_secret_basic",
        secret: "not-the-secret",
        scope: "aws-audience",
        audience: AWS_AUD,
        expect: Err(
            "(HTTP 401): unauthorized_client: \"Invalid client or Invalid client credentials\"",
        ),
    },
    Scenario {
        name: "unknown client",
        client: "no-such-client",
        auth: "client_secret_basic",
        secret: SECRET,
        scope: "aws-audience",
        audience: AWS_AUD,
        expect: Err("(HTTP 401): invalid_client: \"Invalid client or Invalid client credentials\""),
    },
    Scenario {
        name: "scope not linked",
        client: "host-secret",
        auth: "client_secret_basic",
        secret: SECRET,
        scope: "gcp-audience",
        audience: AWS_AUD,
        expect: Err("(HTTP 400): invalid_scope: \"Invalid scopes: gcp-audience\""),
    },
    Scenario {
        name: "service accounts disabled",
        client: "no-service-account",
        auth: "client_secret_basic",
        secret: SECRET,
        scope: "aws-audience",
        audience: AWS_AUD,
        expect: Err("unauthorized_client: \"Client not enabled to retrieve service account\""),
    },
];

/// The public half of an RSA key as the JWKS a *Signed JWT* client registers, its `kid` the
/// `key_id` keyfed's test issuers send.
fn jwks(private_pem: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap_or_else(|e| panic!("{e}"));
    jwk.common.key_id = Some("host-key-1".to_owned());
    // Keycloak ignores a key without `use`.
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    json!({ "keys": [jwk] }).to_string()
}

/// What keyfed answered for `scenario` against the issuer at `url`: the token's `aud`, or its
/// error line.
async fn outcome(fx: &Fixture, url: &str, scenario: &Scenario) -> Result<String, String> {
    fx.write("client-secret", scenario.secret);
    fx.write(
        "keyfed.toml",
        &format!(
            "{}{}strict_audience = true\n",
            issuer("corp", scenario.client, scenario.auth),
            target("t", "corp", scenario.audience, scenario.scope)
        )
        .replace("{issuer}", url),
    );
    let run = fx.keyfed(&["token", "t", "--decode"]).await;
    if run.code == Some(0) {
        let decoded: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", scenario.name, run.stdout));
        Ok(decoded["claims"]["aud"]
            .to_string()
            .trim_matches('"')
            .to_owned())
    } else {
        Err(run
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or(&run.stderr)
            .to_owned())
    }
}

fn matches(scenario: &Scenario, got: &Result<String, String>) -> bool {
    match (&scenario.expect, got) {
        (Ok(aud), Ok(got)) => got == aud,
        (Err(text), Err(got)) => got.contains(text),
        _ => false,
    }
}

/// Issue 8: the contract table, against the emulator and against the real server.
#[tokio::test]
async fn the_emulator_and_the_real_keycloak_agree() {
    let Some(server) = Server::from_env("the_emulator_and_the_real_keycloak_agree") else {
        return;
    };
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    let emulated = fx.keycloak().issuer_url();
    // A realm of this run's own: a server kept between runs already has the last one.
    let realm = format!("contract-{}", std::process::id());
    let real = server.realm(&realm, &jwks(&fx.rsa.private_pem)).await;
    let mut table = String::from("| scenario | emulator | real Keycloak |\n|---|---|---|\n");
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        let on_emulator = outcome(&fx, &emulated, scenario).await;
        let on_server = outcome(&fx, &real, scenario).await;
        let mark = |got: &Result<String, String>| {
            if matches(scenario, got) { "✓" } else { "✗" }
        };
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            scenario.name,
            mark(&on_emulator),
            mark(&on_server)
        ));
        if !matches(scenario, &on_emulator) || !matches(scenario, &on_server) {
            failures.push(format!(
                "{}: expected {:?}\n  emulator: {on_emulator:?}\n  real:     {on_server:?}",
                scenario.name, scenario.expect
            ));
        }
    }
    // Past the harness's capture: the run's output shows both columns.
    let _ = writeln!(std::io::stderr(), "Keycloak contract ({real}):\n{table}");
    assert!(
        failures.is_empty(),
        "{}\n--- server log ---\n{}",
        failures.join("\n"),
        server.log_tail()
    );
}
