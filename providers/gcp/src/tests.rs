//! The client against the GCP emulator end to end, with subject tokens from the Keycloak
//! emulator: the operator's story of a host trading its service-account token for a federated
//! token, a service account's access token and ID token, and each way that goes wrong — with
//! Google's words, the hint, and the advice keyfed gives the engine. No secret may show in any
//! error.

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

use crate::config::{CLOUD_PLATFORM, GcpTarget};
use crate::emulator::{
    GcpEmulator, GoogleApi, IssuedKind, PoolProvider, ServiceAccount, principal,
};
use crate::{GcpClient, GcpError, GcpExchange, GcpToken, GcpTokenKind};

const PROJECT_NUMBER: &str = "123456789012";
const POOL: &str = "projects/123456789012/locations/global/workloadIdentityPools/onprem";
const PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak";
const SA: &str = "app@my-project.iam.gserviceaccount.com";
/// A service account that exists, bound to nobody: a delegation chain's first hop.
const DELEGATE: &str = "hop@my-project.iam.gserviceaccount.com";
const CLIENT_ID: &str = "host-web-01";
const READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";

const CLOUD: Advice = Advice::Stop { side: Side::Cloud };
const CONFIG: Advice = Advice::Stop { side: Side::Config };
const ISSUER: Advice = Advice::Stop { side: Side::Issuer };

fn default_audience() -> String {
    format!("https://iam.googleapis.com/{PROVIDER}")
}

/// How the Google side is set up for a test.
struct Setup {
    /// Bind the Keycloak client's service account as workloadIdentityUser on [`SA`].
    bound: bool,
    provider: fn(PoolProvider) -> PoolProvider,
    tls: bool,
    /// APIs left disabled on the pool's project.
    disabled: &'static [GoogleApi],
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            bound: true,
            provider: |p| p,
            tls: false,
            disabled: &[],
        }
    }
}

struct World {
    clock: ManualClock,
    kc: KeycloakEmulator,
    gcp: GcpEmulator,
    /// The Keycloak service account's `sub`.
    sub: String,
    ca_file: Option<tempfile::NamedTempFile>,
}

async fn world(setup: Setup) -> World {
    let clock = ManualClock::starting_now();
    let client = ClientSpec::new(CLIENT_ID, Credential::Secret("kc-secret".to_owned()))
        .optional_scopes(&["gcp-audience", "other-audience"]);
    let sub = client.service_account_id.clone();
    let realm = Realm::new("infra")
        .scope("gcp-audience", &[&default_audience()])
        .scope("other-audience", &["api.example.com"])
        .client(client);
    let ca = setup
        .tls
        .then(|| TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}")));
    let mut kc = KeycloakEmulator::builder(realm).clock(Arc::new(clock.clone()));
    if let Some(ca) = &ca {
        kc = kc.tls(ca);
    }
    let kc = kc
        .start()
        .await
        .unwrap_or_else(|e| panic!("keycloak emulator: {e}"));
    let mut account = ServiceAccount::new(SA);
    if setup.bound {
        account = account.bind(&principal(POOL, &sub));
    }
    let mut gcp = GcpEmulator::builder()
        .provider((setup.provider)(PoolProvider::new(
            PROVIDER,
            &kc.issuer_url(),
        )))
        .service_account(account)
        .service_account(ServiceAccount::new(DELEGATE))
        .clock(Arc::new(clock.clone()));
    if let Some(ca) = &ca {
        gcp = gcp.tls(ca);
    }
    for api in setup.disabled {
        gcp = gcp.api_disabled(*api);
    }
    let gcp = gcp
        .start()
        .await
        .unwrap_or_else(|e| panic!("gcp emulator: {e}"));
    let ca_file = ca.map(|ca| {
        let file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(file.path(), ca.ca_pem()).unwrap_or_else(|e| panic!("{e}"));
        file
    });
    World {
        clock,
        kc,
        gcp,
        sub,
        ca_file,
    }
}

