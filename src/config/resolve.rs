//! From the raw file to a checked configuration: names, URLs, durations and cross-references
//! validated; `${VAR}` expanded; relative paths resolved against the configuration file's
//! folder; secrets and keys loaded (with a warning when a secret sits inline or in a file others
//! can read). Nothing falls back to a default silently when a value is wrong.
//!
//! Each section has its module (`issuer`, `target`, `output`, `control`, `endpoint`, and one
//! per cloud: `aws`); a cloud's own table is checked by its provider crate, through
//! [`keyfed_core::config::Context`], which [`Ctx`] implements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyfed_core::config::{HumanDuration, KeyError};
use url::Url;

use super::expand::expand;
use super::raw::{RawConfig, RawEngine};
use super::{Config, ConfigError, EngineSettings, control, issuer, target};

/// What the configuration needs to know about the host it runs on.
#[derive(Debug, Clone)]
pub struct Host {
    pub hostname: String,
    pub is_root: bool,
}

/// Everything resolving needs besides the raw values: the file (for relative paths and error
/// messages), the environment (for `${VAR}`), the host, and the warnings gathered so far.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub host: &'a Host,
    pub warnings: Vec<String>,
}

impl Ctx<'_> {
    pub fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, key, message)
    }

    /// Maps an error naming a key within `table` (as provider crates give them) onto the full
    /// key path: `role_arn` in `targets.prod.aws` becomes `targets.prod.aws.role_arn`.
    pub fn within<'s>(&'s self, table: &'s str) -> impl Fn(KeyError) -> ConfigError + 's {
        move |e| self.err(&format!("{table}.{}", e.key), e.message)
    }

    /// An expanded path, relative ones taken from the configuration file's folder.
    pub fn path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        self.file_path(value).map_err(|e| self.err(key, e))
    }

    fn file_path(&self, value: &str) -> Result<PathBuf, String> {
        let expanded = expand(value, self.env)?;
        if expanded.is_empty() {
            return Err("expected a file path, found an empty string".to_owned());
        }
        let path = PathBuf::from(expanded);
        Ok(if path.is_absolute() {
            path
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(path)
        })
    }

    pub fn url(
        &self,
        key: &str,
        value: &str,
        allow_insecure_http: bool,
    ) -> Result<Url, ConfigError> {
        keyfed_core::config::url(self, key, value, allow_insecure_http)
            .map_err(|e| self.err(&e.key, e.message))
    }

    pub fn duration(
        &self,
        key: &str,
        value: Option<HumanDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        keyfed_core::config::duration(key, value, default).map_err(|e| self.err(&e.key, e.message))
    }

    /// Reads a secret or key file, warning when group or others may read it.
    pub fn read_private_file(&mut self, key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
        let content = std::fs::read(path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))?;
        if let Some(mode) = super::perm::loosely_readable(path) {
            self.warnings.push(format!(
                "{}: {key}: {} has mode {mode:04o} and is readable by group or others; run: chmod 600 {}",
                self.file.display(),
                path.display(),
                path.display()
            ));
        }
        Ok(content)
    }
}

/// What provider crates resolve their tables with. (The inherent methods above take a key and
/// give a [`ConfigError`]; these give the bare message, for the provider to name its key.)
impl keyfed_core::config::Context for Ctx<'_> {
    fn expand(&self, value: &str) -> Result<String, String> {
        expand(value, self.env)
    }

    fn path(&self, value: &str) -> Result<PathBuf, String> {
        self.file_path(value)
    }

    fn hostname(&self) -> &str {
        &self.host.hostname
    }
}

fn check_name(ctx: &Ctx<'_>, section: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            &format!("{section}.{name}"),
            "expected a name of 1–64 letters, digits, '-', '_' or '.'",
        ))
    }
}

pub(super) fn resolve(
    file: &Path,
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
) -> Result<Config, ConfigError> {
    let mut ctx = Ctx {
        file,
        env,
        host,
        warnings: Vec::new(),
    };
    let mut issuers = BTreeMap::new();
    for (name, raw_issuer) in &raw.issuers {
        check_name(&ctx, "issuers", name)?;
        issuers.insert(name.clone(), issuer::resolve(&mut ctx, name, raw_issuer)?);
    }
    let mut targets = BTreeMap::new();
    for (name, raw_target) in &raw.targets {
        check_name(&ctx, "targets", name)?;
        targets.insert(
            name.clone(),
            target::resolve(&mut ctx, name, raw_target, &issuers)?,
        );
    }
    target::check_unique_paths(&ctx, &targets)?;
    let control = control::resolve(&ctx, raw.control.as_ref())?;
    let engine = engine_settings(&ctx, raw.engine.as_ref())?;
    let endpoint =
        super::endpoint::resolve(&mut ctx, raw.endpoint.as_ref(), &targets, &control.path)?;
    if targets.is_empty() {
        ctx.warnings.push(format!(
            "{}: no [targets.*] are defined, so keyfed has nothing to do",
            file.display()
        ));
    }
    for name in issuers.keys() {
        if !targets.values().any(|t| &t.issuer == name) {
            ctx.warnings.push(format!(
                "{}: issuers.{name} is not used by any target",
                file.display()
            ));
        }
    }
    Ok(Config {
        file: file.to_path_buf(),
        issuers,
        targets,
        control,
        engine,
        endpoint,
        warnings: ctx.warnings,
    })
}

/// The longest `[engine] start_jitter` accepted.
const MAX_START_JITTER: Duration = Duration::from_secs(3600);

fn engine_settings(ctx: &Ctx<'_>, raw: Option<&RawEngine>) -> Result<EngineSettings, ConfigError> {
    let min = ctx.duration(
        "engine.retry_min",
        raw.and_then(|r| r.retry_min),
        Duration::from_secs(1),
    )?;
    let max = ctx.duration(
        "engine.retry_max",
        raw.and_then(|r| r.retry_max),
        Duration::from_secs(300),
    )?;
    let backoff =
        crate::engine::Backoff::new(min, max).map_err(|e| ctx.err("engine.retry_max", e))?;
    let attempt_timeout = ctx.duration(
        "engine.attempt_timeout",
        raw.and_then(|r| r.attempt_timeout),
        Duration::from_secs(60),
    )?;
    // Zero is the default and means no wait; beyond an hour a host would go without
    // credentials for longer than most of them live.
    let start_jitter = raw
        .and_then(|r| r.start_jitter)
        .map_or(Duration::ZERO, |d| d.0);
    if start_jitter > MAX_START_JITTER {
        return Err(ctx.err(
            "engine.start_jitter",
            format!("expected at most 1h, not {}", HumanDuration(start_jitter)),
        ));
    }
    Ok(EngineSettings {
        backoff,
        attempt_timeout,
        start_jitter,
        ready: raw.and_then(|r| r.ready).unwrap_or_default(),
    })
}
