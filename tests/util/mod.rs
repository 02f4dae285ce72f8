//! Test fixtures: a Keycloak emulator with one client per authentication method, a temporary
//! folder for configuration and key files, and one way to start the real `keyfed` binary (and
//! anything that runs it) under the leak check of `leaks.rs`: every process's stdout and stderr
//! are checked against every secret the run knows (`process.rs`). Beside them: requests to the
//! local endpoint (`http.rs`) and programs run as another user (`users.rs`).

#![allow(dead_code)]

pub mod http;
pub mod keycloak;
pub mod leaks;
pub mod process;
pub mod users;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfed_aws::emulator::StsEmulator;
use keyfed_core::emulator::Latch;
use keyfed_keycloak::emulator::{Builder, ClientSpec, Credential, KeycloakEmulator, Realm};

pub use http::{raw_exchange, status_of, text_of, wait_ready};
pub use leaks::{Known, SecretFile, Serves};
pub use process::Process;
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
/// fails, unless `KEYFED_TEST_ALLOW_SKIP=1` says to skip it knowingly: then a `SKIPPED:` line
/// goes straight to standard error (past the test harness's capture) and this returns false.
pub fn as_root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let reason = "it must run as root to act as other users";
    if std::env::var("KEYFED_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: {reason} (KEYFED_TEST_ALLOW_SKIP=1)"
        );
        return false;
    }
    panic!("{test}: {reason}; run the tests as root, or set KEYFED_TEST_ALLOW_SKIP=1 to skip it");
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
    }

    /// Adds a secret the test learned (an IMDS session token, a credential it fetched).
    pub fn know(&self, what: &str, value: &str) {
        self.known.add(what, value);
    }

    /// The standard realm, as the real one of `keycloak.rs`: one client per authentication
    /// method, the same client scopes (plus `both`, with two audience mappers), a client keeping
    /// the `roles` scope and one without service accounts.
    pub fn realm(&self) -> Realm {
        let mut linked = keycloak::LINKED.to_vec();
        linked.push("both");
        let client =
            |id: &str, credential| ClientSpec::new(id, credential).optional_scopes(&linked);
        let signed = |id: &str, pair: &KeyPair, algorithm: &str, key_id: &str| {
            client(
                id,
                Credential::SignedJwt {
                    public_key_pem: pair.public_pem.clone(),
                    algorithm: algorithm.into(),
                    key_id: key_id.into(),
                },
            )
        };
        let mut realm = Realm::new("infra").scope("both", &[AWS_AUD, API_AUD]);
        for (scope, audience) in keycloak::SCOPES {
            realm = realm.scope(scope, audience.as_slice());
        }
        realm
            .client(client("host-secret", Credential::Secret(SECRET.into())))
            .client(signed("host-rs256", &self.rsa, "RS256", RSA_KID))
            // Keycloak names a key registered as a certificate itself.
            .client(signed(
                "host-rs256-cert",
                &self.rsa,
                "RS256",
                "derived-by-keycloak",
            ))
            .client(signed("host-ps256", &self.rsa, "PS256", RSA_KID))
            .client(signed("host-es256", &self.ec, "ES256", EC_KID))
            .client(client(
                "host-hs256",
                Credential::SecretJwt(JWT_SECRET.into()),
            ))
            .client(client("host-roles", Credential::Secret(SECRET.into())).keeps_roles_scope())
            .client(
                client("no-service-account", Credential::Secret(SECRET.into()))
                    .without_service_account(),
            )
    }

    /// Starts the emulator from `builder` (see [`Fixture::realm`]) and keeps it.
    pub async fn start(&mut self, builder: Builder) -> &KeycloakEmulator {
        let started = Arc::new(
            builder
                .start()
                .await
                .unwrap_or_else(|e| panic!("emulator: {e}")),
        );
        self.known.add_emulators(Some(&started), None);
        self.keycloak.insert(started)
    }

    pub async fn start_default(&mut self) -> &KeycloakEmulator {
        let realm = self.realm();
        self.start(KeycloakEmulator::builder(realm)).await
    }

    pub fn keycloak(&self) -> &KeycloakEmulator {
        self.keycloak
            .as_ref()
            .unwrap_or_else(|| panic!("start the emulator first"))
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

/// The role the standard STS emulator trusts the standard realm for.
pub const ROLE: &str = "app";

impl Fixture {
    /// Starts an STS emulator trusting the Keycloak emulator for audience sts.amazonaws.com.
    pub async fn start_sts(&mut self) -> &StsEmulator {
        let issuer = self.keycloak().issuer_url();
        let sts = StsEmulator::builder()
            .provider(keyfed_aws::emulator::OidcProvider {
                url: issuer.clone(),
                client_ids: vec![AWS_AUD.to_owned()],
            })
            .role(keyfed_aws::emulator::Role::new(ROLE, &issuer))
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}"));
        let sts = Arc::new(sts);
        self.known.add_emulators(None, Some(&sts));
        self.sts.insert(sts)
    }

    /// A fixture with the standard realm's Keycloak emulator and an STS emulator trusting it.
    pub async fn aws() -> Self {
        let mut fx = Self::new();
        fx.start_default().await;
        fx.start_sts().await;
        fx
    }

    pub fn sts(&self) -> &StsEmulator {
        self.sts
            .as_ref()
            .unwrap_or_else(|| panic!("start the STS emulator first"))
    }

    /// An AWS target against the STS emulator, with `outputs` (a TOML array body).
    pub fn aws_target(&self, name: &str, outputs: &str) -> String {
        format!(
            "[targets.{name}]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
             aws = {{ role_arn = \"{}\", region = \"us-east-1\", endpoint_url = \"{}\", session_name = \"{{target}}-{{hostname}}\" }}\n\
             outputs = [{outputs}]\n",
            self.sts().role_arn(ROLE),
            self.sts().endpoint_url()
        )
    }

    /// The standard issuer and `[control] socket` in the fixture's folder, plus `targets`.
    pub fn daemon_config(&self, targets: &str) -> PathBuf {
        self.write_credentials();
        self.config(&format!(
            "{}\n[control]\nsocket = \"keyfed.sock\"\n\n{targets}",
            issuer("corp", "host-secret", "client_secret_basic")
        ))
    }

    /// Starts a long-running `keyfed ARGS` in the fixture's folder (output captured and checked
    /// when it ends), killed when the handle is dropped.
    pub fn spawn(&self, args: &[&str]) -> Process {
        self.spawn_with(args, &[])
    }

    /// [`Fixture::spawn`] with `env` added to the clean environment.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Process {
        self.spawn_as(&[], args, env)
    }

    /// [`Fixture::spawn_with`] behind `prefix` (e.g. `prlimit --nofile=…`, `unshare …`).
    pub fn spawn_as(&self, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Process {
        process::spawn(
            &[prefix, &["keyfed"], args].concat().join(" "),
            self.keyfed_command(prefix, args, env),
            &self.known,
            Serves::for_keyfed(args),
        )
    }

    /// Starts `keyfed --config <dir>/keyfed.toml run` behind `prefix` (see
    /// [`Fixture::spawn_as`]) with `env`, without waiting for it (see [`Fixture::daemon`]).
    pub fn spawn_run(&self, prefix: &[&str], env: &[(&str, &str)]) -> Process {
        let config = self.path("keyfed.toml");
        self.spawn_as(prefix, &with_config(&config, &["run"]), env)
    }

    /// Starts `keyfed run` and waits for its control socket.
    pub async fn daemon(&self) -> Daemon {
        self.daemon_as(&[], &[]).await
    }

    /// [`Fixture::daemon`] behind `prefix` (see [`Fixture::spawn_as`]), with `env` added to the
    /// clean environment.
    pub async fn daemon_as(&self, prefix: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = self.spawn_run(prefix, env);
        let socket = self.path("keyfed.sock");
        let waiting = format!("{} to open {}", daemon.what(), socket.display());
        wait_until(&waiting, async || {
            if let Some(status) = daemon.exited() {
                panic!(
                    "{} exited ({status}):\n{}",
                    daemon.what(),
                    daemon.log_so_far()
                );
            }
            answers(&socket).await
        })
        .await;
        daemon
    }

    /// The running daemon's view of every target (`keyfed status --json`).
    pub async fn status_json(&self) -> serde_json::Value {
        let run = self.keyfed(&["status", "--json"]).await;
        run.ok();
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// `keyfed credential-process <target>` without a daemon (see [`Daemonless`]); creates its
    /// runtime folder.
    pub fn daemonless(&self, target: &str) -> Daemonless {
        let runtime = self.path("runtime");
        std::fs::create_dir_all(&runtime)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", runtime.display()));
        Daemonless {
            runtime,
            config: self.path("keyfed.toml"),
            target: target.to_owned(),
        }
    }
}

/// `keyfed --config <dir>/keyfed.toml credential-process <target>` as a program runs it when no
/// daemon answers: its cache lives under `XDG_RUNTIME_DIR`, here `runtime/` in the fixture's
/// folder. The arguments and environment for [`Fixture::keyfed_raw`] or [`Fixture::spawn_with`].
pub struct Daemonless {
    /// The runtime folder; keyfed keeps its cache in `keyfed/` below it.
    pub runtime: PathBuf,
    config: PathBuf,
    target: String,
}

impl Daemonless {
    pub fn args(&self) -> [&str; 4] {
        [
            "--config",
            self.config.to_str().unwrap_or_default(),
            "credential-process",
            &self.target,
        ]
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("XDG_RUNTIME_DIR", self.runtime.to_str().unwrap_or_default())]
    }
}

/// Whether a daemon answers a status request on `socket`: the control socket is bound before
/// the endpoint starts (so a second daemon fails before writing anything) but answers only once
/// everything is up.
pub async fn answers(socket: &Path) -> bool {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(b"\"status\"\n").await.is_err() {
        return false;
    }
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    reader.read_line(&mut line).await.is_ok() && line.contains("\"status\"")
}

/// A running `keyfed run`; killed when dropped.
pub type Daemon = Process;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Fixture {
    /// The standard issuer, an AWS target "aws" served on the container face at `/aws/app` and
    /// on IMDS, `extra_target_keys` added to that target, and an `[endpoint]` on a free port.
    /// Returns the endpoint's base URL.
    pub fn endpoint_config(&self, extra_target_keys: &str, extra_endpoint_keys: &str) -> String {
        let port = free_port();
        let target =
            self.aws_target("aws", "") + "container_path = \"/aws/app\"\n" + extra_target_keys;
        self.daemon_config(&format!(
            "{target}\n[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\nimds_target = \"aws\"\ncontainer_token_file = \"container-token\"\n{extra_endpoint_keys}"
        ));
        format!("http://127.0.0.1:{port}")
    }

    pub fn container_token(&self) -> String {
        std::fs::read_to_string(self.path("container-token")).unwrap_or_else(|e| panic!("{e}"))
    }
}
