//! What every cloud's emulator does with a subject token before its own rules apply: decode
//! the compact JWT, fetch the issuer's signing keys as a relying party does (the discovery
//! document at `{iss}/.well-known/openid-configuration`, then its `jwks_uri`), keep them per
//! issuer and fetch them again when a token names a `kid` the cached set lacks, and check the
//! signature with an allowed algorithm. What comes back is the verified claims, or an
//! [`OidcFailure`] that each emulator words as its cloud does (STS's `InvalidIdentityToken`,
//! Google STS's `invalid_grant`, …). Audience, expiry and subject rules differ per cloud, so
//! they stay with the emulators; [`Claims`] decodes the values they check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Header, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

pub use jsonwebtoken::{Algorithm, DecodingKey};

/// How long one discovery or JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token did not verify. Each emulator maps every variant to its cloud's error, in one
/// exhaustive `match`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcFailure {
    /// Not three dot-separated Base64url parts with a JSON header and a JSON object of claims.
    #[error("not a compact JWT with a JSON header and JSON claims")]
    Malformed,
    /// No string `iss` claim, so there is no issuer to fetch keys from.
    #[error("the token has no issuer (iss) claim")]
    MissingIssuer,
    /// The header's `alg` is not one the policy allows (HMAC, `none`, …).
    #[error("the token is signed with {0:?}, which is not allowed")]
    Algorithm(Algorithm),
    /// The policy requires a `kid` and the header has none.
    #[error("the token's header names no key (kid)")]
    MissingKid,
    /// The discovery document or the JWKS could not be fetched or read.
    #[error("the issuer's keys could not be fetched: {0}")]
    KeysUnavailable(String),
    /// No key of the issuer's JWKS (fetched again to be sure) matches the token's `kid` (or,
    /// without a `kid`, the JWKS holds more than one key).
    #[error("no key in the issuer's JWKS matches the token's kid")]
    UnknownKey,
    /// The matching JWKS entry is not a usable public key.
    #[error("the issuer's JWKS key for this token cannot be used")]
    UnusableKey,
    /// The signature does not verify with the issuer's key.
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// What a cloud accepts in a token's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The `alg` values accepted; anything else is [`OidcFailure::Algorithm`].
    pub algorithms: &'static [Algorithm],
    /// Whether the header must name its key. Without this a token without `kid` is checked
    /// against the JWKS's only key, and fails when there are several.
    pub require_kid: bool,
}

