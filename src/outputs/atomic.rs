//! Writing files so that a reader never sees a torn or empty one: in the output's folder, held
//! open (`folder.rs`), create a temporary file with a random name (exclusively, never through a
//! symbolic link), set its owner and mode, fsync it, rename it over the old one, fsync the folder.
//! Missing folders are created with mode 0700 (0750 and the file's group when a group must reach
//! the file) and the file's owner. Temporary files left by an interrupted write
//! (`.NAME.keyfed-tmp-<16 hex digits>`, over a minute old) are removed before the next write of
//! the same file. A file that other programs rewrite in place without any lock (the shared
//! credentials file, which `aws configure set` rewrites) is replaced only if it still holds what
//! keyfed read, and what another program wrote into it just as keyfed replaced it is handed
//! back (`Folder::replace_if_unchanged`).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::folder::{Folder, NewFolder, ReadFile, euid, failed};

/// A temporary file younger than this is never taken for one an interrupted write left.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// How long after replacing a file that others write in place [`Folder::replace_if_unchanged`]
/// looks at the replaced one again: a writer that opened it just before the rename writes into
/// it within this (the AWS CLI opens the file and writes it within a millisecond).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long [`Folder::replace_if_unchanged`] waits at most for a file another program is
/// writing to settle (see [`settled`]) before it gives up and leaves the file as it is.
pub const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What [`Folder::replace_if_unchanged`] did. A file another program wrote is handed back only
/// once it has settled (see [`settled`]).
pub enum Replaced {
    /// The file held what was expected; it holds the new content now.
    Done,
    /// The file does not hold the new content — it did not hold what was expected and was left
    /// as it is, or another program rewrote it after the rename from what it had read before:
    /// what it holds now.
    Changed(Option<ReadFile>),
    /// Replaced, but another program wrote into the replaced file just before: what it holds
    /// now, which the new content lacks.
    Overtaken(Option<ReadFile>),
}

fn content_of(file: &Option<ReadFile>) -> Option<&[u8]> {
    file.as_ref().map(|f| f.content.as_slice())
}

