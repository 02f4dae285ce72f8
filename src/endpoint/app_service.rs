//! The App Service managed-identity face, as Azure SDKs call the identity endpoint of App
//! Service, Functions and Container Apps (DESIGN §8): `GET /msi/token?api-version=2019-08-01&
//! resource=R[&client_id=…]` with `X-IDENTITY-HEADER` equal to the secret keyfed writes at each
//! start to `endpoint.identity_header_file` (no trailing newline, mode 0640, group
//! `identity_header_group`; written only when some listen address serves an `azure_target`).
//! SDKs find it through `IDENTITY_ENDPOINT=http://127.0.0.1:9911/msi/token` and
//! `IDENTITY_HEADER` — this is the face the Rust `azure_identity` crate, and every SDK that
//! cannot be pointed at another IMDS host, can use. Which target and which token: `azure.rs`.
//!
//! The answer is App Service's document: `{"access_token","client_id","expires_on":"<epoch>",
//! "resource","token_type":"Bearer"}` — `expires_on` a string, as the SDKs parse it; `resource`
//! always present, echoed as asked. All but `resource` is rendered once per credential (format
//! `app-service`).
//!
//! Besides that secret it takes the identity-header pairs `keyfed exec` and `keyfed env` hand to
//! a command (issue 12, `pairs.rs`): a request carrying one is answered only when it comes from
//! the uid the pair was issued to (else 401, as a wrong header), and gets only the one target's
//! tokens the pair is bound to (`azure::bound_token`).
//!
//! Like the container face, it resists DNS rebinding by itself: its secret comes from a file a
//! web page cannot read (and a pair's header from the control socket). A missing or wrong
//! header is 401 (compared in constant time), `X-Forwarded-For` 403; an `api-version` other
//! than 2019-08-01 is 400 (the 2017 protocol sends another header and wants another document).
//! Refusals are App Service's JSON, `{"statusCode","message"}`, which MSAL and `azure_identity`
//! quote in their errors.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;
use keyfed_core::{ExposeSecret as _, SecretString};
use serde_json::json;

use super::Core;
use super::azure::{self, Query};
use super::container::constant_time_eq;
use super::face::Face;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::FaceSpec;
use crate::credential::Credential;
use crate::outputs::{FileSpec, write_atomic};

/// The face's name, as its `FaceSpec` declares it, and its document's format.
pub(super) const NAME: &str = "app-service";
/// The one path with an answer: what `IDENTITY_ENDPOINT` names.
pub(super) const TOKEN_PATH: &str = "/msi/token";
/// The only protocol version served.
const API_VERSION: &str = "2019-08-01";
const SECRET_HEADER: &str = "x-identity-header";
const JSON: &str = "application/json; charset=utf-8";

/// The App Service face: the secret its callers must send, when it is on.
pub struct AppService {
    spec: &'static FaceSpec,
    core: Arc<Core>,
    /// `None` where no listen address serves an `azure_target`: the face is off.
    secret: Option<SecretString>,
}

/// Writes a fresh secret to `endpoint.identity_header_file` (when some address serves an
/// `azure_target`) and builds the face.
pub fn start(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    let settings = core.settings();
    let on = settings.listen.iter().any(|l| l.target(NAME).is_some());
    let secret = if on {
        let secret = super::random_token();
        let spec = FileSpec {
            mode: 0o640,
            owner: None,
            group: settings.identity_header_group,
        };
        write_atomic(&settings.identity_header_file, secret.as_bytes(), spec).with_context(
            || {
                format!(
                    "cannot write the identity header file {}",
                    settings.identity_header_file.display()
                )
            },
        )?;
        Some(SecretString::from(secret))
    } else {
        None
    };
    Ok(Arc::new(AppService {
        spec: super::declared(NAME)?,
        core: Arc::clone(core),
        secret,
    }))
}

