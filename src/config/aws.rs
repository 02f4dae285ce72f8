//! The host's side of AWS targets: a target's `aws` table, checked by `keyfed_aws::config` with
//! its errors put at their full key path (`targets.NAME.aws.role_arn`); the output kinds AWS
//! consumers read and their keys (`profile`, `merge`); the endpoint faces AWS SDKs call (IMDSv2
//! and container, served by `crate::endpoint`'s modules of those names); and how `keyfed check`
//! shows them.

use keyfed_aws::config::RawAws;
use keyfed_core::config::{KeyError, Keys};
use serde::{Deserialize as _, Deserializer};
use toml::{Table, Value};

use super::ConfigError;
use super::endpoint::FaceSpec;
use super::output::{OutputCx, OutputKindSpec, RawOutput};
use super::resolve::Ctx;
use crate::outputs::OutputKind;

/// `aws = {…}` checked: AssumeRoleWithWebIdentity of one role.
pub type AwsExchange = keyfed_aws::config::AwsTarget;

/// The target `name`'s `aws` table.
pub(super) fn exchange(
    ctx: &Ctx<'_>,
    name: &str,
    raw: &RawAws,
) -> Result<AwsExchange, ConfigError> {
    let table = format!("targets.{name}.aws");
    keyfed_aws::config::resolve(raw, name, ctx).map_err(ctx.within(&table))
}

/// The outputs AWS consumers read.
pub(super) const OUTPUT_KINDS: [OutputKindSpec; 3] = [
    // A shared credentials profile, a file of its own or merged into an existing one.
    OutputKindSpec {
        name: "aws-credentials",
        target: "aws",
        formats: &[],
        build: aws_credentials,
    },
    // `credential_process`'s JSON document.
    OutputKindSpec {
        name: "credential-process-json",
        target: "aws",
        formats: &[],
        build: |_, _| Ok(OutputKind::CredentialProcessJson),
    },
    // AWS_WEB_IDENTITY_TOKEN_FILE: the issuer's token, which the SDK trades itself.
    OutputKindSpec {
        name: "web-identity-token",
        target: "token",
        formats: &[],
        build: |_, _| Ok(OutputKind::Token),
    },
];

/// The endpoint faces AWS SDKs call.
pub(super) const FACES: [FaceSpec; 2] = [
    // IMDSv2, as on EC2: one target per listen address, its role name the target's name.
    FaceSpec {
        name: "imds",
        title: "IMDS",
        target_key: Some("imds_target"),
        path_key: None,
        serves: &["aws"],
        reserved: &["/latest"],
        advise: |_| None,
    },
    // The ECS-style container endpoint: each target at a path of its own.
    FaceSpec {
        name: "container",
        title: "container",
        target_key: None,
        path_key: Some("container_path"),
        serves: &["aws"],
        reserved: &[],
        advise: |_| None,
    },
];

/// The output keys only `aws-credentials` reads.
#[derive(Debug, Default)]
pub struct OutputKeys {
    pub profile: Option<String>,
    pub merge: Option<bool>,
}

impl Keys for OutputKeys {
    fn find(key: &str) -> Option<&'static str> {
        ["profile", "merge"].into_iter().find(|k| *k == key)
    }

    fn names() -> Vec<&'static str> {
        vec!["profile", "merge"]
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        match key {
            "profile" => self.profile = Some(String::deserialize(value)?),
            "merge" => self.merge = Some(bool::deserialize(value)?),
            other => {
                return Err(serde::de::Error::unknown_field(
                    other,
                    &["profile", "merge"],
                ));
            }
        }
        Ok(())
    }
}

/// `profile` and `merge` are refused on outputs of another kind than `aws-credentials`.
pub(super) fn check_output_keys(kind: &str, keys: &OutputKeys) -> Result<(), KeyError> {
    if kind == "aws-credentials" {
        return Ok(());
    }
    for (present, k) in [
        (keys.profile.is_some(), "profile"),
        (keys.merge.is_some(), "merge"),
    ] {
        if present {
            return Err(KeyError::new(
                k,
                "is only used with kind = \"aws-credentials\"",
            ));
        }
    }
    Ok(())
}

fn aws_credentials(raw: &RawOutput, _: &OutputCx<'_>) -> Result<OutputKind, KeyError> {
    let keys = &raw.keys.0;
    let profile = keys.profile.clone().unwrap_or_else(|| "default".to_owned());
    if profile.is_empty() || profile.contains(['[', ']', '\n']) {
        return Err(KeyError::new(
            "profile",
            format!("expected a profile name, found \"{profile}\""),
        ));
    }
    Ok(OutputKind::AwsCredentials {
        profile,
        merge: keys.merge.unwrap_or(false),
    })
}

/// The `aws` table as `keyfed check` prints it.
pub(super) fn show(aws: &AwsExchange) -> Table {
    let mut t = Table::new();
    t.insert("role_arn".into(), aws.role_arn.clone().into());
    t.insert("region".into(), aws.region.clone().into());
    t.insert("session_name".into(), aws.session_name.clone().into());
    t.insert("duration".into(), super::show::duration(aws.duration));
    t.insert(
        "endpoint_url".into(),
        aws.endpoint_url
            .as_ref()
            .map_or("(regional STS endpoint)".to_owned(), |u| u.to_string())
            .into(),
    );
    t.insert("fips".into(), aws.fips.into());
    if let Some(policy) = &aws.policy {
        t.insert("policy".into(), policy.clone().into());
    }
    if !aws.policy_arns.is_empty() {
        t.insert(
            "policy_arns".into(),
            Value::Array(aws.policy_arns.iter().map(|a| a.clone().into()).collect()),
        );
    }
    super::show::http(&mut t, &aws.http);
    t
}

/// An AWS output's own keys as `keyfed check` prints them.
pub(super) fn show_output(kind: &OutputKind, t: &mut Table) {
    if let OutputKind::AwsCredentials { profile, merge } = kind {
        t.insert("profile".into(), profile.clone().into());
        t.insert("merge".into(), (*merge).into());
    }
}

/// What an output without `mode` gets, when it is not the usual 0600.
pub(super) fn unset_mode(kind: &OutputKind) -> Option<&'static str> {
    matches!(kind, OutputKind::AwsCredentials { merge: true, .. })
        .then_some("(kept from the existing file, else 0600)")
}
