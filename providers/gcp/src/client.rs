//! The client: STS token exchange (RFC 8693, form POST to `sts_url`), then optionally IAM
//! Credentials' `generateAccessToken` or `generateIdToken` for the impersonated service account
//! (JSON POST with the federated token as Bearer). One `GcpClient` per target; it is cheap to
//! clone and safe to call concurrently. Each call makes one attempt at each step: when to retry
//! is the caller's business, told by the error's advice.
//!
//! When impersonating, STS is asked for `cloud-platform` whatever the consumer wants, as
//! google-auth does: the federated token only has to be good for IAM Credentials, and the
//! scopes asked for go to `generateAccessToken`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::http::{self, MAX_RESPONSE_BYTES};
use keyfed_core::{ExposeSecret as _, SecretString};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::{CLOUD_PLATFORM, GcpTarget};
use crate::error::{Call, GcpError, HintContext, iam_hint, sts_hint};
use crate::{GcpToken, GcpTokenKind};
use keyfed_core::token_facts::{self, TokenFacts};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The longest a token from Google may live as keyfed sees it: IAM Credentials issues at most
/// 12 h (with the organization policy that allows more than 1 h), STS at most 1 h, ID tokens
/// 1 h. Anything longer is a broken answer (or a broken clock), and believing it would keep a
/// dead token in place for that long (issue 9).
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(12 * 3600);
/// How far `expireTime` may lie beyond [`MAX_TOKEN_LIFE`] from this host's clock: Google
/// counts from its own clock, a little after keyfed's request.
const EXPIRE_TIME_SLACK: Duration = Duration::from_secs(60);

/// Google's STS and IAM Credentials for one target.
#[derive(Debug, Clone)]
pub struct GcpClient {
    target: GcpTarget,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

#[derive(Deserialize)]
struct StsResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    /// `google.rpc.ErrorInfo` and friends, read leniently: only a `reason` is used.
    #[serde(default)]
    details: serde_json::Value,
}

impl GoogleError {
    /// The first `reason` in the details (`SERVICE_DISABLED`, `IAM_PERMISSION_DENIED`).
    fn reason(&self) -> Option<&str> {
        self.details
            .as_array()?
            .iter()
            .find_map(|detail| detail.get("reason")?.as_str())
    }
}

#[derive(Serialize)]
struct GenerateAccessTokenRequest<'a> {
    scope: &'a [String],
    lifetime: String,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    delegates: &'a [String],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenResponse {
    access_token: String,
    expire_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateIdTokenRequest<'a> {
    audience: &'a str,
    include_email: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    delegates: &'a [String],
}

#[derive(Deserialize)]
struct GenerateIdTokenResponse {
    token: String,
}

/// A federated access token from STS, and when it stops working.
struct Federated {
    token: SecretString,
    expires_at: SystemTime,
}

impl GcpClient {
    /// A client for `target`'s endpoints, with its HTTP settings; no request is made yet.
    pub fn new(target: GcpTarget) -> Result<Self, GcpError> {
        let insecure = target.http.allow_insecure_http;
        http::check_url(&target.sts_url, insecure).map_err(GcpError::Setup)?;
        http::check_url(&target.iam_url, insecure).map_err(GcpError::Setup)?;
        let http = http::build_client(&target.http).map_err(GcpError::Setup)?;
        Ok(Self {
            target,
            http,
            clock: Arc::new(SystemClock),
        })
    }

    /// The clock `expires_in` counts from (the real one unless a test says otherwise).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The target's settings.
    pub fn target(&self) -> &GcpTarget {
        &self.target
    }

