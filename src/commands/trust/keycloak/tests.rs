//! issue 12: `keyfed trust --keycloak` rendering — the plan from a configuration, the shell
//! script run against a stand-in `kcadm.sh` that records what it is given, the partial import
//! document, and the lifespan rule. (Against the real Keycloak: tests/keycloak_setup.rs.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::plan::{self, Credential, SecretFrom};
use super::{json, shell, terraform};
use crate::config::{Config, Host};

/// A secret with every character a shell or JSON might mind.
const SECRET: &str = "s3cr\"et\\ $(id) `id` ${HOME} it's 100%";

const GCP_PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak";

fn issuer(auth: &str) -> String {
    let credential = match auth {
        "private_key_jwt" => "private_key_file = \"client.pem\"\nalgorithm = \"RS256\"",
        "client_secret_env" => "client_secret_env = \"KC_SECRET\"",
        _ => "client_secret_file = \"secret\"",
    };
    let method = if auth == "client_secret_env" {
        "client_secret_basic"
    } else {
        auth
    };
    format!(
        "[issuers.corp]\nurl = \"https://sso.example.com/auth/realms/infra\"\nclient_id = \"host-web-01\"\nauth = \"{method}\"\n{credential}\n\n"
    )
}

/// One target of each kind: AWS, Google Cloud without impersonation, Azure with a federated
/// token file, a bare token.
const TARGETS: &str = r#"
[targets.aws]
issuer = "corp"
scope = "aws-audience"
aws = { role_arn = "arn:aws:iam::123456789012:role/app", region = "eu-west-1" }

[targets.gcp]
issuer = "corp"
scope = "gcp-audience"
gcp = { provider = "projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak" }

[targets.azure]
issuer = "corp"
scope = "azure-audience"
azure = { tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47", client_id = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b" }
outputs = [ { kind = "azure-federated-token", path = "out/federated-token.jwt" } ]

[targets.api]
issuer = "corp"
audience = "https://api.example.com/$(id)"
"#;

struct Setup {
    dir: tempfile::TempDir,
    config: Config,
}

fn setup(auth: &str, targets: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    write("secret", &format!("{SECRET}\n"));
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap_or_else(|e| panic!("{e}"));
    write("client.pem", &key.serialize_pem());
    write("keyfed.toml", &format!("{}{targets}", issuer(auth)));
    let home = dir.path().to_string_lossy().into_owned();
    let env = move |name: &str| match name {
        "KC_SECRET" => Some(SECRET.to_owned()),
        "HOME" => Some(home.clone()),
        _ => None,
    };
    let host = Host {
        hostname: "host".to_owned(),
        is_root: false,
    };
    let config = crate::config::load(&dir.path().join("keyfed.toml"), &env, &host)
        .unwrap_or_else(|e| panic!("{e}"));
    Setup { dir, config }
}

fn plan_of(s: &Setup, target: &str) -> (plan::Plan, plan::Notes) {
    plan::plan(&s.config, target).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn the_realm_and_server_come_from_the_issuer_url() {
    let of = |u: &str| plan::realm_of(&url::Url::parse(u).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        of("https://sso.example.com/realms/infra"),
        Some(("https://sso.example.com".to_owned(), "infra".to_owned()))
    );
    assert_eq!(
        of("https://sso.example.com:8443/auth/realms/my%20realm"),
        Some((
            "https://sso.example.com:8443/auth".to_owned(),
            "my realm".to_owned()
        ))
    );
    assert_eq!(of("https://login.example.com/oauth2/default"), None);
    assert_eq!(of("https://sso.example.com/realms/"), None);
}

#[test]
fn a_derived_scope_name_is_stable_and_plain() {
    assert_eq!(
        plan::derived_scope_name("sts.amazonaws.com"),
        "audience-sts.amazonaws.com"
    );
    assert_eq!(
        plan::derived_scope_name("api://AzureADTokenExchange"),
        "audience-AzureADTokenExchange"
    );
    assert_eq!(
        plan::derived_scope_name(&format!("//iam.googleapis.com/{GCP_PROVIDER}")),
        "audience-iam.googleapis.com-projects-123456789012-locations-global-workloadIdentityPools-onprem-providers-keycloak"
    );
    assert_eq!(
        plan::derived_scope_name("https://api.example.com/$(id)"),
        "audience-api.example.com-id"
    );
}

#[test]
fn the_plan_covers_every_target_of_the_client_the_named_one_first() {
    let s = setup("client_secret_basic", TARGETS);
    let (plan, notes) = plan_of(&s, "gcp");
    assert_eq!(plan.server, "https://sso.example.com/auth");
    assert_eq!(plan.realm, "infra");
    assert_eq!(plan.client.client_id, "host-web-01");
    assert_eq!(
        plan.client.credential,
        Credential::Secret {
            jwt: false,
            from: SecretFrom::File(s.dir.path().join("secret"))
        }
    );
    let scopes: Vec<(&str, &str, bool)> = plan
        .scopes
        .iter()
        .map(|s| (s.name.as_str(), s.audience.as_str(), s.optional))
        .collect();
    let gcp_audience = format!("https://iam.googleapis.com/{GCP_PROVIDER}");
    assert_eq!(
        scopes,
        [
            ("gcp-audience", gcp_audience.as_str(), true),
            (
                "audience-api.example.com-id",
                "https://api.example.com/$(id)",
                false
            ),
            ("aws-audience", "sts.amazonaws.com", true),
            ("azure-audience", "api://AzureADTokenExchange", true),
        ]
    );
    // The target without a scope gets a default one, and the operator is told what that costs.
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("target api requests no scope"),
        "{notes:?}"
    );
    assert!(notes[0].contains("scope = \"audience-api.example.com-id\""));
}

