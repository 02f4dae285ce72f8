//! The `[control]` section: where the control socket lives and who may open it.
//!
//! The daemon and its clients (`keyfed credential-process`, `keyfed status`) find the socket
//! the same way, so the default depends only on the configuration file and the user, never on
//! a variable only the daemon's environment has. It never lies in `/tmp` or in any folder
//! another user could create first: when none of the rules below applies, `[control] socket`
//! must be set.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::perm;
use super::raw::RawControl;
use super::resolve::Ctx;

/// Where and how the control socket is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<u32>,
}

/// The folder of the system-wide configuration; a configuration there belongs to the system
/// daemon, whose socket is in [`SYSTEM_SOCKET`] whoever asks.
const SYSTEM_CONFIG_DIR: &str = "/etc/keyfed";

/// The system daemon's socket: the shipped unit's `RuntimeDirectory=keyfed`. Only root can
/// create `/run/keyfed`, so no other user can plant a socket there.
const SYSTEM_SOCKET: &str = "/run/keyfed/keyfed.sock";

/// The socket's default path, first rule that applies:
/// 1. `/run/keyfed-NAME/keyfed.sock` for a configuration `/etc/keyfed/NAME.toml` (any NAME,
///    `keyfed` too) while the folder `/run/keyfed-NAME/` exists, whoever asks: the instance
///    unit `keyfed@NAME.service`'s `RuntimeDirectory=keyfed-NAME`, which systemd creates
///    before the daemon starts and keeps while it runs. Only root can create it, so no other
///    user can plant it; and without it (no instance runs, or `keyfed.service` runs the file
///    with `--config`) the next rule applies as it did before instances existed. A folder of
///    its own beside `/run/keyfed`, not inside it: systemd removes a unit's runtime folder with
///    everything in it when the unit stops, so one inside `/run/keyfed` would vanish with
///    `keyfed.service`;
/// 2. `/run/keyfed/keyfed.sock` for root, or for any configuration in `/etc/keyfed/` (the
///    shipped unit's `RuntimeDirectory=`, where the system daemon's clients look for it);
/// 3. `$XDG_RUNTIME_DIR/keyfed.sock` (the user's private runtime folder);
/// 4. `$RUNTIME_DIRECTORY/keyfed.sock`, its first entry, for a daemon systemd runs without
///    `XDG_RUNTIME_DIR` (the home systemd gives it is often read-only or missing);
/// 5. `~/.cache/keyfed/keyfed.sock` when `HOME` is an absolute path other than `/`.
///
/// Otherwise there is no safe default, and the error says to set `[control] socket`. The folder
/// is checked (owner, mode, no symlink) when the daemon binds the socket. `is_dir` says whether
/// a folder exists ([`is_dir`] outside tests).
pub fn default_socket(
    env: &dyn Fn(&str) -> Option<String>,
    is_root: bool,
    config_file: &Path,
    is_dir: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    if let Some(name) = instance_name(config_file) {
        let folder = PathBuf::from(format!("/run/keyfed-{name}"));
        if is_dir(&folder) {
            return Ok(folder.join("keyfed.sock"));
        }
    }
    if is_root || is_system_config(config_file) {
        return Ok(PathBuf::from(SYSTEM_SOCKET));
    }
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = absolute("XDG_RUNTIME_DIR") {
        return Ok(dir.join("keyfed.sock"));
    }
    // systemd joins several RuntimeDirectory= entries with ':'; the first is the unit's own.
    if let Some(dir) = env("RUNTIME_DIRECTORY")
        .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
        .filter(|p| p.is_absolute())
    {
        return Ok(dir.join("keyfed.sock"));
    }
    if let Some(home) = absolute("HOME").filter(|h| h != Path::new("/")) {
        return Ok(home.join(".cache/keyfed/keyfed.sock"));
    }
    Err(
        "no safe default for the control socket: keyfed runs as a user other than root with \
         neither XDG_RUNTIME_DIR, RUNTIME_DIRECTORY nor a home folder; set [control] socket \
         to a path in a folder only this user (or root) can write"
            .to_owned(),
    )
}

