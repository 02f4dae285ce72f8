//! Issue 12, item 5: the Keycloak setup `keyfed trust <target> --keycloak` prints, applied as
//! printed to the real Keycloak `tests/run` starts — the `kcadm.sh` script run by bash with the
//! server's own `kcadm.sh`, and the partial realm import by the commands its notes print (`jq`
//! and `kcadm.sh`), run by bash as printed — after
//! which keyfed gets, for every target kind (AWS, Google Cloud, Azure, a bare token), a token
//! whose `aud` is exactly that target's audience, signed RS256 and living the lifespan printed;
//! `keyfed doctor` then passes every check of every target, the clouds' exchanges made with
//! emulators trusting the realm. The client authenticates with a secret (`client_secret_basic`)
//! in the script's realm, and with a key (`private_key_jwt`) and a secret Keycloak generates
//! (`client_secret_jwt`) in the import's. Besides: the three formats
//! are well formed, whatever the configuration holds (no server needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::emulator::TestCa;
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider};
use serde_json::{Value, json};

use crate::util::azure::TENANT;
use crate::util::keycloak::{AZURE_AUD, Server};
use crate::util::leaks::Serves;
use crate::util::{API_AUD, AWS_AUD, Fixture, JWT_SECRET, Run, process};

const GCP_PROVIDER: &str =
    "projects/123456789/locations/global/workloadIdentityPools/onprem/providers/keycloak";

/// The Entra app the Azure targets are for.
const AZURE_APP: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

/// The targets of one client, one of each kind, each with its own scope; the Azure one writes a
/// federated token file, which needs tokens living more than Keycloak's default 5 minutes.
fn targets(issuer: &str, prefix: &str) -> String {
    targets_against(issuer, prefix, &CloudKeys::default())
}

/// Keys added to each cloud's table: where its (emulated) endpoints are.
#[derive(Default)]
struct CloudKeys {
    aws: String,
    gcp: String,
    azure: String,
}

/// [`targets`], each cloud's table with `keys` added.
fn targets_against(issuer: &str, prefix: &str, keys: &CloudKeys) -> String {
    let CloudKeys { aws, gcp, azure } = keys;
    format!(
        "[targets.{prefix}aws]\nissuer = \"{issuer}\"\nscope = \"aws-audience\"\nstrict_audience = true\n\
         aws = {{ role_arn = \"arn:aws:iam::123456789012:role/app\", region = \"eu-west-1\"{aws} }}\n\n\
         [targets.{prefix}gcp]\nissuer = \"{issuer}\"\nscope = \"gcp-audience\"\nstrict_audience = true\n\
         gcp = {{ provider = \"{GCP_PROVIDER}\"{gcp} }}\n\n\
         [targets.{prefix}azure]\nissuer = \"{issuer}\"\nscope = \"azure-audience\"\nstrict_audience = true\n\
         azure = {{ tenant_id = \"{TENANT}\", client_id = \"{AZURE_APP}\"{azure} }}\n\
         outputs = [ {{ kind = \"azure-federated-token\", path = \"out/{prefix}federated-token.jwt\" }} ]\n\n\
         [targets.{prefix}api]\nissuer = \"{issuer}\"\naudience = \"{API_AUD}\"\nscope = \"api-audience\"\nstrict_audience = true\n\n"
    )
}

/// The cloud emulators trusting the real Keycloak's realm `issuer` for the service account
/// `sub`, each as the target kind's configuration asks (AWS: the role `app` and the client ID
/// sts.amazonaws.com; Google: the provider, its default audience; Entra ID: the app, over TLS
/// from a test CA written to `entra-ca.pem`); kept running while held.
struct Clouds {
    sts: Arc<StsEmulator>,
    gcp: Arc<GcpEmulator>,
    entra: Arc<EntraEmulator>,
}

