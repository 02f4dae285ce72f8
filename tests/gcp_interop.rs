//! keyfed with Google's own client libraries as consumers: google-auth (Python, installed by
//! `tests/run` into `target/interop-venv`, driven by `tests/interop/google_auth.py`) loading
//! keyfed's external_account files, file- and executable-sourced, and asking keyfed's GCE
//! metadata face; and the `gcp_auth` crate, whose metadata provider knows only
//! `metadata.google.internal` on port 80, run in a private mount namespace where that name is
//! keyfed (the README's recipe for SDKs that cannot be redirected). Each path ends with a token
//! the test's GCP emulator says it issued for keyfed's Keycloak identity.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use keyfed_gcp::emulator::{GcpEmulator, ID_TOKEN_ISSUER, IssuedKind, IssuedToken};

use crate::util::gcp::{PROJECT_ID, PROVIDER, SERVICE_ACCOUNT, principal_of};
use crate::util::{Daemon, Fixture, SecretFile, Serves, wait_ready, wait_until};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/google_auth.py");

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(
        python.exists(),
        "the interop venv is missing ({}): run tests/run, which installs it",
        python.display()
    );
    python
}

/// What a consumer printed: one JSON object per line. The tokens in it (issued by the test's
/// emulator, so known secrets) are taken out before its output is leak-checked.
fn results(fx: &Fixture, what: &str, stdout: &str, stderr: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut scrubbed = stdout.to_owned();
    for line in &lines {
        for key in ["token", "id_token"] {
            if let Some(token) = line[key].as_str().filter(|t| !t.is_empty()) {
                scrubbed = scrubbed.replace(token, "<token>");
            }
        }
    }
    fx.known.check(what, Serves::Nothing, &scrubbed, stderr);
    lines
}

/// Runs `tests/interop/google_auth.py ARGS` (behind `prefix`, e.g. `setpriv …`) with a clean
/// environment plus `env`; the JSON lines it printed.
async fn google_auth(
    fx: &Fixture,
    prefix: &[String],
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(rest).arg(python());
            c
        }
        None => tokio::process::Command::new(python()),
    };
    command
        .arg(SCRIPT)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", fx.dir.path())
        // Nothing but what the test points google-auth at: no real metadata server.
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env("GCE_METADATA_IP", "127.0.0.1:9")
        .envs(env.iter().copied())
        .current_dir(fx.dir.path())
        .kill_on_drop(true);
    let what = format!("google-auth {}", args.join(" "));
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    let lines = results(fx, &what, &stdout, &stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    lines
}

/// The line of `results` about `file`.
fn about<'a>(results: &'a [serde_json::Value], file: &Path) -> &'a serde_json::Value {
    let file = file.display().to_string();
    results
        .iter()
        .find(|r| r["file"] == file.as_str())
        .unwrap_or_else(|| panic!("no result for {file}: {results:?}"))
}

/// What the emulator knows of `token` (it must have issued it).
fn issued(gcp: &GcpEmulator, token: &str, whose: &str) -> IssuedToken {
    gcp.token_info(token)
        .unwrap_or_else(|| panic!("{whose}: a token the GCP emulator did not issue"))
}

