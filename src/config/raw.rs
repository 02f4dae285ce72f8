//! The configuration file exactly as written: serde structs that refuse unknown keys. Nothing
//! here is validated beyond types; `resolve.rs` turns these into a checked [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::HumanDuration;

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
pub struct RawEndpoint {
    pub listen: Option<Vec<RawListen>>,
    pub allow_remote: Option<bool>,
    pub imds_target: Option<String>,
    pub imds_v1: Option<bool>,
    pub health_listen: Option<String>,
    pub container_token_file: Option<String>,
    pub container_token_group: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub allowed_hosts: Option<Vec<String>>,
    pub request_timeout: Option<HumanDuration>,
}

/// `"127.0.0.1:9911"`, or `{ address = "…", imds_target = "…" }` to serve another target on
/// that address's IMDS face.
#[derive(Debug)]
pub struct RawListen {
    pub address: String,
    pub imds_target: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenTable {
    address: String,
    imds_target: Option<String>,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawListen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address string or a table { address, imds_target }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawListen {
                    address: v.to_owned(),
                    imds_target: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let t =
                    RawListenTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawListen {
                    address: t.address,
                    imds_target: t.imds_target,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub retry_min: Option<HumanDuration>,
    pub retry_max: Option<HumanDuration>,
    pub attempt_timeout: Option<HumanDuration>,
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
pub struct RawIssuer {
    pub url: String,
    pub client_id: String,
    pub auth: Option<AuthMethod>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret: Option<String>,
    pub private_key_file: Option<String>,
    pub algorithm: Option<String>,
    pub key_id: Option<String>,
    pub assertion_audience: Option<AssertionAudienceKey>,
    pub token_endpoint: Option<String>,
    pub verify_signature: Option<bool>,
    pub ca_file: Option<String>,
    pub allow_insecure_http: Option<bool>,
    pub connect_timeout: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

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
    pub aws: Option<RawAws>,
    #[serde(default)]
    pub outputs: Vec<RawOutput>,
    pub container_path: Option<String>,
    pub allow_users: Option<Vec<String>>,
    pub allow_groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub role_arn: String,
    pub region: String,
    pub session_name: Option<String>,
    pub duration: Option<HumanDuration>,
    pub endpoint_url: Option<String>,
    pub fips: Option<bool>,
    pub policy: Option<String>,
    pub policy_arns: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub allow_insecure_http: Option<bool>,
    pub connect_timeout: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub kind: RawOutputKind,
    pub path: String,
    pub profile: Option<String>,
    pub merge: Option<bool>,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawOutputKind {
    AwsCredentials,
    CredentialProcessJson,
    WebIdentityToken,
    Token,
}

impl RawOutputKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::AwsCredentials => "aws-credentials",
            Self::CredentialProcessJson => "credential-process-json",
            Self::WebIdentityToken => "web-identity-token",
            Self::Token => "token",
        }
    }
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
