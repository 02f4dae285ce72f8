//! The token endpoint: the client-credentials grant with a federated client assertion, checked
//! in this order — tenant, parameters, app, scope, then the assertion: JWT, RS256, a credential
//! for its issuer, signature, lifetime, validity, subject, audience, propagation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyfed_core::clock::{from_unix_seconds, unix_seconds};
use keyfed_core::emulator::oidc::Algorithm;
use keyfed_core::emulator::{Claims, OidcFailure, Policy, UnverifiedJwt};
use keyfed_core::{ExposeSecret as _, SecretString};
use rand::Rng as _;
use serde_json::json;

use super::routes::{EntraFault, entra_instant, json_response, printable, tenant_not_found};
use super::{FederatedCredential, IssuedToken, State};

const GRANT_TYPE: &str = "client_credentials";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const FIC_DOCS: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

/// How far `nbf`/`iat` may be ahead and `exp` behind Entra's clock.
const SKEW_SECS: u64 = 300;
/// The longest assertion lifetime (`exp − iat`) taken: 1.01:00:00.
const MAX_ASSERTION_LIFETIME_SECS: u64 = 25 * 3600;

/// Entra takes RS256 only; a `kid` is not required when the JWKS has one key.
const POLICY: Policy = Policy {
    algorithms: &[Algorithm::RS256],
    require_kid: false,
};

pub(crate) async fn token(
    Extract(state): Extract<Arc<State>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    state.token_calls.fetch_add(1, Ordering::Relaxed);
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    match grant(&state, &tenant, &params).await {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(fault) => fault.into_response(&state),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn missing(name: &str) -> EntraFault {
    EntraFault::new(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

async fn grant(
    state: &State,
    tenant: &str,
    params: &[(String, String)],
) -> Result<serde_json::Value, EntraFault> {
    if !state.is_tenant(tenant) {
        if tenant.contains('.') || tenant.len() == 36 {
            return Err(tenant_not_found(tenant));
        }
        return Err(EntraFault::new(
            400,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{}' is neither a valid DNS name, nor a valid external domain.",
                printable(tenant)
            ),
        ));
    }
    match param(params, "grant_type") {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return Err(EntraFault::new(
                400,
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{}'.",
                    printable(other)
                ),
            ));
        }
        None => return Err(missing("grant_type")),
    }
    let client_id = param(params, "client_id").ok_or_else(|| missing("client_id"))?;
    let scope = param(params, "scope").ok_or_else(|| missing("scope"))?;
    let assertion = match (
        param(params, "client_assertion_type"),
        param(params, "client_assertion"),
    ) {
        (Some(ASSERTION_TYPE), Some(assertion)) => assertion,
        _ => {
            return Err(EntraFault::new(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
            .inline());
        }
    };
    let (object_id, managed_identity, credentials) = {
        let apps = state
            .apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = apps.iter().find(|e| e.app.client_id == client_id) else {
            return Err(EntraFault::new(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    printable(client_id),
                    printable(tenant)
                ),
            )
            .inline());
        };
        (
            entry.object_id.clone(),
            entry.app.managed_identity,
            entry.app.federated_credentials.clone(),
        )
    };
    let resource = check_scope(state, tenant, scope)?;

    // The assertion.
    let jwt = UnverifiedJwt::parse(assertion).map_err(|_| invalid_jwt())?;
    let unverified = jwt.unverified_claims().clone();
    let iss = unverified.issuer().unwrap_or_default().to_owned();
    let sub = unverified.string("sub").unwrap_or_default().to_owned();
    let audiences: Vec<String> = unverified
        .audiences()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if credentials.is_empty() {
        return Err(no_match(&iss, &sub, &audiences.join(",")));
    }
    if jwt.algorithm() != Algorithm::RS256 {
        return Err(algorithm(jwt.algorithm()));
    }
    if !credentials.iter().any(|(c, _)| c.issuer == iss) {
        return Err(EntraFault::new(
            401,
            "invalid_client",
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}",
                printable(&iss)
            ),
        )
        .inline());
    }
    let claims = state
        .verifier
        .verify(jwt, &POLICY)
        .await
        .map_err(signature_fault)?
        .claims;
    check_times(state, &claims)?;

    let by_issuer: Vec<&(FederatedCredential, u32)> = credentials
        .iter()
        .filter(|(c, _)| c.issuer == iss)
        .collect();
    let by_subject: Vec<&(FederatedCredential, u32)> = by_issuer
        .iter()
        .copied()
        .filter(|(c, _)| c.subject == sub)
        .collect();
    if by_subject.is_empty() {
        let text = printable(&sub);
        return Err(
            if by_issuer
                .iter()
                .any(|(c, _)| c.subject.eq_ignore_ascii_case(&sub))
            {
                EntraFault::new(
                    401,
                    "invalid_client",
                    7002138,
                    format!(
                        "No matching federated identity record found for presented assertion subject '{text}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: {FIC_DOCS}."
                    ),
                )
            } else {
                EntraFault::new(
                    401,
                    "invalid_client",
                    700213,
                    format!(
                        "No matching federated identity record found for presented assertion subject '{text}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}"
                    ),
                )
            }
            .inline(),
        );
    }
    let matching: Vec<&FederatedCredential> = by_subject
        .iter()
        .map(|(c, _)| c)
        .filter(|c| audiences.contains(&c.audience))
        .collect();
    let Some(first) = matching.first() else {
        return Err(EntraFault::new(
            401,
            "invalid_client",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}",
                printable(&audiences.join(","))
            ),
        )
        .inline());
    };
    if propagating(state, client_id, &matching) {
        return Err(no_match(&iss, &sub, &first.audience));
    }
    Ok(issue(
        state,
        client_id,
        &object_id,
        managed_identity,
        scope,
        &resource,
        &iss,
        &sub,
    ))
}

