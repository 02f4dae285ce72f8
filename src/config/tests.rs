use std::path::{Path, PathBuf};

use keyfed_core::exchange::SlotKey;

use super::*;

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn flag_beats_environment_beats_default() {
    let env = env_of(&[("KEYFED_CONFIG", "/from/env.toml")]);
    assert_eq!(
        locate(Some(Path::new("/from/flag.toml")), &env, true),
        PathBuf::from("/from/flag.toml")
    );
    assert_eq!(locate(None, &env, true), PathBuf::from("/from/env.toml"));
    assert_eq!(
        locate(None, &env_of(&[]), true),
        PathBuf::from(SYSTEM_CONFIG)
    );
}

/// issue 9 (review): `--config keyfed.toml` made an external_account file name its subject
/// token and command relative to the consumer's working directory.
#[test]
fn a_relative_config_path_is_made_absolute_issue_9() {
    let env = env_of(&[("KEYFED_CONFIG", "from-env.toml")]);
    let cwd = std::env::current_dir().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        locate(Some(Path::new("keyfed.toml")), &env, true),
        cwd.join("keyfed.toml")
    );
    assert_eq!(locate(None, &env, true), cwd.join("from-env.toml"));
}

#[test]
fn a_user_config_is_used_only_by_non_root_and_only_when_present() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let home = dir.path().to_str().unwrap_or_default().to_owned();
    let env = move |name: &str| (name == "HOME").then(|| home.clone());
    assert_eq!(locate(None, &env, false), PathBuf::from(SYSTEM_CONFIG));
    let user = dir.path().join(".config/keyfed/keyfed.toml");
    std::fs::create_dir_all(user.parent().unwrap_or(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&user, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(locate(None, &env, false), user);
    assert_eq!(locate(None, &env, true), PathBuf::from(SYSTEM_CONFIG));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("secret"), "s\n").unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("keyfed.toml");
    std::fs::write(
        &file,
        "[issuers.a]\nurl = \"https://sso.example.com/realms/r\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"\n\
         [targets.t]\nissuer = \"a\"\naudience = \"x\"\nscope = [\"s1\", \"s2\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let host = Host {
        hostname: "web-01".into(),
        is_root: true,
    };
    let config = load(&file, &|_| None, &host).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.issuers["a"].secret_source,
        SecretSource::File(dir.path().join("secret"))
    );
    assert_eq!(config.targets["t"].request.scope.as_deref(), Some("s1 s2"));
    // The secret file is 0644, so the loose mode is reported.
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("readable by group or others"))
    );
}

const ISSUER: &str = "[issuers.corp]\nurl = \"https://sso.example.com/realms/r\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"\n";
const AWS: &str = "[targets.a]\nissuer = \"corp\"\n[targets.a.aws]\nrole_arn = \"arn:aws:iam::123456789012:role/app\"\nregion = \"eu-west-1\"\n";

/// Loads `body` as `keyfed.toml` beside a 0600 secret; the error as `keyfed check` prints it,
/// with the temporary folder written as `DIR`.
fn load_text(body: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("keyfed.toml");
    std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
    let host = Host {
        hostname: "web-01".into(),
        is_root: true,
    };
    let shown = dir.path().display().to_string();
    load(&file, &|_| None, &host).map_err(|e| e.to_string().replace(&shown, "DIR"))
}

fn error_of(body: &str) -> String {
    load_text(body).err().unwrap_or_default()
}

