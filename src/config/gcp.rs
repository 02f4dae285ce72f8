//! The host's side of Google Cloud targets: a target's `gcp` table, checked by
//! `keyfed_gcp::config` with its errors put at their full key path (`targets.NAME.gcp.provider`);
//! the output kinds Google's consumers read (`gcp-access-token`, `gcp-subject-token`,
//! `gcp-external-account`) and their keys (`credential_source`, `subject_token_path`; and the
//! `format` every kind declares); the GCE metadata face (served by `crate::endpoint::gce`); and how
//! `keyfed check` shows them.

use std::path::{Path, PathBuf};

use keyfed_core::config::{KeyError, Keys, one_of};
use keyfed_gcp::config::RawGcp;
use serde::{Deserialize as _, Deserializer};
use serde_json::json;
use toml::{Table, Value};

use super::ConfigError;
use super::endpoint::FaceSpec;
use super::output::{OutputCx, OutputKindSpec, RawOutput};
use super::resolve::Ctx;
use super::target::Exchange;
use crate::outputs::OutputKind;

/// `gcp = {…}` checked: workload identity federation with one pool provider.
pub type GcpExchange = keyfed_gcp::config::GcpTarget;

/// The subject token type of keyfed's tokens, in an external_account file.
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How long Google's libraries give `keyfed gcp-subject-token` (their own default is 30 s).
const EXECUTABLE_TIMEOUT_MILLIS: u64 = 30_000;

/// The target `name`'s `gcp` table.
pub(super) fn exchange(
    ctx: &Ctx<'_>,
    name: &str,
    raw: &RawGcp,
) -> Result<GcpExchange, ConfigError> {
    let table = format!("targets.{name}.gcp");
    keyfed_gcp::config::resolve(raw, ctx).map_err(ctx.within(&table))
}

/// The outputs Google's consumers read.
pub(super) const OUTPUT_KINDS: [OutputKindSpec; 3] = [
    // An access token for the target's scopes: raw, or JSON with its expiry.
    OutputKindSpec {
        name: "gcp-access-token",
        target: "gcp",
        formats: &["raw", "json"],
        build: access_token,
    },
    // The issuer's token the target exchanges, for a credential_source of one's own.
    OutputKindSpec {
        name: "gcp-subject-token",
        target: "gcp",
        formats: &[],
        build: |_, _| Ok(OutputKind::GcpSubjectToken),
    },
    // GOOGLE_APPLICATION_CREDENTIALS: Google's libraries make the exchange themselves.
    OutputKindSpec {
        name: "gcp-external-account",
        target: "gcp",
        formats: &[],
        build: external_account,
    },
];

/// The GCE metadata face, as Google's libraries, gcloud and `gcp_auth` call it: the target
/// `gce_target` names is the `default` service account; other GCP targets answer under their
/// service account's email (or, without one, their name).
pub(super) const FACES: [FaceSpec; 1] = [FaceSpec {
    name: "gce",
    title: "GCE metadata",
    target_key: Some("gce_target"),
    path_key: None,
    serves: &["gcp"],
    // `/` is the detection ping google-auth (Python) sends; reserving it takes only `/` itself.
    reserved: &["/computeMetadata", "/"],
    advise: without_project_id,
}];

/// gcp_auth (Rust) and Go's `metadata.ProjectID` fail when the metadata server has no
/// project ID; the face answers 404 without `project_id`.
fn without_project_id(target: &super::Target) -> Option<String> {
    match &target.exchange {
        Exchange::Gcp(gcp) if gcp.project_id.is_none() => Some(format!(
            "targets.{}.gcp.project_id is not set: the GCE metadata face answers 404 to \
             project/project-id, and SDKs that need it (gcp_auth, Go's metadata.ProjectID) fail",
            target.name
        )),
        _ => None,
    }
}