/// What a file another program is writing holds once that program has finished: `read` again
/// every [`SETTLE`] from `first` until two reads agree and the file is not a cut-short `before`
/// (empty or only its start: what a writer that truncated the file and has not written all of
/// it yet leaves). Taking such a file for the writer's work would merge into it and drop every
/// line the user had; so after [`SETTLE_LIMIT`] this fails and the caller leaves the file alone.
fn settled(
    shown: &Path,
    mut first: Option<ReadFile>,
    before: Option<&[u8]>,
    mut read: impl FnMut() -> io::Result<Option<ReadFile>>,
) -> io::Result<Option<ReadFile>> {
    let cut_short = |now: Option<&[u8]>| match (now, before) {
        (Some(now), Some(before)) => now.len() < before.len() && before.starts_with(now),
        _ => false,
    };
    let deadline = std::time::Instant::now() + SETTLE_LIMIT;
    loop {
        std::thread::sleep(SETTLE);
        let now = read()?;
        if content_of(&now) == content_of(&first) && !cut_short(content_of(&now)) {
            return Ok(now);
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "another program is writing {} and left it empty or cut short for {} s: keyfed leaves it as it is",
                shown.display(),
                SETTLE_LIMIT.as_secs()
            )));
        }
        first = now;
    }
}

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
        self.replace_checked(name, content, spec, || Ok(true))
            .map(|_| ())
    }

    /// [`Folder::replace`], asking `go_ahead` once the temporary file is complete, just before
    /// the rename: when it says no, the temporary file is removed and `name` left as it is.
    /// Whether it was replaced.
    fn replace_checked(
        &self,
        name: &OsStr,
        content: &[u8],
        spec: FileSpec,
        go_ahead: impl FnOnce() -> io::Result<bool>,
    ) -> io::Result<bool> {
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
        let result = self.fill(fd, name, content, spec).and_then(|file| {
            if !go_ahead()? {
                return Ok(false);
            }
            self.rename_over(&tmp, name)?;
            // The lock on the temporary file is held until it is in place.
            drop(file);
            Ok(true)
        });
        if !matches!(result, Ok(true)) {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_os_str(), AtFlags::empty());
        }
        result
    }

    /// Replaces `name` with `content` only if it still holds `expected` (`None`: it does not
    /// exist), for a file that programs other than keyfed rewrite in place without any lock (the
    /// AWS CLI's `aws configure set`): keyfed's own lock cannot keep them out, so what keyfed
    /// read may be gone by the time it would rename its file over it. The file is compared just
    /// before the rename; after it, see [`Folder::after_rename`].
    #[allow(clippy::too_many_arguments)] // each says what the file must hold and be
    pub fn replace_if_unchanged(
        &self,
        name: &OsStr,
        content: &[u8],
        spec: FileSpec,
        expected: Option<&[u8]>,
        owner: u32,
        limit: u64,
        settle: std::time::Duration,
    ) -> io::Result<Replaced> {
        let mut found = None;
        let replaced = self.replace_checked(name, content, spec, || {
            let now = self.read_file(name, owner, limit)?;
            let unchanged = now.as_ref().map(|f| f.content.as_slice()) == expected;
            found = Some(now);
            Ok(unchanged)
        })?;
        let found = found.flatten();
        if !replaced {
            let read = || self.read_file(name, owner, limit);
            return settled(&self.shown(name), found, expected, read).map(Replaced::Changed);
        }
        self.after_rename(name, found, content, owner, limit, settle)
    }

    /// After `content` replaced `old` at `name`: a writer that opened `old` just before the
    /// rename writes into it after, so `old` is read again `settle` later (see [`SETTLE`]);
    /// and one that read `old` before the rename may rewrite the new file from that stale read
    /// (putting older credentials back), so `name` must still hold `content`.
    fn after_rename(
        &self,
        name: &OsStr,
        old: Option<ReadFile>,
        content: &[u8],
        owner: u32,
        limit: u64,
        settle: std::time::Duration,
    ) -> io::Result<Replaced> {
        if let Some(old) = old {
            std::thread::sleep(settle);
            match old.again(limit) {
                Ok(after) if after.content != old.content => {
                    let read = || old.again(limit).map(Some);
                    let written =
                        settled(&self.shown(name), Some(after), Some(&old.content), read)?;
                    return Ok(Replaced::Overtaken(written));
                }
                Ok(_) => {}
                // The new file is in place; only the look for a late writer failed.
                Err(e) => tracing::warn!(
                    file = %self.shown(name).display(),
                    "cannot read the replaced file again to look for a late write: {e}"
                ),
            }
        }
        let now = self.read_file(name, owner, limit)?;
        if content_of(&now) == Some(content) {
            return Ok(Replaced::Done);
        }
        let read = || self.read_file(name, owner, limit);
        settled(&self.shown(name), now, Some(content), read).map(Replaced::Changed)
    }

    /// Fills the new temporary file `fd` of `name` with `content`, owner and mode set, synced to
    /// disk; returns it still locked.
    fn fill(
        &self,
        fd: OwnedFd,
        name: &OsStr,
        content: &[u8],
        spec: FileSpec,
    ) -> io::Result<std::fs::File> {
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
            std::os::unix::fs::fchown(&file, owner, group)
                .map_err(|e| super::folder::chown_failed(&shown, &e, owner, group))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(spec.mode))
            .map_err(context("chmod"))?;
        file.write_all(content).map_err(context("write"))?;
        file.sync_all().map_err(context("fsync"))?;
        Ok(file)
    }

    fn rename_over(&self, tmp: &OsStr, name: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, tmp, &self.fd, name)
            .map_err(|e| failed("rename a temporary file over", &self.shown(name), e))?;
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

    fn read_back(folder: &Folder, name: &str) -> Vec<u8> {
        folder
            .read_file(OsStr::new(name), euid(), 1000)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|f| f.content)
            .unwrap_or_default()
    }

    /// `folder`'s `credentials` replaced with `content` if it still holds `expected`, as the
    /// merge does (private mode, keyfed's user, 1000 ms lock wait, `settle` after the rename).
    fn replace_credentials(
        folder: &Folder,
        content: &[u8],
        expected: Option<&[u8]>,
        settle: std::time::Duration,
    ) -> Replaced {
        folder
            .replace_if_unchanged(
                OsStr::new("credentials"),
                content,
                FileSpec::PRIVATE,
                expected,
                euid(),
                1000,
                settle,
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Issue 11: a file that changed since keyfed read it (the AWS CLI rewrote it in place) is
    /// left as it is, and what it holds now is handed back to merge into.
    #[test]
    fn issue11_a_file_changed_since_it_was_read_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let folder = Folder::open(dir.path(), FileSpec::PRIVATE.new_folder(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("credentials"), "theirs").unwrap_or_else(|e| panic!("{e}"));
        for expected in [Some(&b"what keyfed read"[..]), None] {
            let done = replace_credentials(&folder, b"mine", expected, SETTLE);
            let Replaced::Changed(Some(now)) = done else {
                panic!("replaced a file that changed");
            };
            assert_eq!(now.content, b"theirs");
            assert_eq!(read_back(&folder, "credentials"), b"theirs");
        }
        let done = replace_credentials(&folder, b"mine", Some(b"theirs"), SETTLE);
        assert!(matches!(done, Replaced::Done));
        assert_eq!(read_back(&folder, "credentials"), b"mine");
        let names: Vec<_> = fs::read_dir(dir.path())
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["credentials"], "no temporary file is left behind");
    }

    /// Issue 11: a writer that opened the file just before keyfed renamed its own over it, and
    /// wrote after (into the replaced file, which no name reaches any more), is noticed: what it
    /// wrote is handed back to merge into.
    #[test]
    fn issue11_a_write_into_the_replaced_file_is_handed_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("credentials");
        fs::write(&path, "[a]\n").unwrap_or_else(|e| panic!("{e}"));
        // Opened before the rename, as `aws configure set` opens the file to append a profile.
        let mut cli = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        let old =
            std::os::unix::fs::MetadataExt::ino(&cli.metadata().unwrap_or_else(|e| panic!("{e}")));
        let watched = path.clone();
        let writer = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while fs::metadata(&watched)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok()
                == Some(old)
            {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(30),
                    "never replaced"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            cli.write_all(b"[cli]\n").unwrap_or_else(|e| panic!("{e}"));
        });
        let folder = Folder::open(dir.path(), FileSpec::PRIVATE.new_folder(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        // Long enough for the writer thread however busy the machine.
        let settle = std::time::Duration::from_secs(3);
        let done = replace_credentials(&folder, b"[a]\n[mine]\n", Some(b"[a]\n"), settle);
        writer
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
        let Replaced::Overtaken(written) = done else {
            panic!("the write into the replaced file went unnoticed");
        };
        assert_eq!(
            written.map(|f| f.content).as_deref(),
            Some(&b"[a]\n[cli]\n"[..])
        );
        assert_eq!(read_back(&folder, "credentials"), b"[a]\n[mine]\n");
    }

    /// A folder with `credentials` holding "[a]\n", that file read as the one keyfed merged
    /// into, and the AWS CLI's handle on it: opened with truncation (`aws configure set`
    /// opens it so to rewrite it), nothing written yet.
    fn truncated_by_the_cli() -> (tempfile::TempDir, Folder, ReadFile, fs::File) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("credentials"), "[a]\n").unwrap_or_else(|e| panic!("{e}"));
        let folder = Folder::open(dir.path(), FileSpec::PRIVATE.new_folder(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let old = folder
            .read_file(OsStr::new("credentials"), euid(), 1000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("credentials is missing"));
        let cli =
            fs::File::create(dir.path().join("credentials")).unwrap_or_else(|e| panic!("{e}"));
        (dir, folder, old, cli)
    }

    /// keyfed's merged file renamed over `credentials`.
    fn rename_mine_over(dir: &Path) {
        fs::write(dir.join("mine"), "[a]\n[mine]\n").unwrap_or_else(|e| panic!("{e}"));
        fs::rename(dir.join("mine"), dir.join("credentials")).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes `text` into `cli` 300 ms from now: later than [`SETTLE`].
    fn late_write(mut cli: fs::File, text: &'static str) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            cli.write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        })
    }

    /// Issue 11 review: a replaced file the AWS CLI had truncated just before the rename, and
    /// writes more than [`SETTLE`] after it, is handed back once written, never empty (merging
    /// into the empty file dropped every line the user had).
    #[test]
    fn issue11_a_replaced_file_truncated_and_written_late_is_handed_back_once_written() {
        let (dir, folder, old, cli) = truncated_by_the_cli();
        rename_mine_over(dir.path());
        let writer = late_write(cli, "[a]\n[cli]\n");
        let name = OsStr::new("credentials");
        let done = folder
            .after_rename(name, Some(old), b"[a]\n[mine]\n", euid(), 1000, SETTLE)
            .unwrap_or_else(|e| panic!("{e}"));
        writer
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
        let Replaced::Overtaken(written) = done else {
            panic!("the late write into the replaced file went unnoticed");
        };
        assert_eq!(
            written.map(|f| f.content).as_deref(),
            Some(&b"[a]\n[cli]\n"[..])
        );
        assert_eq!(read_back(&folder, "credentials"), b"[a]\n[mine]\n");
    }

    /// Issue 11 review: a replaced file that stays truncated is never handed back as what the
    /// other program wrote; the merge fails naming the file, which keeps every line.
    #[test]
    fn issue11_a_replaced_file_that_stays_truncated_fails_the_merge() {
        let (dir, folder, old, _cli) = truncated_by_the_cli();
        rename_mine_over(dir.path());
        let name = OsStr::new("credentials");
        let Err(e) = folder.after_rename(name, Some(old), b"[a]\n[mine]\n", euid(), 1000, SETTLE)
        else {
            panic!("a truncated file was taken for a finished write");
        };
        let e = e.to_string();
        assert!(
            e.contains("credentials and left it empty or cut short"),
            "{e}"
        );
        assert_eq!(read_back(&folder, "credentials"), b"[a]\n[mine]\n");
    }

    /// Issue 11 review: a file found truncated at its name just before the rename is not
    /// replaced, and handed back only once the other program has written it.
    #[test]
    fn issue11_a_file_truncated_before_the_rename_is_handed_back_once_written() {
        let (_dir, folder, _old, cli) = truncated_by_the_cli();
        let writer = late_write(cli, "[a]\n[cli]\n");
        let done = replace_credentials(&folder, b"[a]\n[mine]\n", Some(b"[a]\n"), SETTLE);
        writer
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
        let Replaced::Changed(now) = done else {
            panic!("replaced a file that changed");
        };
        assert_eq!(
            now.map(|f| f.content).as_deref(),
            Some(&b"[a]\n[cli]\n"[..])
        );
        assert_eq!(read_back(&folder, "credentials"), b"[a]\n[cli]\n");
    }

    /// Issue 11 review: the AWS CLI read the file before keyfed's rename and rewrote the new
    /// file from that stale read (putting keyfed's older credentials back): noticed, and what
    /// the file holds handed back to merge into again.
    #[test]
    fn issue11_a_rewrite_of_the_new_file_from_a_stale_read_is_handed_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("credentials"), "[a]\n").unwrap_or_else(|e| panic!("{e}"));
        let folder = Folder::open(dir.path(), FileSpec::PRIVATE.new_folder(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let name = OsStr::new("credentials");
        let old = folder
            .read_file(name, euid(), 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        rename_mine_over(dir.path());
        fs::write(dir.path().join("credentials"), "[a]\n[cli]\n").unwrap_or_else(|e| panic!("{e}"));
        let done = folder
            .after_rename(name, old, b"[a]\n[mine]\n", euid(), 1000, SETTLE)
            .unwrap_or_else(|e| panic!("{e}"));
        let Replaced::Changed(now) = done else {
            panic!("the stale rewrite went unnoticed");
        };
        assert_eq!(
            now.map(|f| f.content).as_deref(),
            Some(&b"[a]\n[cli]\n"[..])
        );
    }
}
