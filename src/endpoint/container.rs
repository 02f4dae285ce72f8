//! The AWS container (ECS-style) face: `GET <target's container_path>` with `Authorization`
//! equal to the token keyfed wrote to `endpoint.container_token_file` (at each start, mode
//! 0640, group `container_token_group`) answers `{"AccessKeyId","SecretAccessKey","Token",
//! "Expiration"}`. SDKs find it through `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`. A missing or wrong token is 401.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use keyfed_core::clock::rfc3339;
use keyfed_core::{ExposeSecret as _, SecretString};
use serde_json::json;

use super::Core;
use super::documents::Key;
use super::face::{Answer, Face};
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::FaceSpec;
use crate::credential::Credential;
use crate::outputs::{FileSpec, write_atomic};

/// The face's name, as its `FaceSpec` declares it, and its document's format.
const NAME: &str = "container";

/// The container face: the token its callers must send.
pub struct Container {
    spec: &'static FaceSpec,
    core: Arc<Core>,
    token: SecretString,
}

/// Writes a fresh token to `endpoint.container_token_file` and builds the face.
pub fn start(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    let settings = core.settings();
    let token = super::random_token();
    let spec = FileSpec {
        mode: 0o640,
        owner: None,
        group: settings.container_token_group,
    };
    write_atomic(&settings.container_token_file, token.as_bytes(), spec).with_context(|| {
        format!(
            "cannot write the container token file {}",
            settings.container_token_file.display()
        )
    })?;
    Ok(Arc::new(Container {
        spec: super::declared(NAME)?,
        core: Arc::clone(core),
        token: SecretString::from(token),
    }))
}

impl Face for Container {
    fn spec(&self) -> &'static FaceSpec {
        self.spec
    }

    /// None of its own: it answers at the paths targets chose (`container_path`).
    fn routes(self: Arc<Self>) -> Router {
        Router::new()
    }

    /// The AWS SDKs' statuses, as on the IMDS face: a missing or wrong token is 401.
    fn status(&self, refusal: &Refusal) -> StatusCode {
        super::imds::status(refusal)
    }

    fn at_path(self: Arc<Self>, target: String, peer: Peer, request: Request) -> Answer {
        Box::pin(async move {
            let result = if request.method() == Method::GET {
                self.serve(&target, peer, request.headers()).await
            } else {
                Err(Refusal::NotFound)
            };
            self.core.answer(&*self, result)
        })
    }
}

impl Container {
    /// The token check, then the target's document.
    async fn serve(
        &self,
        target: &str,
        peer: Peer,
        headers: &HeaderMap,
    ) -> Result<Response, Refusal> {
        let given = headers
            .get(header::AUTHORIZATION)
            .ok_or(Refusal::MissingHeader("Authorization"))?;
        if !constant_time_eq(given.as_bytes(), self.token.expose_secret().as_bytes()) {
            return Err(Refusal::BadToken);
        }
        let served = self.core.served();
        let issued = self.core.credential(&served, target, peer).await?;
        let key = Key {
            target,
            slot: None,
            format: NAME,
        };
        let body = self
            .core
            .document(key, &issued, render)
            .ok_or(Refusal::NotFound)?;
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }
}

/// The container face's document for an AWS credential.
fn render(credential: &Credential) -> Option<String> {
    let Credential::Aws(c) = credential else {
        return None;
    };
    Some(
        json!({
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key.expose_secret(),
            "Token": c.session_token.expose_secret(),
            "Expiration": rfc3339(c.expiration),
        })
        .to_string(),
    )
}

/// Compares without stopping at the first difference, so timing reveals nothing of the token.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
