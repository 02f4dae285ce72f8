//! Regression tests for what fuzzing the client found (issue 11; the fuzz targets are in
//! tests/fuzz/, `keycloak_responses`).

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::http::HttpSettings;
use keyfed_core::{ManualClock, SecretString};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::Url;

use crate::{AssertionAudience, ClientAuth, IssuerSettings, KeycloakClient, TokenRequest};

const SECRET: &str = "kc-issue-11-client-secret-0123456789";

/// A token endpoint on loopback answering every request with 200 and `{"echo": "<the request's
/// body>"`, cut short: what an echo service (httpbin's `/post`) or a misrouted gateway gives.
async fn echoing_endpoint() -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as many bytes of form as it announces.
            let form = loop {
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, form)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if form.len() >= length {
                        break form.to_owned();
                    }
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break String::new(),
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            };
            let body = format!("{{\"echo\": \"{form}\"");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Url::parse(&format!(
        "http://127.0.0.1:{port}/realms/r/protocol/openid-connect/token"
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// issue 11 (found by fuzzing): a 2xx token response that is not a token response was quoted
/// in the error unless it mentioned `access_token` or `eyJ` — an echo of the form (an echo
/// service, a misrouted gateway answering 200) put the client secret into keyfed's error, its
/// log and `keyfed status`.
#[tokio::test]
async fn issue_11_a_2xx_echo_of_the_form_does_not_show_the_client_secret() {
    let endpoint = echoing_endpoint().await;
    let issuer = Url::parse("http://127.0.0.1:1/realms/r").unwrap_or_else(|e| panic!("{e}"));
    let settings = IssuerSettings {
        name: "corp".to_owned(),
        url: issuer,
        client_id: "host-issue-11".to_owned(),
        auth: ClientAuth::SecretPost(SecretString::from(SECRET)),
        token_endpoint: Some(endpoint),
        assertion_audience: AssertionAudience::default(),
        verify_signature: false,
        http: HttpSettings::default(),
    };
    let client = KeycloakClient::new(settings, Arc::new(ManualClock::starting_now()))
        .unwrap_or_else(|e| panic!("{e}"));
    let request = TokenRequest {
        audience: "sts.amazonaws.com".to_owned(),
        strict_audience: false,
        scope: Some("aws-audience".to_owned()),
        resource: None,
        audience_parameter: false,
        min_remaining: Duration::from_secs(30),
    };
    let error = client
        .fetch_token(&request)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("an echo was taken for a token"));
    assert!(error.contains("token response"), "{error}");
    assert!(
        !error.contains(SECRET),
        "the error shows the client secret: {error}"
    );
}
