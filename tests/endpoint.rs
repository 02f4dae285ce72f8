//! The local metadata endpoint through the real daemon: the IMDSv2 and container faces exactly
//! as SDKs call them, every refusal with its status, health and metrics, robustness against slow,
//! oversized and massed requests, single flight, and per-user access control.

use std::time::Duration;

use keyfed_core::emulator::{Fault, Latch};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::util::http::client;
use crate::util::{
    Fixture, curl_as, held, raw_exchange, status_of, text_of, wait_ready, wait_until,
};

/// A fresh IMDSv2 session token (known to the leak check from now on).
async fn imds_token(fx: &Fixture, http: &reqwest::Client, base: &str) -> String {
    imds_token_for(fx, http, base, 120).await
}

async fn imds_token_for(fx: &Fixture, http: &reqwest::Client, base: &str, ttl: u32) -> String {
    let ttl = ttl.to_string();
    let response = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", &ttl)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok()),
        Some(ttl.as_str()),
        "the TTL is echoed (the Rust SDK needs it)"
    );
    let token = response.text().await.unwrap_or_default();
    fx.know("an IMDS session token", &token);
    token
}

/// The container face's answer at `base` to a request with the container token.
async fn container_status(fx: &Fixture, http: &reqwest::Client, base: &str) -> u16 {
    status_of(
        http.get(format!("{base}/aws/app"))
            .header("Authorization", fx.container_token()),
    )
    .await
}

#[tokio::test]
async fn imds_v2_face_answers_like_ec2() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let http = client();
    let token = imds_token(&fx, &http, &base).await;
    let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
    let listed = http
        .get(&roles)
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.text().await.unwrap_or_default(), "aws");
    let doc: serde_json::Value = http
        .get(format!("{roles}aws"))
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    for key in [
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
        "LastUpdated",
    ] {
        assert!(
            doc[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}: {doc}"
        );
    }
    assert!(doc["Expiration"].as_str().is_some_and(|e| e.ends_with('Z')));

    // Refusals, each with the status SDKs expect.
    assert_eq!(status_of(http.get(&roles)).await, 401, "IMDSv1 is off");
    assert_eq!(
        status_of(
            http.get(&roles)
                .header("X-aws-ec2-metadata-token", "forged")
        )
        .await,
        401
    );
    assert_eq!(
        status_of(
            http.get(format!("{roles}other"))
                .header("X-aws-ec2-metadata-token", &token)
        )
        .await,
        404
    );
    let put = || http.put(format!("{base}/latest/api/token"));
    assert_eq!(status_of(put()).await, 400, "TTL missing");
    assert_eq!(
        status_of(put().header("X-aws-ec2-metadata-token-ttl-seconds", "0")).await,
        400
    );
    assert_eq!(
        status_of(put().header("X-aws-ec2-metadata-token-ttl-seconds", "21601")).await,
        400
    );
    assert_eq!(
        status_of(put().header("X-aws-ec2-metadata-token-ttl-seconds", "x")).await,
        400
    );
    assert_eq!(
        status_of(
            put()
                .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
                .header("X-Forwarded-For", "10.0.0.1")
        )
        .await,
        403
    );
    assert_eq!(
        status_of(
            http.get(format!("{roles}aws"))
                .header("X-aws-ec2-metadata-token", &token)
                .header("X-Forwarded-For", "1.2.3.4")
        )
        .await,
        403
    );
    daemon.stop().await;
}