/// issue 9: the AWS table is checked by keyfed-aws, which names keys within the table; the
/// host puts them at their full path, after the file, as before.
#[test]
fn cloud_table_errors_are_put_at_their_full_key_path_issue_9() {
    let config = load_text(&format!("{ISSUER}{AWS}")).unwrap_or_else(|e| panic!("{e}"));
    let Exchange::Aws(aws) = &config.targets["a"].exchange else {
        panic!("not an AWS target");
    };
    assert_eq!(aws.session_name, "web-01");
    assert_eq!(config.targets["a"].request.audience, "sts.amazonaws.com");
    for (extra, says) in [
        (
            "rolle = 1\n",
            "DIR/keyfed.toml:10:1: targets.a.aws.rolle: unknown field `rolle`, expected one of `role_arn`, `region`,",
        ),
        (
            "duration = \"10m\"\n",
            "DIR/keyfed.toml: targets.a.aws.duration: expected between 15m and 12h",
        ),
        (
            "policy_arns = [\"x\"]\n",
            "DIR/keyfed.toml: targets.a.aws.policy_arns: expected managed policy ARNs",
        ),
        (
            "ca_file = \"ca.pem\"\n",
            "DIR/keyfed.toml: targets.a.aws.ca_file: DIR/ca.pem is not a readable file",
        ),
        (
            "timeout = \"0s\"\n",
            "DIR/keyfed.toml: targets.a.aws.timeout: expected a duration greater than zero",
        ),
        (
            "connect_timeout = \"soon\"\n",
            "DIR/keyfed.toml:10:19: targets.a.aws.connect_timeout: expected a duration such as",
        ),
        (
            "fips = true\nendpoint_url = \"https://sts.example.com\"\n",
            "DIR/keyfed.toml: targets.a.aws.fips: fips = true selects AWS's FIPS endpoint",
        ),
    ] {
        let err = error_of(&format!("{ISSUER}{AWS}{extra}"));
        assert!(err.starts_with(says), "{extra}: {err}");
    }
}

