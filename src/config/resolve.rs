//! From the raw file to a checked configuration: names, URLs, durations and cross-references
//! validated; `${VAR}` expanded; relative paths resolved against the configuration file's
//! folder; secrets and keys loaded (with a warning when a secret sits inline or in a file others
//! can read). Nothing falls back to a default silently when a value is wrong.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyfed_core::SecretString;
use keyfed_core::http::HttpSettings;
use keyfed_keycloak::{
    AssertionAudience, ClientAuth, IssuerSettings, SigningAlgorithm, SigningKey,
};
use url::Url;

use super::expand::expand;
use super::raw::{AssertionAudienceKey, AuthMethod, RawConfig, RawIssuer};
use super::{Config, ConfigError, control, target};

/// An issuer with its client credentials loaded.
#[derive(Debug)]
pub struct Issuer {
    pub settings: IssuerSettings,
    pub secret_source: SecretSource,
}

/// Where an issuer's secret or key came from (shown by `keyfed check`, never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    Inline,
    PrivateKeyFile(PathBuf),
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the configuration needs to know about the host it runs on.
#[derive(Debug, Clone)]
pub struct Host {
    pub hostname: String,
    pub is_root: bool,
}

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

    pub fn expand(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        expand(value, self.env).map_err(|e| self.err(key, e))
    }

    /// An expanded path, relative ones taken from the configuration file's folder.
    pub fn path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let expanded = self.expand(key, value)?;
        if expanded.is_empty() {
            return Err(self.err(key, "expected a file path, found an empty string"));
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
        let expanded = self.expand(key, value)?;
        let url = Url::parse(&expanded).map_err(|e| {
            self.err(
                key,
                format!("expected an absolute URL, found \"{expanded}\" ({e})"),
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.err(
                key,
                "credentials in the URL are not allowed; use the client_secret keys",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.err(key, "expected a URL without ?query or #fragment"));
        }
        keyfed_core::http::check_url(&url, allow_insecure_http)
            .map_err(|e| self.err(key, e.to_string()))?;
        Ok(url)
    }

    pub fn duration(
        &self,
        key: &str,
        value: Option<super::duration::HumanDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(d) if d.0.is_zero() => Err(self.err(key, "expected a duration greater than zero")),
            Some(d) => Ok(d.0),
        }
    }

    /// The outbound HTTP settings an issuer or a cloud exchange shares: `ca_file`,
    /// `allow_insecure_http`, `connect_timeout` and `timeout` under `section`.
    pub fn http(
        &self,
        section: &str,
        ca_file: Option<&str>,
        allow_insecure_http: bool,
        connect_timeout: Option<super::duration::HumanDuration>,
        timeout: Option<super::duration::HumanDuration>,
    ) -> Result<HttpSettings, ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        let ca_file = ca_file.map(|p| self.path(&key("ca_file"), p)).transpose()?;
        if let Some(ca) = ca_file.as_ref().filter(|ca| !ca.is_file()) {
            return Err(self.err(
                &key("ca_file"),
                format!("{} is not a readable file", ca.display()),
            ));
        }
        Ok(HttpSettings {
            ca_file,
            connect_timeout: self.duration(
                &key("connect_timeout"),
                connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            timeout: self.duration(&key("timeout"), timeout, DEFAULT_TIMEOUT)?,
            allow_insecure_http,
        })
    }

    /// Reads a secret or key file, warning when group or others may read it.
    pub fn read_private_file(&mut self, key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
        let content = std::fs::read(path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))?;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                self.warnings.push(format!(
                    "{}: {key}: {} has mode {mode:04o} and is readable by group or others; run: chmod 600 {}",
                    self.file.display(),
                    path.display(),
                    path.display()
                ));
            }
        }
        Ok(content)
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
        issuers.insert(name.clone(), issuer(&mut ctx, name, raw_issuer)?);
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

fn engine_settings(
    ctx: &Ctx<'_>,
    raw: Option<&super::raw::RawEngine>,
) -> Result<super::EngineSettings, ConfigError> {
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
    Ok(super::EngineSettings {
        backoff,
        attempt_timeout,
    })
}

