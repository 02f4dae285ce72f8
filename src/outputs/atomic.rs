//! Writing files so that a reader never sees a torn or empty one: write a temporary file in the
//! same folder, set its mode and owner, fsync it, rename it over the old one, fsync the folder.
//! Missing parent folders are created with mode 0700 (0750 when a group must reach the file).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode and ownership of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl FileSpec {
    /// Owner-only, owned by whoever keyfed runs as.
    pub const PRIVATE: Self = Self {
        mode: 0o600,
        owner: None,
        group: None,
    };

    #[cfg(any(test, feature = "demo"))]
    pub fn mode(mode: u32) -> Self {
        Self {
            mode,
            ..Self::PRIVATE
        }
    }
}

/// Replaces `path` with `content` atomically, leaving it with `spec`'s mode and owner.
pub fn write_atomic(path: &Path, content: &[u8], spec: FileSpec) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_mode = if spec.group.is_some() { 0o750 } else { 0o700 };
    DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    // An unpredictable name, created exclusively and never through a symlink: in a folder
    // others can write to, nobody can plant the temporary file or redirect the write.
    let tmp = dir.join(format!(
        ".{}.keyfed-tmp-{:016x}",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(o_nofollow())
            .mode(0o600)
            .open(&tmp)?;
        if spec.owner.is_some() || spec.group.is_some() {
            std::os::unix::fs::fchown(&file, spec.owner, spec.group)?;
        }
        file.set_permissions(fs::Permissions::from_mode(spec.mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `O_NOFOLLOW`, through rustix so no `unsafe` or libc binding is needed.
pub fn o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/dir/token");
        write_atomic(&path, b"one", FileSpec::PRIVATE).unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&path, b"two", FileSpec::mode(0o640)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read(&path).ok().as_deref(), Some(&b"two"[..]));
        let mode = fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o640));
        let parent = fs::metadata(dir.path().join("sub"))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(parent, Some(0o700));
        let leftovers = fs::read_dir(path.parent().unwrap_or(dir.path()))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
