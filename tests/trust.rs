//! `keyfed trust <target>` (issue 12): the cloud side a target needs, built from a real token
//! of the Keycloak emulator whose service account has an awkward `sub` (quotes, `$`, `${…}`, a
//! backquote, a backslash, spaces) and whose audience is awkward too. For each cloud and each
//! format: the shell output is run by bash with stub `aws`, `gcloud` and `az` programs first on
//! PATH that record their argv, which must be exactly what the cloud needs; the JSON parses and
//! says the same; the Terraform is read by a real HCL2 parser (python-hcl2 in the interop venv,
//! `tests/interop/hcl2json.py`), its resources' attributes checked and its `required_providers`
//! too. Every value is compared with the claims of the token keyfed fetched (the emulator's last
//! issued token).

use std::path::PathBuf;

use keyfed_core::emulator::TestCa;
use keyfed_keycloak::emulator::KeycloakEmulator;
use serde_json::{Value, json};

use crate::util::azure::{APP, TENANT};
use crate::util::gcp::{PROJECT_ID, PROVIDER, SERVICE_ACCOUNT, pool};
use crate::util::{Fixture, Run, claims};

/// The service account's `sub`: everything a shell or Terraform could take for syntax, and the
/// control characters JSON writes `\b` and `\f`, which HCL has no escape for.
const ODD_SUB: &str =
    "svc 'quoted' \"double\" $HOME ${PATH} `id` %{if} back\\slash \u{8}bell\u{c}feed";
/// An audience as awkward, with a comma (gcloud's --allowed-audiences is a comma-separated list).
const ODD_AUD: &str = "aud 'it''s' $x ${y} \"q\", too";
const ODD_SCOPE: &str = "odd-audience";
const ROLE_ARN: &str = "arn:aws-cn:iam::123456789012:role/team/onprem-web";

/// A TOML basic string (JSON's escapes are TOML's).
fn toml(value: &str) -> String {
    Value::from(value).to_string()
}

/// The standard realm, `host-secret`'s service account renamed [`ODD_SUB`] and linked to a
/// scope giving [`ODD_AUD`]; targets of each cloud asking for it, and a token target.
async fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    let mut realm = fx.realm().scope(ODD_SCOPE, &[ODD_AUD]);
    let client = realm
        .clients
        .iter_mut()
        .find(|c| c.client_id == "host-secret")
        .unwrap_or_else(|| panic!("no host-secret in the standard realm"));
    client.service_account_id = ODD_SUB.to_owned();
    client.optional_scopes.push(ODD_SCOPE.to_owned());
    fx.start(KeycloakEmulator::builder(realm)).await;
    fx.write_credentials();
    let odd = |name: &str, table: &str| {
        format!(
            "[targets.\"{name}\"]\nissuer = \"corp\"\naudience = {}\nscope = \"{ODD_SCOPE}\"\n{table}\n\n",
            toml(ODD_AUD)
        )
    };
    fx.config(&format!(
        "[issuers.corp]\nurl = \"{{issuer}}\"\nclient_id = \"host-secret\"\n\
         client_secret_file = \"client-secret\"\n\n{}{}{}{}\
         [targets.api]\nissuer = \"corp\"\naudience = \"{}\"\nscope = \"api-audience\"\n",
        odd(
            "aws",
            &format!("aws = {{ role_arn = \"{ROLE_ARN}\", region = \"cn-north-1\" }}")
        ),
        odd(
            "gcp",
            &format!(
                "gcp = {{ provider = \"{PROVIDER}\", service_account = \"{SERVICE_ACCOUNT}\", \
                 project_id = \"{PROJECT_ID}\" }}"
            )
        ),
        odd(
            "gcp.principal",
            &format!("gcp = {{ provider = \"{PROVIDER}\" }}")
        ),
        odd(
            "azure",
            &format!("azure = {{ tenant_id = \"{TENANT}\", client_id = \"{APP}\" }}")
        ),
        crate::util::API_AUD,
    ));
    fx
}

async fn trust(fx: &Fixture, target: &str, format: &str, extra: &[&str]) -> Run {
    let mut args = vec!["trust", target, "--format", format];
    args.extend_from_slice(extra);
    let run = fx.keyfed(&args).await;
    run.ok();
    run
}

