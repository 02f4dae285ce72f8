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
    fx.known.expect_leaks();
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
    fx.known.expect_leaks();
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
    fx.known.expect_leaks();
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
    fx.known.expect_leaks();
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

/// issue 11: what a test configures is known without the test saying so: an issuer's inline
/// secret and its secret file's (in each form on the wire), every line of its private key, the
/// identity header beside the control socket, and the secret parts of every output file.
#[tokio::test]
async fn issue_11_whatever_a_configuration_names_is_known() {
    let fx = Fixture::new();
    fx.known.expect_leaks();
    let other_key = crate::util::key_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    for dir in ["out", "run"] {
        std::fs::create_dir_all(fx.path(dir)).unwrap_or_else(|e| panic!("{e}"));
    }
    fx.write("other-secret", "other-s3cr3t-from-a-file\n");
    fx.write("other-key.pem", &other_key.private_pem);
    fx.write(
        "out/token.jwt",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.b3V0cHV0LXNpZ25hdHVyZQ",
    );
    fx.write(
        "out/token.json",
        r#"{"access_token":"ya29.output-token-0123456789"}"#,
    );
    fx.write("run/identity-header", "identity-header-0123456789abcdef");
    fx.write(
        "other.toml",
        "[issuers.a]\nurl = \"http://127.0.0.1:1\"\nclient_id = \"host-a\"\nclient_secret = \"inline-s3cr3t-0123\"\n\
         [issuers.b]\nurl = \"http://127.0.0.1:1\"\nclient_id = \"host-b\"\nclient_secret_file = \"other-secret\"\n\
         [issuers.c]\nurl = \"http://127.0.0.1:1\"\nclient_id = \"host-c\"\nauth = \"private_key_jwt\"\nprivate_key_file = \"other-key.pem\"\n\
         [control]\nsocket = \"run/keyfed.sock\"\n\
         [targets.t]\nissuer = \"a\"\noutputs = [{ kind = \"token\", path = \"out/token.jwt\" }, \
         { kind = \"gcp-access-token\", path = \"out/token.json\", format = \"json\" }]\n",
    );
    assert_found(&fx, "inline-s3cr3t-0123", "inline client secret");
    assert_found(
        &fx,
        &crate::util::leaks::basic_auth("host-a", "inline-s3cr3t-0123"),
        "Basic auth value of client host-a",
    );
    assert_found(&fx, "other-s3cr3t-from-a-file", "other-secret");
    assert_found(
        &fx,
        &crate::util::leaks::basic_auth("host-b", "other-s3cr3t-from-a-file"),
        "other-secret",
    );
    let key_line = other_key.private_pem.lines().nth(2).unwrap_or_default();
    assert_found(&fx, key_line, "other-key.pem");
    assert_found(&fx, "identity-header-0123456789abcdef", "identity-header");
    assert_found(&fx, "b3V0cHV0LXNpZ25hdHVyZQ", "token.jwt");
    assert_found(&fx, "ya29.output-token-0123456789", "token.json");
}

/// issue 11: secrets no one told the check about are found by their shape, on any stream.
#[tokio::test]
async fn issue_11_secrets_of_a_known_shape_fail_the_check() {
    let fx = Fixture::new();
    fx.known.expect_leaks();
    for planted in [
        "token ya29.a0AfH6SMBx-unknown-issuer-0123456789",
        "session IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD6unknown",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgunknownkeybits\n",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.dW5rbm93bi1zaWduYXR1cmUtYml0cw",
    ] {
        assert!(fails(&fx, Serves::Nothing, "", planted), "{planted}");
        assert!(fails(&fx, Serves::Nothing, planted, ""), "{planted}");
    }
    assert!(!fails(&fx, Serves::Nothing, "plain log line", "ya29.…"));
}

/// Each file of the suite that names the keyfed binary, and why its runs are checked.
const STARTS_KEYFED: [(&str, &str); 5] = [
    (
        "tests/util/mod.rs",
        "Fixture::keyfed_command and keyfed_wrapper: every keyfed a test starts, or a program \
         under test runs, goes through them and so through the check",
    ),
    (
        "tests/unit_sandbox.rs",
        "keyfed in the unit's sandbox, started through process::spawn and so checked",
    ),
    (
        "tests/interop.rs",
        "compares the AWS profile keyfed demo wrote with the binary, then swaps in the wrapper",
    ),
    (
        "tests/gcp_interop.rs",
        "compares the command keyfed wrote into an external_account file; google-auth runs it as \
         `gcp-subject-token`, which logs nothing, and google-auth's own output is checked",
    ),
    (
        "tests/systemd_unit.rs",
        "systemd-analyze verify reads the unit naming the binary; nothing runs it",
    ),
];

/// issue 11: no test starts keyfed past the leak check. A file that names the keyfed binary
/// must be one of those reviewed in [`STARTS_KEYFED`]: a new way of starting keyfed is added
/// there only with the reason its output is checked.
#[test]
fn issue_11_every_file_that_starts_keyfed_is_reviewed() {
    fn rust_files(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("tests"), &mut files);
    // Spelled in two pieces, so that this file does not name the binary itself.
    let needle = ["CARGO_BIN_EXE_", "keyfed"].concat();
    let naming: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&needle)))
        .filter_map(|f| f.strip_prefix(&root).ok())
        .map(|f| f.display().to_string())
        .collect();
    assert!(naming.len() >= 2, "the search found nothing: {naming:?}");
    for file in &naming {
        assert!(
            STARTS_KEYFED.iter().any(|(reviewed, _)| reviewed == file),
            "{file} names the keyfed binary: start keyfed through Fixture::keyfed_command (or the \
             wrapper) so the leak check sees its output, or add it to STARTS_KEYFED with the \
             reason its output is checked"
        );
    }
}
