//! The checks every token passes before anyone uses it: signature against the issuer's JWKS
//! (asymmetric algorithms only, so a token can never be "signed" with a public key as an HMAC
//! secret), then `iss`, `aud` and `exp`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use keyfed_core::clock::{from_unix_seconds, unix_seconds};
use serde_json::Value;

use crate::error::TokenProblem;
use crate::jwt::DecodedJwt;
use crate::settings::TokenRequest;

/// One signing key from a JWKS document.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    kid: Option<String>,
    alg: Option<String>,
    jwk: Jwk,
}

/// The signing keys of a JWKS document; keys for encryption or of kinds keyfed cannot read are
/// skipped rather than failing the whole set.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet(Vec<PublicKey>);

impl KeySet {
    pub(crate) fn parse(document: &Value) -> Result<Self, String> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("it has no \"keys\" array")?;
        let usable = keys
            .iter()
            .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
            .filter_map(|k| {
                let jwk = serde_json::from_value::<Jwk>(k.clone()).ok()?;
                // Only public-key kinds; a symmetric or unknown key can never verify a token.
                if !matches!(
                    jwk.algorithm,
                    AlgorithmParameters::RSA(_)
                        | AlgorithmParameters::EllipticCurve(_)
                        | AlgorithmParameters::OctetKeyPair(_)
                ) {
                    return None;
                }
                Some(PublicKey {
                    kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
                    alg: k.get("alg").and_then(Value::as_str).map(str::to_owned),
                    jwk,
                })
            })
            .collect();
        Ok(Self(usable))
    }

    /// Each usable key's `kid` and `alg`, as the JWKS names them.
    pub(crate) fn listed(&self) -> Vec<(Option<String>, Option<String>)> {
        self.0
            .iter()
            .map(|k| (k.kid.clone(), k.alg.clone()))
            .collect()
    }

    fn find(&self, kid: Option<&str>) -> Option<&PublicKey> {
        match kid {
            Some(kid) => self.0.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.0.len() == 1 => self.0.first(),
            None => None,
        }
    }
}

/// Verifies the signature of `raw` (already parsed as `jwt`) with a key from `keys`.
pub(crate) fn verify_signature(
    raw: &str,
    jwt: &DecodedJwt,
    keys: &KeySet,
) -> Result<(), TokenProblem> {
    let alg_name = jwt.header.get("alg").and_then(Value::as_str).unwrap_or("");
    let algorithm = match Algorithm::from_str(alg_name) {
        Ok(
            a @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA),
        ) => a,
        _ => {
            return Err(TokenProblem::UnsupportedAlgorithm(format!(
                "\"{alg_name}\""
            )));
        }
    };
    let kid = jwt.header.get("kid").and_then(Value::as_str);
    let key = keys.find(kid).ok_or_else(|| TokenProblem::UnknownKey {
        kid: kid.map(str::to_owned),
    })?;
    if key.alg.as_deref().is_some_and(|a| a != alg_name) {
        return Err(TokenProblem::BadSignature(format!(
            "the token says {alg_name} but key {:?} is for {}",
            kid.unwrap_or(""),
            key.alg.as_deref().unwrap_or("")
        )));
    }
    let decoding =
        DecodingKey::from_jwk(&key.jwk).map_err(|e| TokenProblem::BadSignature(e.to_string()))?;
    let (message, signature) = raw
        .rsplit_once('.')
        .ok_or_else(|| TokenProblem::Malformed("not a JWT".to_owned()))?;
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &decoding, algorithm) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TokenProblem::BadSignature(
            "it was not made by the issuer's key".to_owned(),
        )),
        Err(e) => Err(TokenProblem::BadSignature(e.to_string())),
    }
}