/// The claims of the token keyfed fetched last, checked to be the awkward ones.
fn token_claims(fx: &Fixture) -> Value {
    let issued = fx.keycloak().issued_tokens();
    let token = issued
        .last()
        .unwrap_or_else(|| panic!("the emulator issued no token"));
    let c = claims(token);
    assert_eq!(c["sub"], ODD_SUB, "{c}");
    assert_eq!(c["aud"], ODD_AUD, "{c}");
    c
}

fn claim(c: &Value, name: &str) -> String {
    c[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {c}"))
        .to_owned()
}

/// `bin/aws`, `bin/gcloud` and `bin/az`: each appends its name and arguments, as one JSON
/// array, to `$STUB_LOG`.
fn stubs(fx: &Fixture) -> PathBuf {
    let bin = fx.path("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    let stub = "#!/usr/bin/python3\n\
                import json, os, sys\n\
                with open(os.environ['STUB_LOG'], 'a') as log:\n    \
                log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + '\\n')\n";
    for name in ["aws", "gcloud", "az"] {
        let path = bin.join(name);
        std::fs::write(&path, stub).unwrap_or_else(|e| panic!("{e}"));
        crate::util::set_mode(&path, 0o755);
    }
    bin
}

/// What running `script` with bash did: its exit status, the stubs' argv in order, its stderr.
struct Ran {
    ok: bool,
    calls: Vec<Vec<String>>,
    stderr: String,
}

fn run_script(fx: &Fixture, name: &str, script: &str, env: &[(&str, &str)]) -> Ran {
    let bin = stubs(fx);
    let file = fx.path(&format!("{name}.sh"));
    let log = fx.path(&format!("{name}.calls"));
    std::fs::write(&file, script).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(&log);
    let out = std::process::Command::new("bash")
        .arg(&file)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("STUB_LOG", &log)
        .envs(env.iter().copied())
        .current_dir(fx.dir.path())
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    Ran {
        ok: out.status.success(),
        calls,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `text` as Terraform reads it (see `tests/interop/hcl2json.py`).
fn terraform(fx: &Fixture, name: &str, text: &str) -> Value {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the interop venv is missing ({}): run tests/run, which installs it",
        python.display()
    );
    let file = fx.path(&format!("{name}.tf"));
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/hcl2json.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("hcl2json: {e}"));
    assert!(
        out.status.success(),
        "python-hcl2 could not read:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&String::from_utf8_lossy(&out.stdout))[0].take()
}

/// The block `kind` (`resource`, `data`, `variable`, `output`) of `type_` labelled `label`.
fn block<'a>(tf: &'a Value, kind: &str, type_: &str, label: &str) -> &'a Value {
    tf[kind]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| b.get(type_).and_then(|t| t.get(label)))
        .unwrap_or_else(|| panic!("no {kind} {type_} {label:?} in {tf:#}"))
}

/// The providers a parsed Terraform file requires: local name → `{"source", "version"}`.
fn required_providers(tf: &Value) -> &Value {
    &tf["terraform"][0]["required_providers"][0]
}

/// What gcloud makes of a list flag's value (`gcloud topic escaping`): the items between
/// commas, or between the delimiter a leading `^DELIM^` names.
fn gcloud_list(value: &str) -> Vec<String> {
    let alternate = value
        .strip_prefix('^')
        .and_then(|rest| rest.split_once('^'))
        .filter(|(delimiter, _)| !delimiter.is_empty());
    match alternate {
        Some((delimiter, items)) => items.split(delimiter).map(str::to_owned).collect(),
        None => value.split(',').map(str::to_owned).collect(),
    }
}

fn without_scheme(issuer: &str) -> &str {
    issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .unwrap_or(issuer)
}