impl World {
    fn target(&self, service_account: Option<&str>) -> GcpTarget {
        let url = |u: String| Url::parse(&u).unwrap_or_else(|e| panic!("{u}: {e}"));
        GcpTarget {
            provider: PROVIDER.to_owned(),
            service_account: service_account.map(str::to_owned),
            scopes: vec![CLOUD_PLATFORM.to_owned()],
            lifetime: Duration::from_secs(3600),
            delegates: Vec::new(),
            project_id: Some("my-project".to_owned()),
            project_number: PROJECT_NUMBER.to_owned(),
            sts_url: url(self.gcp.sts_url()),
            iam_url: url(self.gcp.base_url()),
            http: HttpSettings {
                ca_file: self.ca_file.as_ref().map(|f| f.path().to_owned()),
                timeout: Duration::from_secs(10),
                ..HttpSettings::default()
            },
        }
    }

    fn client_for(&self, target: GcpTarget) -> GcpClient {
        GcpClient::new(target)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_clock(Arc::new(self.clock.clone()))
    }

    fn client(&self, service_account: Option<&str>) -> GcpClient {
        self.client_for(self.target(service_account))
    }

    /// A Keycloak token for `scope` (the audience mapper's scope).
    async fn token_for(&self, scope: &str, audience: &str) -> SecretString {
        let url = Url::parse(&self.kc.issuer_url()).unwrap_or_else(|e| panic!("{e}"));
        let client = KeycloakClient::new(
            IssuerSettings {
                name: "corp".to_owned(),
                url,
                client_id: CLIENT_ID.to_owned(),
                auth: ClientAuth::SecretBasic(SecretString::from("kc-secret")),
                token_endpoint: None,
                assertion_audience: AssertionAudience::default(),
                verify_signature: true,
                http: HttpSettings {
                    ca_file: self.ca_file.as_ref().map(|f| f.path().to_owned()),
                    ..HttpSettings::default()
                },
            },
            Arc::new(self.clock.clone()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let token = client
            .fetch_token(&TokenRequest {
                audience: audience.to_owned(),
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
        self.token_for("gcp-audience", &default_audience()).await
    }

    /// A token the realm signs (its key, its `kid`) with these claims over the usual ones.
    fn signed(&self, extra: serde_json::Value) -> SecretString {
        let now = unix_seconds(self.clock.now());
        let mut claims = serde_json::json!({
            "iss": self.kc.issuer_url(),
            "aud": default_audience(),
            "sub": self.sub,
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

    /// The usual claims signed by a key nobody publishes, with this header.
    fn foreign(&self, header: jsonwebtoken::Header) -> SecretString {
        let now = unix_seconds(self.clock.now());
        let claims = serde_json::json!({
            "iss": self.kc.issuer_url(),
            "aud": default_audience(),
            "sub": self.sub,
            "iat": now,
            "exp": now + 300,
        });
        let key = match header.alg {
            jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(b"shared"),
            _ => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
                    .unwrap_or_else(|e| panic!("{e}"));
                jsonwebtoken::EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        SecretString::from(
            jsonwebtoken::encode(&header, &claims, &key).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Fails the test when the error shows the subject token or anything Google issued.
    fn assert_no_secret_in(&self, error: &GcpError, subject: &SecretString) {
        let shown = format!("{error} {error:?}");
        let jwt = subject.expose_secret();
        assert!(!shown.contains(jwt), "the subject token leaked: {shown}");
        if let Some((_, signature)) = jwt.rsplit_once('.') {
            assert!(!shown.contains(signature), "its signature leaked: {shown}");
        }
        for secret in self.gcp.issued_secrets() {
            assert!(!shown.contains(&secret), "an issued token leaked: {shown}");
        }
        assert!(!shown.contains("ya29."), "a Google token leaked: {shown}");
    }

    async fn refused_access(&self, client: &GcpClient, subject: &SecretString) -> GcpError {
        let result = client
            .access_token(subject, &[CLOUD_PLATFORM.to_owned()])
            .await;
        self.refusal(result, subject)
    }

    fn refusal(&self, result: Result<GcpToken, GcpError>, subject: &SecretString) -> GcpError {
        match result {
            Ok(token) => panic!("expected a refusal, got {token:?}"),
            Err(e) => {
                self.assert_no_secret_in(&e, subject);
                e
            }
        }
    }
}

fn text(e: &GcpError) -> String {
    e.to_string()
}

#[tokio::test]
async fn a_host_gets_a_federated_token_that_lives_as_long_as_its_subject_token() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let token = w
        .client(None)
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        token.kind,
        GcpTokenKind::Access {
            scopes: vec![CLOUD_PLATFORM.to_owned()],
            service_account: None
        }
    );
    // STS gives min(exp − now, 1 h): Keycloak's default lifespan is 300 s.
    assert_eq!(token.expires_at, w.clock.now() + Duration::from_secs(300));
    let info = w
        .gcp
        .token_info(token.token.expose_secret())
        .unwrap_or_else(|| panic!("the emulator did not issue {token:?}"));
    assert_eq!(
        info.kind,
        IssuedKind::Federated {
            provider: PROVIDER.to_owned()
        }
    );
    assert_eq!(info.principal, principal(POOL, &w.sub));
    assert_eq!(w.gcp.sts_calls(), 1);
    assert_eq!(w.gcp.generate_access_token_calls(), 0);
    assert!(!format!("{token:?}").contains(token.token.expose_secret()));
}

#[tokio::test]
async fn an_impersonated_access_token_has_the_exact_expiry_google_gave() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let mut target = w.target(Some(SA));
    target.lifetime = Duration::from_secs(7200);
    let token = w
        .client_for(target)
        .access_token(&subject, &[READ_ONLY.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        token.kind,
        GcpTokenKind::Access {
            scopes: vec![READ_ONLY.to_owned()],
            service_account: Some(SA.to_owned())
        }
    );
    assert!(token.token.expose_secret().starts_with("ya29."));
    assert_eq!(
        unix_seconds(token.expires_at),
        unix_seconds(w.clock.now()) + 7200,
        "expireTime is now + lifetime, to the second"
    );
    let issued = w.gcp.issued_tokens();
    // STS was asked for cloud-platform; the requested scope went to generateAccessToken.
    assert!(
        issued.iter().any(|t| matches!(t.kind, IssuedKind::Federated { .. })
            && t.scopes == [CLOUD_PLATFORM]),
        "{issued:?}"
    );
    let info = w
        .gcp
        .token_info(token.token.expose_secret())
        .unwrap_or_else(|| panic!("not issued"));
    assert_eq!(
        info.kind,
        IssuedKind::ServiceAccount {
            email: SA.to_owned()
        }
    );
    assert_eq!(info.scopes, [READ_ONLY]);
    assert_eq!(info.principal, principal(POOL, &w.sub));
    assert_eq!(
        (w.gcp.sts_calls(), w.gcp.generate_access_token_calls()),
        (1, 1)
    );
}

#[tokio::test]
async fn an_id_token_expires_at_its_exp_and_verifies_with_googles_keys() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let client = w.client(Some(SA));
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(w.gcp.jwks_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for full in [true, false] {
        let token = client
            .id_token(&subject, "https://api.example.com", full)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            token.kind,
            GcpTokenKind::Id {
                audience: "https://api.example.com".to_owned(),
                full,
                service_account: SA.to_owned()
            }
        );
        let jwt = token.token.expose_secret();
        let header = jsonwebtoken::decode_header(jwt).unwrap_or_else(|e| panic!("{e}"));
        let jwk = header
            .kid
            .as_deref()
            .and_then(|kid| jwks.find(kid))
            .unwrap_or_else(|| panic!("no JWKS key for {header:?}"));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("{e}"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["https://api.example.com"]);
        validation.set_issuer(&[crate::emulator::ID_TOKEN_ISSUER]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation)
            .unwrap_or_else(|e| panic!("{e}"))
            .claims;
        assert_eq!(claims["exp"].as_u64(), Some(unix_seconds(token.expires_at)));
        assert_eq!(
            unix_seconds(token.expires_at),
            unix_seconds(w.clock.now()) + 3600
        );
        assert_eq!(claims["sub"].as_str(), w.gcp.unique_id(SA));
        assert_eq!(claims["email"].as_str(), full.then_some(SA), "{claims}");
    }
    assert_eq!(w.gcp.generate_id_token_calls(), 2);
}

#[tokio::test]
async fn the_exchange_contract_issues_scopes_and_id_tokens_as_slots() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let federated = GcpExchange {
        client: w.client(None),
    };
    let id_slot = SlotKey::IdToken {
        audience: "https://api.example.com".to_owned(),
        full: false,
    };
    assert!(
        !federated.has_slot(&id_slot),
        "a federated identity has no ID tokens"
    );
    assert!(!federated.has_slot(&SlotKey::Resource("https://vault.azure.net".to_owned())));
    let main = federated
        .exchange(&subject)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        main.kind,
        GcpTokenKind::Access {
            service_account: None,
            ..
        }
    ));

    let impersonating = GcpExchange {
        client: w.client(Some(SA)),
    };
    let scopes = SlotKey::scopes([READ_ONLY]);
    let Some(call) = impersonating.exchange_slot(&subject, &scopes) else {
        panic!("no scopes slot");
    };
    let token = call.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        token.kind,
        GcpTokenKind::Access {
            scopes: vec![READ_ONLY.to_owned()],
            service_account: Some(SA.to_owned())
        }
    );
    let Some(call) = impersonating.exchange_slot(&subject, &id_slot) else {
        panic!("no ID token slot");
    };
    let token = call.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(token.kind, GcpTokenKind::Id { .. }));
}

#[tokio::test]
async fn tls_endpoints_work_with_the_ca_file() {
    let w = world(Setup {
        tls: true,
        ..Setup::default()
    })
    .await;
    assert!(w.gcp.base_url().starts_with("https://"));
    let subject = w.token().await;
    w.client(Some(SA))
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Without the CA file the certificate is not trusted, and the hint says what to set.
    let mut target = w.target(Some(SA));
    target.http.ca_file = None;
    let e = w.refused_access(&w.client_for(target), &subject).await;
    assert_eq!(e.advice(), Advice::Backoff, "{e}");
    assert!(text(&e).contains("ca_file"), "{e}");
}

#[tokio::test]
async fn an_audience_the_provider_does_not_allow_names_the_default_and_allowed_audiences() {
    let w = world(Setup::default()).await;
    let subject = w.token_for("other-audience", "api.example.com").await;
    let e = w.refused_access(&w.client(None), &subject).await;
    assert_eq!(e.code(), Some("invalid_grant"));
    assert!(
        text(&e).contains(
            "invalid_grant: \"The audience in ID Token [api.example.com] does not match the expected audience.\""
        ),
        "{e}"
    );
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("\"api.example.com\"")
            && hint.contains(&default_audience())
            && hint.contains("--allowed-audiences"),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);

    // A provider that allows the custom audience takes the token.
    let w = world(Setup {
        provider: |p| p.allowed_audiences(&["api.example.com"]),
        ..Setup::default()
    })
    .await;
    let subject = w.token_for("other-audience", "api.example.com").await;
    w.client(None)
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // And now refuses the default one, as Google does once the list is set.
    let subject = w.token().await;
    let e = w.refused_access(&w.client(None), &subject).await;
    assert_eq!(e.advice(), CLOUD, "{e}");
}

#[tokio::test]
async fn an_expired_subject_token_asks_for_a_fresh_one() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    // Keycloak's 300 s, and Google's minute of skew, are over.
    w.clock.advance(Duration::from_secs(300 + 61));
    let e = w.refused_access(&w.client(None), &subject).await;
    assert_eq!(e.advice(), Advice::FreshSubjectToken, "{e}");
    assert!(text(&e).contains("is stale to sign-in."), "{e}");
    assert!(e.hint().unwrap_or_default().contains("clock"), "{e}");
    // Within the skew it still passes.
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    w.clock.advance(Duration::from_secs(300 + 59));
    let e = w.refused_access(&w.client(None), &subject).await;
    // … but the federated token would be born dead, and STS says so.
    assert_eq!(e.advice(), Advice::FreshSubjectToken, "{e}");
}

