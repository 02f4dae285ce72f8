//! The configuration file exactly as written: serde structs that refuse unknown keys. Nothing
//! here is validated beyond types; `resolve.rs` turns these into a checked [`super::Config`].
//! Tables with modules of their own declare their raw form there: issuers (`issuer.rs`),
//! outputs (`output.rs`), the endpoint (`endpoint.rs`), and each cloud's table in its provider
//! crate (`keyfed_aws::config`).

use std::collections::BTreeMap;

use keyfed_core::config::HumanDuration;
use serde::Deserialize;

use super::endpoint::RawEndpoint;
use super::issuer::RawIssuer;
use super::output::RawOutput;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub issuers: BTreeMap<String, RawIssuer>,
    #[serde(default)]
    pub targets: BTreeMap<String, RawTarget>,
    pub control: Option<RawControl>,
    pub engine: Option<RawEngine>,
    pub endpoint: Option<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub retry_min: Option<HumanDuration>,
    pub retry_max: Option<HumanDuration>,
    pub attempt_timeout: Option<HumanDuration>,
    pub start_jitter: Option<HumanDuration>,
    pub ready: Option<super::Ready>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    pub socket: Option<String>,
    pub mode: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub issuer: String,
    pub audience: Option<String>,
    pub scope: Option<StringOrList>,
    pub resource: Option<String>,
    pub audience_parameter: Option<bool>,
    pub strict_audience: Option<bool>,
    pub min_token_lifetime: Option<HumanDuration>,
    /// Trade the token with AWS STS (checked by `keyfed_aws::config`).
    pub aws: Option<keyfed_aws::config::RawAws>,
    /// Trade the token with Google Cloud (checked by `keyfed_gcp::config`).
    pub gcp: Option<keyfed_gcp::config::RawGcp>,
    /// Trade the token with Entra ID (checked by `keyfed_azure::config`).
    pub azure: Option<keyfed_azure::config::RawAzure>,
    #[serde(default)]
    pub outputs: Vec<RawOutput>,
    pub container_path: Option<String>,
    pub allow_users: Option<Vec<String>>,
    pub allow_groups: Option<Vec<String>>,
}

/// `scope = "a b"` or `scope = ["a", "b"]`.
#[derive(Debug)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StringOrList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrList::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringOrList::Many(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl StringOrList {
    pub fn items(&self) -> Vec<&str> {
        match self {
            Self::One(s) => s.split_whitespace().collect(),
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}
