//! Configuration errors that name the file, the key path and what was expected, with the line
//! and column where the TOML parser knows them.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem; `keyfed` exits with status 3 on one.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path such as `issuers.corp.client_secret_file`; `None` for the file as a whole.
    pub key: Option<String>,
    pub message: String,
    /// 1-based line and column in the file.
    pub position: Option<(usize, usize)>,
}

impl ConfigError {
    pub fn at(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            key: Some(key.into()),
            message: message.into(),
            position: None,
        }
    }

    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            key: None,
            message: message.into(),
            position: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 4));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn display_names_file_position_and_key() {
        let mut e = ConfigError::at(Path::new("/etc/k.toml"), "targets.a.issuer", "no issuer");
        e.position = Some((3, 5));
        assert_eq!(
            e.to_string(),
            "/etc/k.toml:3:5: targets.a.issuer: no issuer"
        );
    }
}
