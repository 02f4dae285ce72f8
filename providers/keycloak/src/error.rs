//! Everything that can go wrong getting a token, each variant naming the issuer and saying what
//! to check next. Keycloak's own `error` and `error_description` are quoted verbatim.

use std::fmt;
use std::time::Duration;

use keyfed_core::http::HttpSetupError;

use crate::jwt::Audience;

/// Why no usable token came back from an issuer.
#[derive(Debug, thiserror::Error)]
pub enum KeycloakError {
    #[error("issuer '{issuer}': {source}")]
    Setup {
        issuer: String,
        #[source]
        source: HttpSetupError,
    },
    #[error("issuer '{issuer}': {method} {url} failed: {detail}")]
    Transport {
        issuer: String,
        method: &'static str,
        url: String,
        detail: String,
        timed_out: bool,
    },
    #[error("issuer '{issuer}': {method} {url} answered HTTP {status}: {body}")]
    Http {
        issuer: String,
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "issuer '{issuer}' refused the token request (HTTP {status}): {error}: \"{description}\"{}",
        hint_line(hint)
    )]
    OAuth {
        issuer: String,
        status: u16,
        error: String,
        description: String,
        hint: Option<String>,
    },
    #[error("issuer '{issuer}': the {what} from {url} is not valid: {detail}")]
    InvalidResponse {
        issuer: String,
        what: &'static str,
        url: String,
        detail: String,
    },
    /// The discovery document names no JWKS, so no token can be verified: only a change helps.
    #[error(
        "issuer '{issuer}': the discovery document at {url} has no jwks_uri, so signatures cannot be verified\n  hint: check the issuer url, or set verify_signature = false on the issuer to skip the check"
    )]
    NoJwksUri { issuer: String, url: String },
    #[error("issuer '{issuer}': the token for audience \"{audience}\" was refused: {problem}")]
    TokenRejected {
        issuer: String,
        audience: String,
        problem: TokenProblem,
    },
    #[error("issuer '{issuer}': cannot sign the client assertion: {detail}")]
    Assertion { issuer: String, detail: String },
}

fn hint_line(hint: &Option<String>) -> String {
    hint.as_deref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

/// What was wrong with a token the issuer returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    Malformed(String),
    AudienceMissing {
        expected: String,
        found: Audience,
        scope: Option<String>,
    },
    AudienceNotSingle {
        expected: String,
        found: Audience,
    },
    IssuerMismatch {
        expected: String,
        found: Option<String>,
    },
    NoExpiry,
    Expired {
        seconds_ago: u64,
    },
    TooShortLived {
        remaining: Duration,
        minimum: Duration,
    },
    UnsupportedAlgorithm(String),
    UnknownKey {
        kid: Option<String>,
    },
    BadSignature(String),
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "{why}"),
            Self::AudienceMissing {
                expected,
                found,
                scope,
            } => {
                write!(f, "its aud is {found}, which does not hold \"{expected}\"")?;
                let via = match scope {
                    Some(s) => format!("the client scope(s) \"{s}\" requested by this target"),
                    None => "a client scope (set `scope` on the target to request it)".to_owned(),
                };
                write!(
                    f,
                    "\n  hint: add an audience mapper to {via} in Keycloak (Client scopes → <scope> → Mappers → By configuration → Audience, \"Included Custom Audience\" = \"{expected}\", \"Add to access token\" on), and link the scope to the client"
                )
            }
            Self::AudienceNotSingle { expected, found } => write!(
                f,
                "its aud is {found}, but strict_audience requires exactly \"{expected}\"\n  hint: Keycloak adds \"account\" through the \"roles\" client scope's audience resolve mapper; remove the \"roles\" scope from the client's default client scopes (or the service account's account-client roles), or set strict_audience = false"
            ),
            Self::IssuerMismatch { expected, found } => write!(
                f,
                "its iss is {}, not the configured issuer \"{expected}\"\n  hint: the issuer url must match Keycloak's frontend URL for the realm exactly (scheme, host, port, /auth prefix)",
                found
                    .as_deref()
                    .map_or("missing".to_owned(), |s| format!("\"{s}\""))
            ),
            Self::NoExpiry => write!(f, "it has no exp claim"),
            Self::Expired { seconds_ago } => write!(
                f,
                "it expired {seconds_ago} s ago\n  hint: check this host's clock (timedatectl) against the issuer's"
            ),
            Self::TooShortLived { remaining, minimum } => write!(
                f,
                "it has {} s of life left, less than min_token_lifetime ({} s)\n  hint: raise the client's Access Token Lifespan in Keycloak or lower min_token_lifetime",
                remaining.as_secs(),
                minimum.as_secs()
            ),
            Self::UnsupportedAlgorithm(alg) => write!(
                f,
                "it is signed with {alg}, which keyfed does not accept (RS*, PS*, ES256/384 and EdDSA only)"
            ),
            // Only ever reported after the JWKS was fetched again for this token.
            Self::UnknownKey { kid } => write!(
                f,
                "no key in the issuer's JWKS matches its kid {}, even after fetching the JWKS again\n  hint: the key that signed it is not published by the issuer: disabled or removed in the realm (Realm settings → Keys), or the token did not come from this issuer (check token_endpoint)",
                kid.as_deref()
                    .map_or("(none)".to_owned(), |k| format!("\"{k}\""))
            ),
            Self::BadSignature(why) => write!(f, "its signature does not verify: {why}"),
        }
    }
}

/// A one-line hint for Keycloak's common refusals.
pub(crate) fn oauth_hint(
    error: &str,
    description: &str,
    client_id: &str,
    method: &str,
    scope: Option<&str>,
) -> Option<String> {
    match error {
        // Keycloak found no registered key with the assertion's `kid` and algorithm.
        "invalid_client" if description == "Unable to load public key" => Some(format!(
            "Keycloak has no key for client \"{client_id}\" matching this assertion's kid and algorithm: a key imported in the client's Keys tab (public key or certificate) gets a kid Keycloak derives itself, so leave key_id unset for it; with a JWKS, key_id must be a kid in it and the key must have \"use\": \"sig\""
        )),
        "invalid_client" | "unauthorized_client" if method.ends_with("_jwt") => Some(format!(
            "check that client \"{client_id}\" uses the \"Signed JWT\" (private_key_jwt) or \"Signed JWT with Client Secret\" (client_secret_jwt) authenticator matching auth = \"{method}\", that its key or secret matches, and that this host's clock is right"
        )),
        "invalid_client" => Some(format!(
            "check that client \"{client_id}\" exists in the realm and is confidential (Client authentication on), and that the secret matches its Credentials tab"
        )),
        "unauthorized_client" => Some(format!(
            "check the secret for client \"{client_id}\" (Credentials tab), and that \"Service accounts roles\" is enabled for it"
        )),
        "invalid_scope" => Some(format!(
            "link the client scope(s) \"{}\" to client \"{client_id}\" (Clients → {client_id} → Client scopes → Add client scope, as Optional or Default)",
            scope.unwrap_or("")
        )),
        _ => None,
    }
}