#[tokio::test]
async fn expired_imds_tokens_are_refused() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let http = client();
    let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
    let status = async |token: &str| {
        status_of(http.get(&roles).header("X-aws-ec2-metadata-token", token)).await
    };
    // A 1-second token works while it lives. (issue 7: no race with the clock — an attempt
    // that took a second or more proves nothing and is made again.)
    let mut proven = false;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let token = imds_token_for(&fx, &http, &base, 1).await;
        let answer = status(&token).await;
        if started.elapsed() < Duration::from_millis(900) {
            assert_eq!(answer, 200, "a fresh 1-second token is refused");
            proven = true;
            break;
        }
    }
    assert!(
        proven,
        "no attempt was fast enough to show a 1-second token working"
    );
    // Then it expires, while a longer-lived token issued at the same time still works.
    let short = imds_token_for(&fx, &http, &base, 1).await;
    let long = imds_token_for(&fx, &http, &base, 21600).await;
    wait_until("the 1-second IMDS token to expire", async || {
        status(&short).await == 401
    })
    .await;
    assert_eq!(status(&long).await, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn container_face_checks_its_token() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let token = fx.container_token();
    assert!(!token.ends_with('\n') && token.len() == 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(fx.path("container-token"))
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
    let http = client();
    let url = format!("{base}/aws/app");
    let doc: serde_json::Value = http
        .get(&url)
        .header("Authorization", &token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&String> = doc
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        ["AccessKeyId", "Expiration", "SecretAccessKey", "Token"]
    );
    assert!(doc["Expiration"].as_str().is_some_and(|e| e.ends_with('Z')));
    assert_eq!(status_of(http.get(&url)).await, 401);
    assert_eq!(
        status_of(http.get(&url).header("Authorization", "wrong")).await,
        401
    );
    assert_eq!(
        status_of(http.get(&url).header("Authorization", format!("{token}x"))).await,
        401
    );
    assert_eq!(
        status_of(
            http.get(format!("{base}/aws/none"))
                .header("Authorization", &token)
        )
        .await,
        404
    );
    assert_eq!(
        status_of(
            http.get(&url)
                .header("Authorization", &token)
                .header("X-Forwarded-For", "1.2.3.4")
        )
        .await,
        403
    );
    daemon.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let fx = Fixture::aws().await;
    // The first STS answer is held: /readyz says 503 until it arrives (issue 7: a latch, not a
    // delay the test had to beat).
    let first_exchange = Latch::new();
    fx.sts()
        .control()
        .inject("/", Fault::Hold(first_exchange.clone()), Some(1));
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    held(&first_exchange, 1, "the first exchange").await;
    let http = client();
    assert_eq!(status_of(http.get(format!("{base}/healthz"))).await, 200);
    let early = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.status(), 503);
    assert!(early.text().await.unwrap_or_default().contains("aws: "));
    first_exchange.release();
    wait_ready(&base).await;
    container_status(&fx, &http, &base).await;
    let metrics = text_of(http.get(format!("{base}/metrics"))).await;
    for line in [
        "keyfed_credential_expiry_timestamp_seconds{target=\"aws\"} ",
        "keyfed_last_refresh_success_timestamp_seconds{target=\"aws\"} ",
        "keyfed_refreshes_total{target=\"aws\",result=\"success\"} 1",
        "keyfed_upstream_request_duration_seconds_bucket{target=\"aws\",le=\"+Inf\"} 1",
        "keyfed_endpoint_requests_total{face=\"container\",status=\"200\"} 1",
        "keyfed_endpoint_requests_total{face=\"health\",status=\"503\"} ",
        "# TYPE keyfed_upstream_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "metrics lack {line:?}:\n{metrics}");
    }
    let targets = fx.status_json().await;
    assert_eq!(targets[0]["name"], "aws");
    assert_eq!(targets[0]["state"], "fresh");
    assert_eq!(
        targets[0]["faces"],
        serde_json::json!(["control socket", "imds", "container /aws/app"])
    );
    fx.keyfed(&["status"])
        .await
        .ok()
        .prints("aws")
        .prints("fresh")
        .prints("served by: control socket, imds, container /aws/app");
    daemon.stop().await;
}