impl Clouds {
    async fn start(fx: &Fixture, issuer: &str, sub: &str) -> Self {
        let sts = StsEmulator::builder()
            .provider(OidcProvider::new(issuer, &[AWS_AUD]))
            .role(Role::new("app", issuer))
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}"));
        let gcp = GcpEmulator::builder()
            .provider(PoolProvider::new(GCP_PROVIDER, issuer))
            .start()
            .await
            .unwrap_or_else(|e| panic!("gcp emulator: {e}"));
        let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
        let entra = EntraEmulator::builder()
            .tenant(TENANT)
            .tls(&ca)
            .app(App::new(AZURE_APP).federated_credential(FederatedCredential::new(issuer, sub)))
            .start()
            .await
            .unwrap_or_else(|e| panic!("entra emulator: {e}"));
        fx.write("entra-ca.pem", ca.ca_pem());
        let clouds = Self {
            sts: Arc::new(sts),
            gcp: Arc::new(gcp),
            entra: Arc::new(entra),
        };
        fx.known.add_emulator(&clouds.sts);
        fx.known.add_emulator(&clouds.gcp);
        fx.known.add_emulator(&clouds.entra);
        clouds
    }

    fn keys(&self) -> CloudKeys {
        CloudKeys {
            aws: format!(", endpoint_url = \"{}\"", self.sts.endpoint_url()),
            gcp: format!(
                ", sts_url = \"{}\", iam_url = \"{}\"",
                self.gcp.sts_url(),
                self.gcp.base_url()
            ),
            azure: format!(
                ", authority_host = \"{}\", ca_file = \"entra-ca.pem\"",
                self.entra.authority_host()
            ),
        }
    }
}

/// Each target kind and the audience its token must carry, alone.
fn expected() -> [(&'static str, String); 4] {
    [
        ("aws", AWS_AUD.to_owned()),
        ("gcp", format!("https://iam.googleapis.com/{GCP_PROVIDER}")),
        ("azure", AZURE_AUD.to_owned()),
        ("api", API_AUD.to_owned()),
    ]
}

/// Checks `keyfed token <target> --decode`: `aud` exactly `audience` (one string), RS256, living
/// `lifespan` seconds; returns its `sub`.
async fn assert_token(fx: &Fixture, target: &str, audience: &str, lifespan: &str) -> String {
    let run = fx.keyfed(&["token", target, "--decode"]).await;
    run.ok();
    let decoded: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{target}: {e}: {}", run.stdout));
    let claims = &decoded["claims"];
    assert_eq!(claims["aud"], json!(audience), "{target}: {decoded}");
    assert_eq!(decoded["header"]["alg"], "RS256", "{target}: {decoded}");
    let lived = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lived.to_string(), lifespan, "{target}: {decoded}");
    let sub = claims["sub"].as_str().unwrap_or_default();
    assert!(!sub.is_empty(), "{target}: {decoded}");
    sub.to_owned()
}

/// The server's `kcadm.sh`, with a configuration of this test's own, logged in once as the
/// bootstrap admin.
struct Kcadm {
    bin: PathBuf,
    /// kcadm.sh keeps its login in `~/.keycloak`, `~` being Java's `user.home`.
    home: PathBuf,
}

impl Kcadm {
    async fn login(fx: &Fixture, server: &Server) -> Self {
        let home_dir = std::env::var("KEYFED_TEST_KEYCLOAK_HOME").unwrap_or_else(|_| {
            panic!("KEYFED_TEST_KEYCLOAK_HOME (Keycloak's folder, for kcadm.sh) is unset; tests/run sets it")
        });
        let kcadm = Self {
            bin: Path::new(&home_dir).join("bin"),
            home: fx.path("kcadm"),
        };
        std::fs::create_dir_all(&kcadm.home).unwrap_or_else(|e| panic!("{e}"));
        let admin = std::env::var("KEYFED_TEST_KEYCLOAK_ADMIN").unwrap_or_default();
        let (user, password) = admin
            .split_once(':')
            .unwrap_or_else(|| panic!("KEYFED_TEST_KEYCLOAK_ADMIN must be user:password"));
        // The first run leaves a class-data archive the later ones start from, a second faster.
        let archive = format!("-XX:ArchiveClassesAtExit={}", kcadm.archive().display());
        let mut login = kcadm.command("kcadm.sh", &archive);
        login.args([
            "config",
            "credentials",
            "--server",
            &server.url,
            "--realm",
            "master",
            "--user",
            user,
            "--password",
            password,
        ]);
        let run = process::run(
            "kcadm.sh config credentials",
            login,
            &fx.known,
            Serves::Nothing,
        )
        .await;
        run.ok();
        kcadm
    }

    fn archive(&self) -> PathBuf {
        self.home.join("kcadm.jsa")
    }

    /// `program` with kcadm.sh on PATH and the JVM settings: this test's `user.home`, the
    /// quickest start for a short-lived client (C1 only, serial GC), and `jvm` besides.
    fn command(&self, program: &str, jvm: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .env_clear()
            .env("PATH", path)
            .env(
                "KC_OPTS",
                format!(
                    "-Duser.home={} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC {jvm}",
                    self.home.display()
                ),
            )
            .current_dir(&self.home);
        command
    }

