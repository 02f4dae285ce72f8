//! The outbound HTTP keys every upstream's table has — an issuer's, and each cloud's — read and
//! checked in one place: `ca_file` (an extra PEM bundle, `${VAR}` expanded, relative to the
//! configuration file), `allow_insecure_http` (plain `http://` beyond loopback), and the
//! `connect_timeout` and `timeout` of each request (default 5 s and 30 s).

use serde::de::{self, Deserialize as _, Deserializer};

use super::{Context, HumanDuration, KeyError, Keys, With, duration};
use crate::http::HttpSettings;

/// The HTTP keys as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHttp {
    pub ca_file: Option<String>,
    pub allow_insecure_http: Option<bool>,
    pub connect_timeout: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

/// A table with the HTTP keys beside its own (`[issuers.NAME]`, `[targets.NAME.aws]`).
pub type WithHttp<T> = With<T, RawHttp>;

/// The keys [`RawHttp`] reads, in the order error messages list them.
pub const HTTP_KEYS: [&str; 4] = [
    "ca_file",
    "allow_insecure_http",
    "connect_timeout",
    "timeout",
];

impl Keys for RawHttp {
    fn find(key: &str) -> Option<&'static str> {
        HTTP_KEYS.into_iter().find(|k| *k == key)
    }

    fn names() -> Vec<&'static str> {
        HTTP_KEYS.to_vec()
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        match key {
            "ca_file" => self.ca_file = Some(String::deserialize(value)?),
            "allow_insecure_http" => self.allow_insecure_http = Some(bool::deserialize(value)?),
            "connect_timeout" => self.connect_timeout = Some(HumanDuration::deserialize(value)?),
            "timeout" => self.timeout = Some(HumanDuration::deserialize(value)?),
            other => return Err(de::Error::unknown_field(other, &HTTP_KEYS)),
        }
        Ok(())
    }
}

impl<T> With<T, RawHttp> {
    /// The table's HTTP keys.
    pub fn http(&self) -> &RawHttp {
        &self.keys
    }
}

impl RawHttp {
    /// `allow_insecure_http`, off unless set: URLs in the same table are checked with it.
    pub fn allow_insecure_http(&self) -> bool {
        self.allow_insecure_http.unwrap_or(false)
    }

    /// The client settings, defaults filled in; errors name the key within the table.
    pub fn resolve(&self, cx: &dyn Context) -> Result<HttpSettings, KeyError> {
        let defaults = HttpSettings::default();
        let ca_file = self
            .ca_file
            .as_deref()
            .map(|p| cx.path(p).map_err(|m| KeyError::new("ca_file", m)))
            .transpose()?;
        if let Some(ca) = ca_file.as_ref().filter(|ca| !ca.is_file()) {
            return Err(KeyError::new(
                "ca_file",
                format!("{} is not a readable file", ca.display()),
            ));
        }
        Ok(HttpSettings {
            ca_file,
            connect_timeout: duration(
                "connect_timeout",
                self.connect_timeout,
                defaults.connect_timeout,
            )?,
            timeout: duration("timeout", self.timeout, defaults.timeout)?,
            allow_insecure_http: self.allow_insecure_http(),
        })
    }
}
