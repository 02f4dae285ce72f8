//! The emulator's routes and the two error shapes Google answers in: RFC 6749 JSON from STS
//! (`{"error","error_description"}`), and Google's API error (`{"error":{"code","message",
//! "status"}}`) from IAM Credentials. A path Google does not serve gets an HTML 404, as
//! Google's front end gives.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{GoogleApi, State, iam, sts};

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/token", post(sts::token))
        .route("/oauth2/v3/certs", get(certs))
        .fallback(iam::handle)
        .with_state(state)
}

async fn certs(Extract(state): Extract<Arc<State>>) -> Response {
    json_response(StatusCode::OK, &state.signer.jwks())
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// An STS refusal: RFC 6749 §5.2 JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthFault {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthFault {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: 400,
            error,
            description: description.into(),
        }
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub fn into_response(self) -> Response {
        json_response(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            &json!({ "error": self.error, "error_description": self.description }),
        )
    }
}

/// An IAM Credentials refusal in Google's API error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoogleFault {
    pub code: u16,
    pub status: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl GoogleFault {
    pub fn new(code: u16, status: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
            details: None,
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", message)
    }

    pub fn not_found(email: &str) -> Self {
        Self::new(
            404,
            "NOT_FOUND",
            format!("Not found; Gaia id not found for email {email}"),
        )
    }

    pub fn permission_denied(permission: &str) -> Self {
        Self {
            details: Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": { "permission": permission },
            }])),
            ..Self::new(
                403,
                "PERMISSION_DENIED",
                format!("Permission '{permission}' denied on resource (or it may not exist)."),
            )
        }
    }

    /// Google's answer when `api` is not enabled on `project` (the caller's consumer project,
    /// by number), word for word as Google gives it.
    pub fn service_disabled(api: GoogleApi, project: &str) -> Self {
        let service = api.service();
        let activation = format!(
            "https://console.developers.google.com/apis/api/{service}/overview?project={project}"
        );
        Self {
            details: Some(json!([
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "consumer": format!("projects/{project}"),
                        "service": service,
                        "serviceTitle": api.title(),
                        "activationUrl": activation,
                    },
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{
                        "description": "Google developers console API activation",
                        "url": activation,
                    }],
                },
            ])),
            ..Self::new(
                403,
                "PERMISSION_DENIED",
                format!(
                    "{} has not been used in project {project} before or it is disabled. Enable it by visiting {activation} then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.",
                    api.title()
                ),
            )
        }
    }

    pub fn into_response(self) -> Response {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "status": self.status,
        });
        if let (Some(details), Some(object)) = (self.details, error.as_object_mut()) {
            object.insert("details".to_owned(), details);
        }
        json_response(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST),
            &json!({ "error": error }),
        )
    }
}

/// Google's front end for a URL it does not serve.
pub(crate) fn html_not_found(path: &str) -> Response {
    let path: String = path
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '&' | '"'))
        .collect();
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        format!(
            "<!DOCTYPE html>\n<html lang=en>\n  <title>Error 404 (Not Found)!!1</title>\n  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{path}</code> was not found on this server.  <ins>That’s all we know.</ins>\n"
        ),
    )
        .into_response()
}