    /// An access token for `scopes`: STS's federated token, traded for the service account's
    /// when the target impersonates one.
    pub async fn access_token(
        &self,
        subject_token: &SecretString,
        scopes: &[String],
    ) -> Result<GcpToken, GcpError> {
        if scopes.is_empty() || scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(GcpError::InvalidRequest {
                detail: format!(
                    "an access token needs one or more OAuth scopes without spaces, got {scopes:?}"
                ),
            });
        }
        let Some(service_account) = &self.target.service_account else {
            let federated = self.exchange(subject_token, scopes).await?;
            return Ok(GcpToken {
                kind: GcpTokenKind::Access {
                    scopes: scopes.to_vec(),
                    service_account: None,
                },
                token: federated.token,
                expires_at: federated.expires_at,
            });
        };
        let federated = self
            .exchange(subject_token, &[CLOUD_PLATFORM.to_owned()])
            .await?;
        let request = GenerateAccessTokenRequest {
            scope: scopes,
            lifetime: format!("{}s", self.target.lifetime.as_secs()),
            delegates: &self.target.delegates,
        };
        let call = Call::GenerateAccessToken;
        let url = self
            .target
            .iam_method_url(service_account, "generateAccessToken");
        let body = self
            .iam_call(call, &url, &federated.token, &request, subject_token)
            .await?;
        let parsed: GenerateAccessTokenResponse =
            serde_json::from_slice(&body).map_err(|e| invalid(call, &url, withheld(&e, &body)))?;
        if parsed.access_token.is_empty() {
            return Err(invalid(call, &url, "its accessToken is empty".to_owned()));
        }
        let expires_at = parse_rfc3339(&parsed.expire_time).ok_or_else(|| {
            invalid(
                call,
                &url,
                format!(
                    "its expireTime \"{}\" is not an RFC 3339 time",
                    http::trim_body(&parsed.expire_time)
                ),
            )
        })?;
        let now = self.clock.now();
        if too_far_ahead(now, expires_at, MAX_TOKEN_LIFE + EXPIRE_TIME_SLACK) {
            return Err(invalid(
                call,
                &url,
                format!(
                    "its expireTime {} is more than 12 hours ahead of this host's clock ({}); IAM Credentials issues tokens for at most 12 hours, so the answer or this host's clock is wrong",
                    keyfed_core::clock::rfc3339(expires_at),
                    keyfed_core::clock::rfc3339(now)
                ),
            ));
        }
        tracing::debug!(
            service_account = %service_account,
            expires = %keyfed_core::clock::rfc3339(expires_at),
            "service account access token received"
        );
        Ok(GcpToken {
            kind: GcpTokenKind::Access {
                scopes: scopes.to_vec(),
                service_account: Some(service_account.clone()),
            },
            token: SecretString::from(parsed.access_token),
            expires_at,
        })
    }

    /// The service account's ID token for `audience`.
    pub async fn id_token(
        &self,
        subject_token: &SecretString,
        audience: &str,
        full: bool,
    ) -> Result<GcpToken, GcpError> {
        let Some(service_account) = &self.target.service_account else {
            return Err(GcpError::InvalidRequest {
                detail: format!(
                    "an ID token for \"{}\" needs a service account to impersonate (service_account): a federated identity has no ID tokens",
                    audience.escape_default()
                ),
            });
        };
        if audience.is_empty() {
            return Err(GcpError::InvalidRequest {
                detail: "an ID token needs an audience".to_owned(),
            });
        }
        let federated = self
            .exchange(subject_token, &[CLOUD_PLATFORM.to_owned()])
            .await?;
        let request = GenerateIdTokenRequest {
            audience,
            include_email: full,
            delegates: &self.target.delegates,
        };
        let call = Call::GenerateIdToken;
        let url = self
            .target
            .iam_method_url(service_account, "generateIdToken");
        let body = self
            .iam_call(call, &url, &federated.token, &request, subject_token)
            .await?;
        let parsed: GenerateIdTokenResponse =
            serde_json::from_slice(&body).map_err(|e| invalid(call, &url, withheld(&e, &body)))?;
        let exp = token_facts::claims(&parsed.token)
            .and_then(|claims| claims.get("exp").and_then(serde_json::Value::as_u64))
            .ok_or_else(|| {
                invalid(
                    call,
                    &url,
                    "its token is not a JWT with a numeric exp claim".to_owned(),
                )
            })?;
        let expires_at = keyfed_core::clock::from_unix_seconds(exp);
        let now = self.clock.now();
        if expires_at <= now {
            return Err(invalid(
                call,
                &url,
                format!(
                    "its token's exp {} is already past by this host's clock ({}); check this host's clock (timedatectl)",
                    keyfed_core::clock::rfc3339(expires_at),
                    keyfed_core::clock::rfc3339(now)
                ),
            ));
        }
        if too_far_ahead(now, expires_at, MAX_TOKEN_LIFE) {
            return Err(invalid(
                call,
                &url,
                format!(
                    "its token's exp {} is more than 12 hours ahead of this host's clock ({}); Google's ID tokens live 1 hour, so the answer or this host's clock is wrong",
                    keyfed_core::clock::rfc3339(expires_at),
                    keyfed_core::clock::rfc3339(now)
                ),
            ));
        }
        tracing::debug!(
            service_account = %service_account,
            audience = %audience.escape_default(),
            expires = %keyfed_core::clock::rfc3339(expires_at),
            "service account ID token received"
        );
        Ok(GcpToken {
            kind: GcpTokenKind::Id {
                audience: audience.to_owned(),
                full,
                service_account: service_account.clone(),
            },
            token: SecretString::from(parsed.token),
            expires_at,
        })
    }

    /// STS's token exchange for `scopes`: the federated access token.
    async fn exchange(
        &self,
        subject_token: &SecretString,
        scopes: &[String],
    ) -> Result<Federated, GcpError> {
        let call = Call::Sts;
        let url = self.target.sts_url.as_str();
        let form = [
            ("grant_type", GRANT_TYPE),
            ("audience", &self.target.sts_audience()),
            ("scope", &scopes.join(" ")),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token_type", JWT_TOKEN_TYPE),
            ("subject_token", subject_token.expose_secret()),
        ];
        tracing::debug!(provider = %self.target.provider, url, "STS token exchange");
        // Counted from before the request: the token cannot live longer than that.
        let sent_at = self.clock.now();
        let (status, body) = self
            .send(call, url, self.http.post(url).form(&form))
            .await?;
        if !(200..300).contains(&status) {
            // An echo of the request (a gateway's error page) must not put the subject token
            // into keyfed's words (issue 11).
            let body =
                keyfed_core::secret::redact_sent_bytes(&body, &[subject_token.expose_secret()]);
            let cx = self.hint_context(subject_token);
            return Err(match serde_json::from_slice::<OAuthErrorBody>(&body) {
                Ok(e) => GcpError::StsRefused {
                    provider: self.target.provider.clone(),
                    status,
                    hint: sts_hint(&e.error, &e.error_description, None, &cx),
                    error: e.error,
                    description: e.error_description,
                },
                // Google's front end answers some failures (5xx, quota) in its API shape.
                Err(_) => match serde_json::from_slice::<GoogleErrorBody>(&body) {
                    Ok(GoogleErrorBody { error }) => GcpError::StsRefused {
                        provider: self.target.provider.clone(),
                        status,
                        // Only what the API shape can say: the Security Token Service API is
                        // disabled (issue 9).
                        hint: sts_hint("", &error.message, error.reason(), &cx),
                        error: error.status,
                        description: error.message,
                    },
                    Err(_) => not_google(call, url, status, &body),
                },
            });
        }
        let parsed: StsResponse =
            serde_json::from_slice(&body).map_err(|e| invalid(call, url, withheld(&e, &body)))?;
        if parsed.access_token.is_empty() {
            return Err(invalid(call, url, "its access_token is empty".to_owned()));
        }
        if let Some(kind) = parsed
            .token_type
            .as_deref()
            .filter(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(invalid(
                call,
                url,
                format!(
                    "its token_type is \"{}\", not Bearer",
                    http::trim_body(kind)
                ),
            ));
        }
        let expires_in = match parsed.expires_in {
            Some(secs) if secs > 0 && secs.unsigned_abs() <= MAX_TOKEN_LIFE.as_secs() => {
                Duration::from_secs(secs.unsigned_abs())
            }
            Some(secs) if secs > 0 => {
                return Err(invalid(
                    call,
                    url,
                    format!(
                        "its expires_in {secs} s is more than 12 hours; STS issues tokens for at most 1 hour"
                    ),
                ));
            }
            Some(secs) => {
                return Err(invalid(
                    call,
                    url,
                    format!("its expires_in {secs} is not positive"),
                ));
            }
            // STS leaves it out when the subject token has a second or two left: the federated
            // token is as good as expired.
            None => {
                return Err(invalid(
                    call,
                    url,
                    "it has no expires_in (STS leaves it out when the subject token is about to expire)"
                        .to_owned(),
                ));
            }
        };
        // Checked, though bounded above: Google's number must never panic keyfed (issue 9).
        let expires_at = sent_at.checked_add(expires_in).ok_or_else(|| {
            invalid(
                call,
                url,
                format!(
                    "its expires_in {} s is beyond what this host's clock can count",
                    expires_in.as_secs()
                ),
            )
        })?;
        tracing::debug!(
            provider = %self.target.provider,
            expires = %keyfed_core::clock::rfc3339(expires_at),
            "federated access token received"
        );
        Ok(Federated {
            token: SecretString::from(parsed.access_token),
            expires_at,
        })
    }

    /// One IAM Credentials call with the federated token as Bearer; the body of a 2xx answer,
    /// or the refusal in Google's words.
    async fn iam_call(
        &self,
        call: Call,
        url: &str,
        federated: &SecretString,
        request: &impl Serialize,
        subject_token: &SecretString,
    ) -> Result<Vec<u8>, GcpError> {
        let bearer = HeaderValue::from_str(&format!("Bearer {}", federated.expose_secret()))
            .map(|mut value| {
                value.set_sensitive(true);
                value
            })
            .map_err(|_| {
                invalid(
                    Call::Sts,
                    self.target.sts_url.as_str(),
                    "its access_token is not usable in an HTTP header".to_owned(),
                )
            })?;
        let builder = self
            .http
            .post(url)
            .header(AUTHORIZATION, bearer)
            .json(request);
        let (status, body) = self.send(call, url, builder).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        // Nor the federated token sent as Bearer (issue 11).
        let body = keyfed_core::secret::redact_sent_bytes(
            &body,
            &[federated.expose_secret(), subject_token.expose_secret()],
        );
        let cx = self.hint_context(subject_token);
        Err(match serde_json::from_slice::<GoogleErrorBody>(&body) {
            Ok(GoogleErrorBody { error }) => GcpError::IamRefused {
                call,
                service_account: cx.service_account.clone().unwrap_or_default(),
                status,
                hint: iam_hint(call, &error.status, &error.message, error.reason(), &cx),
                google_status: error.status,
                message: error.message,
            },
            Err(_) => not_google(call, url, status, &body),
        })
    }

    async fn send(
        &self,
        call: Call,
        url: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), GcpError> {
        http::send_and_read(builder, MAX_RESPONSE_BYTES, self.target.http.timeout)
            .await
            .map_err(|e| GcpError::Transport {
                call,
                url: url.to_owned(),
                timed_out: e.timed_out,
                detail: e.detail,
            })
    }

    fn hint_context(&self, subject_token: &SecretString) -> HintContext {
        HintContext {
            provider: self.target.provider.clone(),
            pool: self.target.pool().to_owned(),
            default_audience: self.target.default_audience(),
            service_account: self.target.service_account.clone(),
            delegates: self.target.delegates.clone(),
            project_number: self.target.project_number.clone(),
            lifetime_secs: self.target.lifetime.as_secs(),
            token: TokenFacts::read(subject_token),
        }
    }
}

