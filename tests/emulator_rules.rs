//! The Keycloak emulator enforces Keycloak's rules on client assertions, so keyfed's tests would
//! catch a client that real Keycloak refuses. Assertions here are made by hand to break one rule
//! each; the expected `error_description` texts are Keycloak's.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::util::{Fixture, JWT_SECRET, key_pair};

const NOW_SLACK: u64 = 0;

fn now() -> u64 {
    keyfed_core::clock::unix_seconds(keyfed_core::Clock::now(&keyfed_core::SystemClock)) + NOW_SLACK
}

struct Case {
    fx: Fixture,
    http: reqwest::Client,
}

impl Case {
    async fn new() -> Self {
        let mut fx = Fixture::new();
        fx.start_default().await;
        Self {
            fx,
            http: reqwest::Client::new(),
        }
    }

    fn claims(&self, client: &str) -> Value {
        let t = now();
        json!({"iss": client, "sub": client, "aud": self.fx.keycloak().issuer_url(),
               "jti": uuid::Uuid::new_v4().to_string(), "iat": t, "exp": t + 60})
    }

    fn rsa_assertion(&self, claims: &Value, alg: Algorithm) -> String {
        let key = EncodingKey::from_rsa_pem(self.fx.rsa.private_pem.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap_or_else(|e| panic!("{e}"))
    }

    fn hs_assertion(&self, claims: &Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Posts an assertion; returns the status and `error_description` (or the token's aud).
    async fn post(&self, assertion: &str) -> (u16, String) {
        let form = [
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "aws-audience"),
        ];
        let response = self
            .http
            .post(self.fx.keycloak().token_endpoint())
            .form(&form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        let text = body["error_description"].as_str().unwrap_or("").to_owned();
        (status, text)
    }

    async fn refused(&self, assertion: &str, description: &str) {
        let (status, text) = self.post(assertion).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(
            text,
            format!("Client authentication with signed JWT failed: {description}")
        );
    }
}

#[tokio::test]
async fn a_well_formed_assertion_is_accepted_once() {
    let case = Case::new().await;
    let assertion = case.rsa_assertion(&case.claims("host-rs256"), Algorithm::RS256);
    assert_eq!(case.post(&assertion).await.0, 200);
    case.refused(&assertion, "Token reuse detected").await;
}

#[tokio::test]
async fn audience_rules() {
    let case = Case::new().await;
    let mut c = case.claims("host-rs256");
    c["aud"] = json!(case.fx.keycloak().token_endpoint());
    assert_eq!(
        case.post(&case.rsa_assertion(&c, Algorithm::RS256)).await.0,
        200,
        "token endpoint is fine"
    );
    c["jti"] = json!("two-auds");
    c["aud"] = json!([
        case.fx.keycloak().issuer_url(),
        case.fx.keycloak().token_endpoint()
    ]);
    case.refused(
        &case.rsa_assertion(&c, Algorithm::RS256),
        "Multiple audiences not allowed",
    )
    .await;
    c["jti"] = json!("wrong-aud");
    c["aud"] = json!("https://somewhere.else/");
    case.refused(
        &case.rsa_assertion(&c, Algorithm::RS256),
        "Invalid token audience",
    )
    .await;
}

#[tokio::test]
async fn time_rules() {
    let case = Case::new().await;
    let t = now();
    let mut c = case.claims("host-hs256");
    c["exp"] = json!(t + 120);
    case.refused(
        &case.hs_assertion(&c, JWT_SECRET),
        "Token expiration is too long (Max expiration is 60 s after iat)",
    )
    .await;
    let mut c = case.claims("host-hs256");
    c["iat"] = json!(t + 100);
    c["exp"] = json!(t + 130);
    case.refused(
        &case.hs_assertion(&c, JWT_SECRET),
        "Token was issued in the future",
    )
    .await;
    let mut c = case.claims("host-hs256");
    c["iat"] = json!(t - 200);
    c["exp"] = json!(t - 160);
    case.refused(&case.hs_assertion(&c, JWT_SECRET), "Token is not active")
        .await;
    let mut c = case.claims("host-hs256");
    c.as_object_mut().map(|o| o.remove("exp"));
    case.refused(
        &case.hs_assertion(&c, JWT_SECRET),
        "Token exp claim is required",
    )
    .await;
    let mut c = case.claims("host-hs256");
    c.as_object_mut().map(|o| o.remove("jti"));
    case.refused(
        &case.hs_assertion(&c, JWT_SECRET),
        "Token jti claim is required",
    )
    .await;
}

#[tokio::test]
async fn algorithm_and_key_rules() {
    let case = Case::new().await;
    // A symmetric assertion for a "Signed JWT" (public key) client.
    case.refused(
        &case.hs_assertion(&case.claims("host-rs256"), "guess"),
        "Invalid signature algorithm",
    )
    .await;
    // An asymmetric assertion for a "Signed JWT with Client Secret" client.
    case.refused(
        &case.rsa_assertion(&case.claims("host-hs256"), Algorithm::RS256),
        "Invalid signature algorithm",
    )
    .await;
    // The configured algorithm is enforced.
    case.refused(
        &case.rsa_assertion(&case.claims("host-rs256"), Algorithm::PS256),
        "Invalid signature algorithm",
    )
    .await;
    // Someone else's key.
    let other = key_pair(&rcgen::PKCS_RSA_SHA256);
    let key =
        EncodingKey::from_rsa_pem(other.private_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &case.claims("host-rs256"),
        &key,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    case.refused(&forged, "Signature on JWT token failed validation")
        .await;
    case.refused(
        &case.hs_assertion(&case.claims("host-hs256"), "wrong"),
        "Signature on JWT token by client secret failed validation",
    )
    .await;
}

#[tokio::test]
async fn tokens_carry_keycloaks_claims() {
    let case = Case::new().await;
    let response: Value = case
        .http
        .post(case.fx.keycloak().token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "both"),
            ("client_id", "host-secret"),
            ("client_secret", crate::util::SECRET),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(response["expires_in"], 300);
    assert_eq!(response["token_type"], "Bearer");
    let c = crate::util::claims(response["access_token"].as_str().unwrap_or_default());
    assert_eq!(
        c["aud"],
        json!([crate::util::AWS_AUD, crate::util::API_AUD]),
        "an array for several"
    );
    assert_eq!(c["azp"], "host-secret");
    assert_eq!(c["preferred_username"], "service-account-host-secret");
    assert_eq!(
        c["exp"].as_u64().unwrap_or(0) - c["iat"].as_u64().unwrap_or(0),
        300
    );
    assert!(uuid::Uuid::parse_str(c["sub"].as_str().unwrap_or_default()).is_ok());
    // Basic credentials are form-urlencoded before Base64 (RFC 6749 §2.3.1): sending the raw
    // secret with reserved characters fails, as it does against Keycloak.
    let raw = case
        .http
        .post(case.fx.keycloak().token_endpoint())
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("host-secret:{}", crate::util::SECRET)
                )
            ),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw.status().as_u16(), 401);
}
