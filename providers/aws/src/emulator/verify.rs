//! The checks STS makes on a web identity token, in STS's order and with its error codes and
//! messages: the issuer must be a registered OIDC provider; the signature must verify against
//! a key from the issuer's JWKS (found through `{iss}/.well-known/openid-configuration`,
//! fetched once per issuer and again when a `kid` is unknown); `aud` must hold one of the
//! provider's client IDs; `exp` may be at most 5 minutes past.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyfed_core::clock::unix_seconds;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::iam::OidcProvider;
use super::routes::StsFault;
use crate::token_facts::provider_name;

/// How far past `exp` STS still accepts a token.
const EXP_SKEW_SECS: u64 = 300;

/// A token that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    pub claims: Map<String, Value>,
    pub issuer: String,
    /// The provider's IAM name (issuer without scheme).
    pub provider: String,
    pub subject: String,
    /// The value of `aud` that is in the provider's client ID list.
    pub audience: String,
}

/// One issuer's signing keys.
#[derive(Debug, Default)]
struct KeySet(Vec<(Option<String>, Jwk)>);

/// Fetches and caches issuers' JWKS.
#[derive(Debug)]
pub(crate) struct Verifier {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Arc<KeySet>>>,
}

impl Verifier {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub async fn verify(
        &self,
        token: &str,
        providers: &[OidcProvider],
        now: std::time::SystemTime,
    ) -> Result<VerifiedToken, StsFault> {
        let not_jwt = || {
            StsFault::invalid_token(
                "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)",
            )
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| not_jwt())?;
        let claims: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
                .map(|d| d.claims)
                .map_err(|_| not_jwt())?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| StsFault::invalid_token("Missing issuer (iss) claim"))?
            .to_owned();
        let provider_key = provider_name(&issuer);
        let provider = providers
            .iter()
            .find(|p| p.name() == provider_key)
            .ok_or_else(|| {
                StsFault::invalid_token(&format!(
                    "No OpenIDConnect provider found in your account for {issuer}"
                ))
            })?;

        let algorithm = match header.alg {
            a @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384) => a,
            other => {
                return Err(StsFault::invalid_token(&format!(
                    "Unsupported token signing algorithm {other:?}; use an RSA or EC algorithm"
                )));
            }
        };
        let kid = header.kid.as_deref();
        let mut keys = self.keys(&issuer, false).await?;
        if keys.find(kid).is_none() {
            keys = self.keys(&issuer, true).await?;
        }
        let jwk = keys.find(kid).ok_or_else(|| {
            StsFault::invalid_token(
                "The web identity token that was passed could not be validated by AWS: no key in the provider's JWKS matches its kid. Get a new identity token from the identity provider and then retry the request.",
            )
        })?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| {
            StsFault::idp_communication("The provider's JWKS holds a key AWS cannot use")
        })?;
        let mut only_signature = Validation::new(algorithm);
        only_signature.validate_exp = false;
        only_signature.validate_aud = false;
        only_signature.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &key, &only_signature).map_err(|_| {
            StsFault::invalid_token(
                "The web identity token that was passed could not be validated by AWS: its signature does not verify. Get a new identity token from the identity provider and then retry the request.",
            )
        })?;

        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let audience = audiences
            .into_iter()
            .find(|a| provider.client_ids.iter().any(|c| c == a))
            .ok_or_else(|| StsFault::invalid_token("Incorrect token audience"))?
            .to_owned();

        let now_secs = unix_seconds(now);
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| StsFault::invalid_token("Missing expiration (exp) claim"))?;
        if now_secs > exp.saturating_add(EXP_SKEW_SECS) {
            return Err(StsFault::expired_token(&format!(
                "Token expired: current date/time {now_secs} must be before the expiration date/time {exp}"
            )));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| StsFault::invalid_token("Missing subject (sub) claim"))?
            .to_owned();
        Ok(VerifiedToken {
            claims,
            issuer,
            provider: provider_key,
            subject,
            audience,
        })
    }

    /// The issuer's keys, from the cache unless `refresh`.
    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<KeySet>, StsFault> {
        let mut cache = self.keys.lock().await;
        if let (Some(keys), false) = (cache.get(issuer), refresh) {
            return Ok(Arc::clone(keys));
        }
        let keys = Arc::new(self.fetch_keys(issuer).await?);
        cache.insert(issuer.to_owned(), Arc::clone(&keys));
        Ok(keys)
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<KeySet, StsFault> {
        let unreachable = || {
            StsFault::idp_communication(
                "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements",
            )
        };
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery = self
            .get_json(&discovery_url)
            .await
            .ok_or_else(unreachable)?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(unreachable)?;
        let document = self.get_json(jwks_uri).await.ok_or_else(unreachable)?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(unreachable)?
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
        Ok(KeySet(keys))
    }

    async fn get_json(&self, url: &str) -> Option<Value> {
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<Value>().await.ok()
    }
}

impl KeySet {
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
}
