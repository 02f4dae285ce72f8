//! AWS end to end through the real binary: `keyfed once` writes every output in its exact
//! format, `keyfed run` serves `credential-process` over the control socket with one upstream
//! call for a burst of callers, `credential-process` works without a daemon through its cache,
//! and the daemon reloads and stops on signals.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use keyfed_core::emulator::Fault;

use crate::util::{Fixture, ROLE, claims};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn once_writes_every_output_in_its_exact_format() {
    let fx = Fixture::aws().await;
    let aws = fx.aws_target(
        "aws",
        r#"{ kind = "aws-credentials", path = "out/credentials", profile = "prod" },
           { kind = "credential-process-json", path = "out/process.json", mode = "0640" }"#,
    );
    let token = crate::util::target("web", "corp", crate::util::AWS_AUD, "aws-audience")
        + "outputs = [ { kind = \"web-identity-token\", path = \"out/web-identity.jwt\" } ]\n";
    fx.daemon_config(&format!("{aws}\n{token}"));
    fx.keyfed(&["once"])
        .await
        .ok()
        .prints("ok      aws: AWS credentials for arn:aws:sts::");

    let doc = json(&std::fs::read_to_string(fx.path("out/process.json")).unwrap_or_default());
    let keys: Vec<&str> = doc
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(doc["Version"], 1);
    for key in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            doc[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} in {keys:?}"
        );
    }
    let expiration = doc["Expiration"].as_str().unwrap_or_default();
    assert!(
        expiration.ends_with('Z') && expiration.len() == 20,
        "{expiration}"
    );
    assert_eq!(mode(&fx.path("out/process.json")), 0o640);

    let ini = std::fs::read_to_string(fx.path("out/credentials")).unwrap_or_default();
    assert!(ini.starts_with("[prod]\naws_access_key_id = ASIA"), "{ini}");
    assert!(ini.contains(&format!(
        "\naws_secret_access_key = {}\n",
        doc["SecretAccessKey"].as_str().unwrap_or("?")
    )));
    assert!(ini.contains("\naws_session_token = "));
    assert_eq!(mode(&fx.path("out/credentials")), 0o600, "0600 by default");
    assert_eq!(
        mode(&fx.path("out")),
        0o700,
        "parent folders are created private"
    );

    let jwt = std::fs::read_to_string(fx.path("out/web-identity.jwt")).unwrap_or_default();
    assert!(!jwt.ends_with('\n'));
    assert_eq!(claims(&jwt)["aud"], crate::util::AWS_AUD);
    assert_eq!(fx.sts().assume_role_calls(), 1);
}

#[tokio::test]
async fn once_names_the_failed_target_and_still_writes_the_others() {
    let fx = Fixture::aws().await;
    let good = fx.aws_target(
        "good",
        r#"{ kind = "credential-process-json", path = "good.json" }"#,
    );
    let bad = fx
        .aws_target(
            "bad",
            r#"{ kind = "credential-process-json", path = "bad.json" }"#,
        )
        .replace(&format!("role/{ROLE}"), "role/nobody");
    fx.daemon_config(&format!("{good}\n{bad}"));
    fx.keyfed(&["once"])
        .await
        .fails_with(1)
        .prints("FAILED  bad: ")
        .prints("AccessDenied")
        .says("1 target(s) failed: bad");
    assert!(fx.path("good.json").exists());
    assert!(!fx.path("bad.json").exists());
}

