//! Every token is checked before use: signature against the issuer's JWKS, issuer, audience
//! (exactly one with `strict_audience`), expiry and remaining life.

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::ManualClock;
use keyfed_core::emulator::{Fault, Latch, TestCa};
use keyfed_keycloak::emulator::KeycloakEmulator;

use crate::util::{AWS_AUD, Fixture, held, issuer, target, text_of, wait_until};

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
    fx.start_default().await;
    standard_config(&fx, "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace("\"host-secret\"", "\"host-roles\""),
    );
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

/// The `kid` in the header of the JWT in `path`, if the file holds one.
fn kid_in(path: &std::path::Path) -> Option<String> {
    let jwt = std::fs::read_to_string(path).ok()?;
    let header = crate::util::claims(&format!("x.{}", jwt.split('.').next()?));
    header["kid"].as_str().map(str::to_owned)
}

/// issue 7: the signing key rotates while `keyfed run` is up, so the running daemon meets an
/// unknown `kid` and must refetch the JWKS itself (one fetch more, no failed refresh) — the test
/// before rotated between two processes, which never reached the refetch. Three targets share
/// the issuer's client: two get their tokens (the JWKS is fetched once and kept), the third's
/// token request is held while the key rotates, then signed with the new key.
#[tokio::test]
async fn the_signing_key_rotates_while_the_daemon_runs() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    let port = crate::util::free_port();
    let names = ["one", "two", "three"];
    let mut targets = String::new();
    for name in names {
        targets += &(target(name, "corp", crate::util::API_AUD, "api-audience")
            + &format!("outputs = [ {{ kind = \"token\", path = \"{name}.jwt\" }} ]\n\n"));
    }
    fx.daemon_config(&format!(
        "{targets}[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\ncontainer_token_file = \"container-token\"\n"
    ));
    // Only the first token request is held; the other targets' go through.
    let first_token = Latch::new();
    fx.keycloak().control().inject(
        "/protocol/openid-connect/token",
        Fault::Hold(first_token.clone()),
        Some(1),
    );
    let daemon = fx.daemon().await;
    held(&first_token, 1, "the first token request").await;
    let kids = || names.map(|n| kid_in(&fx.path(&format!("{n}.jwt"))));
    wait_until("the other two targets' tokens", async || {
        kids().iter().flatten().count() == 2
    })
    .await;
    let before = kids();
    assert_eq!(
        fx.keycloak().jwks_requests(),
        1,
        "the JWKS is fetched for the first token and kept for the second"
    );

    fx.keycloak()
        .rotate_signing_key()
        .unwrap_or_else(|e| panic!("{e}"));
    first_token.release();
    wait_until("the held target's token", async || {
        kids().iter().flatten().count() == 3
    })
    .await;
    let after = kids();
    let old_kid = before.iter().flatten().next().cloned();
    let held_kid = before
        .iter()
        .zip(&after)
        .find_map(|(b, a)| if b.is_none() { a.clone() } else { None });
    assert!(held_kid.is_some() && held_kid != old_kid, "{after:?}");
    assert_eq!(
        fx.keycloak().jwks_requests(),
        2,
        "the unknown kid made the daemon refetch the JWKS once"
    );
    assert_eq!(fx.keycloak().token_requests(), 3, "no retry was needed");

    let states = fx.status_json().await;
    for t in states.as_array().into_iter().flatten() {
        assert_eq!(t["state"], "fresh", "{t}");
        assert_eq!(t["last_error"], serde_json::Value::Null, "{t}");
    }
    let metrics =
        text_of(crate::util::http::client().get(format!("http://127.0.0.1:{port}/metrics"))).await;
    for name in names {
        for (result, count) in [("failure", 0), ("success", 1)] {
            let line = format!(
                "keyfed_refreshes_total{{target=\"{name}\",result=\"{result}\"}} {count}\n"
            );
            assert!(metrics.contains(&line), "{line:?} in:\n{metrics}");
        }
    }
    daemon.stop().await;
}
