//! What a Keycloak realm answers (issue 11): the discovery document, the token response (and
//! OAuth refusals), the JWKS, and the token itself through every check
//! (`keyfed_keycloak::KeycloakClient::fetch_token`). Options: `verify` checks signatures against
//! the JWKS; `strict` wants a single audience; `post` and `jwt` pick `client_secret_post` and
//! `client_secret_jwt` (else `client_secret_basic`); `endpoint` skips discovery.
//!
//! Nothing may panic; a token handed back passed every check (issuer, audience, lifetime); no
//! error shows the client secret or a token a 2xx answer held.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::http::HttpSettings;
use keyfed_core::{ManualClock, SecretString};
use keyfed_fuzz::{Script, Server, assert_hidden, json_field, now};
use keyfed_keycloak::{
    AssertionAudience, ClientAuth, IssuerSettings, KeycloakClient, TokenRequest,
};
use libfuzzer_sys::fuzz_target;
use url::Url;

const CLIENT_SECRET: &str = "kc-fuzz-client-secret-0123456789";
const AUDIENCE: &str = "sts.amazonaws.com";
const MIN_REMAINING: Duration = Duration::from_secs(30);

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let server = Server::at_fixed_address();
    let issuer = format!("{}/realms/fuzz", server.base());
    let url = Url::parse(&issuer).unwrap_or_else(|e| panic!("{issuer}: {e}"));
    let secret = SecretString::from(CLIENT_SECRET);
    let auth = if script.has("post") {
        ClientAuth::SecretPost(secret)
    } else if script.has("jwt") {
        ClientAuth::SecretJwt(secret)
    } else {
        ClientAuth::SecretBasic(secret)
    };
    let token_endpoint = script
        .has("endpoint")
        .then(|| url.join("fuzz/protocol/openid-connect/token").ok())
        .flatten();
    let settings = IssuerSettings {
        name: "fuzz".to_owned(),
        url,
        client_id: "host-fuzz".to_owned(),
        auth,
        token_endpoint,
        assertion_audience: AssertionAudience::Issuer,
        verify_signature: script.has("verify"),
        http: HttpSettings {
            timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        },
    };
    let clock = ManualClock::new(now());
    let client = KeycloakClient::new(settings, Arc::new(clock))
        .unwrap_or_else(|e| panic!("the client: {e}"));
    let request = TokenRequest {
        audience: AUDIENCE.to_owned(),
        strict_audience: script.has("strict"),
        scope: Some("aws-audience".to_owned()),
        resource: None,
        audience_parameter: false,
        min_remaining: MIN_REMAINING,
    };
    let result = server.run(
        &script.answers,
        "application/json",
        client.fetch_token(&request),
    );
    match &result {
        Ok(_) => keyfed_fuzz::show(&"accepted"),
        Err(error) => keyfed_fuzz::show(error),
    }
    match result {
        Ok(token) => {
            let audience = token.audience();
            assert!(
                audience.contains(AUDIENCE),
                "accepted without the audience: {audience}"
            );
            if script.has("strict") {
                assert_eq!(
                    audience.0.len(),
                    1,
                    "accepted with {audience} under strict_audience"
                );
            }
            assert!(
                token.expires_at() >= now() + MIN_REMAINING,
                "accepted a token expiring too soon"
            );
            let iss = token.decoded().string_claim("iss").unwrap_or_default();
            assert_eq!(
                iss.trim_end_matches('/'),
                issuer,
                "accepted another issuer's token"
            );
            assert_hidden(
                &format!("{token:?}"),
                token.expose(),
                token.expose().as_bytes(),
                &[],
            );
        }
        Err(error) => {
            let shown = error.to_string();
            assert_hidden(&shown, CLIENT_SECRET, b"", &[]);
            for answer in script
                .answers
                .iter()
                .filter(|a| (200..300).contains(&a.status))
            {
                if let Some(token) = json_field(&answer.body, "access_token") {
                    assert_hidden(&shown, &token, &answer.body, &[&issuer]);
                }
            }
        }
    }
});
