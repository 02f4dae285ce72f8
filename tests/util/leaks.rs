//! The leak check: every secret a test run knows, and the check that none of them shows up in
//! the output of a `keyfed` process.
//!
//! A run knows more secrets as it goes: the fixed ones (client secrets raw, form-urlencoded and
//! inside a Basic `Authorization` value; a line from the middle of each private key), every
//! secret every emulator of the run issued (Keycloak's tokens, STS's secret keys and session
//! tokens, …: each emulator reports its own through [`IssuesSecrets`], read at the moment of
//! the check, so a daemon's log is checked against what was issued while it ran), secret files keyfed or the demo wrote
//! (container tokens, client secrets, credential files), and what the test learned itself (IMDS
//! session tokens, credentials from the endpoint or printed by `credential-process`).
//!
//! A process's stdout may carry the one credential its command exists to print (`keyfed token`,
//! `keyfed credential-process`); that credential is taken out of stdout before the check and
//! becomes a known secret for every other stream and process.
//!
//! Issue 11 widened it: the secrets each configuration in a test's folder names (`config.rs`),
//! secrets recognised by their shape whoever issued them (`shapes.rs`), and a tally of what the
//! whole suite scanned for the README's reliability table (`tally.rs`).

mod config;
mod shapes;
mod tally;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use keyfed_core::emulator::IssuesSecrets;

/// Secrets shorter than this are not checked: they would match by chance.
const MIN_LEN: usize = 8;

/// What a secret file holds, and so which parts of it are secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFile {
    /// The whole content, trimmed (a container token, a client secret).
    Whole,
    /// A client secret for `client_id`: also checked form-urlencoded and as Basic auth.
    ClientSecret { client_id: String },
    /// A JWT: its signature.
    Jwt,
    /// An AWS shared credentials file: every `aws_secret_access_key` and `aws_session_token`.
    AwsIni,
    /// A `credential_process` document: `SecretAccessKey` and `SessionToken`.
    AwsJson,
    /// A JSON document holding a token in the string `field` (`access_token` of a
    /// `gcp-access-token` output, `accessToken` of an `azure-access-token` one).
    JsonField(&'static str),
    /// A PEM private key: every line of its key bits.
    PrivateKey,
    /// An output file of any kind, its secret parts told by its content: a JWT's signature, an
    /// AWS profile's or document's keys, a JSON token's token, else the whole (a raw token).
    Output,
}

/// What a process's stdout legitimately carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Nothing secret.
    Nothing,
    /// One raw JWT (`keyfed token <target>`).
    Token,
    /// A `credential_process` document (`keyfed credential-process <target>`).
    AwsJson,
    /// An executable-sourced subject token response (`keyfed gcp-subject-token <target>`):
    /// its `id_token`.
    GcpSubjectToken,
    /// Exports of a target's credential (`keyfed env <target>`, issue 12): the values of its
    /// secret variables, in sh, fish or JSON syntax.
    Env,
}

impl Serves {
    /// What `keyfed ARGS` prints on stdout by design.
    pub fn for_keyfed(args: &[&str]) -> Self {
        let mut words = args.iter().enumerate().filter(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !matches!(args[i - 1], "--config" | "--dir"))
        });
        match words.next().map(|(_, a)| *a) {
            Some("credential-process") => Self::AwsJson,
            Some("gcp-subject-token") => Self::GcpSubjectToken,
            Some("env") => Self::Env,
            Some("token") if !args.contains(&"--decode") => Self::Token,
            _ => Self::Nothing,
        }
    }
}

/// One secret and a name for it that may appear in a failure message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub what: String,
    pub value: String,
}

#[derive(Default)]
struct Inner {
    fixed: Vec<Secret>,
    emulators: Vec<Arc<dyn IssuesSecrets>>,
    files: Vec<(PathBuf, SecretFile)>,
    /// Folders whose configuration files are read at each check (see `config.rs`).
    configs: Vec<PathBuf>,
    /// Leaks are planted here on purpose: its checks stay out of the suite's tally.
    planted: bool,
}

/// Every secret a test run knows; clones share one registry.
#[derive(Clone, Default)]
pub struct Known(Arc<Mutex<Inner>>);

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as keyfed sends it (RFC 6749 §2.3.1).
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        urlencode(client_id),
        urlencode(secret)
    ))
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The signature of a JWT: the part that makes it usable (header and claims are not secret, and
/// `keyfed token --decode` prints them).
fn jwt_signature(jwt: &str) -> Option<&str> {
    let parts: Vec<&str> = jwt.trim().split('.').collect();
    (parts.len() == 3).then(|| parts[2])
}

/// A line from the middle of a PEM body: real key bits (the first characters of a PEM body are
/// the same for every key of a kind), whole so it matches a key printed with or without breaks.
pub fn key_middle(pem: &str) -> String {
    let body: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .collect();
    body.get(body.len() / 2)
        .map(|l| l.trim().to_owned())
        .unwrap_or_default()
}

/// The string `field` of the JSON document `text`.
fn json_field(text: &str, field: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    doc[field].as_str().map(str::to_owned)
}

fn aws_json_secrets(text: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    ["SecretAccessKey", "SessionToken", "Token"]
        .iter()
        .filter_map(|k| doc[k].as_str().map(str::to_owned))
        .collect()
}

/// The variables of `keyfed env` whose values are secret.
const SECRET_VARIABLES: [&str; 5] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "CLOUDSDK_AUTH_ACCESS_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "IDENTITY_HEADER",
];

