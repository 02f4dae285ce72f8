//! Issue 12, item 5: the Keycloak setup `keyfed trust <target> --keycloak` prints, applied as
//! printed to the real Keycloak `tests/run` starts — the `kcadm.sh` script run by bash with the
//! server's own `kcadm.sh`, and the partial realm import through the admin REST API — after
//! which keyfed gets, for every target kind (AWS, Google Cloud, Azure, a bare token), a token
//! whose `aud` is exactly that target's audience, signed RS256 and living the lifespan printed;
//! `keyfed doctor` then passes its Keycloak and token checks. The client authenticates with a
//! secret (`client_secret_basic`) in the script's realm, and with a key (`private_key_jwt`) and
//! a secret Keycloak generates (`client_secret_jwt`) in the import's. Besides: the three formats
//! are well formed, whatever the configuration holds (no server needed).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::util::keycloak::{AZURE_AUD, Server};
use crate::util::leaks::Serves;
use crate::util::{API_AUD, AWS_AUD, Fixture, JWT_SECRET, Run, process};

const GCP_PROVIDER: &str =
    "projects/123456789/locations/global/workloadIdentityPools/onprem/providers/keycloak";

/// The targets of one client, one of each kind, each with its own scope; the Azure one writes a
/// federated token file, which needs tokens living more than Keycloak's default 5 minutes.
fn targets(issuer: &str, prefix: &str) -> String {
    format!(
        "[targets.{prefix}aws]\nissuer = \"{issuer}\"\nscope = \"aws-audience\"\nstrict_audience = true\n\
         aws = {{ role_arn = \"arn:aws:iam::123456789012:role/app\", region = \"eu-west-1\" }}\n\n\
         [targets.{prefix}gcp]\nissuer = \"{issuer}\"\nscope = \"gcp-audience\"\nstrict_audience = true\n\
         gcp = {{ provider = \"{GCP_PROVIDER}\" }}\n\n\
         [targets.{prefix}azure]\nissuer = \"{issuer}\"\nscope = \"azure-audience\"\nstrict_audience = true\n\
         azure = {{ tenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\", client_id = \"0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b\" }}\n\
         outputs = [ {{ kind = \"azure-federated-token\", path = \"out/{prefix}federated-token.jwt\" }} ]\n\n\
         [targets.{prefix}api]\nissuer = \"{issuer}\"\naudience = \"{API_AUD}\"\nscope = \"api-audience\"\nstrict_audience = true\n\n"
    )
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
/// `lifespan` seconds.
async fn assert_token(fx: &Fixture, target: &str, audience: &str, lifespan: &str) {
    let run = fx.keyfed(&["token", target, "--decode"]).await;
    run.ok();
    let decoded: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{target}: {e}: {}", run.stdout));
    let claims = &decoded["claims"];
    assert_eq!(claims["aud"], json!(audience), "{target}: {decoded}");
    assert_eq!(decoded["header"]["alg"], "RS256", "{target}: {decoded}");
    let lived = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lived.to_string(), lifespan, "{target}: {decoded}");
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
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
    for (target, audience) in expected() {
        assert_token(&fx, target, &audience, &lifespan).await;
    }
    doctor_passes(&fx, "api").await;
    let _ = writeln_stderr(&format!(
        "{test}: {:.1} s: realm made at {realm_made:.1} s, kcadm.sh logged in at {logged_in:.1} s, \
         4 scripts run by {scripts_run:.1} s, then one again, 4 tokens and doctor",
        started.elapsed().as_secs_f64()
    ));
}

/// `keyfed doctor <target> --json` passes every check it runs on the configuration, the
/// secret, Keycloak and the token (a bare token target: no cloud to call).
async fn doctor_passes(fx: &Fixture, target: &str) {
    let run = fx.keyfed(&["doctor", target, "--json"]).await;
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("doctor: {e}: {}\n{}", run.stdout, run.stderr));
    let checks = report["targets"][0]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"));
    for id in [
        "secret",
        "keycloak.reachable",
        "keycloak.discovery",
        "keycloak.jwks",
        "token",
    ] {
        let check = checks
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in {report}"));
        assert_eq!(check["status"], "ok", "{check}");
    }
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stderr(), "{text}")
}

/// Applies a partial import document as the notes of `--format json` say: each client scope
/// created first (Keycloak's partial import ignores them), then the document imported.
async fn import(server: &Server, realm: &str, document: &Value) {
    for scope in document["clientScopes"].as_array().into_iter().flatten() {
        let (status, answer) = server
            .admin(
                "POST",
                &format!("/{realm}/client-scopes"),
                Some(scope.clone()),
            )
            .await;
        assert!(status == 201 || status == 409, "{status}: {answer}");
    }
    let (status, answer) = server
        .admin(
            "POST",
            &format!("/{realm}/partialImport"),
            Some(document.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}\n{}", server.log_tail());
}

/// Item 5, the import: two clients' documents (a private key; a secret JWT) imported into a
/// fresh realm through the admin REST API; the generated secret read back as the notes say;
/// then the tokens of every target kind.
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
        import(&server, &realm, &document).await;
    }
    // The secret Keycloak generated for the secret-JWT client, where keyfed reads it.
    let (_, clients) = server
        .admin(
            "GET",
            &format!("/{realm}/clients?clientId=host-hs256"),
            None,
        )
        .await;
    let id = clients[0]["id"].as_str().unwrap_or_default();
    let (_, secret) = server
        .admin("GET", &format!("/{realm}/clients/{id}/client-secret"), None)
        .await;
    let secret = secret["value"].as_str().unwrap_or_default().to_owned();
    assert!(!secret.is_empty(), "no secret generated for host-hs256");
    fx.know("the secret Keycloak generated for host-hs256", &secret);
    fx.write("jwt-secret", &format!("{secret}\n"));

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
        "{test}: {:.1} s (2 imports, 5 tokens)",
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
