//! STS's token exchange: the request's parameters, then the subject token's checks as a
//! workload identity pool's OIDC provider makes them, in this order — the provider named by
//! `audience` exists and is enabled; `iss` is the provider's issuer; the header's algorithm
//! (RS256, ES256) and `kid`, and the signature against the issuer's JWKS; `aud` holds an
//! allowed audience; `iat`/`exp` with about a minute of skew; `exp − iat` under 48 hours; the
//! mapped `google.subject` (`assertion.sub`) at most 127 bytes. A federated token lives until
//! the subject token expires, at most an hour (as measured against Google). When the API is
//! disabled on the project that `audience` names, every exchange is refused first, in Google's
//! API error shape (not RFC 6749's).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::Response;
use keyfed_core::SecretString;
use keyfed_core::clock::unix_seconds;
use keyfed_core::emulator::oidc::Algorithm;
use keyfed_core::emulator::{OidcFailure, Policy, UnverifiedJwt};
use serde_json::json;

use super::routes::{GoogleFault, OAuthFault, json_response};
use super::{GoogleApi, IssuedKind, IssuedToken, PoolProvider, State, principal, random_token};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TOKEN_TYPES: &[&str] = &[
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];
const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";

/// How far `iat` may be ahead and `exp` behind Google's clock.
const SKEW_SECS: u64 = 60;
/// The longest subject token lifetime (`exp − iat`) accepted.
const MAX_TOKEN_LIFETIME_SECS: u64 = 48 * 3600;
/// The longest a federated token lives.
const MAX_FEDERATED_SECS: u64 = 3600;
/// The longest mapped `google.subject`.
const MAX_SUBJECT_BYTES: usize = 127;

/// What a pool provider accepts in a subject token's header.
const POLICY: Policy = Policy {
    algorithms: &[Algorithm::RS256, Algorithm::ES256],
    require_kid: true,
};

const INVALID_AUDIENCE: &str = "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.";
const INVALID_TARGET: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";
const ISSUER_UNREACHABLE: &str = "Error connecting to the given credential's issuer.";

