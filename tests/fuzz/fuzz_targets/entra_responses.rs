//! What Microsoft Entra ID answers to a client-credentials request with a client assertion
//! (issue 11): the token JSON (`expires_in` a number or a string) and its error JSON (`error`,
//! `error_description` with `AADSTS` codes, `error_codes`, trace and correlation IDs), through
//! `keyfed_azure::EntraClient`.
//!
//! Nothing may panic; a token handed back lives between 1 second and 24 hours; no error shows
//! the subject token keyfed sent as its assertion or a token a 2xx answer held.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use keyfed_azure::EntraClient;
use keyfed_azure::config::AzureTarget;
use keyfed_core::http::HttpSettings;
use keyfed_core::{ManualClock, SecretString};
use keyfed_fuzz::{Script, Server, assert_hidden, json_field, now};
use libfuzzer_sys::fuzz_target;
use url::Url;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
const SCOPE: &str = "https://management.azure.com/.default";
/// The assertion keyfed sends: claims a hint quotes, a signature no one checks.
const SUBJECT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enoifQ.eyJpc3MiOiJodHRwczovL3Nzby5leGFtcGxlLmNvbS9yZWFsbXMvaW5mcmEiLCJhdWQiOiJhcGk6Ly9BenVyZUFEVG9rZW5FeGNoYW5nZSIsInN1YiI6Imhvc3QtZnV6eiIsImV4cCI6MTc2NzIyOTIwMH0.ZnV6ei1zaWduYXR1cmUtbm90LWNoZWNrZWQ";
const DAY: Duration = Duration::from_secs(24 * 3600);

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let server = Server::get();
    let base = server.base();
    let target = AzureTarget {
        tenant_id: TENANT.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        scopes: vec![SCOPE.to_owned()],
        authority_host: Url::parse(&base).unwrap_or_else(|e| panic!("{e}")),
        http: HttpSettings {
            timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        },
    };
    let client = EntraClient::new(target)
        .unwrap_or_else(|e| panic!("the client: {e}"))
        .with_clock(Arc::new(ManualClock::new(now())));
    let subject = SecretString::from(SUBJECT);
    let result = server.run(
        &script.answers,
        "application/json",
        client.token(&subject, SCOPE),
    );
    match &result {
        Ok(_) => keyfed_fuzz::show(&"accepted"),
        Err(error) => keyfed_fuzz::show(error),
    }
    match result {
        Ok(token) => {
            let left = token
                .expires_at
                .duration_since(now())
                .unwrap_or_else(|_| panic!("accepted a token already expired"));
            assert!(
                left >= Duration::from_secs(1) && left <= DAY,
                "accepted a token living {left:?}"
            );
            assert_eq!(token.scope, SCOPE);
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
                if let Some(token) = json_field(&answer.body, "access_token") {
                    assert_hidden(
                        &shown,
                        &token,
                        &answer.body,
                        &[&base, TENANT, CLIENT_ID, SCOPE],
                    );
                }
            }
        }
    }
});
