//! The checks STS makes on a web identity token, in STS's order and with its error codes and
//! messages: the issuer must be a registered OIDC provider; the signature must verify against
//! a key from the issuer's JWKS (keyfed-core's [`OidcVerifier`] finds, caches and refetches
//! them); `aud` must hold one of the provider's client IDs; `exp` may be at most 5 minutes
//! past.

use keyfed_core::clock::unix_seconds;
use keyfed_core::emulator::oidc::Algorithm;
use keyfed_core::emulator::{Claims, OidcFailure, OidcVerifier, Policy, UnverifiedJwt};

use super::iam::OidcProvider;
use super::routes::StsFault;
use crate::provider_name::provider_name;

/// How far past `exp` STS still accepts a token.
const EXP_SKEW_SECS: u64 = 300;

/// What an IAM OIDC provider accepts: any RSA or EC signature; a token without `kid` is checked
/// with the JWKS's only key.
const POLICY: Policy = Policy {
    algorithms: &[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
    ],
    require_kid: false,
};

/// A token that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    pub claims: Claims,
    pub issuer: String,
    /// The provider's IAM name (issuer without scheme).
    pub provider: String,
    pub subject: String,
    /// The value of `aud` that is in the provider's client ID list.
    pub audience: String,
}

const NOT_A_JWT: &str = "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)";
const MISSING_ISSUER: &str = "Missing issuer (iss) claim";

/// STS's words for each way a token fails the signature checks.
fn fault(failure: OidcFailure) -> StsFault {
    match failure {
        OidcFailure::Malformed => StsFault::invalid_token(NOT_A_JWT),
        OidcFailure::MissingIssuer => StsFault::invalid_token(MISSING_ISSUER),
        OidcFailure::Algorithm(other) => StsFault::invalid_token(&format!(
            "Unsupported token signing algorithm {other:?}; use an RSA or EC algorithm"
        )),
        OidcFailure::MissingKid | OidcFailure::UnknownKey => StsFault::invalid_token(
            "The web identity token that was passed could not be validated by AWS: no key in the provider's JWKS matches its kid. Get a new identity token from the identity provider and then retry the request.",
        ),
        OidcFailure::KeysUnavailable(_) => StsFault::idp_communication(
            "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements",
        ),
        OidcFailure::UnusableKey => {
            StsFault::idp_communication("The provider's JWKS holds a key AWS cannot use")
        }
        OidcFailure::BadSignature => StsFault::invalid_token(
            "The web identity token that was passed could not be validated by AWS: its signature does not verify. Get a new identity token from the identity provider and then retry the request.",
        ),
    }
}

pub(crate) async fn verify(
    verifier: &OidcVerifier,
    token: &str,
    providers: &[OidcProvider],
    now: std::time::SystemTime,
) -> Result<VerifiedToken, StsFault> {
    let jwt = UnverifiedJwt::parse(token).map_err(fault)?;
    let issuer = jwt
        .unverified_claims()
        .issuer()
        .ok_or_else(|| StsFault::invalid_token(MISSING_ISSUER))?
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
    let claims = verifier.verify(jwt, &POLICY).await.map_err(fault)?.claims;

    let audience = claims
        .audiences()
        .into_iter()
        .find(|a| provider.client_ids.iter().any(|c| c == a))
        .ok_or_else(|| StsFault::invalid_token("Incorrect token audience"))?
        .to_owned();

    let now_secs = unix_seconds(now);
    let exp = claims
        .seconds("exp")
        .ok_or_else(|| StsFault::invalid_token("Missing expiration (exp) claim"))?;
    if now_secs > exp.saturating_add(EXP_SKEW_SECS) {
        return Err(StsFault::expired_token(&format!(
            "Token expired: current date/time {now_secs} must be before the expiration date/time {exp}"
        )));
    }
    let subject = claims
        .string("sub")
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
