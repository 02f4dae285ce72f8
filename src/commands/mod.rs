//! One module per subcommand; `run` sets up the runtime and dispatches.

mod check;
#[cfg(feature = "demo")]
mod demo;
mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use keyfed_core::clock::SystemClock;
use keyfed_keycloak::KeycloakClient;

use crate::cli::{Cli, Command};
use crate::config::{self, Config, Issuer, Target};
use crate::exit::UsageError;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Check => check::run(&config_path(&cli.config)),
            Command::Token { target, decode } => {
                token::run(load(&config_path(&cli.config))?, &target, decode).await
            }
            #[cfg(feature = "demo")]
            Command::Demo { dir, once } => demo::run(&dir, once).await,
        }
    })
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn config_path(flag: &Option<PathBuf>) -> PathBuf {
    config::locate(flag.as_deref(), &env_var, is_root())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Loads the configuration and logs its warnings.
pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = config::load(path, &env_var)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// The client for a target's issuer, and the target.
pub fn client_for(mut config: Config, name: &str) -> anyhow::Result<(KeycloakClient, Target)> {
    let Some(target) = config.targets.remove(name) else {
        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
        return Err(UsageError(format!(
            "no target named \"{name}\" in {} (targets: {})",
            config.file.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    };
    let issuer = config
        .issuers
        .remove(&target.issuer)
        .context("the configuration lost the target's issuer")?;
    let client = KeycloakClient::new(issuer.settings, Arc::new(SystemClock))?;
    Ok((client, target))
}

/// One client per issuer.
pub fn issuer_clients(
    issuers: BTreeMap<String, Issuer>,
) -> anyhow::Result<BTreeMap<String, KeycloakClient>> {
    issuers
        .into_iter()
        .map(|(name, issuer)| {
            Ok((
                name,
                KeycloakClient::new(issuer.settings, Arc::new(SystemClock))?,
            ))
        })
        .collect()
}
