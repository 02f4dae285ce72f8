//! keyfed with software nobody here wrote: `moto_server` as AWS STS, and the AWS CLI and boto3
//! as consumers, installed by `tests/run` into `target/interop-venv`. Each path ends with
//! `sts get-caller-identity` answering the assumed-role ARN keyfed's credentials stand for.

use std::path::PathBuf;
use std::process::Stdio;

use crate::util::{AWS_AUD, Fixture, Serves, process, wait_until};

pub(crate) const ACCOUNT: &str = "123456789012";
pub(crate) const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/interop";

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
pub(crate) struct Moto {
    _child: tokio::process::Child,
    pub(crate) url: String,
}

pub(crate) async fn moto() -> Moto {
    let port = crate::util::free_port();
    let child = tokio::process::Command::new(venv().join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    wait_until(&format!("moto_server to listen on {url}"), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    Moto { _child: child, url }
}

/// Runs a program from the venv with a clean environment plus `env`; returns stdout. Its
/// output, and that of every keyfed it ran through [`Fixture::keyfed_wrapper`], is leak-checked.
async fn tool(program: &str, args: &[&str], env: &[(&str, String)], fx: &Fixture) -> String {
    let mut command = tokio::process::Command::new(venv().join("bin").join(program));
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", fx.dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(fx.dir.path());
    let run = process::run(program, command, &fx.known, Serves::Nothing).await;
    assert_eq!(
        run.code,
        Some(0),
        "{program} {args:?} failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    fx.check_wrapped();
    run.stdout
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

/// The environment in which the AWS CLI reads only the shared credentials file keyfed wrote
/// (`aws/credentials` in the fixture's folder).
pub(crate) fn shared_file_env(fx: &Fixture) -> [(&'static str, String); 3] {
    [
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            fx.path("aws/credentials").display().to_string(),
        ),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ]
}

/// `aws sts get-caller-identity` against `endpoint` with `env`; the ARN it answers.
pub(crate) async fn cli_caller_arn(fx: &Fixture, endpoint: &str, env: &[(&str, String)]) -> String {
    let args = [
        "sts",
        "get-caller-identity",
        "--endpoint-url",
        endpoint,
        "--output",
        "json",
    ];
    caller_arn(&tool("aws", &args, env, fx).await)
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
            fx.keyfed_wrapper().display(),
            config.display()
        ),
    );
    assert_eq!(
        cli_caller_arn(
            &fx,
            &moto.url,
            &[(
                "AWS_CONFIG_FILE",
                fx.path("aws-config").display().to_string(),
            )]
        )
        .await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/cli-process")
    );
    assert!(
        fx.check_wrapped() >= 1,
        "the AWS CLI ran keyfed credential-process"
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
    fx.known
        .add_file(fx.path("aws/credentials"), crate::util::SecretFile::AwsIni);
    fx.keyfed(&["once"]).await.ok();
    assert_eq!(
        cli_caller_arn(&fx, &moto.url, &shared_file_env(&fx)).await,
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
    fx.know_demo_secrets("demo", "keyfed-demo");
    let demo = fx.spawn(&["demo", "--dir", "demo"]);
    let ready = fx.path("demo/aws/credential-process.json");
    wait_until("keyfed demo to write credentials", async || ready.exists()).await;
    // The profile exactly as the demo wrote it, but keyfed run through the leak-checking
    // wrapper (same binary, same arguments).
    let config = fx.path("demo/aws/config");
    let profile = std::fs::read_to_string(&config).unwrap_or_default();
    assert!(profile.contains(env!("CARGO_BIN_EXE_keyfed")), "{profile}");
    std::fs::write(
        &config,
        profile.replace(
            env!("CARGO_BIN_EXE_keyfed"),
            &fx.keyfed_wrapper().display().to_string(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
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
    assert!(fx.check_wrapped() >= 1, "the AWS CLI ran keyfed");
    demo.stop().await;
}

/// keyfed against moto with target "aws" on the container face and IMDS.
async fn endpoint_fixture(moto: &Moto, session: &str, duration: &str) -> (Fixture, String) {
    let mut fx = Fixture::new();
    fx.start_default().await;
    let port = crate::util::free_port();
    fx.daemon_config(&format!(
        "[targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\ncontainer_path = \"/aws/app\"\n\
         aws = {{ role_arn = \"{ROLE_ARN}\", region = \"us-east-1\", endpoint_url = \"{}\", session_name = \"{session}\", duration = \"{duration}\" }}\n\
         [endpoint]\nlisten = [\"127.0.0.1:{port}\"]\nimds_target = \"aws\"\ncontainer_token_file = \"container-token\"\n",
        moto.url
    ));
    (fx, format!("http://127.0.0.1:{port}"))
}

fn container_env(fx: &Fixture, base: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{base}/aws/app"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            fx.path("container-token").display().to_string(),
        ),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ]
}

fn imds_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("{base}/")),
        ("AWS_EC2_METADATA_DISABLED", "false".to_owned()),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ]
}

const BOTO3_ARN: &str = "import boto3, os\nprint(boto3.client('sts', endpoint_url=os.environ['MOTO']).get_caller_identity()['Arn'])\n";

/// The AWS CLI and boto3, each given `env`, call moto as the assumed role `session`.
async fn cli_and_boto3_assume(
    fx: &Fixture,
    moto: &Moto,
    mut env: Vec<(&'static str, String)>,
    session: &str,
) {
    // The keys moto issued, learned through the control socket, so the leak check knows them.
    fx.keyfed(&["credential-process", "aws"]).await.ok();
    let expected = format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/{session}");
    assert_eq!(cli_caller_arn(fx, &moto.url, &env).await, expected);
    env.push(("MOTO", moto.url.clone()));
    let boto = tool("python", &["-c", BOTO3_ARN], &env, fx).await;
    assert_eq!(boto.trim(), expected);
}

#[tokio::test]
async fn aws_cli_and_boto3_through_the_container_face() {
    let moto = moto().await;
    let (fx, base) = endpoint_fixture(&moto, "container", "1h").await;
    let daemon = fx.daemon().await;
    cli_and_boto3_assume(&fx, &moto, container_env(&fx, &base), "container").await;
    daemon.stop().await;
}

#[tokio::test]
async fn aws_cli_and_boto3_through_imds_v2() {
    let moto = moto().await;
    let (fx, base) = endpoint_fixture(&moto, "imds", "1h").await;
    let daemon = fx.daemon().await;
    cli_and_boto3_assume(&fx, &moto, imds_env(&base), "imds").await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_long_lived_boto3_client_picks_up_refreshed_credentials() {
    // 15-minute credentials sit inside botocore's refresh window, so the client asks the
    // container face again on each call; a forced refresh (a changed target, reloaded with
    // SIGHUP) must reach it without an error.
    let moto = moto().await;
    let (fx, base) = endpoint_fixture(&moto, "long-lived", "15m").await;
    let daemon = fx.daemon().await;
    let script = "import boto3, os, sys\n\
        c = boto3.client('sts', endpoint_url=os.environ['MOTO'])\n\
        key = lambda: c._request_signer._credentials.get_frozen_credentials().access_key\n\
        print(c.get_caller_identity()['Arn'], key(), flush=True)\n\
        sys.stdin.readline()\n\
        print(c.get_caller_identity()['Arn'], key(), flush=True)\n";
    let mut env = container_env(&fx, &base);
    env.push(("MOTO", moto.url.clone()));
    let mut command = tokio::process::Command::new(venv().join("bin/python"));
    command
        .args(["-c", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", fx.dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut boto3 = process::spawn_with_stdin("boto3", command, &fx.known, Serves::Nothing);
    let first = boto3.wait_for_stdout_lines(1).await.remove(0);
    let first_key = fx.keyfed(&["credential-process", "aws"]).await.stdout;
    // A changed target (a new session name) gets new credentials at once on reload.
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace("\"long-lived\"", "\"long-lived-2\""),
    );
    daemon.signal(rustix::process::Signal::HUP);
    wait_until("the forced refresh to bring new credentials", async || {
        fx.keyfed(&["credential-process", "aws"]).await.stdout != first_key
    })
    .await;
    boto3.write_stdin(b"go\n").await;
    let second = boto3.wait_for_stdout_lines(2).await.remove(1);
    let run = boto3.wait().await;
    assert_eq!(run.code, Some(0), "boto3 failed: {}", run.stderr);
    let expected = format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/long-lived");
    let (arn1, key1) = first.split_once(' ').unwrap_or_default();
    let (arn2, key2) = second.split_once(' ').unwrap_or_default();
    assert_eq!(arn1, expected);
    assert_eq!(arn2, format!("{expected}-2"));
    assert_ne!(
        key1, key2,
        "the live client now signs with the refreshed key"
    );
    daemon.stop().await;
}