#[tokio::test]
async fn a_bad_signature_asks_for_a_fresh_token() {
    let w = world(Setup::default()).await;
    w.kc.sign_with_foreign_key(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let subject = w.signed(serde_json::json!({}));
    let e = w.refused_access(&w.client(None), &subject).await;
    assert!(
        text(&e).contains("\"Unable to verify the ID Token signature.\""),
        "{e}"
    );
    assert_eq!(e.advice(), Advice::FreshSubjectToken);
}

#[tokio::test]
async fn a_token_without_kid_or_with_hs256_stops_on_the_issuer_side() {
    let w = world(Setup::default()).await;
    let no_kid = w.foreign(jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256));
    let e = w.refused_access(&w.client(None), &no_kid).await;
    assert!(text(&e).contains("no key ID (kid)"), "{e}");
    assert!(
        e.hint().unwrap_or_default().contains("RS256 or ES256"),
        "{e}"
    );
    assert_eq!(e.advice(), ISSUER);

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let hs256 = w.foreign(header);
    let e = w.refused_access(&w.client(None), &hs256).await;
    assert!(text(&e).contains("signed with HS256"), "{e}");
    assert!(
        e.hint().unwrap_or_default().contains("RS256 or ES256"),
        "{e}"
    );
    assert_eq!(e.advice(), ISSUER);
}