/// The output keys only Google Cloud's kinds read.
#[derive(Debug, Default)]
pub struct OutputKeys {
    pub credential_source: Option<String>,
    pub subject_token_path: Option<String>,
}

const OUTPUT_KEYS: [&str; 2] = ["credential_source", "subject_token_path"];

impl Keys for OutputKeys {
    fn find(key: &str) -> Option<&'static str> {
        OUTPUT_KEYS.into_iter().find(|k| *k == key)
    }

    fn names() -> Vec<&'static str> {
        OUTPUT_KEYS.to_vec()
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        let value = Some(String::deserialize(value)?);
        match key {
            "credential_source" => self.credential_source = value,
            "subject_token_path" => self.subject_token_path = value,
            other => return Err(serde::de::Error::unknown_field(other, &OUTPUT_KEYS)),
        }
        Ok(())
    }
}

/// Each Google Cloud output key is refused on outputs of a kind that does not read it.
pub(super) fn check_output_keys(kind: &str, keys: &OutputKeys) -> Result<(), KeyError> {
    for (present, key, reader) in [
        (
            keys.credential_source.is_some(),
            "credential_source",
            "gcp-external-account",
        ),
        (
            keys.subject_token_path.is_some(),
            "subject_token_path",
            "gcp-external-account",
        ),
    ] {
        if present && kind != reader {
            return Err(KeyError::new(
                key,
                format!("is only used with kind = \"{reader}\""),
            ));
        }
    }
    Ok(())
}

fn access_token(_: &RawOutput, cx: &OutputCx<'_>) -> Result<OutputKind, KeyError> {
    Ok(OutputKind::GcpAccessToken {
        json: cx.format == "json",
    })
}

/// The external_account document for the output at `cx.path`, fixed once the configuration is
/// read: Google's libraries exchange the subject token at `sts_url` themselves, and impersonate
/// the service account when the target does.
fn external_account(raw: &RawOutput, cx: &OutputCx<'_>) -> Result<OutputKind, KeyError> {
    let Exchange::Gcp(gcp) = cx.exchange else {
        return Err(KeyError::new("kind", "needs a target with a gcp table"));
    };
    let keys = &raw.keys.1;
    let (source, subject_token) = match keys.credential_source.as_deref() {
        None | Some("file") => {
            let token_path = match &keys.subject_token_path {
                Some(p) => cx
                    .cx
                    .path(p)
                    .map_err(|m| KeyError::new("subject_token_path", m))?,
                None => sibling_token_path(cx.path),
            };
            if token_path == cx.path {
                return Err(KeyError::new(
                    "subject_token_path",
                    "must differ from the output's own path",
                ));
            }
            let source = json!({
                "file": token_path.display().to_string(),
                "format": {"type": "text"},
            });
            (source, Some(token_path))
        }
        Some("executable") => {
            if keys.subject_token_path.is_some() {
                return Err(KeyError::new(
                    "subject_token_path",
                    "is only used with credential_source = \"file\"",
                ));
            }
            let command = executable_command(cx)?;
            let source = json!({
                "executable": {"command": command, "timeout_millis": EXECUTABLE_TIMEOUT_MILLIS},
            });
            (source, None)
        }
        Some(other) => {
            return Err(KeyError::new(
                "credential_source",
                format!(
                    "expected {}, found \"{other}\"",
                    one_of(&["file", "executable"])
                ),
            ));
        }
    };
    let mut document = json!({
        "type": "external_account",
        "audience": gcp.sts_audience(),
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": gcp.sts_url.as_str(),
        "credential_source": source,
    });
    if let Some(sa) = &gcp.service_account {
        document["service_account_impersonation_url"] =
            gcp.iam_method_url(sa, "generateAccessToken").into();
        document["service_account_impersonation"] =
            json!({"token_lifetime_seconds": gcp.lifetime.as_secs()});
    }
    let document = serde_json::to_string_pretty(&document)
        .map_err(|e| KeyError::new("kind", format!("cannot render the document: {e}")))?;
    Ok(OutputKind::GcpExternalAccount {
        document,
        subject_token,
    })
}

