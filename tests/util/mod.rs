//! Test fixtures: the [`Fixture`] (a temporary folder for configuration and key files, client
//! keys, the emulators a test started, and every secret the run knows), and one way to run the
//! real `keyfed` binary (and anything that runs it) under the leak check of `leaks.rs`: every
//! process's stdout and stderr are checked against every secret the run knows (`process.rs`).
//! Each outside system has its own file: the Keycloak emulator's standard realm
//! (`keycloak_emulator.rs`), the real Keycloak server (`keycloak.rs`), STS and AWS targets
//! (`aws.rs`); long-running keyfed is in `daemon.rs`, `keyfed doctor`'s runs in `doctor.rs`.
//! Beside them: requests to the local endpoint (`http.rs`), programs run as another user
//! (`users.rs`), a daemon serving every face of the endpoint (`faces.rs`) and the instruments of
//! the endpoint abuse tests (`abuse.rs`).

#![allow(dead_code)]

pub mod abuse;
pub mod aws;
pub mod azure;
pub mod daemon;
pub mod doctor;
pub mod faces;
pub mod gcp;
pub mod http;
pub mod keycloak;
pub mod keycloak_emulator;
pub mod leaks;
pub mod process;
pub mod readers;
pub mod users;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfed_aws::emulator::StsEmulator;
use keyfed_core::emulator::Latch;
use keyfed_keycloak::emulator::KeycloakEmulator;

pub use aws::ROLE;
pub use daemon::Daemon;
pub use http::{raw_exchange, status_of, text_of, wait_ready};
pub use leaks::{Known, SecretFile, Serves};
pub use users::curl_as;

/// A client secret with every character that Basic authentication must form-urlencode.
pub const SECRET: &str = "s3cr3t:with+plus%percent&amp space=eq";
pub const JWT_SECRET: &str = "hs256-shared-secret-of-enough-length-0123456789";
/// The `kid` of the RSA and EC client keys in the JWKS each *Signed JWT* client registers.
pub const RSA_KID: &str = "host-key-1";
pub const EC_KID: &str = "host-ec-1";
pub const AWS_AUD: &str = "sts.amazonaws.com";
pub const API_AUD: &str = "https://api.example.internal";

/// The outcome of one `keyfed` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "keyfed failed:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn fails_with(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected status:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts standard error holds `text`.
    pub fn says(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn prints(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }
}

/// A client's key pair for `private_key_jwt`.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

pub fn key_pair(alg: &'static rcgen::SignatureAlgorithm) -> KeyPair {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap_or_else(|e| panic!("keygen: {e}"));
    KeyPair {
        private_pem: pair.serialize_pem(),
        public_pem: pair.public_key_pem(),
    }
}

/// Every client id the tests configure (the realm's, and one it does not know).
pub const CLIENT_IDS: [&str; 9] = [
    "host-secret",
    "host-roles",
    "host-rs256",
    "host-rs256-cert",
    "host-ps256",
    "host-es256",
    "host-hs256",
    "no-service-account",
    "no-such-client",
];

/// Waits until `done` says yes, polling; fails the test, naming `what`, after a generous bound.
/// For events a test cannot be told of directly (a file written, a log line, a status).
pub async fn wait_until(what: &str, done: impl AsyncFnMut() -> bool) {
    wait_until_within(Duration::from_secs(15), what, done).await;
}

