//! IAM Credentials: `POST /v1/projects/<project>/serviceAccounts/<email>:<method>` with the
//! method after a colon in the last path segment (`generateAccessToken`, `generateIdToken`),
//! so it is routed by hand. Checks in order: a bearer token the emulator issued and that has
//! not expired (else 401), the API is enabled on the caller's project (else 403
//! `SERVICE_DISABLED`), the service account and every delegate exist (else 404), the
//! caller's principal is bound as `roles/iam.workloadIdentityUser` on the account — or, with a
//! delegation chain, on its first account (else 403), then the method's own parameters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use keyfed_core::clock::{rfc3339, unix_seconds};
use keyfed_core::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::routes::{GoogleFault, html_not_found, json_response};
use super::{
    AccountEntry, GoogleApi, ID_TOKEN_ISSUER, IssuedKind, IssuedToken, State, principal_set,
    random_token,
};

/// `generateAccessToken`'s lifetime unless the request says otherwise, and its maximum.
const DEFAULT_LIFETIME_SECS: u64 = 3600;
const MAX_LIFETIME_SECS: u64 = 43_200;
/// An ID token's lifetime.
const ID_TOKEN_SECS: u64 = 3600;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rpc {
    AccessToken,
    IdToken,
}

impl Rpc {
    fn permission(self) -> &'static str {
        match self {
            Self::AccessToken => "iam.serviceAccounts.getAccessToken",
            Self::IdToken => "iam.serviceAccounts.getOpenIdToken",
        }
    }
}

/// A request body. Google reads it as proto3 JSON, where `null` means the field's default:
/// google-auth (Python) sends `"delegates": null` when it has none (issue 9).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default, deserialize_with = "null_as_default")]
    scope: Vec<String>,
    lifetime: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    delegates: Vec<String>,
    audience: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    include_email: bool,
}

/// A field that is absent or `null` takes its default, as in proto3 JSON.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub(crate) async fn handle(
    Extract(state): Extract<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((email, rpc)) = route(uri.path()).filter(|_| method == Method::POST) else {
        return html_not_found(uri.path());
    };
    match rpc {
        Rpc::AccessToken => state.access_token_calls.fetch_add(1, Ordering::Relaxed),
        Rpc::IdToken => state.id_token_calls.fetch_add(1, Ordering::Relaxed),
    };
    match call(&state, &email, rpc, &headers, &body) {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(fault) => fault.into_response(),
    }
}

/// `/v1/projects/<project>/serviceAccounts/<email>:<method>` → the email and the method.
fn route(path: &str) -> Option<(String, Rpc)> {
    let rest = path.strip_prefix("/v1/projects/")?;
    let (_project, rest) = rest.split_once("/serviceAccounts/")?;
    let (email, method) = rest.rsplit_once(':')?;
    let rpc = match method {
        "generateAccessToken" => Rpc::AccessToken,
        "generateIdToken" => Rpc::IdToken,
        _ => return None,
    };
    let email = percent_decode(email)?;
    (!email.is_empty() && !email.contains('/')).then_some((email, rpc))
}

/// `%40` and friends; `None` for a broken escape or text that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn call(
    state: &State,
    email: &str,
    rpc: Rpc,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, GoogleFault> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(GoogleFault::unauthenticated)?;
    let caller = state
        .lookup(bearer)
        .filter(|t| t.expires_at > state.clock.now())
        .filter(|t| !matches!(t.kind, IssuedKind::IdToken { .. }))
        .ok_or_else(GoogleFault::unauthenticated)?;
    if !state.enabled(GoogleApi::IamCredentials) {
        return Err(GoogleFault::service_disabled(
            GoogleApi::IamCredentials,
            &consumer_project(&caller),
        ));
    }
    let account = state
        .account(email)
        .ok_or_else(|| GoogleFault::not_found(email))?;
    let request: Request = serde_json::from_slice(body).map_err(|e| {
        GoogleFault::invalid_argument(format!("Invalid JSON payload received. {e}"))
    })?;
    let mut chain = Vec::new();
    for delegate in &request.delegates {
        let delegate_email = delegate
            .strip_prefix("projects/-/serviceAccounts/")
            .ok_or_else(|| {
                GoogleFault::invalid_argument(format!(
                    "Invalid form of delegates: {delegate}. Expected projects/-/serviceAccounts/{{ACCOUNT_EMAIL_OR_UNIQUEID}}"
                ))
            })?;
        chain.push(
            state
                .account(delegate_email)
                .ok_or_else(|| GoogleFault::not_found(delegate_email))?,
        );
    }
    let first = chain.first().copied().unwrap_or(account);
    if !may_impersonate(&caller, first) {
        return Err(GoogleFault::permission_denied(rpc.permission()));
    }
    match rpc {
        Rpc::AccessToken => access_token(state, account, &caller, &request),
        Rpc::IdToken => id_token(state, account, &caller, &request),
    }
}