/// Whether every credential the assertion matches is still propagating; if so, one of them
/// counts this refusal.
fn propagating(state: &State, client_id: &str, matching: &[&FederatedCredential]) -> bool {
    let mut apps = state
        .apps
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(entry) = apps.iter_mut().find(|e| e.app.client_id == client_id) else {
        return false;
    };
    let mut pending: Vec<&mut (FederatedCredential, u32)> = entry
        .app
        .federated_credentials
        .iter_mut()
        .filter(|(c, _)| matching.contains(&c))
        .collect();
    if pending.iter().any(|(_, n)| *n == 0) {
        return false;
    }
    match pending.first_mut() {
        Some((_, n)) => {
            *n -= 1;
            true
        }
        None => false,
    }
}

/// AADSTS70021, with what the assertion presented.
fn no_match(iss: &str, sub: &str, aud: &str) -> EntraFault {
    EntraFault::new(
        400,
        "invalid_request",
        70021,
        format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'. {FIC_DOCS}",
            printable(iss),
            printable(sub),
            printable(aud)
        ),
    )
}

fn invalid_jwt() -> EntraFault {
    EntraFault::new(
        400,
        "invalid_request",
        50027,
        "JWT token is invalid or malformed.",
    )
}

fn algorithm(alg: Algorithm) -> EntraFault {
    EntraFault::new(
        400,
        "invalid_request",
        5002738,
        format!(
            "Invalid JWT token. '{alg:?}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256'"
        ),
    )
    .inline()
}

/// Entra's words for each way the signature check fails.
fn signature_fault(failure: OidcFailure) -> EntraFault {
    match failure {
        OidcFailure::Malformed | OidcFailure::MissingIssuer => invalid_jwt(),
        OidcFailure::Algorithm(alg) => algorithm(alg),
        OidcFailure::KeysUnavailable(_) => EntraFault::new(
            400,
            "invalid_request",
            50166,
            "Request to External OIDC endpoint failed.",
        ),
        OidcFailure::MissingKid
        | OidcFailure::UnknownKey
        | OidcFailure::UnusableKey
        | OidcFailure::BadSignature => EntraFault::new(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
        )
        .inline(),
    }
}