/// True for a configuration file in `/etc/keyfed/` (after making a relative path absolute).
fn is_system_config(file: &Path) -> bool {
    std::path::absolute(file)
        .ok()
        .and_then(|f| f.parent().map(|p| p == Path::new(SYSTEM_CONFIG_DIR)))
        .unwrap_or(false)
}

/// `NAME` for a configuration `/etc/keyfed/NAME.toml`: the instance of `keyfed@.service` that
/// would run it.
fn instance_name(file: &Path) -> Option<String> {
    if !is_system_config(file) || file.extension()? != "toml" {
        return None;
    }
    let name = file.file_stem()?.to_str()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether `path` is a folder: whether systemd made an instance's runtime folder.
pub fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

pub fn resolve(ctx: &Ctx<'_>, raw: Option<&RawControl>) -> Result<SocketSpec, ConfigError> {
    resolve_with(ctx, raw, &is_dir)
}

/// [`resolve`], asking `is_dir` whether a folder exists.
pub fn resolve_with(
    ctx: &Ctx<'_>,
    raw: Option<&RawControl>,
    is_dir: &dyn Fn(&Path) -> bool,
) -> Result<SocketSpec, ConfigError> {
    let path = match raw.and_then(|r| r.socket.as_deref()) {
        Some(p) => ctx.path("control.socket", p)?,
        None => default_socket(ctx.env, ctx.host.is_root, ctx.file, is_dir)
            .map_err(|message| ctx.err("control.socket", message))?,
    };
    let mode = match raw.and_then(|r| r.mode.as_deref()) {
        Some(m) => perm::mode(ctx, "control.mode", m)?,
        None => 0o660,
    };
    let group = raw
        .and_then(|r| r.group.as_deref())
        .map(|g| perm::group(ctx, "control.group", g))
        .transpose()?;
    Ok(SocketSpec { path, mode, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default on a host where no instance's runtime folder exists.
    fn default(pairs: &[(&str, &str)], is_root: bool, file: &str) -> Result<PathBuf, String> {
        default_with(pairs, is_root, file, &[])
    }

    /// The default on a host where the folders `dirs` exist.
    fn default_with(
        pairs: &[(&str, &str)],
        is_root: bool,
        file: &str,
        dirs: &[&str],
    ) -> Result<PathBuf, String> {
        let env = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let is_dir = |path: &Path| dirs.iter().any(|d| Path::new(d) == path);
        default_socket(&env, is_root, Path::new(file), &is_dir)
    }

    fn path(p: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(p))
    }

    const USER_FILE: &str = "/home/alice/.config/keyfed/keyfed.toml";

    #[test]
    fn root_and_the_system_configuration_use_run_keyfed() {
        let xdg = [("XDG_RUNTIME_DIR", "/run/user/0"), ("HOME", "/root")];
        assert_eq!(default(&xdg, true, USER_FILE), path(SYSTEM_SOCKET));
        // issue 7: the shipped unit runs as User=keyfed with /etc/keyfed/keyfed.toml; its
        // clients (other users, other units with a RuntimeDirectory= of their own) must find
        // the same socket.
        let unit = [("RUNTIME_DIRECTORY", "/run/keyfed"), ("HOME", "/")];
        let system = "/etc/keyfed/keyfed.toml";
        assert_eq!(default(&unit, false, system), path(SYSTEM_SOCKET));
        let consumer = [
            ("RUNTIME_DIRECTORY", "/run/my-app"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ];
        assert_eq!(default(&consumer, false, system), path(SYSTEM_SOCKET));
        assert_eq!(
            default(&[], false, "/etc/keyfed/other.conf"),
            path(SYSTEM_SOCKET)
        );
        assert_eq!(
            default(
                &[("HOME", "/home/alice")],
                false,
                "/etc/keyfed/sub/keyfed.toml"
            ),
            path("/home/alice/.cache/keyfed/keyfed.sock")
        );
    }

    /// issue 13: each instance of `keyfed@.service` runs `/etc/keyfed/NAME.toml` with a
    /// runtime folder of its own; while it runs (systemd made `/run/keyfed-NAME`), the daemon
    /// and every client (root, other users, other units) find its socket there, never the main
    /// unit's.
    #[test]
    fn an_instance_configuration_uses_a_runtime_folder_of_its_own() {
        let instance = [("RUNTIME_DIRECTORY", "/run/keyfed-prod"), ("HOME", "/")];
        let client = [
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("HOME", "/home/alice"),
        ];
        let running = ["/run/keyfed-prod", "/run/keyfed"];
        for (env, is_root) in [
            (&instance[..], false),
            (&client[..], false),
            (&[][..], true),
        ] {
            assert_eq!(
                default_with(env, is_root, "/etc/keyfed/prod.toml", &running),
                path("/run/keyfed-prod/keyfed.sock"),
                "{env:?}"
            );
        }
        assert_eq!(
            default_with(&client, false, "/etc/keyfed/keyfed.toml", &running),
            path(SYSTEM_SOCKET)
        );
        // `keyfed@keyfed.service` is an instance like any other.
        assert_eq!(
            default_with(
                &client,
                false,
                "/etc/keyfed/keyfed.toml",
                &["/run/keyfed-keyfed"]
            ),
            path("/run/keyfed-keyfed/keyfed.sock")
        );
        // Only a `.toml` file right in /etc/keyfed names an instance.
        assert_eq!(
            default_with(
                &client,
                false,
                "/etc/keyfed/prod.toml.d/x.toml",
                &["/run/keyfed-x", "/run/keyfed-prod.toml.d"]
            ),
            path("/run/user/1000/keyfed.sock")
        );
        assert_eq!(
            default_with(&[], true, "/etc/keyfed/.toml", &["/run/keyfed-"]),
            path(SYSTEM_SOCKET)
        );
    }

    /// issue 13 (review): without its runtime folder — no instance runs it, or `keyfed.service`
    /// runs it with `--config /etc/keyfed/NAME.toml` (its drop-in's ReadWritePaths= has only
    /// /run/keyfed) — a configuration in /etc/keyfed keeps the socket it had before instances
    /// existed, for the daemon and its clients alike.
    #[test]
    fn without_its_runtime_folder_an_instance_name_keeps_run_keyfed() {
        let unit = [("RUNTIME_DIRECTORY", "/run/keyfed"), ("HOME", "/")];
        let client = [
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("HOME", "/home/alice"),
        ];
        for (env, is_root) in [(&unit[..], false), (&client[..], false), (&[][..], true)] {
            for dirs in [&[][..], &["/run/keyfed"][..], &["/run/keyfed-other"][..]] {
                assert_eq!(
                    default_with(env, is_root, "/etc/keyfed/aws.toml", dirs),
                    path(SYSTEM_SOCKET),
                    "{env:?} {dirs:?}"
                );
            }
        }
    }

    #[test]
    fn other_users_get_their_runtime_folder_then_systemd_s_then_their_home() {
        let all = [
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("RUNTIME_DIRECTORY", "/run/keyfed-alice:/run/other"),
            ("HOME", "/home/alice"),
        ];
        assert_eq!(
            default(&all, false, USER_FILE),
            path("/run/user/1000/keyfed.sock")
        );
        assert_eq!(
            default(&all[1..], false, USER_FILE),
            path("/run/keyfed-alice/keyfed.sock")
        );
        assert_eq!(
            default(&all[2..], false, USER_FILE),
            path("/home/alice/.cache/keyfed/keyfed.sock")
        );
    }

    #[test]
    fn no_safe_default_is_an_error_never_tmp() {
        // issue 7: without HOME the old default was /tmp/.cache/keyfed/keyfed.sock, a folder
        // any local user could create first.
        for env in [
            &[][..],
            &[("HOME", "/")][..],
            &[("HOME", "")][..],
            &[("HOME", "relative")][..],
            &[("XDG_RUNTIME_DIR", ""), ("RUNTIME_DIRECTORY", "")][..],
            &[("XDG_RUNTIME_DIR", "run/user/1000")][..],
        ] {
            let err = default(env, false, USER_FILE).err().unwrap_or_default();
            assert!(err.contains("set [control] socket"), "{env:?}: {err}");
        }
    }
}
