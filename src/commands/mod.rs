//! One module per subcommand; `run` sets up the runtime and dispatches.

mod check;
mod child_env;
mod credential_process;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod env;
mod exec;
mod gcp_subject_token;
mod manual;
mod once;
mod run;
mod status;
mod token;
mod trust;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use keyfed_core::clock::SystemClock;
use keyfed_keycloak::KeycloakClient;

use crate::cli::{Cli, Command};
use crate::config::{self, Config, Target};
use crate::exit::UsageError;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // The daemon serves the endpoint on every core; one-shot commands need one thread.
    let daemon = matches!(cli.command, Command::Run) || is_demo(&cli.command);
    let runtime = if daemon {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Check => check::run(&config_path(&cli.config)),
            Command::Token { target, decode } => {
                token::run(load(&config_path(&cli.config))?, &target, decode).await
            }
            Command::Run => run::run(&config_path(&cli.config)).await,
            Command::Once => once::run(&config_path(&cli.config)).await,
            Command::Status { json } => status::run(&config_path(&cli.config), json).await,
            Command::CredentialProcess { target } => {
                credential_process::run(&config_path(&cli.config), &target).await
            }
            Command::GcpSubjectToken { target } => {
                gcp_subject_token::run(&config_path(&cli.config), &target).await
            }
            Command::Doctor { target, json } => {
                doctor::run(&config_path(&cli.config), target.as_deref(), json).await
            }
            Command::Trust {
                target,
                format,
                keycloak,
                jwks_file,
            } => {
                let options = trust::Options {
                    format,
                    keycloak,
                    jwks_file,
                };
                trust::run(&config_path(&cli.config), &target, options).await
            }
            Command::Exec { target, command } => {
                exec::run(&config_path(&cli.config), &target, command).await
            }
            Command::Env { target, shell } => {
                env::run(&config_path(&cli.config), &target, shell).await
            }
            Command::Completions { shell } => manual::completions(shell),
            Command::Man => manual::man(),
            #[cfg(feature = "demo")]
            Command::Demo { dir, once } => demo::run(&dir, once).await,
            #[cfg(not(feature = "demo"))]
            Command::Demo { .. } => Err(UsageError(NO_DEMO.to_owned()).into()),
        }
    })
}

/// What `keyfed demo` says in a build without the emulators (the Debian package's).
#[cfg(not(feature = "demo"))]
const NO_DEMO: &str = "this keyfed was built without the demo's emulators (the Debian package \
    leaves them out of the daemon it installs); run the demo from a source checkout: \
    cargo run --release -- demo";

fn is_demo(command: &Command) -> bool {
    cfg!(feature = "demo") && matches!(command, Command::Demo { .. })
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// This host's name and whether keyfed runs as root.
pub fn host() -> config::Host {
    config::Host {
        hostname: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        is_root: is_root(),
    }
}

fn config_path(flag: &Option<PathBuf>) -> PathBuf {
    config::locate(flag.as_deref(), &env_var, is_root())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Loads the configuration and logs its warnings.
pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = config::load(path, &env_var, &host())?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// The client for a target's issuer, and the target.
pub fn client_for(mut config: Config, name: &str) -> anyhow::Result<(KeycloakClient, Target)> {
    let Some(target) = config.targets.remove(name) else {
        return Err(unknown_target(&config, name).into());
    };
    let issuer = config
        .issuers
        .remove(&target.issuer)
        .context("the configuration lost the target's issuer")?;
    let client = KeycloakClient::new(issuer.settings, Arc::new(SystemClock))?;
    Ok((client, target))
}

/// The usage error for a target name the configuration does not have.
pub fn unknown_target(config: &Config, name: &str) -> UsageError {
    let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
    UsageError(format!(
        "no target named \"{name}\" in {} (targets: {})",
        config.file.display(),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}