/// A JWT's claims (the payload's JSON object), with the decoding every cloud's checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// A string claim; `None` when absent or not a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (`exp`, `iat`, `nbf`) as whole seconds since the epoch; `None` when
    /// absent or not a non-negative integer.
    pub fn seconds(&self, name: &str) -> Option<u64> {
        self.0.get(name).and_then(Value::as_u64)
    }

    /// `aud` as a list: one string, or the strings of an array (RFC 7519 §4.1.3 allows both).
    pub fn audiences(&self) -> Vec<&str> {
        match self.0.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The issuer, `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.string("iss")
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// A token decoded but not yet verified: its header and claims can be read to decide what to
/// check (which provider the `iss` names) but must not be trusted.
#[derive(Clone)]
pub struct UnverifiedJwt<'a> {
    token: &'a str,
    header: Header,
    claims: Claims,
}

/// Header and claims, never the token: its signature makes it usable.
impl std::fmt::Debug for UnverifiedJwt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedJwt")
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl<'a> UnverifiedJwt<'a> {
    /// Decodes `token` without checking anything but its form.
    pub fn parse(token: &'a str) -> Result<Self, OidcFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcFailure::Malformed)?;
        let claims = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
            .map_err(|_| OidcFailure::Malformed)?
            .claims;
        Ok(Self {
            token,
            header,
            claims: Claims(claims),
        })
    }

    /// The claims as sent: to be trusted only after [`OidcVerifier::verify`].
    pub fn unverified_claims(&self) -> &Claims {
        &self.claims
    }

    pub fn algorithm(&self) -> Algorithm {
        self.header.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }
}

/// A token whose signature verified with a key its issuer publishes.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// The `iss` the keys were fetched for.
    pub issuer: String,
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub claims: Claims,
}

/// One issuer's signing keys, with their `kid`s.
#[derive(Debug, Default)]
struct KeySet(Vec<(Option<String>, Jwk)>);

impl KeySet {
    /// The key a token with `kid` is checked against: the one with that `kid`, or without a
    /// `kid` the only key there is.
    fn find(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self
                .0
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, jwk)| jwk),
            None if self.0.len() == 1 => self.0.first().map(|(_, jwk)| jwk),
            None => None,
        }
    }

    /// The signing keys of a JWKS document: RSA and EC keys not marked for encryption.
    fn from_document(document: &Value) -> Option<Self> {
        let keys = document
            .get("keys")?
            .as_array()?
            .iter()
            .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
            .filter_map(|k| {
                let jwk = serde_json::from_value::<Jwk>(k.clone()).ok()?;
                matches!(
                    jwk.algorithm,
                    AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
                )
                .then(|| (k.get("kid").and_then(Value::as_str).map(str::to_owned), jwk))
            })
            .collect();
        Some(Self(keys))
    }
}

/// Verifies tokens against their issuers' published keys, fetched over HTTP(S) and cached per
/// issuer. One per emulator; fetches for one emulator run one at a time, so a burst of tokens
/// from a new issuer fetches its keys once.
#[derive(Debug)]
pub struct OidcVerifier {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Arc<KeySet>>>,
}

impl OidcVerifier {
    /// A verifier with a client of its own: no proxy, no redirects, a 5-second timeout, the
    /// system's roots plus `trusted_ca_pems` (a [`super::TestCa`]'s, for an issuer emulated over
    /// TLS).
    pub fn new<'a>(trusted_ca_pems: impl IntoIterator<Item = &'a str>) -> std::io::Result<Self> {
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT);
        for pem in trusted_ca_pems {
            let cert =
                reqwest::Certificate::from_pem(pem.as_bytes()).map_err(std::io::Error::other)?;
            http = http.tls_certs_merge([cert]);
        }
        Ok(Self::with_client(
            http.build().map_err(std::io::Error::other)?,
        ))
    }

    /// A verifier fetching keys with `http`.
    pub fn with_client(http: reqwest::Client) -> Self {
        Self {
            http,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `jwt`'s header against `policy` and its signature against its issuer's keys, in
    /// that order: algorithm, `kid`, keys (fetched again once when none matches), signature.
    pub async fn verify(
        &self,
        jwt: UnverifiedJwt<'_>,
        policy: &Policy,
    ) -> Result<VerifiedJwt, OidcFailure> {
        let algorithm = jwt.algorithm();
        if !policy.algorithms.contains(&algorithm) {
            return Err(OidcFailure::Algorithm(algorithm));
        }
        let kid = jwt.kid();
        if policy.require_kid && kid.is_none() {
            return Err(OidcFailure::MissingKid);
        }
        let issuer = jwt
            .claims
            .issuer()
            .ok_or(OidcFailure::MissingIssuer)?
            .to_owned();
        let mut keys = self.keys(&issuer, false).await?;
        if keys.find(kid).is_none() {
            // A key rotated in since the last fetch.
            keys = self.keys(&issuer, true).await?;
        }
        let jwk = keys.find(kid).ok_or(OidcFailure::UnknownKey)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| OidcFailure::UnusableKey)?;
        if !signature_verifies(jwt.token, &key, algorithm) {
            return Err(OidcFailure::BadSignature);
        }
        Ok(VerifiedJwt {
            issuer,
            algorithm,
            kid: kid.map(str::to_owned),
            claims: jwt.claims,
        })
    }

    /// The issuer's keys, from the cache unless `refresh`.
    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<KeySet>, OidcFailure> {
        let mut cache = self.keys.lock().await;
        if let (Some(keys), false) = (cache.get(issuer), refresh) {
            return Ok(Arc::clone(keys));
        }
        let keys = Arc::new(self.fetch_keys(issuer).await?);
        cache.insert(issuer.to_owned(), Arc::clone(&keys));
        Ok(keys)
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<KeySet, OidcFailure> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OidcFailure::KeysUnavailable(format!("{discovery_url} names no jwks_uri"))
            })?;
        let document = self.get_json(jwks_uri).await?;
        KeySet::from_document(&document)
            .ok_or_else(|| OidcFailure::KeysUnavailable(format!("{jwks_uri} holds no keys array")))
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcFailure> {
        let unavailable = |why: String| OidcFailure::KeysUnavailable(format!("{url}: {why}"));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}")));
        }
        response
            .json::<Value>()
            .await
            .map_err(|e| unavailable(format!("not JSON: {}", e.without_url())))
    }
}

/// Whether `token`'s signature verifies with `key` under `algorithm`, and nothing else: claims
/// are each cloud's to check, with its own words. Also for keys that come from elsewhere than
/// a JWKS (a client's registered public key).
pub fn signature_verifies(token: &str, key: &DecodingKey, algorithm: Algorithm) -> bool {
    let mut only_signature = Validation::new(algorithm);
    only_signature.validate_exp = false;
    only_signature.validate_aud = false;
    only_signature.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, key, &only_signature).is_ok()
}

#[cfg(test)]
mod tests;
