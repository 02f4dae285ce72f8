//! The emulator on the wire, as Azure SDKs and MSAL see it: the exact parameters, response and
//! error shapes, discovery documents and credential rules, without keyfed's client in between
//! (issue 10).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyfed_core::clock::{Clock, ManualClock, unix_seconds};
use keyfed_core::emulator::IssuesSecrets as _;
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
use serde_json::{Value, json};

use super::*;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
const MI: &str = "5f0c2a0e-1b1c-4a2b-9c3d-2e4f5a6b7c8d";
const SUB: &str = "6f1c2a0e-0000-4000-8000-000000000001";
const ARM: &str = "https://management.azure.com/.default";

struct Wire {
    clock: ManualClock,
    kc: KeycloakEmulator,
    entra: EntraEmulator,
    http: reqwest::Client,
}

async fn wire(apps: impl FnOnce(&str) -> Vec<App>) -> Wire {
    let clock = ManualClock::starting_now();
    let realm =
        Realm::new("infra").client(ClientSpec::new("c", Credential::Secret("s".to_owned())));
    let kc = KeycloakEmulator::builder(realm)
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut entra = EntraEmulator::builder()
        .tenant(TENANT)
        .domain("contoso.onmicrosoft.com")
        .resource("api://my-api")
        .clock(Arc::new(clock.clone()));
    for app in apps(&kc.issuer_url()) {
        entra = entra.app(app);
    }
    let entra = entra.start().await.unwrap_or_else(|e| panic!("{e}"));
    Wire {
        clock,
        kc,
        entra,
        http: reqwest::Client::new(),
    }
}

fn trusting(issuer: &str) -> Vec<App> {
    vec![
        App::new(APP).federated_credential(FederatedCredential::new(issuer, SUB)),
        App::managed_identity(MI).federated_credential(FederatedCredential::new(issuer, SUB)),
    ]
}

impl Wire {
    fn assertion(&self, sub: &str) -> String {
        let now = unix_seconds(self.clock.now());
        self.kc
            .sign(&json!({
                "iss": self.kc.issuer_url(),
                "aud": AUDIENCE,
                "sub": sub,
                "iat": now,
                "exp": now + 300,
            }))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn form(&self, client_id: &str, scope: &str) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", client_id.to_owned()),
            ("scope", scope.to_owned()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion", self.assertion(SUB)),
            ("grant_type", "client_credentials".to_owned()),
        ]
    }

    async fn post(&self, tenant: &str, form: &[(&'static str, String)]) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/{tenant}/oauth2/v2.0/token",
                self.entra.authority_host()
            ))
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.entra.authority_host()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// Entra's error shape, whole: every field, the code in the description, the trace at its end.
fn assert_entra_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{body}"
    );
    for field in ["trace_id", "correlation_id", "timestamp"] {
        let value = body[field].as_str().unwrap_or_default();
        assert!(!value.is_empty(), "{field}: {body}");
        assert!(description.contains(value), "{field}: {body}");
    }
    assert!(
        body["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains(' '))
    );
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
}

#[tokio::test]
async fn issue_10_a_token_answer_is_entras_shape_for_the_resource() {
    let w = wire(trusting).await;
    let (status, body) = w.post(TENANT, &w.form(APP, ARM)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap_or_default();
    let claims = claims_of(token);
    let now = unix_seconds(w.clock.now());
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert_eq!(claims["appid"], APP);
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(
        (claims["iat"].as_u64(), claims["exp"].as_u64()),
        (Some(now), Some(now + 3599))
    );
    assert!(claims.get("xms_mirid").is_none());
    let info = w
        .entra
        .token_info(token)
        .unwrap_or_else(|| panic!("not issued"));
    assert_eq!((info.scope.as_str(), info.subject.as_str()), (ARM, SUB));
    assert!(
        w.entra
            .issued_secrets()
            .iter()
            .any(|s| token.ends_with(s.as_str()))
    );

    // A managed identity, by the tenant's domain, for an API of the tenant's own.
    let (status, body) = w
        .post(
            "contoso.onmicrosoft.com",
            &w.form(MI, "api://my-api/.default"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap_or_default());
    assert_eq!(claims["aud"], "api://my-api");
    assert!(
        claims["xms_mirid"]
            .as_str()
            .is_some_and(|m| m.ends_with(MI))
    );
    assert_eq!(w.entra.token_calls(), 2);
    assert_eq!(w.entra.control().hits("/oauth2/v2.0/token"), 2);
}

#[tokio::test]
async fn issue_10_refusals_are_entras_json_with_its_words() {
    let w = wire(trusting).await;
    let (status, body) = w.post("not-a-tenant.example.com", &w.form(APP, ARM)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_tenant", 90002);
    let (_, body) = w.post("junk", &w.form(APP, ARM)).await;
    assert_entra_error(&body, "invalid_request", 900023);

    let mut form = w.form(APP, ARM);
    form.retain(|(k, _)| *k != "scope");
    let (_, body) = w.post(TENANT, &form).await;
    assert_entra_error(&body, "invalid_request", 900144);
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("'scope'"))
    );

    let mut form = w.form(APP, ARM);
    form.retain(|(k, _)| *k != "client_assertion");
    let (status, body) = w.post(TENANT, &form).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000218);

    let mut form = w.form(APP, ARM);
    form.push(("grant_type", "password".to_owned()));
    form.retain(|(k, v)| *k != "grant_type" || v == "password");
    let (_, body) = w.post(TENANT, &form).await;
    assert_entra_error(&body, "unsupported_grant_type", 70003);

    let (_, body) = w.post(TENANT, &w.form("nobody", ARM)).await;
    assert_entra_error(&body, "unauthorized_client", 700016);

    let (_, body) = w
        .post(
            TENANT,
            &w.form(APP, &format!("{ARM} https://vault.azure.net/.default")),
        )
        .await;
    assert_entra_error(&body, "invalid_scope", 70011);
    let (_, body) = w
        .post(
            TENANT,
            &w.form(APP, "https://graph.microsoft.com/User.Read.All"),
        )
        .await;
    assert_entra_error(&body, "invalid_scope", 1002012);
    let (_, body) = w
        .post(TENANT, &w.form(APP, "https://nothing.example.com/.default"))
        .await;
    assert_entra_error(&body, "invalid_resource", 500011);

    let mut form = w.form(APP, ARM);
    form.retain(|(k, _)| *k != "client_assertion");
    form.push(("client_assertion", "not.a.jwt".to_owned()));
    let (_, body) = w.post(TENANT, &form).await;
    assert_entra_error(&body, "invalid_request", 50027);

    let mut form = w.form(APP, ARM);
    form.retain(|(k, _)| *k != "client_assertion");
    form.push(("client_assertion", w.assertion("other")));
    let (_, body) = w.post(TENANT, &form).await;
    assert_entra_error(&body, "invalid_client", 700213);
    // Older messages put the trace on lines of their own, newer ones on the same line.
    assert!(
        !body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("\r\n")
    );
    let (_, body) = w.post("junk", &w.form(APP, ARM)).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("\r\nTrace ID: ")
    );
}

