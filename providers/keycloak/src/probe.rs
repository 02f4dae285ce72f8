//! What `keyfed doctor` and `keyfed trust` ask of an issuer besides a token: its discovery
//! document and its JWKS (the whole document too, for Google), each fetched afresh through the
//! client's own requests and checks, and the server's clock as its `Date` header gives it. A
//! token fetched right after uses what these fetched: the discovery document (when the client
//! had none yet) and the JWKS are kept.

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
    /// The JWKS as the issuer published it: every key, with all its fields (public keys only,
    /// as a JWKS holds).
    pub document: serde_json::Value,
}

/// One signing key of the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub kid: Option<String>,
    pub alg: Option<String>,
}

impl KeycloakClient {
    /// Fetches and checks the discovery document (the issuer it names, no downgrade to plain
    /// HTTP), reading the server's `Date` header on the way; the client keeps it for the
    /// requests that follow when it has none yet.
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
        self.remember_discovery(document.clone());
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
        let jwks = self.keys(true).await?;
        Ok(PublishedKeys {
            url: jwks.url.clone(),
            keys: jwks
                .keys
                .listed()
                .into_iter()
                .map(|(kid, alg)| PublishedKey { kid, alg })
                .collect(),
            document: jwks.document.clone(),
        })
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use keyfed_core::SecretString;
    use keyfed_core::clock::SystemClock;
    use url::Url;

    use crate::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
    use crate::{AssertionAudience, ClientAuth, IssuerSettings, KeycloakClient, TokenRequest};

    /// Issue 12: what `discover` fetched serves the requests after it (one discovery request for
    /// doctor's checks and the token), and the published keys come with the whole JWKS, which
    /// `keyfed trust` hands Google.
    #[tokio::test]
    async fn issue_12_the_discovery_document_is_fetched_once_and_the_jwks_comes_whole() {
        let realm = Realm::new("infra")
            .scope("aws-audience", &["sts.amazonaws.com"])
            .client(
                ClientSpec::new("host", Credential::Secret("kc-secret".to_owned()))
                    .optional_scopes(&["aws-audience"]),
            );
        let kc = KeycloakEmulator::builder(realm)
            .start()
            .await
            .unwrap_or_else(|e| panic!("keycloak emulator: {e}"));
        let client = KeycloakClient::new(
            IssuerSettings {
                name: "corp".to_owned(),
                url: Url::parse(&kc.issuer_url()).unwrap_or_else(|e| panic!("{e}")),
                client_id: "host".to_owned(),
                auth: ClientAuth::SecretBasic(SecretString::from("kc-secret")),
                token_endpoint: None,
                assertion_audience: AssertionAudience::default(),
                verify_signature: true,
                http: keyfed_core::http::HttpSettings::default(),
            },
            Arc::new(SystemClock),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let discovered = client.discover().await.unwrap_or_else(|e| panic!("{e}"));
        let published = client
            .published_keys()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .fetch_token(&TokenRequest {
                audience: "sts.amazonaws.com".to_owned(),
                strict_audience: false,
                scope: Some("aws-audience".to_owned()),
                resource: None,
                audience_parameter: false,
                min_remaining: Duration::from_secs(30),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kc.control().hits("/.well-known/openid-configuration"),
            1,
            "discover's document served the JWKS fetch and the token request"
        );
        assert_eq!(
            kc.jwks_requests(),
            1,
            "the token was checked with the keys fetched"
        );
        assert_eq!(Some(&published.url), discovered.jwks_uri.as_ref());
        let document = published.document["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", published.document));
        // Every key as published, the encryption key and certificate chains too.
        assert!(document.len() > published.keys.len(), "{document:?}");
        for key in &published.keys {
            assert!(
                document
                    .iter()
                    .any(|k| k["kid"].as_str() == key.kid.as_deref()),
                "{key:?}"
            );
        }
    }
}
