//! issue 11: the types of this crate that hold a secret — the client's credentials in every
//! authentication method, its signing key, the settings holding them, a token that passed its
//! checks, the assertions it signs — show none of it under `{:?}` or `{:#?}`.

use std::time::Duration;

use keyfed_core::http::HttpSettings;
use keyfed_core::{ExposeSecret as _, SecretString};
use url::Url;

use crate::jwt::DecodedJwt;
use crate::{
    AccessToken, AssertionAudience, ClientAuth, IssuerSettings, SigningAlgorithm, SigningKey,
};

const SECRET: &str = "kc-s3cr3t:with+plus%percent&amp space=eq";

fn settings(auth: ClientAuth) -> IssuerSettings {
    IssuerSettings {
        name: "corp".to_owned(),
        url: Url::parse("https://sso.example.com/realms/infra").unwrap_or_else(|e| panic!("{e}")),
        client_id: "host-web-01".to_owned(),
        auth,
        token_endpoint: None,
        assertion_audience: AssertionAudience::Issuer,
        verify_signature: true,
        http: HttpSettings::default(),
    }
}

/// Fails naming the secret if `value`'s `{:?}` or `{:#?}` holds one of `secrets`.
fn assert_redacted(what: &str, value: &dyn std::fmt::Debug, secrets: &[String]) {
    for shown in [format!("{value:?}"), format!("{value:#?}")] {
        // keyfed's marker, or secrecy's own for a bare secret.
        assert!(
            shown.contains(keyfed_core::REDACTED) || shown.contains("[REDACTED]"),
            "{what}: no redaction to see in {shown}"
        );
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(
                !shown.contains(secret.as_str()),
                "{what} shows {secret:?}: {shown}"
            );
        }
    }
}

#[test]
fn issue_11_no_secret_of_a_client_or_its_token_shows_under_debug() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap_or_else(|e| panic!("{e}"));
    let pem = pair.serialize_pem();
    let key_lines: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .skip(1)
        .map(str::to_owned)
        .collect();
    let key = || {
        SigningKey::from_pem(pem.as_bytes(), SigningAlgorithm::Es256, Some("k1".into()))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let secret = || SecretString::from(SECRET);
    let urlencoded: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let mut secrets = vec![SECRET.to_owned(), urlencoded];
    secrets.extend(key_lines);

    for auth in [
        ClientAuth::SecretBasic(secret()),
        ClientAuth::SecretPost(secret()),
        ClientAuth::SecretJwt(secret()),
        ClientAuth::PrivateKeyJwt(key()),
    ] {
        assert_redacted(auth.method(), &auth, &secrets);
        assert_redacted(
            &format!("the settings of {}", auth.method()),
            &settings(auth),
            &secrets,
        );
    }
    assert_redacted("a signing key", &key(), &secrets);

    // The assertions keyfed signs with the secret and the key, and a token that passed.
    let now = keyfed_core::Clock::now(&keyfed_core::SystemClock);
    let assertions = [
        crate::assertion::signed_with_secret(&secret(), "host-web-01", "https://sso", now),
        crate::assertion::signed_with_key(&key(), "host-web-01", "https://sso", now),
    ];
    for assertion in assertions {
        let assertion = assertion.unwrap_or_else(|e| panic!("{e}"));
        let raw = assertion.expose_secret().to_owned();
        let signature = raw.rsplit('.').next().unwrap_or_default().to_owned();
        assert_redacted(
            "a client assertion",
            &assertion,
            &[raw.clone(), signature.clone()],
        );
        let decoded = DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
        let token = AccessToken::new(assertion, decoded, now + Duration::from_secs(300));
        assert_redacted("an access token", &token, &[raw, signature]);
    }
}