#[tokio::test]
async fn a_token_living_48_hours_or_more_stops_on_the_issuer_side() {
    let w = world(Setup::default()).await;
    let now = unix_seconds(w.clock.now());
    let subject = w.signed(serde_json::json!({ "exp": now + 48 * 3600 }));
    let e = w.refused_access(&w.client(None), &subject).await;
    assert!(text(&e).contains("must be less than 48 hours"), "{e}");
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("Access Token Lifespan"),
        "{e}"
    );
    assert_eq!(e.advice(), ISSUER);
    // One second less passes.
    let subject = w.signed(serde_json::json!({ "exp": now + 48 * 3600 - 1 }));
    w.client(None)
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_subject_over_127_bytes_names_the_attribute_mapping() {
    let w = world(Setup::default()).await;
    let subject = w.signed(serde_json::json!({ "sub": "x".repeat(128) }));
    let e = w.refused_access(&w.client(None), &subject).await;
    assert!(
        text(&e).contains("invalid_request: \"The size of mapped attribute google.subject exceeds the 127 bytes limit."),
        "{e}"
    );
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("128 bytes") && hint.contains("attribute mapping"),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);
    let subject = w.signed(serde_json::json!({ "sub": "x".repeat(127) }));
    w.client(None)
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn an_unbound_principal_gets_the_workload_identity_user_hint() {
    let w = world(Setup {
        bound: false,
        ..Setup::default()
    })
    .await;
    let subject = w.token().await;
    let client = w.client(Some(SA));
    let e = w.refused_access(&client, &subject).await;
    assert!(
        text(&e).contains(
            "PERMISSION_DENIED: \"Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).\""
        ),
        "{e}"
    );
    let hint = e.hint().unwrap_or_default();
    let principal = principal(POOL, &w.sub);
    assert!(
        hint.contains("roles/iam.workloadIdentityUser")
            && hint.contains(&principal)
            && hint.contains(SA),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);

    let result = client
        .id_token(&subject, "https://api.example.com", false)
        .await;
    let e = w.refusal(result, &subject);
    assert!(
        text(&e).contains("iam.serviceAccounts.getOpenIdToken"),
        "{e}"
    );
    assert!(e.hint().unwrap_or_default().contains(&principal), "{e}");
    assert_eq!(e.advice(), CLOUD);
}