    /// Runs `script` with bash, as an operator would paste it.
    async fn run(&self, fx: &Fixture, what: &str, script: &Path) -> Run {
        let mut bash = self.command(
            "bash",
            &format!(
                "-Xshare:auto -XX:SharedArchiveFile={}",
                self.archive().display()
            ),
        );
        bash.arg(script);
        process::run(what, bash, &fx.known, Serves::Nothing).await
    }
}

/// `"access.token.lifespan": "<n>"` as printed.
fn printed_lifespan(text: &str) -> String {
    let key = "\"access.token.lifespan\": \"";
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no access.token.lifespan in {text}"));
    text[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

/// Item 5, the script: `keyfed trust <target> --keycloak` for every target kind of one client,
/// each printed script run by bash against a fresh realm, one of them twice; then the tokens,
/// and `keyfed doctor`.
#[tokio::test]
async fn the_printed_kcadm_script_sets_up_every_target_kind_issue_12() {
    let test = "the_printed_kcadm_script_sets_up_every_target_kind_issue_12";
    let Some(server) = Server::from_env(test) else {
        return;
    };
    let started = Instant::now();
    let fx = Fixture::new();
    fx.write_credentials();
    let realm = format!("setup-script-{}", std::process::id());
    server
        .create("", json!({ "realm": realm, "enabled": true }))
        .await;
    let issuer = format!("{}/realms/{realm}", server.url);
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n{}",
            crate::util::issuer("corp", "host-secret", "client_secret_basic")
                .replace("{issuer}", &issuer),
            targets("corp", "")
        ),
    );
    let realm_made = started.elapsed().as_secs_f64();
    let kcadm = Kcadm::login(&fx, &server).await;
    let logged_in = started.elapsed().as_secs_f64();
    let mut lifespan = String::new();
    let mut scripts = Vec::new();
    for (target, _) in expected() {
        let trust = fx.keyfed(&["trust", target, "--keycloak"]).await;
        trust.ok();
        lifespan = printed_lifespan(&trust.stdout);
        let script = fx.write(&format!("{target}.sh"), &trust.stdout);
        kcadm
            .run(&fx, &format!("the {target} script"), &script)
            .await
            .ok()
            .prints(&format!("client scope {target}-audience: created"));
        scripts.push(script);
    }
    let scripts_run = started.elapsed().as_secs_f64();
    // Again, when all exists: everything is found and updated.
    kcadm
        .run(&fx, "the aws script, again", &scripts[0])
        .await
        .ok()
        .prints("client host-secret: updated")
        .prints("client scope aws-audience: updated");
    assert_eq!(
        lifespan, "1200",
        "an azure-federated-token output needs > 720 s"
    );
    let mut sub = String::new();
    for (target, audience) in expected() {
        sub = assert_token(&fx, target, &audience, &lifespan).await;
    }
    // Doctor, every target: the clouds are emulators trusting this realm and its client.
    let tokens_got = started.elapsed().as_secs_f64();
    let clouds = Clouds::start(&fx, &issuer, &sub).await;
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n{}",
            crate::util::issuer("corp", "host-secret", "client_secret_basic")
                .replace("{issuer}", &issuer),
            targets_against("corp", "", &clouds.keys())
        ),
    );
    doctor_passes(&fx).await;
    let _ = writeln_stderr(&format!(
        "{test}: {:.1} s: realm made at {realm_made:.1} s, kcadm.sh logged in at {logged_in:.1} s, \
         4 scripts run by {scripts_run:.1} s, then one again and 4 tokens by {tokens_got:.1} s, \
         then doctor of every target",
        started.elapsed().as_secs_f64()
    ));
}