#[tokio::test]
async fn status_shows_the_upstreams_words_when_refreshes_fail() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write("keyfed.toml", &config.replace("role/app", "role/nobody"));
    let daemon = fx.daemon().await;
    wait_until("the first refresh to fail", async || {
        let run = fx.keyfed(&["status"]).await;
        !run.stdout.contains("refreshing") && !run.stdout.contains("pending")
    })
    .await;
    fx.keyfed(&["status"])
        .await
        .ok()
        .prints("stopped")
        .prints("stopped: needs a change on the cloud side: ")
        .prints("AccessDenied");
    let http = client();
    let refused = http
        .get(format!("{base}/aws/app"))
        .header("Authorization", fx.container_token())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 503);
    assert!(
        refused
            .text()
            .await
            .unwrap_or_default()
            .contains("AccessDenied")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn oversized_and_slow_requests_do_not_hurt_the_daemon() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "request_timeout = \"500ms\"\n");
    let daemon = fx.daemon().await;
    let http = client();
    let host = base.trim_start_matches("http://");
    let head = |filler: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "x".repeat(filler)
        )
    };
    // Heads up to 16 KiB are served; a bigger one gets 431 itself (issue 7: not just any
    // transport error).
    let fits = raw_exchange(&base, head(12 * 1024).as_bytes()).await;
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits:.200}");
    let oversized = raw_exchange(&base, head(20 * 1024).as_bytes()).await;
    assert!(
        oversized.starts_with("HTTP/1.1 431"),
        "oversized headers: {oversized:.200}"
    );
    // A client that sends half a request and stalls is cut off after the header timeout.
    let addr = host.to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    slow.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the stalled connection was closed");
    // Meanwhile and after, the daemon answers.
    assert_eq!(status_of(http.get(format!("{base}/healthz"))).await, 200);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_container_requests_during_a_refresh_make_one_upstream_call_each() {
    let fx = Fixture::aws().await;
    fx.sts()
        .control()
        .inject("/", Fault::Delay(Duration::from_secs(2)), Some(1));
    // All thousand come from this test's uid: let one user have them all.
    let base = fx.endpoint_config("", "max_connections_per_user = 1024\n");
    let daemon = fx.daemon().await;
    let token = fx.container_token();
    let http = client();
    let url = format!("{base}/aws/app");
    let requests = (0..1000).map(|_| {
        let request = http.get(&url).header("Authorization", &token);
        async move {
            let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (
                status,
                body["AccessKeyId"].as_str().unwrap_or_default().to_owned(),
            )
        }
    });
    let answers = futures::future::join_all(requests).await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "every request answered 200"
    );
    assert!(
        answers.iter().all(|(_, k)| *k == answers[0].1),
        "one credential for all"
    );
    assert_eq!(fx.keycloak().token_requests(), 1);
    assert_eq!(fx.sts().assume_role_calls(), 1);
    assert_eq!(status_of(http.get(format!("{base}/healthz"))).await, 200);
    daemon.stop().await;
}

/// The IMDSv2 credentials of `role` as `uid` would get them: a session token, then the
/// document; the status of the latter.
async fn imds_as(fx: &Fixture, uid: u32, gid: u32, base: &str, role: &str) -> String {
    let (put, token) = curl_as(
        uid,
        gid,
        &[
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            &format!("{base}/latest/api/token"),
        ],
    )
    .await;
    assert_eq!(put, "200", "uid {uid} gets an IMDS session token");
    fx.know("an IMDS session token", &token);
    let header = format!("X-aws-ec2-metadata-token: {token}");
    let url = format!("{base}/latest/meta-data/iam/security-credentials/{role}");
    curl_as(uid, gid, &["-o", "/dev/null", "-H", &header, &url])
        .await
        .0
}

/// The container face's answer to `uid`.
async fn container_as(fx: &Fixture, uid: u32, gid: u32, base: &str) -> String {
    let header = format!("Authorization: {}", fx.container_token());
    let url = format!("{base}/aws/app");
    curl_as(uid, gid, &["-o", "/dev/null", "-H", &header, &url])
        .await
        .0
}

/// Users of the Debian base system: `_apt` (uid 42) has `nogroup` (65534) as its primary
/// group, `daemon` (uid 1) does not; uid 12345 is nobody in the user database.
const APT: u32 = 42;
const DAEMON: u32 = 1;
const UNLISTED: u32 = 12345;
const NOGROUP: u32 = 65534;