/// The project a caller's token bills to: a federated token's pool's project (its number), a
/// service account's own project.
fn consumer_project(caller: &IssuedToken) -> String {
    match &caller.kind {
        IssuedKind::Federated { provider } => provider
            .strip_prefix("projects/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned(),
        IssuedKind::ServiceAccount { email } | IssuedKind::IdToken { email, .. } => email
            .split_once('@')
            .and_then(|(_, domain)| domain.split('.').next())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Whether `caller` holds `roles/iam.workloadIdentityUser` on `account`: as its principal, as
/// a member of its pool's principal set, or (a service account's own token) as
/// `serviceAccount:<email>`.
fn may_impersonate(caller: &IssuedToken, account: &AccountEntry) -> bool {
    let members = &account.account.workload_identity_users;
    match &caller.kind {
        IssuedKind::Federated { provider } => {
            let pool = provider
                .rsplit_once("/providers/")
                .map_or(provider.as_str(), |(pool, _)| pool);
            members
                .iter()
                .any(|m| *m == caller.principal || *m == principal_set(pool))
        }
        IssuedKind::ServiceAccount { email } => members
            .iter()
            .any(|m| *m == format!("serviceAccount:{email}")),
        IssuedKind::IdToken { .. } => false,
    }
}

/// `"3600s"`, `"3600.5s"` → whole seconds.
fn parse_lifetime(text: &str) -> Option<u64> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (digits(whole) && digits(fraction) && fraction.len() <= 9)
        .then(|| whole.parse::<u64>().ok())
        .flatten()
}

fn access_token(
    state: &State,
    account: &AccountEntry,
    caller: &IssuedToken,
    request: &Request,
) -> Result<serde_json::Value, GoogleFault> {
    let scopes: Vec<String> = request
        .scope
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    if scopes.is_empty() {
        return Err(GoogleFault::invalid_argument("Scope required."));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| !s.starts_with("https://www.googleapis.com/auth/"))
    {
        return Err(GoogleFault::invalid_argument(format!(
            "Request contains an invalid argument: scope {bad}"
        )));
    }
    let lifetime = match request.lifetime.as_deref() {
        None => DEFAULT_LIFETIME_SECS,
        Some(text) => parse_lifetime(text).ok_or_else(|| {
            GoogleFault::invalid_argument(format!(
                "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), Field 'lifetime', Illegal duration format; duration must end with 's': \"{text}\""
            ))
        })?,
    };
    if lifetime == 0 {
        return Err(GoogleFault::invalid_argument(
            "Lifetime of access token must be larger then zero.",
        ));
    }
    if lifetime > MAX_LIFETIME_SECS {
        return Err(GoogleFault::invalid_argument(
            "The lifetime of an access token can not be more than 12 hours.",
        ));
    }
    let token = SecretString::from(random_token("ya29.c.", 180));
    let lifetime = state
        .access_token_cap
        .map_or(Duration::from_secs(lifetime), |cap| {
            cap.min(Duration::from_secs(lifetime))
        });
    let expires_at = state.clock.now() + lifetime;
    state.remember(
        &token,
        IssuedToken {
            kind: IssuedKind::ServiceAccount {
                email: account.account.email.clone(),
            },
            principal: caller.principal.clone(),
            scopes,
            expires_at,
        },
    );
    Ok(json!({
        "accessToken": token.expose_secret(),
        "expireTime": rfc3339(expires_at),
    }))
}

fn id_token(
    state: &State,
    account: &AccountEntry,
    caller: &IssuedToken,
    request: &Request,
) -> Result<serde_json::Value, GoogleFault> {
    let audience = request
        .audience
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| GoogleFault::invalid_argument("Audience is required."))?;
    let now = state.clock.now();
    let iat = unix_seconds(now);
    let mut claims = json!({
        "iss": ID_TOKEN_ISSUER,
        "aud": audience,
        "azp": account.unique_id,
        "sub": account.unique_id,
        "iat": iat,
        "exp": iat + ID_TOKEN_SECS,
    });
    if request.include_email
        && let Some(object) = claims.as_object_mut()
    {
        object.insert("email".to_owned(), account.account.email.clone().into());
        object.insert("email_verified".to_owned(), true.into());
    }
    let token = state
        .signer
        .sign(&claims)
        .map_err(|e| GoogleFault::new(500, "INTERNAL", format!("Internal error: {e}")))?;
    let token = SecretString::from(token);
    state.remember(
        &token,
        IssuedToken {
            kind: IssuedKind::IdToken {
                email: account.account.email.clone(),
                audience: audience.to_owned(),
            },
            principal: caller.principal.clone(),
            scopes: Vec::new(),
            expires_at: now + Duration::from_secs(ID_TOKEN_SECS),
        },
    );
    Ok(json!({ "token": token.expose_secret() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_the_method_after_the_colon() {
        let route_of = |p: &str| route(p).map(|(e, r)| (e, r == Rpc::AccessToken));
        assert_eq!(
            route_of(
                "/v1/projects/-/serviceAccounts/app@p.iam.gserviceaccount.com:generateAccessToken"
            ),
            Some(("app@p.iam.gserviceaccount.com".to_owned(), true))
        );
        assert_eq!(
            route_of(
                "/v1/projects/my-proj/serviceAccounts/app%40p.iam.gserviceaccount.com:generateIdToken"
            ),
            Some(("app@p.iam.gserviceaccount.com".to_owned(), false))
        );
        for bad in [
            "/v1/projects/-/serviceAccounts/app@p:signJwt",
            "/v1/projects/-/serviceAccounts/:generateIdToken",
            "/v1/projects/-/serviceAccounts/app@p",
            "/v1/projects/-/serviceAccounts/a%4:generateIdToken",
            "/v1/projects/-/serviceAccounts/a%ff:generateIdToken",
            "/v2/token",
        ] {
            assert!(route(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn lifetimes_are_googles_durations() {
        assert_eq!(parse_lifetime("3600s"), Some(3600));
        assert_eq!(parse_lifetime("600.5s"), Some(600));
        for bad in [
            "3600",
            "1h",
            "-5s",
            "s",
            ".5s",
            "1.s",
            "99999999999999999999999s",
        ] {
            assert_eq!(parse_lifetime(bad), None, "{bad}");
        }
    }
}