#[tokio::test]
async fn merged_credentials_file_keeps_every_other_byte() {
    let fx = Fixture::aws().await;
    let before = "# managed by hand\n[default]\nregion = eu-west-1\naws_access_key_id = OLD\n\n[other]\n; keep\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other-secret\n";
    std::fs::create_dir_all(fx.path(".aws")).unwrap_or_else(|e| panic!("{e}"));
    fx.write(".aws/credentials", before);
    // A hand-made file that group and others may read: keyfed takes their access away (issue 7:
    // a shared primary group kept read access).
    crate::util::set_mode(&fx.path(".aws/credentials"), 0o644);
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "aws-credentials", path = ".aws/credentials", profile = "default", merge = true }"#,
    ));
    fx.keyfed(&["once"]).await.ok();
    let after = std::fs::read_to_string(fx.path(".aws/credentials")).unwrap_or_default();
    let (head, tail) = after
        .split_once("\n\n[other]")
        .unwrap_or_else(|| panic!("{after}"));
    assert_eq!(
        tail,
        "\n; keep\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other-secret\n"
    );
    assert!(
        head.starts_with(
            "# managed by hand\n[default]\nregion = eu-west-1\naws_access_key_id = ASIA"
        ),
        "{head}"
    );
    assert!(head.contains("\naws_session_token = "));
    assert!(!after.contains("OLD"));
    assert_eq!(
        mode(&fx.path(".aws/credentials")),
        0o600,
        "the owner's bits are kept, group and others lose access"
    );
}

#[tokio::test]
async fn daemon_serves_credential_process_and_stops_cleanly() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&format!(
        "{}\n{}",
        fx.aws_target("aws", ""),
        crate::util::target("api", "corp", crate::util::API_AUD, "api-audience")
    ));
    let daemon = fx.daemon().await;
    let run = fx.keyfed(&["credential-process", "aws"]).await;
    run.ok();
    let doc = json(&run.stdout);
    assert_eq!(doc["Version"], 1);
    assert!(
        doc["AccessKeyId"]
            .as_str()
            .is_some_and(|k| k.starts_with("ASIA"))
    );
    // The daemon already holds the credential: no new upstream call.
    let calls = fx.sts().assume_role_calls();
    fx.keyfed(&["credential-process", "aws"]).await.ok();
    assert_eq!(fx.sts().assume_role_calls(), calls);
    fx.keyfed(&["credential-process", "api"])
        .await
        .fails_with(2)
        .says("credential-process serves AWS targets");
    fx.keyfed(&["credential-process", "nope"])
        .await
        .fails_with(1)
        .says("no target named \"nope\"");
    let log = daemon.stop().await;
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    assert!(log.stderr.contains("refreshed"), "{}", log.stderr);
    assert!(!fx.path("keyfed.sock").exists(), "the socket is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_callers_during_a_refresh_cause_one_keycloak_and_one_sts_call() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    // The first exchange is slow, so every caller arrives while it is under way.
    fx.sts()
        .control()
        .inject("/", Fault::Delay(Duration::from_secs(2)), Some(1));
    let daemon = fx.daemon().await;
    let callers: Vec<_> = (0..100)
        .map(|_| fx.keyfed(&["credential-process", "aws"]))
        .collect();
    let runs = futures::future::join_all(callers).await;
    for run in &runs {
        run.ok();
    }
    let first = json(&runs[0].stdout);
    assert!(
        runs.iter()
            .all(|r| json(&r.stdout)["AccessKeyId"] == first["AccessKeyId"])
    );
    assert_eq!(fx.keycloak().token_requests(), 1);
    assert_eq!(fx.sts().assume_role_calls(), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn without_a_daemon_credential_process_exchanges_once_and_caches() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    let daemonless = fx.daemonless("aws");
    let (args, env) = (daemonless.args(), daemonless.env());
    let first = fx.keyfed_raw(&args, &env).await;
    first.ok();
    let second = fx.keyfed_raw(&args, &env).await;
    second.ok();
    assert_eq!(
        json(&first.stdout)["AccessKeyId"],
        json(&second.stdout)["AccessKeyId"]
    );
    assert_eq!(
        fx.sts().assume_role_calls(),
        1,
        "the second call came from the cache"
    );
    let cache_dir = daemonless.runtime.join("keyfed");
    assert_eq!(mode(&cache_dir), 0o700);
    let cached: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(cached.len(), 1);
    assert_eq!(mode(&cached[0].path()), 0o600);
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_serving() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    let mut daemon = fx.daemon().await;
    fx.keyfed(&["credential-process", "aws"]).await.ok();
    let good = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write("keyfed.toml", &format!("{good}\nbogus_key = 1\n"));
    daemon.signal(rustix::process::Signal::HUP);
    daemon
        .wait_for_log("reload refused, keeping the running configuration")
        .await;
    fx.write("keyfed.toml", &good);
    fx.keyfed(&["credential-process", "aws"]).await.ok();
    let log = daemon.stop().await;
    assert!(
        log.stderr
            .contains("reload refused, keeping the running configuration"),
        "{}",
        log.stderr
    );
    assert!(log.stderr.contains("bogus_key"), "{}", log.stderr);
}

#[tokio::test]
async fn even_trace_logging_never_shows_the_token_or_the_keys() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "process.json" }"#,
    ));
    let run = fx.keyfed_with(&["once"], &[("KEYFED_LOG", "trace")]).await;
    run.ok();
    assert!(run.stderr.lines().count() > 50, "trace logging is on");
    let doc = json(&std::fs::read_to_string(fx.path("process.json")).unwrap_or_default());
    for secret in ["SecretAccessKey", "SessionToken"] {
        let value = doc[secret].as_str().unwrap_or_default();
        assert!(
            value.len() > 10 && !run.stderr.contains(value),
            "{secret} leaked"
        );
    }
    // The Keycloak token STS received: its signature part never shows either.
    assert!(
        !run.stderr.contains("WebIdentityToken="),
        "the STS request body leaked"
    );
    assert!(!run.stderr.contains("eyJ"), "a JWT leaked");
}