#[test]
fn two_targets_cannot_share_a_scope_for_different_audiences() {
    let s = setup(
        "client_secret_basic",
        "[targets.a]\nissuer = \"corp\"\naudience = \"x\"\nscope = \"same\"\n\
         [targets.b]\nissuer = \"corp\"\naudience = \"y\"\nscope = \"same\"\n\
         [targets.c]\nissuer = \"corp\"\naudience = \"x\"\nscope = \"same\"\n",
    );
    let Err(error) = plan::plan(&s.config, "a") else {
        panic!("two audiences in one scope were accepted");
    };
    assert!(
        format!("{error}").contains("targets a and b both ask for client scope \"same\""),
        "{error}"
    );
}

/// The lifespan rule: long enough for every consumer keyfed knows of, by the engine's own
/// windows, and Keycloak's default when nothing needs more.
#[test]
fn the_lifespan_is_long_enough_for_the_outputs_configured() {
    let s = setup("client_secret_basic", TARGETS);
    let (plan, _) = plan_of(&s, "aws");
    assert_eq!(plan.lifespan.value, plan::LONG_LIFESPAN);
    assert!(
        plan.lifespan.reason.contains("azure-federated-token"),
        "{plan:?}"
    );
    // Azure SDKs must find > 600 s left at every re-read after keyfed's rewrite, with a minute
    // to spare; Google's libraries must see a third of the life before their 225 s window.
    let azure = crate::sources::AZURE_FEDERATED_TOKEN_WINDOW + Duration::from_secs(60);
    assert!(plan::LONG_LIFESPAN >= azure);
    let gcp = crate::sources::GCP_CONSUMER_WINDOW;
    assert!(plan::LONG_LIFESPAN - gcp >= plan::LONG_LIFESPAN / 3);
    assert!(plan::KEYCLOAK_DEFAULT_LIFESPAN - gcp < plan::KEYCLOAK_DEFAULT_LIFESPAN / 3);

    let gcp_only = setup(
        "client_secret_basic",
        &format!(
            "[targets.gcp]\nissuer = \"corp\"\nscope = \"gcp-audience\"\ngcp = {{ provider = \"{GCP_PROVIDER}\" }}\n"
        ),
    );
    let (plan, _) = plan_of(&gcp_only, "gcp");
    assert_eq!(plan.lifespan.value, plan::LONG_LIFESPAN);
    let impersonating = setup(
        "client_secret_basic",
        &format!(
            "[targets.gcp]\nissuer = \"corp\"\nscope = \"gcp-audience\"\ngcp = {{ provider = \"{GCP_PROVIDER}\", service_account = \"app@p.iam.gserviceaccount.com\" }}\n\
             [targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\naws = {{ role_arn = \"arn:aws:iam::123456789012:role/app\", region = \"eu-west-1\" }}\n"
        ),
    );
    let (plan, _) = plan_of(&impersonating, "aws");
    assert_eq!(plan.lifespan.value, plan::KEYCLOAK_DEFAULT_LIFESPAN);
}