fn unix(at: std::time::SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The credentials google-auth makes of a file-sourced and an executable-sourced
/// external_account file.
const FILE_KIND: &str = "google.auth.identity_pool.Credentials";
const EXECUTABLE_KIND: &str = "google.auth.pluggable.Credentials";

/// google-auth's result (credentials of `kind`) is a service account token for keyfed's principal, with
/// its exact expiry.
fn assert_impersonated(gcp: &GcpEmulator, result: &serde_json::Value, kind: &str, subject: &str) {
    assert!(result["error"].is_null(), "{result}");
    assert_eq!(result["kind"], kind, "{result}");
    let token = result["token"].as_str().unwrap_or_default();
    let info = issued(gcp, token, "google-auth");
    assert_eq!(
        info.kind,
        IssuedKind::ServiceAccount {
            email: SERVICE_ACCOUNT.to_owned()
        }
    );
    assert_eq!(info.principal, subject);
    assert_eq!(info.scopes, [CLOUD_PLATFORM]);
    assert_eq!(
        result["expiry"].as_u64(),
        Some(unix(info.expires_at)),
        "{result}"
    );
    assert_eq!(result["valid"], true);
}

/// google-auth's result (credentials of `kind`) is the federated token itself, for keyfed's
/// principal.
fn assert_federated(gcp: &GcpEmulator, result: &serde_json::Value, kind: &str, subject: &str) {
    assert!(result["error"].is_null(), "{result}");
    assert_eq!(result["kind"], kind, "{result}");
    let token = result["token"].as_str().unwrap_or_default();
    let info = issued(gcp, token, "google-auth");
    assert_eq!(
        info.kind,
        IssuedKind::Federated {
            provider: PROVIDER.to_owned()
        }
    );
    assert_eq!(info.principal, subject);
    assert_eq!(result["valid"], true);
}

/// Two GCP targets, `impersonating` (as [`SERVICE_ACCOUNT`]) and `federated` (the federated
/// token itself), each with an external_account output `gcp/<target>.json` whose keys are
/// `source_keys`, plus the subject token of the first in `gcp/subject.jwt`.
fn two_targets(fx: &Fixture, gcp: &GcpEmulator, source_keys: &str) -> String {
    let output = |name: &str| {
        format!("{{ kind = \"gcp-external-account\", path = \"gcp/{name}.json\"{source_keys} }}")
    };
    fx.gcp_target(
        gcp,
        "impersonating",
        &format!("service_account = \"{SERVICE_ACCOUNT}\""),
        &format!(
            "{}, {{ kind = \"gcp-subject-token\", path = \"gcp/subject.jwt\" }}",
            output("impersonating")
        ),
    ) + &fx.gcp_target(gcp, "federated", "", &output("federated"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The daemon on [`two_targets`] with `source_keys`, once it has written the external_account
/// files and `gcp/subject.jwt`.
async fn daemon_with_files(fx: &Fixture, gcp: &GcpEmulator, source_keys: &str) -> Daemon {
    fx.daemon_config(&two_targets(fx, gcp, source_keys));
    know_subject_tokens(fx);
    let daemon = fx.daemon().await;
    let files = ["impersonating.json", "federated.json", "subject.jwt"]
        .map(|f| fx.path(&format!("gcp/{f}")));
    wait_until("the daemon to write its Google Cloud files", async || {
        files.iter().all(|f| f.exists())
    })
    .await;
    daemon
}

/// The subject-token files of [`two_targets`] hold secrets.
fn know_subject_tokens(fx: &Fixture) {
    for name in ["impersonating.jwt", "federated.jwt", "subject.jwt"] {
        fx.known
            .add_file(fx.path(&format!("gcp/{name}")), SecretFile::Jwt);
    }
}

#[tokio::test]
async fn google_auth_exchanges_the_subject_token_file_keyfed_keeps() {
    let (fx, gcp) = Fixture::gcp().await;
    let daemon = daemon_with_files(&fx, &gcp, "").await;
    let (impersonating, federated) = (
        fx.path("gcp/impersonating.json"),
        fx.path("gcp/federated.json"),
    );
    for (file, jwt) in [
        (&impersonating, "impersonating.jwt"),
        (&federated, "federated.jwt"),
    ] {
        let document = json_file(file);
        assert_eq!(
            document["credential_source"]["file"],
            fx.path(&format!("gcp/{jwt}")).display().to_string(),
            "the subject token beside the file"
        );
        assert_eq!(document["token_url"], gcp.sts_url());
    }
    let subject = principal_of(&read(&fx.path("gcp/subject.jwt")));
    let sts_before = gcp.sts_calls();
    let results = google_auth(
        &fx,
        &[],
        &[
            "external-account",
            &path_arg(&impersonating),
            &path_arg(&federated),
        ],
        &[],
    )
    .await;
    assert_impersonated(&gcp, about(&results, &impersonating), FILE_KIND, &subject);
    assert_federated(&gcp, about(&results, &federated), FILE_KIND, &subject);
    assert_eq!(
        gcp.sts_calls() - sts_before,
        2,
        "google-auth made each exchange itself"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn keyfed_once_writes_the_subject_token_files_it_lists() {
    // Issue 9: `keyfed once` listed the gcp-external-account and gcp-subject-token outputs as
    // written but never wrote them (they are written from the target's subject-token slot,
    // which only the daemon refreshed).
    let (fx, gcp) = Fixture::gcp().await;
    fx.daemon_config(&two_targets(&fx, &gcp, ""));
    know_subject_tokens(&fx);
    fx.keyfed(&["once"])
        .await
        .ok()
        .prints("gcp/impersonating.json")
        .prints("gcp/subject.jwt");
    for file in [
        "impersonating.json",
        "impersonating.jwt",
        "federated.json",
        "federated.jwt",
        "subject.jwt",
    ] {
        let path = fx.path(&format!("gcp/{file}"));
        assert!(path.exists(), "keyfed once wrote {}", path.display());
    }
    principal_of(&read(&fx.path("gcp/subject.jwt")));
}

#[tokio::test]
async fn google_auth_runs_keyfed_gcp_subject_token_as_its_executable() {
    let (fx, gcp) = Fixture::gcp().await;
    let daemon = daemon_with_files(&fx, &gcp, ", credential_source = \"executable\"").await;
    let (impersonating, federated) = (
        fx.path("gcp/impersonating.json"),
        fx.path("gcp/federated.json"),
    );
    let command = json_file(&impersonating)["credential_source"]["executable"]["command"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        command,
        format!(
            "{} --config {} gcp-subject-token impersonating",
            env!("CARGO_BIN_EXE_keyfed"),
            fx.path("keyfed.toml").display()
        )
    );
    let subject = principal_of(&read(&fx.path("gcp/subject.jwt")));
    // google-auth runs the command as written (this keyfed binary, keyfed's default logging)
    // and reads its stdout and stderr as one stream.
    let results = google_auth(
        &fx,
        &[],
        &[
            "external-account",
            &path_arg(&impersonating),
            &path_arg(&federated),
        ],
        &[ALLOW_EXECUTABLES],
    )
    .await;
    assert_impersonated(
        &gcp,
        about(&results, &impersonating),
        EXECUTABLE_KIND,
        &subject,
    );
    assert_federated(&gcp, about(&results, &federated), EXECUTABLE_KIND, &subject);
    // google-auth parses stdout and stderr together: even with debug logging asked for, the
    // command writes nothing but its JSON document.
    let run = fx
        .keyfed_with(
            &["gcp-subject-token", "impersonating"],
            &[("KEYFED_LOG", "debug")],
        )
        .await;
    run.ok();
    assert_eq!(
        run.stderr, "",
        "issue 9: the executable's stderr must stay empty"
    );
    let response: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(response["success"], true);
    daemon.stop().await;
}

const ALLOW_EXECUTABLES: (&str, &str) = ("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1");

/// Users of the Debian base system, as in endpoint.rs: uid 12345 is nobody in the user
/// database; 65534 is `nobody`, and group 65534 `nogroup`.
const UNLISTED: u32 = 12345;
const NOBODY: u32 = 65534;

/// The error google-auth raised for `file`.
fn error_for(results: &[serde_json::Value], file: &Path) -> String {
    let result = about(results, file);
    result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("google-auth raised nothing: {result}"))
        .to_owned()
}

#[tokio::test]
async fn google_auth_shows_keyfeds_words_when_the_executable_fails() {
    if !crate::util::as_root_or_skip("google_auth_shows_keyfeds_words_when_the_executable_fails") {
        return;
    }
    let (fx, gcp) = Fixture::gcp().await;
    // A target only uid 12345 may use, whose external_account file group nogroup may read,
    // and a control socket that group may reach.
    let target = fx
        .gcp_target(
            &gcp,
            "gcp",
            &format!("service_account = \"{SERVICE_ACCOUNT}\""),
            &format!(
                "{{ kind = \"gcp-external-account\", path = \"external-account.json\", \
                 credential_source = \"executable\", mode = \"0640\", group = \"{NOBODY}\" }}"
            ),
        )
        .replace(
            "[targets.gcp]\n",
            &format!("[targets.gcp]\nallow_users = [\"{UNLISTED}\"]\n"),
        );
    let config = fx.daemon_config(&target);
    fx.write(
        "keyfed.toml",
        &read(&config).replace(
            "socket = \"keyfed.sock\"",
            &format!("socket = \"keyfed.sock\"\ngroup = \"{NOBODY}\""),
        ),
    );
    crate::util::set_mode(fx.dir.path(), 0o755);
    crate::util::set_mode(&config, 0o644);
    let file = fx.path("external-account.json");
    let args = ["external-account", &path_arg(&file)];

    // No daemon: `keyfed once` writes the file; the command has no daemon to ask.
    fx.keyfed(&["once"]).await.ok();
    let down = error_for(
        &google_auth(&fx, &[], &args, &[ALLOW_EXECUTABLES]).await,
        &file,
    );
    assert!(
        down.starts_with("RefreshError: Executable exited with non-zero return code 1"),
        "{down}"
    );
    let socket = fx.path("keyfed.sock").display().to_string();
    assert!(
        down.contains("\"success\":false") && down.contains(&socket),
        "keyfed's response, naming the socket it found no daemon on: {down}"
    );

    // A daemon, and a user the target does not admit: the daemon's refusal, word for word.
    let daemon = fx.daemon().await;
    let nobody = crate::util::users::setpriv(NOBODY, NOBODY);
    let refused = error_for(
        &google_auth(&fx, &nobody, &args, &[ALLOW_EXECUTABLES]).await,
        &file,
    );
    assert!(
        refused.starts_with("RefreshError: Executable exited with non-zero return code 1"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!(
            "uid {NOBODY} may not have the credentials of target"
        )),
        "{refused}"
    );
    // Without GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES, google-auth refuses to run keyfed.
    let unallowed = error_for(&google_auth(&fx, &nobody, &args, &[]).await, &file);
    assert!(
        unallowed.contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES"),
        "{unallowed}"
    );

    // The admitted user gets a token through the same file.
    let admitted = crate::util::users::setpriv(UNLISTED, NOBODY);
    let results = google_auth(&fx, &admitted, &args, &[ALLOW_EXECUTABLES]).await;
    let result = about(&results, &file);
    assert!(result["error"].is_null(), "{result}");
    let info = issued(
        &gcp,
        result["token"].as_str().unwrap_or_default(),
        "google-auth as uid 12345",
    );
    assert_eq!(
        info.kind,
        IssuedKind::ServiceAccount {
            email: SERVICE_ACCOUNT.to_owned()
        }
    );
    daemon.stop().await;
}

/// The audience the metadata tests ask ID tokens for.
const ID_AUDIENCE: &str = "https://service.example.internal";

/// A target "gcp" impersonating [`SERVICE_ACCOUNT`] for 45 minutes (not Google's default hour,
/// so an expiry that ignores it shows), written as JSON to `gcp/access-token.json`, served as
/// the GCE face's `default` account on `listen`.
fn metadata_config(fx: &Fixture, gcp: &GcpEmulator, listen: &str, endpoint_keys: &str) {
    let target = fx.gcp_target(
        gcp,
        "gcp",
        &format!("service_account = \"{SERVICE_ACCOUNT}\"\nlifetime = \"45m\""),
        "{ kind = \"gcp-access-token\", path = \"gcp/access-token.json\", format = \"json\" }",
    );
    fx.daemon_config(&format!(
        "{target}\n[endpoint]\nlisten = [\"{listen}\"]\ngce_target = \"gcp\"\n{endpoint_keys}"
    ));
    fx.known
        .add_file(fx.path("gcp/access-token.json"), SecretFile::Whole);
}

/// keyfed's access token and its expiry (Unix seconds), from its `gcp-access-token` output,
/// checked against what the emulator issued.
async fn keyfeds_token(fx: &Fixture, gcp: &GcpEmulator) -> (String, u64) {
    let file = fx.path("gcp/access-token.json");
    wait_until("the daemon to write gcp/access-token.json", async || {
        file.exists()
    })
    .await;
    let json = json_file(&file);
    let token = json["access_token"].as_str().unwrap_or_default().to_owned();
    let info = issued(gcp, &token, "keyfed's gcp-access-token output");
    assert_eq!(
        info.kind,
        IssuedKind::ServiceAccount {
            email: SERVICE_ACCOUNT.to_owned()
        }
    );
    assert_eq!(
        json["expires_at"],
        keyfed_core::clock::rfc3339(info.expires_at),
        "{json}"
    );
    (token, unix(info.expires_at))
}

#[tokio::test]
async fn google_auth_compute_engine_credentials_on_keyfeds_metadata_face() {
    let (fx, gcp) = Fixture::gcp().await;
    let listen = format!("127.0.0.1:{}", crate::util::free_port());
    metadata_config(&fx, &gcp, &listen, "");
    let daemon = fx.daemon().await;
    wait_ready(&format!("http://{listen}")).await;
    let (token, expires_at) = keyfeds_token(&fx, &gcp).await;
    let results = google_auth(
        &fx,
        &[],
        &["metadata", ID_AUDIENCE],
        &[
            ("GCE_METADATA_HOST", listen.as_str()),
            ("GCE_METADATA_IP", listen.as_str()),
        ],
    )
    .await;
    let line = |what: &str| {
        results
            .iter()
            .find(|r| r["what"] == what)
            .unwrap_or_else(|| panic!("no {what} in {results:?}"))
    };

    let credentials = line("compute_engine.Credentials");
    assert_eq!(credentials["token"], token.as_str(), "keyfed's token");
    assert_eq!(credentials["service_account_email"], SERVICE_ACCOUNT);
    // google-auth's expiry is its own clock plus `expires_in` (whole seconds, rounded down):
    // keyfed's expiry, less the time the answer took.
    let expiry = credentials["expiry"].as_u64().unwrap_or_default();
    assert!(
        expiry <= expires_at + 1 && expiry + 60 >= expires_at,
        "google-auth's expiry {expiry} against keyfed's {expires_at}"
    );

    let default = line("google.auth.default");
    assert_eq!(default["kind"], "Credentials", "{default}");
    assert_eq!(default["project"], PROJECT_ID);

    let id_token = line("id_token.fetch_id_token")["id_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let claims = verify_id_token(&gcp, &id_token, ID_AUDIENCE).await;
    assert_eq!(claims["email"], SERVICE_ACCOUNT, "{claims}");
    assert_eq!(claims["sub"].as_str(), gcp.unique_id(SERVICE_ACCOUNT));
    assert_eq!(
        issued(&gcp, &id_token, "fetch_id_token").kind,
        IssuedKind::IdToken {
            email: SERVICE_ACCOUNT.to_owned(),
            audience: ID_AUDIENCE.to_owned()
        }
    );
    daemon.stop().await;
}

/// Checks `jwt` as a relying party would: RS256, signed by a key of the emulator's JWKS (as
/// Google publishes at https://www.googleapis.com/oauth2/v3/certs), for `audience`, from
/// Google's issuer. Its claims.
async fn verify_id_token(gcp: &GcpEmulator, jwt: &str, audience: &str) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet = crate::util::http::client()
        .get(gcp.jwks_url())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let header = jsonwebtoken::decode_header(jwt).unwrap_or_else(|e| panic!("not a JWT: {e}"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.unwrap_or_default();
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("no key {kid} in the emulator's JWKS"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("{e}"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ID_TOKEN_ISSUER]);
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation)
        .unwrap_or_else(|e| panic!("the ID token does not verify: {e}"))
        .claims
}

/// Set in the environment of the test binary re-run as [`gcp_auth_child`], inside the
/// namespace where `metadata.google.internal` is keyfed.
const CHILD: &str = "KEYFED_TEST_GCP_AUTH_CHILD";
/// How the child reports what `gcp_auth` got.
const CHILD_SAYS: &str = "gcp_auth got:";

/// Not a test by itself: the consumer half of
/// [`gcp_auth_uses_keyfed_as_metadata_google_internal`], which re-runs this test binary for it
/// (`--exact … --ignored`) in a mount namespace of its own. Run any other way, it does nothing.
#[tokio::test]
#[ignore = "run by gcp_auth_uses_keyfed_as_metadata_google_internal inside its namespace"]
async fn gcp_auth_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // The chain applications use: no GOOGLE_APPLICATION_CREDENTIALS, an empty HOME (no gcloud
    // configuration) and no gcloud on PATH leave the metadata server.
    let provider = gcp_auth::provider()
        .await
        .unwrap_or_else(|e| panic!("gcp_auth found no credentials: {e}"));
    let token = provider
        .token(&[CLOUD_PLATFORM])
        .await
        .unwrap_or_else(|e| panic!("gcp_auth could not get a token: {e}"));
    let project = provider
        .project_id()
        .await
        .unwrap_or_else(|e| panic!("gcp_auth could not get the project id: {e}"));
    println!(
        "{CHILD_SAYS} {}",
        serde_json::json!({
            "token": token.as_str(),
            "expires_at": token.expires_at().timestamp(),
            "project": &*project,
        })
    );
}

/// A loopback address of this test's own (from its process id), so that port 80 on it is
/// free whatever else runs on the machine.
fn own_loopback_address() -> String {
    let pid = std::process::id();
    format!("127.77.{}.{}", (pid >> 8) & 0xff, (pid & 0xff).max(1))
}

#[tokio::test]
async fn gcp_auth_uses_keyfed_as_metadata_google_internal() {
    if !crate::util::as_root_or_skip("gcp_auth_uses_keyfed_as_metadata_google_internal") {
        return;
    }
    // The README's recipe for SDKs that only know metadata.google.internal: a hosts entry in a
    // mount namespace of their own, keyfed listening on that address at port 80, and the name
    // in allowed_hosts so that the endpoint's Host check accepts it.
    let unshare = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .output();
    assert!(
        unshare.as_ref().is_ok_and(|o| o.status.success()),
        "`unshare --mount true` fails here, so gcp_auth cannot be given a metadata.google.internal \
         of its own: {unshare:?}"
    );
    let (fx, gcp) = Fixture::gcp().await;
    let address = own_loopback_address();
    metadata_config(
        &fx,
        &gcp,
        &format!("{address}:80"),
        "allowed_hosts = [\"metadata.google.internal\"]\n",
    );
    let daemon = fx.daemon().await;
    wait_ready(&format!("http://{address}")).await;
    let (token, expires_at) = keyfeds_token(&fx, &gcp).await;

    let hosts = fx.write(
        "hosts",
        &format!("127.0.0.1 localhost\n{address} metadata.google.internal\n"),
    );
    crate::util::set_mode(&hosts, 0o644);
    let empty = fx.path("empty-home");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let test_binary = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut child = tokio::process::Command::new("unshare");
    child
        .args([
            "--mount",
            "sh",
            "-c",
            // No gcloud on PATH for gcp_auth to fall back on.
            "mount --bind \"$0\" /etc/hosts && export PATH=\"$HOME\" && exec \"$@\"",
        ])
        .arg(&hosts)
        .arg(&test_binary)
        .args([
            "--exact",
            "gcp_interop::gcp_auth_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD, "1")
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &empty)
        .kill_on_drop(true);
    let output = child
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    let said = stdout
        .lines()
        // libtest may print the test's name on the same line first.
        .find_map(|l| l.split_once(CHILD_SAYS).map(|(_, said)| said))
        .map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).unwrap_or_default());
    let scrubbed = stdout.replace(&token, "<keyfed's token>");
    fx.known.check(
        "gcp_auth (the test binary)",
        Serves::Nothing,
        &scrubbed,
        &stderr,
    );
    let said = said.unwrap_or_else(|| {
        panic!(
            "gcp_auth in its namespace reported nothing ({}):\n{stdout}\n{stderr}",
            output.status
        )
    });
    assert_eq!(said["token"], token.as_str(), "keyfed's token");
    assert_eq!(said["project"], PROJECT_ID);
    // gcp_auth's expiry is its own clock plus `expires_in`.
    let expiry = said["expires_at"].as_u64().unwrap_or_default();
    assert!(
        expiry <= expires_at + 1 && expiry + 60 >= expires_at,
        "gcp_auth's expiry {expiry} against keyfed's {expires_at}"
    );
    daemon.stop().await;
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// issue 9 (review): the control socket hands a target's subject token — the raw Keycloak
/// token, which may carry more audiences than the target's credential — only to a target
/// configured for consumers that exchange it themselves (an external_account file or a
/// subject-token output), not to any exchanging target.
#[tokio::test]
async fn the_subject_token_goes_only_to_targets_configured_to_hand_it_out() {
    let (fx, gcp) = Fixture::gcp().await;
    let outputs = "{ kind = \"gcp-access-token\", path = \"gcp/token\" }";
    fx.daemon_config(&fx.gcp_target(&gcp, "face-only", "", outputs));
    let daemon = fx.daemon().await;
    wait_until("the access token", async || fx.path("gcp/token").exists()).await;
    let run = fx.keyfed(&["gcp-subject-token", "face-only"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let response: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(response["success"], false);
    assert!(
        response["message"].as_str().is_some_and(|m| m.contains(
            "target \"face-only\" does not hand out the subject token: only a target with an \
             output that reads it does (gcp-external-account, gcp-subject-token, \
             azure-federated-token)"
        )),
        "{response}"
    );
    daemon.stop().await;
}
