//! Every token is checked before use: signature against the issuer's JWKS, issuer, audience
//! (exactly one with `strict_audience`), expiry and remaining life.

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::ManualClock;
use keyfed_core::emulator::TestCa;
use keyfed_keycloak::emulator::KeycloakEmulator;

use crate::util::{AWS_AUD, Fixture, issuer, target};

fn standard_config(fx: &Fixture, extra_target_keys: &str) {
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{}{extra_target_keys}",
        issuer("corp", "host-secret", "client_secret_basic"),
        target("aws", "corp", AWS_AUD, "aws-audience")
    ));
}

#[tokio::test]
async fn foreign_signature_is_refused() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    standard_config(&fx, "");
    fx.keycloak()
        .sign_with_foreign_key(true)
        .unwrap_or_else(|e| panic!("{e}"));
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("was refused: its signature does not verify");
}

#[tokio::test]
async fn rotated_signing_key_is_found_by_refetching_the_jwks() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    standard_config(&fx, "");
    fx.keyfed(&["token", "aws"]).await.ok();
    fx.keycloak()
        .rotate_signing_key()
        .unwrap_or_else(|e| panic!("{e}"));
    fx.keyfed(&["token", "aws"]).await.ok();
}

#[tokio::test]
async fn expired_token_is_refused() {
    // The emulator's clock reads 2001: its tokens expired long before they arrive.
    let mut fx = Fixture::new();
    let clock = ManualClock::starting_now();
    clock.set(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    let realm = fx.realm();
    fx.start(KeycloakEmulator::builder(realm).clock(Arc::new(clock)))
        .await;
    standard_config(&fx, "");
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("was refused: it expired")
        .says("check this host's clock");
}

#[tokio::test]
async fn short_lived_token_is_refused_below_min_token_lifetime() {
    let mut fx = Fixture::new();
    let realm = fx.realm().lifespan(Duration::from_secs(120));
    fx.start(KeycloakEmulator::builder(realm)).await;
    standard_config(&fx, "min_token_lifetime = \"5m\"\n");
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("less than min_token_lifetime (300 s)");
}

#[tokio::test]
async fn strict_audience_refuses_the_account_audience() {
    let mut fx = Fixture::new();
    let realm = fx.realm().account_audience(true);
    fx.start(KeycloakEmulator::builder(realm)).await;
    standard_config(&fx, "");
    // Without strict_audience the extra "account" is fine…
    let run = fx.keyfed(&["token", "aws"]).await;
    run.ok();
    assert_eq!(
        crate::util::claims(&run.stdout)["aud"],
        serde_json::json!([AWS_AUD, "account"])
    );
    // …with it, keyfed refuses and says how to get a single audience.
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write("keyfed.toml", &format!("{config}strict_audience = true\n"));
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("strict_audience requires exactly \"sts.amazonaws.com\"")
        .says("\"roles\" client scope");
}

#[tokio::test]
async fn issuer_url_must_match_the_realm_exactly() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    // Same realm, reached by another name: discovery names the real issuer.
    let url = fx.keycloak().issuer_url().replace("127.0.0.1", "localhost");
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n{}",
            issuer("corp", "host-secret", "client_secret_basic").replace("{issuer}", &url),
            target("aws", "corp", AWS_AUD, "aws-audience")
        ),
    );
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("the discovery document from")
        .says("set the issuer url to exactly the realm's issuer");
}

#[tokio::test]
async fn https_issuer_is_trusted_through_ca_file_only() {
    let ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
    let mut fx = Fixture::new();
    let realm = fx.realm();
    fx.start(KeycloakEmulator::builder(realm).tls(&ca)).await;
    assert!(fx.keycloak().issuer_url().starts_with("https://localhost:"));
    fx.write("ca.pem", ca.ca_pem());
    standard_config(&fx, "");
    // Without the CA the certificate is unknown…
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("failed:");
    // …with ca_file it verifies.
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace("[targets.aws]", "ca_file = \"ca.pem\"\n\n[targets.aws]"),
    );
    fx.keyfed(&["token", "aws"]).await.ok();
}