fn invalid(call: Call, url: &str, detail: String) -> GcpError {
    GcpError::InvalidResponse {
        call,
        url: url.to_owned(),
        detail,
    }
}

/// A refusal that is not in Google's error shape: its body trimmed and quoted.
fn not_google(call: Call, url: &str, status: u16, body: &[u8]) -> GcpError {
    GcpError::Http {
        call,
        url: url.to_owned(),
        status,
        body: http::trim_body(&redacted_body(body, false)),
    }
}

/// Why a success body did not parse, with the body only when it cannot hold a token.
fn withheld(error: &serde_json::Error, body: &[u8]) -> String {
    format!(
        "{error} (body: {})",
        http::trim_body(&redacted_body(body, true))
    )
}

/// A body never echoed when it may hold a token: Google's access tokens start `ya29.`, JWTs
/// `eyJ`; a success body (`success`) that mentions a token at all is withheld too, since it
/// may be a token response cut short.
fn redacted_body(body: &[u8], success: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let marks: &[&str] = if success {
        &["token", "ya29.", "eyj"]
    } else {
        &["ya29.", "eyj"]
    };
    if marks.iter().any(|m| lower.contains(m)) {
        format!(
            "{} bytes, withheld because they may hold a token",
            body.len()
        )
    } else if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text.into_owned()
    }
}

