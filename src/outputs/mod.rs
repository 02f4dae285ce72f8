//! Where a target's credentials go on disk, in the formats their consumers read. Every file is
//! replaced atomically (`atomic.rs`); the AWS shared credentials file can instead have one
//! profile merged into it under an exclusive lock (`aws_ini.rs`).

mod atomic;
mod aws_ini;

use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

pub use atomic::{FileSpec, o_nofollow, write_atomic};

use crate::credential::{Credential, credential_process_json, profile_lines};

/// What an output file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// An AWS shared credentials profile: a file of its own, or merged into an existing file.
    AwsCredentials { profile: String, merge: bool },
    /// The `credential_process` JSON document.
    CredentialProcessJson,
    /// The raw JWT, no trailing newline (`token` and `web-identity-token`).
    Token,
}

impl OutputKind {
    pub fn for_aws(&self) -> bool {
        matches!(
            self,
            Self::AwsCredentials { .. } | Self::CredentialProcessJson
        )
    }
}

/// One configured output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub name: &'static str,
    pub kind: OutputKind,
    pub path: PathBuf,
    /// Mode and owner; `None` mode on a merged file keeps the existing file's mode and owner.
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
        let content = match (&self.kind, credential) {
            (OutputKind::Token, Credential::Token(t)) => t.expose().to_owned(),
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
        };
        write_atomic(&self.path, content.as_bytes(), self.spec()).map_err(|e| fail(e.to_string()))
    }

    /// Merges one profile into the shared credentials file under an exclusive lock, keeping the
    /// existing file's owner and mode (less any access for others) unless configured.
    fn merge(&self, profile: &str, keys: &[(&str, String)]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new().recursive(true).create(dir)?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock_path = dir.join(format!(".{name}.keyfed-lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(o_nofollow())
            .mode(0o600)
            .open(&lock_path)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        let (existing, spec) = match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let meta = std::fs::metadata(&self.path)?;
                let spec = match self.mode {
                    Some(_) => self.spec(),
                    // The existing mode, but never access for others: credentials go in.
                    None => FileSpec {
                        mode: (meta.mode() & 0o770) | 0o600,
                        owner: self.owner.or(Some(meta.uid())),
                        group: self.group.or(Some(meta.gid())),
                    },
                };
                (text, spec)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), self.spec()),
            Err(e) => return Err(e),
        };
        let merged = aws_ini::merge(&existing, profile, keys);
        write_atomic(&self.path, merged.as_bytes(), spec)
        // The lock is released when `lock` is dropped.
    }
}