/// `exp − iat` at most 1.01:00:00 (a missing `iat` counts as 0), then `nbf`/`iat`/`exp`
/// against the clock.
fn check_times(state: &State, claims: &Claims) -> Result<(), EntraFault> {
    let iat = claims.seconds("iat").unwrap_or(0);
    let exp = claims.seconds("exp").unwrap_or(0);
    if exp.saturating_sub(iat) > MAX_ASSERTION_LIFETIME_SECS || iat == 0 {
        return Err(EntraFault::new(
            400,
            "invalid_request",
            70023,
            format!(
                "External OIDC Provider token must have a lifetime of less than or equal to 1.01:00:00. Token issued at {iat}. Token expires on {exp}."
            ),
        ));
    }
    let now = state.clock.now();
    let now_secs = unix_seconds(now);
    let valid_from = claims.seconds("nbf").unwrap_or(iat);
    if now_secs > exp.saturating_add(SKEW_SECS) || valid_from > now_secs.saturating_add(SKEW_SECS) {
        return Err(EntraFault::new(
            401,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                entra_instant(now),
                entra_instant(from_unix_seconds(valid_from)),
                entra_instant(from_unix_seconds(exp))
            ),
        )
        .inline());
    }
    Ok(())
}

/// The resource of a client-credentials scope: one `<resource>/.default` the tenant knows.
fn check_scope(state: &State, tenant: &str, scope: &str) -> Result<String, EntraFault> {
    let shown = printable(scope);
    if scope.split(' ').filter(|s| !s.is_empty()).count() != 1 {
        return Err(EntraFault::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {shown} is not valid."
            ),
        ));
    }
    let Some(resource) = scope.trim().strip_suffix("/.default") else {
        return Err(EntraFault::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {shown} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
        .inline());
    };
    if resource.is_empty() {
        return Err(EntraFault::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {shown} is not valid."
            ),
        ));
    }
    if !state.knows_resource(resource) {
        return Err(EntraFault::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                printable(resource),
                printable(tenant)
            ),
        ));
    }
    Ok(resource.to_owned())
}

/// A JWT-shaped access token for `resource`, as Entra's v1 access tokens look (signed by
/// nobody: its signature is random), and the answer carrying it.
#[allow(clippy::too_many_arguments)]
fn issue(
    state: &State,
    client_id: &str,
    object_id: &str,
    managed_identity: bool,
    scope: &str,
    resource: &str,
    iss: &str,
    sub: &str,
) -> serde_json::Value {
    let now = state.clock.now();
    let lifetime = state.token_lifetime.max(Duration::from_secs(1));
    let expires_at = now + lifetime;
    let tid = &state.tenant_id;
    let sts = format!("https://sts.windows.net/{tid}/");
    let kid = random_text(27);
    let header = json!({ "typ": "JWT", "alg": "RS256", "x5t": kid, "kid": kid });
    let mut claims = json!({
        "aud": resource,
        "iss": sts,
        "iat": unix_seconds(now),
        "nbf": unix_seconds(now),
        "exp": unix_seconds(expires_at),
        "aio": random_text(40),
        "appid": client_id,
        "appidacr": "2",
        "idp": sts,
        "idtyp": "app",
        "oid": object_id,
        "rh": random_text(40),
        "sub": object_id,
        "tid": tid,
        "uti": random_text(22),
        "ver": "1.0",
    });
    if managed_identity && let Some(object) = claims.as_object_mut() {
        object.insert(
            "xms_mirid".to_owned(),
            json!(format!(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/keyfed/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{client_id}"
            )),
        );
    }
    let token = SecretString::from(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        random_text(342)
    ));
    state.remember(
        &token,
        IssuedToken {
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            resource: resource.to_owned(),
            issuer: iss.to_owned(),
            subject: sub.to_owned(),
            expires_at,
        },
    );
    let secs = lifetime.as_secs();
    json!({
        "token_type": "Bearer",
        "expires_in": secs,
        "ext_expires_in": secs,
        "access_token": token.expose_secret(),
    })
}

/// `len` random characters of the base64url alphabet.
fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
