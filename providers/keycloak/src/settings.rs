//! What the client needs to know about one issuer and one token request, already validated by
//! the caller (keyfed's configuration layer builds these).

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use keyfed_core::SecretString;
use keyfed_core::http::HttpSettings;
use url::Url;

/// One OIDC client at one issuer.
#[derive(Debug)]
pub struct IssuerSettings {
    /// The name the operator gave the issuer; every error message carries it.
    pub name: String,
    /// The issuer URL, e.g. `https://sso.example.com/realms/infra`; tokens' `iss` must equal it.
    pub url: Url,
    pub client_id: String,
    pub auth: ClientAuth,
    /// Skips discovery for the token endpoint when set.
    pub token_endpoint: Option<Url>,
    /// What a signed client assertion puts in `aud`.
    pub assertion_audience: AssertionAudience,
    /// Verify each token's signature against the issuer's JWKS (on unless switched off).
    pub verify_signature: bool,
    pub http: HttpSettings,
}

/// How the client proves its identity at the token endpoint.
pub enum ClientAuth {
    /// HTTP Basic with the id and secret form-urlencoded first (RFC 6749 §2.3.1).
    SecretBasic(SecretString),
    /// `client_id` and `client_secret` in the form body.
    SecretPost(SecretString),
    /// A JWT assertion signed with the client's private key.
    PrivateKeyJwt(SigningKey),
    /// A JWT assertion signed with HS256 over the client secret.
    SecretJwt(SecretString),
}

impl ClientAuth {
    /// The method's name as OIDC discovery and keyfed's configuration spell it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::SecretBasic(_) => "client_secret_basic",
            Self::SecretPost(_) => "client_secret_post",
            Self::PrivateKeyJwt(_) => "private_key_jwt",
            Self::SecretJwt(_) => "client_secret_jwt",
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.method(), keyfed_core::REDACTED)
    }
}

/// The value a client assertion carries in `aud`; Keycloak accepts either, single-valued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssertionAudience {
    #[default]
    Issuer,
    TokenEndpoint,
}

/// Algorithms keyfed signs client assertions with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Rs256,
    Ps256,
    Es256,
}

impl SigningAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "PS256" => Some(Self::Ps256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Ps256 => Algorithm::PS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

/// A private key that signs client assertions; never printed.
pub struct SigningKey {
    pub(crate) key: EncodingKey,
    pub(crate) algorithm: SigningAlgorithm,
    pub(crate) key_id: Option<String>,
}

/// Why a private key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("not a usable {algorithm} private key in PEM form ({detail})")]
pub struct KeyError {
    pub algorithm: &'static str,
    pub detail: String,
}

impl SigningKey {
    /// Parses a PEM private key (PKCS#1 or PKCS#8 for RSA, SEC1 or PKCS#8 for P-256).
    pub fn from_pem(
        pem: &[u8],
        algorithm: SigningAlgorithm,
        key_id: Option<String>,
    ) -> Result<Self, KeyError> {
        let parsed = match algorithm {
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => EncodingKey::from_rsa_pem(pem),
            SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(pem),
        };
        let key = parsed.map_err(|e| KeyError {
            algorithm: algorithm.name(),
            detail: e.to_string(),
        })?;
        // Sign once now so a key of the wrong type fails at configuration time, not mid-refresh.
        let probe = jsonwebtoken::Header::new(algorithm.jwt());
        jsonwebtoken::encode(&probe, &serde_json::json!({}), &key).map_err(|e| KeyError {
            algorithm: algorithm.name(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            key,
            algorithm,
            key_id,
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The public half of the key as the JWK an issuer registers for the client (`keyfed trust
    /// --keycloak`): `use` = `sig` (Keycloak ignores a key without it), `alg`, and `kid` = the
    /// configured key id, else the key's RFC 7638 thumbprint.
    pub fn public_jwk(&self) -> Result<serde_json::Value, KeyError> {
        use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
        let failed = |e: jsonwebtoken::errors::Error| KeyError {
            algorithm: self.algorithm.name(),
            detail: e.to_string(),
        };
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm.jwt()).map_err(failed)?;
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_id = Some(match &self.key_id {
            Some(kid) => kid.clone(),
            None => jwk.thumbprint(ThumbprintHash::SHA256).map_err(failed)?,
        });
        serde_json::to_value(&jwk).map_err(|e| KeyError {
            algorithm: self.algorithm.name(),
            detail: e.to_string(),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("key", &keyfed_core::REDACTED)
            .finish()
    }
}

/// One request for a token with a given audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The audience the token must carry (`aud` holds it).
    pub audience: String,
    /// With `strict_audience`, `aud` must be exactly this one value.
    pub strict_audience: bool,
    /// Keycloak client scopes to request (space-separated), e.g. one holding an audience mapper.
    pub scope: Option<String>,
    /// RFC 8707 `resource` parameter.
    pub resource: Option<String>,
    /// Send `audience=<audience>` in the form (some providers honour it; Keycloak ignores it).
    pub audience_parameter: bool,
    /// A token with less life left than this is refused.
    pub min_remaining: Duration,
}
