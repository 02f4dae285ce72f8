//! keyfed's configuration: where the file is found, how it is read, and the checked,
//! resolved form the rest of keyfed uses. Reads the `KEYFED_CONFIG`, `XDG_CONFIG_HOME`,
//! `XDG_RUNTIME_DIR`, `RUNTIME_DIRECTORY` and `HOME` environment variables to find the file and
//! the control socket, and any variable a `${VAR}` in a path or URL names.
//!
//! Reading happens in two steps (raw serde structs that refuse unknown keys, then validation and
//! resolution), so every error names the file, the key and what was expected.
//!
//! One module per section: `issuer` (`[issuers.*]`, Keycloak), `target` (what every target has),
//! `output` (its `outputs`, and the `token` kind), `control`, `endpoint`, and one per cloud —
//! `aws`, `gcp`, `azure` — holding the host's side of that cloud: its table, checked by the
//! provider crate (`keyfed_aws::config`, …) with errors put at their full key path, its
//! output kinds, its endpoint faces, and how
//! `keyfed check` shows them. `raw` is the file's skeleton, `resolve` the walk through it and
//! the context provider crates resolve with, `show` what `keyfed check` prints. This module
//! depends on `outputs` and `engine` for the types it produces, and on nothing that reads it.

mod aws;
mod azure;
mod control;
mod endpoint;
mod error;
mod expand;
mod gcp;
mod issuer;
mod output;
mod perm;
mod raw;
mod resolve;
mod show;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use aws::AwsExchange;
pub use azure::{AzureExchange, configured_slots as azure_slots};
pub use control::SocketSpec;
#[cfg(test)]
pub use endpoint::Listen;
pub use endpoint::{EndpointSettings, FaceSpec, HEALTH_PATHS, face, faces, paths_of};
pub use error::ConfigError;
pub use gcp::GcpExchange;
pub use issuer::{Issuer, SecretSource};
pub use perm::loosely_readable;
pub use resolve::Host;
pub use target::{Access, Exchange, Target};

/// `[engine]`: how failed refreshes are retried, and how long a first one may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    pub backoff: crate::engine::Backoff,
    /// Upper bound on one attempt (Keycloak and the cloud together).
    pub attempt_timeout: std::time::Duration,
    /// Upper bound on the random wait before a target's first refresh in `keyfed run`.
    pub start_jitter: std::time::Duration,
    /// When `keyfed run` tells systemd it is ready.
    pub ready: Ready,
}

/// `[engine] ready`: when `keyfed run` sends systemd READY=1 (units ordered after it start
/// then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// Once every target has had its first attempt, well or not, and its outputs are written.
    #[default]
    All,
    /// Once one target holds a usable credential with its outputs written, or every target
    /// has had its first attempt, whichever comes first.
    Any,
    /// Once the control socket and the endpoint listen, before any upstream call.
    Immediately,
}

impl Ready {
    /// The name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Any => "any",
            Self::Immediately => "immediately",
        }
    }
}
pub use show::show;

/// The system-wide default configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/keyfed/keyfed.toml";

/// A validated configuration with secrets loaded.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub issuers: BTreeMap<String, Issuer>,
    pub targets: BTreeMap<String, Target>,
    pub control: SocketSpec,
    pub engine: EngineSettings,
    /// The local metadata endpoint, when `[endpoint]` is configured.
    pub endpoint: Option<EndpointSettings>,
    /// Things that work but deserve the operator's attention (inline secrets, loose modes).
    pub warnings: Vec<String>,
}

/// Where the configuration comes from: `--config`, else `KEYFED_CONFIG`, else (for a user other
/// than root) `$XDG_CONFIG_HOME/keyfed/keyfed.toml` or `~/.config/keyfed/keyfed.toml` when that
/// file exists, else `/etc/keyfed/keyfed.toml`. A relative path is made absolute from the
/// working directory: paths resolved against the file's folder end up in files other programs
/// read from elsewhere (an external_account file's subject-token path and command).
pub fn locate(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, is_root: bool) -> PathBuf {
    let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
    if let Some(path) = flag {
        return absolute(path.to_path_buf());
    }
    if let Some(path) = env("KEYFED_CONFIG").filter(|p| !p.is_empty()) {
        return absolute(PathBuf::from(path));
    }
    if !is_root {
        let base = env("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
        if let Some(user) = base
            .map(|b| b.join("keyfed/keyfed.toml"))
            .filter(|u| u.is_file())
        {
            return user;
        }
    }
    PathBuf::from(SYSTEM_CONFIG)
}

/// Reads, validates and resolves the configuration at `file`.
pub fn load(
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
) -> Result<Config, ConfigError> {
    // It may hold an inline client secret: wiped when dropped (issue 11).
    let text = keyfed_core::secret::Zeroizing::new(
        std::fs::read_to_string(file)
            .map_err(|e| ConfigError::file(file, format!("cannot read the configuration: {e}")))?,
    );
    let raw = parse(file, &text)?;
    resolve::resolve(file, raw, env, host)
}

/// The control socket's settings, read without loading secrets, so that a user who may not
/// read the client secret can still reach the daemon; the default socket when the file cannot
/// be read or parsed (an error when there is no safe default).
pub fn control_socket(
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
) -> Result<std::path::PathBuf, ConfigError> {
    control_socket_with(file, env, host, &control::is_dir)
}

/// [`control_socket`], asking `is_dir` whether a folder exists (tests: an instance running).
fn control_socket_with(
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
    is_dir: &dyn Fn(&Path) -> bool,
) -> Result<std::path::PathBuf, ConfigError> {
    let from_file = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| parse(file, &text).ok())
        .and_then(|raw| {
            let ctx = resolve::Ctx {
                file,
                env,
                host,
                warnings: Vec::new(),
            };
            control::resolve_with(&ctx, raw.control.as_ref(), is_dir).ok()
        });
    match from_file {
        Some(spec) => Ok(spec.path),
        None => control::default_socket(env, host.is_root, file, is_dir)
            .map_err(|message| ConfigError::at(file, "control.socket", message)),
    }
}

fn parse(file: &Path, text: &str) -> Result<raw::RawConfig, ConfigError> {
    let positioned =
        |message: &str, span: Option<std::ops::Range<usize>>, key: Option<String>| ConfigError {
            file: file.to_path_buf(),
            key,
            message: message.to_owned(),
            position: span.map(|s| error::line_column(text, s.start)),
        };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| positioned(e.message(), e.span(), None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != ".").then_some(key);
        positioned(e.inner().message(), e.inner().span(), key)
    })
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod secret_debug_tests;
#[cfg(test)]
mod tests;
