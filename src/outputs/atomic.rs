//! Writing files so that a reader never sees a torn or empty one: in the output's folder, held
//! open (`folder.rs`), create a temporary file with a random name (exclusively, never through a
//! symbolic link), set its owner and mode, fsync it, rename it over the old one, fsync the folder.
//! Missing folders are created with mode 0700 (0750 and the file's group when a group must reach
//! the file) and the file's owner. Temporary files left by an interrupted write
//! (`.NAME.keyfed-tmp-<16 hex digits>`, over a minute old) are removed before the next write of
//! the same file.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::folder::{Folder, NewFolder, euid, failed};

/// A temporary file younger than this is never taken for one an interrupted write left.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

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

    /// The folders created on the way to such a file: private to its owner, and reachable by
    /// its group when it has one or the file's mode lets its group read it (a 0640 file in a
    /// 0700 folder would be readable by nobody but its owner).
    pub fn new_folder(&self) -> NewFolder {
        let for_group = self.group.is_some() || self.mode & 0o070 != 0;
        NewFolder {
            mode: if for_group { 0o750 } else { 0o700 },
            owner: self.owner,
            group: self.group,
        }
    }
}

/// `path` split into its folder and file name.
pub(super) fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// Replaces `path` with `content` atomically, leaving it with `spec`'s mode and owner.
pub fn write_atomic(path: &Path, content: &[u8], spec: FileSpec) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let folder = Folder::open(dir, spec.new_folder(), spec.owner)?;
    folder.remove_stale_temps(name, spec.owner);
    folder.replace(name, content, spec)
}

const TMP_MARK: &[u8] = b".keyfed-tmp-";

/// `.NAME.keyfed-tmp-` and 16 random hex digits.
fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        "{}{:016x}",
        String::from_utf8_lossy(TMP_MARK),
        rand::random::<u64>()
    ));
    tmp
}