/// Checks `iss`, `aud` and `exp`; returns when the token expires.
pub(crate) fn check_claims(
    jwt: &DecodedJwt,
    issuer: &str,
    request: &TokenRequest,
    now: SystemTime,
) -> Result<SystemTime, TokenProblem> {
    let iss = jwt.string_claim("iss");
    if iss.map(|i| i.trim_end_matches('/')) != Some(issuer.trim_end_matches('/')) {
        return Err(TokenProblem::IssuerMismatch {
            expected: issuer.to_owned(),
            found: iss.map(str::to_owned),
        });
    }
    let audience = jwt.audience();
    if !audience.contains(&request.audience) {
        return Err(TokenProblem::AudienceMissing {
            expected: request.audience.clone(),
            found: audience,
            scope: request.scope.clone(),
        });
    }
    if request.strict_audience && audience.0.len() != 1 {
        return Err(TokenProblem::AudienceNotSingle {
            expected: request.audience.clone(),
            found: audience,
        });
    }
    let exp = jwt.time_claim("exp").ok_or(TokenProblem::NoExpiry)?;
    let now_secs = unix_seconds(now);
    if exp <= now_secs {
        return Err(TokenProblem::Expired {
            seconds_ago: now_secs - exp,
        });
    }
    let remaining = Duration::from_secs(exp - now_secs);
    if remaining < request.min_remaining {
        return Err(TokenProblem::TooShortLived {
            remaining,
            minimum: request.min_remaining,
        });
    }
    Ok(from_unix_seconds(exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn jwt(claims: Value) -> DecodedJwt {
        let raw = format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn request(strict: bool) -> TokenRequest {
        TokenRequest {
            audience: "sts.amazonaws.com".into(),
            strict_audience: strict,
            scope: Some("aws".into()),
            resource: None,
            audience_parameter: false,
            min_remaining: Duration::from_secs(60),
        }
    }

    fn check(claims: Value, strict: bool) -> Result<SystemTime, TokenProblem> {
        check_claims(
            &jwt(claims),
            "https://sso/realms/r",
            &request(strict),
            from_unix_seconds(NOW),
        )
    }

    #[test]
    fn accepts_a_good_token_with_string_or_array_aud() {
        let exp = from_unix_seconds(NOW + 300);
        let ok = json!({"iss":"https://sso/realms/r","aud":"sts.amazonaws.com","exp":NOW+300});
        assert_eq!(check(ok, true), Ok(exp));
        let ok = json!({"iss":"https://sso/realms/r/","aud":["account","sts.amazonaws.com"],"exp":NOW+300});
        assert_eq!(check(ok, false), Ok(exp));
    }

    #[test]
    fn refuses_what_it_must() {
        let base = |aud: Value, exp: u64| json!({"iss":"https://sso/realms/r","aud":aud,"exp":exp});
        assert!(matches!(
            check(base(json!("other"), NOW + 300), false),
            Err(TokenProblem::AudienceMissing { .. })
        ));
        assert!(matches!(
            check(
                base(json!(["account", "sts.amazonaws.com"]), NOW + 300),
                true
            ),
            Err(TokenProblem::AudienceNotSingle { .. })
        ));
        assert_eq!(
            check(base(json!("sts.amazonaws.com"), NOW - 5), false),
            Err(TokenProblem::Expired { seconds_ago: 5 })
        );
        assert!(matches!(
            check(base(json!("sts.amazonaws.com"), NOW + 30), false),
            Err(TokenProblem::TooShortLived { .. })
        ));
        assert!(matches!(
            check(
                json!({"iss":"https://evil/realms/r","aud":"sts.amazonaws.com","exp":NOW+300}),
                false
            ),
            Err(TokenProblem::IssuerMismatch { .. })
        ));
        assert_eq!(
            check(
                json!({"iss":"https://sso/realms/r","aud":"sts.amazonaws.com"}),
                false
            ),
            Err(TokenProblem::NoExpiry)
        );
    }

    #[test]
    fn symmetric_and_none_algorithms_are_refused() {
        for alg in ["HS256", "none", "", "RS1"] {
            let raw = format!(
                "{}.{}.sig",
                URL_SAFE_NO_PAD.encode(json!({"alg":alg}).to_string()),
                URL_SAFE_NO_PAD.encode("{}")
            );
            let parsed = DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(
                    verify_signature(&raw, &parsed, &KeySet::default()),
                    Err(TokenProblem::UnsupportedAlgorithm(_))
                ),
                "{alg}"
            );
        }
    }

    #[test]
    fn keyset_skips_encryption_and_unreadable_keys() {
        let doc = json!({"keys":[
            {"kid":"enc","kty":"RSA","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},
            {"kid":"weird","kty":"nope"},
            {"kid":"sig","kty":"RSA","use":"sig","alg":"RS256","n":"AQAB","e":"AQAB"}
        ]});
        let set = KeySet::parse(&doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.0.len(), 1);
        assert!(set.find(Some("sig")).is_some());
        assert!(set.find(None).is_some());
        assert!(KeySet::parse(&json!({"nokeys":1})).is_err());
    }
}