/// `external-account.json` keeps its subject token in `external-account.jwt` beside it.
fn sibling_token_path(path: &Path) -> PathBuf {
    path.with_extension("jwt")
}

/// `<keyfed> --config <file> gcp-subject-token <target>`: this binary's own path, since the
/// libraries run the command without a shell and split it at spaces (so none may hold one).
fn executable_command(cx: &OutputCx<'_>) -> Result<String, KeyError> {
    let exe = std::env::current_exe().map_err(|e| {
        KeyError::new(
            "credential_source",
            format!("cannot tell keyfed's own path for the command: {e}"),
        )
    })?;
    let parts = [
        installed_path(&exe.display().to_string()).to_owned(),
        "--config".to_owned(),
        cx.config_file.display().to_string(),
        "gcp-subject-token".to_owned(),
        cx.target.to_owned(),
    ];
    if let Some(spaced) = parts
        .iter()
        .find(|p| p.is_empty() || p.contains(char::is_whitespace))
    {
        return Err(KeyError::new(
            "credential_source",
            format!(
                "Google's libraries split the command at spaces, and \"{spaced}\" holds one; \
                 use credential_source = \"file\" or paths without spaces"
            ),
        ));
    }
    Ok(parts.join(" "))
}

/// The path a binary was started from, once a package upgrade has replaced it: Linux then
/// shows `/usr/bin/keyfed (deleted)`, and the new binary is at the old path.
fn installed_path(exe: &str) -> &str {
    exe.strip_suffix(" (deleted)").unwrap_or(exe)
}

/// The `gcp` table as `keyfed check` prints it.
pub(super) fn show(gcp: &GcpExchange) -> Table {
    let mut t = Table::new();
    t.insert("provider".into(), gcp.provider.clone().into());
    if let Some(sa) = &gcp.service_account {
        t.insert("service_account".into(), sa.clone().into());
        t.insert("lifetime".into(), super::show::duration(gcp.lifetime));
    }
    t.insert(
        "scopes".into(),
        Value::Array(gcp.scopes.iter().map(|s| s.clone().into()).collect()),
    );
    if !gcp.delegates.is_empty() {
        t.insert(
            "delegates".into(),
            Value::Array(gcp.delegates.iter().map(|s| s.clone().into()).collect()),
        );
    }
    if let Some(id) = &gcp.project_id {
        t.insert("project_id".into(), id.clone().into());
    }
    t.insert("project_number".into(), gcp.project_number.clone().into());
    t.insert("sts_url".into(), gcp.sts_url.to_string().into());
    t.insert("iam_url".into(), gcp.iam_url.to_string().into());
    super::show::http(&mut t, &gcp.http);
    t
}

/// A Google Cloud output's own keys as `keyfed check` prints them.
pub(super) fn show_output(kind: &OutputKind, t: &mut Table) {
    match kind {
        OutputKind::GcpAccessToken { json } => {
            t.insert("format".into(), if *json { "json" } else { "raw" }.into());
        }
        OutputKind::GcpExternalAccount { subject_token, .. } => {
            let source = if subject_token.is_some() {
                "file"
            } else {
                "executable"
            };
            t.insert("credential_source".into(), source.into());
            if let Some(p) = subject_token {
                t.insert("subject_token_path".into(), p.display().to_string().into());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 9 (review): after a package upgrade replaced the running binary, a reload wrote
    /// external_account files naming "/usr/bin/keyfed (deleted)", refused as holding a space.
    #[test]
    fn a_replaced_binary_is_named_by_its_installed_path_issue_9() {
        assert_eq!(
            installed_path("/usr/bin/keyfed (deleted)"),
            "/usr/bin/keyfed"
        );
        assert_eq!(installed_path("/usr/bin/keyfed"), "/usr/bin/keyfed");
    }
}