/// [`wait_until`] with a bound of the caller's, for events that come on a schedule (a refresh
/// due tens of seconds from now).
pub async fn wait_until_within(bound: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < bound,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` requests wait at `latch` (an emulator holding its answers); fails the test,
/// naming `what` (the requests expected there), after a generous bound.
pub async fn held(latch: &Latch, n: usize, what: &str) {
    const BOUND: Duration = Duration::from_secs(30);
    tokio::time::timeout(BOUND, latch.until_waiting(n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out after {BOUND:?} waiting for {what}: {} request(s) held at the latch, not {n}",
                latch.waiting()
            )
        });
}

/// Whether this test may act as other users (it runs as root, as on CI). Otherwise the test
/// fails, unless `KEYFED_TEST_ALLOW_SKIP=1` says to skip it knowingly (see [`cannot_run`]).
pub fn as_root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    cannot_run(
        test,
        "it must run as root to act as other users",
        "run the tests as root",
    );
    false
}

/// What a test does when what it needs is missing (`reason`): it fails, naming `remedy` —
/// unless `KEYFED_TEST_ALLOW_SKIP=1` says to skip it knowingly: then a `SKIPPED:` line goes
/// straight to standard error (past the test harness's capture) and the test returns.
pub fn cannot_run(test: &str, reason: &str, remedy: &str) {
    if std::env::var("KEYFED_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: {reason} (KEYFED_TEST_ALLOW_SKIP=1)"
        );
        return;
    }
    panic!("{test}: {reason}; {remedy}, or set KEYFED_TEST_ALLOW_SKIP=1 to skip it");
}

/// Everything one test needs: a folder, keys, a realm, and the secrets that must never leak.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rsa: KeyPair,
    pub ec: KeyPair,
    pub keycloak: Option<Arc<KeycloakEmulator>>,
    pub sts: Option<Arc<StsEmulator>>,
    /// Every secret this run knows; see `leaks.rs`.
    pub known: Known,
}

impl Fixture {
    pub fn new() -> Self {
        let fx = Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            rsa: key_pair(&rcgen::PKCS_RSA_SHA256),
            ec: key_pair(&rcgen::PKCS_ECDSA_P256_SHA256),
            keycloak: None,
            sts: None,
            known: Known::default(),
        };
        fx.known.add_client_secret(SECRET, &CLIENT_IDS);
        fx.known.add_client_secret(JWT_SECRET, &CLIENT_IDS);
        fx.known.add(
            "a line of the RSA private key",
            &leaks::key_middle(&fx.rsa.private_pem),
        );
        fx.known.add(
            "a line of the EC private key",
            &leaks::key_middle(&fx.ec.private_pem),
        );
        fx.known
            .add_file(fx.path("container-token"), SecretFile::Whole);
        // Whatever else the test configures (issue 11): see `leaks/config.rs`.
        fx.known.add_configs(fx.dir.path().to_path_buf());
        fx
    }

    /// Makes the secret files `keyfed demo --dir DIR` writes known: its client secret (for
    /// client `client_id`), credentials and tokens, and the container token.
    pub fn know_demo_secrets(&self, dir: &str, client_id: &str) {
        let at = |name: &str| self.path(dir).join(name);
        self.known.add_file(
            at("client-secret"),
            SecretFile::ClientSecret {
                client_id: client_id.to_owned(),
            },
        );
        self.known
            .add_file(at("aws/credentials"), SecretFile::AwsIni);
        self.known
            .add_file(at("aws/credential-process.json"), SecretFile::AwsJson);
        self.known.add_file(at("tokens/api.jwt"), SecretFile::Jwt);
        self.known
            .add_file(at("tokens/web-identity.jwt"), SecretFile::Jwt);
        self.known
            .add_file(at("container-token"), SecretFile::Whole);
        self.known
            .add_file(at("identity-header"), SecretFile::Whole);
        self.known.add_file(
            at("gcp/access-token.json"),
            SecretFile::JsonField("access_token"),
        );
        self.known.add_file(
            at("azure/management.json"),
            SecretFile::JsonField("accessToken"),
        );
        self.known
            .add_file(at("azure/federated-token.jwt"), SecretFile::Jwt);
        self.known
            .add_file(at("gcp/external-account.jwt"), SecretFile::Jwt);
    }

    /// Adds a secret the test learned (an IMDS session token, a credential it fetched).
    pub fn know(&self, what: &str, value: &str) {
        self.known.add(what, value);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file with mode 0600.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("write {name}: {e}"));
        set_mode(&path, 0o600);
        path
    }

    /// Writes the secret and key files the standard issuers refer to.
    pub fn write_credentials(&self) {
        self.write("client-secret", &format!("{SECRET}\n"));
        self.write("jwt-secret", JWT_SECRET);
        self.write("client-rsa.pem", &self.rsa.private_pem);
        self.write("client-ec.pem", &self.ec.private_pem);
    }

    /// Writes `keyfed.toml`; `{issuer}` in `body` is replaced with the emulator's issuer URL.
    pub fn config(&self, body: &str) -> PathBuf {
        let issuer = self
            .keycloak
            .as_ref()
            .map(|k| k.issuer_url())
            .unwrap_or_default();
        self.write("keyfed.toml", &body.replace("{issuer}", &issuer))
    }

    /// Every secret known right now; none may appear in any output of keyfed.
    pub fn secrets(&self) -> Vec<String> {
        self.known.secrets().into_iter().map(|s| s.value).collect()
    }

    /// Fails the test if a known secret is in this output of `process`.
    pub fn check_output(&self, process: &str, serves: Serves, stdout: &str, stderr: &str) {
        self.known.check(process, serves, stdout, stderr);
    }

    /// Runs `keyfed --config <dir>/keyfed.toml ARGS` with debug logging.
    pub async fn keyfed(&self, args: &[&str]) -> Run {
        self.keyfed_with(args, &[]).await
    }

    /// [`Fixture::keyfed`] with `env` added to the clean environment.
    pub async fn keyfed_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.keyfed_behind(&[], args, env).await
    }

    /// [`Fixture::keyfed`] behind `prefix` (e.g. `sh -c 'umask 077 && exec "$0" "$@"'`), with
    /// `env` added to the clean environment.
    pub async fn keyfed_behind(&self, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.path("keyfed.toml");
        self.keyfed_as(prefix, &with_config(&config, args), env)
            .await
    }

    /// [`Fixture::keyfed`] as `uid`/`gid` with no supplementary groups, with `env` added to the
    /// clean environment.
    pub async fn keyfed_as_user(
        &self,
        uid: u32,
        gid: u32,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let setpriv = users::setpriv(uid, gid);
        let prefix: Vec<&str> = setpriv.iter().map(String::as_str).collect();
        self.keyfed_behind(&prefix, args, env).await
    }

    /// Runs `keyfed ARGS` with a clean environment plus `env`, checking that no secret leaks.
    pub async fn keyfed_raw(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.keyfed_as(&[], args, env).await
    }

    /// Runs `PREFIX… keyfed ARGS` (e.g. `setpriv --reuid=… keyfed …`), checked like
    /// [`Fixture::keyfed_raw`].
    pub async fn keyfed_as(&self, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
        process::run(
            &format!("keyfed {}", args.join(" ")),
            self.keyfed_command(prefix, args, env),
            &self.known,
            Serves::for_keyfed(args),
        )
        .await
    }

    /// The one way tests start keyfed: the binary (behind `prefix`, if any) with a clean
    /// environment, HOME in the fixture's folder, debug logging, plus `env`.
    pub fn keyfed_command(
        &self,
        prefix: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let exe = env!("CARGO_BIN_EXE_keyfed");
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => tokio::process::Command::new(exe),
        };
        command
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("KEYFED_LOG", "debug")
            .envs(env.iter().copied())
            .current_dir(self.dir.path());
        command
    }

    /// Writes `keyfed-checked`, a stand-in for the keyfed binary for programs that run keyfed
    /// themselves (the AWS CLI's `credential_process`): it runs keyfed with debug logging and
    /// keeps each run's stdout and stderr in `wrapped/`, which [`Fixture::check_wrapped`] (and
    /// dropping the fixture) checks.
    pub fn keyfed_wrapper(&self) -> PathBuf {
        let runs = self.path("wrapped");
        std::fs::create_dir_all(&runs).unwrap_or_else(|e| panic!("{e}"));
        let script = format!(
            "#!/bin/sh\n\
             # keyfed as run by a program under test; its output is kept for the leak check.\n\
             out=\"{runs}/$$\"\n\
             KEYFED_LOG=debug \"{exe}\" \"$@\" >\"$out.stdout\" 2>\"$out.stderr\"\n\
             code=$?\n\
             printf '%s\\n' \"$*\" >\"$out.args\"\n\
             cat \"$out.stdout\"\n\
             exit $code\n",
            runs = runs.display(),
            exe = env!("CARGO_BIN_EXE_keyfed"),
        );
        let path = self.path("keyfed-checked");
        std::fs::write(&path, script).unwrap_or_else(|e| panic!("{e}"));
        set_mode(&path, 0o755);
        path
    }

    /// Checks the output of every keyfed run through [`Fixture::keyfed_wrapper`] so far; returns
    /// how many runs there were.
    pub fn check_wrapped(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.path("wrapped")) else {
            return 0;
        };
        let mut checked = 0;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "args") {
                continue;
            }
            let read =
                |ext: &str| std::fs::read_to_string(path.with_extension(ext)).unwrap_or_default();
            let args = read("args");
            let words: Vec<&str> = args.split_whitespace().collect();
            self.known.check(
                &format!("keyfed {} (run by a program under test)", args.trim()),
                Serves::for_keyfed(&words),
                &read("stdout"),
                &read("stderr"),
            );
            checked += 1;
        }
        checked
    }
}

/// `--config CONFIG ARGS…`.
fn with_config<'a>(config: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec!["--config", config.to_str().unwrap_or_default()];
    full.extend_from_slice(args);
    full
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check_wrapped();
        }
    }
}

/// Gives `path` a modification time long past, as a file left by an earlier run has.
pub fn backdate(path: &Path) {
    let long_ago = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(long_ago))
        .unwrap_or_else(|e| panic!("backdate {}: {e}", path.display()));
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Decodes the claims of a JWT printed by `keyfed token` (test-side, no verification).
pub fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = jwt.trim().split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("not a JWT {jwt:?}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("claims: {e}"))
}

/// An issuer block for client `client_id` using `auth` (with the matching credential keys).
pub fn issuer(name: &str, client_id: &str, auth: &str) -> String {
    let credential = match auth {
        "client_secret_basic" | "client_secret_post" => {
            "client_secret_file = \"client-secret\"".to_owned()
        }
        "client_secret_jwt" => "client_secret_file = \"jwt-secret\"".to_owned(),
        "private_key_jwt:RS256" | "private_key_jwt:PS256" => {
            let alg = auth.rsplit(':').next().unwrap_or_default();
            format!(
                "private_key_file = \"client-rsa.pem\"\nalgorithm = \"{alg}\"\nkey_id = \"{RSA_KID}\""
            )
        }
        "private_key_jwt:RS256:no-kid" => {
            "private_key_file = \"client-rsa.pem\"\nalgorithm = \"RS256\"".to_owned()
        }
        "private_key_jwt:ES256" => {
            "private_key_file = \"client-ec.pem\"\nalgorithm = \"ES256\"".to_owned()
        }
        other => panic!("unknown auth {other}"),
    };
    let method = auth.split(':').next().unwrap_or_default();
    format!(
        "[issuers.{name}]\nurl = \"{{issuer}}\"\nclient_id = \"{client_id}\"\nauth = \"{method}\"\n{credential}\n"
    )
}

/// A token target.
pub fn target(name: &str, issuer: &str, audience: &str, scope: &str) -> String {
    format!(
        "[targets.{name}]\nissuer = \"{issuer}\"\naudience = \"{audience}\"\nscope = \"{scope}\"\n"
    )
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}
