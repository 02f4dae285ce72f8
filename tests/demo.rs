//! `keyfed demo --once`: the newcomer's first command works from an empty folder.

use crate::util::{Fixture, claims};

#[tokio::test]
async fn demo_writes_a_config_that_check_accepts_and_tokens_with_their_audience() {
    let fx = Fixture::new();
    let run = fx
        .keyfed_raw(&["demo", "--once", "--dir", "demo"], &[])
        .await;
    run.ok()
        .prints("Keycloak emulator: http://127.0.0.1:")
        .prints("tokens written:");
    let dir = fx.path("demo");
    for (name, aud) in [
        ("api", "https://api.demo.keyfed.internal"),
        ("aws-web-identity", "sts.amazonaws.com"),
    ] {
        let jwt = std::fs::read_to_string(dir.join(format!("tokens/{name}.jwt")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !jwt.ends_with('\n'),
            "token files carry no trailing newline"
        );
        assert_eq!(claims(&jwt)["aud"], aud);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(format!("tokens/{name}.jwt")))
                .map(|m| m.permissions())
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(dir.join("client-secret")).unwrap_or_default();
    assert!(secret.len() >= 32 && !run.stdout.contains(&secret) && !run.stderr.contains(&secret));
    // The emulator is gone with --once, but the configuration it wrote is valid.
    let config = dir.join("keyfed.toml");
    fx.keyfed_raw(
        &["--config", config.to_str().unwrap_or_default(), "check"],
        &[],
    )
    .await
    .ok()
    .prints("valid (1 issuer, 2 targets)");
}
