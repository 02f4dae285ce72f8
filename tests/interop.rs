//! keyfed with software nobody here wrote: `moto_server` as AWS STS, and the AWS CLI and boto3
//! as consumers, installed by `tests/run` into `target/interop-venv`. Each path ends with
//! `sts get-caller-identity` answering the assumed-role ARN keyfed's credentials stand for.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::util::{AWS_AUD, Fixture};

const ACCOUNT: &str = "123456789012";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/interop";

fn venv() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv");
    assert!(
        venv.join("bin/moto_server").exists() && venv.join("bin/aws").exists(),
        "the interop tools are missing from {}: run tests/run, which installs them",
        venv.display()
    );
    venv
}

/// `moto_server` on a free loopback port; stopped when dropped.
struct Moto {
    _child: tokio::process::Child,
    url: String,
}

async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let child = tokio::process::Command::new(venv().join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Moto { _child: child, url };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto_server did not listen on {url}");
}

/// Runs a program from the venv with a clean environment plus `env`; returns stdout.
async fn tool(program: &str, args: &[&str], env: &[(&str, String)], fx: &Fixture) -> String {
    let output = tokio::process::Command::new(venv().join("bin").join(program))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", fx.dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(fx.dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{stderr}"
    );
    for secret in fx.secrets() {
        assert!(!stderr.contains(&secret), "a secret leaked:\n{stderr}");
    }
    stdout
}

async fn fixture_against(moto: &Moto, outputs: &str, session: &str) -> Fixture {
    let mut fx = Fixture::new();
    fx.start_default().await;
    let target = format!(
        "[targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
         aws = {{ role_arn = \"{ROLE_ARN}\", region = \"us-east-1\", endpoint_url = \"{}\", session_name = \"{session}\" }}\n\
         outputs = [{outputs}]\n",
        moto.url
    );
    fx.daemon_config(&target);
    fx
}

fn caller_arn(json: &str) -> String {
    let doc: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    doc["Arn"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn aws_cli_with_credential_process_through_the_daemon() {
    let moto = moto().await;
    let fx = fixture_against(&moto, "", "cli-process").await;
    let daemon = fx.daemon().await;
    let config = fx.path("keyfed.toml");
    fx.write(
        "aws-config",
        &format!(
            "[default]\ncredential_process = {} --config {} credential-process aws\nregion = us-east-1\n",
            env!("CARGO_BIN_EXE_keyfed"),
            config.display()
        ),
    );
    let out = tool(
        "aws",
        &[
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            &moto.url,
            "--output",
            "json",
        ],
        &[(
            "AWS_CONFIG_FILE",
            fx.path("aws-config").display().to_string(),
        )],
        &fx,
    )
    .await;
    assert_eq!(
        caller_arn(&out),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/cli-process")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn aws_cli_with_the_shared_credentials_file_keyfed_writes() {
    let moto = moto().await;
    let fx = fixture_against(
        &moto,
        r#"{ kind = "aws-credentials", path = "aws/credentials", profile = "default" }"#,
        "cli-file",
    )
    .await;
    fx.keyfed(&["once"]).await.ok();
    let out = tool(
        "aws",
        &[
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            &moto.url,
            "--output",
            "json",
        ],
        &[
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                fx.path("aws/credentials").display().to_string(),
            ),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ],
        &fx,
    )
    .await;
    assert_eq!(
        caller_arn(&out),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/cli-file")
    );
}

#[tokio::test]
async fn boto3_with_keyfeds_web_identity_token_file() {
    let moto = moto().await;
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.daemon_config(
        &(crate::util::target("web", "corp", AWS_AUD, "aws-audience")
            + "outputs = [ { kind = \"web-identity-token\", path = \"web-identity.jwt\" } ]\n"),
    );
    fx.keyfed(&["once"]).await.ok();
    let script = "import boto3\nprint(boto3.client('sts').get_caller_identity()['Arn'])\n";
    let out = tool(
        "python",
        &["-c", script],
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                fx.path("web-identity.jwt").display().to_string(),
            ),
            ("AWS_ROLE_ARN", ROLE_ARN.to_owned()),
            ("AWS_ROLE_SESSION_NAME", "boto3-web-identity".to_owned()),
            ("AWS_ENDPOINT_URL_STS", moto.url.clone()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ],
        &fx,
    )
    .await;
    assert_eq!(
        out.trim(),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/boto3-web-identity")
    );
}

#[tokio::test]
async fn the_aws_cli_accepts_what_keyfed_demo_serves() {
    // The README's demo instruction: the AWS CLI with the profile `keyfed demo` writes, calling
    // the demo's STS emulator with credentials from `credential_process`.
    let fx = Fixture::new();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyfed"))
        .args(["demo", "--dir", "demo"])
        .env_clear()
        .env("HOME", fx.dir.path())
        .current_dir(fx.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start keyfed demo: {e}"));
    let ready = fx.path("demo/aws/credential-process.json");
    for _ in 0..500 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready.exists(), "keyfed demo wrote no credentials");
    let out = tool(
        "aws",
        &[
            "--profile",
            "keyfed-demo",
            "sts",
            "get-caller-identity",
            "--output",
            "json",
        ],
        &[(
            "AWS_CONFIG_FILE",
            fx.path("demo/aws/config").display().to_string(),
        )],
        &fx,
    )
    .await;
    let arn = caller_arn(&out);
    assert!(
        arn.starts_with(&format!("arn:aws:sts::{ACCOUNT}:assumed-role/keyfed-demo/")),
        "{arn}"
    );
    let _ = demo.kill().await;
}
