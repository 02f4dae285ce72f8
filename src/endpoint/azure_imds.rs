//! The Azure IMDS face, as Azure SDKs call the Instance Metadata Service of a VM for a managed
//! identity's token (DESIGN §8): `GET /metadata/identity/oauth2/token?api-version=…&resource=R
//! [&client_id=…]` with `Metadata: true`. azure-identity (Python, through MSAL) reaches it with
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9911`; SDKs hard-wired to
//! `169.254.169.254` need that address on a listen entry. Which target and which token:
//! `azure.rs`.
//!
//! The answer is IMDS's document, every value a string: `access_token, client_id, expires_in,
//! expires_on, ext_expires_in, not_before, resource, token_type`. `expires_in` (and
//! `ext_expires_in`: keyfed has no extended lifetime to offer) is the whole seconds left at the
//! moment of the answer, rounded down; the rest — all but `resource`, echoed as asked — is
//! rendered once per credential (format `azure-imds`). `not_before` is the token's own `nbf`
//! (else its `iat`; else an hour before it expires, Entra's usual lifetime).
//!
//! Rules of IMDS kept: `Metadata: true` is required on every path (400 without it, as IMDS
//! answers — and what azure-identity's probe, sent without the header when it runs in a
//! credential chain, takes as "IMDS is here"); `X-Forwarded-For` is 400. Refusals are IMDS's
//! JSON, `{"error","error_description"}`, which MSAL passes on in its message. An identity no
//! target has (or one hidden from the caller) is 400, as IMDS answers an identity not assigned
//! to the VM — azure-identity then reports the credential unavailable rather than retrying,
//! which it does for 404, 410, 429 and 5xx.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::unix_seconds;
use serde_json::{Value, json};

use super::Core;
use super::azure::{self, Query};
use super::face::Face;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::FaceSpec;
use crate::credential::Credential;

/// The face's name, as its `FaceSpec` declares it, and its document's format.
pub(super) const NAME: &str = "azure-imds";
/// The one path with an answer.
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const JSON: &str = "application/json; charset=utf-8";

/// The Azure IMDS face; it keeps no state of its own.
pub struct AzureImds {
    spec: &'static FaceSpec,
    core: Arc<Core>,
}

pub fn start(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    Ok(Arc::new(AzureImds {
        spec: super::declared(NAME)?,
        core: Arc::clone(core),
    }))
}

/// IMDS's statuses: a request it cannot take (no `Metadata` header, a proxy's, an identity it
/// does not have, a missing resource) is 400.
#[deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]
pub(super) fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Forwarded => StatusCode::BAD_REQUEST,
        Refusal::ForeignHost(_) => StatusCode::FORBIDDEN,
        Refusal::FromBrowser => StatusCode::FORBIDDEN,
        Refusal::MissingHeader(_) => StatusCode::BAD_REQUEST,
        Refusal::BadToken => StatusCode::BAD_REQUEST,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// IMDS's `error` code for a refusal: its own for the missing header, OAuth's otherwise.
fn error_code(refusal: &Refusal, status: StatusCode) -> &'static str {
    match (refusal, status) {
        (Refusal::MissingHeader(_), _) => "bad_request_102",
        (_, StatusCode::BAD_REQUEST) => "invalid_request",
        (_, StatusCode::FORBIDDEN) => "access_denied",
        (_, StatusCode::NOT_FOUND) => "not_found",
        _ => "temporarily_unavailable",
    }
}

impl Face for AzureImds {
    fn spec(&self) -> &'static FaceSpec {
        self.spec
    }

    /// Everything under `/metadata`, so unknown paths get the face's own answer.
    fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metadata", any(serve))
            .route("/metadata/{*rest}", any(serve))
            .with_state(self)
    }

    fn status(&self, refusal: &Refusal) -> StatusCode {
        status(refusal)
    }

    fn refuse(&self, refusal: &Refusal) -> Response {
        let status = self.status(refusal);
        let body = json!({
            "error": error_code(refusal, status),
            "error_description": refusal.reason(),
        });
        (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
    }
}

async fn serve(
    State(face): State<Arc<AzureImds>>,
    peer: axum::Extension<Peer>,
    request: Request,
) -> Response {
    let (request, _) = request.into_parts();
    let result = face.respond(peer.0, &request).await;
    face.core.answer(&*face, result)
}

impl AzureImds {
    async fn respond(&self, peer: Peer, request: &Parts) -> Result<Response, Refusal> {
        let metadata = request
            .headers
            .get("metadata")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if !metadata {
            return Err(Refusal::MissingHeader("Metadata: true"));
        }
        if request.method != Method::GET || request.uri.path() != TOKEN_PATH {
            return Err(Refusal::NotFound);
        }
        let query = Query::parse(request.uri.query());
        if query.api_version.as_deref().is_none_or(str::is_empty) {
            return Err(Refusal::BadRequest(
                "the api-version parameter is required, e.g. api-version=2018-02-01".to_owned(),
            ));
        }
        let token = azure::token(&self.core, NAME, peer, &query).await?;
        let head = self
            .core
            .document(token.key(NAME), &token.issued, head)
            .ok_or(Refusal::NotFound)?;
        let left = token
            .issued
            .credential
            .expires_at()
            .duration_since(self.core.now())
            .unwrap_or_default()
            .as_secs();
        let resource = query.resource()?;
        Ok((
            [(header::CONTENT_TYPE, JSON)],
            document(&head, left, token.expires_on(), resource),
        )
            .into_response())
    }
}

/// The document up to what changes by the second or by request: `{"access_token","client_id",
/// "not_before",` — the part that changes only with the credential.
fn head(credential: &Credential) -> Option<String> {
    let (fields, token) = azure::token_fields(credential)?;
    let expires_on = unix_seconds(token.expires_at);
    let claims = keyfed_core::token_facts::claims(token.token.expose_secret());
    let claim = |name: &str| {
        claims
            .as_ref()
            .and_then(|c| c.get(name))
            .and_then(Value::as_u64)
    };
    let not_before = claim("nbf")
        .or_else(|| claim("iat"))
        .unwrap_or_else(|| expires_on.saturating_sub(3600));
    Some(format!("{{{fields}\"not_before\":\"{not_before}\","))
}

/// The whole document: the cached head, the times, the resource as asked, the type.
fn document(head: &Bytes, seconds_left: u64, expires_on: u64, resource: &str) -> Bytes {
    let tail = format!(
        "\"expires_in\":\"{seconds_left}\",\"expires_on\":\"{expires_on}\",\
         \"ext_expires_in\":\"{seconds_left}\",\"resource\":{},\"token_type\":\"Bearer\"}}",
        azure::json_string(resource)
    );
    let mut body = Vec::with_capacity(head.len() + tail.len());
    body.extend_from_slice(head);
    body.extend_from_slice(tail.as_bytes());
    Bytes::from(body)
}
