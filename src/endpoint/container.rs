//! The AWS container (ECS-style) face: `GET <target's container_path>` with `Authorization`
//! equal to the token keyfed wrote to `endpoint.container_token_file` answers
//! `{"AccessKeyId","SecretAccessKey","Token","Expiration"}`. SDKs find it through
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.

use axum::http::{HeaderMap, header};
use axum::response::IntoResponse as _;
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;
use serde_json::json;

use super::refusal::Refusal;
use super::server::Peer;
use super::{Face, Shared};
use crate::credential::Credential;

pub async fn answer(
    shared: &Shared,
    target: &str,
    peer: Peer,
    headers: &HeaderMap,
) -> axum::response::Response {
    let result = async {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(Refusal::MissingHeader("Authorization"))?;
        if !constant_time_eq(
            given.as_bytes(),
            shared.container_token.expose_secret().as_bytes(),
        ) {
            return Err(Refusal::BadToken);
        }
        let served = shared.served();
        let issued = shared.credential(&served, target, peer).await?;
        let body = shared
            .documents
            .get(target, &issued, render)
            .ok_or(Refusal::NotFound)?;
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }
    .await;
    shared.answer(Face::Container, result)
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
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