/// issue 9: issuers and clouds read the HTTP keys with one resolver, so the same mistake gets
/// the same words in both tables.
#[test]
fn the_http_keys_read_alike_in_issuers_and_clouds_issue_9() {
    for (table, body) in [
        (
            "issuers.corp",
            format!("{ISSUER}ca_file = \"ca.pem\"\n{AWS}"),
        ),
        (
            "targets.a.aws",
            format!("{ISSUER}{AWS}ca_file = \"ca.pem\"\n"),
        ),
    ] {
        assert_eq!(
            error_of(&body),
            format!("DIR/keyfed.toml: {table}.ca_file: DIR/ca.pem is not a readable file")
        );
    }
    let config = load_text(&format!(
        "{ISSUER}timeout = \"1m\"\n{AWS}connect_timeout = \"2s\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.issuers["corp"].settings.http.timeout,
        std::time::Duration::from_secs(60)
    );
    let Exchange::Aws(aws) = &config.targets["a"].exchange else {
        panic!("not an AWS target");
    };
    assert_eq!(aws.http.connect_timeout, std::time::Duration::from_secs(2));
    let shown = show(&config);
    assert!(shown.contains("connect_timeout = \"2s\""), "{shown}");
}

/// issue 9: output kinds are declared by the cloud they serve (and `token` by the host); each
/// is refused on a target of another kind, and a cloud's output keys on other kinds.
#[test]
fn output_kinds_serve_their_own_kind_of_target_issue_9() {
    let token = "[targets.t]\nissuer = \"corp\"\naudience = \"x\"\n";
    let output = |target: &str, kind: &str, extra: &str| {
        let at = if target == token { "t" } else { "a" };
        format!(
            "{ISSUER}{target}[[targets.{at}.outputs]]\nkind = \"{kind}\"\npath = \"out\"\n{extra}"
        )
    };
    for (target, kind) in [
        (AWS, "aws-credentials"),
        (AWS, "credential-process-json"),
        (token, "web-identity-token"),
        (token, "token"),
    ] {
        let config = load_text(&output(target, kind, "")).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            config.targets.values().any(|t| t.outputs[0].name == kind),
            "{kind}"
        );
    }
    for (target, kind, needs, is) in [
        (AWS, "token", "token", "aws"),
        (AWS, "web-identity-token", "token", "aws"),
        (token, "aws-credentials", "aws", "token"),
        (token, "credential-process-json", "aws", "token"),
    ] {
        let err = error_of(&output(target, kind, ""));
        assert!(
            err.ends_with(&format!(
                ".outputs[0].kind: a \"{kind}\" output needs a target of kind {needs}, but this target is of kind {is}"
            )),
            "{err}"
        );
    }
    assert!(
        error_of(&output(AWS, "credential-process-json", "merge = true\n"))
            .ends_with("targets.a.outputs[0].merge: is only used with kind = \"aws-credentials\"")
    );
    assert!(
        error_of(&output(AWS, "aws-credentials", "profile = \"\"\n"))
            .ends_with("targets.a.outputs[0].profile: expected a profile name, found \"\"")
    );
    assert_eq!(
        error_of(&output(token, "oci-token", "")),
        "DIR/keyfed.toml:9:8: targets.t.outputs[0].kind: unknown variant `oci-token`, \
         expected one of `aws-credentials`, `credential-process-json`, `web-identity-token`, \
         `gcp-access-token`, `gcp-subject-token`, `gcp-external-account`, \
         `azure-access-token`, `azure-federated-token`, `token`"
    );
    let merged = load_text(&output(
        AWS,
        "aws-credentials",
        "profile = \"p\"\nmerge = true\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = show(&merged);
    assert!(
        shown.contains(
            "profile = \"p\"\nmerge = true\nmode = \"(kept from the existing file, else 0600)\""
        ),
        "{shown}"
    );
}

const PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/onprem/providers/keycloak";

fn gcp(extra: &str) -> String {
    format!(
        "{ISSUER}[targets.g]\nissuer = \"corp\"\n[targets.g.gcp]\nprovider = \"{PROVIDER}\"\n{extra}"
    )
}

/// issue 9: a GCP target's table is checked by keyfed-gcp with errors at their full key path;
/// its audience defaults to the provider's default allowed audience.
#[test]
fn gcp_tables_are_checked_at_their_full_key_path_issue_9() {
    let config = load_text(&gcp("")).unwrap_or_else(|e| panic!("{e}"));
    let Exchange::Gcp(g) = &config.targets["g"].exchange else {
        panic!("not a GCP target");
    };
    assert_eq!(g.project_number, "123456789012");
    assert_eq!(
        config.targets["g"].request.audience,
        format!("https://iam.googleapis.com/{PROVIDER}")
    );
    assert!(show(&config).contains("[targets.g.gcp]"));
    for (extra, says) in [
        (
            "service_account = \"app\"\n",
            "DIR/keyfed.toml: targets.g.gcp.service_account: expected a service account's email",
        ),
        (
            "service_account = \"a@b.iam.gserviceaccount.com\"\nlifetime = \"13h\"\n",
            "DIR/keyfed.toml: targets.g.gcp.lifetime: expected between 10m and 12h",
        ),
        (
            "delegates = [\"projects/-/serviceAccounts/a@b.iam.gserviceaccount.com\"]\n",
            "DIR/keyfed.toml: targets.g.gcp.delegates: is only used with service_account",
        ),
        (
            "sts_url = \"http://sts.example.com/v1/token\"\n",
            "DIR/keyfed.toml: targets.g.gcp.sts_url: http://sts.example.com/v1/token uses plain http://",
        ),
        (
            "project_id = \"X\"\n",
            "DIR/keyfed.toml: targets.g.gcp.project_id: expected a project ID",
        ),
        (
            "pool = \"x\"\n",
            "DIR/keyfed.toml:9:1: targets.g.gcp.pool: unknown field `pool`, expected one of `provider`, `service_account`, `scopes`, `lifetime`, `delegates`, `project_id`, `project_number`, `sts_url`, `iam_url`, `ca_file`,",
        ),
    ] {
        let err = error_of(&gcp(extra));
        assert!(err.starts_with(says), "{extra}: {err}");
    }
    let bad_provider = error_of(&gcp("").replace(PROVIDER, "projects/p/providers/x"));
    assert!(
        bad_provider.starts_with(
            "DIR/keyfed.toml: targets.g.gcp.provider: expected a workload identity pool provider"
        ),
        "{bad_provider}"
    );
    let both = error_of(&format!(
        "{}[targets.g.aws]\nrole_arn = \"arn:aws:iam::123456789012:role/app\"\nregion = \"eu-west-1\"\n",
        gcp("")
    ));
    assert!(
        both.ends_with(
            "targets.g.gcp: a target trades its token with one cloud, and this one has a table for aws already"
        ),
        "{both}"
    );
}

/// issue 9: the external_account document is fixed by the configuration: Google's libraries
/// exchange at `sts_url` and impersonate like keyfed would; a file-sourced one names the
/// subject-token file written beside it (written from the subject token's own slot).
#[test]
fn gcp_outputs_render_what_google_s_libraries_read_issue_9() {
    let outputs = "[[targets.g.outputs]]\nkind = \"gcp-external-account\"\npath = \"ea.json\"\n\
                   [[targets.g.outputs]]\nkind = \"gcp-external-account\"\npath = \"exe.json\"\ncredential_source = \"executable\"\n\
                   [[targets.g.outputs]]\nkind = \"gcp-access-token\"\npath = \"at\"\nformat = \"json\"\n";
    let text = format!(
        "{ISSUER}[targets.g]\nissuer = \"corp\"\n{outputs}[targets.g.gcp]\nprovider = \"{PROVIDER}\"\n\
         service_account = \"app@p.iam.gserviceaccount.com\"\nlifetime = \"2h\"\n"
    );
    let config = load_text(&text).unwrap_or_else(|e| panic!("{e}"));
    let outputs = &config.targets["g"].outputs;
    let crate::outputs::OutputKind::GcpExternalAccount {
        document,
        subject_token: Some(token_path),
    } = &outputs[0].kind
    else {
        panic!("{:?}", outputs[0].kind);
    };
    assert_eq!(token_path, &outputs[0].path.with_extension("jwt"));
    assert_eq!(outputs[0].kind.slot(), Some(SlotKey::SubjectToken));
    let doc: serde_json::Value = serde_json::from_str(document).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["type"], "external_account");
    assert_eq!(doc["audience"], format!("//iam.googleapis.com/{PROVIDER}"));
    assert_eq!(
        doc["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(doc["token_url"], "https://sts.googleapis.com/v1/token");
    assert_eq!(
        doc["credential_source"]["file"],
        token_path.display().to_string()
    );
    assert_eq!(doc["credential_source"]["format"]["type"], "text");
    assert_eq!(
        doc["service_account_impersonation_url"],
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/app@p.iam.gserviceaccount.com:generateAccessToken"
    );
    assert_eq!(
        doc["service_account_impersonation"]["token_lifetime_seconds"],
        7200
    );
    let crate::outputs::OutputKind::GcpExternalAccount {
        document,
        subject_token: None,
    } = &outputs[1].kind
    else {
        panic!("{:?}", outputs[1].kind);
    };
    assert_eq!(outputs[1].kind.slot(), Some(SlotKey::SubjectToken));
    let doc: serde_json::Value = serde_json::from_str(document).unwrap_or_else(|e| panic!("{e}"));
    let command = doc["credential_source"]["executable"]["command"]
        .as_str()
        .unwrap_or_default();
    assert!(
        command.ends_with(&format!(
            " --config {} gcp-subject-token g",
            config.file.display()
        )),
        "{command}"
    );
    assert_eq!(
        doc["credential_source"]["executable"]["timeout_millis"],
        30000
    );
    assert_eq!(
        outputs[2].kind,
        crate::outputs::OutputKind::GcpAccessToken { json: true }
    );
    for (extra, says) in [
        (
            "kind = \"gcp-access-token\"\npath = \"x\"\nformat = \"yaml\"\n",
            "targets.g.outputs[0].format: expected `raw` or `json`, found \"yaml\"",
        ),
        (
            "kind = \"gcp-subject-token\"\npath = \"x\"\nformat = \"json\"\n",
            "targets.g.outputs[0].format: is only used with kind = \"gcp-access-token\" or \"azure-access-token\"",
        ),
        (
            "kind = \"gcp-access-token\"\npath = \"x\"\nformat = \"raw\"\n[[targets.g.outputs]]\nkind = \"gcp-subject-token\"\npath = \"y\"\nformat = \"raw\"\n",
            "targets.g.outputs[1].format: is only used with kind = \"gcp-access-token\" or \"azure-access-token\"",
        ),
        (
            "kind = \"gcp-external-account\"\npath = \"x\"\ncredential_source = \"url\"\n",
            "targets.g.outputs[0].credential_source: expected `file` or `executable`, found \"url\"",
        ),
        (
            "kind = \"gcp-external-account\"\npath = \"x\"\ncredential_source = \"executable\"\nsubject_token_path = \"t\"\n",
            "targets.g.outputs[0].subject_token_path: is only used with credential_source = \"file\"",
        ),
        (
            "kind = \"gcp-external-account\"\npath = \"a.json\"\n[[targets.g.outputs]]\nkind = \"gcp-subject-token\"\npath = \"a.jwt\"\n",
            "targets.g.outputs[1].path: DIR/a.jwt is also written by targets.g.outputs[0].subject_token_path",
        ),
    ] {
        let text = format!(
            "{ISSUER}[targets.g]\nissuer = \"corp\"\n[[targets.g.outputs]]\n{extra}[targets.g.gcp]\nprovider = \"{PROVIDER}\"\n"
        );
        let err = error_of(&text);
        assert!(err.ends_with(says), "{extra}: {err}");
    }
}

/// issue 9 (review): gcp_auth and Go's metadata client fail on a metadata server without a
/// project ID; serving a GCP target without `project_id` on the GCE face is warned about.
#[test]
fn a_gce_target_without_project_id_is_warned_about_issue_9() {
    let config = load_text(&format!("{}[endpoint]\ngce_target = \"g\"\n", gcp("")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.warnings.iter().any(|w| w
            .starts_with("targets.g.gcp.project_id is not set: the GCE metadata face answers 404")),
        "{:?}",
        config.warnings
    );
    let config = load_text(&format!(
        "{}[endpoint]\ngce_target = \"g\"\n",
        gcp("project_id = \"my-project\"\n")
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !config.warnings.iter().any(|w| w.contains("project_id")),
        "{:?}",
        config.warnings
    );
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

fn azure(extra: &str, outputs: &str) -> String {
    format!(
        "{ISSUER}[targets.z]\nissuer = \"corp\"\n{outputs}[targets.z.azure]\n\
         tenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n{extra}"
    )
}

/// issue 10: an Azure target's audience defaults to api://AzureADTokenExchange, its first
/// scope is the main credential and its other scopes are kept fresh as variants; outputs name
/// one of them, or are refused naming the target's scopes.
#[test]
fn azure_targets_and_their_outputs_issue_10() {
    let config = load_text(&azure("", "")).unwrap_or_else(|e| panic!("{e}"));
    let Exchange::Azure(a) = &config.targets["z"].exchange else {
        panic!("not an Azure target");
    };
    assert_eq!(a.scopes, ["https://management.azure.com/.default"]);
    assert_eq!(
        a.token_url(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        config.targets["z"].request.audience,
        "api://AzureADTokenExchange"
    );
    let scopes = "scopes = [\"https://management.azure.com/.default\", \"https://vault.azure.net/.default\"]\n";
    let outputs = "[[targets.z.outputs]]\nkind = \"azure-access-token\"\npath = \"arm\"\n\
                   [[targets.z.outputs]]\nkind = \"azure-access-token\"\npath = \"vault.json\"\nscope = \"https://vault.azure.net\"\nformat = \"json\"\n\
                   [[targets.z.outputs]]\nkind = \"azure-federated-token\"\npath = \"federated.jwt\"\n";
    let config = load_text(&azure(scopes, outputs)).unwrap_or_else(|e| panic!("{e}"));
    let outputs = &config.targets["z"].outputs;
    assert_eq!(
        outputs[0].kind,
        crate::outputs::OutputKind::AzureAccessToken {
            scope: None,
            json: false
        }
    );
    assert_eq!(outputs[0].kind.slot(), None);
    assert_eq!(
        outputs[1].kind.slot(),
        Some(SlotKey::Resource(
            "https://vault.azure.net/.default".to_owned()
        ))
    );
    assert_eq!(outputs[2].kind.slot(), Some(SlotKey::SubjectToken));
    assert_eq!(
        azure_slots(match &config.targets["z"].exchange {
            Exchange::Azure(a) => a,
            _ => panic!("not an Azure target"),
        }),
        [SlotKey::Resource(
            "https://vault.azure.net/.default".to_owned()
        )]
    );
    let shown = show(&config);
    assert!(shown.contains("[targets.z.azure]"), "{shown}");
    for (outputs, says) in [
        (
            "[[targets.z.outputs]]\nkind = \"azure-access-token\"\npath = \"x\"\nscope = \"https://graph.microsoft.com\"\n",
            "targets.z.outputs[0].scope: \"https://graph.microsoft.com/.default\" is not one of the target's scopes (https://management.azure.com/.default); add it to targets.z.azure.scopes so it is kept fresh",
        ),
        (
            "[[targets.z.outputs]]\nkind = \"azure-federated-token\"\npath = \"x\"\nscope = \"https://graph.microsoft.com\"\n",
            "targets.z.outputs[0].scope: is only used with kind = \"azure-access-token\"",
        ),
        (
            "[[targets.z.outputs]]\nkind = \"azure-federated-token\"\npath = \"x\"\nformat = \"json\"\n",
            "targets.z.outputs[0].format: is only used with kind = \"gcp-access-token\" or \"azure-access-token\"",
        ),
        (
            "[[targets.z.outputs]]\nkind = \"gcp-access-token\"\npath = \"x\"\n",
            "targets.z.outputs[0].kind: a \"gcp-access-token\" output needs a target of kind gcp, but this target is of kind azure",
        ),
    ] {
        let err = error_of(&azure("", outputs));
        assert!(err.ends_with(says), "{outputs}: {err}");
    }
    let both = error_of(&format!(
        "{}[targets.z.gcp]\nprovider = \"{PROVIDER}\"\n",
        azure("", "")
    ));
    assert!(
        both.ends_with("targets.z.azure: a target trades its token with one cloud, and this one has a table for gcp already"),
        "{both}"
    );
}

/// issue 11: `[engine] start_jitter` is no wait by default, takes zero, and refuses more than
/// an hour; `keyfed check` shows it.
#[test]
fn the_start_jitter_is_read_and_bounded_issue_11() {
    let config = load_text(&format!("{ISSUER}{AWS}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.engine.start_jitter, std::time::Duration::ZERO);
    assert!(show(&config).contains("start_jitter = \"0s\""));
    for (value, secs) in [("0s", 0), ("1m", 60), ("1h", 3600)] {
        let config = load_text(&format!(
            "{ISSUER}{AWS}[engine]\nstart_jitter = \"{value}\"\n"
        ))
        .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(
            config.engine.start_jitter,
            std::time::Duration::from_secs(secs)
        );
    }
    let error = error_of(&format!("{ISSUER}{AWS}[engine]\nstart_jitter = \"2h\"\n"));
    assert!(
        error.contains("engine.start_jitter: expected at most 1h, not 2h"),
        "{error}"
    );
}

/// issue 13: `[engine] ready` is "all" by default, takes "any" and "immediately", refuses
/// anything else with the file, line, key and the values expected; `keyfed check` shows it.
#[test]
fn the_ready_policy_is_read_checked_and_shown_issue_13() {
    let config = load_text(&format!("{ISSUER}{AWS}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.engine.ready, Ready::All);
    assert!(
        show(&config).contains("ready = \"all\""),
        "{}",
        show(&config)
    );
    for (value, ready) in [
        ("all", Ready::All),
        ("any", Ready::Any),
        ("immediately", Ready::Immediately),
    ] {
        let config = load_text(&format!("{ISSUER}{AWS}[engine]\nready = \"{value}\"\n"))
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(config.engine.ready, ready);
        assert!(show(&config).contains(&format!("ready = \"{value}\"")));
    }
    assert_eq!(
        error_of(&format!("{ISSUER}{AWS}[engine]\nready = \"some\"\n")),
        "DIR/keyfed.toml:11:9: engine.ready: unknown variant `some`, \
         expected one of `all`, `any`, `immediately`"
    );
}

/// issue 13: a client of an instance of `keyfed@.service` (`keyfed --config
/// /etc/keyfed/NAME.toml credential-process …`) finds its socket in the instance's runtime
/// folder even when it cannot read the configuration, as the daemon itself does; without that
/// folder (no instance runs) it looks where it did before instances existed.
#[test]
fn clients_find_an_instance_s_socket_by_the_daemon_s_rule_issue_13() {
    let host = |is_root| Host {
        hostname: "web-01".into(),
        is_root,
    };
    let user = env_of(&[("XDG_RUNTIME_DIR", "/run/user/1000"), ("HOME", "/home/a")]);
    let running = |dir: &Path| dir == Path::new("/run/keyfed-prod");
    let stopped = |_: &Path| false;
    for is_root in [false, true] {
        let socket = |is_dir: &dyn Fn(&Path) -> bool| {
            control_socket_with(
                Path::new("/etc/keyfed/prod.toml"),
                &user,
                &host(is_root),
                is_dir,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            socket(&running),
            PathBuf::from("/run/keyfed-prod/keyfed.sock")
        );
        assert_eq!(socket(&stopped), PathBuf::from("/run/keyfed/keyfed.sock"));
        assert_eq!(
            control_socket(Path::new(SYSTEM_CONFIG), &user, &host(is_root))
                .unwrap_or_else(|e| panic!("{e}")),
            PathBuf::from("/run/keyfed/keyfed.sock")
        );
    }
    // The daemon resolves the same default from a configuration it has read.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("prod.toml");
    std::fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
    let unit = env_of(&[("RUNTIME_DIRECTORY", "/run/keyfed-prod")]);
    assert_eq!(
        control_socket(&file, &unit, &host(false)).unwrap_or_else(|e| panic!("{e}")),
        PathBuf::from("/run/keyfed-prod/keyfed.sock"),
        "outside /etc/keyfed the unit's RuntimeDirectory= rule gives the same folder"
    );
}