/// Whether `entry` is exactly a name [`temp_name`] makes for `name`.
fn is_temp_of(entry: &[u8], name: &[u8]) -> bool {
    let Some(rest) = entry
        .strip_prefix(b".")
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix(TMP_MARK))
    else {
        return false;
    };
    rest.len() == 16 && rest.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Folder {
    /// Replaces `name` in this folder with `content`: a temporary file made and renamed over it
    /// through the folder's descriptor, so no path is looked up again.
    pub fn replace(&self, name: &OsStr, content: &[u8], spec: FileSpec) -> io::Result<()> {
        let tmp = temp_name(name);
        let shown = self.shown(&tmp);
        // An unpredictable name, created exclusively and never through a symlink: in a folder
        // others can write to, nobody can plant the temporary file or redirect the write.
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_os_str(),
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::NOCTTY
                | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| failed("create", &shown, e))?;
        let result = self.fill_and_rename(fd, &tmp, name, content, spec);
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_os_str(), AtFlags::empty());
        }
        result
    }

    fn fill_and_rename(
        &self,
        fd: OwnedFd,
        tmp: &OsStr,
        name: &OsStr,
        content: &[u8],
        spec: FileSpec,
    ) -> io::Result<()> {
        let shown = self.shown(name);
        let context = |what: &str| {
            let shown = shown.clone();
            let what = what.to_owned();
            move |e: io::Error| {
                io::Error::new(e.kind(), format!("cannot {what} {}: {e}", shown.display()))
            }
        };
        // Held until the file is renamed and closed: tells a cleanup by another keyfed that
        // this temporary file is in use, not left over.
        let _ = rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive);
        let st = rustix::fs::fstat(&fd).map_err(|e| failed("inspect", &shown, e))?;
        // Only what differs, so an unprivileged keyfed never asks for a change it may not make.
        let owner = spec.owner.filter(|&o| o != st.st_uid);
        let group = spec.group.filter(|&g| g != st.st_gid);
        let mut file = std::fs::File::from(fd);
        if owner.is_some() || group.is_some() {
            std::os::unix::fs::fchown(&file, owner, group).map_err(context("chown"))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(spec.mode))
            .map_err(context("chmod"))?;
        file.write_all(content).map_err(context("write"))?;
        file.sync_all().map_err(context("fsync"))?;
        rustix::fs::renameat(&self.fd, tmp, &self.fd, name)
            .map_err(|e| failed("rename a temporary file over", &shown, e))?;
        rustix::fs::fsync(&self.fd).map_err(|e| failed("fsync", &self.path, e))
    }

    /// Removes temporary files of `name` that interrupted writes left behind (they may hold live
    /// credentials): only names [`temp_name`] makes, only regular files owned by keyfed's user
    /// or by `owner` (whom keyfed gives its temporary files), never through a link, and never
    /// one another keyfed is writing right now (it holds a lock on it). Best effort: a file that
    /// cannot be removed does not stop the write.
    pub fn remove_stale_temps(&self, name: &OsStr, owner: Option<u32>) {
        let entries = match rustix::fs::Dir::read_from(&self.fd) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(folder = %self.path.display(), "cannot list the folder: {e}");
                return;
            }
        };
        let me = euid();
        for entry in entries.flatten() {
            let entry_name = OsStr::from_bytes(entry.file_name().to_bytes());
            if !is_temp_of(entry_name.as_bytes(), name.as_bytes()) {
                continue;
            }
            match self.remove_if_stale(entry_name, me, owner) {
                Ok(true) => tracing::info!(
                    file = %self.shown(entry_name).display(),
                    "removed a temporary file left by an interrupted write"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    file = %self.shown(entry_name).display(),
                    "cannot remove a temporary file left by an interrupted write: {e}"
                ),
            }
        }
    }

    fn remove_if_stale(&self, tmp: &OsStr, me: u32, owner: Option<u32>) -> Result<bool, Errno> {
        let fd = match rustix::fs::openat(
            &self.fd,
            tmp,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Gone meanwhile, or a link: not ours to remove.
            Err(Errno::NOENT | Errno::LOOP) => return Ok(false),
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&fd)?;
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        if !regular || (st.st_uid != me && Some(st.st_uid) != owner) {
            return Ok(false);
        }
        // A write takes milliseconds; a file changed within STALE_AFTER may be one another
        // keyfed has just created and not yet locked.
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0));
        if changed.elapsed().map_or(true, |age| age < STALE_AFTER) {
            return Ok(false);
        }
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(false), // being written right now
            Err(e) => return Err(e),
        }
        // Remove the name only while it still names the file checked.
        let now = rustix::fs::statat(&self.fd, tmp, AtFlags::SYMLINK_NOFOLLOW)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Ok(false);
        }
        rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    #[test]
    fn replaces_a_symlink_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("elsewhere"), "keep").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("elsewhere", dir.path().join("token"))
            .unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&dir.path().join("token"), b"new", FileSpec::PRIVATE)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fs::read_to_string(dir.path().join("elsewhere"))
                .ok()
                .as_deref(),
            Some("keep")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("token")).ok().as_deref(),
            Some("new")
        );
    }

    #[test]
    fn temp_names_are_recognised_exactly() {
        let name = OsStr::new("credentials");
        for _ in 0..100 {
            let tmp = temp_name(name);
            assert!(is_temp_of(tmp.as_bytes(), name.as_bytes()), "{tmp:?}");
        }
        for other in [
            ".credentials.keyfed-tmp-0123456789abcde",
            ".credentials.keyfed-tmp-0123456789abcdef0",
            ".credentials.keyfed-tmp-0123456789ABCDEF",
            ".credentials.keyfed-tmp-0123456789abcdeg",
            "credentials.keyfed-tmp-0123456789abcdef",
            ".credentials2.keyfed-tmp-0123456789abcdef",
            ".credentials.keyfed-lock",
            ".other.keyfed-tmp-0123456789abcdef",
        ] {
            assert!(!is_temp_of(other.as_bytes(), name.as_bytes()), "{other}");
        }
        assert!(is_temp_of(
            b".credentials.keyfed-tmp-0123456789abcdef",
            name.as_bytes()
        ));
    }

    /// Issue 7: temporary files of interrupted writes are removed before the next write, but a
    /// look-alike name, a link and a file being written are kept.
    #[test]
    fn removes_stale_temporary_files_of_the_same_output_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = |n: &str| dir.path().join(n);
        let stale = [
            ".token.keyfed-tmp-0123456789abcdef",
            ".token.keyfed-tmp-fedcba9876543210",
        ];
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for n in stale {
            fs::write(p(n), "live credentials").unwrap_or_else(|e| panic!("{e}"));
            fs::File::options()
                .write(true)
                .open(p(n))
                .and_then(|f| f.set_modified(long_ago))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Issue 7 review: one just created by another keyfed, not yet locked, is not stale.
        let fresh = ".token.keyfed-tmp-2222222222222222";
        fs::write(p(fresh), "being written").unwrap_or_else(|e| panic!("{e}"));
        let kept = [
            ".token.keyfed-tmp-notours",
            ".other.keyfed-tmp-0123456789abcdef",
            ".token.keyfed-tmp-00000000000000aa",
        ];
        fs::write(p(kept[0]), "").unwrap_or_else(|e| panic!("{e}"));
        fs::write(p(kept[1]), "").unwrap_or_else(|e| panic!("{e}"));
        fs::write(p("target"), "").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("target", p(kept[2])).unwrap_or_else(|e| panic!("{e}"));
        let busy = ".token.keyfed-tmp-1111111111111111";
        let busy_file = fs::File::create(p(busy)).unwrap_or_else(|e| panic!("{e}"));
        // Old, so only its lock tells it is being written.
        busy_file
            .set_modified(long_ago)
            .unwrap_or_else(|e| panic!("{e}"));
        rustix::fs::flock(&busy_file, FlockOperation::LockExclusive)
            .unwrap_or_else(|e| panic!("{e}"));

        write_atomic(&p("token"), b"new", FileSpec::PRIVATE).unwrap_or_else(|e| panic!("{e}"));
        for n in stale {
            assert!(!p(n).exists(), "{n} was removed");
        }
        for n in kept.iter().chain([&busy, &fresh]) {
            assert!(p(n).symlink_metadata().is_ok(), "{n} was kept");
        }
        assert!(p("target").exists());
    }
}
