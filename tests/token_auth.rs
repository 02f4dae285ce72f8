//! `keyfed token` gets a token with the configured audience for each client authentication
//! method, and sends exactly what each method requires.

use keyfed_keycloak::emulator::KeycloakEmulator;

use crate::util::{AWS_AUD, Fixture, SECRET, claims, issuer, target};

async fn token_with(auth: &str, client_id: &str) -> Fixture {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{}",
        issuer("corp", client_id, auth),
        target("aws", "corp", AWS_AUD, "aws-audience")
    ));
    let run = fx.keyfed(&["token", "aws"]).await;
    run.ok();
    let jwt = run.stdout.trim();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let c = claims(jwt);
    assert_eq!(c["aud"], AWS_AUD, "{c}");
    assert_eq!(c["azp"], client_id);
    assert_eq!(
        c["preferred_username"],
        format!("service-account-{client_id}")
    );
    fx
}

#[tokio::test]
async fn client_secret_basic_urlencodes_the_credentials() {
    let fx = token_with("client_secret_basic", "host-secret").await;
    let seen = fx.keycloak().last_request().unwrap_or_default();
    assert!(seen.basic_auth, "{seen:?}");
    assert_eq!(seen.field("client_secret"), None);
    assert_eq!(seen.field("scope"), Some("aws-audience"));
    assert_eq!(seen.field("grant_type"), Some("client_credentials"));
}

#[tokio::test]
async fn client_secret_post_sends_the_secret_in_the_body() {
    let fx = token_with("client_secret_post", "host-secret").await;
    let seen = fx.keycloak().last_request().unwrap_or_default();
    assert!(!seen.basic_auth);
    assert_eq!(seen.field("client_id"), Some("host-secret"));
    assert_eq!(seen.field("client_secret"), Some(SECRET));
}

fn assertion_claims(fx: &Fixture) -> (serde_json::Value, serde_json::Value) {
    let seen = fx.keycloak().last_request().unwrap_or_default();
    assert_eq!(
        seen.field("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = seen
        .field("client_assertion")
        .unwrap_or_default()
        .to_owned();
    let header = claims(&format!(
        "x.{}",
        assertion.split('.').next().unwrap_or_default()
    ));
    (header, claims(&assertion))
}

#[tokio::test]
async fn private_key_jwt_rs256_signs_a_keycloak_shaped_assertion() {
    let fx = token_with("private_key_jwt:RS256", "host-rs256").await;
    let (header, c) = assertion_claims(&fx);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "host-key-1");
    assert_eq!(c["iss"], "host-rs256");
    assert_eq!(c["sub"], "host-rs256");
    assert_eq!(
        c["aud"],
        fx.keycloak().issuer_url(),
        "a single aud, the issuer by default"
    );
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    assert!(exp > iat && exp - iat <= 60, "{c}");
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16));
}

#[tokio::test]
async fn private_key_jwt_ps256_and_es256() {
    let fx = token_with("private_key_jwt:PS256", "host-ps256").await;
    assert_eq!(assertion_claims(&fx).0["alg"], "PS256");
    let fx = token_with("private_key_jwt:ES256", "host-es256").await;
    let (header, _) = assertion_claims(&fx);
    assert_eq!(header["alg"], "ES256");
    assert!(
        header.get("kid").is_none(),
        "no kid unless configured: {header}"
    );
}

#[tokio::test]
async fn client_secret_jwt_signs_with_hs256() {
    let fx = token_with("client_secret_jwt", "host-hs256").await;
    assert_eq!(assertion_claims(&fx).0["alg"], "HS256");
}

#[tokio::test]
async fn assertion_audience_can_be_the_token_endpoint() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    fx.config(&format!(
        "{}assertion_audience = \"token_endpoint\"\n{}",
        issuer("corp", "host-rs256", "private_key_jwt:RS256"),
        target("aws", "corp", AWS_AUD, "aws-audience")
    ));
    fx.keyfed(&["token", "aws"]).await.ok();
    assert_eq!(
        assertion_claims(&fx).1["aud"],
        fx.keycloak().token_endpoint()
    );
}

#[tokio::test]
async fn each_call_uses_a_fresh_assertion() {
    // Keycloak rejects a reused jti ("Token reuse detected"); two calls must both succeed.
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{}",
        issuer("corp", "host-hs256", "client_secret_jwt"),
        target("aws", "corp", AWS_AUD, "aws-audience")
    ));
    fx.keyfed(&["token", "aws"]).await.ok();
    fx.keyfed(&["token", "aws"]).await.ok();
    assert_eq!(fx.keycloak().token_requests(), 2);
}

#[tokio::test]
async fn decode_prints_header_and_claims_but_no_signature() {
    let fx = token_with("client_secret_basic", "host-secret").await;
    let raw = fx.keyfed(&["token", "aws"]).await.stdout.trim().to_owned();
    let run = fx.keyfed(&["token", "aws", "--decode"]).await;
    run.ok();
    let shown: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(shown["claims"]["aud"], AWS_AUD);
    assert_eq!(shown["header"]["alg"], "RS256");
    assert!(shown["header"]["kid"].is_string());
    let signature = raw.rsplit('.').next().unwrap_or_default();
    assert!(signature.len() > 100 && !run.stdout.contains(signature));
}

#[tokio::test]
async fn resource_and_audience_parameters_are_sent_when_configured() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{}resource = \"https://api.example.internal/\"\naudience_parameter = true\n",
        issuer("corp", "host-secret", "client_secret_basic"),
        target("api", "corp", crate::util::API_AUD, "api-audience")
    ));
    fx.keyfed(&["token", "api"]).await.ok();
    let seen = fx.keycloak().last_request().unwrap_or_default();
    assert_eq!(
        seen.field("resource"),
        Some("https://api.example.internal/")
    );
    assert_eq!(seen.field("audience"), Some(crate::util::API_AUD));
}

#[tokio::test]
async fn legacy_auth_prefix_realms_work_through_discovery() {
    let mut fx = Fixture::new();
    let realm = fx.realm().legacy_auth_prefix(true);
    fx.start(KeycloakEmulator::builder(realm)).await;
    assert!(fx.keycloak().issuer_url().contains("/auth/realms/infra"));
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{}",
        issuer("corp", "host-secret", "client_secret_basic"),
        target("aws", "corp", AWS_AUD, "aws-audience")
    ));
    fx.keyfed(&["token", "aws"]).await.ok();
}
