//! The client-credentials client: discovery (cached), the token request with the configured
//! client authentication, and the checks on what comes back. One `KeycloakClient` per issuer;
//! it is cheap to share behind an `Arc` and safe to call concurrently.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyfed_core::clock::Clock;
use keyfed_core::http::{self, MAX_RESPONSE_BYTES};
use keyfed_core::{ExposeSecret as _, SecretString};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use crate::assertion::{self, ASSERTION_TYPE};
use crate::discovery::{self, Discovery};
use crate::error::{KeycloakError, oauth_hint};
use crate::jwt::{AccessToken, DecodedJwt, RefusedToken};
use crate::settings::{AssertionAudience, ClientAuth, IssuerSettings, TokenRequest};
use crate::validate::{self, KeySet};

/// Fetches and checks tokens from one issuer.
#[derive(Debug)]
pub struct KeycloakClient {
    settings: IssuerSettings,
    http: reqwest::Client,
    pub(crate) clock: Arc<dyn Clock>,
    discovery: OnceCell<Discovery>,
    keys: Mutex<Option<FetchedKeys>>,
}

/// How long a fetched JWKS is trusted. A key the issuer withdraws (disabled, or removed after a
/// rotation) keeps verifying tokens until the set is fetched again; a `kid` the set lacks
/// triggers that at once, but a withdrawn key's `kid` never does, so the set is also fetched
/// again once it is this old.
pub(crate) const JWKS_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// The issuer's JWKS and when it was fetched (by the client's clock).
#[derive(Debug)]
struct FetchedKeys {
    jwks: Arc<Jwks>,
    at: SystemTime,
}

