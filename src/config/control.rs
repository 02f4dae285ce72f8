//! The `[control]` section: where the control socket lives and who may open it.

use std::path::PathBuf;

use super::ConfigError;
use super::perm;
use super::raw::RawControl;
use super::resolve::Ctx;
use crate::control::server::SocketSpec;

/// The socket's default path: `/run/keyfed/keyfed.sock` for root; for other users
/// `$XDG_RUNTIME_DIR/keyfed.sock`, else `~/.cache/keyfed/keyfed.sock`.
pub fn default_socket(env: &dyn Fn(&str) -> Option<String>, is_root: bool) -> PathBuf {
    if is_root {
        return PathBuf::from("/run/keyfed/keyfed.sock");
    }
    match env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("keyfed.sock"),
        None => PathBuf::from(env("HOME").unwrap_or_else(|| "/tmp".to_owned()))
            .join(".cache/keyfed/keyfed.sock"),
    }
}

pub fn resolve(ctx: &Ctx<'_>, raw: Option<&RawControl>) -> Result<SocketSpec, ConfigError> {
    let path = match raw.and_then(|r| r.socket.as_deref()) {
        Some(p) => ctx.path("control.socket", p)?,
        None => default_socket(ctx.env, ctx.host.is_root),
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