#[tokio::test]
async fn an_unknown_service_account_is_not_found() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let other = "nobody@my-project.iam.gserviceaccount.com";
    let e = w.refused_access(&w.client(Some(other)), &subject).await;
    assert!(
        text(&e).contains(&format!(
            "(HTTP 404): NOT_FOUND: \"Not found; Gaia id not found for email {other}\""
        )),
        "{e}"
    );
    assert!(
        e.hint().unwrap_or_default().contains("service_account"),
        "{e}"
    );
    assert_eq!(e.advice(), CLOUD);
}

#[tokio::test]
async fn a_missing_or_disabled_provider_is_an_invalid_target() {
    let w = world(Setup {
        provider: PoolProvider::disabled,
        ..Setup::default()
    })
    .await;
    let subject = w.token().await;
    let e = w.refused_access(&w.client(None), &subject).await;
    assert_eq!(e.code(), Some("invalid_target"), "{e}");
    assert!(text(&e).contains("disabled or deleted"), "{e}");
    assert!(
        e.hint().unwrap_or_default().contains("project's number"),
        "{e}"
    );
    assert_eq!(e.advice(), CLOUD);
}

#[tokio::test]
async fn outages_back_off_and_quote_what_answered() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let client = w.client(Some(SA));
    let control = w.gcp.control();

    control.inject(
        "/v1/token",
        Fault::Status {
            status: 503,
            body: "<html>Service Unavailable</html>".to_owned(),
        },
        Some(1),
    );
    let e = w.refused_access(&client, &subject).await;
    assert_eq!(e.advice(), Advice::Backoff, "{e}");
    assert!(
        text(&e).contains("HTTP 503") && text(&e).contains("<html>Service Unavailable</html>"),
        "{e}"
    );

    control.inject(
        "/v1/token",
        Fault::Status {
            status: 429,
            body: r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Token exchange requests'.","status":"RESOURCE_EXHAUSTED"}}"#.to_owned(),
        },
        Some(1),
    );
    let e = w.refused_access(&client, &subject).await;
    assert_eq!(e.advice(), Advice::Backoff, "{e}");
    assert!(text(&e).contains("Quota exceeded"), "{e}");

    control.inject(
        ":generateAccessToken",
        Fault::Status {
            status: 500,
            body: r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#.to_owned(),
        },
        Some(1),
    );
    let e = w.refused_access(&client, &subject).await;
    assert_eq!(e.advice(), Advice::Backoff, "{e}");
    assert!(
        text(&e).contains("INTERNAL: \"Internal error encountered.\""),
        "{e}"
    );

    control.inject("/v1/token", Fault::Drop, Some(1));
    let e = w.refused_access(&client, &subject).await;
    assert!(matches!(e, GcpError::Transport { .. }), "{e:?}");
    assert_eq!(e.advice(), Advice::Backoff);

    // And everything works again.
    client
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn malformed_answers_back_off_without_echoing_tokens() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let client = w.client(Some(SA));
    for path in ["/v1/token", ":generateAccessToken"] {
        w.gcp.control().inject(path, Fault::Malformed, Some(1));
        let e = w.refused_access(&client, &subject).await;
        assert!(
            matches!(e, GcpError::InvalidResponse { .. }),
            "{path}: {e:?}"
        );
        assert_eq!(e.advice(), Advice::Backoff);
        assert!(text(&e).contains("withheld"), "{e}");
        assert!(!text(&e).contains("eyJ"), "{e}");
    }
    w.gcp
        .control()
        .inject(":generateIdToken", Fault::Malformed, Some(1));
    let result = client
        .id_token(&subject, "https://api.example.com", false)
        .await;
    let e = w.refusal(result, &subject);
    assert_eq!(e.advice(), Advice::Backoff, "{e}");
}

