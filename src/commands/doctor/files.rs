//! The checks of what keyfed reads from disk: the configuration (valid, or the one error that
//! keeps it from loading, as `keyfed check` words it), and each issuer's secret or key file —
//! there, readable (loading the configuration read it), and readable by its owner only.

use std::path::Path;

use crate::config::{Config, ConfigError, SecretSource, loosely_readable};
use keyfed_core::quote;

use super::report::Check;

/// The configuration did not load: one failed check, naming the file and key.
pub fn config_failed(error: &ConfigError) -> Check {
    let fix = if error.message.contains("Permission denied") {
        "run keyfed doctor as the user keyfed runs as (e.g. `sudo -u keyfed keyfed doctor`), who can read it".to_owned()
    } else {
        format!(
            "correct {} as the error says; `keyfed check` validates it and shows it as keyfed reads it",
            error.file.display()
        )
    };
    Check::fail("config", error.to_string(), fix)
}

/// The configuration loaded: what is in it, and each warning loading it gave that no target's
/// checks repeat. (A secret's loose mode, an inline secret and plain HTTP to an issuer are its
/// targets' `secret` and `keycloak.tls` checks: warnings naming a key of an issuer that a
/// checked target uses are left to them.)
pub fn config_ok(config: &Config, checked_issuers: &[&str]) -> Vec<Check> {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut checks = vec![Check::ok(
        "config",
        format!(
            "valid: {} issuer{}, {} target{}",
            config.issuers.len(),
            plural(config.issuers.len()),
            config.targets.len(),
            plural(config.targets.len())
        ),
    )];
    for warning in &config.warnings {
        let covered = checked_issuers
            .iter()
            .any(|issuer| warning.contains(&format!(": issuers.{issuer}.")));
        if !covered {
            checks.push(Check::warn(
                "config",
                warning.clone(),
                "as the warning says; `keyfed check` shows the configuration resolved",
            ));
        }
    }
    checks
}

/// The issuer's client secret or private key: where it comes from, and for a file, that only
/// its owner may read it.
pub fn secret(issuer: &str, source: &SecretSource) -> Check {
    match source {
        SecretSource::File(path) => file("client secret", path),
        SecretSource::PrivateKeyFile(path) => file("private key", path),
        SecretSource::Env(var) => Check::ok(
            "secret",
            format!("client secret from the environment variable {var}"),
        ),
        SecretSource::Inline => Check::warn(
            "secret",
            "the client secret is written inline in the configuration",
            format!(
                "move it to a file of mode 0600 named by issuers.{issuer}.client_secret_file (with systemd, LoadCredential=) or to client_secret_env"
            ),
        ),
    }
}

fn file(what: &str, path: &Path) -> Check {
    let shown = path.display();
    match loosely_readable(path) {
        Some(mode) => {
            let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "group and others",
                (true, false) => "its group",
                (false, _) => "others",
            };
            Check::fail(
                "secret",
                format!("{what} file {shown} has mode {mode:04o}: {who} may read it"),
                format!(
                    "chmod 600 {} (and chown it to the user keyfed runs as; with systemd, LoadCredential= hands keyfed a private copy)",
                    quote::sh(&path.to_string_lossy())
                ),
            )
        }
        None => Check::ok(
            "secret",
            format!("{what} from {shown}, readable by its owner only"),
        ),
    }
}
