//! What `keyfed doctor` asks of an issuer besides a token: its discovery document and its JWKS,
//! each fetched afresh through the client's own requests and checks, and the server's clock as
//! its `Date` header gives it. A token fetched right after uses what these fetched.

use std::time::SystemTime;

use keyfed_core::clock::parse_http_date;
use url::Url;

use crate::discovery;
use crate::{KeycloakClient, KeycloakError};

/// The issuer's discovery document, as keyfed checked it, and when it came.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// `{issuer}/.well-known/openid-configuration`.
    pub url: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Option<Url>,
    /// The server's clock: its `Date` header, when it sent one keyfed could read.
    pub server_date: Option<SystemTime>,
    /// When the answer came, by the client's clock.
    pub received_at: SystemTime,
}

/// The signing keys the issuer publishes that keyfed can use.
#[derive(Debug, Clone)]
pub struct PublishedKeys {
    /// The `jwks_uri` they came from.
    pub url: Url,
    pub keys: Vec<PublishedKey>,
}

/// One signing key of the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub kid: Option<String>,
    pub alg: Option<String>,
}

impl KeycloakClient {
    /// Fetches and checks the discovery document (the issuer it names, no downgrade to plain
    /// HTTP), reading the server's `Date` header on the way.
    pub async fn discover(&self) -> Result<Discovered, KeycloakError> {
        let issuer = &self.settings().url;
        let url = discovery::url_for(issuer)
            .map_err(|e| self.invalid("discovery URL", issuer, e.to_string()))?;
        let answer = self.get_answer(&url).await?;
        let received_at = self.clock.now();
        let document = discovery::parse(
            &answer.body,
            issuer,
            self.settings().http.allow_insecure_http,
        )
        .map_err(|detail| self.invalid("discovery document", &url, detail))?;
        Ok(Discovered {
            url,
            token_endpoint: document.token_endpoint,
            jwks_uri: document.jwks_uri,
            server_date: answer.date.as_deref().and_then(parse_http_date),
            received_at,
        })
    }

    /// Fetches the JWKS the discovery document names, as token checks do (and keeps it for
    /// them).
    pub async fn published_keys(&self) -> Result<PublishedKeys, KeycloakError> {
        let keys = self.keys(true).await?;
        let url =
            self.discovery()
                .await?
                .jwks_uri
                .clone()
                .ok_or_else(|| KeycloakError::NoJwksUri {
                    issuer: self.settings().name.clone(),
                    url: self.settings().url.to_string(),
                })?;
        Ok(PublishedKeys {
            url,
            keys: keys
                .listed()
                .into_iter()
                .map(|(kid, alg)| PublishedKey { kid, alg })
                .collect(),
        })
    }
}
