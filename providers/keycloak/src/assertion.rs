//! Client assertions for `private_key_jwt` and `client_secret_jwt` (RFC 7523), shaped the way
//! Keycloak checks them: `iss` = `sub` = client id, one `aud`, a fresh `jti`, `iat` now and
//! `exp` at most 60 s later.

use std::time::SystemTime;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyfed_core::clock::unix_seconds;
use keyfed_core::{ExposeSecret as _, SecretString};
use serde::Serialize;

use crate::settings::SigningKey;

/// Keycloak's default "Max expiration" of a client assertion.
pub(crate) const ASSERTION_LIFETIME_SECS: u64 = 60;

pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

fn claims<'a>(client_id: &'a str, audience: &'a str, now: SystemTime) -> AssertionClaims<'a> {
    let iat = unix_seconds(now);
    AssertionClaims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: uuid::Uuid::new_v4().to_string(),
        iat,
        exp: iat + ASSERTION_LIFETIME_SECS,
    }
}

/// A `private_key_jwt` assertion.
pub(crate) fn signed_with_key(
    key: &SigningKey,
    client_id: &str,
    audience: &str,
    now: SystemTime,
) -> Result<SecretString, String> {
    let mut header = Header::new(key.algorithm.jwt());
    header.kid = key.key_id.clone();
    jsonwebtoken::encode(&header, &claims(client_id, audience, now), &key.key)
        .map(SecretString::from)
        .map_err(|e| e.to_string())
}

/// A `client_secret_jwt` assertion (HS256 over the secret).
pub(crate) fn signed_with_secret(
    secret: &SecretString,
    client_id: &str,
    audience: &str,
    now: SystemTime,
) -> Result<SecretString, String> {
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(client_id, audience, now),
        &key,
    )
    .map(SecretString::from)
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::DecodedJwt;

    #[test]
    fn secret_assertion_has_keycloaks_shape() {
        let now = keyfed_core::clock::from_unix_seconds(1_700_000_000);
        let secret = SecretString::from("s3cret");
        let a = signed_with_secret(&secret, "host-1", "https://sso/realms/r", now)
            .unwrap_or_else(|e| panic!("{e}"));
        let b = signed_with_secret(&secret, "host-1", "https://sso/realms/r", now)
            .unwrap_or_else(|e| panic!("{e}"));
        let jwt = DecodedJwt::parse(a.expose_secret()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            jwt.header.get("alg").and_then(|v| v.as_str()),
            Some("HS256")
        );
        assert_eq!(jwt.string_claim("iss"), Some("host-1"));
        assert_eq!(jwt.string_claim("sub"), Some("host-1"));
        assert_eq!(jwt.string_claim("aud"), Some("https://sso/realms/r"));
        assert_eq!(jwt.time_claim("iat"), Some(1_700_000_000));
        assert_eq!(jwt.time_claim("exp"), Some(1_700_000_060));
        let other = DecodedJwt::parse(b.expose_secret()).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(jwt.string_claim("jti"), other.string_claim("jti"));
    }
}
