//! A target's `outputs`: which file (`path`), with which `mode`, `owner` and `group`, in which
//! format (`kind`). A format belongs to the cloud whose consumers read it and is declared with
//! that cloud's glue (`aws.rs`: `aws-credentials`, `credential-process-json`,
//! `web-identity-token`; `gcp.rs`: `gcp-access-token`, `gcp-subject-token`,
//! `gcp-external-account`; `azure.rs`: `azure-access-token`, `azure-federated-token`), except `token`, the issuer's token itself, declared here. Each kind
//! says which kind of target it serves and reads its own keys (`profile`, `merge`, `format`, …).

use std::fmt;
use std::path::Path;

use keyfed_core::config::{Context, KeyError, With, one_of};
use serde::{Deserialize, Deserializer};

use super::resolve::Ctx;
use super::target::Exchange;
use super::{ConfigError, aws, azure, gcp, perm};
use crate::outputs::{Output, OutputKind};

/// One kind of output file.
pub struct OutputKindSpec {
    /// Its name in `kind = "…"`.
    pub name: &'static str,
    /// The kind of target whose credential it holds (see [`super::Exchange::kind`]).
    pub target: &'static str,
    /// The values its `format` key takes, the default first; none when it has no such key.
    pub formats: &'static [&'static str],
    /// Its format, from the output's keys; errors name a key within the output's table.
    pub build: fn(&RawOutput, &OutputCx<'_>) -> Result<OutputKind, KeyError>,
}

/// What a kind may need besides the output's keys to build its format.
pub struct OutputCx<'a> {
    /// The target's name.
    pub target: &'a str,
    /// What the target trades its token for (its cloud's settings).
    pub exchange: &'a Exchange,
    /// The output's own path, resolved.
    pub path: &'a Path,
    /// The configuration file.
    pub config_file: &'a Path,
    /// How the configuration expands values and resolves paths.
    pub cx: &'a dyn Context,
    /// The output's `format`, checked against the kind's, default filled in ("" for a kind
    /// without formats).
    pub format: &'a str,
}

/// `token`: the issuer's token, raw, without a trailing newline.
const TOKEN: OutputKindSpec = OutputKindSpec {
    name: "token",
    target: "token",
    formats: &[],
    build: |_, _| Ok(OutputKind::Token),
};

/// Every output kind, in the order an error message lists them.
static KINDS: [&[OutputKindSpec]; 4] = [
    &aws::OUTPUT_KINDS,
    &gcp::OUTPUT_KINDS,
    &azure::OUTPUT_KINDS,
    &[TOKEN],
];

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
    /// For kinds with more than one format (`raw`, `json`).
    pub format: Option<String>,
}

/// An output as written: the keys every output has, and those each cloud's kinds read.
pub type RawOutput = With<RawOutputKeys, (aws::OutputKeys, gcp::OutputKeys, azure::OutputKeys)>;

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

/// The output's `format`: one the kind has, its first by default; refused on a kind with none.
fn output_format(
    spec: &'static OutputKindSpec,
    format: Option<&str>,
) -> Result<&'static str, KeyError> {
    match (format, spec.formats) {
        (None, formats) => Ok(formats.first().copied().unwrap_or_default()),
        (Some(_), []) => {
            let readers: Vec<String> = kinds()
                .filter(|k| !k.formats.is_empty())
                .map(|k| format!("\"{}\"", k.name))
                .collect();
            Err(KeyError::new(
                "format",
                format!("is only used with kind = {}", readers.join(" or ")),
            ))
        }
        (Some(asked), formats) => formats
            .iter()
            .copied()
            .find(|f| *f == asked)
            .ok_or_else(|| {
                KeyError::new(
                    "format",
                    format!("expected {}, found \"{asked}\"", one_of(formats)),
                )
            }),
    }
}

/// The output at `at` (`targets.NAME.outputs[i]`) of the target `target`.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    at: &str,
    raw: &RawOutput,
    target: &str,
    exchange: &Exchange,
) -> Result<Output, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let spec = raw.kind.0;
    let target_kind = exchange.kind();
    if spec.target != target_kind {
        return Err(ctx.err(
            &key("kind"),
            format!(
                "a \"{}\" output needs a target of kind {}, but this target is of kind {target_kind}",
                spec.name, spec.target
            ),
        ));
    }
    aws::check_output_keys(spec.name, &raw.keys.0).map_err(ctx.within(at))?;
    gcp::check_output_keys(spec.name, &raw.keys.1).map_err(ctx.within(at))?;
    azure::check_output_keys(spec.name, &raw.keys.2).map_err(ctx.within(at))?;
    let format = output_format(spec, raw.format.as_deref()).map_err(ctx.within(at))?;
    let path = ctx.path(&key("path"), &raw.path)?;
    let output_cx = OutputCx {
        target,
        exchange,
        path: &path,
        config_file: ctx.file,
        cx: ctx,
        format,
    };
    let kind = (spec.build)(raw, &output_cx).map_err(ctx.within(at))?;
    Ok(Output {
        name: spec.name,
        kind,
        path,
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
