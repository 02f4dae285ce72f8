//! The client against the Entra emulator end to end, over TLS with the emulator's CA as the
//! target's `ca_file`, with subject tokens from the Keycloak emulator (a realm scope whose
//! audience mapper adds `api://AzureADTokenExchange`): the operator's story of a host trading
//! its service-account token for Azure access tokens, and each way that goes wrong — with
//! Entra's `AADSTS` words, the hint, and the advice keyfed gives the engine (issue 10). No
//! secret may show in any error.

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::{Clock, ManualClock, unix_seconds};
use keyfed_core::emulator::{Fault, IssuesSecrets as _, TestCa};
use keyfed_core::exchange::{Advice, Advise as _, Exchange as _, Side, SlotKey};
use keyfed_core::http::HttpSettings;
use keyfed_core::{ExposeSecret as _, SecretString};
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
use keyfed_keycloak::{
    AssertionAudience, ClientAuth, IssuerSettings, KeycloakClient, TokenRequest,
};
use url::Url;

use crate::config::{AUDIENCE, AzureTarget, DEFAULT_SCOPE};
use crate::emulator::{App, EntraEmulator, FederatedCredential};
use crate::{AzureError, AzureToken, EntraClient, EntraExchange};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
const KC_CLIENT: &str = "host-web-01";
const VAULT: &str = "https://vault.azure.net/.default";

const CLOUD: Advice = Advice::Stop { side: Side::Cloud };
const CONFIG: Advice = Advice::Stop { side: Side::Config };
const ISSUER: Advice = Advice::Stop { side: Side::Issuer };

/// The Entra side: the app, given the Keycloak issuer URL and the service account's `sub`.
type Apps = fn(&str, &str) -> Vec<App>;

/// The usual setup: the app trusts the Keycloak service account.
fn trusting(issuer: &str, sub: &str) -> Vec<App> {
    vec![App::new(APP).federated_credential(FederatedCredential::new(issuer, sub))]
}

struct World {
    clock: ManualClock,
    kc: KeycloakEmulator,
    entra: EntraEmulator,
    /// The Keycloak service account's `sub`.
    sub: String,
    ca_file: tempfile::NamedTempFile,
}