#[tokio::test]
async fn a_reload_keeps_valid_credentials_of_unchanged_targets() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    let mut daemon = fx.daemon().await;
    let before = json(&fx.keyfed(&["credential-process", "aws"]).await.stdout);
    let calls = fx.sts().assume_role_calls();
    daemon.signal(rustix::process::Signal::HUP);
    daemon.wait_for_log("configuration reloaded").await;
    let after = json(&fx.keyfed(&["credential-process", "aws"]).await.stdout);
    assert_eq!(before["AccessKeyId"], after["AccessKeyId"]);
    assert_eq!(
        fx.sts().assume_role_calls(),
        calls,
        "no refresh storm on reload"
    );
    let log = daemon.stop().await;
    assert!(
        log.stderr.contains("configuration reloaded"),
        "{}",
        log.stderr
    );
}

#[tokio::test]
async fn credentials_are_never_cached_in_a_folder_others_can_reach() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    let daemonless = fx.daemonless("aws");
    let cache_dir = daemonless.runtime.join("keyfed");
    std::fs::create_dir_all(&cache_dir).unwrap_or_else(|e| panic!("{e}"));
    crate::util::set_mode(&cache_dir, 0o755);
    fx.keyfed_raw(&daemonless.args(), &daemonless.env())
        .await
        .fails_with(1)
        .says("must belong to this user with mode 0700");
    assert_eq!(fx.sts().assume_role_calls(), 0);
}

/// STS's answer when it does not take the token (DESIGN §9: fetch a new token, try once more).
fn sts_refuses_the_token(code: &str) -> Fault {
    Fault::Status {
        status: 400,
        body: format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>{code}</Code><Message>the token was refused for this test</Message></Error>\
             <RequestId>c0ffee00-0000-4000-8000-000000000000</RequestId></ErrorResponse>"
        ),
    }
}

