//! The folder an output lives in, held open by a file descriptor, so that every step of a write —
//! creating missing folders, taking the merge lock, reading the file merged into, creating the
//! temporary file, renaming it, removing leftovers — happens relative to one folder checked once,
//! and no step looks a path up again.
//!
//! keyfed may run as root and write into a folder a user owns (`owner = "alice"` on
//! `~/.aws/credentials`), and that user can change anything in it at any moment. So the folder
//! is reached one component at a time with `O_NOFOLLOW`: a symbolic link is followed only where
//! it sits in a folder that nobody but root or keyfed's own user can change (`/var/run` →
//! `/run`), never as the output's folder itself; the folder must belong to root, to keyfed's
//! user or to the output's owner; and every file in it is opened with `O_NOFOLLOW` and checked
//! through its own descriptor.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::io::{self, Read as _, Seek as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, CWD, FileType, FlockOperation, Mode, OFlags, Stat};
use rustix::io::Errno;

/// How long a merge waits for another keyfed to release the file's lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Symbolic links followed on the way to one folder, as the kernel allows (`ELOOP`).
const MAX_LINKS: usize = 40;

/// An open output folder.
#[derive(Debug)]
pub struct Folder {
    pub(super) fd: OwnedFd,
    /// The folder as configured, for messages.
    pub(super) path: PathBuf,
}

/// Mode and ownership of the folders keyfed creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFolder {
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl NewFolder {
    /// A missing folder above the output's own: keyfed's, traversable (0711) when the output
    /// is meant for another owner or a group, else private.
    fn above(self) -> Self {
        let shared = self.owner.is_some() || self.group.is_some() || self.mode & 0o070 != 0;
        Self {
            mode: if shared { 0o711 } else { 0o700 },
            owner: None,
            group: None,
        }
    }
}

/// keyfed's effective uid: whose files keyfed itself creates.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A refusal: `path` and why, with nothing written.
pub(super) fn refuse(path: &Path, why: impl Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {why}", path.display()),
    )
}

/// A failed system call on `path`, in words.
pub(super) fn failed(what: &str, path: &Path, e: Errno) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

fn open_dir(at: impl std::os::fd::AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A folder holding a symbolic link can be trusted to keep it when nobody but root or keyfed's
/// own user can change the folder.
fn trusted(fd: &OwnedFd) -> Result<bool, Errno> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_uid == 0 || st.st_uid == euid()) && st.st_mode & 0o022 == 0)
}

fn components(path: &Path) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn owner_words(owner: u32) -> String {
    if owner == 0 {
        "0 (root)".to_owned()
    } else {
        format!("{owner} or root")
    }
}