/// A fetched JWKS: where it came from, the document as the issuer published it (every key, all
/// its fields), and the keys in it keyfed verifies tokens with.
#[derive(Debug)]
pub(crate) struct Jwks {
    pub url: Url,
    pub document: serde_json::Value,
    pub keys: KeySet,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl KeycloakClient {
    /// Checks the issuer's URLs and builds its HTTP client; no request is made yet.
    pub fn new(settings: IssuerSettings, clock: Arc<dyn Clock>) -> Result<Self, KeycloakError> {
        let setup = |source| KeycloakError::Setup {
            issuer: settings.name.clone(),
            source,
        };
        let insecure = settings.http.allow_insecure_http;
        http::check_url(&settings.url, insecure).map_err(setup)?;
        if let Some(endpoint) = &settings.token_endpoint {
            http::check_url(endpoint, insecure).map_err(setup)?;
        }
        let http = http::build_client(&settings.http).map_err(setup)?;
        Ok(Self {
            settings,
            http,
            clock,
            discovery: OnceCell::new(),
            keys: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// Gets a new token for `request` and checks it; never returns a token that failed a check.
    pub async fn fetch_token(&self, request: &TokenRequest) -> Result<AccessToken, KeycloakError> {
        self.fetch_token_inspected(request)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`KeycloakClient::fetch_token`], and when the issuer gave a token that failed a check,
    /// what that token says of itself ([`RefusedToken`]), so that `keyfed doctor` can show which
    /// claim is wrong. The refused token itself is dropped here.
    pub async fn fetch_token_inspected(
        &self,
        request: &TokenRequest,
    ) -> Result<AccessToken, (KeycloakError, Option<RefusedToken>)> {
        let endpoint = self.token_endpoint().await.map_err(|e| (e, None))?;
        let raw = self
            .request_token(request, &endpoint)
            .await
            .map_err(|e| (e, None))?;
        let rejected = |problem, decoded: &DecodedJwt| {
            let refused = RefusedToken {
                decoded: decoded.clone(),
                length: raw.expose_secret().len(),
            };
            let error = KeycloakError::TokenRejected {
                issuer: self.settings.name.clone(),
                audience: request.audience.clone(),
                problem,
            };
            (error, Some(refused))
        };
        let decoded = DecodedJwt::parse(raw.expose_secret()).map_err(|why| {
            let error = KeycloakError::TokenRejected {
                issuer: self.settings.name.clone(),
                audience: request.audience.clone(),
                problem: crate::TokenProblem::Malformed(why),
            };
            (error, None)
        })?;
        if self.settings.verify_signature {
            self.verify_signature(raw.expose_secret(), &decoded)
                .await
                .map_err(|e| (e, None))?
                .map_err(|problem| rejected(problem, &decoded))?;
        }
        let expires_at = validate::check_claims(
            &decoded,
            self.settings.url.as_str(),
            request,
            self.clock.now(),
        )
        .map_err(|problem| rejected(problem, &decoded))?;
        tracing::debug!(
            issuer = %self.settings.name,
            audience = %decoded.audience(),
            expires = %keyfed_core::clock::rfc3339(expires_at),
            "token received"
        );
        Ok(AccessToken::new(raw, decoded, expires_at))
    }

    async fn request_token(
        &self,
        request: &TokenRequest,
        endpoint: &Url,
    ) -> Result<SecretString, KeycloakError> {
        let s = &self.settings;
        let assertion_audience = match s.assertion_audience {
            AssertionAudience::Issuer => s.url.as_str().trim_end_matches('/'),
            AssertionAudience::TokenEndpoint => endpoint.as_str(),
        };
        let now = self.clock.now();
        let assertion = match &s.auth {
            ClientAuth::PrivateKeyJwt(key) => Some(assertion::signed_with_key(
                key,
                &s.client_id,
                assertion_audience,
                now,
            )),
            ClientAuth::SecretJwt(secret) => Some(assertion::signed_with_secret(
                secret,
                &s.client_id,
                assertion_audience,
                now,
            )),
            ClientAuth::SecretBasic(_) | ClientAuth::SecretPost(_) => None,
        }
        .transpose()
        .map_err(|detail| KeycloakError::Assertion {
            issuer: s.name.clone(),
            detail,
        })?;
        // The form borrows the secret and the assertion rather than copying them: what is left
        // of them after the request is reqwest's body, which keyfed cannot wipe (issue 11).
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &request.scope {
            form.push(("scope", scope));
        }
        if let Some(resource) = &request.resource {
            form.push(("resource", resource));
        }
        if request.audience_parameter {
            form.push(("audience", &request.audience));
        }
        let mut basic = None;
        match &s.auth {
            ClientAuth::SecretBasic(secret) => {
                basic = Some(basic_authorization(&s.client_id, secret));
            }
            ClientAuth::SecretPost(secret) => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
            ClientAuth::PrivateKeyJwt(_) | ClientAuth::SecretJwt(_) => {}
        }
        if let Some(assertion) = &assertion {
            form.push(("client_assertion_type", ASSERTION_TYPE));
            form.push(("client_assertion", assertion.expose_secret()));
        }
        let mut builder = self.http.post(endpoint.clone()).form(&form);
        if let Some(value) = basic {
            builder = builder.header(AUTHORIZATION, value);
        }
        let (status, body) = self.send("POST", endpoint, builder).await?;
        if !(200..300).contains(&status) {
            return Err(self.refusal(status, &body, endpoint, request));
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| KeycloakError::InvalidResponse {
                issuer: s.name.clone(),
                what: "token response",
                url: endpoint.to_string(),
                // An echo of the form is no token response either (issue 11).
                detail: format!(
                    "{e} (body: {})",
                    http::trim_body(&redacted_body(&self.redact_sent(&body)))
                ),
            })?;
        Ok(SecretString::from(parsed.access_token))
    }

    /// Turns a non-2xx answer into the issuer's own words plus a hint, or the raw status.
    fn refusal(
        &self,
        status: u16,
        body: &[u8],
        url: &Url,
        request: &TokenRequest,
    ) -> KeycloakError {
        let s = &self.settings;
        // An echo of the request (a gateway's error page) must not put the client's secret
        // into keyfed's words (issue 11).
        let body = &self.redact_sent(body);
        match serde_json::from_slice::<OAuthErrorBody>(body) {
            Ok(e) => KeycloakError::OAuth {
                issuer: s.name.clone(),
                status,
                hint: oauth_hint(
                    &e.error,
                    &e.error_description,
                    &s.client_id,
                    s.auth.method(),
                    request.scope.as_deref(),
                ),
                error: e.error,
                description: e.error_description,
            },
            Err(_) => KeycloakError::Http {
                issuer: s.name.clone(),
                method: "POST",
                url: url.to_string(),
                status,
                body: http::trim_body(&String::from_utf8_lossy(body)),
            },
        }
    }

    async fn token_endpoint(&self) -> Result<Url, KeycloakError> {
        if let Some(endpoint) = &self.settings.token_endpoint {
            return Ok(endpoint.clone());
        }
        Ok(self.discovery().await?.token_endpoint.clone())
    }

    pub(crate) async fn discovery(&self) -> Result<&Discovery, KeycloakError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = discovery::url_for(&self.settings.url).map_err(|e| {
                    self.invalid("discovery URL", &self.settings.url, e.to_string())
                })?;
                let body = self.get(&url).await?;
                discovery::parse(
                    &body,
                    &self.settings.url,
                    self.settings.http.allow_insecure_http,
                )
                .map_err(|detail| self.invalid("discovery document", &url, detail))
            })
            .await
    }

    /// Keeps `document`, fetched and checked by [`KeycloakClient::discover`], for the requests
    /// that follow, unless a document is kept already (the first one stays).
    pub(crate) fn remember_discovery(&self, document: Discovery) {
        let _ = self.discovery.set(document);
    }

    /// Checks the token's signature, refetching the JWKS once when its `kid` is unknown
    /// (the issuer may have rotated keys since the last fetch).
    async fn verify_signature(
        &self,
        raw: &str,
        decoded: &DecodedJwt,
    ) -> Result<Result<(), crate::TokenProblem>, KeycloakError> {
        let jwks = self.keys(false).await?;
        match validate::verify_signature(raw, decoded, &jwks.keys) {
            Err(crate::TokenProblem::UnknownKey { .. }) => {
                let jwks = self.keys(true).await?;
                Ok(validate::verify_signature(raw, decoded, &jwks.keys))
            }
            other => Ok(other),
        }
    }

    /// The issuer's JWKS: the cached one unless `refresh` says its `kid`s fell short, or it is
    /// older than [`JWKS_MAX_AGE`] (or the clock went back past its fetch).
    pub(crate) async fn keys(&self, refresh: bool) -> Result<Arc<Jwks>, KeycloakError> {
        let mut cached = self.keys.lock().await;
        let now = self.clock.now();
        let reason = match cached.as_ref() {
            _ if refresh => "unknown kid",
            None => "first use",
            Some(fetched) => match now.duration_since(fetched.at) {
                Ok(age) if age < JWKS_MAX_AGE => return Ok(Arc::clone(&fetched.jwks)),
                _ => "max age reached",
            },
        };
        let discovery = self.discovery().await?;
        let url = discovery
            .jwks_uri
            .clone()
            .ok_or_else(|| KeycloakError::NoJwksUri {
                issuer: self.settings.name.clone(),
                url: self.settings.url.to_string(),
            })?;
        let body = self.get(&url).await?;
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.invalid("JWKS", &url, e.to_string()))?;
        let keys = KeySet::parse(&document).map_err(|d| self.invalid("JWKS", &url, d))?;
        tracing::debug!(
            issuer = %self.settings.name,
            url = %url,
            keys = document["keys"].as_array().map_or(0, Vec::len),
            reason,
            "JWKS fetched"
        );
        let jwks = Arc::new(Jwks {
            url,
            document,
            keys,
        });
        *cached = Some(FetchedKeys {
            jwks: Arc::clone(&jwks),
            at: now,
        });
        Ok(jwks)
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, KeycloakError> {
        self.get_answer(url).await.map(|answer| answer.body)
    }

    /// A GET's whole answer (its `Date` header too), when it is a success.
    pub(crate) async fn get_answer(&self, url: &Url) -> Result<http::Answer, KeycloakError> {
        let answer = self
            .send_answer("GET", url, self.http.get(url.clone()))
            .await?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(KeycloakError::Http {
                issuer: self.settings.name.clone(),
                method: "GET",
                url: url.to_string(),
                status: answer.status,
                body: http::trim_body(&String::from_utf8_lossy(&self.redact_sent(&answer.body))),
            })
        }
    }

