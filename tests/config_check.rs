//! `keyfed check` accepts a valid configuration and prints it resolved with secrets redacted,
//! and refuses a bad one naming the file, the key and what was expected (exit status 3).

use crate::util::{AWS_AUD, Fixture, SECRET, issuer, set_mode, target};

fn fixture_with(body: &str) -> Fixture {
    let fx = Fixture::new();
    fx.write_credentials();
    fx.write(
        "keyfed.toml",
        &body.replace("{issuer}", "https://sso.example.com/realms/infra"),
    );
    fx
}

fn valid() -> String {
    format!(
        "{}\n{}",
        issuer("corp", "host-secret", "client_secret_basic"),
        target("aws", "corp", AWS_AUD, "aws-audience")
    )
}

#[tokio::test]
async fn valid_configuration_prints_resolved_and_redacted() {
    let fx = fixture_with(&valid());
    let run = fx.keyfed(&["check"]).await;
    run.ok()
        .prints("[issuers.corp]")
        .prints("client_secret = \"** redacted ** (from file ")
        .prints("token_endpoint = \"(from discovery)\"")
        .prints("timeout = \"30s\"")
        .prints("min_token_lifetime = \"1m\"")
        .prints("valid (1 issuer, 1 target)");
    assert!(!run.stdout.contains(SECRET));
}

#[tokio::test]
async fn config_flag_works_after_the_subcommand_and_env_var_is_honoured() {
    let fx = fixture_with(&valid());
    let path = fx.path("keyfed.toml");
    let path = path.to_str().unwrap_or_default();
    fx.keyfed_raw(&["check", "--config", path], &[]).await.ok();
    fx.keyfed_raw(&["check"], &[("KEYFED_CONFIG", path)])
        .await
        .ok();
}

#[tokio::test]
async fn unknown_key_is_named_with_its_position() {
    let fx = fixture_with(&valid().replace("client_id =", "client_idd = \"x\"\nclient_id ="));
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("keyfed.toml:3:1: issuers.corp.client_idd: unknown field `client_idd`");
}

#[tokio::test]
async fn bad_duration_is_named() {
    let fx = fixture_with(&format!("{}timeout = \"soonish\"\n", valid()));
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("targets.aws.timeout: unknown field `timeout`");
    let fx =
        fixture_with(&valid().replace("[targets.aws]", "timeout = \"soonish\"\n[targets.aws]"));
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("issuers.corp.timeout: expected a duration such as \"90s\", \"5m\" or \"1h\", found \"soonish\"");
}

#[tokio::test]
async fn missing_issuer_is_named() {
    let fx = fixture_with(&valid().replace("issuer = \"corp\"", "issuer = \"crop\""));
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("targets.aws.issuer: no issuer named \"crop\" (defined: corp)");
}

#[tokio::test]
async fn missing_required_key_and_wrong_type_are_named() {
    let fx = fixture_with(&valid().replace("audience = \"sts.amazonaws.com\"\n", ""));
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("targets.aws.audience: is required: the audience the token must carry");
    let fx = fixture_with(&valid().replace("scope = \"aws-audience\"", "scope = 5"));
    fx.keyfed(&["check"]).await.fails_with(3).says(
        "targets.aws.scope: invalid type: integer `5`, expected a string or an array of strings",
    );
}

#[tokio::test]
async fn secret_sources_are_checked() {
    let both = valid().replace(
        "client_secret_file",
        "client_secret_env = \"X\"\nclient_secret_file",
    );
    fixture_with(&both)
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("expected exactly one of client_secret_file, client_secret_env or client_secret, found 2");

    let env = valid().replace(
        "client_secret_file = \"client-secret\"",
        "client_secret_env = \"KC_SECRET\"",
    );
    let fx = fixture_with(&env);
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("issuers.corp.client_secret_env: environment variable KC_SECRET is not set or empty");
    let path = fx.path("keyfed.toml");
    fx.keyfed_raw(
        &["--config", path.to_str().unwrap_or_default(), "check"],
        &[("KC_SECRET", SECRET)],
    )
    .await
    .ok()
    .prints("from environment variable KC_SECRET");

    let inline = valid().replace(
        "client_secret_file = \"client-secret\"",
        &format!("client_secret = \"{SECRET}\""),
    );
    fixture_with(&inline)
        .keyfed(&["check"])
        .await
        .ok()
        .says("the client secret is written inline");

    let missing = valid().replace("\"client-secret\"", "\"nope/secret\"");
    fixture_with(&missing)
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("issuers.corp.client_secret_file: cannot read ")
        .says("nope/secret");
}

#[tokio::test]
async fn loose_secret_file_modes_are_warned_about() {
    let fx = fixture_with(&valid());
    set_mode(&fx.path("client-secret"), 0o644);
    fx.keyfed(&["check"])
        .await
        .ok()
        .says("client-secret has mode 0644 and is readable by group or others; run: chmod 600");
}

#[tokio::test]
async fn variables_expand_in_paths_and_unset_ones_are_errors() {
    let body = valid().replace(
        "\"client-secret\"",
        "\"${CREDENTIALS_DIRECTORY}/client-secret\"",
    );
    let fx = fixture_with(&body);
    let dir = fx.dir.path().to_str().unwrap_or_default().to_owned();
    let path = fx.path("keyfed.toml");
    let config = path.to_str().unwrap_or_default();
    fx.keyfed_raw(
        &["--config", config, "check"],
        &[("CREDENTIALS_DIRECTORY", &dir)],
    )
    .await
    .ok()
    .prints(&format!("from file {dir}/client-secret"));
    fx.keyfed_raw(&["--config", config, "check"], &[])
        .await
        .fails_with(3)
        .says("issuers.corp.client_secret_file: environment variable CREDENTIALS_DIRECTORY is not set");
}