/// The secret values `keyfed env` printed: a JSON object's, or those of `export NAME=VALUE` and
/// `set -gx NAME VALUE` lines (keyfed's credentials need no quoting, but a quoted value is
/// taken without its quotes).
fn env_secrets(text: &str) -> Vec<String> {
    if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str(text.trim()) {
        return SECRET_VARIABLES
            .iter()
            .filter_map(|name| doc.get(*name)?.as_str().map(str::to_owned))
            .collect();
    }
    text.lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .or_else(|| line.strip_prefix("set -gx ")?.split_once(' '))?;
            SECRET_VARIABLES
                .contains(&rest.0)
                .then(|| rest.1.trim_matches('\'').to_owned())
        })
        .collect()
}

fn aws_ini_secrets(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| matches!(k.trim(), "aws_secret_access_key" | "aws_session_token"))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

impl Known {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a secret the test learned.
    pub fn add(&self, what: &str, value: &str) {
        let value = value.trim();
        if value.len() < MIN_LEN {
            return;
        }
        let mut inner = self.lock();
        if !inner.fixed.iter().any(|s| s.value == value) {
            inner.fixed.push(Secret {
                what: what.to_owned(),
                value: value.to_owned(),
            });
        }
    }

    /// Adds a client secret in each form it may take on the wire for `client_ids`.
    pub fn add_client_secret(&self, secret: &str, client_ids: &[&str]) {
        self.add("a client secret", secret);
        self.add("a client secret, form-urlencoded", &urlencode(secret));
        for id in client_ids {
            self.add(
                &format!("the Basic auth value of client {id}"),
                &basic_auth(id, secret),
            );
        }
    }

    /// An emulator whose issued secrets are read at each check (once, however often added).
    pub fn add_emulator<E: IssuesSecrets + 'static>(&self, emulator: &Arc<E>) {
        let mut inner = self.lock();
        let same = |known: &Arc<dyn IssuesSecrets>| {
            std::ptr::addr_eq(Arc::as_ptr(known), Arc::as_ptr(emulator))
        };
        if !inner.emulators.iter().any(same) {
            inner
                .emulators
                .push(Arc::clone(emulator) as Arc<dyn IssuesSecrets>);
        }
    }

    /// A file whose secret parts are read at each check (it may not exist yet).
    pub fn add_file(&self, path: PathBuf, kind: SecretFile) {
        let mut inner = self.lock();
        if !inner.files.iter().any(|(p, _)| *p == path) {
            inner.files.push((path, kind));
        }
    }

    /// Reads the configuration files in `dir` at each check for the secrets they name (see
    /// `config.rs`).
    pub fn add_configs(&self, dir: PathBuf) {
        let mut inner = self.lock();
        if !inner.configs.contains(&dir) {
            inner.configs.push(dir);
        }
    }

    /// Marks this registry as one whose leaks a test plants on purpose: its checks fail as
    /// ever, but stay out of the suite's tally (and so cannot withdraw its row).
    pub fn expect_leaks(&self) {
        self.lock().planted = true;
    }

    /// Every secret known right now.
    pub fn secrets(&self) -> Vec<Secret> {
        let inner = self.lock();
        let mut all = inner.fixed.clone();
        let mut seen: std::collections::HashSet<String> =
            all.iter().map(|s| s.value.clone()).collect();
        let mut push = |what: String, value: &str| {
            let value = value.trim();
            if value.len() >= MIN_LEN && seen.insert(value.to_owned()) {
                all.push(Secret {
                    what,
                    value: value.to_owned(),
                });
            }
        };
        for emulator in &inner.emulators {
            for secret in emulator.issued_secrets() {
                push(emulator.secret_kind().to_owned(), &secret);
            }
        }
        let mut files = inner.files.clone();
        for config in inner.configs.iter().flat_map(|d| config::configs_in(d)) {
            let named = config::named_by(&config);
            for (what, value) in named.values {
                push(what, &value);
            }
            files.extend(named.files);
        }
        for (path, kind) in &files {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let what = format!("the secret in {}", path.display());
            for value in file_secrets(kind, &text) {
                push(what.clone(), &value);
            }
        }
        all
    }

    /// The names of the known secrets in `text`.
    pub fn found_in(&self, text: &str) -> Vec<String> {
        found(&self.secrets(), text)
    }

    /// Fails the test if a known secret, or a secret's shape, is in `stdout` (less what the
    /// command serves by design) or in `stderr` of `process`; what it served becomes a known
    /// secret. Every check counts in the suite's tally (see `tally.rs`).
    pub fn check(&self, process: &str, serves: Serves, stdout: &str, stderr: &str) {
        let mut scrubbed = stdout.to_owned();
        let served: Vec<String> = match serves {
            Serves::Nothing => Vec::new(),
            Serves::Token => jwt_signature(stdout)
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default(),
            Serves::AwsJson => aws_json_secrets(stdout),
            Serves::GcpSubjectToken => json_field(stdout, "id_token")
                .and_then(|jwt| jwt_signature(&jwt).map(str::to_owned))
                .into_iter()
                .collect(),
            Serves::Env => env_secrets(stdout),
        };
        for value in &served {
            scrubbed = scrubbed.replace(value.as_str(), "<served>");
            self.add(&format!("a credential served by {process}"), value);
        }
        let secrets = self.secrets();
        let found: Vec<(&str, Vec<String>)> = [("stdout", scrubbed.as_str()), ("stderr", stderr)]
            .into_iter()
            .map(|(stream, text)| {
                let mut found = found(&secrets, text);
                found.extend(shapes::found_in(text));
                (stream, found)
            })
            .collect();
        let count = found.iter().map(|(_, f)| f.len()).sum();
        if !self.lock().planted {
            let values: Vec<String> = secrets.into_iter().map(|s| s.value).collect();
            tally::record(&[stdout, stderr], &values, count);
        }
        for (stream, found) in found {
            assert!(
                found.is_empty(),
                "secrets leaked into the {stream} of {process}: {found:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
            );
        }
    }
}