impl Folder {
    /// Opens `dir`, creating missing folders as `new` says. The folder itself must not be a
    /// symbolic link and must be owned by root, by keyfed's user or by `owner`.
    pub fn open(dir: &Path, new: NewFolder, owner: Option<u32>) -> io::Result<Self> {
        let absolute = dir.has_root();
        let mut shown = PathBuf::from(if absolute { "/" } else { "." });
        let mut cur =
            open_dir(CWD, shown.as_path()).map_err(|e| failed("open the folder", &shown, e))?;
        let mut pending: VecDeque<OsString> = components(dir).collect();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            let last = pending.is_empty();
            shown.push(&name);
            match open_dir(&cur, name.as_os_str()) {
                Ok(fd) => cur = fd,
                // Only the output's own folder goes to its owner and group: a folder above it
                // given to a user would let that user decide where other outputs land.
                Err(Errno::NOENT) if last => cur = create(&cur, &name, &shown, new)?,
                Err(Errno::NOENT) => cur = create(&cur, &name, &shown, new.above())?,
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    let st = rustix::fs::statat(&cur, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|_| failed("open the folder", &shown, e))?;
                    if file_type(&st) != FileType::Symlink {
                        return Err(refuse(&shown, "is not a folder"));
                    }
                    if last {
                        return Err(refuse(&shown, "is a symbolic link"));
                    }
                    if !trusted(&cur).map_err(|e| failed("inspect", &shown, e))? {
                        return Err(refuse(
                            &shown,
                            "is a symbolic link in a folder someone other than root or keyfed's user can change",
                        ));
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(failed("open the folder", &shown, Errno::LOOP));
                    }
                    let target = rustix::fs::readlinkat(&cur, name.as_os_str(), Vec::new())
                        .map_err(|e| failed("read the link", &shown, e))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    shown.pop();
                    if target.has_root() {
                        shown = PathBuf::from("/");
                        cur = open_dir(CWD, "/").map_err(|e| failed("open", &shown, e))?;
                    }
                    for c in components(&target).rev() {
                        pending.push_front(c);
                    }
                }
                Err(e) => return Err(failed("open the folder", &shown, e)),
            }
        }
        let st = rustix::fs::fstat(&cur).map_err(|e| failed("inspect", dir, e))?;
        let me = euid();
        if st.st_uid != 0 && st.st_uid != me && Some(st.st_uid) != owner {
            return Err(refuse(
                dir,
                format!(
                    "is owned by uid {}, expected {}",
                    st.st_uid,
                    owner_words(owner.unwrap_or(me))
                ),
            ));
        }
        Ok(Self {
            fd: cur,
            path: dir.to_owned(),
        })
    }

    /// `name` in this folder, for messages.
    pub(super) fn shown(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Checks, without opening it, that `name` is absent or a regular file with one link owned
    /// by `owner`: a quick refusal before anything is created or locked.
    pub fn check_file(&self, name: &OsStr, owner: u32) -> io::Result<()> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => check_regular(&self.shown(name), &st, owner),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(failed("inspect", &self.shown(name), e)),
        }
    }

    /// The content of `name`, if it exists: opened without following a link and without
    /// blocking, then checked through its descriptor (a regular file with one link, owned by
    /// `owner`, at most `limit` bytes) before a byte is read.
    pub fn read_file(&self, name: &OsStr, owner: u32, limit: u64) -> io::Result<Option<ReadFile>> {
        let shown = self.shown(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(refuse(&shown, "is a symbolic link")),
            Err(e) => return Err(failed("open", &shown, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| failed("inspect", &shown, e))?;
        check_regular(&shown, &st, owner)?;
        if st.st_size as u64 > limit {
            return Err(refuse(&shown, format!("is larger than {limit} bytes")));
        }
        ReadFile::read(std::fs::File::from(fd), &st, &shown, limit).map(Some)
    }

    /// Takes keyfed's exclusive lock on `name` (the file `.NAME.keyfed-lock` beside it),
    /// waiting at most `wait` for another keyfed to release it. The lock file is opened without
    /// following a link and without blocking, so a FIFO or a link planted there is refused
    /// rather than waited on; it must be a regular file owned by `owner` or by keyfed's user.
    /// The lock is released when the returned descriptor is dropped.
    pub fn lock(&self, name: &OsStr, owner: u32, wait: Duration) -> io::Result<OwnedFd> {
        let mut lock_name = OsString::from(".");
        lock_name.push(name);
        lock_name.push(".keyfed-lock");
        let shown = self.shown(&lock_name);
        let me = euid();
        let check = |st: &Stat| {
            match file_type(st) {
                FileType::RegularFile => {}
                FileType::Symlink => return Err(refuse(&shown, "is a symbolic link")),
                _ => return Err(refuse(&shown, "is not a regular file")),
            }
            if st.st_uid != owner && st.st_uid != me {
                return Err(refuse(
                    &shown,
                    format!("is owned by uid {}, expected {owner}", st.st_uid),
                ));
            }
            Ok(())
        };
        // Look before opening: a FIFO or device is never opened at all.
        match rustix::fs::statat(&self.fd, lock_name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => check(&st)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(failed("inspect", &shown, e)),
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(
            &self.fd,
            lock_name.as_os_str(),
            flags | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                if owner != me {
                    std::os::unix::fs::fchown(&fd, Some(owner), None)
                        .map_err(|e| chown_failed(&shown, &e, Some(owner), None))?;
                }
                fd
            }
            Err(Errno::EXIST) => {
                match rustix::fs::openat(&self.fd, lock_name.as_os_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::LOOP) => return Err(refuse(&shown, "is a symbolic link")),
                    Err(e) => return Err(failed("open", &shown, e)),
                }
            }
            Err(e) => return Err(failed("create", &shown, e)),
        };
        check(&rustix::fs::fstat(&fd).map_err(|e| failed("inspect", &shown, e))?)?;
        let deadline = Instant::now() + wait;
        loop {
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(fd),
                Err(Errno::WOULDBLOCK | Errno::INTR) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "the lock {} is held by another process (waited {} ms)",
                            shown.display(),
                            wait.as_millis()
                        ),
                    ));
                }
                Err(e) => return Err(failed("lock", &shown, e)),
            }
        }
    }
}