#[tokio::test]
async fn issue_12_aws_trusts_exactly_the_tokens_issuer_audience_and_subject() {
    let fx = fixture().await;
    let shell = trust(&fx, "aws", "shell", &[]).await;
    let c = token_claims(&fx);
    let (iss, sub, aud) = (claim(&c, "iss"), claim(&c, "sub"), claim(&c, "aud"));
    let provider = without_scheme(&iss);
    let provider_arn = format!("arn:aws-cn:iam::123456789012:oidc-provider/{provider}");
    let expected_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{provider}:aud"): aud,
                format!("{provider}:sub"): sub,
            }},
        }],
    });
    // The emulator's issuer is plain http on loopback: AWS would refuse it, and keyfed says so.
    shell.says("warning: AWS fetches the issuer's discovery document and keys from the internet, over https only, and it cannot reach");

    let ran = run_script(&fx, "aws", &shell.stdout, &[]);
    assert!(ran.ok, "{}\n{}", ran.stderr, shell.stdout);
    assert_eq!(ran.calls.len(), 2, "{:?}", ran.calls);
    assert_eq!(
        ran.calls[0],
        words(&[
            "aws",
            "iam",
            "create-open-id-connect-provider",
            "--url",
            &iss,
            "--client-id-list",
            &aud
        ])
    );
    let (update, policy) = ran.calls[1].split_at(5.min(ran.calls[1].len()));
    assert_eq!(
        update,
        words(&[
            "aws",
            "iam",
            "update-assume-role-policy",
            "--role-name",
            "onprem-web"
        ])
    );
    assert_eq!(policy[0], "--policy-document");
    assert_eq!(json_of(&policy[1]), expected_policy);
    assert!(
        shell.stdout.trim_end().ends_with(&format!(
            "sub {} and aud {}.",
            Value::from(ODD_SUB),
            Value::from(ODD_AUD)
        )),
        "{}",
        shell.stdout
    );

    let doc = json_of(&trust(&fx, "aws", "json", &[]).await.stdout);
    assert_eq!(doc["trust_policy"], expected_policy);
    assert_eq!(
        doc["oidc_provider"],
        json!({"Arn": provider_arn, "Url": iss, "ClientIDList": [aud]})
    );
    assert_eq!(
        doc["role"],
        json!({"Arn": ROLE_ARN, "RoleName": "onprem-web", "Path": "/team/"})
    );

    let tf = terraform(
        &fx,
        "aws",
        &trust(&fx, "aws", "terraform", &[]).await.stdout,
    );
    // Issue 12: `terraform init` finds the providers, in versions that take what is printed.
    assert_eq!(
        required_providers(&tf),
        &json!({"aws": {"source": "hashicorp/aws", "version": ">= 5.81.0"}})
    );
    assert_eq!(
        block(&tf, "resource", "aws_iam_openid_connect_provider", "aws"),
        &json!({"url": iss, "client_id_list": [aud]})
    );
    let role = block(&tf, "resource", "aws_iam_role", "aws");
    assert_eq!(
        (&role["name"], &role["path"]),
        (&json!("onprem-web"), &json!("/team/"))
    );
    let mut policy = expected_policy.clone();
    // In Terraform, the provider is the resource's ARN.
    policy["Statement"][0]["Principal"]["Federated"] =
        "${aws_iam_openid_connect_provider.aws.arn}".into();
    assert_eq!(role["assume_role_policy"], json!({"jsonencode": policy}));

    // The Keycloak side's Terraform parses too, and names keycloak/keycloak, which
    // `terraform init` would otherwise look for as hashicorp/keycloak.
    let keycloak = terraform(
        &fx,
        "keycloak",
        &trust(&fx, "aws", "terraform", &["--keycloak"]).await.stdout,
    );
    assert_eq!(
        required_providers(&keycloak),
        &json!({"keycloak": {"source": "keycloak/keycloak", "version": ">= 5.0.0"}})
    );
    assert_eq!(
        block(
            &keycloak,
            "resource",
            "keycloak_openid_client",
            "host-secret"
        )["client_id"],
        "host-secret"
    );
}