/// Whether `expires_at` lies more than `max` after `now`.
fn too_far_ahead(now: SystemTime, expires_at: SystemTime, max: Duration) -> bool {
    expires_at
        .duration_since(now)
        .is_ok_and(|ahead| ahead > max)
}

/// `2026-11-25T19:00:00Z` (or with fractional seconds or an offset) as a moment.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_times_parse_and_garbage_does_not() {
        let t = parse_rfc3339("2026-11-25T19:00:00Z").unwrap_or_else(|| panic!("no parse"));
        assert_eq!(keyfed_core::clock::rfc3339(t), "2026-11-25T19:00:00Z");
        assert!(parse_rfc3339("2026-11-25T19:00:00.250Z").is_some());
        for bad in ["", "tomorrow", "2026-11-25", "2026-13-01T00:00:00Z"] {
            assert!(parse_rfc3339(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bodies_that_may_hold_tokens_are_not_echoed() {
        for body in [
            r#"{"access_token":"ya29.abc"#,
            r#"{"accessToken":"x""#,
            r#"{"token":"eyJhbGciOi"#,
            "ya29.something",
        ] {
            let shown = redacted_body(body.as_bytes(), true);
            assert!(shown.contains("withheld"), "{body}: {shown}");
        }
        // An error page may name the token endpoint; only token-shaped text is withheld there.
        assert_eq!(
            redacted_body(b"<html>502 from /v1/token</html>", false),
            "<html>502 from /v1/token</html>"
        );
        assert!(redacted_body(b"upstream said ya29.secret", false).contains("withheld"));
        assert_eq!(redacted_body(b"", false), "(empty)");
    }
}