#[tokio::test]
async fn issue_10_an_issuer_whose_keys_cannot_be_fetched_is_aadsts50166() {
    // The credential names an issuer that is not there; the token claims it.
    let dead = "http://127.0.0.1:9/realms/gone";
    let w = wire(|_| vec![App::new(APP).federated_credential(FederatedCredential::new(dead, SUB))])
        .await;
    let now = unix_seconds(w.clock.now());
    let token = w
        .kc
        .sign(&json!({ "iss": dead, "aud": AUDIENCE, "sub": SUB, "iat": now, "exp": now + 300 }))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut form = w.form(APP, ARM);
    form.retain(|(k, _)| *k != "client_assertion");
    form.push(("client_assertion", token));
    let (_, body) = w.post(TENANT, &form).await;
    assert_entra_error(&body, "invalid_request", 50166);
}

#[tokio::test]
async fn issue_10_credentials_propagate_and_are_limited_to_twenty() {
    let w = wire(|_| vec![App::new(APP)]).await;
    let (_, body) = w.post(TENANT, &w.form(APP, ARM)).await;
    assert_entra_error(&body, "invalid_request", 70021);
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&format!(
            "Assertion Issuer: '{}'. Assertion Subject: '{SUB}'. Assertion Audience: '{AUDIENCE}'.",
            w.kc.issuer_url()
        )),
        "{description}"
    );
    w.entra
        .add_federated_credential(APP, FederatedCredential::new(&w.kc.issuer_url(), SUB), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, body) = w.post(TENANT, &w.form(APP, ARM)).await;
    assert_entra_error(&body, "invalid_request", 70021);
    let (status, body) = w.post(TENANT, &w.form(APP, ARM)).await;
    assert_eq!(status, 200, "{body}");
    for i in 1..MAX_FEDERATED_CREDENTIALS {
        w.entra
            .add_federated_credential(
                APP,
                FederatedCredential::new("https://x", &i.to_string()),
                0,
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let full =
        w.entra
            .add_federated_credential(APP, FederatedCredential::new("https://x", "21"), 0);
    assert!(full.is_err_and(|e| e.contains("20")));
    let mut app = App::new(APP);
    for i in 0..=MAX_FEDERATED_CREDENTIALS {
        app = app.federated_credential(FederatedCredential::new("https://x", &i.to_string()));
    }
    let refused = EntraEmulator::builder().app(app).start().await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn issue_10_msal_finds_the_token_endpoint_through_discovery() {
    let w = wire(trusting).await;
    let base = w.entra.authority_host();
    let (status, doc) = w
        .get(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["token_endpoint"], w.entra.token_url());
    assert_eq!(doc["issuer"], format!("{base}/{TENANT}/v2.0"));
    let (status, body) = w
        .get("/nobody.example.com/v2.0/.well-known/openid-configuration")
        .await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_tenant", 90002);
    let (status, doc) = w
        .get(&format!(
            "/common/discovery/instance?api-version=1.1&authorization_endpoint={base}/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
        ))
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        doc["tenant_discovery_endpoint"],
        format!("{base}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    );
    // Time moves with the injected clock.
    w.clock.advance(Duration::from_secs(60));
    let (_, body) = w.post(TENANT, &w.form(APP, ARM)).await;
    let exp = claims_of(body["access_token"].as_str().unwrap_or_default())["exp"].as_u64();
    assert_eq!(exp, Some(unix_seconds(w.clock.now()) + 3599));
}