#[tokio::test]
async fn access_is_limited_to_the_allowed_users() {
    if !crate::util::as_root_or_skip("access_is_limited_to_the_allowed_users") {
        return;
    }
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config(&format!("allow_users = [\"{UNLISTED}\"]\n"), "");
    let daemon = fx.daemon().await;
    for (face, allowed, refused) in [
        (
            "container",
            container_as(&fx, UNLISTED, UNLISTED, &base).await,
            container_as(&fx, 65534, 65534, &base).await,
        ),
        (
            "imds",
            imds_as(&fx, UNLISTED, UNLISTED, &base, "aws").await,
            imds_as(&fx, 65534, 65534, &base, "aws").await,
        ),
    ] {
        assert_eq!(allowed, "200", "{face}: the allowed uid");
        assert_eq!(refused, "403", "{face}: another uid");
    }
    // Root is always allowed (this test runs as root).
    let http = client();
    let token = imds_token(&fx, &http, &base).await;
    let roles = format!("{base}/latest/meta-data/iam/security-credentials/aws");
    assert_eq!(
        status_of(http.get(&roles).header("X-aws-ec2-metadata-token", &token)).await,
        200
    );
    assert_eq!(container_status(&fx, &http, &base).await, 200);
    let log = daemon.stop().await;
    for face in ["container", "imds"] {
        assert!(
            log.stderr
                .lines()
                .any(|l| l.contains("credentials refused to this uid")
                    && l.contains("65534")
                    && l.contains(face)),
            "the refusal on {face} is logged with the uid:\n{}",
            log.stderr
        );
    }
}

#[tokio::test]
async fn access_can_be_granted_to_a_group() {
    if !crate::util::as_root_or_skip("access_can_be_granted_to_a_group") {
        return;
    }
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("allow_groups = [\"nogroup\"]\n", "");
    let daemon = fx.daemon().await;
    // Membership counts as the user database says, whatever groups the process holds.
    assert_eq!(container_as(&fx, APT, 0, &base).await, "200");
    assert_eq!(imds_as(&fx, APT, 0, &base, "aws").await, "200");
    for uid in [DAEMON, UNLISTED] {
        assert_eq!(
            container_as(&fx, uid, NOGROUP, &base).await,
            "403",
            "uid {uid}"
        );
        assert_eq!(
            imds_as(&fx, uid, NOGROUP, &base, "aws").await,
            "403",
            "uid {uid}"
        );
    }
    daemon.stop().await;
}

/// `keyfed credential-process aws` as `uid` (group nogroup, which may use the socket).
async fn credential_process_as(fx: &Fixture, uid: u32) -> crate::util::Run {
    fx.keyfed_as_user(uid, NOGROUP, &["credential-process", "aws"], &[])
        .await
}

/// A daemon whose control socket the nogroup group may use, for a target limited by
/// `access` (the target's allow_users / allow_groups line).
async fn shared_socket_daemon(fx: &Fixture, access: &str) -> crate::util::Daemon {
    fx.endpoint_config(access, "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace(
            "socket = \"keyfed.sock\"",
            &format!("socket = \"keyfed.sock\"\ngroup = \"{NOGROUP}\""),
        ),
    );
    // Other users may read the configuration (not the secret) and reach the socket by group.
    crate::util::set_mode(fx.dir.path(), 0o755);
    crate::util::set_mode(&fx.path("keyfed.toml"), 0o644);
    fx.daemon().await
}

#[tokio::test]
async fn the_control_socket_checks_the_callers_uid_too() {
    if !crate::util::as_root_or_skip("the_control_socket_checks_the_callers_uid_too") {
        return;
    }
    let fx = Fixture::aws().await;
    let daemon = shared_socket_daemon(&fx, &format!("allow_users = [\"{UNLISTED}\"]\n")).await;
    credential_process_as(&fx, UNLISTED)
        .await
        .ok()
        .prints("\"Version\":1");
    credential_process_as(&fx, 65534)
        .await
        .fails_with(1)
        .says("uid 65534 may not have the credentials of target \"aws\"");
    // Root is always allowed.
    fx.keyfed(&["credential-process", "aws"])
        .await
        .ok()
        .prints("\"Version\":1");
    daemon.stop().await;
}

#[tokio::test]
async fn the_control_socket_honours_allow_groups() {
    if !crate::util::as_root_or_skip("the_control_socket_honours_allow_groups") {
        return;
    }
    let fx = Fixture::aws().await;
    let daemon = shared_socket_daemon(&fx, "allow_groups = [\"nogroup\"]\n").await;
    credential_process_as(&fx, APT)
        .await
        .ok()
        .prints("\"Version\":1");
    for uid in [DAEMON, UNLISTED] {
        credential_process_as(&fx, uid)
            .await
            .fails_with(1)
            .says(&format!(
                "uid {uid} may not have the credentials of target \"aws\""
            ));
    }
    daemon.stop().await;
}

