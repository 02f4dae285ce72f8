//! `[endpoint]`: the local metadata endpoint's listeners and faces, checked against the
//! targets they expose. Loopback only unless `allow_remote = true`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawEndpoint;
use super::resolve::Ctx;
use super::target::{Exchange, Target};
use super::{ConfigError, perm};

/// Where and how the local endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSettings {
    pub listen: Vec<Listen>,
    /// Also answer IMDSv1 (no session token). Off by default.
    pub imds_v1: bool,
    /// A separate listener for /healthz, /readyz and /metrics; `None` serves them on `listen`.
    pub health_listen: Option<SocketAddr>,
    /// The file holding the container face's Authorization token.
    pub container_token_file: PathBuf,
    pub container_token_group: Option<u32>,
    /// Connections open at once, in all and per local user (lowered at start to fit the file
    /// descriptor limit: see `crate::caps`).
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    /// Names besides the listen addresses and `localhost` that a request's `Host` may give
    /// (lower case, no port): the DNS-rebinding check in `crate::endpoint::guard`.
    pub allowed_hosts: Vec<String>,
    /// Limit on reading a request's headers (slow clients are cut off).
    pub request_timeout: Duration,
}

/// One listen address and the AWS target its IMDSv2 face serves (none: the face is off there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub address: SocketAddr,
    pub imds_target: Option<String>,
}

/// Paths the endpoint itself answers; a target's `container_path` may not take them.
pub const RESERVED: [&str; 4] = ["/latest", "/healthz", "/readyz", "/metrics"];

fn address(
    ctx: &mut Ctx<'_>,
    key: &str,
    text: &str,
    allow_remote: bool,
) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        ctx.err(
            key,
            format!(
                "expected an address such as \"127.0.0.1:9911\" or \"[::1]:9911\", found \"{text}\""
            ),
        )
    })?;
    if !addr.ip().is_loopback() {
        if !allow_remote {
            return Err(ctx.err(
                key,
                format!("{addr} is not a loopback address; the endpoint hands out credentials, so set endpoint.allow_remote = true only if you mean it"),
            ));
        }
        ctx.warnings.push(format!(
            "{}: {key}: the endpoint listens on {addr}, beyond loopback (allow_remote = true)",
            ctx.file.display()
        ));
    }
    Ok(addr)
}

/// A host name or IP address, without port or scheme: what a `Host` header may name.
fn allowed_host(ctx: &Ctx<'_>, key: &str, text: &str) -> Result<String, ConfigError> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    let is_name = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if is_ip || is_name {
        Ok(name)
    } else {
        Err(ctx.err(
            key,
            format!(
                "expected a host name or IP address without port, such as \"metadata.google.internal\" or \"169.254.169.254\", found \"{text}\""
            ),
        ))
    }
}

fn check_imds_target(
    ctx: &Ctx<'_>,
    key: &str,
    name: &str,
    targets: &std::collections::BTreeMap<String, Target>,
) -> Result<(), ConfigError> {
    match targets.get(name).map(|t| &t.exchange) {
        Some(Exchange::Aws(_)) => Ok(()),
        Some(other) => Err(ctx.err(
            key,
            format!(
                "target \"{name}\" is of kind {}; the IMDS face serves AWS targets",
                other.kind()
            ),
        )),
        None => Err(ctx.err(key, format!("no target named \"{name}\""))),
    }
}

pub(super) fn resolve(
    ctx: &mut Ctx<'_>,
    raw: Option<&RawEndpoint>,
    targets: &std::collections::BTreeMap<String, Target>,
    socket: &std::path::Path,
) -> Result<Option<EndpointSettings>, ConfigError> {
    let Some(raw) = raw else {
        if let Some(t) = targets.values().find(|t| t.container_path.is_some()) {
            return Err(ctx.err(
                &format!("targets.{}.container_path", t.name),
                "needs an [endpoint] section to be served",
            ));
        }
        return Ok(None);
    };
    let allow_remote = raw.allow_remote.unwrap_or(false);
    let defaults = ["127.0.0.1:9911", "[::1]:9911"].map(|a| super::raw::RawListen {
        address: a.to_owned(),
        imds_target: None,
    });
    let entries = raw.listen.as_deref().unwrap_or(&defaults);
    if entries.is_empty() {
        return Err(ctx.err("endpoint.listen", "expected at least one address"));
    }
    if let Some(name) = &raw.imds_target {
        check_imds_target(ctx, "endpoint.imds_target", name, targets)?;
    }
    let mut listen: Vec<Listen> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("endpoint.listen[{i}]");
        let addr = address(ctx, &key, &entry.address, allow_remote)?;
        if listen.iter().any(|l| l.address == addr) {
            return Err(ctx.err(&key, format!("{addr} is listed twice")));
        }
        if let Some(name) = &entry.imds_target {
            check_imds_target(ctx, &format!("{key}.imds_target"), name, targets)?;
        }
        listen.push(Listen {
            address: addr,
            imds_target: entry
                .imds_target
                .clone()
                .or_else(|| raw.imds_target.clone()),
        });
    }
    let health_listen = raw
        .health_listen
        .as_deref()
        .map(|a| address(ctx, "endpoint.health_listen", a, allow_remote))
        .transpose()?;
    let mut seen = Vec::new();
    for t in targets.values() {
        let Some(path) = &t.container_path else {
            continue;
        };
        let key = format!("targets.{}.container_path", t.name);
        if !matches!(t.exchange, Exchange::Aws(_)) {
            return Err(ctx.err(&key, "the container face serves AWS targets only"));
        }
        if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', ' ']) {
            return Err(ctx.err(
                &key,
                format!(
                    "expected a path such as \"/aws/{}\", found \"{path}\"",
                    t.name
                ),
            ));
        }
        if RESERVED
            .iter()
            .any(|r| path == r || path.starts_with(&format!("{r}/")))
        {
            return Err(ctx.err(
                &key,
                format!(
                    "\"{path}\" is one of the endpoint's own paths ({})",
                    RESERVED.join(", ")
                ),
            ));
        }
        if seen.contains(&path) {
            return Err(ctx.err(&key, format!("\"{path}\" is used by another target too")));
        }
        seen.push(path);
    }
    let container_token_file = match &raw.container_token_file {
        Some(p) => ctx.path("endpoint.container_token_file", p)?,
        None => socket
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("container-token"),
    };
    let max_connections = raw.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        return Err(ctx.err("endpoint.max_connections", "expected at least 1"));
    }
    let max_connections_per_user = raw
        .max_connections_per_user
        .unwrap_or(max_connections.div_ceil(4));
    if max_connections_per_user == 0 || max_connections_per_user > max_connections {
        return Err(ctx.err(
            "endpoint.max_connections_per_user",
            format!("expected 1 to max_connections ({max_connections})"),
        ));
    }
    let allowed_hosts = raw
        .allowed_hosts
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, name)| allowed_host(ctx, &format!("endpoint.allowed_hosts[{i}]"), name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(EndpointSettings {
        listen,
        imds_v1: raw.imds_v1.unwrap_or(false),
        health_listen,
        container_token_file,
        container_token_group: raw
            .container_token_group
            .as_deref()
            .map(|g| perm::group(ctx, "endpoint.container_token_group", g))
            .transpose()?,
        max_connections,
        max_connections_per_user,
        allowed_hosts,
        request_timeout: ctx.duration(
            "endpoint.request_timeout",
            raw.request_timeout,
            Duration::from_secs(10),
        )?,
    }))
}
