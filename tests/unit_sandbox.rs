//! The shipped unit and the example configurations agree (issue 7, defect 5): every file in
//! `config/` is checked against the environment and sandbox `systemd/keyfed.service` gives
//! keyfed, read from the unit file itself (User=, RuntimeDirectory=, ReadWritePaths=,
//! LoadCredential=, ProtectHome=, PrivateTmp=, Environment=, UMask=, LimitNOFILE=) plus the
//! drop-in a configuration documents in its comments (`#   LoadCredential=…`).
//!
//! - `keyfed check`, run as the unit's user would run it (not root, `HOME=/`, no
//!   `XDG_RUNTIME_DIR`, the unit's `RUNTIME_DIRECTORY` and `CREDENTIALS_DIRECTORY`), resolves
//!   every path the configuration writes (outputs, control socket, container token file) under
//!   the unit's writable paths, and every secret it reads under the credentials the unit loads
//!   or /etc/keyfed — nothing under a hidden home or the host's /tmp.
//! - `keyfed run` of each configuration (its upstreams pointed at the emulators, its listen port
//!   freed) in an approximation of the sandbox: a mount namespace where everything is read-only
//!   but the runtime directory (ProtectSystem=strict), homes hidden (ProtectHome=yes), a private
//!   /tmp, /proc mounted with `subset=pid,hidepid=invisible` (ProcSubset=pid,
//!   ProtectProc=invisible), the unit's user with no capabilities and
//!   no_new_privs, the unit's umask and file limit. It writes every output, serves the control
//!   socket and the endpoint (with per-user access, whose lookup cannot use /proc/net there), and
//!   consumers in an output's group can read it.
//!
//! Not reproduced without a running systemd (this container has none): the seccomp filters
//! (SystemCallFilter=, RestrictAddressFamilies=, so AF_NETLINK being allowed is not proven
//! here), the other Protect*= and Restrict*= switches, PrivateDevices=, and systemd creating
//! the runtime and credentials directories itself (the test creates them as the unit says).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::emulator::TestCa;
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal_set};
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};

use crate::util::{Fixture, SECRET, Serves, as_root_or_skip, process, wait_until};

/// The uid and gid standing for the unit's `User=keyfed` (any unprivileged id works: keyfed
/// never looks its own name up).
const UNIT_UID: u32 = 61_873;

/// Where systemd puts a unit's credentials.
const CREDENTIALS_DIRECTORY: &str = "/run/credentials/keyfed.service";

/// The folders `ProtectHome=yes` (and `tmpfs`) hide.
const HOMES: [&str; 3] = ["/home", "/root", "/run/user"];

/// `systemd/keyfed.service`'s `[Service]` settings, in order, plus drop-ins.
#[derive(Clone)]
struct Unit {
    service: Vec<(String, String)>,
}