#[test]
fn a_private_key_client_registers_the_public_key_as_a_jwks() {
    let s = setup("private_key_jwt", TARGETS);
    let (plan, _) = plan_of(&s, "aws");
    let Credential::Key { algorithm, jwks } = &plan.client.credential else {
        panic!("{plan:?}");
    };
    assert_eq!(*algorithm, "RS256");
    let jwks: Value = serde_json::from_str(jwks).unwrap_or_else(|e| panic!("{e}"));
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert!(key["kid"].as_str().is_some_and(|k| k.len() == 43), "{key}");
    assert!(key.get("d").is_none(), "a private part in {key}");
    let client = json::client(&plan);
    assert_eq!(client["clientAuthenticatorType"], "client-jwt");
    assert_eq!(client["attributes"]["use.jwks.string"], "true");
    assert_eq!(
        client["attributes"]["token.endpoint.auth.signing.alg"],
        "RS256"
    );
}

#[test]
fn the_import_document_names_what_a_partial_import_does_not_make() {
    let s = setup("client_secret_jwt", TARGETS);
    let (plan, _) = plan_of(&s, "aws");
    let document: Value =
        serde_json::from_str(&json::render(&plan)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(document["ifResourceExists"], "SKIP");
    let client = &document["clients"][0];
    assert_eq!(client["clientId"], "host-web-01");
    assert_eq!(client["clientAuthenticatorType"], "client-secret-jwt");
    assert_eq!(client["publicClient"], false);
    assert_eq!(client["serviceAccountsEnabled"], true);
    assert_eq!(client["fullScopeAllowed"], false);
    assert_eq!(client["directAccessGrantsEnabled"], false);
    assert_eq!(client["attributes"]["access.token.lifespan"], "1200");
    assert_eq!(
        client["attributes"]["access.token.signed.response.alg"],
        "RS256"
    );
    assert!(client.get("secret").is_none(), "{client}");
    assert_eq!(
        client["optionalClientScopes"],
        serde_json::json!(["aws-audience", "azure-audience", "gcp-audience"])
    );
    let defaults = client["defaultClientScopes"].to_string();
    assert!(defaults.contains("\"basic\"") && defaults.contains("audience-api.example.com-id"));
    assert_eq!(
        document["users"][0]["serviceAccountClientId"],
        "host-web-01"
    );
    let scope = &document["clientScopes"][0];
    assert_eq!(scope["name"], "aws-audience");
    let mapper = &scope["protocolMappers"][0];
    assert_eq!(mapper["protocolMapper"], "oidc-audience-mapper");
    assert_eq!(
        mapper["config"]["included.custom.audience"],
        "sts.amazonaws.com"
    );
    assert_eq!(mapper["config"]["access.token.claim"], "true");
    assert_eq!(mapper["config"]["id.token.claim"], "false");
    assert!(!json::render(&plan).contains("s3cr"));
}

/// A stand-in `kcadm.sh` that logs each call's arguments and standard input and answers like
/// Keycloak would for a realm without the client or the scope.
const FAKE_KCADM: &str = r#"#!/usr/bin/env bash
n=$(ls "$LOG" | grep -c 'args$')
printf '%s\n' "$@" >"$LOG/$n.args"
case "$*" in
  *"-f -"*) cat >"$LOG/$n.stdin" ;;
esac
case "$1 $2" in
  "get clients") ;;
  "get client-scopes") printf 'aaaa,profile\nbbbb,other,with,commas\n' ;;
  "create clients") echo client-id ;;
  "create client-scopes") echo scope-id ;;
esac
"#;

struct Call {
    args: Vec<String>,
    stdin: Option<String>,
}

/// Runs the script for `target` with the fake `kcadm.sh`; every call it made.
fn run_script(s: &Setup, target: &str, env: &[(&str, &str)]) -> (std::process::Output, Vec<Call>) {
    let (plan, _) = plan_of(s, target);
    let script = shell::render(&plan, &s.config.file);
    let bin = s.dir.path().join("bin");
    let log = s.dir.path().join("log");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&log);
    std::fs::create_dir_all(&log).unwrap_or_else(|e| panic!("{e}"));
    let kcadm = bin.join("kcadm.sh");
    std::fs::write(&kcadm, FAKE_KCADM).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&kcadm, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env("LOG", &log)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    let mut calls = Vec::new();
    for n in 0.. {
        let read = |ext: &str| std::fs::read_to_string(log.join(format!("{n}.{ext}"))).ok();
        let Some(args) = read("args") else { break };
        calls.push(Call {
            args: args.lines().map(str::to_owned).collect(),
            stdin: read("stdin"),
        });
    }
    (output, calls)
}

