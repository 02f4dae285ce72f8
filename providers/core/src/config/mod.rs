//! The pieces a provider crate reads its own settings with, so that each cloud validates its
//! table of keyfed's configuration (`[targets.NAME.aws]`, later `gcp`, `azure`) itself while the
//! host keeps the file: where it is, `${VAR}` expansion, relative paths and how errors are shown.
//!
//! A provider declares a raw serde struct for its table (`deny_unknown_fields`, every key
//! optional or required as the file has it) and a `resolve` function that checks it and returns
//! its settings, or a [`KeyError`] naming the key *within the table*; the host prefixes the
//! table's path (`targets.NAME.aws.role_arn`) and the file name. What the resolver needs from the
//! host comes through [`Context`].
//!
//! The keys every outbound client shares (`ca_file`, `allow_insecure_http`, `connect_timeout`,
//! `timeout`) are read once, by [`RawHttp`], wherever a table has them: [`WithHttp`] adds them to
//! a provider's (or the issuer's) table beside its own keys, with the same errors a flat table
//! would give.

mod http;
mod with;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

pub use http::{HTTP_KEYS, RawHttp, WithHttp};
pub use with::{Keys, With};

/// A problem with one key of a table: `key` is relative to the table being resolved
/// (`role_arn`, `policy_arns`, `outputs[0].profile`), and `message` says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for KeyError {}

/// What a provider's resolver asks of the host reading the configuration.
pub trait Context {
    /// `value` with `${VAR}` expanded from the host's environment (`$$` is a literal `$`); the
    /// error says what is wrong with the text.
    fn expand(&self, value: &str) -> Result<String, String>;
    /// An expanded, non-empty path; a relative one is taken from the configuration file's folder.
    fn path(&self, value: &str) -> Result<PathBuf, String>;
    /// This host's name, for templates such as AWS's `session_name`.
    fn hostname(&self) -> &str;
}

/// A duration written the way people write them (`"90s"`, `"5m"`, `"1h 30m"`), parsed by
/// `humantime`; it displays the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Self).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"90s\", \"5m\" or \"1h\", found \"{text}\" ({e})"
            ))
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// `value`, or `default` when the key is absent; zero is refused (a zero timeout or lifetime
/// is never what anyone meant).
pub fn duration(
    key: &str,
    value: Option<HumanDuration>,
    default: Duration,
) -> Result<Duration, KeyError> {
    match value {
        None => Ok(default),
        Some(d) if d.0.is_zero() => {
            Err(KeyError::new(key, "expected a duration greater than zero"))
        }
        Some(d) => Ok(d.0),
    }
}

/// An upstream URL: `${VAR}` expanded, absolute, without credentials, query or fragment, and
/// `https://` (or `http://` to loopback, or anywhere with `allow_insecure_http`).
pub fn url(
    cx: &dyn Context,
    key: &str,
    value: &str,
    allow_insecure_http: bool,
) -> Result<Url, KeyError> {
    let err = |message: String| KeyError::new(key, message);
    let expanded = cx.expand(value).map_err(err)?;
    let url = Url::parse(&expanded).map_err(|e| {
        err(format!(
            "expected an absolute URL, found \"{expanded}\" ({e})"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "credentials in the URL are not allowed; use the client_secret keys".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("expected a URL without ?query or #fragment".to_owned()));
    }
    crate::http::check_url(&url, allow_insecure_http).map_err(|e| err(e.to_string()))?;
    Ok(url)
}

/// `names` as serde lists what it expected: "`a`", "`a` or `b`", "one of `a`, `b`, `c`", so a
/// check written by hand reads like serde's own.
pub fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        all => {
            let quoted: Vec<String> = all.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}