/// The names of those of `secrets` in `text`.
fn found(secrets: &[Secret], text: &str) -> Vec<String> {
    secrets
        .iter()
        .filter(|s| text.contains(&s.value))
        .map(|s| s.what.clone())
        .collect()
}

/// The secret parts of a file of `kind` holding `text`.
fn file_secrets(kind: &SecretFile, text: &str) -> Vec<String> {
    match kind {
        SecretFile::Whole => vec![text.to_owned()],
        SecretFile::ClientSecret { client_id } => {
            // keyfed drops one trailing newline; the secret is what is left.
            let secret = text.strip_suffix('\n').unwrap_or(text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            vec![
                text.to_owned(),
                urlencode(secret),
                basic_auth(client_id, secret),
            ]
        }
        SecretFile::Jwt => jwt_signature(text)
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default(),
        SecretFile::AwsIni => aws_ini_secrets(text),
        SecretFile::AwsJson => aws_json_secrets(text),
        SecretFile::JsonField(field) => json_field(text, field).into_iter().collect(),
        SecretFile::PrivateKey => config::key_lines(text),
        SecretFile::Output => {
            if let Some(signature) = jwt_signature(text) {
                return vec![signature.to_owned()];
            }
            let ini = aws_ini_secrets(text);
            if !ini.is_empty() {
                return ini;
            }
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text.trim()) {
                let mut values = aws_json_secrets(text);
                for field in ["access_token", "accessToken", "token", "id_token"] {
                    values.extend(doc[field].as_str().map(str::to_owned));
                }
                return values;
            }
            // A raw token is one word; anything else (a user's file of comments before keyfed
            // wrote its profile) holds nothing secret.
            let word = text.trim();
            if word.contains(char::is_whitespace) {
                Vec::new()
            } else {
                vec![word.to_owned()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An emulator of a cloud the leak check has never heard of.
    struct NewCloud(Mutex<Vec<String>>);

    impl IssuesSecrets for NewCloud {
        fn secret_kind(&self) -> &'static str {
            "a token the new cloud's emulator issued"
        }

        fn issued_secrets(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    #[test]
    fn any_emulator_reports_what_it_issued_when_the_check_runs() {
        let known = Known::default();
        let cloud = Arc::new(NewCloud(Mutex::new(Vec::new())));
        known.add_emulator(&cloud);
        known.add_emulator(&cloud);
        // Issued after the emulator was added: read at the check, not when added.
        cloud
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push("ya29.issued-by-the-new-cloud".to_owned());
        assert_eq!(
            known.found_in("log: ya29.issued-by-the-new-cloud"),
            ["a token the new cloud's emulator issued"],
            "found once, by its emulator's name"
        );
    }

    #[test]
    fn the_subcommand_decides_what_stdout_may_carry() {
        let s = Serves::for_keyfed;
        assert_eq!(s(&["--config", "x", "token", "aws"]), Serves::Token);
        assert_eq!(
            s(&["--config", "x", "token", "aws", "--decode"]),
            Serves::Nothing
        );
        assert_eq!(s(&["credential-process", "aws"]), Serves::AwsJson);
        assert_eq!(s(&["--config", "token", "status"]), Serves::Nothing);
        assert_eq!(s(&["demo", "--dir", "token"]), Serves::Nothing);
        assert_eq!(
            s(&["--config", "x", "env", "aws", "--shell", "json"]),
            Serves::Env
        );
        assert_eq!(s(&["exec", "aws", "--", "env"]), Serves::Nothing);
    }
}