#[tokio::test]
async fn plain_http_to_a_remote_issuer_needs_an_explicit_yes() {
    let body = valid().replace("{issuer}", "http://sso.example.com/realms/infra");
    fixture_with(&body)
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("issuers.corp.url: http://sso.example.com/realms/infra uses plain http://");
    let allowed = body.replace("[targets.aws]", "allow_insecure_http = true\n[targets.aws]");
    fixture_with(&allowed)
        .keyfed(&["check"])
        .await
        .ok()
        .says("may cross the network in the clear");
}

#[tokio::test]
async fn private_key_problems_are_named() {
    let body = format!(
        "{}\n{}",
        issuer("corp", "host-rs256", "private_key_jwt:RS256"),
        target("aws", "corp", AWS_AUD, "aws-audience")
    );
    let fx = fixture_with(&body);
    fx.write(
        "client-rsa.pem",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("issuers.corp.private_key_file: ")
        .says("not a usable RS256 private key");
    let fx = fixture_with(&body.replace("\"RS256\"", "\"HS256\""));
    fx.keyfed(&["check"]).await.fails_with(3).says(
        "issuers.corp.algorithm: expected \"RS256\", \"PS256\" or \"ES256\", found \"HS256\"",
    );
    let with_secret = body.replace(
        "auth = \"private_key_jwt\"",
        "auth = \"client_secret_basic\"",
    );
    fixture_with(&with_secret)
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("issuers.corp.private_key_file: is only used with auth = \"private_key_jwt\"");
}

#[tokio::test]
async fn missing_file_and_syntax_errors_exit_3() {
    let fx = Fixture::new();
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("cannot read the configuration");
    fx.write("keyfed.toml", "[issuers.corp\n");
    fx.keyfed(&["check"])
        .await
        .fails_with(3)
        .says("keyfed.toml:1:14: unclosed table");
}

#[tokio::test]
async fn unknown_target_is_a_usage_error() {
    let fx = fixture_with(&valid());
    fx.keyfed(&["token", "gcp"])
        .await
        .fails_with(2)
        .says("no target named \"gcp\"")
        .says("(targets: aws)");
}

#[tokio::test]
async fn user_config_is_found_for_non_root_and_system_default_otherwise() {
    // As root (CI runs as root) the default is /etc/keyfed/keyfed.toml, which does not exist here.
    let fx = Fixture::new();
    let run = fx.keyfed_raw(&["check"], &[]).await;
    if rustix::process::geteuid().is_root() {
        run.fails_with(3).says("/etc/keyfed/keyfed.toml");
    } else {
        run.fails_with(3);
    }
}

#[tokio::test]
async fn endpoint_settings_are_checked() {
    let aws = "[targets.aws]\nissuer = \"corp\"\naws = { role_arn = \"arn:aws:iam::123456789012:role/app\", region = \"eu-west-1\" }\ncontainer_path = \"/aws/app\"\n";
    let body = |endpoint: &str| {
        format!(
            "{}\n{aws}\n{}\n[endpoint]\n{endpoint}",
            issuer("corp", "host-secret", "client_secret_basic"),
            target("api", "corp", AWS_AUD, "x")
        )
    };
    fixture_with(&body("listen = [\"0.0.0.0:9911\"]\n"))
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("endpoint.listen[0]: 0.0.0.0:9911 is not a loopback address");
    fixture_with(&body("listen = [\"0.0.0.0:9911\"]\nallow_remote = true\n"))
        .keyfed(&["check"])
        .await
        .ok()
        .says("beyond loopback");
    fixture_with(&body("imds_target = \"api\"\n"))
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("endpoint.imds_target: target \"api\" is of kind token");
    fixture_with(&body("").replace("/aws/app", "/latest/x"))
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("targets.aws.container_path: \"/latest/x\" is one of the endpoint's own paths");
    let no_endpoint = body("").replace("[endpoint]\n", "");
    fixture_with(&no_endpoint)
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("targets.aws.container_path: needs an [endpoint] section");
    fixture_with(&body("imds_target = \"aws\"\n"))
        .keyfed(&["check"])
        .await
        .ok()
        .prints("valid (1 issuer, 2 targets)");
}

/// issue 7: an output mode giving others any access is refused with a clear error, and so is
/// one that would keep keyfed from replacing its own file.
#[tokio::test]
async fn output_modes_giving_others_access_are_refused() {
    let target = |mode: &str| {
        format!(
            "{}[targets.aws]\nissuer = \"corp\"\n\
             aws = {{ role_arn = \"arn:aws:iam::123456789012:role/app\", region = \"eu-west-1\" }}\n\
             outputs = [ {{ kind = \"credential-process-json\", path = \"out.json\", mode = \"{mode}\" }} ]\n",
            issuer("corp", "host-secret", "client_secret_basic")
        )
    };
    for mode in ["0644", "0604", "0601", "0666"] {
        fixture_with(&target(mode))
            .keyfed(&["check"])
            .await
            .fails_with(3)
            .says("targets.aws.outputs[0].mode: ")
            .says(&format!(
                "mode {mode} gives others access; credentials are never world-accessible"
            ));
    }
    fixture_with(&target("0400"))
        .keyfed(&["check"])
        .await
        .fails_with(3)
        .says("mode 0400 would keep keyfed itself from replacing the file");
    fixture_with(&target("0640"))
        .keyfed(&["check"])
        .await
        .ok()
        .prints("mode = \"0640\"");
}