/// `keyfed doctor --json` passes every check of every target (exit 0), each exactly as
/// expected: the configuration, the secret, Keycloak (its clock read from the token's `iat`,
/// since Keycloak 26 sends no `Date` header), the token; for the clouds' targets the claims and
/// the exchange with the emulators, the realm's plain-http issuer fine for those stand-ins on
/// this host only, and the reminder of the URLs a real cloud fetches.
async fn doctor_passes(fx: &Fixture) {
    let run = fx.keyfed(&["doctor", "--json"]).await;
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("doctor: {e}: {}\n{}", run.stdout, run.stderr));
    let check = |target: &str, id: &str| -> Value {
        report["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == target)
            .and_then(|t| t["checks"].as_array())
            .into_iter()
            .flatten()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no check {id} of {target} in {report:#}"))
    };
    let keycloak = [
        "secret",
        "keycloak.reachable",
        "keycloak.tls",
        "keycloak.discovery",
        "keycloak.clock",
        "keycloak.jwks",
        "token",
    ];
    let claims = [
        "claims.aud",
        "claims.alg",
        "claims.kid",
        "claims.iss",
        "claims.sub",
        "claims.lifetime",
    ];
    for (target, _) in expected() {
        let cloud = target != "api";
        let mut ids: Vec<&str> = keycloak.to_vec();
        if cloud {
            ids.extend(claims);
            if target == "aws" {
                ids.push("claims.size");
            }
            ids.extend(["exchange", "public-urls"]);
        }
        let got: Vec<Value> = report["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == target)
            .and_then(|t| t["checks"].as_array())
            .cloned()
            .unwrap_or_default();
        let got_ids: Vec<&str> = got.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(got_ids, ids, "{target}: {report:#}");
        for id in &ids {
            let expected = if *id == "public-urls" { "info" } else { "ok" };
            assert_eq!(
                check(target, id)["status"],
                expected,
                "{target} {id}: {report:#}"
            );
        }
        let clock = check(target, "keycloak.clock");
        assert!(
            clock["detail"]
                .as_str()
                .is_some_and(|d| d.contains("the token's iat")),
            "{target}: {clock}"
        );
        if cloud {
            let iss = check(target, "claims.iss");
            let detail = iss["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("is not https") && detail.contains("stand-in"),
                "{target}: {iss}"
            );
        }
    }
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stderr(), "{text}")
}

/// The commands the notes of `keyfed trust --keycloak --format json` print on standard error
/// (their indented lines), in order, as a script.
fn printed_commands(notes: &str) -> String {
    let lines: Vec<&str> = notes
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .collect();
    assert!(!lines.is_empty(), "no commands in the notes:\n{notes}");
    lines.join("\n") + "\n"
}

/// Item 5, the import: two clients' documents (a private key; a secret JWT) each saved as
/// `keycloak.json` and applied to a fresh realm by the commands the notes print (`jq` and the
/// server's `kcadm.sh`: the client scopes, then the partial import), run by bash as printed;
/// the generated secret written where keyfed reads it by the notes' command too; then the
/// tokens of every target kind.
#[tokio::test]
async fn the_printed_partial_import_sets_up_every_target_kind_issue_12() {
    let test = "the_printed_partial_import_sets_up_every_target_kind_issue_12";
    let Some(server) = Server::from_env(test) else {
        return;
    };
    let started = Instant::now();
    let fx = Fixture::new();
    fx.write_credentials();
    let realm = format!("setup-import-{}", std::process::id());
    server
        .create("", json!({ "realm": realm, "enabled": true }))
        .await;
    let issuer = format!("{}/realms/{realm}", server.url);
    // keyfed must read a secret file to load its configuration; Keycloak's replaces this one.
    fx.write("jwt-secret", JWT_SECRET);
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n{}\n{}[targets.hs]\nissuer = \"hs\"\naudience = \"{API_AUD}\"\nscope = \"api-audience\"\nstrict_audience = true\n",
            crate::util::issuer("corp", "host-rs256", "private_key_jwt:RS256:no-kid"),
            crate::util::issuer("hs", "host-hs256", "client_secret_jwt"),
            targets("corp", ""),
        )
        .replace("{issuer}", &issuer),
    );
    let kcadm = Kcadm::login(&fx, &server).await;
    let logged_in = started.elapsed().as_secs_f64();
    let mut lifespans = Vec::new();
    for (target, client) in [("aws", "host-rs256"), ("hs", "host-hs256")] {
        let trust = fx
            .keyfed(&["trust", target, "--keycloak", "--format", "json"])
            .await;
        trust.ok().says("partialImport");
        let document: Value =
            serde_json::from_str(&trust.stdout).unwrap_or_else(|e| panic!("{e}: {}", trust.stdout));
        assert_eq!(document["clients"][0]["clientId"], client);
        lifespans.push(printed_lifespan(&trust.stdout));
        // Saved where the notes say, and their commands run there.
        std::fs::write(kcadm.home.join("keycloak.json"), &trust.stdout)
            .unwrap_or_else(|e| panic!("{e}"));
        let script = fx.write(
            &format!("import-{target}.sh"),
            &printed_commands(&trust.stderr),
        );
        let ran = kcadm
            .run(&fx, &format!("the {target} import's commands"), &script)
            .await;
        // A scope created by the first import is there already for the second: kcadm.sh says
        // so and the loop goes on. The import's answer (`-o`) is all the commands print: the
        // client and its service-account user added.
        ran.ok();
        let answer: Value = serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("{target}: {e}: {}\n{}", ran.stdout, ran.stderr));
        assert_eq!(answer["added"], 2, "{target}: {answer}\n{}", ran.stderr);
        assert!(
            answer["results"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["resourceType"] == "CLIENT" && r["resourceName"] == client),
            "{target}: {answer}"
        );
    }
    let imported = started.elapsed().as_secs_f64();
    // The secret Keycloak generated for the secret-JWT client, where keyfed reads it (the
    // notes' command wrote it).
    let secret = std::fs::read_to_string(fx.path("jwt-secret")).unwrap_or_default();
    let secret = secret.trim().to_owned();
    assert!(
        !secret.is_empty() && secret != JWT_SECRET.trim(),
        "no secret generated for host-hs256: {secret:?}"
    );
    fx.know("the secret Keycloak generated for host-hs256", &secret);

    assert_eq!(
        lifespans,
        ["1200", "300"],
        "only the Azure target needs more"
    );
    for (target, audience) in expected() {
        assert_token(&fx, target, &audience, &lifespans[0]).await;
    }
    assert_token(&fx, "hs", API_AUD, &lifespans[1]).await;
    let _ = writeln_stderr(&format!(
        "{test}: {:.1} s: kcadm.sh logged in at {logged_in:.1} s, 2 imports applied by \
         {imported:.1} s, then 5 tokens",
        started.elapsed().as_secs_f64()
    ));
}

