//! The client: one form POST to Entra ID's token endpoint (`<authority_host>/<tenant>/oauth2/
//! v2.0/token`) with `grant_type=client_credentials`, the target's `client_id`, one `scope`
//! (`<resource>/.default`), `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:
//! jwt-bearer` and the subject token as `client_assertion`. The answer `{token_type, expires_in,
//! ext_expires_in, access_token}` becomes an [`AzureToken`] whose expiry is counted from just
//! before the request; `expires_in` is read whether Entra sends it as a number or a string, and
//! must lie between 1 s and 24 h. One `EntraClient` per target; it is cheap to clone and safe
//! to call concurrently. Each call makes one attempt: when to retry is the caller's business,
//! told by the error's advice.
//!
//! Why not `azure_identity`'s `ClientAssertionCredential` (checked at 1.1.0-beta.1, the current
//! release): it gives a custom authority host but only over https (no plain http to loopback,
//! which keyfed's settings allow), and the CA bundle and keyfed's proxy rules would only come
//! through a custom azure_core transport wrapping keyfed's own reqwest client; it computes the
//! expiry from the wall clock after the answer (no injectable clock), reads `expires_in` only as
//! a JSON number (a string fails) and adds it with `OffsetDateTime + Duration`, which panics on
//! an absurd value; it caches tokens per scope and hands the same one back until 5 minutes
//! before expiry, which would defeat keyfed's refresh schedule and its fresh-token retry; its
//! pipeline retries by itself; and a non-JSON error answer (a proxy's 502 page) loses its HTTP
//! status, so a passing outage cannot be told from a refusal. It does expose `error_codes`, but
//! that is the only point it fully meets, so the request is keyfed's own — a dozen lines with
//! keyfed-core's HTTP client (its CA bundle, proxy rules that never proxy loopback, no
//! redirects, bounded bodies).

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::http::{self, MAX_RESPONSE_BYTES};
use keyfed_core::token_facts::TokenFacts;
use keyfed_core::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::config::AzureTarget;
use crate::error::{HintContext, Refusal, description, hint};
use crate::{AzureError, AzureToken};

const GRANT_TYPE: &str = "client_credentials";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an Entra access token may live as keyfed sees it. Entra issues 60–90 minutes by
/// default and at most a day (configurable lifetimes, CAE-capable resources up to 28 h are not
/// reached through client credentials); anything longer is a broken answer, and believing it
/// would keep a dead token in place.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Entra ID's token endpoint for one target.
#[derive(Debug, Clone)]
pub struct EntraClient {
    target: AzureTarget,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

/// Entra's error JSON, read leniently: each field may be missing.
#[derive(Deserialize)]
struct EntraErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Value,
    #[serde(default)]
    timestamp: Value,
    #[serde(default)]
    trace_id: Value,
    #[serde(default)]
    correlation_id: Value,
}

impl EntraErrorBody {
    fn code(&self) -> Option<u64> {
        match &self.error_codes {
            Value::Array(codes) => codes.iter().find_map(Value::as_u64),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        // Older answers carry the code only in the description.
        .or_else(|| {
            self.error_description
                .strip_prefix("AADSTS")?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    }
}

/// A short printable field of Entra's (an ID or a timestamp), or nothing.
fn field(value: &Value) -> String {
    value
        .as_str()
        .filter(|s| {
            s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | ' ' | '.'))
        })
        .unwrap_or_default()
        .to_owned()
}

impl EntraClient {
    /// A client for `target`'s authority, with its HTTP settings; no request is made yet.
    pub fn new(target: AzureTarget) -> Result<Self, AzureError> {
        http::check_url(&target.authority_host, target.http.allow_insecure_http)
            .map_err(AzureError::Setup)?;
        let http = http::build_client(&target.http).map_err(AzureError::Setup)?;
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
    pub fn target(&self) -> &AzureTarget {
        &self.target
    }

    /// An access token for `scope` (`<resource>/.default`), with the subject token as the
    /// client assertion.
    pub async fn token(
        &self,
        subject_token: &SecretString,
        scope: &str,
    ) -> Result<AzureToken, AzureError> {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AzureError::InvalidRequest {
                detail: format!(
                    "a token needs one scope such as \"https://management.azure.com/.default\", without spaces, got \"{}\"",
                    scope.escape_default()
                ),
            });
        }
        let url = self.target.token_url();
        let form = [
            ("client_id", self.target.client_id.as_str()),
            ("scope", scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", subject_token.expose_secret()),
            ("grant_type", GRANT_TYPE),
        ];
        tracing::debug!(
            tenant = %self.target.tenant_id,
            client_id = %self.target.client_id,
            scope,
            url = %url,
            "Entra ID token request"
        );
        // Counted from before the request: the token cannot live longer than that.
        let sent_at = self.clock.now();
        let (status, body) = self.send(&url, self.http.post(&url).form(&form)).await?;
        if !(200..300).contains(&status) {
            return Err(self.refusal(&url, status, &body, subject_token, scope));
        }
        let (token, expires_in) = parse_success(&body).map_err(|detail| invalid(&url, detail))?;
        let expires_at = sent_at.checked_add(expires_in).ok_or_else(|| {
            invalid(
                &url,
                format!(
                    "its expires_in {} s is beyond what this host's clock can count",
                    expires_in.as_secs()
                ),
            )
        })?;
        tracing::debug!(
            client_id = %self.target.client_id,
            scope,
            expires = %keyfed_core::clock::rfc3339(expires_at),
            "Entra ID access token received"
        );
        Ok(AzureToken {
            token,
            scope: scope.to_owned(),
            tenant_id: self.target.tenant_id.clone(),
            client_id: self.target.client_id.clone(),
            expires_at,
        })
    }

