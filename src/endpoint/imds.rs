//! The AWS IMDSv2 face, as the SDKs use it (`AWS_EC2_METADATA_SERVICE_ENDPOINT`):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1–21600, echoed back)
//! returns a session token; `GET /latest/meta-data/iam/security-credentials/` lists the role and
//! `…/<role>` returns the credentials, both with `X-aws-ec2-metadata-token`. IMDSv1 (no token)
//! only when `endpoint.imds_v1 = true`. One target per listen address (`imds_target`), its role
//! name the target's name. A missing or invalid session token is 401, as on EC2.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;
use serde_json::json;

use super::Core;
use super::face::Face;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::FaceSpec;
use crate::credential::Credential;

/// The face's name, as its `FaceSpec` declares it.
const NAME: &str = "imds";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const MAX_TTL: u64 = 21_600;
/// Session tokens kept at most; the oldest go first when full.
const MAX_TOKENS: usize = 4096;

/// Issued session tokens and when they expire.
#[derive(Default)]
struct Tokens(HashMap<String, Instant>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} session tokens ({})",
            self.0.len(),
            keyfed_core::REDACTED
        )
    }
}

impl Tokens {
    fn issue(&mut self, ttl: Duration) -> String {
        let now = Instant::now();
        self.0.retain(|_, expiry| *expiry > now);
        let oldest = (self.0.len() >= MAX_TOKENS)
            .then(|| {
                self.0
                    .iter()
                    .min_by_key(|(_, e)| **e)
                    .map(|(t, _)| t.clone())
            })
            .flatten();
        if let Some(oldest) = oldest {
            self.0.remove(&oldest);
        }
        let token = super::random_token();
        self.0.insert(token.clone(), now + ttl);
        token
    }

    fn valid(&self, token: &str) -> bool {
        self.0
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }
}

/// The IMDSv2 face: its session tokens.
pub struct Imds {
    spec: &'static FaceSpec,
    core: Arc<Core>,
    tokens: Mutex<Tokens>,
}

pub fn start(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    Ok(Arc::new(Imds {
        spec: super::declared(NAME)?,
        core: Arc::clone(core),
        tokens: Mutex::new(Tokens::default()),
    }))
}

/// The AWS SDKs' statuses, for IMDSv2 and the container face: a missing or invalid token is
/// 401.
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

impl Face for Imds {
    fn spec(&self) -> &'static FaceSpec {
        self.spec
    }

    fn routes(self: Arc<Self>) -> Router {
        let credentials = "/latest/meta-data/iam/security-credentials";
        Router::new()
            .route("/latest/api/token", put(token))
            .route(credentials, get(roles))
            .route(&format!("{credentials}/"), get(roles))
            .route(&format!("{credentials}/{{role}}"), get(role))
            .with_state(self)
    }

    fn status(&self, refusal: &Refusal) -> StatusCode {
        status(refusal)
    }
}

impl Imds {
    fn lock_tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue(&self, headers: &HeaderMap) -> Result<Response, Refusal> {
        let ttl = headers.get(TTL_HEADER).ok_or(Refusal::BadRequest(format!(
            "the {TTL_HEADER} header is required"
        )))?;
        let seconds = ttl
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|s| (1..=MAX_TTL).contains(s))
            .ok_or_else(|| {
                Refusal::BadRequest(format!(
                    "{TTL_HEADER} must be a number of seconds from 1 to {MAX_TTL}"
                ))
            })?;
        let token = self.lock_tokens().issue(Duration::from_secs(seconds));
        let mut response = token.into_response();
        let echo = HeaderValue::from_str(&seconds.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("21600"));
        response.headers_mut().insert(TTL_HEADER, echo);
        Ok(response)
    }

    /// The session token check every metadata read passes.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match headers.get(TOKEN_HEADER).and_then(|t| t.to_str().ok()) {
            Some(token) if self.lock_tokens().valid(token) => Ok(()),
            Some(_) => Err(Refusal::BadToken),
            None if self.core.settings().imds_v1 => Ok(()),
            None => Err(Refusal::MissingHeader("X-aws-ec2-metadata-token")),
        }
    }

    fn roles(&self, peer: &Peer, headers: &HeaderMap) -> Result<Response, Refusal> {
        self.authorize(headers)?;
        let target = self.core.target_at(NAME, peer)?;
        // The role's name is the target's: listed only to whoever may have its credentials.
        self.core.allowed(&self.core.served(), target, peer.uid)?;
        Ok(target.to_owned().into_response())
    }

    async fn credentials(
        &self,
        role: &str,
        peer: Peer,
        headers: &HeaderMap,
    ) -> Result<Response, Refusal> {
        self.authorize(headers)?;
        let served = self.core.served();
        if self.core.target_at(NAME, &peer)? != role {
            return Err(Refusal::NotFound);
        }
        let issued = self.core.credential(&served, role, peer).await?;
        let Credential::Aws(c) = &issued.credential else {
            return Err(Refusal::NotFound);
        };
        Ok(axum::Json(json!({
            "Code": "Success",
            "LastUpdated": rfc3339(self.core.now()),
            "Type": "AWS-HMAC",
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key.expose_secret(),
            "Token": c.session_token.expose_secret(),
            "Expiration": rfc3339(c.expiration),
        }))
        .into_response())
    }
}

async fn token(State(imds): State<Arc<Imds>>, headers: HeaderMap) -> Response {
    imds.core.answer(&*imds, imds.issue(&headers))
}

async fn roles(
    State(imds): State<Arc<Imds>>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    imds.core.answer(&*imds, imds.roles(&peer.0, &headers))
}

async fn role(
    State(imds): State<Arc<Imds>>,
    Path(role): Path<String>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let result = imds.credentials(&role, peer.0, &headers).await;
    imds.core.answer(&*imds, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 9: IMDSv2's statuses, one per refusal (the match in `status` names every one).
    #[test]
    fn statuses() {
        let statuses: Vec<u16> = super::super::refusal::every()
            .iter()
            .map(|r| status(r).as_u16())
            .collect();
        assert_eq!(statuses, [403, 403, 403, 401, 401, 400, 403, 404, 503]);
    }

    #[test]
    fn tokens_expire_and_the_store_is_bounded() {
        let mut tokens = Tokens::default();
        let a = tokens.issue(Duration::from_secs(60));
        assert!(tokens.valid(&a));
        assert!(!tokens.valid("forged"));
        let short = tokens.issue(Duration::ZERO);
        assert!(!tokens.valid(&short));
        for _ in 0..MAX_TOKENS + 10 {
            tokens.issue(Duration::from_secs(60));
        }
        assert!(tokens.0.len() <= MAX_TOKENS);
    }
}