/// An answer cut short: the promised body never arrives whole.
#[tokio::test]
async fn a_truncated_body_backs_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"access_token\":\"ya29.cut")
                .await;
            let _ = stream.shutdown().await;
        }
    });
    let mut target = w.target(None);
    target.sts_url =
        Url::parse(&format!("http://127.0.0.1:{port}/v1/token")).unwrap_or_else(|e| panic!("{e}"));
    let e = w.refused_access(&w.client_for(target), &subject).await;
    assert!(matches!(e, GcpError::Transport { .. }), "{e:?}");
    assert_eq!(e.advice(), Advice::Backoff);
}

#[tokio::test]
async fn a_url_that_names_something_else_stops_on_the_configuration() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let mut target = w.target(Some(SA));
    target.iam_url =
        Url::parse(&format!("{}/wrong/", w.gcp.base_url())).unwrap_or_else(|e| panic!("{e}"));
    let e = w.refused_access(&w.client_for(target), &subject).await;
    assert!(matches!(e, GcpError::Http { status: 404, .. }), "{e:?}");
    assert!(text(&e).contains("was not found on this server"), "{e}");
    assert_eq!(e.advice(), CONFIG);

    // Nothing listening: the network, so back off.
    let mut target = w.target(None);
    target.sts_url = Url::parse("http://127.0.0.1:9/v1/token").unwrap_or_else(|e| panic!("{e}"));
    let e = w.refused_access(&w.client_for(target), &subject).await;
    assert!(matches!(e, GcpError::Transport { .. }), "{e:?}");
    assert_eq!(e.advice(), Advice::Backoff);
}