/// A file read by [`Folder::read_file`], still open.
pub struct ReadFile {
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    pub gid: u32,
    /// The file read, even once another has replaced it at its name.
    file: std::fs::File,
    shown: PathBuf,
}

impl ReadFile {
    fn read(file: std::fs::File, st: &Stat, shown: &Path, limit: u64) -> io::Result<Self> {
        let mut content = Vec::new();
        (&file)
            .take(limit + 1)
            .read_to_end(&mut content)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot read {}: {e}", shown.display()))
            })?;
        if content.len() as u64 > limit {
            return Err(refuse(shown, format!("is larger than {limit} bytes")));
        }
        Ok(Self {
            content,
            mode: st.st_mode & 0o7777,
            gid: st.st_gid,
            file,
            shown: shown.to_owned(),
        })
    }

    /// The same file read again from its start, as it is now: what another program wrote into
    /// it since, even after it was replaced at its name (its checks were made when it was
    /// opened; a replaced file has no link left).
    pub fn again(&self, limit: u64) -> io::Result<Self> {
        let named = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot {what} {}: {e}", self.shown.display()),
            )
        };
        let file = self.file.try_clone().map_err(|e| named("reopen", e))?;
        let st = rustix::fs::fstat(&file).map_err(|e| failed("inspect", &self.shown, e))?;
        (&file)
            .seek(io::SeekFrom::Start(0))
            .map_err(|e| named("read", e))?;
        Self::read(file, &st, &self.shown, limit)
    }
}

/// A regular file with exactly one link, owned by `owner`.
fn check_regular(shown: &Path, st: &Stat, owner: u32) -> io::Result<()> {
    match file_type(st) {
        FileType::RegularFile => {}
        FileType::Symlink => return Err(refuse(shown, "is a symbolic link")),
        FileType::Directory => return Err(refuse(shown, "is a folder")),
        _ => return Err(refuse(shown, "is not a regular file")),
    }
    if st.st_nlink != 1 {
        return Err(refuse(shown, format!("has {} hard links", st.st_nlink)));
    }
    if st.st_uid != owner {
        return Err(refuse(
            shown,
            format!("is owned by uid {}, expected {owner}", st.st_uid),
        ));
    }
    Ok(())
}