    /// The error for a non-2xx answer: Entra's own, or the body of whatever else answered.
    fn refusal(
        &self,
        url: &str,
        status: u16,
        body: &[u8],
        subject_token: &SecretString,
        scope: &str,
    ) -> AzureError {
        // An echo of the request (a gateway's error page) must not put the subject token, sent
        // as the client assertion, into keyfed's words (issue 11).
        let body = &keyfed_core::secret::redact_sent_bytes(body, &[subject_token.expose_secret()]);
        let Ok(e) = serde_json::from_slice::<EntraErrorBody>(body) else {
            return AzureError::Http {
                url: url.to_owned(),
                status,
                body: http::trim_body(&redacted_body(body, false)),
            };
        };
        let code = e.code();
        let cx = HintContext {
            tenant_id: self.target.tenant_id.clone(),
            client_id: self.target.client_id.clone(),
            authority_host: self.target.authority_host.to_string(),
            scope: scope.to_owned(),
            token: TokenFacts::read(subject_token),
        };
        let error = http::trim_body(&e.error);
        AzureError::Refused(Box::new(Refusal {
            tenant_id: self.target.tenant_id.clone(),
            client_id: self.target.client_id.clone(),
            scope: scope.to_owned(),
            status,
            hint: hint(&error, code, &cx),
            description: description(&e.error_description, code),
            code,
            error,
            trace_id: field(&e.trace_id),
            correlation_id: field(&e.correlation_id),
            timestamp: field(&e.timestamp),
        }))
    }

    async fn send(
        &self,
        url: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), AzureError> {
        http::send_and_read(builder, MAX_RESPONSE_BYTES, self.target.http.timeout)
            .await
            .map_err(|e| AzureError::Transport {
                url: url.to_owned(),
                timed_out: e.timed_out,
                detail: e.detail,
            })
    }
}

fn invalid(url: &str, detail: String) -> AzureError {
    AzureError::InvalidResponse {
        url: url.to_owned(),
        detail,
    }
}

/// The access token and its lifetime from a success body, or why the body will not do.
fn parse_success(body: &[u8]) -> Result<(SecretString, Duration), String> {
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{e} (body: {})",
            http::trim_body(&redacted_body(body, true))
        )
    })?;
    let Some(object) = parsed.as_object() else {
        return Err("it is not a JSON object".to_owned());
    };
    let token = match object.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => SecretString::from(t.clone()),
        Some(Value::String(_)) => return Err("its access_token is empty".to_owned()),
        Some(_) => return Err("its access_token is not a string".to_owned()),
        None => return Err("it has no access_token".to_owned()),
    };
    if let Some(kind) = object.get("token_type")
        && !kind
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("bearer"))
    {
        return Err(format!(
            "its token_type is {}, not Bearer",
            http::trim_body(&kind.to_string())
        ));
    }
    let expires_in = expires_in(object.get("expires_in"))?;
    Ok((token, expires_in))
}

