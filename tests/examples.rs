//! The annotated examples under `config/` stay valid: `keyfed check` accepts each one.

use crate::util::Fixture;

#[tokio::test]
async fn every_example_configuration_passes_check() {
    let fx = Fixture::new();
    fx.write("keycloak-secret", "example-secret\n");
    fx.write("client-key.pem", &fx.rsa.private_pem);
    let credentials = fx.dir.path().to_str().unwrap_or_default().to_owned();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let run = fx
            .keyfed_raw(
                &["--config", path.to_str().unwrap_or_default(), "check"],
                &[("CREDENTIALS_DIRECTORY", &credentials)],
            )
            .await;
        assert_eq!(run.code, Some(0), "{}:\n{}", path.display(), run.stderr);
        assert!(run.stdout.contains(": valid ("), "{}", run.stdout);
        checked += 1;
    }
    assert!(checked >= 2, "found {checked} examples");
}