/// App Service's statuses: a missing or wrong secret is 401, as on the container face.
#[deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]
pub(super) fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Forwarded => StatusCode::FORBIDDEN,
        Refusal::ForeignHost(_) => StatusCode::FORBIDDEN,
        Refusal::FromBrowser => StatusCode::FORBIDDEN,
        Refusal::MissingHeader(_) => StatusCode::UNAUTHORIZED,
        Refusal::BadToken => StatusCode::UNAUTHORIZED,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl Face for AppService {
    fn spec(&self) -> &'static FaceSpec {
        self.spec
    }

    /// Everything under `/msi`, so unknown paths get the face's own answer.
    fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/msi", any(serve))
            .route("/msi/{*rest}", any(serve))
            .with_state(self)
    }

    fn status(&self, refusal: &Refusal) -> StatusCode {
        status(refusal)
    }

    fn refuse(&self, refusal: &Refusal) -> Response {
        let status = self.status(refusal);
        let body = json!({
            "statusCode": status.as_u16(),
            "message": refusal.reason(),
        });
        (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
    }
}

async fn serve(
    State(face): State<Arc<AppService>>,
    peer: axum::Extension<Peer>,
    request: Request,
) -> Response {
    let (request, _) = request.into_parts();
    let result = face.respond(peer.0, &request).await;
    face.core.answer(&*face, result)
}

impl AppService {
    async fn respond(&self, peer: Peer, request: &Parts) -> Result<Response, Refusal> {
        let secret = self.secret.as_ref().ok_or(Refusal::NotFound)?;
        let given = request
            .headers
            .get(SECRET_HEADER)
            .ok_or(Refusal::MissingHeader("X-IDENTITY-HEADER"))?;
        // The file's secret serves every Azure target; a pair's header only its own, and only
        // to the uid it was issued to: another user who reads it (from the environment of a
        // command, a terminal, a file) gets nothing with it. A caller whose uid is unknown is
        // refused too.
        let bound = if constant_time_eq(given.as_bytes(), secret.expose_secret().as_bytes()) {
            None
        } else {
            let binding = self
                .core
                .pairs()
                .bound(given.as_bytes())
                .ok_or(Refusal::BadToken)?;
            if peer.uid != Some(binding.uid) {
                crate::access::log_refusal(peer.uid, &binding.target, NAME);
                return Err(Refusal::BadToken);
            }
            Some(binding)
        };
        if request.method != Method::GET || request.uri.path() != TOKEN_PATH {
            return Err(Refusal::NotFound);
        }
        let query = Query::parse(request.uri.query());
        if query.api_version.as_deref() != Some(API_VERSION) {
            return Err(Refusal::BadRequest(format!(
                "api-version={API_VERSION} is required (the version IDENTITY_ENDPOINT clients send)"
            )));
        }
        let token = match bound {
            None => azure::token(&self.core, NAME, peer, &query).await?,
            Some(binding) => azure::bound_token(&self.core, NAME, peer, &query, &binding).await?,
        };
        let head = self
            .core
            .document(token.key(NAME), &token.issued, head)
            .ok_or(Refusal::NotFound)?;
        let resource = query.resource()?;
        Ok(([(header::CONTENT_TYPE, JSON)], document(&head, resource)).into_response())
    }
}

/// The document but for the resource: `{"access_token","client_id","expires_on",`.
fn head(credential: &Credential) -> Option<String> {
    let (fields, token) = azure::token_fields(credential)?;
    let expires_on = keyfed_core::clock::unix_seconds(token.expires_at);
    Some(format!("{{{fields}\"expires_on\":\"{expires_on}\","))
}

/// The whole document: the cached head, the resource as asked, the type.
fn document(head: &Bytes, resource: &str) -> Bytes {
    let tail = format!(
        "\"resource\":{},\"token_type\":\"Bearer\"}}",
        azure::json_string(resource)
    );
    let mut body = Vec::with_capacity(head.len() + tail.len());
    body.extend_from_slice(head);
    body.extend_from_slice(tail.as_bytes());
    Bytes::from(body)
}
