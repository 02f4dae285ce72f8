//! The emulator's routes and Entra's error shape: `{error, error_description, error_codes,
//! timestamp, trace_id, correlation_id, error_uri}`, the description ending in the trace ID,
//! correlation ID and timestamp as Entra appends them (on new lines in older messages, on the
//! same line in newer ones). Also the discovery documents MSAL fetches before a token request.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{State, token};

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(tenant_discovery),
        )
        .route("/common/discovery/instance", get(instance_discovery))
        .fallback(not_found)
        .with_state(state)
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store, no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// How Entra appends its trace: the older messages on new lines, the newer on the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trace {
    Lines,
    Inline,
}

/// An Entra refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntraFault {
    pub status: u16,
    pub error: &'static str,
    pub code: u64,
    /// The message after `AADSTSnnnn: `.
    pub message: String,
    pub trace: Trace,
}

impl EntraFault {
    pub fn new(status: u16, error: &'static str, code: u64, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
            trace: Trace::Lines,
        }
    }

    #[must_use]
    pub fn inline(mut self) -> Self {
        self.trace = Trace::Inline;
        self
    }

    pub fn into_response(self, state: &State) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let timestamp = entra_timestamp(state.clock.now());
        let separator = match self.trace {
            Trace::Lines => "\r\n",
            Trace::Inline => " ",
        };
        let description = format!(
            "AADSTS{}: {}{separator}Trace ID: {trace_id}{separator}Correlation ID: {correlation_id}{separator}Timestamp: {timestamp}",
            self.code, self.message
        );
        json_response(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            &json!({
                "error": self.error,
                "error_description": description,
                "error_codes": [self.code],
                "timestamp": timestamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
            }),
        )
    }
}

/// `2022-10-27 23:39:22Z`, as Entra's `timestamp` says it.
pub(crate) fn entra_timestamp(t: std::time::SystemTime) -> String {
    keyfed_core::clock::rfc3339(t).replacen('T', " ", 1)
}

/// `2024-10-02T22:05:03.0000000Z`, as AADSTS700024 says a time.
pub(crate) fn entra_instant(t: std::time::SystemTime) -> String {
    keyfed_core::clock::rfc3339(t).replace('Z', ".0000000Z")
}

/// AADSTS90002 for a tenant the emulator does not serve.
pub(crate) fn tenant_not_found(tenant: &str) -> EntraFault {
    EntraFault::new(
        400,
        "invalid_tenant",
        90002,
        format!(
            "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
            printable(tenant)
        ),
    )
}

/// Text from a request made safe to quote: control characters dropped, at most 200 chars.
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The OpenID configuration MSAL reads to find the token endpoint.
async fn tenant_discovery(
    Extract(state): Extract<Arc<State>>,
    Path(tenant): Path<String>,
) -> Response {
    if !state.is_tenant(&tenant) {
        return tenant_not_found(&tenant).into_response(&state);
    }
    let base = &state.base_url;
    let tid = &state.tenant_id;
    json_response(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/{tid}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
        }),
    )
}

/// Instance discovery: the emulator's host is its own only alias, and the tenant discovery
/// endpoint is the one beside the `authorization_endpoint` asked about.
async fn instance_discovery(
    Extract(state): Extract<Arc<State>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let base = &state.base_url;
    let tenant = query
        .get("authorization_endpoint")
        .and_then(|a| a.strip_prefix(base.as_str()))
        .and_then(|path| path.trim_start_matches('/').split('/').next())
        .filter(|t| !t.is_empty())
        .unwrap_or(&state.tenant_id)
        .to_owned();
    let host = base
        .split_once("://")
        .map_or(base.as_str(), |(_, host)| host);
    json_response(
        StatusCode::OK,
        &json!({
            "tenant_discovery_endpoint": format!("{base}/{}/v2.0/.well-known/openid-configuration", printable(&tenant)),
            "api-version": "1.1",
            "metadata": [{
                "preferred_network": host,
                "preferred_cache": host,
                "aliases": [host],
            }],
        }),
    )
}

/// Entra's answer for a path it does not serve.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><html><head><title>404 - Not Found</title></head><body><h1>404 - Not Found</h1></body></html>",
    )
        .into_response()
}