#[tokio::test]
async fn requests_that_cannot_work_are_refused_before_any_call() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let e = w.refusal(
        w.client(None).id_token(&subject, "https://a", false).await,
        &subject,
    );
    assert_eq!(e.advice(), CONFIG, "{e}");
    assert!(text(&e).contains("service_account"), "{e}");
    let e = w.refusal(w.client(None).access_token(&subject, &[]).await, &subject);
    assert_eq!(e.advice(), CONFIG, "{e}");
    assert_eq!(w.gcp.sts_calls(), 0);

    let mut target = w.target(None);
    target.sts_url =
        Url::parse("http://sts.example.com/v1/token").unwrap_or_else(|e| panic!("{e}"));
    let e = GcpClient::new(target)
        .err()
        .unwrap_or_else(|| panic!("accepted plain http"));
    assert_eq!(e.advice(), CONFIG);
    assert!(text(&e).contains("http://sts.example.com/v1/token"), "{e}");
}

/// Issue 9: a fresh project has the IAM Service Account Credentials API off; Google says so
/// with 403 PERMISSION_DENIED, which is no missing binding.
#[tokio::test]
async fn issue_9_a_disabled_iam_credentials_api_names_the_command_that_enables_it() {
    let w = world(Setup {
        disabled: &[GoogleApi::IamCredentials],
        ..Setup::default()
    })
    .await;
    let subject = w.token().await;
    let client = w.client(Some(SA));
    let e = w.refused_access(&client, &subject).await;
    assert!(
        text(&e).contains(&format!(
            "PERMISSION_DENIED: \"IAM Service Account Credentials API has not been used in project {PROJECT_NUMBER} before or it is disabled."
        )),
        "{e}"
    );
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains(&format!(
            "gcloud services enable iamcredentials.googleapis.com --project={PROJECT_NUMBER}"
        )) && !hint.contains("workloadIdentityUser"),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);

    let result = client
        .id_token(&subject, "https://api.example.com", false)
        .await;
    let e = w.refusal(result, &subject);
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("gcloud services enable iamcredentials.googleapis.com"),
        "{e}"
    );
    assert_eq!(e.advice(), CLOUD);
}

/// Issue 9: likewise the Security Token Service API, refused in Google's API error shape.
#[tokio::test]
async fn issue_9_a_disabled_sts_api_names_the_command_that_enables_it() {
    let w = world(Setup {
        disabled: &[GoogleApi::Sts],
        ..Setup::default()
    })
    .await;
    let subject = w.token().await;
    let e = w.refused_access(&w.client(None), &subject).await;
    assert!(
        matches!(e, GcpError::StsRefused { status: 403, .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), Some("PERMISSION_DENIED"), "{e}");
    assert!(
        text(&e).contains("Security Token Service API has not been used in project"),
        "{e}"
    );
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains(&format!(
            "gcloud services enable sts.googleapis.com --project={PROJECT_NUMBER}"
        )),
        "{hint}"
    );
    assert_eq!(e.advice(), CLOUD);
}

/// Issue 9: with delegates, the principal's binding belongs on the FIRST delegate, not on the
/// target service account, and each hop needs Token Creator on the next.
#[tokio::test]
async fn issue_9_a_delegation_chain_gets_the_first_delegate_in_its_hint() {
    // Bound on SA (which does not help with a chain), not on DELEGATE.
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let mut target = w.target(Some(SA));
    target.delegates = vec![format!("projects/-/serviceAccounts/{DELEGATE}")];
    let client = w.client_for(target);
    let e = w.refused_access(&client, &subject).await;
    assert_eq!(e.code(), Some("PERMISSION_DENIED"), "{e}");
    let hint = e.hint().unwrap_or_default();
    let principal = principal(POOL, &w.sub);
    for part in [
        format!("FIRST delegate {DELEGATE}"),
        format!(
            "add-iam-policy-binding {DELEGATE} --role=roles/iam.workloadIdentityUser --member={principal}"
        ),
        format!(
            "add-iam-policy-binding {SA} --role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:{DELEGATE}"
        ),
    ] {
        assert!(hint.contains(&part), "{part}\n{hint}");
    }
    assert_eq!(e.advice(), CLOUD);
}

/// An STS answer whose token lives `expires_in`.
fn sts_answer(expires_in: &str) -> Fault {
    Fault::Status {
        status: 200,
        body: format!(
            r#"{{"access_token":"ya29.d.injected","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":{expires_in}}}"#
        ),
    }
}

