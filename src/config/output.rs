//! A target's `outputs`: which file (`path`), with which `mode`, `owner` and `group`, in which
//! format (`kind`). A format belongs to the cloud whose consumers read it and is declared with
//! that cloud's glue (`aws.rs`: `aws-credentials`, `credential-process-json`,
//! `web-identity-token`), except `token`, the issuer's token itself, declared here. Each kind
//! says which kind of target it serves and reads its own keys (`profile`, `merge`).

use std::fmt;

use keyfed_core::config::{KeyError, With, one_of};
use serde::{Deserialize, Deserializer};

use super::resolve::Ctx;
use super::{ConfigError, aws, perm};
use crate::outputs::{Output, OutputKind};

/// One kind of output file.
pub struct OutputKindSpec {
    /// Its name in `kind = "…"`.
    pub name: &'static str,
    /// The kind of target whose credential it holds (see [`super::Exchange::kind`]).
    pub target: &'static str,
    /// Its format, from the output's keys; errors name a key within the output's table.
    pub build: fn(&RawOutput) -> Result<OutputKind, KeyError>,
}

/// `token`: the issuer's token, raw, without a trailing newline.
const TOKEN: OutputKindSpec = OutputKindSpec {
    name: "token",
    target: "token",
    build: |_| Ok(OutputKind::Token),
};

/// Every output kind, in the order an error message lists them.
static KINDS: [&[OutputKindSpec]; 2] = [&aws::OUTPUT_KINDS, &[TOKEN]];

fn kinds() -> impl Iterator<Item = &'static OutputKindSpec> {
    KINDS.iter().copied().flatten()
}

/// The keys every output has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputKeys {
    pub kind: KindName,
    pub path: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// An output as written: the keys every output has, and those each cloud's kinds read.
pub type RawOutput = With<RawOutputKeys, aws::OutputKeys>;

/// `kind = "…"`, one of [`KINDS`]; refused while the file is read, so the error has the
/// position.
pub struct KindName(pub &'static OutputKindSpec);

impl fmt::Debug for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        kinds()
            .find(|k| k.name == name)
            .map(KindName)
            .ok_or_else(|| {
                let names: Vec<&str> = kinds().map(|k| k.name).collect();
                serde::de::Error::custom(format!(
                    "unknown variant `{name}`, expected {}",
                    one_of(&names)
                ))
            })
    }
}

/// The output at `at` (`targets.NAME.outputs[i]`) of a target of kind `target_kind`.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    at: &str,
    raw: &RawOutput,
    target_kind: &str,
) -> Result<Output, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let spec = raw.kind.0;
    if spec.target != target_kind {
        return Err(ctx.err(
            &key("kind"),
            format!(
                "a \"{}\" output needs a target of kind {}, but this target is of kind {target_kind}",
                spec.name, spec.target
            ),
        ));
    }
    aws::check_output_keys(spec.name, &raw.keys).map_err(ctx.within(at))?;
    let kind = (spec.build)(raw).map_err(ctx.within(at))?;
    Ok(Output {
        name: spec.name,
        kind,
        path: ctx.path(&key("path"), &raw.path)?,
        mode: raw
            .mode
            .as_deref()
            .map(|m| perm::mode(ctx, &key("mode"), m))
            .transpose()?,
        owner: raw
            .owner
            .as_deref()
            .map(|u| perm::user(ctx, &key("owner"), u))
            .transpose()?,
        group: raw
            .group
            .as_deref()
            .map(|g| perm::group(ctx, &key("group"), g))
            .transpose()?,
    })
}
