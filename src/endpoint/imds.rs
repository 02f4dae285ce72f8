//! The AWS IMDSv2 face, as the SDKs use it (`AWS_EC2_METADATA_SERVICE_ENDPOINT`):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1–21600, echoed back)
//! returns a session token; `GET /latest/meta-data/iam/security-credentials/` lists the role and
//! `…/<role>` returns the credentials, both with `X-aws-ec2-metadata-token`. IMDSv1 (no token)
//! only when `endpoint.imds_v1 = true`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;
use serde_json::json;

use super::refusal::Refusal;
use super::{Face, Shared};
use crate::credential::Credential;

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const MAX_TTL: u64 = 21_600;
/// Session tokens kept at most; the oldest go first when full.
const MAX_TOKENS: usize = 4096;

/// Issued session tokens and when they expire.
#[derive(Default)]
pub struct Tokens(HashMap<String, Instant>);

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

pub async fn token(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    shared.answer(Face::Imds, issue(&shared, &headers))
}

fn issue(shared: &Shared, headers: &HeaderMap) -> Result<Response, Refusal> {
    let ttl = headers.get(TTL_HEADER).ok_or(Refusal::BadTtl(format!(
        "the {TTL_HEADER} header is required"
    )))?;
    let seconds = ttl
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|s| (1..=MAX_TTL).contains(s))
        .ok_or_else(|| {
            Refusal::BadTtl(format!(
                "{TTL_HEADER} must be a number of seconds from 1 to {MAX_TTL}"
            ))
        })?;
    let token = shared.lock_tokens().issue(Duration::from_secs(seconds));
    let mut response = token.into_response();
    let echo = HeaderValue::from_str(&seconds.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("21600"));
    response.headers_mut().insert(TTL_HEADER, echo);
    Ok(response)
}

/// The session token check every metadata read passes.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(TOKEN_HEADER).and_then(|t| t.to_str().ok()) {
        Some(token) if shared.lock_tokens().valid(token) => Ok(()),
        Some(_) => Err(Refusal::BadToken),
        None if shared.settings.imds_v1 => Ok(()),
        None => Err(Refusal::MissingHeader("X-aws-ec2-metadata-token")),
    }
}

/// The target the listener a request arrived on serves on its IMDS face.
fn target_at<'a>(shared: &'a Shared, peer: &super::server::Peer) -> Result<&'a str, Refusal> {
    shared
        .settings
        .listen
        .iter()
        .find(|l| l.address == peer.local)
        .and_then(|l| l.imds_target.as_deref())
        .ok_or(Refusal::NotFound)
}

pub async fn roles(
    State(shared): State<Shared>,
    peer: axum::Extension<super::server::Peer>,
    headers: HeaderMap,
) -> Response {
    let result = authorize(&shared, &headers).and_then(|()| {
        let target = target_at(&shared, &peer.0)?;
        // The role's name is the target's: listed only to whoever may have its credentials.
        match shared.served().target_for(target, peer.0.uid) {
            Ok(_) => Ok(target.to_owned().into_response()),
            Err(true) => Err(Refusal::Forbidden {
                target: target.to_owned(),
                uid: peer.0.uid,
            }),
            Err(false) => Err(Refusal::NotFound),
        }
    });
    shared.answer(Face::Imds, result)
}

pub async fn credentials(
    State(shared): State<Shared>,
    Path(role): Path<String>,
    peer: axum::Extension<super::server::Peer>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&shared, &headers)?;
        let served = shared.served();
        if target_at(&shared, &peer.0)? != role {
            return Err(Refusal::NotFound);
        }
        let issued = shared.credential(&served, &role, peer.0).await?;
        let Credential::Aws(c) = &issued.credential else {
            return Err(Refusal::NotFound);
        };
        Ok(axum::Json(json!({
            "Code": "Success",
            "LastUpdated": rfc3339(shared.clock.now()),
            "Type": "AWS-HMAC",
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key.expose_secret(),
            "Token": c.session_token.expose_secret(),
            "Expiration": rfc3339(c.expiration),
        }))
        .into_response())
    }
    .await;
    shared.answer(Face::Imds, result)
}

#[cfg(test)]
mod tests {
    use super::*;

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
