//! STS's one HTTP route: the Query protocol's `Action` (from a form body or the query string)
//! picks AssumeRoleWithWebIdentity (`assume.rs`) or GetCallerIdentity (`caller.rs`); answers
//! are XML with `x-amzn-RequestId`, errors carry STS's codes, messages and statuses.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::sigv4::Received;
use super::xml;
use super::{State, assume, caller};

const VERSION: &str = "2011-06-15";

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// An STS error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StsFault {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl StsFault {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid_token(message: &str) -> Self {
        Self::new(400, "InvalidIdentityToken", message)
    }

    pub fn expired_token(message: &str) -> Self {
        Self::new(400, "ExpiredTokenException", message)
    }

    pub fn idp_communication(message: &str) -> Self {
        Self::new(400, "IDPCommunicationError", message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationError", message)
    }

    /// STS's wording for a parameter that fails its model's constraints.
    pub fn constraint(value: &str, field: &str, constraint: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ))
    }

    pub fn access_denied() -> Self {
        Self::new(
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        )
    }

    pub fn invalid_client_token() -> Self {
        Self::new(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    }

    pub fn signature_mismatch(message: impl Into<String>) -> Self {
        Self::new(403, "SignatureDoesNotMatch", message)
    }

    fn into_response(self, request_id: &str) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        xml_response(
            status,
            xml::error(self.status, self.code, &self.message, request_id),
            request_id,
        )
    }
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/xml"),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                request_id,
            ),
        ],
        body,
    )
        .into_response()
}

/// The Query protocol's parameters: the query string, then a form body.
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter; STS names it in camelCase in the error.
    pub fn required(&self, name: &str, field: &str) -> Result<&str, StsFault> {
        self.get(name).ok_or_else(|| {
            StsFault::validation(format!(
                "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }
}

async fn handle(
    Extract(state): Extract<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut params: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if method == Method::POST {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    let params = Params(params);
    let result = match (params.get("Action"), params.get("Version")) {
        (_, Some(version)) if version != VERSION => Err(StsFault::new(
            400,
            "InvalidAction",
            format!(
                "Could not find operation {} for version {version}",
                params.get("Action").unwrap_or_default()
            ),
        )),
        (Some("AssumeRoleWithWebIdentity"), _) => {
            assume::assume_role(&state, &params, &request_id).await
        }
        (Some("GetCallerIdentity"), _) => {
            let received = Received {
                method: method.as_str(),
                path: uri.path(),
                query: uri.query(),
                headers: &headers,
                body: &body,
            };
            caller::caller_identity(&state, &received, &request_id)
        }
        (Some(action), _) => Err(StsFault::new(
            400,
            "InvalidAction",
            format!("Could not find operation {action} for version {VERSION}"),
        )),
        (None, _) => Err(StsFault::new(400, "MissingAction", "Missing Action")),
    };
    match result {
        Ok(body) => xml_response(StatusCode::OK, body, &request_id),
        Err(fault) => fault.into_response(&request_id),
    }
}