/// A failed chown of `shown` that was to give it `owner` and/or `group` (only what differs
/// from the file's own), saying what an unprivileged keyfed needs for that change: the shipped
/// units have no CAP_CHOWN, so keyfed's user can give a file only a group it is a member of, and
/// never another owner (issue 13: the consumer drop-in's `group` failed so under a real systemd).
pub(crate) fn chown_failed(
    shown: &Path,
    e: &io::Error,
    owner: Option<u32>,
    group: Option<u32>,
) -> io::Error {
    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
        match (owner, group) {
            (Some(uid), Some(gid)) => format!(
                "; to give it owner {uid} and group {gid}, keyfed must run as root or have \
                 CAP_CHOWN (under systemd: User=root and CapabilityBoundingSet=CAP_CHOWN in a \
                 drop-in for the unit running keyfed)"
            ),
            (Some(uid), None) => format!(
                "; to give it owner {uid}, keyfed must run as root or have CAP_CHOWN (under \
                 systemd: User=root and CapabilityBoundingSet=CAP_CHOWN in a drop-in for the \
                 unit running keyfed)"
            ),
            (None, Some(gid)) => format!(
                "; to give it group {gid}, keyfed's user must be a member of that group (under \
                 systemd: SupplementaryGroups= in a drop-in for the unit running keyfed) or \
                 have CAP_CHOWN"
            ),
            (None, None) => String::new(),
        }
    } else {
        String::new()
    };
    io::Error::new(
        e.kind(),
        format!("cannot chown {}: {e}{hint}", shown.display()),
    )
}

/// Makes the missing folder `name` in `parent` with `new`'s mode, owner and group, set on the
/// folder itself after `mkdir`: the umask (0077 under the shipped unit) must not take a group's
/// access away. An existing folder is never changed.
fn create(parent: &OwnedFd, name: &OsStr, shown: &Path, new: NewFolder) -> io::Result<OwnedFd> {
    create_with(parent, name, shown, new, |fd, owner, group| {
        std::os::unix::fs::fchown(fd, owner, group)
    })
}