/// issue 7: the "fresh token, retry once" loop. Refused once: a second Keycloak token and a
/// second STS request, and success.
#[tokio::test]
async fn sts_refusing_the_token_once_gets_a_fresh_token_and_one_more_try() {
    for code in ["InvalidIdentityToken", "ExpiredTokenException"] {
        let fx = Fixture::aws().await;
        fx.daemon_config(&fx.aws_target("aws", ""));
        fx.sts()
            .control()
            .inject("/", sts_refuses_the_token(code), Some(1));
        fx.keyfed(&["once"])
            .await
            .ok()
            .says("retrying once with a new one");
        assert_eq!(fx.keycloak().token_requests(), 2, "{code}: a fresh token");
        assert_eq!(fx.sts().control().hits("/"), 2, "{code}: two STS requests");
        assert_eq!(
            fx.sts().assume_role_calls(),
            1,
            "{code}: the second succeeded"
        );
    }
}

/// issue 7: refused twice, keyfed stops after the second try, not later.
#[tokio::test]
async fn sts_refusing_the_token_twice_fails_after_two_tries() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    fx.sts()
        .control()
        .inject("/", sts_refuses_the_token("InvalidIdentityToken"), Some(2));
    fx.keyfed(&["once"])
        .await
        .fails_with(1)
        .prints("FAILED  aws: ")
        .prints("InvalidIdentityToken")
        .says("1 target(s) failed: aws");
    assert_eq!(fx.keycloak().token_requests(), 2);
    assert_eq!(fx.sts().control().hits("/"), 2);
}

/// issue 7: a socket file left by a run that died (nobody listening) is replaced at start.
#[tokio::test]
async fn a_stale_control_socket_is_replaced() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    drop(
        std::os::unix::net::UnixListener::bind(fx.path("keyfed.sock"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(fx.path("keyfed.sock").exists(), "a stale socket file");
    let daemon = fx.daemon().await;
    fx.keyfed(&["credential-process", "aws"]).await.ok();
    daemon.stop().await.fails_with(0);
}

/// issue 7: a second `keyfed run` on a live control socket stops, naming it, and the first
/// keeps serving.
#[tokio::test]
async fn a_second_daemon_on_a_live_control_socket_stops_and_the_first_keeps_serving() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    let first = fx.daemon().await;
    let before = json(&fx.keyfed(&["credential-process", "aws"]).await.stdout);
    let second = fx.spawn_run(&[], &[]).wait().await;
    assert_ne!(second.code, Some(0), "{}", second.stderr);
    second.says(&fx.path("keyfed.sock").display().to_string());
    // Served by the first daemon: the same credential, no new exchange.
    let calls = fx.sts().assume_role_calls();
    let after = json(&fx.keyfed(&["credential-process", "aws"]).await.stdout);
    assert_eq!(before["AccessKeyId"], after["AccessKeyId"]);
    assert_eq!(fx.sts().assume_role_calls(), calls);
    let log = first.stop().await;
    log.fails_with(0);
    assert!(
        !fx.path("keyfed.sock").exists(),
        "the first removed its socket"
    );
}

/// issue 7: run as root, keyfed gives an output file the configured owner and group.
#[tokio::test]
async fn outputs_get_their_configured_owner_and_group() {
    use std::os::unix::fs::MetadataExt as _;
    if !crate::util::as_root_or_skip("outputs_get_their_configured_owner_and_group") {
        return;
    }
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "process.json", owner = "nobody", group = "nogroup", mode = "0640" },
           { kind = "aws-credentials", path = "credentials", owner = "42" }"#,
    ));
    fx.keyfed(&["once"]).await.ok();
    let meta = |name: &str| std::fs::metadata(fx.path(name)).unwrap_or_else(|e| panic!("{e}"));
    let json = meta("process.json");
    assert_eq!((json.uid(), json.gid()), (65534, 65534));
    assert_eq!(json.mode() & 0o777, 0o640);
    let ini = meta("credentials");
    assert_eq!(
        (ini.uid(), ini.gid()),
        (42, 0),
        "owner only: keyfed's group"
    );
    assert_eq!(ini.mode() & 0o777, 0o600);
}
