//! The AWS SDK for JavaScript v3 (`@aws-sdk/credential-providers`, installed by `tests/run` into
//! `target/interop-node`) as a client of keyfed's container and IMDSv2 faces: an SDK nobody here
//! wrote, with its own `Host`, headers and token handling, still gets through the endpoint's
//! DNS-rebinding guard (issue 7).

use std::path::PathBuf;

use crate::util::{Fixture, wait_until};

/// Where `tests/run` installed the SDK; the script is copied beside its `node_modules`.
fn sdk() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-node");
    assert!(
        dir.join("node_modules/@aws-sdk/credential-providers")
            .is_dir(),
        "the AWS SDK for JavaScript is missing from {}: run tests/run, which installs it",
        dir.display()
    );
    let script = dir.join("creds.mjs");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node/creds.mjs"),
        &script,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    script
}

/// Runs the script for `face` with `env`; returns the JSON line it printed.
async fn node(face: &str, env: &[(&str, String)]) -> serde_json::Value {
    let output = tokio::process::Command::new("node")
        .arg(sdk())
        .arg(face)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "*")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap_or_else(|e| panic!("node: {e}"));
    assert!(
        output.status.success(),
        "the JS SDK failed on the {face} face:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_javascript_sdk_reads_the_container_and_imds_faces() {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.start_sts().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let ready = format!("{base}/readyz");
    wait_until("the first credential", async || {
        reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let served = fx.keyfed(&["credential-process", "aws"]).await;
    let expected: serde_json::Value =
        serde_json::from_str(&served.ok().stdout).unwrap_or_else(|e| panic!("{e}"));
    let container = node(
        "container",
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{base}/aws/app"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                fx.path("container-token").display().to_string(),
            ),
        ],
    )
    .await;
    let imds = node(
        "imds",
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("{base}/"))],
    )
    .await;
    for got in [container, imds] {
        assert_eq!(got["AccessKeyId"], expected["AccessKeyId"], "{got}");
        assert_eq!(got["HasSecret"], true);
        assert_eq!(got["HasToken"], true);
        assert_eq!(
            got["Expiration"].as_str().map(|e| &e[..19]),
            expected["Expiration"].as_str().map(|e| &e[..19])
        );
    }
    daemon.stop().await;
}