fn body(call: &Call) -> Value {
    serde_json::from_str(call.stdin.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {:?}", call.stdin))
}

#[test]
fn the_script_parses_and_creates_what_is_missing_with_the_secret_on_stdin_only() {
    let s = setup("client_secret_basic", TARGETS);
    for target in ["aws", "gcp", "azure", "api"] {
        let (plan, _) = plan_of(&s, target);
        let script = shell::render(&plan, &s.config.file);
        let checked = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(checked.status.success(), "{target}: {checked:?}\n{script}");
        assert!(!script.contains("s3cr"), "{script}");
    }
    let (output, calls) = run_script(&s, "api", &[]);
    assert!(output.status.success(), "{output:?}");
    let words: Vec<String> = calls.iter().map(|c| c.args[..2].join(" ")).collect();
    assert_eq!(
        words,
        [
            "get clients",
            "create clients",
            "get client-scopes",
            "create client-scopes",
            "update clients/client-id/default-client-scopes/scope-id",
        ]
    );
    let client = body(&calls[1]);
    assert_eq!(client["secret"], SECRET);
    assert_eq!(client["clientId"], "host-web-01");
    for call in &calls {
        assert!(
            !call.args.iter().any(|a| a.contains("s3cr")),
            "{:?}",
            call.args
        );
    }
    let scope = body(&calls[3]);
    assert_eq!(scope["name"], "audience-api.example.com-id");
    assert_eq!(
        scope["protocolMappers"][0]["config"]["included.custom.audience"],
        "https://api.example.com/$(id)"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("linked to client host-web-01 as a Default scope"),
        "{stdout}"
    );
}

#[test]
fn the_script_reads_a_secret_from_the_environment_and_refuses_without_it() {
    let s = setup("client_secret_env", TARGETS);
    let (output, calls) = run_script(&s, "aws", &[("KC_SECRET", SECRET)]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(body(&calls[1])["secret"], SECRET);
    let (output, calls) = run_script(&s, "aws", &[]);
    assert!(!output.status.success());
    assert!(calls.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("set KC_SECRET to the client secret"));
}

#[test]
fn no_configured_value_escapes_its_quoting() {
    let evil = "x\n$(touch pwned)'\"`id`";
    let s = setup(
        "client_secret_basic",
        &format!("[targets.t]\nissuer = \"corp\"\naudience = {evil:?}\nscope = \"s\"\n"),
    );
    let (plan, _) = plan_of(&s, "t");
    let script = shell::render(&plan, &s.config.file);
    let (output, calls) = run_script(&s, "t", &[]);
    assert!(output.status.success(), "{output:?}\n{script}");
    assert!(!s.dir.path().join("pwned").exists() && !Path::new("pwned").exists());
    assert_eq!(
        body(&calls[3])["protocolMappers"][0]["config"]["included.custom.audience"],
        evil
    );
    let tf = terraform::render(&plan, &s.config.file);
    assert!(tf.contains(&keyfed_core::quote::hcl(evil)), "{tf}");
    assert!(tf.lines().all(|l| !l.starts_with("$(touch")), "{tf}");
}

#[test]
fn terraform_links_every_scope_of_the_client() {
    let s = setup("client_secret_env", TARGETS);
    let (plan, _) = plan_of(&s, "aws");
    let tf = terraform::render(&plan, &s.config.file);
    for needle in [
        "resource \"keycloak_openid_client\" \"host-web-01\"",
        "client_authenticator_type    = \"client-secret\"",
        "client_secret                = var.host-web-01_secret",
        "variable \"host-web-01_secret\"",
        "access_token_lifespan        = \"1200\"",
        "\"access.token.signed.response.alg\" = \"RS256\"",
        "resource \"keycloak_openid_audience_protocol_mapper\" \"aws-audience\"",
        "included_custom_audience = \"sts.amazonaws.com\"",
        "optional_scopes = [\n    keycloak_openid_client_scope.aws-audience.name,\n    keycloak_openid_client_scope.azure-audience.name,\n    keycloak_openid_client_scope.gcp-audience.name,\n  ]",
        "    \"service_account\",\n    keycloak_openid_client_scope.audience-api_example_com-id.name,\n  ]",
    ] {
        assert!(tf.contains(needle), "{needle}\n{tf}");
    }
    let key = setup("private_key_jwt", TARGETS);
    let (plan, _) = plan_of(&key, "aws");
    let tf = terraform::render(&plan, &key.config.file);
    assert!(tf.contains("\"jwks.string\""), "{tf}");
    assert!(!tf.contains("client_secret"), "{tf}");
    let file = setup("client_secret_basic", TARGETS);
    let (plan, _) = plan_of(&file, "aws");
    let tf = terraform::render(&plan, &file.config.file);
    let path: PathBuf = file.dir.path().join("secret");
    assert!(
        tf.contains(&format!(
            "replace(file({}), \"/\\\\r?\\\\n\\\\z/\", \"\")",
            keyfed_core::quote::hcl(&path.to_string_lossy())
        )),
        "{tf}"
    );
}

/// The names in the Terraform output's `default_scopes` list, each scope resource it refers to
/// (`keycloak_openid_client_scope.<label>.name`) replaced by that resource's `name`.
fn terraform_default_scopes(tf: &str) -> Vec<String> {
    let list = tf
        .split_once("default_scopes = [\n")
        .and_then(|(_, rest)| rest.split_once("  ]"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no default_scopes in\n{tf}"));
    list.lines()
        .map(|line| line.trim().trim_end_matches(','))
        .map(
            |item| match item.strip_prefix("keycloak_openid_client_scope.") {
                Some(reference) => {
                    let label = reference.trim_end_matches(".name");
                    let resource =
                        format!("resource \"keycloak_openid_client_scope\" \"{label}\" {{");
                    tf.split_once(&resource)
                        .and_then(|(_, body)| {
                            body.lines().find_map(|l| l.trim().strip_prefix("name"))
                        })
                        .map(|name| {
                            let value = name.trim().trim_start_matches('=').trim();
                            serde_json::from_str::<String>(value)
                                .unwrap_or_else(|e| panic!("{e}: {value}"))
                        })
                        .unwrap_or_else(|| panic!("no scope {label} in\n{tf}"))
                }
                None => {
                    serde_json::from_str::<String>(item).unwrap_or_else(|e| panic!("{e}: {item}"))
                }
            },
        )
        .collect()
}

/// Issue 12: Terraform's authoritative default scopes are the import's, `service_account`
/// included: applying them to a client Keycloak 26 made must not unlink it.
#[test]
fn issue_12_terraform_and_the_import_give_the_client_the_same_default_scopes() {
    let s = setup("client_secret_basic", TARGETS);
    let (plan, _) = plan_of(&s, "aws");
    let tf = terraform::render(&plan, &s.config.file);
    let document: Value =
        serde_json::from_str(&json::render(&plan)).unwrap_or_else(|e| panic!("{e}"));
    let imported: Vec<String> =
        serde_json::from_value(document["clients"][0]["defaultClientScopes"].clone())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(terraform_default_scopes(&tf), imported);
    assert!(
        imported.iter().any(|s| s == "service_account"),
        "{imported:?}"
    );
    assert!(imported.iter().any(|s| s == "basic"), "{imported:?}");
    assert!(
        tf.contains(
            "required_providers {\n    keycloak = {\n      source  = \"keycloak/keycloak\""
        ),
        "{tf}"
    );
}

#[test]
fn an_unknown_target_or_an_issuer_not_on_keycloak_is_refused() {
    let s = setup("client_secret_basic", TARGETS);
    let Err(unknown) = plan::plan(&s.config, "nope") else {
        panic!("an unknown target was accepted");
    };
    assert!(unknown.downcast_ref::<crate::exit::UsageError>().is_some());
    assert!(
        unknown
            .to_string()
            .contains("targets: api, aws, azure, gcp"),
        "{unknown}"
    );

    let mut other = setup("client_secret_basic", TARGETS);
    for issuer in other.config.issuers.values_mut() {
        issuer.settings.url = url::Url::parse("https://login.example.com/oauth2/default")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let Err(error) = plan::plan(&other.config, "aws") else {
        panic!("an issuer without a realm was accepted");
    };
    assert!(
        format!("{error:#}").contains("does not name a Keycloak realm (…/realms/<realm>)"),
        "{error:#}"
    );
}
