//! `keyfed demo`: keyfed's main job on built-in defaults. Starts the Keycloak emulator on
//! loopback, writes a demo configuration and client secret into a folder, gets a token for every
//! target through the same code `keyfed token` uses, writes each to a file, and keeps the
//! emulator serving until Ctrl-C (or exits at once with `--once`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};

use crate::files::write_atomic;

const CLIENT_ID: &str = "keyfed-demo";

pub async fn run(dir: &Path, once: bool) -> anyhow::Result<()> {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let realm = Realm::new("demo")
        .scope("api-audience", &["https://api.demo.keyfed.internal"])
        .scope("aws-audience", &["sts.amazonaws.com"])
        .client(
            ClientSpec::new(CLIENT_ID, Credential::Secret(secret.clone()))
                .optional_scopes(&["api-audience", "aws-audience"]),
        );
    let keycloak = KeycloakEmulator::builder(realm)
        .start()
        .await
        .context("cannot start the Keycloak emulator")?;
    let dir = std::path::absolute(dir).context("cannot resolve the demo folder")?;
    let config_file = dir.join("keyfed.toml");
    write_atomic(&dir.join("client-secret"), secret.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", dir.join("client-secret").display()))?;
    write_atomic(
        &config_file,
        demo_config(&keycloak.issuer_url()).as_bytes(),
        0o644,
    )
    .with_context(|| format!("cannot write {}", config_file.display()))?;

    let config = super::load(&config_file)?;
    let targets: Vec<_> = config.targets.values().cloned().collect();
    let clients = super::issuer_clients(config.issuers)?;
    let mut report = String::new();
    for target in &targets {
        let client = clients
            .get(&target.issuer)
            .context("the demo configuration lost an issuer")?;
        let token = client.fetch_token(&target.request).await?;
        let file = dir.join("tokens").join(format!("{}.jwt", target.name));
        write_atomic(&file, token.expose().as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", file.display()))?;
        let _ = writeln!(
            report,
            "  {:<10} aud {}, sub {}, expires {} -> {}",
            target.name,
            token.audience(),
            token.subject().unwrap_or("?"),
            keyfed_core::clock::rfc3339(token.expires_at()),
            file.display()
        );
    }
    let config_arg = config_file.display();
    println!(
        "keyfed demo\n\
         Keycloak emulator: {issuer} (client \"{CLIENT_ID}\", secret in {dir}/client-secret)\n\
         configuration:     {config_arg}\n\
         tokens written:\n{report}\n\
         Try, while the demo runs:\n  \
           keyfed --config {config_arg} check\n  \
           keyfed --config {config_arg} token api --decode\n  \
           curl -H \"Authorization: Bearer $(keyfed --config {config_arg} token api)\" https://your-api/",
        issuer = keycloak.issuer_url(),
        dir = dir.display(),
    );
    if once {
        return Ok(());
    }
    println!("\nServing until Ctrl-C.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("stopped");
    Ok(())
}

fn demo_config(issuer_url: &str) -> String {
    format!(
        r#"# Written by `keyfed demo`: a configuration for the built-in Keycloak emulator.
# See config/keyfed.toml in keyfed's source for every key and its default.

[issuers.demo]
url = "{issuer_url}"
client_id = "{CLIENT_ID}"
auth = "client_secret_basic"
client_secret_file = "client-secret"     # relative to this file

# A token for your own API: Keycloak's client scope "api-audience" carries an audience mapper.
[targets.api]
issuer = "demo"
audience = "https://api.demo.keyfed.internal"
scope = "api-audience"
strict_audience = true

# A token with the audience AWS STS expects of a web identity.
[targets.aws-web-identity]
issuer = "demo"
audience = "sts.amazonaws.com"
scope = "aws-audience"
"#
    )
}