impl Unit {
    fn shipped() -> Self {
        let text = std::fs::read_to_string(repo("systemd/keyfed.service"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut section = String::new();
        let mut service = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
            } else if section == "[Service]"
                && !line.starts_with('#')
                && let Some((key, value)) = line.split_once('=')
            {
                service.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        assert!(!service.is_empty(), "no [Service] section in the unit");
        Self { service }
    }

    /// The unit with the drop-in `config` documents: comment lines `#   Key=value` naming a
    /// setting of the unit's `[Service]` section.
    fn with_drop_in_of(&self, config: &str) -> Self {
        let mut unit = self.clone();
        for line in config.lines() {
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            if let Some((key, value)) = rest.trim().split_once('=')
                && ["LoadCredential", "ReadWritePaths", "Environment"].contains(&key)
                && rest.starts_with("   ")
            {
                unit.service.push((key.to_owned(), value.trim().to_owned()));
            }
        }
        unit
    }

    /// Every value of `key`; an empty assignment clears the ones before it, as in systemd.
    fn all(&self, key: &str) -> Vec<&str> {
        let mut values = Vec::new();
        for (k, v) in &self.service {
            if k == key {
                if v.is_empty() {
                    values.clear();
                } else {
                    values.push(v.as_str());
                }
            }
        }
        values
    }

    fn last(&self, key: &str) -> Option<&str> {
        self.all(key).last().copied()
    }

    fn words(&self, key: &str) -> Vec<String> {
        self.all(key)
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    fn runtime_dirs(&self) -> Vec<PathBuf> {
        self.words("RuntimeDirectory")
            .iter()
            .map(|d| Path::new("/run").join(d))
            .collect()
    }

    /// What keyfed may write under ProtectSystem=strict.
    fn writable(&self) -> Vec<PathBuf> {
        assert_eq!(self.last("ProtectSystem"), Some("strict"));
        let mut paths: Vec<PathBuf> = self
            .words("ReadWritePaths")
            .iter()
            .map(|p| PathBuf::from(p.trim_start_matches(['-', '+'])))
            .collect();
        paths.extend(self.runtime_dirs());
        paths
    }

    /// The credential ids `LoadCredential=` hands over.
    fn credentials(&self) -> Vec<String> {
        self.all("LoadCredential")
            .iter()
            .map(|v| v.split(':').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Folders keyfed cannot see at all.
    fn hidden(&self) -> Vec<PathBuf> {
        let mut hidden = Vec::new();
        if matches!(self.last("ProtectHome"), Some("yes" | "true" | "tmpfs")) {
            hidden.extend(HOMES.iter().map(PathBuf::from));
        }
        if matches!(self.last("PrivateTmp"), Some("yes" | "true")) {
            // keyfed's /tmp is its own: nothing of the host's is there, nothing it writes
            // there reaches anyone.
            hidden.extend(["/tmp", "/var/tmp"].map(PathBuf::from));
        }
        hidden
    }

    /// The environment systemd gives keyfed: what the unit sets, and what systemd adds for a
    /// unit with `User=` (the home of a sysusers user declared with home "-" is "/"), never
    /// `XDG_RUNTIME_DIR`.
    fn environment(&self, credentials_directory: &str) -> Vec<(String, String)> {
        let user = self.last("User").unwrap_or("root").to_owned();
        let mut env = vec![
            ("USER".to_owned(), user.clone()),
            ("LOGNAME".to_owned(), user),
            ("HOME".to_owned(), "/".to_owned()),
            (
                "CREDENTIALS_DIRECTORY".to_owned(),
                credentials_directory.to_owned(),
            ),
        ];
        let runtime: Vec<String> = self
            .runtime_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        if !runtime.is_empty() {
            env.push(("RUNTIME_DIRECTORY".to_owned(), runtime.join(":")));
        }
        for assignment in self.words("Environment") {
            if let Some((k, v)) = assignment.trim_matches('"').split_once('=') {
                env.push((k.to_owned(), v.to_owned()));
            }
        }
        env
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every `config/*.toml` with its text.
fn examples() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(repo("config"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, text)
        })
        .collect();
    found.sort();
    assert!(found.len() >= 4, "found {} examples", found.len());
    found
}

fn chown_all(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("{e}"));
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{e}")) {
            chown_all(&entry.unwrap_or_else(|e| panic!("{e}")).path(), uid);
        }
    }
}

/// The credentials directory systemd would make: one file per loaded credential (a PEM private
/// key for a `.pem` id, the client secret otherwise), 0400 in a 0500 folder owned by the
/// unit's user.
fn credentials_dir(fx: &Fixture, unit: &Unit, at: &Path) {
    std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{e}"));
    for id in unit.credentials() {
        let content = if id.ends_with(".pem") {
            fx.rsa.private_pem.clone()
        } else {
            format!("{SECRET}\n")
        };
        let file = at.join(&id);
        std::fs::write(&file, content).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    chown_all(at, UNIT_UID);
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o500))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Every path the resolved configuration (as `keyfed check` prints it) writes and reads.
struct Paths {
    writes: Vec<(String, PathBuf)>,
    secrets: Vec<(String, PathBuf)>,
    reads: Vec<(String, PathBuf)>,
}

fn paths_of(resolved: &str) -> Paths {
    let doc: toml::Table = toml::from_str(resolved)
        .unwrap_or_else(|e| panic!("keyfed check printed no TOML: {e}\n{resolved}"));
    let mut paths = Paths {
        writes: Vec::new(),
        secrets: Vec::new(),
        reads: Vec::new(),
    };
    let str_at = |v: Option<&toml::Value>| v.and_then(toml::Value::as_str).map(str::to_owned);
    for (name, issuer) in doc
        .get("issuers")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
    {
        for key in ["client_secret", "private_key"] {
            if let Some(shown) = str_at(issuer.get(key))
                && let Some((_, file)) = shown.split_once("(from file ")
            {
                let file = file.strip_suffix(')').unwrap_or(file);
                paths
                    .secrets
                    .push((format!("issuers.{name}.{key}"), PathBuf::from(file)));
            }
        }
        if let Some(ca) = str_at(issuer.get("ca_file")) {
            paths
                .reads
                .push((format!("issuers.{name}.ca_file"), PathBuf::from(ca)));
        }
    }
    for (name, target) in doc
        .get("targets")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
    {
        let outputs = target.get("outputs").and_then(toml::Value::as_array);
        for (i, output) in outputs.into_iter().flatten().enumerate() {
            if let Some(path) = str_at(output.get("path")) {
                paths
                    .writes
                    .push((format!("targets.{name}.outputs[{i}]"), PathBuf::from(path)));
            }
        }
        if let Some(ca) = str_at(target.get("aws").and_then(|a| a.get("ca_file"))) {
            paths
                .reads
                .push((format!("targets.{name}.aws.ca_file"), PathBuf::from(ca)));
        }
    }
    let socket = str_at(doc.get("control").and_then(|c| c.get("socket")))
        .unwrap_or_else(|| panic!("no control socket in\n{resolved}"));
    paths
        .writes
        .push(("control.socket".to_owned(), PathBuf::from(socket)));
    if let Some(token) = str_at(
        doc.get("endpoint")
            .and_then(|e| e.get("container_token_file")),
    ) {
        paths.writes.push((
            "endpoint.container_token_file".to_owned(),
            PathBuf::from(token),
        ));
    }
    paths
}

fn under(path: &Path, folders: &[PathBuf]) -> bool {
    folders.iter().any(|f| path.starts_with(f))
}

/// issue 7: as `User=keyfed` without XDG_RUNTIME_DIR the default control socket (and the
/// container token file beside it) fell under a home the unit makes read-only or hides, and an
/// example read a key the unit never hands over.
#[tokio::test]
async fn every_example_configuration_fits_the_shipped_unit() {
    if !as_root_or_skip("every_example_configuration_fits_the_shipped_unit") {
        return;
    }
    let shipped = Unit::shipped();
    let mut problems = Vec::new();
    for (file, text) in examples() {
        let unit = shipped.with_drop_in_of(&text);
        let fx = Fixture::new();
        let credentials = fx.path("credentials");
        credentials_dir(&fx, &unit, &credentials);
        let config = fx.write("keyfed.toml", &text);
        chown_all(&config, UNIT_UID);
        chown_all(fx.dir.path(), UNIT_UID);
        let env = unit.environment(credentials.to_str().unwrap_or_default());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = fx
            .keyfed_as_user(UNIT_UID, UNIT_UID, &["check"], &env)
            .await;
        let shown = file.display();
        if run.code != Some(0) {
            problems.push(format!(
                "{shown}: keyfed check as the unit's user failed:\n{}",
                run.stderr
            ));
            continue;
        }
        let paths = paths_of(&run.stdout);
        let (writable, hidden) = (unit.writable(), unit.hidden());
        for (key, path) in &paths.writes {
            if !under(path, &writable) || under(path, &hidden) {
                problems.push(format!(
                    "{shown}: {key} = {} is not under the unit's writable paths {writable:?}",
                    path.display()
                ));
            }
        }
        let loaded = unit.credentials();
        for (key, path) in &paths.secrets {
            let in_credentials = path.parent() == Some(credentials.as_path())
                && path
                    .file_name()
                    .is_some_and(|n| loaded.iter().any(|id| n == id.as_str()));
            if !in_credentials && !path.starts_with("/etc/keyfed") {
                problems.push(format!(
                    "{shown}: {key} reads {}, which is neither a credential the unit loads \
                     ({loaded:?}) nor in /etc/keyfed",
                    path.display()
                ));
            }
        }
        for (key, path) in &paths.reads {
            if under(path, &hidden) {
                problems.push(format!(
                    "{shown}: {key} = {} is hidden by the unit ({hidden:?})",
                    path.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `systemd/consumer-aws.conf` points a consumer at a file `config/aws.toml` writes, in a way
/// that consumer can reach: the runtime folder lets others pass through.
#[test]
fn the_consumer_drop_in_names_an_output_of_the_aws_example() {
    let drop_in = std::fs::read_to_string(repo("systemd/consumer-aws.conf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let file = drop_in
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("Environment=AWS_SHARED_CREDENTIALS_FILE=")
        })
        .next()
        .unwrap_or_else(|| panic!("no AWS_SHARED_CREDENTIALS_FILE in\n{drop_in}"));
    let example: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo("config/aws.toml")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let outputs = outputs_of(&example);
    assert!(
        outputs.iter().any(|(p, _)| p == Path::new(file)),
        "{file} is not an output of config/aws.toml: {outputs:?}"
    );
    let unit = Unit::shipped();
    assert!(under(Path::new(file), &unit.runtime_dirs()));
    let mode = unit
        .last("RuntimeDirectoryMode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o755);
    assert!(
        mode & 0o001 != 0,
        "RuntimeDirectoryMode={mode:04o}: a consumer with a group of its own cannot reach {file}"
    );
}

/// issue 7: with no runtime folder and no usable home, the default used to be
/// `/tmp/.cache/keyfed/keyfed.sock`, a folder any local user could create first. Now there is
/// no default: the configuration must name the socket. With systemd's RUNTIME_DIRECTORY the
/// first of its folders is used.
#[tokio::test]
async fn a_user_without_a_runtime_folder_must_name_the_socket() {
    if !as_root_or_skip("a_user_without_a_runtime_folder_must_name_the_socket") {
        return;
    }
    let fx = Fixture::new();
    fx.write(
        "keyfed.toml",
        "[issuers.corp]\nurl = \"https://sso.example.com/realms/infra\"\nclient_id = \"c\"\n\
         client_secret_env = \"KEYFED_TEST_SECRET\"\n\
         [targets.api]\nissuer = \"corp\"\naudience = \"api\"\n",
    );
    chown_all(fx.dir.path(), UNIT_UID);
    // As the unit's user.
    let check =
        async |env: &[(&str, &str)]| fx.keyfed_as_user(UNIT_UID, UNIT_UID, &["check"], env).await;
    let secret = ("KEYFED_TEST_SECRET", "a-secret-in-the-environment");
    fx.know("the secret in KEYFED_TEST_SECRET", secret.1);
    check(&[secret, ("HOME", "")])
        .await
        .fails_with(3)
        .says("control.socket: no safe default for the control socket")
        .says("set [control] socket");
    check(&[secret, ("HOME", "/")])
        .await
        .fails_with(3)
        .says("set [control] socket");
    check(&[
        secret,
        ("HOME", ""),
        ("RUNTIME_DIRECTORY", "/run/keyfed-test:/run/other"),
    ])
    .await
    .ok()
    .prints("socket = \"/run/keyfed-test/keyfed.sock\"");
    // `keyfed status` and `credential-process` find the daemon the same way, and say so too.
    fx.keyfed_as_user(UNIT_UID, UNIT_UID, &["status"], &[("HOME", "")])
        .await
        .fails_with(3)
        .says("set [control] socket");
}

/// issue 7: the daemon created the socket's folder with whatever mode the umask left and used an
/// existing one whoever owned it; a folder another user controls is now refused, naming it.
#[tokio::test]
async fn the_socket_folder_must_be_keyfeds_own() {
    if !as_root_or_skip("the_socket_folder_must_be_keyfeds_own") {
        return;
    }
    let fx = Fixture::new();
    fx.write_credentials();
    for (name, uid, mode, says) in [
        ("theirs", 12345, 0o700, "owned by uid 12345"),
        ("open", 0, 0o1777, "its mode 1777 lets others"),
    ] {
        let dir = fx.path(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
        fx.write(
            "keyfed.toml",
            &format!(
                "{}[targets.api]\nissuer = \"corp\"\naudience = \"api\"\n\
                 [control]\nsocket = \"{name}/keyfed.sock\"\n",
                crate::util::issuer("corp", "host-secret", "client_secret_basic")
                    .replace("{issuer}", "http://127.0.0.1:9/realms/infra")
            ),
        );
        let run = fx.spawn_run(&[], &[]).wait().await;
        assert_ne!(run.code, Some(0), "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "refusing the control socket's folder {}",
                dir.display()
            )) && run.stderr.contains(says),
            "{}",
            run.stderr
        );
        assert!(!dir.join("keyfed.sock").exists());
    }
    // A missing folder is made keyfed's own, whatever the umask.
    let config = fx.path("keyfed.toml");
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    fx.write("keyfed.toml", &text.replace("open/", "new/run/"));
    let daemon = fx.spawn_run(&[], &[]);
    let socket = fx.path("new/run/keyfed.sock");
    wait_until("the control socket", async || socket.exists()).await;
    let mode = std::fs::metadata(fx.path("new/run")).map(|m| m.mode() & 0o7777);
    assert_eq!(mode.ok(), Some(0o700));
    daemon.stop().await;
}

/// The configuration `example` with its upstreams pointed at the emulators and its endpoint on
/// free ports; everything else as shipped.
/// The user an example's endpoint target is limited to in the sandbox run.
const SERVED_TO: &str = "65534";

/// The pool provider and service account of `config/gcp.toml`.
const GCP_PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak";
const GCP_SERVICE_ACCOUNT: &str = "app@my-project.iam.gserviceaccount.com";

/// The tenant and app of `config/azure.toml`.
const AZURE_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const AZURE_CLIENT: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

/// Where an example's upstreams are replaced by the emulators.
struct Upstreams<'a> {
    keycloak: &'a str,
    sts: &'a str,
    /// Google's STS and IAM Credentials.
    gcp: &'a str,
    /// Entra ID, over TLS, and its CA's PEM as the sandbox sees the file.
    entra: &'a str,
    entra_ca: &'a str,
}

/// `example` with its upstreams replaced by the emulators.
fn pointed_at(example: &str, to: &Upstreams<'_>) -> String {
    let Upstreams {
        keycloak,
        sts,
        gcp,
        entra,
        entra_ca,
    } = *to;
    let mut doc: toml::Table = toml::from_str(example).unwrap_or_else(|e| panic!("{e}"));
    if let Some(issuers) = doc.get_mut("issuers").and_then(toml::Value::as_table_mut) {
        for (_, issuer) in issuers.iter_mut() {
            if let Some(t) = issuer.as_table_mut() {
                t.insert("url".into(), keycloak.into());
            }
        }
    }
    let gce_target = doc
        .get("endpoint")
        .and_then(|e| e.get("gce_target"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned);
    if let Some(targets) = doc.get_mut("targets").and_then(toml::Value::as_table_mut) {
        for (name, target) in targets.iter_mut() {
            if let Some(aws) = target.get_mut("aws").and_then(toml::Value::as_table_mut) {
                aws.insert("endpoint_url".into(), sts.into());
            }
            if let Some(google) = target.get_mut("gcp").and_then(toml::Value::as_table_mut) {
                google.insert("sts_url".into(), format!("{gcp}/v1/token").into());
                google.insert("iam_url".into(), gcp.into());
            }
            if let Some(azure) = target.get_mut("azure").and_then(toml::Value::as_table_mut) {
                azure.insert("authority_host".into(), entra.into());
                azure.insert("ca_file".into(), entra_ca.into());
            }
            // Served on the endpoint: limited to one unprivileged user, so the sandboxed
            // peer-uid lookup must find that very user (root would always pass).
            let served = gce_target.as_deref() == Some(name.as_str());
            if let Some(t) = target
                .as_table_mut()
                .filter(|t| served || t.contains_key("container_path"))
            {
                t.insert(
                    "allow_users".into(),
                    toml::Value::Array(vec![SERVED_TO.into()]),
                );
            }
        }
    }
    if let Some(endpoint) = doc.get_mut("endpoint").and_then(toml::Value::as_table_mut) {
        let port = crate::util::free_port();
        let listen = endpoint
            .get_mut("listen")
            .and_then(toml::Value::as_array_mut);
        for entry in listen.into_iter().flatten() {
            let address = match entry {
                toml::Value::String(s) => s,
                toml::Value::Table(t) => match t.get_mut("address") {
                    Some(toml::Value::String(s)) => s,
                    _ => continue,
                },
                _ => continue,
            };
            if let Some((host, _)) = address.rsplit_once(':') {
                *address = format!("{host}:{port}");
            }
        }
    }
    toml::to_string(&doc).unwrap_or_else(|e| panic!("{e}"))
}

/// Sets up the sandbox and runs `env -i ENV… PROGRAM ARGS…` in it; see the module's doc.
const SANDBOX: &str = r#"
set -eu
outer=$1; uid=$2; exe=$3; nofile=$4; umask_of_unit=$5; shift 5
# A private /run with the unit's runtime and credentials directories (bound from the test's
# folder, so the test sees what keyfed writes), the configuration and the binary.
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/keyfed /run/credentials/keyfed.service /run/keyfed-test
touch /run/keyfed-test.bin
mount --bind "$outer/run-keyfed" /run/keyfed
mount --bind "$outer/credentials" /run/credentials/keyfed.service
mount --bind "$outer/etc" /run/keyfed-test
mount --bind "$exe" /run/keyfed-test.bin
# PrivateTmp=yes, ProtectHome=yes
mount -t tmpfs -o mode=1777 tmpfs /tmp
for d in /home /root; do
    if [ -d "$d" ]; then mount -t tmpfs -o ro,mode=0000 tmpfs "$d"; fi
done
# ProtectSystem=strict: every mount read-only but the API file systems and the runtime folder.
awk '{print $5}' /proc/self/mountinfo | while read -r mp; do
    case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/run/keyfed|/tmp|*\\*) continue;; esac
    mount -o remount,bind,ro "$mp"
done
for probe in /etc/.keyfed-probe /run/.keyfed-probe /run/keyfed-test/.keyfed-probe; do
    if touch "$probe" 2>/dev/null; then echo "sandbox: $probe is writable" >&2; exit 99; fi
done
# ProcSubset=pid, ProtectProc=invisible: a proc instance of this mount namespace's own.
mount -t proc -o subset=pid,hidepid=invisible proc /proc
if [ -e /proc/net ]; then echo "sandbox: /proc/net is visible" >&2; exit 99; fi
umask "$umask_of_unit"
exec prlimit --nofile="$nofile" setpriv --reuid="$uid" --regid="$uid" --clear-groups \
    --no-new-privs --bounding-set=-all --inh-caps=-all -- env -i "$@"
"#;

/// What a target should have written, from the configuration as shipped.
fn outputs_of(example: &toml::Table) -> Vec<(PathBuf, Option<String>)> {
    let mut outputs = Vec::new();
    for target in example
        .get("targets")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(|t| t.values())
    {
        let list = target.get("outputs").and_then(toml::Value::as_array);
        for output in list.into_iter().flatten() {
            if let Some(path) = output.get("path").and_then(toml::Value::as_str) {
                let mode = output
                    .get("mode")
                    .and_then(toml::Value::as_str)
                    .map(str::to_owned);
                outputs.push((PathBuf::from(path), mode));
            }
        }
    }
    outputs
}

/// issue 7: the examples as the shipped unit runs them: keyfed starts, writes what it should
/// where the unit lets it, and serves the control socket and the endpoint.
#[tokio::test]
async fn every_example_configuration_runs_in_the_units_sandbox() {
    if !as_root_or_skip("every_example_configuration_runs_in_the_units_sandbox") {
        return;
    }
    let shipped = Unit::shipped();
    let runtime = shipped.runtime_dirs();
    assert_eq!(
        runtime,
        [PathBuf::from("/run/keyfed")],
        "the sandbox binds one"
    );
    let runtime_mode = shipped
        .last("RuntimeDirectoryMode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o755);
    let nofile = shipped.last("LimitNOFILE").unwrap_or("1024").to_owned();
    let umask = shipped.last("UMask").unwrap_or("0022").to_owned();

    let mut fx = Fixture::new();
    let scopes = [
        "aws-audience",
        "api-audience",
        "gcp-audience",
        "azure-audience",
    ];
    let gcp_audience = format!("https://iam.googleapis.com/{GCP_PROVIDER}");
    let host_web =
        ClientSpec::new("host-web-01", Credential::Secret(SECRET.into())).optional_scopes(&scopes);
    let realm = Realm::new("infra")
        .scope("aws-audience", &["sts.amazonaws.com"])
        .scope("api-audience", &["https://api.example.com"])
        .scope("gcp-audience", &[&gcp_audience])
        .scope("azure-audience", &[keyfed_azure::config::AUDIENCE])
        .client(host_web.clone())
        .client(
            ClientSpec::new(
                "host-db-02",
                Credential::SignedJwt {
                    public_key_pem: fx.rsa.public_pem.clone(),
                    algorithm: "RS256".into(),
                    key_id: "derived-by-keycloak".into(),
                },
            )
            .optional_scopes(&scopes),
        );
    fx.known.add_client_secret(SECRET, &["host-web-01"]);
    fx.start(KeycloakEmulator::builder(realm)).await;
    let issuer = fx.keycloak().issuer_url();
    let sts = Arc::new(
        StsEmulator::builder()
            .provider(OidcProvider::new(&issuer, &["sts.amazonaws.com"]))
            .role(Role::new("onprem-web", &issuer))
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    fx.known.add_emulator(&sts);
    let provider = PoolProvider::new(GCP_PROVIDER, &issuer);
    let gcp = Arc::new(
        GcpEmulator::builder()
            .service_account(
                ServiceAccount::new(GCP_SERVICE_ACCOUNT).bind(&principal_set(provider.pool())),
            )
            .provider(provider)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    fx.known.add_emulator(&gcp);
    // The federated credential names host-web-01's service account, whose `sub` the emulator
    // picked: read it from a token.
    let sub = host_web.service_account_id.clone();
    let ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
    let entra = Arc::new(
        EntraEmulator::builder()
            .tenant(AZURE_TENANT)
            .app(
                App::new(AZURE_CLIENT)
                    .federated_credential(FederatedCredential::new(&issuer, &sub)),
            )
            .tls(&ca)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    fx.known.add_emulator(&entra);
    // Consumers reach the runtime folder through the fixture's folder.
    crate::util::set_mode(fx.dir.path(), 0o711);

    for (file, text) in examples() {
        let shown = file.display().to_string();
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let unit = shipped.with_drop_in_of(&text);
        let outer = fx.path(&name);
        let run_dir = outer.join("run-keyfed");
        let etc = outer.join("etc");
        for dir in [&run_dir, &etc] {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        credentials_dir(&fx, &unit, &outer.join("credentials"));
        std::fs::write(
            etc.join("keyfed.toml"),
            pointed_at(
                &text,
                &Upstreams {
                    keycloak: &issuer,
                    sts: &sts.endpoint_url(),
                    gcp: &gcp.base_url(),
                    entra: &entra.authority_host(),
                    entra_ca: "/run/keyfed-test/entra-ca.pem",
                },
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(etc.join("entra-ca.pem"), ca.ca_pem()).unwrap_or_else(|e| panic!("{e}"));
        chown_all(&run_dir, UNIT_UID);
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(runtime_mode))
            .unwrap_or_else(|e| panic!("{e}"));
        for dir in [&outer, &etc] {
            crate::util::set_mode(dir, 0o755);
        }
        let inside =
            |path: &Path| {
                run_dir.join(path.strip_prefix("/run/keyfed").unwrap_or_else(|_| {
                    panic!("{shown}: {} is outside /run/keyfed", path.display())
                }))
            };
        let example: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let outputs = outputs_of(&example);
        for (path, _) in &outputs {
            let kind = if path.ends_with("credentials") {
                crate::util::SecretFile::AwsIni
            } else if path.extension().is_some_and(|e| e == "json") {
                crate::util::SecretFile::AwsJson
            } else {
                crate::util::SecretFile::Jwt
            };
            fx.known.add_file(inside(path), kind);
        }
        let container_token = inside(Path::new("/run/keyfed/container-token"));
        fx.known
            .add_file(container_token.clone(), crate::util::SecretFile::Whole);

        let mut command = tokio::process::Command::new("unshare");
        command
            // No fork anywhere: unshare, sh, prlimit, setpriv and env each exec the next, so
            // the process the test holds is keyfed itself.
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                SANDBOX,
                "sandbox",
            ])
            .arg(&outer)
            .arg(UNIT_UID.to_string())
            .arg(env!("CARGO_BIN_EXE_keyfed"))
            .arg(format!("{nofile}:{nofile}"))
            .arg(&umask)
            .env_clear();
        for (k, v) in unit.environment(CREDENTIALS_DIRECTORY) {
            command.arg(format!("{k}={v}"));
        }
        command.args([
            "KEYFED_LOG=debug",
            "/run/keyfed-test.bin",
            "--config",
            "/run/keyfed-test/keyfed.toml",
            "run",
        ]);
        let mut daemon = process::spawn(
            &format!("keyfed run ({shown}, in the unit's sandbox)"),
            command,
            &fx.known,
            Serves::Nothing,
        );
        let socket = run_dir.join("keyfed.sock");
        let mut expected: Vec<PathBuf> = outputs.iter().map(|(p, _)| inside(p)).collect();
        expected.push(socket.clone());
        if example.contains_key("endpoint") {
            expected.push(container_token.clone());
        }
        wait_until(
            &format!("{shown}: every output and the socket"),
            async || {
                if let Some(status) = daemon.exited() {
                    panic!(
                        "{shown}: keyfed exited ({status}):\n{}",
                        daemon.log_so_far()
                    );
                }
                expected.iter().all(|p| p.exists())
            },
        )
        .await;

        // The outputs carry their mode under the unit's umask, and whoever the mode lets in (a
        // member of the file's group) can read them through the runtime folder.
        for (path, mode) in &outputs {
            let at = inside(path);
            let meta = std::fs::metadata(&at).unwrap_or_else(|e| panic!("{e}"));
            let want = mode
                .as_deref()
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0o600);
            assert_eq!(meta.mode() & 0o777, want, "{shown}: {}", path.display());
            assert_eq!(meta.uid(), UNIT_UID, "{shown}: {}", path.display());
            if want & 0o040 != 0 {
                let read = crate::util::users::as_user(65534, meta.gid(), "cat")
                    .arg(&at)
                    .output()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    read.status.success(),
                    "{shown}: a member of group {} cannot read {}: {}",
                    meta.gid(),
                    path.display(),
                    String::from_utf8_lossy(&read.stderr)
                );
            }
        }

        // The control socket answers, from outside the sandbox.
        let client = outer.join("client.toml");
        std::fs::write(
            &client,
            format!("[control]\nsocket = \"{}\"\n", socket.display()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let client = client.to_str().unwrap_or_default();
        wait_until(&format!("{shown}: every target fresh"), async || {
            let status = fx
                .keyfed_raw(&["--config", client, "status", "--json"], &[])
                .await;
            status.ok();
            let targets: serde_json::Value =
                serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}"));
            let states: Vec<String> = targets
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["state"].as_str().map(str::to_owned))
                .collect();
            assert!(
                !states
                    .iter()
                    .any(|s| s == "backing off" || s == "stopped" || s == "expired"),
                "{shown}: {}",
                status.stdout
            );
            !states.is_empty() && states.iter().all(|s| s == "fresh")
        })
        .await;

        // The endpoint serves a target limited to one unprivileged user: the per-user lookup
        // tells that user from another without /proc/net.
        if let Some(endpoint) = toml::from_str::<toml::Table>(
            &std::fs::read_to_string(etc.join("keyfed.toml")).unwrap_or_default(),
        )
        .ok()
        .and_then(|d| d.get("endpoint").cloned())
        {
            let address = endpoint["listen"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            // The container face where a target has a path on it, else the GCE face.
            let container_path = example["targets"]
                .as_table()
                .and_then(|t| t.values().find_map(|t| t.get("container_path")))
                .and_then(toml::Value::as_str);
            let (url, header) = match container_path {
                Some(path) => {
                    let token = std::fs::read_to_string(&container_token).unwrap_or_default();
                    (
                        format!("http://{address}{path}"),
                        format!("Authorization: {token}"),
                    )
                }
                None => {
                    assert!(
                        endpoint.get("gce_target").is_some(),
                        "{shown}: no container_path and no gce_target"
                    );
                    (
                        format!(
                            "http://{address}/computeMetadata/v1/instance/service-accounts/default/token"
                        ),
                        "Metadata-Flavor: Google".to_owned(),
                    )
                }
            };
            let (code, body) =
                crate::util::users::curl_as(65534, 65534, &["-H", &header, &url]).await;
            for secret in serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .iter()
                .flat_map(|d| {
                    [
                        d["SecretAccessKey"].as_str(),
                        d["Token"].as_str(),
                        d["access_token"].as_str(),
                    ]
                })
                .flatten()
            {
                fx.know("credentials served by the endpoint", secret);
            }
            assert_eq!(code, "200", "{shown}: {url} as uid {SERVED_TO}: {body}");
            let (code, body) =
                crate::util::users::curl_as(12345, 12345, &["-H", &header, &url]).await;
            assert_eq!(code, "403", "{shown}: {url} as uid 12345: {body}");
        }

        let run = daemon.stop().await;
        assert_eq!(run.code, Some(0), "{shown}:\n{}", run.stderr);
        assert!(
            !run.stderr.contains("Read-only file system") && !run.stderr.contains("denied"),
            "{shown}:\n{}",
            run.stderr
        );
    }
}
