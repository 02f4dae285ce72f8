//! File modes and owners in configuration: octal modes that never give others access, and
//! user and group names (or numbers) resolved through the system's user database.

use super::ConfigError;
use super::resolve::Ctx;

/// An octal mode such as "0640"; access for others is refused outright.
pub fn mode(ctx: &Ctx<'_>, key: &str, text: &str) -> Result<u32, ConfigError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            ctx.err(
                key,
                format!("expected an octal mode such as \"0640\", found \"{text}\""),
            )
        })?;
    if mode & 0o007 != 0 {
        return Err(ctx.err(
            key,
            format!("mode {mode:04o} gives others access; credentials are never world-accessible (use a group)"),
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(ctx.err(key, format!("mode {mode:04o} would keep keyfed itself from replacing the file; the owner needs rw")));
    }
    Ok(mode)
}

/// The permission bits of a secret or key file when group or others may read it: what
/// `keyfed check` warns about and `keyfed doctor` fails on. `None` when only its owner may (or
/// it cannot be inspected).
pub fn loosely_readable(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// A user name or number.
pub fn user(ctx: &Ctx<'_>, key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(ctx.err(key, format!("no user named \"{name}\" on this host"))),
        Err(e) => Err(ctx.err(key, format!("cannot look up user \"{name}\": {e}"))),
    }
}

/// A group name or number.
pub fn group(ctx: &Ctx<'_>, key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(ctx.err(key, format!("no group named \"{name}\" on this host"))),
        Err(e) => Err(ctx.err(key, format!("cannot look up group \"{name}\": {e}"))),
    }
}
