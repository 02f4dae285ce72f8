//! Secret hygiene (issue 11, part 4) beyond what every test's leak check already sees: one
//! daemon serving all three clouds and a token target, with logging at `trace` (every library's
//! too), and beside them targets whose upstream — Keycloak for each client authentication
//! method, STS, Google's STS and IAM Credentials, Entra — is a server that refuses every request
//! and quotes it back (`echo.rs`). Every answer of every face (credentials, refusals, the 503
//! reasons of the failing targets), `/healthz`, `/readyz`, `/metrics`, `status`, `status --json`,
//! `check`, `once`, the control socket's refusals through `credential-process`, `token` and
//! `gcp-subject-token`, and the daemon's whole log are searched for every secret the run knows.

mod echo;

use std::time::Instant;

use echo::{Echo, Mode};
use keyfed_core::emulator::report;

use crate::util::azure::{APP, IDENTITY, TENANT};
use crate::util::gcp::{GCP_AUD, PROJECT_ID, PROVIDER, SERVICE_ACCOUNT};
use crate::util::http::client;
use crate::util::{API_AUD, Fixture, Serves, free_port, target, wait_until};

const MGMT: &str = "https://management.azure.com";
/// A client id of no app the Entra emulator knows: the raw echo's Azure target.
const OTHER_APP: &str = "5c0ffee0-0000-4000-8000-00000000e540";
/// Keycloak's client authentication methods, each against an echoing token endpoint.
const AUTHS: [&str; 4] = [
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
];

/// The issuer and token target `kc-<auth>-<mode>` against `echo`.
fn keycloak_echo(echo: &Echo, auth: &str) -> String {
    let name = format!("kc-{}-{}", auth.replace('_', "-"), echo.mode.name());
    let credential = match auth {
        "client_secret_jwt" => "client_secret_file = \"jwt-secret\"",
        "private_key_jwt" => "private_key_file = \"client-rsa.pem\"\nkey_id = \"host-key-1\"",
        _ => "client_secret_file = \"client-secret\"",
    };
    let url = format!("{}/realms/echo", echo.base);
    format!(
        "[issuers.{name}]\nurl = \"{url}\"\nclient_id = \"host-secret\"\nauth = \"{auth}\"\n{credential}\n\
         token_endpoint = \"{url}/protocol/openid-connect/token\"\n\n{}",
        target(&name, &name, API_AUD, "api-audience")
    )
}

/// The cloud targets of `mode` whose exchange meets `echo`: STS (`aws-<mode>`, on the container
/// face at `/aws/<mode>`), Google's STS (`gcp-sts-<mode>`), IAM Credentials after a real
/// federated token (`gcp-iam-<mode>`) and Entra (`azure-<mode>`, app `client_id`).
fn cloud_echoes(echo: &Echo, gcp_sts: &str, client_id: &str) -> String {
    let m = echo.mode.name();
    let base = &echo.base;
    let gcp = |name: &str, sts: &str, extra: &str| {
        format!(
            "[targets.{name}]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\n\
             [targets.{name}.gcp]\nprovider = \"{PROVIDER}\"\nproject_id = \"{PROJECT_ID}\"\n\
             sts_url = \"{sts}\"\niam_url = \"{base}\"\n{extra}\n"
        )
    };
    format!(
        "[targets.aws-{m}]\nissuer = \"corp\"\nscope = \"aws-audience\"\ncontainer_path = \"/aws/{m}\"\n\
         aws = {{ role_arn = \"arn:aws:iam::123456789012:role/echo\", region = \"us-east-1\", endpoint_url = \"{base}\" }}\n\n\
         {}\n{}\n\
         [targets.azure-{m}]\nissuer = \"corp\"\nscope = \"azure-audience\"\n\n\
         [targets.azure-{m}.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{client_id}\"\n\
         scopes = [\"{MGMT}/.default\"]\nauthority_host = \"{base}\"\n",
        gcp(&format!("gcp-sts-{m}"), &format!("{base}/v1/token"), ""),
        gcp(
            &format!("gcp-iam-{m}"),
            gcp_sts,
            &format!("service_account = \"{SERVICE_ACCOUNT}\"")
        ),
    )
}