/// `expires_in` as Entra sends it — a number, or (from some endpoints) a string of digits —
/// bounded to 1 s … 24 h.
fn expires_in(value: Option<&Value>) -> Result<Duration, String> {
    let secs = match value {
        None => return Err("it has no expires_in".to_owned()),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            format!("its expires_in {n} is not a whole number of seconds above zero")
        })?,
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| {
            format!(
                "its expires_in \"{}\" is not a whole number of seconds above zero",
                http::trim_body(s)
            )
        })?,
        Some(other) => {
            return Err(format!(
                "its expires_in {} is not a number",
                http::trim_body(&other.to_string())
            ));
        }
    };
    if secs == 0 {
        return Err("its expires_in is 0: the token is already expired".to_owned());
    }
    if secs > MAX_TOKEN_LIFE.as_secs() {
        return Err(format!(
            "its expires_in {secs} s is more than 24 hours; Entra issues access tokens for 60–90 minutes, so the answer is wrong"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// A body never echoed when it may hold a token: Entra's access tokens and assertions are JWTs
/// (`eyJ`); a success body (`success`) that mentions a token at all is withheld too, since it
/// may be a token response cut short.
fn redacted_body(body: &[u8], success: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let marks: &[&str] = if success { &["token", "eyj"] } else { &["eyj"] };
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

/// How long a success body says its token lives (for the unit tests).
#[cfg(test)]
pub(crate) fn lifetime_of(body: &[u8]) -> Result<Duration, String> {
    parse_success(body).map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_a_number_or_a_string_and_bounded() {
        let ok =
            |text: &str| lifetime_of(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            ok(
                r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJx"}"#
            ),
            Duration::from_secs(3599)
        );
        assert_eq!(
            ok(r#"{"token_type":"Bearer","expires_in":"4742","access_token":"eyJx"}"#),
            Duration::from_secs(4742)
        );
        assert_eq!(
            ok(r#"{"expires_in":86400,"access_token":"x"}"#),
            Duration::from_secs(86400)
        );
        for (body, says) in [
            (r#"{"expires_in":0,"access_token":"x"}"#, "is 0"),
            (
                r#"{"expires_in":-5,"access_token":"x"}"#,
                "not a whole number",
            ),
            (
                r#"{"expires_in":1.5,"access_token":"x"}"#,
                "not a whole number",
            ),
            (
                r#"{"expires_in":86401,"access_token":"x"}"#,
                "more than 24 hours",
            ),
            (
                r#"{"expires_in":"99999999999999999999999","access_token":"x"}"#,
                "not a whole number",
            ),
            (
                r#"{"expires_in":18446744073709551615,"access_token":"x"}"#,
                "more than 24 hours",
            ),
            (
                r#"{"expires_in":"soon","access_token":"x"}"#,
                "not a whole number",
            ),
            (r#"{"expires_in":null,"access_token":"x"}"#, "not a number"),
            (r#"{"access_token":"x"}"#, "no expires_in"),
            (
                r#"{"expires_in":60,"access_token":""}"#,
                "access_token is empty",
            ),
            (r#"{"expires_in":60}"#, "no access_token"),
            (r#"{"expires_in":60,"access_token":7}"#, "not a string"),
            (
                r#"{"expires_in":60,"access_token":"x","token_type":"pop"}"#,
                "not Bearer",
            ),
            (r#"[1]"#, "not a JSON object"),
        ] {
            let err = lifetime_of(body.as_bytes()).err().unwrap_or_default();
            assert!(err.contains(says), "{body}: {err}");
        }
    }

    #[test]
    fn bodies_that_may_hold_tokens_are_not_echoed() {
        let cut = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0eXAi"#;
        let err = lifetime_of(cut.as_bytes()).err().unwrap_or_default();
        assert!(
            err.contains("withheld") && !err.contains("eyJ0eXAi"),
            "{err}"
        );
        assert!(redacted_body(b"upstream said eyJabc", false).contains("withheld"));
        assert_eq!(
            redacted_body(b"<html>502</html>", false),
            "<html>502</html>"
        );
        assert_eq!(redacted_body(b"", false), "(empty)");
    }

    #[test]
    fn entra_fields_are_short_and_printable() {
        assert_eq!(
            field(&Value::from("30b6df93-efd2-459c-ae6a-bad0838f6f00")),
            "30b6df93-efd2-459c-ae6a-bad0838f6f00"
        );
        assert_eq!(
            field(&Value::from("2022-10-27 23:39:22Z")),
            "2022-10-27 23:39:22Z"
        );
        assert_eq!(field(&Value::from("a\nhint: forged")), "");
        assert_eq!(field(&Value::from(7)), "");
    }
}