#[tokio::test]
async fn issue_12_gcp_trusts_the_tokens_claims_with_the_issuers_keys_uploaded() {
    let fx = fixture().await;
    let shell = trust(&fx, "gcp", "shell", &[]).await;
    let c = token_claims(&fx);
    let (iss, sub, aud) = (claim(&c, "iss"), claim(&c, "sub"), claim(&c, "aud"));
    let principal = format!("principal://iam.googleapis.com/{}/subject/{sub}", pool());
    shell.says("wrote its JWKS to ./gcp-jwks.json");

    // The issuer's signing keys, as Google takes them: the emulator's encryption key and any
    // field Google refuses left out.
    let published: Value = reqwest::get(format!("{iss}/protocol/openid-connect/certs"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let signing: Vec<Value> = published["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["use"] == "sig")
        .map(|k| json!({"kty": k["kty"], "alg": k["alg"], "use": "sig", "kid": k["kid"], "n": k["n"], "e": k["e"]}))
        .collect();
    assert!(
        !signing.is_empty() && published["keys"].as_array().map_or(0, Vec::len) > signing.len()
    );
    let google_jwks = json!({"keys": signing});
    let written = std::fs::read_to_string(fx.path("gcp-jwks.json")).unwrap_or_default();
    assert_eq!(json_of(&written), google_jwks);

    let ran = run_script(&fx, "gcp", &shell.stdout, &[]);
    assert!(ran.ok, "{}\n{}", ran.stderr, shell.stdout);
    let project = format!("--project={PROJECT_ID}");
    assert_eq!(
        ran.calls,
        vec![
            words(&[
                "gcloud",
                "services",
                "enable",
                "iam.googleapis.com",
                "cloudresourcemanager.googleapis.com",
                "iamcredentials.googleapis.com",
                "sts.googleapis.com",
                &project
            ]),
            words(&[
                "gcloud",
                "iam",
                "workload-identity-pools",
                "create",
                "onprem",
                &project,
                "--location=global"
            ]),
            words(&[
                "gcloud",
                "iam",
                "workload-identity-pools",
                "providers",
                "create-oidc",
                "keycloak",
                &project,
                "--location=global",
                "--workload-identity-pool=onprem",
                &format!("--issuer-uri={iss}"),
                // Issue 12: the audience holds a comma, so it takes gcloud's other delimiter.
                &format!("--allowed-audiences=^:^{aud}"),
                "--attribute-mapping=google.subject=assertion.sub",
                "--jwk-json-path=./gcp-jwks.json"
            ]),
            words(&[
                "gcloud",
                "iam",
                "service-accounts",
                "add-iam-policy-binding",
                SERVICE_ACCOUNT,
                "--role=roles/iam.workloadIdentityUser",
                &format!("--member={principal}")
            ]),
        ]
    );

    let allowed = ran.calls[2][10]
        .strip_prefix("--allowed-audiences=")
        .unwrap_or_else(|| panic!("{:?}", ran.calls[2]));
    assert_eq!(gcloud_list(allowed), [aud.as_str()]);

    let doc = json_of(&trust(&fx, "gcp", "json", &[]).await.stdout);
    let services = &ran.calls[0][3..7];
    assert_eq!(doc["services"], json!(services));
    assert_eq!(doc["pool"], json!({"name": pool(), "body": {}}));
    assert_eq!(doc["provider"]["name"], PROVIDER);
    let oidc = &doc["provider"]["body"]["oidc"];
    assert_eq!(
        (&oidc["issuerUri"], &oidc["allowedAudiences"]),
        (&json!(iss), &json!([aud]))
    );
    assert_eq!(
        json_of(oidc["jwksJson"].as_str().unwrap_or_default()),
        google_jwks
    );
    assert_eq!(
        doc["provider"]["body"]["attributeMapping"],
        json!({"google.subject": "assertion.sub"})
    );
    assert_eq!(doc["principal"], principal);
    assert_eq!(
        doc["binding"],
        json!({
            "resource": format!("projects/{PROJECT_ID}/serviceAccounts/{SERVICE_ACCOUNT}"),
            "role": "roles/iam.workloadIdentityUser",
            "member": principal,
        })
    );

    let tf = terraform(
        &fx,
        "gcp",
        &trust(&fx, "gcp", "terraform", &[]).await.stdout,
    );
    assert_eq!(
        required_providers(&tf),
        &json!({"google": {"source": "hashicorp/google", "version": ">= 4.71.0"}})
    );
    let enabled = block(&tf, "resource", "google_project_service", "gcp");
    let quoted: Vec<String> = services.iter().map(|s| format!("\"{s}\"")).collect();
    assert_eq!(
        enabled["for_each"],
        format!("${{toset([{}])}}", quoted.join(", "))
    );
    assert_eq!(
        (&enabled["project"], &enabled["service"]),
        (&json!(PROJECT_ID), &json!("${each.value}"))
    );
    assert_eq!(
        block(&tf, "resource", "google_iam_workload_identity_pool", "gcp"),
        &json!({"project": PROJECT_ID, "workload_identity_pool_id": "onprem"})
    );
    let provider = block(
        &tf,
        "resource",
        "google_iam_workload_identity_pool_provider",
        "gcp",
    );
    assert_eq!(provider["workload_identity_pool_provider_id"], "keycloak");
    assert_eq!(
        provider["workload_identity_pool_id"],
        "${google_iam_workload_identity_pool.gcp.workload_identity_pool_id}"
    );
    assert_eq!(
        provider["attribute_mapping"],
        json!({"google.subject": "assertion.sub"})
    );
    let oidc = &provider["oidc"][0];
    assert_eq!(
        (&oidc["issuer_uri"], &oidc["allowed_audiences"]),
        (&json!(iss), &json!([aud]))
    );
    assert_eq!(
        json_of(oidc["jwks_json"].as_str().unwrap_or_default()),
        google_jwks
    );
    assert_eq!(
        block(&tf, "resource", "google_service_account_iam_member", "gcp"),
        &json!({
            "service_account_id": format!("projects/{PROJECT_ID}/serviceAccounts/{SERVICE_ACCOUNT}"),
            "role": "roles/iam.workloadIdentityUser",
            "member": principal,
        })
    );
}

#[tokio::test]
async fn issue_12_gcp_without_a_service_account_names_the_principal_to_grant_roles_to() {
    let fx = fixture().await;
    // --jwks-file puts the keys where the operator says, folders made on the way.
    let shell = trust(
        &fx,
        "gcp.principal",
        "shell",
        &["--jwks-file", "keys/gcp.json"],
    )
    .await;
    let c = token_claims(&fx);
    let principal = format!(
        "principal://iam.googleapis.com/{}/subject/{}",
        pool(),
        claim(&c, "sub")
    );
    assert!(fx.path("keys/gcp.json").exists() && !fx.path("gcp.principal-jwks.json").exists());
    let ran = run_script(&fx, "principal", &shell.stdout, &[]);
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(
        ran.calls.len(),
        3,
        "no binding without a service account: {:?}",
        ran.calls
    );
    assert_eq!(
        ran.calls[2].last().map(String::as_str),
        Some("--jwk-json-path=keys/gcp.json")
    );
    // The project is the provider's number when no project_id is configured.
    assert!(
        ran.calls[0].contains(&"--project=123456789".to_owned()),
        "{:?}",
        ran.calls
    );
    // Without --jwks-file the file is named for the target, made safe for a file name.
    trust(&fx, "gcp.principal", "shell", &[]).await;
    assert!(fx.path("gcp.principal-jwks.json").exists());

    let doc = json_of(&trust(&fx, "gcp.principal", "json", &[]).await.stdout);
    assert_eq!(
        (&doc["principal"], &doc["binding"]),
        (&json!(principal), &Value::Null)
    );
    let tf = terraform(
        &fx,
        "principal",
        &trust(&fx, "gcp.principal", "terraform", &[]).await.stdout,
    );
    assert_eq!(
        block(&tf, "output", "gcp_principal_principal", "value"),
        &json!(principal)
    );
    assert!(
        tf["resource"]
            .to_string()
            .contains("google_iam_workload_identity_pool_provider")
    );
    assert!(
        !tf["resource"]
            .to_string()
            .contains("google_service_account_iam_member")
    );
}

#[tokio::test]
async fn issue_12_azure_federated_credentials_carry_the_tokens_claims() {
    let fx = fixture().await;
    let shell = trust(&fx, "azure", "shell", &[]).await;
    let c = token_claims(&fx);
    let (iss, sub, aud) = (claim(&c, "iss"), claim(&c, "sub"), claim(&c, "aud"));
    let name = "keyfed-host-secret";

    // An app registration: no IDENTITY_NAME.
    let app = run_script(&fx, "app", &shell.stdout, &[]);
    assert!(app.ok, "{}\n{}", app.stderr, shell.stdout);
    assert_eq!(app.calls.len(), 1, "{:?}", app.calls);
    let call = &app.calls[0];
    assert_eq!(
        call[..7],
        words(&[
            "az",
            "ad",
            "app",
            "federated-credential",
            "create",
            "--id",
            APP
        ])
    );
    assert_eq!(call[7], "--parameters");
    let credential = json_of(&call[8]);
    assert_eq!(
        (
            &credential["name"],
            &credential["issuer"],
            &credential["subject"],
            &credential["audiences"]
        ),
        (&json!(name), &json!(iss), &json!(sub), &json!([aud]))
    );

    // A user-assigned managed identity: its name and resource group from the environment.
    let managed = run_script(
        &fx,
        "managed",
        &shell.stdout,
        &[("IDENTITY_NAME", "my id"), ("RESOURCE_GROUP", "rg 1")],
    );
    assert!(managed.ok, "{}", managed.stderr);
    assert_eq!(
        managed.calls,
        vec![words(&[
            "az",
            "identity",
            "federated-credential",
            "create",
            "--name",
            name,
            "--identity-name",
            "my id",
            "--resource-group",
            "rg 1",
            "--issuer",
            &iss,
            "--subject",
            &sub,
            "--audiences",
            &aud
        ])]
    );
    // Without the resource group the script stops, saying what to set, before calling az.
    let unset = run_script(&fx, "unset", &shell.stdout, &[("IDENTITY_NAME", "my id")]);
    assert!(!unset.ok && unset.calls.is_empty(), "{:?}", unset.calls);
    assert!(
        unset.stderr.contains("set RESOURCE_GROUP"),
        "{}",
        unset.stderr
    );

    let doc = json_of(&trust(&fx, "azure", "json", &[]).await.stdout);
    assert_eq!(doc, credential);

    let tf = terraform(
        &fx,
        "azure",
        &trust(&fx, "azure", "terraform", &[]).await.stdout,
    );
    assert_eq!(
        required_providers(&tf),
        &json!({
            "azuread": {"source": "hashicorp/azuread", "version": ">= 2.46.0"},
            "azurerm": {"source": "hashicorp/azurerm", "version": ">= 3.31.0"},
        })
    );
    let app_data = block(&tf, "data", "azuread_application", "azure");
    assert_eq!(app_data["client_id"], APP);
    let fic = block(
        &tf,
        "resource",
        "azuread_application_federated_identity_credential",
        "azure",
    );
    assert_eq!(
        fic["application_id"],
        "${data.azuread_application.azure[0].id}"
    );
    assert_eq!(
        (
            &fic["display_name"],
            &fic["issuer"],
            &fic["subject"],
            &fic["audiences"]
        ),
        (&json!(name), &json!(iss), &json!(sub), &json!([aud]))
    );
    let mi = block(
        &tf,
        "resource",
        "azurerm_federated_identity_credential",
        "azure",
    );
    assert_eq!(
        (&mi["name"], &mi["issuer"], &mi["subject"], &mi["audience"]),
        (&json!(name), &json!(iss), &json!(sub), &json!([aud]))
    );
    assert_eq!(mi["parent_id"], "${var.azure_managed_identity_id}");
    // Exactly one of the two is created, as the variable says.
    assert_eq!(
        fic["count"],
        "${var.azure_managed_identity_id == null ? 1 : 0}"
    );
    assert_eq!(
        mi["count"],
        "${var.azure_managed_identity_id == null ? 0 : 1}"
    );
}

#[tokio::test]
async fn issue_12_a_token_target_is_refused_and_a_failed_fetch_points_to_doctor() {
    let fx = fixture().await;
    let run = fx.keyfed(&["trust", "api"]).await;
    run.fails_with(2)
        .says("target \"api\" trades its token with no cloud")
        .says("keyfed trust api --keycloak");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        fx.keycloak().token_requests(),
        0,
        "nothing to fetch for a token target"
    );
    fx.keyfed(&["trust", "nope"])
        .await
        .fails_with(2)
        .says("no target named \"nope\"");
    // A scope the client does not have: Keycloak refuses, and keyfed names the command that
    // checks each step.
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replacen(
            &format!("scope = \"{ODD_SCOPE}\""),
            "scope = \"unlinked\"",
            1,
        ),
    );
    let failed = fx.keyfed(&["trust", "aws"]).await;
    failed
        .fails_with(1)
        .says("cannot get a token for target \"aws\"")
        .says("`keyfed doctor aws`");
    assert!(failed.stdout.is_empty(), "{}", failed.stdout);
}

/// `sh -c` binding `$0` over /etc/hosts in a new mount namespace, then running the rest.
const WITH_HOSTS: &str = "mount --bind \"$0\" /etc/hosts && exec \"$@\"";
const PUBLIC_HOST: &str = "sso.example.com";

/// keyfed with the issuer at a public-looking https URL: the emulator over TLS under the name
/// `sso.example.com`, which keyfed's own hosts file (in a mount namespace of its own) maps to
/// loopback. Google then fetches the keys itself: no JWKS file, no `--jwk-json-path`.
#[tokio::test]
async fn issue_12_a_public_issuer_needs_no_uploaded_keys() {
    if !crate::util::as_root_or_skip("issue_12_a_public_issuer_needs_no_uploaded_keys") {
        return;
    }
    let mut fx = Fixture::new();
    let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
    let certificate = ca
        .server_config_for(&[PUBLIC_HOST])
        .unwrap_or_else(|e| panic!("certificate: {e}"));
    let realm = fx.realm();
    fx.start(
        KeycloakEmulator::builder(realm)
            .tls(&ca)
            .public_host(PUBLIC_HOST),
    )
    .await;
    fx.keycloak()
        .control()
        .present_certificate(Some(certificate));
    fx.write("corp-ca.pem", ca.ca_pem());
    fx.write_credentials();
    let hosts = fx.write(
        "hosts",
        &format!("127.0.0.1 localhost\n127.0.0.1 {PUBLIC_HOST}\n"),
    );
    crate::util::set_mode(&hosts, 0o644);
    fx.config(&format!(
        "[issuers.corp]\nurl = \"{{issuer}}\"\nclient_id = \"host-secret\"\n\
         client_secret_file = \"client-secret\"\nca_file = \"corp-ca.pem\"\n\n\
         [targets.gcp]\nissuer = \"corp\"\nscope = \"gcp-audience\"\naudience = \"{}\"\n\
         gcp = {{ provider = \"{PROVIDER}\", service_account = \"{SERVICE_ACCOUNT}\" }}\n\n\
         [targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
         aws = {{ role_arn = \"arn:aws:iam::123456789012:role/onprem-web\", region = \"eu-west-1\" }}\n",
        crate::util::gcp::GCP_AUD
    ));
    let hosts = hosts.display().to_string();
    let prefix = ["unshare", "--mount", "sh", "-c", WITH_HOSTS, &hosts];
    let env = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")];
    let gcp = fx.keyfed_behind(&prefix, &["trust", "gcp"], &env).await;
    gcp.ok();
    let iss = fx.keycloak().issuer_url();
    assert!(iss.starts_with(&format!("https://{PUBLIC_HOST}:")), "{iss}");
    assert!(
        gcp.stdout.contains(&format!("--issuer-uri={iss}")),
        "{}",
        gcp.stdout
    );
    assert!(!gcp.stdout.contains("jwk-json-path"), "{}", gcp.stdout);
    assert!(!gcp.stderr.contains("note:") && !fx.path("gcp-jwks.json").exists());
    let tf = fx
        .keyfed_behind(&prefix, &["trust", "gcp", "--format", "terraform"], &env)
        .await;
    tf.ok();
    assert!(!tf.stdout.contains("jwks_json"), "{}", tf.stdout);
    let aws = fx.keyfed_behind(&prefix, &["trust", "aws"], &env).await;
    aws.ok();
    // AWS can reach this issuer; only its port (the emulator's) is worth a warning.
    let warnings: Vec<&str> = aws
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", aws.stderr);
    assert!(warnings[0].contains("names port"), "{}", aws.stderr);
    assert!(
        aws.stdout
            .contains(&format!("oidc-provider/{}", without_scheme(&iss))),
        "{}",
        aws.stdout
    );
}
