//! What Google answers (issue 11): STS's token exchange (RFC 8693 JSON, RFC 6749 refusals and
//! refusals in Google's API shape) and IAM Credentials' `generateAccessToken` and
//! `generateIdToken` (JSON, `{error:{code,message,status,details}}` refusals), through
//! `keyfed_gcp::GcpClient`. Options: `sa` impersonates a service account (STS, then IAM
//! Credentials); `id` asks for an ID token (with `sa`).
//!
//! Nothing may panic; a token handed back lives a positive time within Google's bounds (an ID
//! token's `exp` ahead of the clock, at most 12 hours; STS's at most 12 hours); no error shows
//! the subject token keyfed sent or a token a 2xx answer held.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::http::HttpSettings;
use keyfed_core::{ManualClock, SecretString};
use keyfed_fuzz::{Script, Server, assert_hidden, json_field, now};
use keyfed_gcp::config::{CLOUD_PLATFORM, GcpTarget};
use keyfed_gcp::{GcpClient, GcpTokenKind};
use libfuzzer_sys::fuzz_target;
use url::Url;

const SERVICE_ACCOUNT: &str = "fuzz@keyfed-fuzz.iam.gserviceaccount.com";
const PROVIDER: &str =
    "projects/123456789/locations/global/workloadIdentityPools/fuzz/providers/keycloak";
/// The subject token keyfed sends: claims a hint quotes, a signature no one checks.
const SUBJECT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enoifQ.eyJpc3MiOiJodHRwczovL3Nzby5leGFtcGxlLmNvbS9yZWFsbXMvaW5mcmEiLCJhdWQiOiJodHRwczovL2lhbS5nb29nbGVhcGlzLmNvbS9wcm9qZWN0cy8xMjM0NTY3ODkvbG9jYXRpb25zL2dsb2JhbC93b3JrbG9hZElkZW50aXR5UG9vbHMvZnV6ei9wcm92aWRlcnMva2V5Y2xvYWsiLCJzdWIiOiJob3N0LWZ1enoiLCJleHAiOjE3NjcyMjkyMDB9.ZnV6ei1zaWduYXR1cmUtbm90LWNoZWNrZWQ";
const TWELVE_HOURS: Duration = Duration::from_secs(12 * 3600);

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let server = Server::get();
    let base = server.base();
    let url = |path: &str| Url::parse(&format!("{base}{path}")).unwrap_or_else(|e| panic!("{e}"));
    let target = GcpTarget {
        provider: PROVIDER.to_owned(),
        service_account: script.has("sa").then(|| SERVICE_ACCOUNT.to_owned()),
        scopes: vec![CLOUD_PLATFORM.to_owned()],
        lifetime: Duration::from_secs(3600),
        delegates: Vec::new(),
        project_id: Some("keyfed-fuzz".to_owned()),
        project_number: "123456789".to_owned(),
        sts_url: url("/v1/token"),
        iam_url: url("/"),
        http: HttpSettings {
            timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        },
    };
    let client = GcpClient::new(target)
        .unwrap_or_else(|e| panic!("the client: {e}"))
        .with_clock(Arc::new(ManualClock::new(now())));
    let subject = SecretString::from(SUBJECT);
    let scopes = [CLOUD_PLATFORM.to_owned()];
    let result = if script.has("id") {
        server.run(
            &script.answers,
            "application/json",
            client.id_token(&subject, "https://api.example.com", script.has("full")),
        )
    } else {
        server.run(
            &script.answers,
            "application/json",
            client.access_token(&subject, &scopes),
        )
    };
    match &result {
        Ok(_) => keyfed_fuzz::show(&"accepted"),
        Err(error) => keyfed_fuzz::show(error),
    }
    match result {
        Ok(token) => {
            let federated = matches!(
                &token.kind,
                GcpTokenKind::Access {
                    service_account: None,
                    ..
                }
            );
            if federated || matches!(token.kind, GcpTokenKind::Id { .. }) {
                let left = token
                    .expires_at
                    .duration_since(now())
                    .unwrap_or_else(|_| panic!("accepted a token already expired"));
                assert!(
                    !left.is_zero() && left <= TWELVE_HOURS,
                    "accepted a token living {left:?}"
                );
            }
            assert_hidden(&format!("{token:?}"), SUBJECT, b"", &[]);
        }
        Err(error) => {
            let shown = error.to_string();
            assert_hidden(&shown, SUBJECT, b"", &[]);
            for answer in script
                .answers
                .iter()
                .filter(|a| (200..300).contains(&a.status))
            {
                for field in ["access_token", "accessToken", "token"] {
                    if let Some(token) = json_field(&answer.body, field) {
                        assert_hidden(
                            &shown,
                            &token,
                            &answer.body,
                            &[&base, SERVICE_ACCOUNT, PROVIDER],
                        );
                    }
                }
            }
        }
    }
});
