//! The AWS SDK for JavaScript v3 (`@aws-sdk/credential-providers`, installed by `tests/run` into
//! `target/interop-node`) as a client of keyfed's container and IMDSv2 faces: an SDK nobody here
//! wrote, with its own `Host`, headers and token handling, still gets through the endpoint's
//! DNS-rebinding guard (issue 7).

use std::path::PathBuf;

use crate::util::{Fixture, Serves, process, wait_ready};

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

/// Runs the script for `face` with `env` (its output leak-checked); returns the JSON line it
/// printed.
async fn node(fx: &Fixture, face: &str, env: &[(&str, String)]) -> serde_json::Value {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(sdk())
        .arg(face)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "*")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let run = process::run(
        &format!("the JS SDK on the {face} face"),
        command,
        &fx.known,
        Serves::Nothing,
    )
    .await;
    assert_eq!(
        run.code,
        Some(0),
        "the JS SDK failed on the {face} face:\n{}",
        run.stderr
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[tokio::test]
async fn the_javascript_sdk_reads_the_container_and_imds_faces() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    wait_ready(&base).await;
    let served = fx.keyfed(&["credential-process", "aws"]).await;
    let expected: serde_json::Value =
        serde_json::from_str(&served.ok().stdout).unwrap_or_else(|e| panic!("{e}"));
    let container = node(
        &fx,
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
        &fx,
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
