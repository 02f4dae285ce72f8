//! Where a target's credentials go on disk, in the formats their consumers read. Every file is
//! replaced atomically (`atomic.rs`) through its folder held open (`folder.rs`); the AWS shared
//! credentials file can instead have one profile merged into it under an exclusive lock
//! (`aws_ini.rs`), which may be a user's own `~/.aws/credentials` written by a keyfed running as
//! root: that file is read only if it is a regular file with one link owned by the output's
//! `owner` (keyfed's user when unset), in a folder that is no symbolic link.

mod atomic;
mod aws_ini;
mod folder;

use std::path::PathBuf;

pub use atomic::{FileSpec, write_atomic};

use atomic::Replaced;
use folder::{Folder, LOCK_WAIT, ReadFile, euid};
use keyfed_core::ExposeSecret as _;

use keyfed_core::exchange::SlotKey;

use crate::credential::{
    Credential, azure_cli_json, credential_process_json, gcp_token_json, profile_lines,
};

/// What an output file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// An AWS shared credentials profile: a file of its own, or merged into an existing file.
    AwsCredentials { profile: String, merge: bool },
    /// The `credential_process` JSON document.
    CredentialProcessJson,
    /// The raw JWT, no trailing newline (`token` and `web-identity-token`).
    Token,
    /// A Google Cloud access token: raw, or `{"access_token","expires_at","token_type"}`.
    GcpAccessToken { json: bool },
    /// The issuer's token a GCP target exchanges, raw, without a trailing newline.
    GcpSubjectToken,
    /// A Google external_account credential configuration (`document`, fixed by the
    /// configuration), and for a file-sourced one the subject-token file it names, written
    /// first so the document never names a file that is not there.
    GcpExternalAccount {
        document: String,
        subject_token: Option<PathBuf>,
    },
    /// An Azure access token for `scope` (`None`: the target's first, its main credential):
    /// raw, or `az account get-access-token`'s JSON.
    AzureAccessToken { scope: Option<String>, json: bool },
    /// The issuer's token for `AZURE_FEDERATED_TOKEN_FILE`, raw, without a trailing newline.
    AzureFederatedToken,
}

impl OutputKind {
    /// The variant of the target's credential this output is written from: the main one,
    /// or the subject token for the files of consumers that make the exchange themselves — an
    /// executable-sourced external_account file too: its content is fixed, but its consumers
    /// need the subject token `keyfed gcp-subject-token` hands out, not the main credential.
    pub fn slot(&self) -> Option<SlotKey> {
        match self {
            Self::GcpSubjectToken | Self::GcpExternalAccount { .. } | Self::AzureFederatedToken => {
                Some(SlotKey::SubjectToken)
            }
            Self::AzureAccessToken { scope, .. } => scope.clone().map(SlotKey::Resource),
            Self::AwsCredentials { .. }
            | Self::CredentialProcessJson
            | Self::Token
            | Self::GcpAccessToken { .. } => None,
        }
    }

    /// Files this output writes besides its `path` (checked against other outputs' paths).
    pub fn extra_path(&self) -> Option<&std::path::Path> {
        match self {
            Self::GcpExternalAccount {
                subject_token: Some(path),
                ..
            } => Some(path),
            _ => None,
        }
    }
}

/// One configured output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub name: &'static str,
    pub kind: OutputKind,
    pub path: PathBuf,
    /// Mode and owner; a merged file without `mode` keeps the existing file's owner bits
    /// (see `Output::merge`).
    pub mode: Option<u32>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// An output that could not be written; the previous file stays as it was.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the {name} output {}: {detail}", path.display())]
pub struct OutputError {
    pub name: &'static str,
    pub path: PathBuf,
    pub detail: String,
}

impl Output {
    fn spec(&self) -> FileSpec {
        FileSpec {
            mode: self.mode.unwrap_or(0o600),
            owner: self.owner,
            group: self.group,
        }
    }

    /// Writes `credential` in this output's format.
    pub fn write(&self, credential: &Credential) -> Result<(), OutputError> {
        let fail = |detail: String| OutputError {
            name: self.name,
            path: self.path.clone(),
            detail,
        };
        // Wiped once written (issue 11).
        let content = keyfed_core::secret::Zeroizing::new(match (&self.kind, credential) {
            (
                OutputKind::Token | OutputKind::GcpSubjectToken | OutputKind::AzureFederatedToken,
                Credential::Token(t),
            ) => t.expose().to_owned(),
            (OutputKind::AzureAccessToken { json: false, .. }, Credential::Azure(t)) => {
                t.token.expose_secret().to_owned()
            }
            (OutputKind::AzureAccessToken { json: true, .. }, Credential::Azure(t)) => {
                azure_cli_json(t)
            }
            (OutputKind::GcpAccessToken { json: false }, Credential::Gcp(t)) => {
                t.token.expose_secret().to_owned()
            }
            (OutputKind::GcpAccessToken { json: true }, Credential::Gcp(t)) => gcp_token_json(t),
            (
                OutputKind::GcpExternalAccount {
                    document,
                    subject_token: Some(token_path),
                },
                Credential::Token(t),
            ) => {
                write_atomic(token_path, t.expose().as_bytes(), self.spec()).map_err(|e| {
                    fail(format!(
                        "cannot write its subject token file {}: {e}",
                        token_path.display()
                    ))
                })?;
                document.clone()
            }
            (
                OutputKind::GcpExternalAccount {
                    document,
                    subject_token: None,
                },
                _,
            ) => document.clone(),
            (OutputKind::CredentialProcessJson, Credential::Aws(c)) => credential_process_json(c),
            (
                OutputKind::AwsCredentials {
                    profile,
                    merge: false,
                },
                Credential::Aws(c),
            ) => aws_ini::render(profile, &profile_lines(c)),
            (
                OutputKind::AwsCredentials {
                    profile,
                    merge: true,
                },
                Credential::Aws(c),
            ) => {
                return self
                    .merge(profile, &profile_lines(c))
                    .map_err(|e| fail(e.to_string()));
            }
            (_, other) => {
                return Err(fail(format!(
                    "it cannot hold a {} credential",
                    other.kind()
                )));
            }
        });
        write_atomic(&self.path, content.as_bytes(), self.spec()).map_err(|e| fail(e.to_string()))
    }

