//! The issuer's signing keys, for a Google pool provider that cannot fetch them itself: the
//! JWKS as keyfed's Keycloak client fetched it (`KeycloakClient::published_keys`: the
//! discovery document checked to name the configured issuer, its `jwks_uri` held to keyfed's URL
//! rules, the issuer's `ca_file`, proxy and timeouts), cut down to what Google takes as
//! `jwksJson` — RSA and EC signing keys with only `kty`, `alg`, `use`, `kid`, `n`, `e`, `x`, `y`
//! and `crv` (Keycloak also publishes an encryption key and certificate chains, which Google
//! refuses).

use anyhow::Context as _;
use serde_json::{Map, Value, json};

/// The fields Google accepts in a key of `jwksJson`.
const GOOGLE_FIELDS: [&str; 9] = ["kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"];

/// `jwks` as Google takes it: its RSA and EC signing keys, each with only the fields Google
/// accepts and `"use": "sig"`.
pub(super) fn for_google(jwks: &Value) -> anyhow::Result<Value> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .context("the issuer's JWKS has no \"keys\" list")?;
    let kept: Vec<Value> = keys
        .iter()
        .filter(|k| matches!(k["kty"].as_str(), Some("RSA" | "EC")))
        .filter(|k| {
            k.get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .map(|k| {
            let mut key: Map<String, Value> = GOOGLE_FIELDS
                .iter()
                .filter_map(|f| k.get(*f).map(|v| ((*f).to_owned(), v.clone())))
                .collect();
            key.insert("use".to_owned(), "sig".into());
            Value::Object(key)
        })
        .collect();
    if kept.is_empty() {
        anyhow::bail!(
            "the issuer's JWKS has no RSA or EC signing key for Google to verify tokens with"
        );
    }
    Ok(json!({ "keys": kept }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_gets_the_signing_keys_with_its_fields_only() {
        let keycloak = json!({"keys": [
            {"kid": "sig-1", "kty": "RSA", "alg": "RS256", "use": "sig", "n": "abc", "e": "AQAB",
             "x5c": ["MIIC..."], "x5t": "t", "x5t#S256": "t2"},
            {"kid": "enc-1", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": "def", "e": "AQAB"},
            {"kid": "ec-1", "kty": "EC", "alg": "ES256", "crv": "P-256", "x": "X", "y": "Y"},
            {"kid": "hmac", "kty": "oct", "k": "secret"},
        ]});
        let google = for_google(&keycloak).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            google,
            json!({"keys": [
                {"kid": "sig-1", "kty": "RSA", "alg": "RS256", "use": "sig", "n": "abc", "e": "AQAB"},
                {"kid": "ec-1", "kty": "EC", "alg": "ES256", "use": "sig", "crv": "P-256", "x": "X", "y": "Y"},
            ]})
        );
        assert!(for_google(&json!({"keys": [{"kty": "oct"}]})).is_err());
        assert!(for_google(&json!({})).is_err());
    }
}