pub(crate) async fn token(Extract(state): Extract<Arc<State>>, body: Bytes) -> Response {
    state.sts_calls.fetch_add(1, Ordering::Relaxed);
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    if !state.enabled(GoogleApi::Sts)
        && let Some(project) = param(&params, "audience")
            .and_then(|a| a.strip_prefix("//iam.googleapis.com/projects/"))
            .and_then(|rest| rest.split('/').next())
            .filter(|number| !number.is_empty())
    {
        return GoogleFault::service_disabled(GoogleApi::Sts, project).into_response();
    }
    match exchange(&state, &params).await {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(fault) => fault.into_response(),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn exchange(
    state: &State,
    params: &[(String, String)],
) -> Result<serde_json::Value, OAuthFault> {
    match param(params, "grant_type") {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return Err(OAuthFault::new(
                "unsupported_grant_type",
                format!("Unsupported grant_type: {other}"),
            ));
        }
        None => return Err(OAuthFault::invalid_request("Missing grant_type.")),
    }
    if param(params, "requested_token_type") != Some(ACCESS_TOKEN_TYPE) {
        return Err(OAuthFault::invalid_request(
            "Invalid value for \"requested_token_type\". Only urn:ietf:params:oauth:token-type:access_token is supported.",
        ));
    }
    if !param(params, "subject_token_type").is_some_and(|t| SUBJECT_TOKEN_TYPES.contains(&t)) {
        return Err(OAuthFault::invalid_request(
            "Invalid value for \"subject_token_type\". For OIDC providers use urn:ietf:params:oauth:token-type:jwt or urn:ietf:params:oauth:token-type:id_token.",
        ));
    }
    let name = param(params, "audience")
        .and_then(|a| a.strip_prefix("//iam.googleapis.com/"))
        .filter(|name| is_provider_name(name))
        .ok_or_else(|| OAuthFault::invalid_request(INVALID_AUDIENCE))?;
    let provider = state
        .providers
        .iter()
        .find(|p| p.name == name && !p.disabled)
        .ok_or_else(|| OAuthFault::new("invalid_target", INVALID_TARGET))?;
    let scopes: Vec<String> = param(params, "scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return Err(OAuthFault::new("invalid_scope", "Missing scope."));
    }
    if let Some(bad) = scopes.iter().find(|s| !s.starts_with(SCOPE_PREFIX)) {
        return Err(OAuthFault::new(
            "invalid_scope",
            format!("Invalid scope: {bad}"),
        ));
    }
    let subject_token = param(params, "subject_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthFault::invalid_request("Missing subject_token."))?;

    let subject = verify(state, provider, subject_token).await?;

    let now = unix_seconds(state.clock.now());
    let expires_in = subject.exp.saturating_sub(now).min(MAX_FEDERATED_SECS);
    if expires_in == 0 {
        return Err(stale(subject.iat));
    }
    let token = SecretString::from(random_token("ya29.d.", 160));
    let expires_at = state.clock.now() + std::time::Duration::from_secs(expires_in);
    state.remember(
        &token,
        IssuedToken {
            kind: IssuedKind::Federated {
                provider: provider.name.clone(),
            },
            principal: principal(provider.pool(), &subject.sub),
            scopes,
            expires_at,
        },
    );
    use keyfed_core::ExposeSecret as _;
    Ok(json!({
        "access_token": token.expose_secret(),
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
}

/// `projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<id>`.
fn is_provider_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    matches!(
        parts.as_slice(),
        ["projects", number, "locations", "global", "workloadIdentityPools", pool, "providers", id]
            if !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
                && !pool.is_empty()
                && !id.is_empty()
    )
}

/// A subject token that passed every check.
struct Subject {
    sub: String,
    iat: u64,
    exp: u64,
}

fn stale(iat: u64) -> OAuthFault {
    OAuthFault::invalid_grant(format!("ID Token issued at {iat} is stale to sign-in."))
}

/// Google's words for each way a token fails the header and signature checks.
fn signature_fault(failure: OidcFailure) -> OAuthFault {
    match failure {
        OidcFailure::Malformed => OAuthFault::invalid_grant("Unable to parse the ID Token."),
        OidcFailure::MissingIssuer => OAuthFault::invalid_grant(
            "The issuer in ID Token null does not match the expected one in config",
        ),
        OidcFailure::Algorithm(other) => OAuthFault::invalid_grant(format!(
            "The ID Token is signed with {other:?}; the supported signing algorithms are RS256 and ES256."
        )),
        OidcFailure::MissingKid => {
            OAuthFault::invalid_grant("The ID Token header has no key ID (kid).")
        }
        OidcFailure::KeysUnavailable(_) | OidcFailure::UnknownKey | OidcFailure::UnusableKey => {
            OAuthFault::invalid_grant(ISSUER_UNREACHABLE)
        }
        OidcFailure::BadSignature => {
            OAuthFault::invalid_grant("Unable to verify the ID Token signature.")
        }
    }
}

async fn verify(
    state: &State,
    provider: &PoolProvider,
    token: &str,
) -> Result<Subject, OAuthFault> {
    let jwt = UnverifiedJwt::parse(token).map_err(signature_fault)?;
    match jwt.unverified_claims().issuer() {
        Some(iss) if iss == provider.issuer => {}
        Some(iss) => {
            return Err(OAuthFault::invalid_grant(format!(
                "The issuer in ID Token {iss} does not match the expected one in config"
            )));
        }
        None => return Err(signature_fault(OidcFailure::MissingIssuer)),
    }
    let claims = state
        .verifier
        .verify(jwt, &POLICY)
        .await
        .map_err(signature_fault)?
        .claims;

    let allowed = provider.audiences();
    let audiences = claims.audiences();
    if !audiences.iter().any(|a| allowed.iter().any(|x| x == a)) {
        return Err(OAuthFault::invalid_grant(format!(
            "The audience in ID Token [{}] does not match the expected audience.",
            audiences.join(", ")
        )));
    }

    let now = unix_seconds(state.clock.now());
    let Some(iat) = claims.seconds("iat") else {
        return Err(OAuthFault::invalid_grant(
            "ID Token issued at null is stale to sign-in.",
        ));
    };
    let Some(exp) = claims.seconds("exp") else {
        return Err(stale(iat));
    };
    if now > exp.saturating_add(SKEW_SECS) {
        return Err(stale(iat));
    }
    if iat > now.saturating_add(SKEW_SECS) {
        return Err(OAuthFault::invalid_grant(format!(
            "ID Token issued at {iat} is not yet valid (it is in the future)."
        )));
    }
    if exp.saturating_sub(iat) >= MAX_TOKEN_LIFETIME_SECS {
        return Err(OAuthFault::invalid_grant(format!(
            "The ID Token's lifetime (exp − iat = {} s) must be less than 48 hours.",
            exp.saturating_sub(iat)
        )));
    }

    // The provider's attribute mapping: google.subject = assertion.sub.
    let sub = claims.string("sub").unwrap_or_default();
    if sub.is_empty() {
        return Err(OAuthFault::invalid_request(
            "The mapped attribute google.subject is empty. Either modify your attribute mapping or the incoming assertion to produce a non-empty google.subject.",
        ));
    }
    if sub.len() > MAX_SUBJECT_BYTES {
        return Err(OAuthFault::invalid_request(
            "The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify your attribute mapping or the incoming assertion to produce a mapped attribute that is less than 127 bytes.",
        ));
    }
    Ok(Subject {
        sub: sub.to_owned(),
        iat,
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_have_googles_shape() {
        assert!(is_provider_name(
            "projects/123/locations/global/workloadIdentityPools/p/providers/i"
        ));
        for bad in [
            "projects/my-proj/locations/global/workloadIdentityPools/p/providers/i",
            "projects/123/locations/global/workloadIdentityPools/p",
            "projects/123/locations/global/workloadIdentityPools/p/providers/",
            "",
        ] {
            assert!(!is_provider_name(bad), "{bad}");
        }
    }
}