    /// Merges one profile into the shared credentials file under an exclusive lock. Without a
    /// configured `mode`, the file keeps its owner's permission bits and loses every access for
    /// group (unless `group` is configured) and others: credentials go in.
    ///
    /// The lock keeps other keyfeds out, not the user's own tools: `aws configure set`
    /// rewrites the file in place without any lock. So the merged file replaces the old one only
    /// if the old one still holds what was merged into, and a write another program made
    /// meanwhile is merged into again (issue 11: a profile the AWS CLI added while keyfed
    /// merged was lost) — but only once that write is finished: a file the program has
    /// truncated and not yet written is never merged into (it would drop every user line).
    fn merge(&self, profile: &str, keys: &[(&str, String)]) -> std::io::Result<()> {
        let (dir, name) = atomic::split(&self.path)?;
        // Whose file this is: as root with `owner = "alice"`, alice's; else keyfed's own.
        let owner = self.owner.unwrap_or_else(euid);
        let folder = Folder::open(dir, self.spec().new_folder(), Some(owner))?;
        // Refuse a link, a hard-linked or a foreign file before creating anything beside it.
        folder.check_file(name, owner)?;
        // Released when dropped, on every return.
        let _lock = folder.lock(name, owner, LOCK_WAIT)?;
        folder.remove_stale_temps(name, Some(owner));
        let mut base = folder.read_file(name, owner, MAX_MERGED_FILE)?;
        // What the file must hold for the merge to replace it: what `base` holds, except after
        // a write landed in a file the merge had just replaced — then what the merge wrote.
        let mut expected = base.as_ref().map(|f| f.content.clone());
        for _ in 0..MERGE_ATTEMPTS {
            let (existing, spec) = match &base {
                Some(file) => (self.text_of(&file.content)?, self.kept_spec(file, owner)),
                None => (String::new(), self.spec()),
            };
            let merged = aws_ini::merge(&existing, profile, keys);
            match folder.replace_if_unchanged(
                name,
                merged.as_bytes(),
                spec,
                expected.as_deref(),
                owner,
                MAX_MERGED_FILE,
                atomic::SETTLE,
            )? {
                Replaced::Done => return Ok(()),
                Replaced::Changed(now) => {
                    tracing::info!(
                        file = %self.path.display(),
                        "another program wrote the file while keyfed merged into it: merging again"
                    );
                    expected = now.as_ref().map(|f| f.content.clone());
                    base = now;
                }
                Replaced::Overtaken(written) => {
                    tracing::info!(
                        file = %self.path.display(),
                        "another program wrote the file just as keyfed replaced it: merging again"
                    );
                    base = written;
                    expected = Some(merged.into_bytes());
                }
            }
        }
        Err(std::io::Error::other(format!(
            "{} changed each of the {MERGE_ATTEMPTS} times keyfed merged into it: another program keeps writing it",
            self.path.display()
        )))
    }

    fn text_of(&self, content: &[u8]) -> std::io::Result<String> {
        String::from_utf8(content.to_vec()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not UTF-8 text", self.path.display()),
            )
        })
    }

    /// The mode and owner a merged file gets over the `existing` one (see [`Output::merge`]).
    fn kept_spec(&self, existing: &ReadFile, owner: u32) -> FileSpec {
        match self.mode {
            Some(_) => FileSpec {
                owner: Some(owner),
                ..self.spec()
            },
            None => FileSpec {
                mode: kept_mode(existing.mode, self.group.is_some()),
                owner: Some(owner),
                group: self.group.or(Some(existing.gid)),
            },
        }
    }
}

/// How many times a merge tries before giving up on a file other programs keep rewriting.
const MERGE_ATTEMPTS: usize = 5;

/// The largest shared credentials file keyfed merges into; a real one is a few KiB.
const MAX_MERGED_FILE: u64 = 1 << 20;

/// The mode of a merged file whose output configures none: its owner's bits (read and write at
/// least), the group's only when the output names a group, never any for others.
fn kept_mode(existing: u32, keep_group: bool) -> u32 {
    let group = if keep_group { existing & 0o070 } else { 0 };
    (existing & 0o700) | 0o600 | group
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7: a merged file kept group-read for a shared primary group.
    #[test]
    fn a_merged_file_loses_group_and_other_access_unless_a_group_is_configured() {
        assert_eq!(kept_mode(0o644, false), 0o600);
        assert_eq!(kept_mode(0o640, false), 0o600);
        assert_eq!(kept_mode(0o400, false), 0o600);
        assert_eq!(kept_mode(0o700, false), 0o700);
        assert_eq!(kept_mode(0o664, true), 0o660);
        assert_eq!(kept_mode(0o600, true), 0o600);
        assert_eq!(kept_mode(0o4640, true), 0o640);
    }
}