fn issuer(ctx: &mut Ctx<'_>, name: &str, raw: &RawIssuer) -> Result<Issuer, ConfigError> {
    let key = |k: &str| format!("issuers.{name}.{k}");
    let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
    let url = ctx.url(&key("url"), &raw.url, allow_insecure_http)?;
    if raw.client_id.trim().is_empty() {
        return Err(ctx.err(
            &key("client_id"),
            "expected the Keycloak client id, found an empty string",
        ));
    }
    let method = raw.auth.unwrap_or(AuthMethod::ClientSecretBasic);
    let uses_key = method == AuthMethod::PrivateKeyJwt;
    for (present, k) in [
        (raw.private_key_file.is_some(), "private_key_file"),
        (raw.algorithm.is_some(), "algorithm"),
        (raw.key_id.is_some(), "key_id"),
    ] {
        if present && !uses_key {
            return Err(ctx.err(&key(k), "is only used with auth = \"private_key_jwt\""));
        }
    }
    let secret_keys = [
        (raw.client_secret_file.is_some(), "client_secret_file"),
        (raw.client_secret_env.is_some(), "client_secret_env"),
        (raw.client_secret.is_some(), "client_secret"),
    ];
    if let Some((_, k)) = secret_keys.iter().find(|(present, _)| *present && uses_key) {
        return Err(ctx.err(
            &key(k),
            "is not used with auth = \"private_key_jwt\"; set private_key_file",
        ));
    }
    let (auth, secret_source) = if uses_key {
        let Some(path) = &raw.private_key_file else {
            return Err(ctx.err(
                &key("private_key_file"),
                "is required with auth = \"private_key_jwt\"",
            ));
        };
        let path = ctx.path(&key("private_key_file"), path)?;
        let alg_name = raw.algorithm.as_deref().unwrap_or("RS256");
        let algorithm = SigningAlgorithm::parse(alg_name).ok_or_else(|| {
            ctx.err(
                &key("algorithm"),
                format!("expected \"RS256\", \"PS256\" or \"ES256\", found \"{alg_name}\""),
            )
        })?;
        let pem = ctx.read_private_file(&key("private_key_file"), &path)?;
        let signing = SigningKey::from_pem(&pem, algorithm, raw.key_id.clone())
            .map_err(|e| ctx.err(&key("private_key_file"), format!("{}: {e}", path.display())))?;
        (
            ClientAuth::PrivateKeyJwt(signing),
            SecretSource::PrivateKeyFile(path),
        )
    } else {
        let (secret, source) = client_secret(ctx, name, raw)?;
        let auth = match method {
            AuthMethod::ClientSecretPost => ClientAuth::SecretPost(secret),
            AuthMethod::ClientSecretJwt => ClientAuth::SecretJwt(secret),
            AuthMethod::ClientSecretBasic | AuthMethod::PrivateKeyJwt => {
                ClientAuth::SecretBasic(secret)
            }
        };
        (auth, source)
    };
    let token_endpoint = raw
        .token_endpoint
        .as_deref()
        .map(|u| ctx.url(&key("token_endpoint"), u, allow_insecure_http))
        .transpose()?;
    let http = ctx.http(
        &format!("issuers.{name}"),
        raw.ca_file.as_deref(),
        allow_insecure_http,
        raw.connect_timeout,
        raw.timeout,
    )?;
    if allow_insecure_http && !keyfed_core::http::is_loopback(&url) {
        ctx.warnings.push(format!(
            "{}: {}: allow_insecure_http is on, so the client's credentials may cross the network in the clear",
            ctx.file.display(),
            key("allow_insecure_http")
        ));
    }
    let settings = IssuerSettings {
        name: name.to_owned(),
        url,
        client_id: raw.client_id.clone(),
        auth,
        token_endpoint,
        assertion_audience: match raw.assertion_audience {
            None | Some(AssertionAudienceKey::Issuer) => AssertionAudience::Issuer,
            Some(AssertionAudienceKey::TokenEndpoint) => AssertionAudience::TokenEndpoint,
        },
        verify_signature: raw.verify_signature.unwrap_or(true),
        http,
    };
    Ok(Issuer {
        settings,
        secret_source,
    })
}

fn client_secret(
    ctx: &mut Ctx<'_>,
    name: &str,
    raw: &RawIssuer,
) -> Result<(SecretString, SecretSource), ConfigError> {
    let key = |k: &str| format!("issuers.{name}.{k}");
    let given = [
        raw.client_secret_file.is_some(),
        raw.client_secret_env.is_some(),
        raw.client_secret.is_some(),
    ]
    .iter()
    .filter(|p| **p)
    .count();
    if given != 1 {
        return Err(ctx.err(
            &key("client_secret_file"),
            format!(
                "expected exactly one of client_secret_file, client_secret_env or client_secret, found {given}"
            ),
        ));
    }
    if let Some(path) = &raw.client_secret_file {
        let path = ctx.path(&key("client_secret_file"), path)?;
        let bytes = ctx.read_private_file(&key("client_secret_file"), &path)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ctx.err(
                &key("client_secret_file"),
                format!("{} is not UTF-8 text", path.display()),
            )
        })?;
        // A trailing newline from `echo secret > file` is not part of the secret.
        let secret = text
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&text);
        if secret.is_empty() {
            return Err(ctx.err(
                &key("client_secret_file"),
                format!("{} is empty", path.display()),
            ));
        }
        return Ok((SecretString::from(secret), SecretSource::File(path)));
    }
    if let Some(var) = &raw.client_secret_env {
        let value = (ctx.env)(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            ctx.err(
                &key("client_secret_env"),
                format!("environment variable {var} is not set or empty"),
            )
        })?;
        return Ok((SecretString::from(value), SecretSource::Env(var.clone())));
    }
    let inline = raw.client_secret.as_deref().unwrap_or_default();
    if inline.is_empty() {
        return Err(ctx.err(
            &key("client_secret"),
            "expected the client secret, found an empty string",
        ));
    }
    ctx.warnings.push(format!(
        "{}: {}: the client secret is written inline; prefer client_secret_file (with systemd LoadCredential=) or client_secret_env",
        ctx.file.display(),
        key("client_secret")
    ));
    Ok((SecretString::from(inline), SecretSource::Inline))
}