#[tokio::test]
async fn health_and_metrics_can_have_a_listener_of_their_own() {
    let fx = Fixture::aws().await;
    let health_port = crate::util::free_port();
    let base = fx.endpoint_config(
        "",
        &format!("health_listen = \"127.0.0.1:{health_port}\"\n"),
    );
    let daemon = fx.daemon().await;
    let http = client();
    let health = format!("http://127.0.0.1:{health_port}");
    wait_ready(&health).await;
    assert_eq!(status_of(http.get(format!("{health}/metrics"))).await, 200);
    assert_eq!(container_status(&fx, &http, &health).await, 404);
    assert_eq!(
        status_of(http.get(format!("{base}/metrics"))).await,
        404,
        "not on the credential listener"
    );
    assert_eq!(container_status(&fx, &http, &base).await, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn each_listen_address_can_serve_its_own_imds_target() {
    let fx = Fixture::aws().await;
    let (one, two) = (crate::util::free_port(), crate::util::free_port());
    let second = fx.aws_target("other", "");
    fx.daemon_config(&format!(
        "{}\n{second}\n[endpoint]\nlisten = [\"127.0.0.1:{one}\", {{ address = \"127.0.0.1:{two}\", imds_target = \"other\" }}]\nimds_target = \"aws\"\ncontainer_token_file = \"container-token\"\n",
        fx.aws_target("aws", "")
    ));
    fx.keyfed(&["check"])
        .await
        .ok()
        .prints("imds_target = \"other\"");
    let daemon = fx.daemon().await;
    let http = client();
    for (port, role) in [(one, "aws"), (two, "other")] {
        let base = format!("http://127.0.0.1:{port}");
        let token = imds_token(&fx, &http, &base).await;
        let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
        let listed = text_of(http.get(&roles).header("X-aws-ec2-metadata-token", &token)).await;
        assert_eq!(listed, role);
        let other = if role == "aws" { "other" } else { "aws" };
        assert_eq!(
            status_of(
                http.get(format!("{roles}{other}"))
                    .header("X-aws-ec2-metadata-token", &token)
            )
            .await,
            404,
            "{port} serves only {role}"
        );
        assert_eq!(
            status_of(
                http.get(format!("{roles}{role}"))
                    .header("X-aws-ec2-metadata-token", &token)
            )
            .await,
            200
        );
    }
    daemon.stop().await;
}

/// `GET /healthz` on a connection of its own, closed after the answer.
async fn healthz_once(base: &str) -> String {
    let host = base.trim_start_matches("http://");
    raw_exchange(
        base,
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// issue 7: with `max_connections = 4`, four idle connections fill the endpoint: a fifth is not
/// served until one of them closes, and meanwhile the daemon still refreshes and answers its
/// control socket.
#[tokio::test]
async fn max_connections_caps_open_connections_and_refreshes_go_on() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config(
        "",
        "max_connections = 4\nmax_connections_per_user = 4\nrequest_timeout = \"30s\"\n",
    );
    // Token requests wait until the connections are held, so the refresh happens while the
    // endpoint is full.
    let held = fx
        .keycloak()
        .control()
        .hold("/protocol/openid-connect/token");
    // The endpoint listens before the control socket exists. No other connection is made
    // first: one just closed may hold its place for a moment after the client saw it close.
    let daemon = fx.daemon().await;
    let addr = base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let fifth = healthz_once(&base).await;
    assert!(
        fifth.is_empty(),
        "a fifth connection was served: {fifth:.200}"
    );

    assert_eq!(fx.sts().assume_role_calls(), 0, "held at Keycloak");
    held.release();
    fx.keyfed(&["credential-process", "aws"])
        .await
        .ok()
        .prints("\"Version\":1");
    assert_eq!(fx.sts().assume_role_calls(), 1, "the refresh went on");
    assert!(healthz_once(&base).await.is_empty(), "still full");

    drop(idle.pop());
    wait_until("a freed connection slot to serve a request", async || {
        healthz_once(&base).await.starts_with("HTTP/1.1 200")
    })
    .await;
    drop(idle);
    daemon.stop().await;
}
