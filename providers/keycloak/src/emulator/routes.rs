//! The realm's HTTP routes: discovery, JWKS, the token endpoint and the realm info document,
//! with Keycloak's error bodies.

use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyfed_core::clock::{http_date, unix_seconds};
use serde_json::{Value, json};

use super::auth::{Refusal, authenticate};
use super::{SeenRequest, State};

pub(crate) fn router(state: Arc<State>) -> Router {
    let realm = format!("{}/realms/{}", state.realm.prefix(), state.realm.name);
    Router::new()
        .route(&realm, get(realm_info))
        .route(
            &format!("{realm}/.well-known/openid-configuration"),
            get(discovery),
        )
        .route(
            &format!("{realm}/protocol/openid-connect/certs"),
            get(certs),
        )
        .route(
            &format!("{realm}/protocol/openid-connect/token"),
            post(token),
        )
        .fallback(not_found)
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&state),
            dated,
        ))
        .with_state(state)
}

/// Every answer's `Date` is the realm's "now" (hyper would send the host's), so a clock skewed
/// on purpose shows to clients as a real server's would; or, for a realm started
/// [`without_date_header`](super::Builder::without_date_header), no `Date` at all (the server
/// is told not to add its own).
async fn dated(Extract(state): Extract<Arc<State>>, mut response: Response) -> Response {
    if !state.date_header {
        response.headers_mut().remove(header::DATE);
    } else if let Ok(value) = HeaderValue::from_str(&http_date(state.clock.now())) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        json_response(
            status,
            json!({"error": self.error, "error_description": self.description}),
        )
    }
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"error": "Unable to find matching target resource method"}),
    )
}

async fn realm_info(Extract(state): Extract<Arc<State>>) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "realm": state.realm.name,
            "token-service": format!("{}/protocol/openid-connect", state.issuer()),
            "account-service": format!("{}/account", state.issuer()),
            "tokens-not-before": 0
        }),
    )
}

async fn discovery(Extract(state): Extract<Arc<State>>) -> Response {
    let issuer = state.issuer();
    json_response(
        StatusCode::OK,
        json!({
            "issuer": state.iss(),
            "token_endpoint": state.token_endpoint(),
            "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
            "introspection_endpoint": format!("{}/introspect", state.token_endpoint()),
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token",
                "urn:ietf:params:oauth:grant-type:token-exchange"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
                "client_secret_post", "tls_client_auth", "client_secret_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["PS384", "ES384", "RS384", "HS256",
                "HS512", "ES256", "RS256", "HS384", "ES512", "PS256", "PS512", "RS512"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email"],
        }),
    )
}

async fn certs(Extract(state): Extract<Arc<State>>) -> Response {
    json_response(StatusCode::OK, state.signer.jwks())
}

async fn token(Extract(state): Extract<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    *state
        .last_request
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(SeenRequest {
        form: form.clone(),
        basic_auth: authorization.is_some_and(|a| a.starts_with("Basic ")),
    });
    match issue(&state, &form, authorization) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(refusal) => refusal.into_response(),
    }
}

fn issue(
    state: &State,
    form: &[(String, String)],
    authorization: Option<&str>,
) -> Result<Value, Refusal> {
    let grant = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    if grant != Some("client_credentials") {
        return Err(Refusal {
            status: 400,
            error: "unsupported_grant_type",
            description: "Unsupported grant_type".to_owned(),
        });
    }
    let client = authenticate(state, form, authorization)?;
    if !client.service_accounts_enabled {
        return Err(Refusal {
            status: 401,
            error: "unauthorized_client",
            description: "Client not enabled to retrieve service account".to_owned(),
        });
    }
    let requested = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let mut scopes = client.default_scopes.clone();
    for scope in requested.split_whitespace() {
        if scope == "openid" || client.default_scopes.iter().any(|s| s == scope) {
            continue;
        }
        if !client.optional_scopes.iter().any(|s| s == scope) {
            return Err(Refusal {
                status: 400,
                error: "invalid_scope",
                description: format!("Invalid scopes: {requested}"),
            });
        }
        scopes.push(scope.to_owned());
    }
    let mut audiences: Vec<String> = Vec::new();
    for aud in state.realm.audiences_of(&scopes) {
        if !audiences.contains(aud) {
            audiences.push(aud.clone());
        }
    }
    let now = unix_seconds(state.clock.now());
    let lifespan = state.realm.lifespan.as_secs();
    let mut claims = json!({
        "exp": now + lifespan,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iss": state.iss(),
        "sub": client.service_account_id,
        "typ": "Bearer",
        "azp": client.client_id,
        "acr": "1",
        "scope": scopes.join(" "),
        "clientHost": "127.0.0.1",
        "email_verified": false,
        "preferred_username": format!("service-account-{}", client.client_id),
        "clientAddress": "127.0.0.1",
        "client_id": client.client_id,
    });
    match audiences.as_slice() {
        [] => {}
        [one] => claims["aud"] = json!(one),
        many => claims["aud"] = json!(many),
    }
    let access_token = state.signer.sign(&claims).map_err(|e| Refusal {
        status: 500,
        error: "server_error",
        description: e,
    })?;
    {
        let mut issued = state.issued.lock().unwrap_or_else(PoisonError::into_inner);
        if issued.len() >= super::ISSUED_KEPT {
            issued.pop_front();
        }
        issued.push_back(keyfed_core::SecretString::from(access_token.clone()));
    }
    Ok(json!({
        "access_token": access_token,
        "expires_in": lifespan,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": scopes.join(" "),
    }))
}