/// No server needed: the shell form passes `bash -n`, the JSON form parses, and the Terraform
/// form parses with a real HCL2 parser (python-hcl2, `tests/interop/hcl2json.py`) to the
/// values configured — even awkward ones — and none prints the client secret.
#[tokio::test]
async fn every_format_is_well_formed_issue_12() {
    let fx = Fixture::new();
    fx.write_credentials();
    let audience = "https://api.example.com/${x} %{y} \"q\" 'a'";
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n{}[targets.odd]\nissuer = \"corp\"\naudience = {audience:?}\nscope = \"odd-audience\"\n",
            crate::util::issuer("corp", "host-secret", "client_secret_basic")
                .replace("{issuer}", "https://sso.example.com/realms/infra"),
            targets("corp", "")
        ),
    );
    let shell = fx.keyfed(&["trust", "odd", "--keycloak"]).await;
    shell.ok();
    let script = fx.write("odd.sh", &shell.stdout);
    let checked = tokio::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .await
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(checked.status.success(), "{checked:?}\n{}", shell.stdout);

    let json_run = fx
        .keyfed(&["trust", "odd", "--keycloak", "--format", "json"])
        .await;
    json_run.ok();
    let document: Value = serde_json::from_str(&json_run.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        document["clientScopes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["protocolMappers"][0]["config"]["included.custom.audience"] == audience),
        "{document}"
    );

    let tf = fx
        .keyfed(&["trust", "odd", "--keycloak", "--format", "terraform"])
        .await;
    tf.ok();
    let file = fx.write("keycloak.tf", &tf.stdout);
    let parsed = hcl2json(&file).await;
    let resources = &parsed[0]["resource"];
    let find = |kind: &str| -> Vec<Value> {
        resources
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get(kind).cloned())
            .collect()
    };
    let mappers = find("keycloak_openid_audience_protocol_mapper");
    assert!(
        mappers
            .iter()
            .any(|m| m["odd-audience"]["included_custom_audience"] == audience),
        "{parsed}"
    );
    let client = &find("keycloak_openid_client")[0]["host-secret"];
    assert_eq!(client["access_type"], "CONFIDENTIAL", "{client}");
    assert_eq!(client["service_accounts_enabled"], true, "{client}");
    assert_eq!(client["full_scope_allowed"], false, "{client}");
    assert_eq!(
        client["extra_config"]["access.token.signed.response.alg"], "RS256",
        "{client}"
    );
    let optional = &find("keycloak_openid_client_optional_scopes")[0]["host-secret"];
    assert_eq!(
        optional["optional_scopes"].as_array().map(Vec::len),
        Some(5),
        "every scope of the client: {optional}"
    );
}

/// `file` parsed by python-hcl2 (`tests/interop/hcl2json.py`, in `target/interop-venv`).
async fn hcl2json(file: &Path) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/interop-venv/bin/python");
    let output = tokio::process::Command::new(&python)
        .arg(root.join("tests/interop/hcl2json.py"))
        .arg(file)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e} (tests/run installs it)", python.display()));
    assert!(
        output.status.success(),
        "hcl2json: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"))
}
