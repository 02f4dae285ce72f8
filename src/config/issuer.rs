//! `[issuers.NAME]`: a Keycloak realm (or another OIDC provider) and the client keyfed is there
//! — `url`, `client_id`, how the client authenticates (`auth` and the `client_secret_*` or
//! `private_key_file`, `algorithm`, `key_id`, `assertion_audience` keys), `token_endpoint`,
//! `verify_signature`, and the shared HTTP keys. The secret or key is loaded here, with a
//! warning when it sits inline or in a file others may read.

use std::path::PathBuf;

use keyfed_core::config::WithHttp;
use keyfed_core::secret::Zeroizing;
use keyfed_core::{ExposeSecret, SecretString};
use keyfed_keycloak::{
    AssertionAudience, ClientAuth, IssuerSettings, SigningAlgorithm, SigningKey,
};
use serde::Deserialize;

use super::ConfigError;
use super::resolve::Ctx;

/// The issuer's own keys, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuerKeys {
    pub url: String,
    pub client_id: String,
    pub auth: Option<AuthMethod>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// A secret from the moment it is read: redacted in `Debug`, wiped when dropped, and a
    /// value of the wrong type is refused without quoting it (issue 11).
    #[serde(default, deserialize_with = "keyfed_core::secret::deserialize_secret")]
    pub client_secret: Option<SecretString>,
    pub private_key_file: Option<String>,
    pub algorithm: Option<String>,
    pub key_id: Option<String>,
    pub assertion_audience: Option<AssertionAudienceKey>,
    pub token_endpoint: Option<String>,
    pub verify_signature: Option<bool>,
}

/// `[issuers.NAME]` as written: its own keys and the HTTP keys.
pub type RawIssuer = WithHttp<RawIssuerKeys>;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    ClientSecretJwt,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AssertionAudienceKey {
    Issuer,
    TokenEndpoint,
}

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

pub(super) fn resolve(
    ctx: &mut Ctx<'_>,
    name: &str,
    raw: &RawIssuer,
) -> Result<Issuer, ConfigError> {
    let table = format!("issuers.{name}");
    let key = |k: &str| format!("{table}.{k}");
    let allow_insecure_http = raw.http().allow_insecure_http();
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
        // The PEM is wiped when dropped; the parsed key (jsonwebtoken's) wipes itself too.
        let pem = Zeroizing::new(ctx.read_private_file(&key("private_key_file"), &path)?);
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
    let http = raw.http().resolve(&*ctx).map_err(ctx.within(&table))?;
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
        let bytes = Zeroizing::new(ctx.read_private_file(&key("client_secret_file"), &path)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            ctx.err(
                &key("client_secret_file"),
                format!("{} is not UTF-8 text", path.display()),
            )
        })?;
        // A trailing newline from `echo secret > file` is not part of the secret.
        let secret = text
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(text);
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
    let inline = raw
        .client_secret
        .as_ref()
        .map(ExposeSecret::expose_secret)
        .unwrap_or_default();
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
