//! Test fixtures: a Keycloak emulator with one client per authentication method, a temporary
//! folder for configuration and key files, and a runner for the real `keyfed` binary that fails
//! the test if any secret it knows of shows up in the binary's output.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use keyfed_keycloak::emulator::{Builder, ClientSpec, Credential, KeycloakEmulator, Realm};

/// A client secret with every character that Basic authentication must form-urlencode.
pub const SECRET: &str = "s3cr3t:with+plus%percent&amp space=eq";
pub const JWT_SECRET: &str = "hs256-shared-secret-of-enough-length-0123456789";
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

/// Everything one test needs: a folder, keys, a realm, and the secrets that must never leak.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rsa: KeyPair,
    pub ec: KeyPair,
    pub keycloak: Option<KeycloakEmulator>,
    pub sts: Option<keyfed_aws::emulator::StsEmulator>,
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            rsa: key_pair(&rcgen::PKCS_RSA_SHA256),
            ec: key_pair(&rcgen::PKCS_ECDSA_P256_SHA256),
            keycloak: None,
            sts: None,
        }
    }

    /// The standard realm: one client per authentication method, and audience scopes.
    pub fn realm(&self) -> Realm {
        let scopes = ["aws-audience", "api-audience", "both"];
        let client =
            |id: &str, credential| ClientSpec::new(id, credential).optional_scopes(&scopes);
        Realm::new("infra")
            .scope("aws-audience", &[AWS_AUD])
            .scope("api-audience", &[API_AUD])
            .scope("both", &[AWS_AUD, API_AUD])
            .client(client("host-secret", Credential::Secret(SECRET.into())))
            .client(client(
                "host-rs256",
                Credential::SignedJwt {
                    public_key_pem: self.rsa.public_pem.clone(),
                    algorithm: "RS256".into(),
                },
            ))
            .client(client(
                "host-ps256",
                Credential::SignedJwt {
                    public_key_pem: self.rsa.public_pem.clone(),
                    algorithm: "PS256".into(),
                },
            ))
            .client(client(
                "host-es256",
                Credential::SignedJwt {
                    public_key_pem: self.ec.public_pem.clone(),
                    algorithm: "ES256".into(),
                },
            ))
            .client(client(
                "host-hs256",
                Credential::SecretJwt(JWT_SECRET.into()),
            ))
            .client(
                client("no-service-account", Credential::Secret(SECRET.into()))
                    .without_service_account(),
            )
    }

    /// Starts the emulator from `builder` (see [`Fixture::realm`]) and keeps it.
    pub async fn start(&mut self, builder: Builder) -> &KeycloakEmulator {
        let started = builder
            .start()
            .await
            .unwrap_or_else(|e| panic!("emulator: {e}"));
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

    /// Every secret keyfed knows in these tests; none may appear in its output.
    pub fn secrets(&self) -> Vec<String> {
        let pem_body = |pem: &str| {
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        };
        vec![
            SECRET.to_owned(),
            JWT_SECRET.to_owned(),
            pem_body(&self.rsa.private_pem)[..40].to_owned(),
            pem_body(&self.ec.private_pem)[..40].to_owned(),
        ]
    }

    /// Runs `keyfed --config <dir>/keyfed.toml ARGS` with debug logging.
    pub async fn keyfed(&self, args: &[&str]) -> Run {
        let config = self.path("keyfed.toml");
        let mut full = vec!["--config", config.to_str().unwrap_or_default()];
        full.extend_from_slice(args);
        self.keyfed_raw(&full, &[]).await
    }

    /// Runs `keyfed ARGS` with a clean environment plus `env`, checking that no secret leaks.
    pub async fn keyfed_raw(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyfed"))
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("KEYFED_LOG", "debug")
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run keyfed: {e}"));
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for secret in self.secrets() {
            assert!(
                !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
                "a secret leaked into keyfed's output:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
        run
    }
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
                "private_key_file = \"client-rsa.pem\"\nalgorithm = \"{alg}\"\nkey_id = \"host-key-1\""
            )
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
    pub async fn start_sts(&mut self) -> &keyfed_aws::emulator::StsEmulator {
        let issuer = self.keycloak().issuer_url();
        let sts = keyfed_aws::emulator::StsEmulator::builder()
            .provider(keyfed_aws::emulator::OidcProvider {
                url: issuer.clone(),
                client_ids: vec![AWS_AUD.to_owned()],
            })
            .role(keyfed_aws::emulator::Role::new(ROLE, &issuer))
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}"));
        self.sts.insert(sts)
    }

    pub fn sts(&self) -> &keyfed_aws::emulator::StsEmulator {
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

    /// Starts a long-running `keyfed ARGS` in the fixture's folder (output captured), killed
    /// when the handle is dropped.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keyfed"))
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("KEYFED_LOG", "debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start keyfed {args:?}: {e}"))
    }

    /// Starts `keyfed run` and waits for its control socket.
    pub async fn daemon(&self) -> Daemon {
        let config = self.path("keyfed.toml");
        let child = self.spawn(&["--config", config.to_str().unwrap_or_default(), "run"]);
        let socket = self.path("keyfed.sock");
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Daemon {
                    child: Some(child),
                    secrets: self.secrets(),
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("keyfed run did not open {}", socket.display());
    }
}

/// A running `keyfed run`; killed when dropped.
pub struct Daemon {
    child: Option<tokio::process::Child>,
    secrets: Vec<String>,
}

impl Daemon {
    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .and_then(|p| rustix::process::Pid::from_raw(p as i32));
        if let Some(pid) = pid {
            rustix::process::kill_process(pid, signal).unwrap_or_else(|e| panic!("kill: {e}"));
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit code and log.
    pub async fn stop(mut self) -> Run {
        self.signal(rustix::process::Signal::TERM);
        let child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("already stopped"));
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
                .await
                .unwrap_or_else(|_| panic!("keyfed run did not stop on SIGTERM"))
                .unwrap_or_else(|e| panic!("{e}"));
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for secret in &self.secrets {
            assert!(
                !run.stderr.contains(secret.as_str()),
                "a secret leaked into the daemon's log:\n{}",
                run.stderr
            );
        }
        run
    }
}

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