    async fn send(
        &self,
        method: &'static str,
        url: &Url,
        builder: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), KeycloakError> {
        self.send_answer(method, url, builder)
            .await
            .map(|answer| (answer.status, answer.body))
    }

    async fn send_answer(
        &self,
        method: &'static str,
        url: &Url,
        builder: reqwest::RequestBuilder,
    ) -> Result<http::Answer, KeycloakError> {
        http::send_and_read_answer(builder, MAX_RESPONSE_BYTES, self.settings.http.timeout)
            .await
            .map_err(|e| KeycloakError::Transport {
                issuer: self.settings.name.clone(),
                method,
                url: url.to_string(),
                timed_out: e.timed_out,
                detail: e.detail,
            })
    }

    /// `body` without the client's secret in the forms keyfed sends it (raw in a form, inside
    /// the Basic value) nor anything shaped like a token (see `redact_sent`).
    fn redact_sent(&self, body: &[u8]) -> Vec<u8> {
        let s = &self.settings;
        let secret = match &s.auth {
            ClientAuth::SecretBasic(secret)
            | ClientAuth::SecretPost(secret)
            | ClientAuth::SecretJwt(secret) => Some(secret),
            ClientAuth::PrivateKeyJwt(_) => None,
        };
        let basic = secret.map(|secret| basic_authorization(&s.client_id, secret));
        let basic = basic
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_start_matches("Basic "));
        let sent: Vec<&str> = secret
            .map(|s| s.expose_secret())
            .into_iter()
            .chain(basic)
            .collect();
        keyfed_core::secret::redact_sent_bytes(body, &sent)
    }

    pub(crate) fn invalid(&self, what: &'static str, url: &Url, detail: String) -> KeycloakError {
        KeycloakError::InvalidResponse {
            issuer: self.settings.name.clone(),
            what,
            url: url.to_string(),
            detail,
        }
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1 requires.
fn basic_authorization(client_id: &str, secret: &SecretString) -> HeaderValue {
    use base64::Engine as _;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret.expose_secret()));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    // Base64 output is always a valid header value; the fallback is unreachable.
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// A token response that failed to parse may still hold a token; never echo one.
fn redacted_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.contains("access_token") || text.contains("eyJ") {
        format!(
            "{} bytes, withheld because they may hold a token",
            body.len()
        )
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn basic_auth_urlencodes_before_base64() {
        let value = basic_authorization("host 1", &SecretString::from("a:b+c%d"));
        assert!(value.is_sensitive());
        let text = value
            .to_str()
            .unwrap_or_default()
            .trim_start_matches("Basic ");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&decoded), "host+1:a%3Ab%2Bc%25d");
    }

    #[test]
    fn malformed_token_bodies_are_not_echoed() {
        assert!(!redacted_body(br#"{"access_token":"eyJhbGciOi"#).contains("eyJ"));
        assert_eq!(redacted_body(b"<html>oops</html>"), "<html>oops</html>");
    }

    /// Issue 8: a fetched JWKS is kept for [`JWKS_MAX_AGE`] and fetched again after, so a key
    /// the issuer withdrew stops verifying tokens even when no new `kid` ever shows up.
    #[cfg(feature = "emulator")]
    #[tokio::test]
    async fn the_jwks_is_fetched_again_once_it_is_older_than_its_max_age() {
        use crate::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
        use keyfed_core::clock::ManualClock;

        let clock = ManualClock::starting_now();
        let realm = Realm::new("infra")
            .scope("aws-audience", &["sts.amazonaws.com"])
            .client(
                ClientSpec::new("host", Credential::Secret("kc-secret".to_owned()))
                    .optional_scopes(&["aws-audience"]),
            );
        // The realm issues tokens by the same clock, so they stay fresh as it moves.
        let kc = KeycloakEmulator::builder(realm)
            .clock(Arc::new(clock.clone()))
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
            Arc::new(clock.clone()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let request = TokenRequest {
            audience: "sts.amazonaws.com".to_owned(),
            strict_audience: false,
            scope: Some("aws-audience".to_owned()),
            resource: None,
            audience_parameter: false,
            min_remaining: Duration::from_secs(30),
        };
        let fetch = async || {
            client
                .fetch_token(&request)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            kc.jwks_requests()
        };
        assert_eq!(fetch().await, 1, "the first token fetches the JWKS");
        clock.advance(JWKS_MAX_AGE - Duration::from_secs(1));
        assert_eq!(fetch().await, 1, "a set younger than the max age is kept");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            fetch().await,
            2,
            "a set as old as the max age is fetched again"
        );
        assert_eq!(fetch().await, 2, "and the new set is kept");
        // A clock set back past the fetch cannot vouch for the set's age.
        clock.set(clock.now() - Duration::from_secs(60));
        assert_eq!(
            fetch().await,
            3,
            "a set fetched 'in the future' is fetched again"
        );
    }
}
