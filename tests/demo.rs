//! `keyfed demo`: the newcomer's first command works from an empty folder and really runs the
//! daemon against the emulators.

use std::os::unix::fs::PermissionsExt as _;

use crate::util::{Fixture, claims};

#[tokio::test]
async fn demo_once_writes_aws_credentials_and_a_token() {
    let fx = Fixture::new();
    fx.know_demo_secrets("demo", "keyfed-demo");
    let run = fx
        .keyfed_raw(&["demo", "--once", "--dir", "demo"], &[])
        .await;
    run.ok()
        .prints("Keycloak emulator: http://127.0.0.1:")
        .prints("AWS STS emulator:  http://127.0.0.1:")
        .prints("Google emulator:   http://127.0.0.1:")
        .prints("credential-process aws")
        .prints(&format!(
            "GOOGLE_APPLICATION_CREDENTIALS={}",
            fx.path("demo/gcp/external-account.json").display()
        ))
        .prints("GCE_METADATA_HOST=127.0.0.1:")
        .prints("Entra ID emulator: https://localhost:")
        .prints(&format!(
            "AZURE_FEDERATED_TOKEN_FILE={}",
            fx.path("demo/azure/federated-token.jwt").display()
        ))
        .prints(&format!(
            "IDENTITY_HEADER=$(cat {})",
            fx.path("demo/identity-header").display()
        ));
    // The demo realm's tokens live long enough for every consumer: no warning.
    assert!(!run.stderr.contains("too short"), "{}", run.stderr);
    assert!(!run.stdout.contains("FAILED"), "{}", run.stdout);
    let dir = fx.path("demo");
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("aws/credential-process.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["Version"], 1);
    assert!(
        doc["AccessKeyId"]
            .as_str()
            .is_some_and(|k| k.starts_with("ASIA"))
    );
    let ini = std::fs::read_to_string(dir.join("aws/credentials")).unwrap_or_default();
    assert!(
        ini.starts_with("[default]\naws_access_key_id = ASIA"),
        "{ini}"
    );
    let jwt = std::fs::read_to_string(dir.join("tokens/api.jwt")).unwrap_or_default();
    assert_eq!(claims(&jwt)["aud"], "https://api.demo.keyfed.internal");
    // Google Cloud: an impersonated access token, and an external_account file whose subject
    // token sits beside it.
    let gcp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("gcp/access-token.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        gcp["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("ya29.")),
        "{gcp}"
    );
    assert_eq!(gcp["token_type"], "Bearer");
    let account: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("gcp/external-account.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let subject_file = dir.join("gcp/external-account.jwt");
    assert_eq!(
        account["credential_source"]["file"],
        subject_file.display().to_string()
    );
    let subject = std::fs::read_to_string(&subject_file).unwrap_or_default();
    assert!(!subject.ends_with('\n'));
    assert!(
        claims(&subject)["aud"]
            .as_str()
            .is_some_and(|a| a.starts_with("https://iam.googleapis.com/projects/"))
    );
    // Azure: an access token in `az account get-access-token`'s shape, and the federated
    // token file with the exchange audience.
    let azure: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("azure/management.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(azure["tokenType"], "Bearer");
    assert!(azure["expires_on"].as_u64().is_some(), "{azure}");
    assert!(azure["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
    let federated =
        std::fs::read_to_string(dir.join("azure/federated-token.jwt")).unwrap_or_default();
    assert_eq!(claims(&federated)["aud"], "api://AzureADTokenExchange");
    for file in [
        "aws/credentials",
        "aws/credential-process.json",
        "tokens/api.jwt",
        "client-secret",
        "gcp/access-token.json",
        "gcp/external-account.json",
        "gcp/external-account.jwt",
        "azure/management.json",
        "azure/federated-token.jwt",
    ] {
        let mode = std::fs::metadata(dir.join(file))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600), "{file}");
    }
    let secret = std::fs::read_to_string(dir.join("client-secret")).unwrap_or_default();
    assert!(secret.len() >= 32);
    // The demo's own secrets, read from what it wrote, are part of the leak check of its run.
    for file in [
        "client-secret",
        "aws/credentials",
        "tokens/api.jwt",
        "gcp/access-token.json",
        "gcp/external-account.jwt",
        "azure/management.json",
        "azure/federated-token.jwt",
    ] {
        assert!(
            !fx.known
                .found_in(&std::fs::read_to_string(dir.join(file)).unwrap_or_default())
                .is_empty(),
            "{file} is known to the leak check"
        );
    }
    // The configuration the demo wrote is valid.
    let config = dir.join("keyfed.toml");
    fx.keyfed_raw(
        &["--config", config.to_str().unwrap_or_default(), "check"],
        &[],
    )
    .await
    .ok()
    .prints("valid (1 issuer, 5 targets)");
}