async fn world(apps: Apps) -> World {
    let clock = ManualClock::starting_now();
    let client = ClientSpec::new(KC_CLIENT, Credential::Secret("kc-secret".to_owned()))
        .optional_scopes(&["azure-audience"]);
    let sub = client.service_account_id.clone();
    let realm = Realm::new("infra")
        .scope("azure-audience", &[AUDIENCE])
        .client(client);
    let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
    let kc = KeycloakEmulator::builder(realm)
        .clock(Arc::new(clock.clone()))
        .tls(&ca)
        .start()
        .await
        .unwrap_or_else(|e| panic!("keycloak emulator: {e}"));
    let mut entra = EntraEmulator::builder()
        .tenant(TENANT)
        .domain("contoso.onmicrosoft.com")
        .clock(Arc::new(clock.clone()))
        .tls(&ca);
    for app in apps(&kc.issuer_url(), &sub) {
        entra = entra.app(app);
    }
    let entra = entra
        .start()
        .await
        .unwrap_or_else(|e| panic!("entra emulator: {e}"));
    let ca_file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        ca_file.path(),
        entra.ca_pem().unwrap_or_else(|| panic!("no CA")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    World {
        clock,
        kc,
        entra,
        sub,
        ca_file,
    }
}

impl World {
    fn target(&self) -> AzureTarget {
        AzureTarget {
            tenant_id: TENANT.to_owned(),
            client_id: APP.to_owned(),
            scopes: vec![DEFAULT_SCOPE.to_owned(), VAULT.to_owned()],
            authority_host: Url::parse(&self.entra.authority_host())
                .unwrap_or_else(|e| panic!("{e}")),
            http: HttpSettings {
                ca_file: Some(self.ca_file.path().to_owned()),
                timeout: Duration::from_secs(10),
                ..HttpSettings::default()
            },
        }
    }

    fn client_for(&self, target: AzureTarget) -> EntraClient {
        EntraClient::new(target)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_clock(Arc::new(self.clock.clone()))
    }

    fn client(&self) -> EntraClient {
        self.client_for(self.target())
    }

    /// A Keycloak token for `scope` (an audience mapper's scope), fetched as keyfed does.
    async fn token_for(&self, scope: &str) -> SecretString {
        let url = Url::parse(&self.kc.issuer_url()).unwrap_or_else(|e| panic!("{e}"));
        let client = KeycloakClient::new(
            IssuerSettings {
                name: "corp".to_owned(),
                url,
                client_id: KC_CLIENT.to_owned(),
                auth: ClientAuth::SecretBasic(SecretString::from("kc-secret")),
                token_endpoint: None,
                assertion_audience: AssertionAudience::default(),
                verify_signature: true,
                http: HttpSettings {
                    ca_file: Some(self.ca_file.path().to_owned()),
                    ..HttpSettings::default()
                },
            },
            Arc::new(self.clock.clone()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let token = client
            .fetch_token(&TokenRequest {
                audience: AUDIENCE.to_owned(),
                strict_audience: false,
                scope: Some(scope.to_owned()),
                resource: None,
                audience_parameter: false,
                min_remaining: Duration::from_secs(30),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        token.secret().clone()
    }

    async fn token(&self) -> SecretString {
        self.token_for("azure-audience").await
    }

    /// A token the realm signs (its key, its `kid`) with these claims over the usual ones.
    fn signed(&self, extra: serde_json::Value) -> SecretString {
        let now = unix_seconds(self.clock.now());
        let mut claims = serde_json::json!({
            "iss": self.kc.issuer_url(),
            "aud": AUDIENCE,
            "sub": self.sub,
            "azp": KC_CLIENT,
            "iat": now,
            "exp": now + 300,
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        SecretString::from(
            self.kc
                .sign(&claims)
                .unwrap_or_else(|e| panic!("sign: {e}")),
        )
    }

    /// Fails the test when the error shows the subject token or anything Entra issued.
    fn assert_no_secret_in(&self, error: &AzureError, subject: &SecretString) {
        let shown = format!("{error} {error:?}");
        let jwt = subject.expose_secret();
        assert!(!shown.contains(jwt), "the subject token leaked: {shown}");
        if let Some((_, signature)) = jwt.rsplit_once('.') {
            assert!(!shown.contains(signature), "its signature leaked: {shown}");
        }
        for secret in self.entra.issued_secrets() {
            assert!(!shown.contains(&secret), "an issued token leaked: {shown}");
        }
        assert!(!shown.contains("eyJ"), "a JWT leaked: {shown}");
    }

    /// The refusal of a token request for `scope`, checked for secrets.
    async fn refused_for(&self, subject: &SecretString, scope: &str) -> AzureError {
        match self.client().token(subject, scope).await {
            Ok(token) => panic!("expected a refusal, got {token:?}"),
            Err(e) => {
                self.assert_no_secret_in(&e, subject);
                e
            }
        }
    }

    async fn refused(&self, subject: &SecretString) -> AzureError {
        self.refused_for(subject, DEFAULT_SCOPE).await
    }
}

fn text(e: &AzureError) -> String {
    e.to_string()
}

#[tokio::test]
async fn issue_10_a_host_gets_an_access_token_with_the_exact_expiry_entra_gave() {
    let w = world(trusting).await;
    let subject = w.token().await;
    let token = w
        .client()
        .token(&subject, DEFAULT_SCOPE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(token.scope, DEFAULT_SCOPE);
    assert_eq!(token.resource(), "https://management.azure.com");
    assert_eq!(
        (token.tenant_id.as_str(), token.client_id.as_str()),
        (TENANT, APP)
    );
    // expires_in 3599, counted from just before the request (the clock stands still).
    assert_eq!(token.expires_at, w.clock.now() + Duration::from_secs(3599));
    let info = w
        .entra
        .token_info(token.token.expose_secret())
        .unwrap_or_else(|| panic!("the emulator did not issue {token:?}"));
    assert_eq!(info.client_id, APP);
    assert_eq!(info.resource, "https://management.azure.com");
    assert_eq!(info.subject, w.sub);
    assert_eq!(info.expires_at, token.expires_at);
    assert_eq!(w.entra.token_calls(), 1);
    assert!(!format!("{token:?}").contains(token.token.expose_secret()));

    // Each resource is its own token, by the domain name of the tenant too.
    let mut target = w.target();
    target.tenant_id = "contoso.onmicrosoft.com".to_owned();
    let vault = w
        .client_for(target)
        .token(&subject, VAULT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vault.resource(), "https://vault.azure.net");
    assert_ne!(vault.token.expose_secret(), token.token.expose_secret());
    assert_eq!(w.entra.token_calls(), 2);
}

#[tokio::test]
async fn issue_10_the_exchange_contract_gives_the_first_scope_and_resource_slots() {
    let w = world(trusting).await;
    let subject = w.token().await;
    let exchange = EntraExchange { client: w.client() };
    let main: AzureToken = exchange
        .exchange(&subject)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(main.scope, DEFAULT_SCOPE);
    let slot = SlotKey::Resource(VAULT.to_owned());
    assert!(exchange.has_slot(&slot));
    assert!(!exchange.has_slot(&SlotKey::Resource("https://vault.azure.net".to_owned())));
    assert!(!exchange.has_slot(&SlotKey::SubjectToken));
    let vault = exchange
        .exchange_slot(&subject, &slot)
        .unwrap_or_else(|| panic!("no slot"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vault.resource(), "https://vault.azure.net");
    assert!(
        exchange
            .exchange_slot(&subject, &SlotKey::SubjectToken)
            .is_none()
    );
}

#[tokio::test]
async fn issue_10_no_federated_credential_prints_what_one_must_hold_and_backs_off() {
    let w = world(|_, _| vec![App::new(APP)]).await;
    let subject = w.token().await;
    let e = w.refused(&subject).await;
    let shown = text(&e);
    assert_eq!(e.code(), Some(70021));
    assert!(
        shown.contains(
            "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '"
        ),
        "{shown}"
    );
    let hint = e.hint().unwrap_or_default();
    for part in [
        format!("issuer \"{}\"", w.kc.issuer_url()),
        format!("subject \"{}\"", w.sub),
        format!("audience \"{AUDIENCE}\""),
        "propagated".to_owned(),
    ] {
        assert!(hint.contains(&part), "{part}: {hint}");
    }
    // Entra's trace stays apart from its words, for support.
    assert!(shown.contains("\n  Entra trace ID "), "{shown}");
    assert!(!shown.contains("\r"), "{shown:?}");
    assert_eq!(e.advice(), Advice::Backoff);
}

#[tokio::test]
async fn issue_10_a_freshly_created_credential_passes_once_it_has_propagated() {
    let w = world(|iss, sub| {
        vec![App::new(APP).new_federated_credential(FederatedCredential::new(iss, sub), 2)]
    })
    .await;
    let subject = w.token().await;
    for _ in 0..2 {
        let e = w.refused(&subject).await;
        assert_eq!(
            (e.code(), e.advice()),
            (Some(70021), Advice::Backoff),
            "{e}"
        );
    }
    w.client()
        .token(&subject, DEFAULT_SCOPE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.entra.token_calls(), 3);
}

#[tokio::test]
async fn issue_10_an_issuer_with_a_trailing_slash_is_named_with_the_tokens_iss() {
    let w = world(|iss, sub| {
        vec![App::new(APP).federated_credential(FederatedCredential::new(&format!("{iss}/"), sub))]
    })
    .await;
    let subject = w.token().await;
    let e = w.refused(&subject).await;
    let shown = text(&e);
    assert!(
        shown.contains(&format!(
            "AADSTS700211: No matching federated identity record found for presented assertion issuer '{}'",
            w.kc.issuer_url()
        )),
        "{shown}"
    );
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("trailing slash") && hint.contains(&format!("\"{}\"", w.kc.issuer_url())),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);
}

#[tokio::test]
async fn issue_10_a_subject_is_compared_case_sensitively() {
    let w = world(|iss, sub| {
        vec![
            App::new(APP)
                .federated_credential(FederatedCredential::new(iss, &sub.to_ascii_uppercase())),
        ]
    })
    .await;
    let subject = w.token().await;
    let e = w.refused(&subject).await;
    assert_eq!(e.code(), Some(7002138), "{e}");
    assert!(text(&e).contains("case-insensitive comparison, but not with case-sensitive"));
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("case-sensitively") && hint.contains(&format!("\"{}\"", w.sub)),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);

    let other = world(|iss, _| {
        vec![App::new(APP).federated_credential(FederatedCredential::new(iss, "someone-else"))]
    })
    .await;
    let subject = other.token().await;
    let e = other.refused(&subject).await;
    assert!(
        text(&e).contains(&format!(
            "AADSTS700213: No matching federated identity record found for presented assertion subject '{}'",
            other.sub
        )),
        "{e}"
    );
    assert!(e.hint().unwrap_or_default().contains(&other.sub));
    assert_eq!(e.advice(), CLOUD);
}

#[tokio::test]
async fn issue_10_a_token_without_the_exchange_audience_is_the_issuers_to_fix() {
    let w = world(trusting).await;
    // keyfed's Keycloak client refuses such a token itself; one made by hand reaches Entra.
    let subject = w.signed(serde_json::json!({ "aud": ["account", "api.example.com"] }));
    let e = w.refused(&subject).await;
    assert_eq!(e.code(), Some(700212), "{e}");
    assert!(text(&e).contains("presented assertion audience"), "{e}");
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("audience mapper") && hint.contains(AUDIENCE),
        "{hint}"
    );
    assert_eq!(e.advice(), ISSUER);
}

#[tokio::test]
async fn issue_10_an_assertion_outside_its_validity_asks_for_a_fresh_one() {
    let w = world(trusting).await;
    let now = unix_seconds(w.clock.now());
    let expired = w.signed(serde_json::json!({ "iat": now - 1200, "exp": now - 900 }));
    let e = w.refused(&expired).await;
    assert!(
        text(&e).contains("AADSTS700024: Client assertion is not within its valid time range."),
        "{e}"
    );
    assert!(e.hint().unwrap_or_default().contains("clock"));
    assert_eq!(e.advice(), Advice::FreshSubjectToken);
    // Not yet valid, beyond the five minutes of skew: the same.
    let early = w.signed(serde_json::json!({ "nbf": now + 900 }));
    let e = w.refused(&early).await;
    assert_eq!(
        (e.code(), e.advice()),
        (Some(700024), Advice::FreshSubjectToken)
    );
    // A real token, once the clock has moved past it and the skew.
    let subject = w.token().await;
    w.clock.advance(Duration::from_secs(300 + 301));
    let e = w.refused(&subject).await;
    assert_eq!(e.code(), Some(700024), "{e}");
}

#[tokio::test]
async fn issue_10_an_assertion_living_too_long_is_the_issuers_to_fix() {
    let w = world(trusting).await;
    let now = unix_seconds(w.clock.now());
    let long = w.signed(serde_json::json!({ "exp": now + 26 * 3600 }));
    let e = w.refused(&long).await;
    assert!(
        text(&e).contains(
            "AADSTS70023: External OIDC Provider token must have a lifetime of less than or equal to 1.01:00:00."
        ),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("Access Token Lifespan")
    );
    assert_eq!(e.advice(), ISSUER);
    // Without iat, Entra counts from 0.
    let mut claims = serde_json::json!({
        "iss": w.kc.issuer_url(), "aud": AUDIENCE, "sub": w.sub, "exp": now + 300,
    });
    let no_iat = SecretString::from(w.kc.sign(&claims).unwrap_or_else(|e| panic!("{e}")));
    let e = w.refused(&no_iat).await;
    assert!(text(&e).contains("Token issued at 0."), "{e}");
    // A day is fine.
    claims["iat"] = now.into();
    claims["exp"] = (now + 24 * 3600).into();
    let day = SecretString::from(w.kc.sign(&claims).unwrap_or_else(|e| panic!("{e}")));
    w.client()
        .token(&day, DEFAULT_SCOPE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn issue_10_only_rs256_is_accepted() {
    let w = world(trusting).await;
    let now = unix_seconds(w.clock.now());
    let claims = serde_json::json!({
        "iss": w.kc.issuer_url(), "aud": AUDIENCE, "sub": w.sub, "iat": now, "exp": now + 300,
    });
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"shared"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = w.refused(&SecretString::from(hs256)).await;
    assert!(text(&e).contains("AADSTS5002738"), "{e}");
    assert!(e.hint().unwrap_or_default().contains("RS256"));
    assert_eq!(e.advice(), ISSUER);
    // RS256 by a key the issuer does not publish.
    let pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap_or_else(|e| panic!("{e}"));
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = w.refused(&SecretString::from(foreign)).await;
    assert_eq!(
        (e.code(), e.advice()),
        (Some(700027), Advice::FreshSubjectToken),
        "{e}"
    );
}

#[tokio::test]
async fn issue_10_the_app_tenant_and_scope_are_named_as_keyfed_sent_them() {
    let w = world(trusting).await;
    let subject = w.token().await;

    let mut target = w.target();
    target.client_id = "00000000-0000-0000-0000-000000000001".to_owned();
    let e = w
        .client_for(target)
        .token(&subject, DEFAULT_SCOPE)
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    w.assert_no_secret_in(&e, &subject);
    assert!(text(&e).contains("AADSTS700016: Application with identifier '00000000-0000-0000-0000-000000000001' was not found in the directory"), "{e}");
    assert!(e.hint().unwrap_or_default().contains("client_id"), "{e}");
    assert_eq!(e.advice(), CONFIG);

    let mut target = w.target();
    target.tenant_id = "11111111-2222-3333-4444-555555555555".to_owned();
    let e = w
        .client_for(target)
        .token(&subject, DEFAULT_SCOPE)
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(
        text(&e).contains("AADSTS90002: Tenant '11111111-2222-3333-4444-555555555555' not found."),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("login.microsoftonline.us"),
        "{e}"
    );
    assert_eq!(e.advice(), CONFIG);

    let e = w
        .refused_for(&subject, "https://management.azure.com/user_impersonation")
        .await;
    assert_eq!(e.code(), Some(1002012), "{e}");
    assert!(e.hint().unwrap_or_default().contains("/.default"), "{e}");
    assert_eq!(e.advice(), CONFIG);

    let e = w.refused_for(&subject, "/.default").await;
    assert!(text(&e).contains("AADSTS70011: "), "{e}");
    assert_eq!(e.advice(), CONFIG);

    let e = w
        .refused_for(&subject, "https://nothing.example.com/.default")
        .await;
    assert!(
        text(&e).contains(
            "AADSTS500011: The resource principal named https://nothing.example.com was not found"
        ),
        "{e}"
    );
    assert_eq!(e.advice(), CONFIG);

    let e = w.refused_for(&subject, "a b").await;
    assert!(matches!(e, AzureError::InvalidRequest { .. }), "{e}");
    assert_eq!(e.advice(), CONFIG);
}

#[tokio::test]
async fn issue_10_outages_and_broken_answers_back_off_without_leaking() {
    let w = world(trusting).await;
    let subject = w.token().await;
    let path = "/oauth2/v2.0/token";
    let throttled = serde_json::json!({
        "error": "temporarily_unavailable",
        "error_description": "AADSTS50196: The server terminated an operation because it encountered a client request loop.",
        "error_codes": [50196],
    })
    .to_string();
    let cases: Vec<(Fault, &str)> = vec![
        (
            Fault::Status {
                status: 429,
                body: throttled,
            },
            "AADSTS50196",
        ),
        (
            Fault::Status {
                status: 503,
                body: "<html>Service Unavailable</html>".to_owned(),
            },
            "answered HTTP 503: <html>Service Unavailable</html>",
        ),
        (
            Fault::Status {
                status: 500,
                body: serde_json::json!({"error":"server_error","error_description":"AADSTS90033: A transient error has occurred. Please try again."}).to_string(),
            },
            "AADSTS90033",
        ),
        (Fault::Malformed, "withheld because they may hold a token"),
        (Fault::Drop, "cannot reach Entra ID"),
        (
            Fault::Status {
                status: 200,
                body: r#"{"token_type":"Bearer","expires_in":"99999999999999999999","access_token":"eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2lnbmF0dXJlLXNlY3JldA"}"#.to_owned(),
            },
            "is not a whole number of seconds",
        ),
        (
            Fault::Status {
                status: 200,
                body: r#"{"token_type":"Bearer","expires_in":31536000,"access_token":"eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2lnbmF0dXJlLXNlY3JldA"}"#.to_owned(),
            },
            "more than 24 hours",
        ),
        (
            Fault::Status {
                status: 200,
                body: r#"{"token_type":"Bearer","expires_in":3599}"#.to_owned(),
            },
            "it has no access_token",
        ),
    ];
    for (fault, says) in cases {
        w.entra.control().inject(path, fault.clone(), Some(1));
        let e = w.refused(&subject).await;
        assert!(text(&e).contains(says), "{fault:?}: {e}");
        assert!(!text(&e).contains("c2lnbmF0dXJlLXNlY3JldA"), "{e}");
        assert_eq!(e.advice(), Advice::Backoff, "{fault:?}: {e}");
    }
    // A 200 whose expires_in is a string of digits is a token.
    w.entra.control().inject(
        path,
        Fault::Status {
            status: 200,
            body: r#"{"token_type":"Bearer","expires_in":"4742","ext_expires_in":"4742","access_token":"eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln"}"#.to_owned(),
        },
        Some(1),
    );
    let token = w
        .client()
        .token(&subject, DEFAULT_SCOPE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(token.expires_at, w.clock.now() + Duration::from_secs(4742));
    // A 4xx that is not Entra's voice: the authority host names something else.
    w.entra.control().inject(
        path,
        Fault::Status {
            status: 404,
            body: "<html>no such page</html>".to_owned(),
        },
        Some(1),
    );
    let e = w.refused(&subject).await;
    assert_eq!(e.advice(), CONFIG, "{e}");
}

#[tokio::test]
async fn issue_10_an_untrusted_certificate_says_to_set_ca_file() {
    let w = world(trusting).await;
    let subject = w.token().await;
    let mut target = w.target();
    target.http.ca_file = None;
    let e = w
        .client_for(target)
        .token(&subject, DEFAULT_SCOPE)
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(text(&e).contains("set ca_file"), "{e}");
    assert_eq!(e.advice(), Advice::Backoff);
    assert_eq!(w.entra.token_calls(), 0);
}

#[tokio::test]
async fn issue_10_plain_http_is_refused_to_a_host_that_is_not_loopback() {
    let w = world(trusting).await;
    let mut target = w.target();
    target.authority_host =
        Url::parse("http://login.example.com").unwrap_or_else(|e| panic!("{e}"));
    let e = EntraClient::new(target)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(text(&e).contains("plain http://"), "{e}");
    assert_eq!(e.advice(), CONFIG);
}
