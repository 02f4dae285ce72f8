//! When Keycloak says no, or fails, `keyfed token` exits non-zero with Keycloak's own words,
//! the issuer's name and a hint — never a panic, never a secret.

use std::time::Duration;

use keyfed_core::emulator::Fault;

use crate::util::{AWS_AUD, Fixture, issuer, target};

async fn fixture(client_id: &str, scope: &str) -> Fixture {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.write_credentials();
    fx.config(&format!(
        "{}\n{}",
        issuer("corp", client_id, "client_secret_basic"),
        target("aws", "corp", AWS_AUD, scope)
    ));
    fx
}

#[tokio::test]
async fn wrong_secret_quotes_keycloak() {
    let fx = fixture("host-secret", "aws-audience").await;
    fx.write("client-secret", "not-the-secret");
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp' refused the token request (HTTP 401): unauthorized_client: \"Invalid client or Invalid client credentials\"")
        .says("hint: check the secret for client \"host-secret\"");
}

#[tokio::test]
async fn unknown_client_quotes_keycloak() {
    let fx = fixture("no-such-client", "aws-audience").await;
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp' refused the token request (HTTP 401): invalid_client: \"Invalid client or Invalid client credentials\"")
        .says("exists in the realm");
}

#[tokio::test]
async fn missing_scope_names_the_scope_to_link() {
    let fx = fixture("host-secret", "unlinked").await;
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp' refused the token request (HTTP 400): invalid_scope: \"Invalid scopes: unlinked\"")
        .says("link the client scope(s) \"unlinked\" to client \"host-secret\"");
}

#[tokio::test]
async fn token_without_the_audience_is_refused_with_the_mapper_to_add() {
    // The scope exists and is linked, but its mapper adds another audience.
    let fx = fixture("host-secret", "api-audience").await;
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp': the token for audience \"sts.amazonaws.com\" was refused: its aud is \"https://api.example.internal\", which does not hold \"sts.amazonaws.com\"")
        .says("add an audience mapper");
}

#[tokio::test]
async fn client_without_service_account_is_told_to_enable_it() {
    let fx = fixture("no-service-account", "aws-audience").await;
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("unauthorized_client: \"Client not enabled to retrieve service account\"")
        .says("\"Service accounts roles\" is enabled");
}

#[tokio::test]
async fn server_errors_show_status_and_body() {
    let fx = fixture("host-secret", "aws-audience").await;
    fx.keycloak().control().inject(
        "/protocol/openid-connect/token",
        Fault::Status {
            status: 503,
            body: "<html>upstream maintenance</html>".into(),
        },
        None,
    );
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp': POST ")
        .says("answered HTTP 503: <html>upstream maintenance</html>");
}

#[tokio::test]
async fn malformed_answer_is_an_error_not_a_panic() {
    let fx = fixture("host-secret", "aws-audience").await;
    fx.keycloak()
        .control()
        .inject("/protocol/openid-connect/token", Fault::Malformed, None);
    let run = fx.keyfed(&["token", "aws"]).await;
    run.fails_with(1)
        .says("the token response from")
        .says("is not valid");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error() {
    let fx = fixture("host-secret", "aws-audience").await;
    fx.keycloak()
        .control()
        .inject("/protocol/openid-connect/token", Fault::Drop, None);
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp': POST ")
        .says("failed:");
}

#[tokio::test]
async fn slow_issuer_times_out_after_the_configured_timeout() {
    let fx = fixture("host-secret", "aws-audience").await;
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace("[targets.aws]", "timeout = \"300ms\"\n\n[targets.aws]"),
    );
    // Keycloak never answers (issue 7: a latch never released, not a delay to race): only
    // keyfed's own timeout can end the request.
    let _never = fx
        .keycloak()
        .control()
        .hold("/protocol/openid-connect/token");
    tokio::time::timeout(Duration::from_secs(15), fx.keyfed(&["token", "aws"]))
        .await
        .unwrap_or_else(|_| panic!("keyfed token waited for the silent issuer"))
        .fails_with(1)
        .says("timed out after 0.3 s");
}

#[tokio::test]
async fn unreachable_issuer_names_the_url() {
    let mut fx = Fixture::new();
    fx.write_credentials();
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n{}",
            issuer("corp", "host-secret", "client_secret_basic")
                .replace("{issuer}", "http://127.0.0.1:9/realms/infra"),
            target("aws", "corp", AWS_AUD, "aws-audience")
        ),
    );
    fx.keycloak = None;
    fx.keyfed(&["token", "aws"])
        .await
        .fails_with(1)
        .says("issuer 'corp': GET http://127.0.0.1:9/realms/infra/.well-known/openid-configuration failed");
}