/// Checks an answer of the endpoint: a refusal's body must hold no secret (a credential's is
/// the credential, known from now on).
fn check_answer(fx: &Fixture, what: &str, status: u16, body: &str) {
    if (200..300).contains(&status) {
        fx.know(&format!("what {what} served"), body);
        for field in ["Token", "SecretAccessKey", "access_token"] {
            if let Some(v) = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|d| d[field].as_str().map(str::to_owned))
            {
                fx.know(&format!("{field} served by {what}"), &v);
            }
        }
    } else {
        fx.check_output(&format!("{what} ({status})"), Serves::Nothing, body, "");
    }
}

#[tokio::test]
async fn issue_11_no_secret_in_any_log_error_status_or_face_answer_at_trace_level() {
    let started = Instant::now();
    let (mut fx, entra) = Fixture::azure().await;
    fx.start_sts().await;
    let gcp = fx.start_gcp().await;
    let quoted = Echo::start(Mode::Quoted).await;
    let raw = Echo::start(Mode::Raw).await;
    let (port, port2) = (free_port(), free_port());

    let mut targets = format!(
        "{}container_path = \"/aws/app\"\n\n{}\n{}\n{}outputs = [{{ kind = \"token\", path = \"tokens/api.jwt\" }}]\n\n",
        fx.aws_target(
            "aws",
            "{ kind = \"aws-credentials\", path = \"aws/credentials\" }, \
             { kind = \"credential-process-json\", path = \"aws/process.json\" }"
        ),
        fx.gcp_target(
            &gcp,
            "gcp",
            &format!("service_account = \"{SERVICE_ACCOUNT}\""),
            "{ kind = \"gcp-access-token\", path = \"gcp/token.json\" }, \
             { kind = \"gcp-subject-token\", path = \"gcp/subject.jwt\" }"
        ),
        fx.azure_target(
            &entra,
            "azure",
            APP,
            &[MGMT],
            "{ kind = \"azure-access-token\", path = \"azure/mgmt.json\" }, \
             { kind = \"azure-federated-token\", path = \"azure/federated.jwt\" }"
        ),
        target("api", "corp", API_AUD, "api-audience"),
    );
    let mut failing = Vec::new();
    for (echo, client_id) in [(&quoted, IDENTITY), (&raw, OTHER_APP)] {
        let m = echo.mode.name();
        for auth in AUTHS {
            targets.push_str(&keycloak_echo(echo, auth));
            failing.push(format!("kc-{}-{m}", auth.replace('_', "-")));
        }
        targets.push_str(&cloud_echoes(echo, &gcp.sts_url(), client_id));
        for cloud in ["aws", "gcp-sts", "gcp-iam", "azure"] {
            failing.push(format!("{cloud}-{m}"));
        }
    }
    targets.push_str(&format!(
        "\n[endpoint]\nlisten = [\"127.0.0.1:{port}\", \
         {{ address = \"127.0.0.1:{port2}\", imds_target = \"aws-quoted\", gce_target = \"gcp-iam-quoted\" }}]\n\
         imds_target = \"aws\"\ngce_target = \"gcp\"\nazure_target = \"azure\"\n\
         container_token_file = \"container-token\"\nidentity_header_file = \"identity-header\"\n"
    ));
    fx.daemon_config(&targets);
    let base = format!("http://127.0.0.1:{port}");
    let base2 = format!("http://127.0.0.1:{port2}");

    let daemon = fx.daemon_as(&[], &[("KEYFED_LOG", "trace")]).await;
    // Every failing target has met its echo and says so; the others have their credentials.
    wait_until("every target's first round", async || {
        let status = fx.status_json().await;
        let targets = status.as_array().cloned().unwrap_or_default();
        let of = |name: &str| targets.iter().find(|t| t["name"] == name).cloned();
        failing
            .iter()
            .all(|t| of(t).is_some_and(|s| !s["last_error"].is_null()))
            && ["aws", "gcp", "azure", "api"]
                .iter()
                .all(|t| of(t).is_some_and(|s| s["state"] == "fresh"))
    })
    .await;
    assert!(quoted.requests() >= 8 && raw.requests() >= 8);

    // Each face: a credential, then its refusals and the failing targets' reasons.
    let http = client();
    let container = std::fs::read_to_string(fx.path("container-token"))
        .unwrap_or_else(|e| panic!("container token: {e}"));
    let identity = std::fs::read_to_string(fx.path("identity-header"))
        .unwrap_or_else(|e| panic!("identity header: {e}"));
    let imds_token = |base: String| {
        let http = http.clone();
        async move {
            http.put(format!("{base}/latest/api/token"))
                .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .text()
                .await
                .unwrap_or_default()
        }
    };
    let session = imds_token(base.clone()).await;
    let session2 = imds_token(base2.clone()).await;
    fx.know("an IMDS session token", &session);
    fx.know("an IMDS session token", &session2);
    let roles = "latest/meta-data/iam/security-credentials";
    let gce = "computeMetadata/v1/instance/service-accounts/default";
    let msi = format!("msi/token?api-version=2019-08-01&resource={MGMT}");
    let azure_imds =
        format!("metadata/identity/oauth2/token?api-version=2018-02-01&resource={MGMT}");
    let requests: Vec<(String, reqwest::RequestBuilder)> = vec![
        (
            "container face".into(),
            http.get(format!("{base}/aws/app"))
                .header("Authorization", &container),
        ),
        (
            "container face, wrong token".into(),
            http.get(format!("{base}/aws/app"))
                .header("Authorization", "wrong-token-0123456789"),
        ),
        (
            "container face, no token".into(),
            http.get(format!("{base}/aws/app")),
        ),
        (
            "container face, unknown path".into(),
            http.get(format!("{base}/aws/none"))
                .header("Authorization", &container),
        ),
        (
            "container face, quoted echo".into(),
            http.get(format!("{base}/aws/quoted"))
                .header("Authorization", &container),
        ),
        (
            "container face, raw echo".into(),
            http.get(format!("{base}/aws/raw"))
                .header("Authorization", &container),
        ),
        (
            "IMDS face".into(),
            http.get(format!("{base}/{roles}/aws"))
                .header("X-aws-ec2-metadata-token", &session),
        ),
        (
            "IMDS face, forged session".into(),
            http.get(format!("{base}/{roles}/aws"))
                .header("X-aws-ec2-metadata-token", "forged-session-token"),
        ),
        (
            "IMDS face, no session".into(),
            http.get(format!("{base}/{roles}/aws")),
        ),
        (
            "IMDS face, quoted echo".into(),
            http.get(format!("{base2}/{roles}/aws-quoted"))
                .header("X-aws-ec2-metadata-token", &session2),
        ),
        (
            "GCE face".into(),
            http.get(format!("{base}/{gce}/token"))
                .header("Metadata-Flavor", "Google"),
        ),
        (
            "GCE face, ID token".into(),
            http.get(format!(
                "{base}/{gce}/identity?audience=https://api.example.internal"
            ))
            .header("Metadata-Flavor", "Google"),
        ),
        (
            "GCE face, no flavor".into(),
            http.get(format!("{base}/{gce}/token")),
        ),
        (
            "GCE face, quoted echo".into(),
            http.get(format!("{base2}/{gce}/token"))
                .header("Metadata-Flavor", "Google"),
        ),
        (
            "GCE face, quoted echo, ID token".into(),
            http.get(format!("{base2}/{gce}/identity?audience=x"))
                .header("Metadata-Flavor", "Google"),
        ),
        (
            "App Service face".into(),
            http.get(format!("{base}/{msi}"))
                .header("X-IDENTITY-HEADER", &identity),
        ),
        (
            "App Service face, wrong header".into(),
            http.get(format!("{base}/{msi}"))
                .header("X-IDENTITY-HEADER", "wrong-identity-header-0123"),
        ),
        (
            "App Service face, quoted echo".into(),
            http.get(format!("{base}/{msi}&client_id={IDENTITY}"))
                .header("X-IDENTITY-HEADER", &identity),
        ),
        (
            "App Service face, raw echo".into(),
            http.get(format!("{base}/{msi}&client_id={OTHER_APP}"))
                .header("X-IDENTITY-HEADER", &identity),
        ),
        (
            "Azure IMDS face".into(),
            http.get(format!("{base}/{azure_imds}"))
                .header("Metadata", "true"),
        ),
        (
            "Azure IMDS face, no header".into(),
            http.get(format!("{base}/{azure_imds}")),
        ),
        (
            "Azure IMDS face, quoted echo".into(),
            http.get(format!("{base}/{azure_imds}&client_id={IDENTITY}"))
                .header("Metadata", "true"),
        ),
        ("/healthz".into(), http.get(format!("{base}/healthz"))),
        ("/readyz".into(), http.get(format!("{base}/readyz"))),
        ("/metrics".into(), http.get(format!("{base}/metrics"))),
    ];
    let mut answers = 0;
    let mut reasons = 0;
    for (what, request) in requests {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if what.contains("echo") {
            assert!(
                (400..600).contains(&status) && body.contains("400"),
                "{what}: the failing target's reason, with the upstream's status: {status} {body}"
            );
            reasons += 1;
        }
        if what.starts_with('/') {
            fx.check_output(&what, Serves::Nothing, &body, "");
        } else {
            check_answer(&fx, &what, status, &body);
        }
        answers += 1;
    }

    // The commands: what the daemon says of every target, the configuration, and the control
    // socket's refusals of the failing ones.
    let mut runs = Vec::new();
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["check"],
        vec!["token", "api", "--decode"],
        vec!["credential-process", "aws"],
        vec!["credential-process", "aws-quoted"],
        vec!["credential-process", "aws-raw"],
        vec!["credential-process", "no-such-target"],
        vec!["gcp-subject-token", "gcp"],
        vec!["gcp-subject-token", "gcp-iam-quoted"],
        vec!["token", "kc-client-secret-basic-quoted"],
        vec!["token", "kc-client-secret-post-raw"],
        vec!["once"],
    ] {
        runs.push(fx.keyfed_with(&args, &[("KEYFED_LOG", "trace")]).await);
    }
    let status = &runs[0];
    for name in &failing {
        assert!(status.stdout.contains(name.as_str()), "{}", status.stdout);
    }
    // The upstream's words are still quoted: only keyfed's own secrets are taken out of them.
    assert!(
        status.stdout.contains("invalid_request") || status.stdout.contains("refused"),
        "{}",
        status.stdout
    );
    runs.last()
        .map(|once| once.fails_with(1))
        .unwrap_or_else(|| panic!("no once"));

    let log = daemon.stop().await;
    let lines = log.stderr.lines().count();
    assert!(
        log.stderr.contains("TRACE"),
        "the daemon logged at trace level"
    );
    report::held(
        "Secret hygiene: upstreams that echo keyfed's requests, logged at trace level",
        "a daemon with Keycloak (all four client authentication methods), STS, Google STS, IAM \
         Credentials and Entra each answered by a server that quotes keyfed's whole request back \
         (as the upstream's error description, and as a raw body), KEYFED_LOG=trace: its log, every \
         face answer and 503 reason, /healthz, /readyz, /metrics, status, status --json, check, once \
         and the control socket's refusals hold none of the run's secrets",
        &format!(
            "{} failing targets, {} requests echoed, {} face answers ({reasons} reasons) and {} \
             command runs checked, {lines} trace log lines, {} secrets known, 0 found, {:.1} s",
            failing.len(),
            quoted.requests() + raw.requests(),
            answers,
            runs.len(),
            fx.secrets().len(),
            started.elapsed().as_secs_f64()
        ),
    );
}

/// issue 11: a client secret written without quotes was quoted back by `keyfed check` ("invalid
/// type: integer `98765432109876`, expected a string"); the error now names the mistake
/// without the value.
#[tokio::test]
async fn issue_11_a_secret_of_the_wrong_type_is_refused_without_quoting_it() {
    let fx = Fixture::new();
    let secret = "98765432109876543210";
    fx.know("a client secret written without quotes", secret);
    for value in [secret, "987654321.0123456789", "[\"s3cr3t-in-an-array\"]"] {
        fx.know(
            "a client secret of the wrong type",
            value.trim_matches(['[', ']', '"']),
        );
        fx.config(&format!(
            "[issuers.corp]\nurl = \"https://sso.example.com/realms/x\"\nclient_id = \"a\"\n\
             client_secret = {value}\n"
        ));
        fx.keyfed(&["check"])
            .await
            .fails_with(3)
            .says("issuers.corp.client_secret: expected the secret as a quoted string")
            .says("(its value is not shown)");
    }
}