/// [`create`], changing ownership with `chown`. A folder whose ownership or mode cannot be set
/// is removed again: left behind keyfed's own and private, it would be "existing" at the next
/// start — after the operator gave keyfed the group the error asked for — and never fixed.
fn create_with(
    parent: &OwnedFd,
    name: &OsStr,
    shown: &Path,
    new: NewFolder,
    chown: impl FnOnce(&OwnedFd, Option<u32>, Option<u32>) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        // Created meanwhile by someone else (another keyfed): use it as it is.
        Err(Errno::EXIST) => {
            return open_dir(parent, name).map_err(|e| failed("open the folder", shown, e));
        }
        Err(e) => return Err(failed("create the folder", shown, e)),
    }
    let fd = open_dir(parent, name).map_err(|e| failed("open the folder", shown, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| failed("inspect", shown, e))?;
    if st.st_uid != euid() {
        return Err(refuse(shown, "was replaced while keyfed created it"));
    }
    // Only what differs, so the error names the change that needs a privilege.
    let owner = new.owner.filter(|&o| o != st.st_uid);
    let group = new.group.filter(|&g| g != st.st_gid);
    let set = if owner.is_some() || group.is_some() {
        chown(&fd, owner, group).map_err(|e| chown_failed(shown, &e, owner, group))
    } else {
        Ok(())
    }
    .and_then(|()| {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(new.mode))
            .map_err(|e| failed("chmod", shown, e))
    });
    if let Err(e) = set {
        // Still empty: nothing but keyfed wrote in it yet.
        let _ = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
        return Err(e);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const NEW: NewFolder = NewFolder {
        mode: 0o700,
        owner: None,
        group: None,
    };

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(r: io::Result<impl std::fmt::Debug>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn creates_missing_folders_with_the_mode_asked() {
        let dir = tempdir();
        let path = dir.path().join("a/b/c");
        let new = NewFolder { mode: 0o750, ..NEW };
        Folder::open(&path, new, None).unwrap_or_else(|e| panic!("{e}"));
        // The output's own folder as asked; those above it keyfed's, traversable.
        for (sub, want) in [("a", 0o711), ("a/b", 0o711), ("a/b/c", 0o750)] {
            let mode = std::fs::metadata(dir.path().join(sub))
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(mode, want, "{sub}");
        }
        // An existing folder is never changed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))
            .unwrap_or_else(|e| panic!("{e}"));
        Folder::open(&path, NEW, None).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o711));
    }

    /// Issue 7: the output's folder itself is never reached through a symbolic link.
    #[test]
    fn refuses_a_symlinked_folder() {
        let dir = tempdir();
        std::fs::create_dir(dir.path().join("real")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("real", dir.path().join(".aws"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = err(Folder::open(&dir.path().join(".aws"), NEW, None));
        assert!(e.ends_with("/.aws is a symbolic link"), "{e}");
    }

    /// Issue 7: a link on the way is followed only in a folder nobody else can change.
    #[test]
    fn follows_a_link_on_the_way_only_in_a_trusted_folder() {
        let dir = tempdir();
        std::fs::create_dir_all(dir.path().join("real/out")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        // The temporary folder is keyfed's own user's and private: trusted.
        let folder =
            Folder::open(&dir.path().join("link/out"), NEW, None).unwrap_or_else(|e| panic!("{e}"));
        let st = rustix::fs::fstat(&folder.fd).unwrap_or_else(|e| panic!("{e}"));
        let real = std::fs::metadata(dir.path().join("real/out")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&real));
        // Writable by others: the link could have been planted by anyone.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = err(Folder::open(&dir.path().join("link/out"), NEW, None));
        assert!(e.contains("/link is a symbolic link in a folder"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn refuses_a_file_where_a_folder_should_be() {
        let dir = tempdir();
        std::fs::write(dir.path().join("f"), "").unwrap_or_else(|e| panic!("{e}"));
        let e = err(Folder::open(&dir.path().join("f/x"), NEW, None));
        assert!(e.ends_with("/f is not a folder"), "{e}");
    }

    /// Issue 7: a merged file is checked through its own descriptor.
    #[test]
    fn reads_only_a_regular_file_with_one_link_and_the_expected_owner() {
        let dir = tempdir();
        let folder = Folder::open(dir.path(), NEW, None).unwrap_or_else(|e| panic!("{e}"));
        let me = euid();
        let name = OsStr::new("credentials");
        assert!(
            folder
                .read_file(name, me, 100)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        std::fs::write(dir.path().join("credentials"), "[default]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let read = folder
            .read_file(name, me, 100)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the file exists"));
        assert_eq!(read.content, b"[default]\n");
        let e = err(folder.read_file(name, me.wrapping_add(1), 100).map(|_| ()));
        assert!(
            e.ends_with(&format!(
                "credentials is owned by uid {me}, expected {}",
                me.wrapping_add(1)
            )),
            "{e}"
        );
        let e = err(folder.read_file(name, me, 5).map(|_| ()));
        assert!(e.ends_with("is larger than 5 bytes"), "{e}");

        std::fs::hard_link(dir.path().join("credentials"), dir.path().join("other"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = err(folder.read_file(name, me, 100).map(|_| ()));
        assert!(e.ends_with("credentials has 2 hard links"), "{e}");
        let e = err(folder.check_file(name, me));
        assert!(e.ends_with("credentials has 2 hard links"), "{e}");

        std::fs::remove_file(dir.path().join("credentials")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("other", dir.path().join("credentials"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = err(folder.read_file(name, me, 100).map(|_| ()));
        assert!(e.ends_with("credentials is a symbolic link"), "{e}");
        let e = err(folder.check_file(name, me));
        assert!(e.ends_with("credentials is a symbolic link"), "{e}");
    }

    /// Issue 7: a FIFO planted as the lock file is refused, not waited on.
    #[test]
    fn refuses_a_fifo_as_lock() {
        let dir = tempdir();
        rustix::fs::mknodat(
            CWD,
            dir.path().join(".credentials.keyfed-lock"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let folder = Folder::open(dir.path(), NEW, None).unwrap_or_else(|e| panic!("{e}"));
        let e = err(folder.lock(OsStr::new("credentials"), euid(), LOCK_WAIT));
        assert!(
            e.ends_with(".credentials.keyfed-lock is not a regular file"),
            "{e}"
        );
    }

    /// Issue 7: a held lock makes the merge fail after a bounded wait.
    #[test]
    fn gives_up_on_a_held_lock() {
        let dir = tempdir();
        let folder = Folder::open(dir.path(), NEW, None).unwrap_or_else(|e| panic!("{e}"));
        let name = OsStr::new("credentials");
        let held = folder
            .lock(name, euid(), Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e}"));
        // flock locks belong to the open file, so a second open conflicts even in one process.
        let e = err(folder.lock(name, euid(), Duration::from_millis(50)));
        assert!(
            e.contains(".credentials.keyfed-lock is held by another process"),
            "{e}"
        );
        drop(held);
        folder
            .lock(name, euid(), Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// issue 13 (review): a folder keyfed made but could not give its group is removed
    /// again, so that once keyfed has the group (SupplementaryGroups=, then a restart that
    /// keeps /run/keyfed) the next write creates it right instead of finding it "existing".
    #[test]
    fn a_folder_whose_group_cannot_be_set_is_not_left_behind() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let parent = open_dir(CWD, dir.path().as_os_str()).unwrap_or_else(|e| panic!("{e}"));
        let shown = dir.path().join("aws");
        let new = NewFolder {
            mode: 0o750,
            owner: None,
            group: Some(4242),
        };
        let refused = create_with(&parent, OsStr::new("aws"), &shown, new, |_, _, _| {
            Err(io::Error::from_raw_os_error(1))
        });
        let e = refused
            .err()
            .unwrap_or_else(|| panic!("the chown was refused"));
        assert!(e.to_string().contains("cannot chown"), "{e}");
        assert!(!shown.exists(), "the half-made folder stayed");

        let made = create_with(&parent, OsStr::new("aws"), &shown, new, |_, _, _| Ok(()));
        made.unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&shown)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }

    /// issue 13 (review): the hint after a refused chown names the change that needed the
    /// privilege — the owner, the group or both — and no unit by name (keyfed@NAME runs it
    /// too); another error gets none.
    #[test]
    fn a_refused_chown_says_what_the_change_needs() {
        let shown = Path::new("/run/keyfed/aws/credentials");
        let eperm = io::Error::from_raw_os_error(1);
        let says = |owner, group| chown_failed(shown, &eperm, owner, group).to_string();

        let group = says(None, Some(1001));
        assert!(
            group.starts_with("cannot chown /run/keyfed/aws/credentials: ")
                && group.contains("; to give it group 1001, keyfed's user must be a member")
                && group.contains("SupplementaryGroups= in a drop-in for the unit running keyfed"),
            "{group}"
        );
        let owner = says(Some(1002), None);
        assert!(
            owner.contains("; to give it owner 1002, keyfed must run as root or have CAP_CHOWN"),
            "{owner}"
        );
        assert!(!owner.contains("group"), "{owner}");
        let both = says(Some(1002), Some(1001));
        assert!(
            both.contains("; to give it owner 1002 and group 1001, keyfed must run as root"),
            "{both}"
        );
        assert!(!both.contains("SupplementaryGroups"), "{both}");
        for hint in [&group, &owner, &both] {
            assert!(!hint.contains("keyfed.service"), "{hint}");
        }
        assert_eq!(
            chown_failed(shown, &eperm, None, None).kind(),
            io::ErrorKind::PermissionDenied
        );

        let other = chown_failed(
            shown,
            &io::Error::from_raw_os_error(5),
            Some(1002),
            Some(1001),
        );
        assert_eq!(other.kind(), io::Error::from_raw_os_error(5).kind());
        assert!(!other.to_string().contains("; to give it"), "{other}");
    }
}