/// Issue 9: an `expires_in` that overflowed the clock panicked; one of years was believed.
#[tokio::test]
async fn issue_9_sts_expires_in_out_of_range_is_refused_without_panicking() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let client = w.client(None);
    for (expires_in, says) in [
        ("9223372036854775807", "more than 12 hours"),
        ("43201", "more than 12 hours"),
        ("315360000", "more than 12 hours"),
        ("0", "not positive"),
        ("-5", "not positive"),
    ] {
        w.gcp
            .control()
            .inject("/v1/token", sts_answer(expires_in), Some(1));
        let e = w.refused_access(&client, &subject).await;
        assert!(
            matches!(e, GcpError::InvalidResponse { .. }),
            "{expires_in}: {e:?}"
        );
        assert!(text(&e).contains(says), "{expires_in}: {e}");
        assert_eq!(e.advice(), Advice::Backoff, "{expires_in}");
    }
    // 12 h itself is the most keyfed takes.
    w.gcp
        .control()
        .inject("/v1/token", sts_answer("43200"), Some(1));
    let token = client
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        token.expires_at,
        w.clock.now() + Duration::from_secs(43_200)
    );
}

/// Issue 9: an `expireTime` more than 12 h (and a minute) ahead is not believed.
#[tokio::test]
async fn issue_9_an_expire_time_beyond_12_hours_is_refused() {
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let mut target = w.target(Some(SA));
    target.lifetime = Duration::from_secs(43_200);
    let client = w.client_for(target);
    // The longest Google gives, from the emulator itself, passes.
    let token = client
        .access_token(&subject, &[CLOUD_PLATFORM.to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        unix_seconds(token.expires_at),
        unix_seconds(w.clock.now()) + 43_200
    );
    let late = keyfed_core::clock::rfc3339(w.clock.now() + Duration::from_secs(43_200 + 120));
    for expire_time in [late.as_str(), "9999-12-31T23:59:59Z"] {
        w.gcp.control().inject(
            ":generateAccessToken",
            Fault::Status {
                status: 200,
                body: format!(
                    r#"{{"accessToken":"ya29.c.injected","expireTime":"{expire_time}"}}"#
                ),
            },
            Some(1),
        );
        let e = w.refused_access(&client, &subject).await;
        assert!(
            matches!(e, GcpError::InvalidResponse { .. }),
            "{expire_time}: {e:?}"
        );
        assert!(
            text(&e).contains("more than 12 hours ahead"),
            "{expire_time}: {e}"
        );
        assert_eq!(e.advice(), Advice::Backoff);
    }
}

/// Issue 9: an ID token whose `exp` is past, or more than 12 h ahead, is not believed.
#[tokio::test]
async fn issue_9_an_id_token_exp_past_or_beyond_12_hours_is_refused() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let w = world(Setup::default()).await;
    let subject = w.token().await;
    let client = w.client(Some(SA));
    let now = unix_seconds(w.clock.now());
    let jwt = |exp: u64| {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2lnbmF0dXJl",
            part(serde_json::json!({ "alg": "RS256", "kid": "k" })),
            part(serde_json::json!({
                "iss": "https://accounts.google.com",
                "aud": "https://api.example.com",
                "iat": now,
                "exp": exp,
            }))
        )
    };
    for (exp, says) in [
        (now + 13 * 3600, "more than 12 hours ahead"),
        (u64::MAX, "more than 12 hours ahead"),
        (now - 10, "already past"),
        (now, "already past"),
    ] {
        w.gcp.control().inject(
            ":generateIdToken",
            Fault::Status {
                status: 200,
                body: format!(r#"{{"token":"{}"}}"#, jwt(exp)),
            },
            Some(1),
        );
        let result = client
            .id_token(&subject, "https://api.example.com", false)
            .await;
        let e = w.refusal(result, &subject);
        assert!(
            matches!(e, GcpError::InvalidResponse { .. }),
            "{exp}: {e:?}"
        );
        assert!(text(&e).contains(says), "{exp}: {e}");
        assert!(!text(&e).contains("c2lnbmF0dXJl"), "{e}");
        assert_eq!(e.advice(), Advice::Backoff);
    }
    // One that lives the usual hour passes.
    w.gcp.control().inject(
        ":generateIdToken",
        Fault::Status {
            status: 200,
            body: format!(r#"{{"token":"{}"}}"#, jwt(now + 3600)),
        },
        Some(1),
    );
    let token = client
        .id_token(&subject, "https://api.example.com", false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unix_seconds(token.expires_at), now + 3600);
}
