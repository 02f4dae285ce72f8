//! The leak check itself (issue 7): it knows every kind of secret a run holds and fails a test
//! when one shows up in a process's output, whichever way the process was started. Without these
//! tests a leak check that knew nothing would pass every other test.

use std::path::PathBuf;

use crate::util::{Fixture, JWT_SECRET, SECRET, Serves, process};

/// Asserts the check finds `planted` in a line of output, naming it as `what`.
fn assert_found(fx: &Fixture, planted: &str, what: &str) {
    let found = fx.known.found_in(&format!("log line: {planted} and more"));
    assert!(
        found.iter().any(|w| w.contains(what)),
        "the check missed {what}: {found:?}"
    );
}

#[tokio::test]
async fn issue_7_every_kind_of_secret_is_known() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "process.json" }"#,
    ));
    assert!(
        fx.known.found_in("nothing secret here").is_empty(),
        "plain text passes"
    );

    // Client secrets: raw, form-urlencoded (client_secret_post) and inside Basic auth.
    assert_found(&fx, SECRET, "a client secret");
    assert_found(&fx, JWT_SECRET, "a client secret");
    assert_found(
        &fx,
        "s3cr3t%3Awith%2Bplus%25percent%26amp+space%3Deq",
        "form-urlencoded",
    );
    // What keyfed's Authorization header for host-secret carries (see client.rs).
    assert_found(
        &fx,
        "aG9zdC1zZWNyZXQ6czNjcjN0JTNBd2l0aCUyQnBsdXMlMjVwZXJjZW50JTI2YW1wK3NwYWNlJTNEZXE=",
        "Basic auth value of client host-secret",
    );
    // Key bits from the middle of each private key, printed whole with its line breaks.
    assert_found(&fx, &fx.rsa.private_pem, "RSA private key");
    assert_found(&fx, &fx.ec.private_pem, "EC private key");
    assert!(
        fx.known
            .found_in("-----BEGIN PRIVATE KEY-----\nMII")
            .is_empty(),
        "the fixed PEM header is no secret"
    );

    // Secrets that exist only once keyfed ran: the Keycloak token and the AWS keys.
    let run = fx.keyfed(&["once"]).await;
    run.ok();
    let jwt = fx
        .keycloak()
        .issued_tokens()
        .pop()
        .unwrap_or_else(|| panic!("no token issued"));
    assert_found(&fx, &jwt, "a Keycloak token");
    let signature = jwt.rsplit('.').next().unwrap_or_default();
    assert_found(&fx, signature, "a Keycloak token");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("process.json")).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    for key in ["SecretAccessKey", "SessionToken"] {
        assert_found(&fx, doc[key].as_str().unwrap_or("?"), "STS emulator issued");
    }

    // Endpoint secrets: the container token file, and tokens the test obtained.
    fx.write("container-token", "c0ffee-container-token-0123456789abcdef");
    assert_found(
        &fx,
        "c0ffee-container-token-0123456789abcdef",
        "container-token",
    );
    fx.know("an IMDS session token", "imds-session-token-abcdefgh");
    assert_found(&fx, "imds-session-token-abcdefgh", "IMDS session token");
}

#[tokio::test]
async fn issue_7_stdout_may_carry_only_the_credential_its_command_serves() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    // `keyfed credential-process` prints the AWS keys on stdout: that is its job.
    let run = fx.keyfed(&["credential-process", "aws"]).await;
    run.ok();
    // The same stdout from a command that serves nothing is a leak…
    assert!(!fx.known.found_in(&run.stdout).is_empty());
    assert!(
        fails(&fx, Serves::Nothing, &run.stdout, ""),
        "a served credential on the wrong command"
    );
    // …and so is anything else on the serving command's stdout, or its stderr.
    assert!(fails(
        &fx,
        Serves::AwsJson,
        &format!("{}{SECRET}", run.stdout),
        ""
    ));
    assert!(fails(&fx, Serves::AwsJson, &run.stdout, &run.stdout));
    assert!(!fails(&fx, Serves::AwsJson, &run.stdout, "log"));
}

/// Whether the leak check fails on this output.
fn fails(fx: &Fixture, serves: Serves, stdout: &str, stderr: &str) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fx.check_output("a process", serves, stdout, stderr)
    }))
    .is_err()
}

/// A process, started like every other, that writes a client secret to file descriptor
/// `stream` and then waits.
fn planted(fx: &Fixture, stream: &str) -> process::Process {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!(
            "printf '%s' \"$PLANTED\" >&{stream}; exec sleep 30"
        ))
        .env("PLANTED", SECRET)
        .current_dir(fx.dir.path());
    process::spawn("a planted process", command, &fx.known, Serves::Nothing)
}

#[tokio::test]
#[should_panic(expected = "secrets leaked into the stderr of a planted process")]
async fn issue_7_a_stopped_process_that_leaked_fails_the_test() {
    let fx = Fixture::new();
    let planted = planted(&fx, "2");
    crate::util::wait_until("the planted output", async || {
        planted.log_so_far().contains(SECRET)
    })
    .await;
    planted.stop().await;
}

#[tokio::test]
#[should_panic(expected = "secrets leaked into the stdout of a planted process")]
async fn issue_7_a_dropped_process_that_leaked_fails_the_test() {
    let fx = Fixture::new();
    let planted = planted(&fx, "1");
    crate::util::wait_until("the planted output", async || {
        planted.stdout_so_far().contains(SECRET)
    })
    .await;
    drop(planted);
}

#[tokio::test]
#[should_panic(expected = "secrets leaked into the stderr of keyfed")]
async fn issue_7_a_keyfed_run_by_another_program_is_checked_too() {
    // The AWS CLI runs keyfed through the wrapper; what that keyfed wrote is checked.
    let fx = Fixture::new();
    let wrapper: PathBuf = fx.keyfed_wrapper();
    let out = tokio::process::Command::new(&wrapper)
        .args(["--version"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    assert_eq!(
        fx.check_wrapped(),
        1,
        "the wrapped run was found and is clean"
    );
    // Plant a secret in a wrapped run's log, as a leaking keyfed would write it.
    let log = std::fs::read_dir(fx.path("wrapped"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "stderr"))
        .unwrap_or_else(|| panic!("no wrapped log"));
    std::fs::write(log, SECRET).unwrap_or_else(|e| panic!("{e}"));
    fx.check_wrapped();
}
