//! The local metadata endpoint through the real daemon: the IMDSv2 and container faces exactly
//! as SDKs call them, every refusal with its status, health and metrics, robustness against slow,
//! oversized and massed requests, single flight, and per-user access control.

use std::time::Duration;

use keyfed_core::emulator::Fault;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::util::Fixture;

async fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.start_sts().await;
    fx
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn imds_token(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "120")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok()),
        Some("120"),
        "the TTL is echoed (the Rust SDK needs it)"
    );
    response.text().await.unwrap_or_default()
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn imds_v2_face_answers_like_ec2() {
    let fx = fixture().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let http = client();
    let token = imds_token(&http, &base).await;
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
    let fx = fixture().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let http = client();
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
    assert_eq!(
        status_of(http.get(&roles).header("X-aws-ec2-metadata-token", &token)).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status_of(http.get(&roles).header("X-aws-ec2-metadata-token", &token)).await,
        401
    );
    daemon.stop().await;
}

#[tokio::test]
async fn container_face_checks_its_token() {
    let fx = fixture().await;
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
    let fx = fixture().await;
    // The first STS answer takes a while: /readyz says 503 until it arrives.
    fx.sts()
        .control()
        .inject("/", Fault::Delay(Duration::from_millis(1500)), Some(1));
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let http = client();
    assert_eq!(status_of(http.get(format!("{base}/healthz"))).await, 200);
    let early = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.status(), 503);
    assert!(early.text().await.unwrap_or_default().contains("aws: "));
    for _ in 0..100 {
        if status_of(http.get(format!("{base}/readyz"))).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(http.get(format!("{base}/readyz"))).await, 200);
    status_of(
        http.get(format!("{base}/aws/app"))
            .header("Authorization", fx.container_token()),
    )
    .await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
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
    let status = fx.keyfed(&["status", "--json"]).await;
    status.ok();
    let targets: serde_json::Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}"));
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
    let fx = fixture().await;
    let base = fx.endpoint_config("", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write("keyfed.toml", &config.replace("role/app", "role/nobody"));
    let daemon = fx.daemon().await;
    let mut run = fx.keyfed(&["status"]).await;
    for _ in 0..100 {
        if !run.stdout.contains("refreshing") && !run.stdout.contains("pending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        run = fx.keyfed(&["status"]).await;
    }
    run.ok().prints("backing off").prints("AccessDenied");
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
    let fx = fixture().await;
    let base = fx.endpoint_config("", "request_timeout = \"500ms\"\n");
    let daemon = fx.daemon().await;
    let http = client();
    let huge = "x".repeat(64 * 1024);
    let big = http
        .get(format!("{base}/healthz"))
        .header("X-Big", &huge)
        .send()
        .await;
    assert!(
        big.map(|r| r.status().as_u16()).unwrap_or(431) == 431,
        "oversized headers refused"
    );
    // A client that sends half a request and stalls is cut off after the header timeout.
    let addr = base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
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
    let fx = fixture().await;
    fx.sts()
        .control()
        .inject("/", Fault::Delay(Duration::from_secs(2)), Some(1));
    let base = fx.endpoint_config("", "");
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

/// Runs `curl` as another uid; `None` where this process may not switch users.
async fn curl_as(uid: u32, gid: u32, args: &[&str]) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "not root: the cross-user check is covered by access::tests against a known socket owner"
        );
        return None;
    }
    let output = tokio::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn access_is_limited_to_the_allowed_users() {
    let fx = fixture().await;
    let base = fx.endpoint_config("allow_users = [\"12345\"]\n", "");
    let daemon = fx.daemon().await;
    let token = fx.container_token();
    let url = format!("{base}/aws/app");
    let header = format!("Authorization: {token}");
    let Some(allowed) = curl_as(12345, 12345, &["-H", &header, &url]).await else {
        daemon.stop().await;
        return;
    };
    assert_eq!(allowed, "200");
    let refused = curl_as(65534, 65534, &["-H", &header, &url]).await;
    assert_eq!(refused.as_deref(), Some("403"));
    let log = daemon.stop().await;
    assert!(
        log.stderr.contains("credentials refused to this uid")
            && log.stderr.contains("uid=Some(65534)"),
        "{}",
        log.stderr
    );
}

#[tokio::test]
async fn the_control_socket_checks_the_callers_uid_too() {
    let fx = fixture().await;
    fx.endpoint_config("allow_users = [\"12345\"]\n", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace(
            "socket = \"keyfed.sock\"",
            "socket = \"keyfed.sock\"\ngroup = \"65534\"",
        ),
    );
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: SO_PEERCRED refusal is not exercised here");
        return;
    }
    // Other users may read the configuration (not the secret) and reach the socket by group.
    crate::util::set_mode(fx.dir.path(), 0o755);
    crate::util::set_mode(&fx.path("keyfed.toml"), 0o644);
    let daemon = fx.daemon().await;
    let ask = |uid: u32| {
        let config = fx.path("keyfed.toml");
        async move {
            tokio::process::Command::new("setpriv")
                .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_keyfed"))
                .args([
                    "--config",
                    config.to_str().unwrap_or_default(),
                    "credential-process",
                    "aws",
                ])
                .env_clear()
                .output()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let allowed = ask(12345).await;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("\"Version\":1"));
    let refused = ask(65534).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("uid 65534 may not have the credentials of target \"aws\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    daemon.stop().await;
}

#[tokio::test]
async fn health_and_metrics_can_have_a_listener_of_their_own() {
    let fx = fixture().await;
    let health_port = crate::util::free_port();
    let base = fx.endpoint_config(
        "",
        &format!("health_listen = \"127.0.0.1:{health_port}\"\n"),
    );
    let daemon = fx.daemon().await;
    let http = client();
    let health = format!("http://127.0.0.1:{health_port}");
    for _ in 0..100 {
        if status_of(http.get(format!("{health}/readyz"))).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(http.get(format!("{health}/readyz"))).await, 200);
    assert_eq!(status_of(http.get(format!("{health}/metrics"))).await, 200);
    assert_eq!(
        status_of(
            http.get(format!("{health}/aws/app"))
                .header("Authorization", fx.container_token())
        )
        .await,
        404
    );
    assert_eq!(
        status_of(http.get(format!("{base}/metrics"))).await,
        404,
        "not on the credential listener"
    );
    assert_eq!(
        status_of(
            http.get(format!("{base}/aws/app"))
                .header("Authorization", fx.container_token())
        )
        .await,
        200
    );
    daemon.stop().await;
}

#[tokio::test]
async fn each_listen_address_can_serve_its_own_imds_target() {
    let fx = fixture().await;
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
        let token = imds_token(&http, &base).await;
        let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
        let listed = http
            .get(&roles)
            .header("X-aws-ec2-metadata-token", &token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
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
