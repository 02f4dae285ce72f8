//! `[endpoint]`: the local metadata endpoint's listeners and faces, checked against the
//! targets they expose. Loopback only unless `allow_remote = true`.
//!
//! The configuration knows a face by its [`FaceSpec`], declared with its cloud's glue (`aws.rs`:
//! the IMDS and container faces) the way output kinds are: its name, the `[endpoint]` key naming
//! the target it serves on each listen address (`imds_target`), the target key giving a target's
//! path on it (`container_path`), the kinds of target it serves and the paths it answers. What a
//! face does with a request is `crate::endpoint`'s; nothing here names a particular face.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keyfed_core::config::{HumanDuration, Keys, With};
use serde::{Deserialize, Deserializer};

use super::resolve::Ctx;
use super::target::Target;
use super::{ConfigError, aws, azure, gcp, perm};

/// What the configuration knows of one face of the endpoint.
#[derive(Debug)]
pub struct FaceSpec {
    /// Its name: the `face` label of `keyfed_endpoint_requests_total`, and how `keyfed status`
    /// lists it. The endpoint's face module of this name serves it.
    pub name: &'static str,
    /// How messages call it: "the IMDS face".
    pub title: &'static str,
    /// The key, in `[endpoint]` and in a `listen` entry, naming the one target the face serves
    /// on that address (`imds_target`); `None` when targets choose paths on it instead.
    pub target_key: Option<&'static str>,
    /// The target key giving the path a target is served at on this face (`container_path`).
    pub path_key: Option<&'static str>,
    /// The kinds of target it can serve (see [`super::Exchange::kind`]).
    pub serves: &'static [&'static str],
    /// The path prefixes it answers itself, which no target's path may take.
    pub reserved: &'static [&'static str],
    /// A warning about serving `target` on this face (a setting its SDKs will miss), for
    /// `keyfed check` and the daemon's start.
    pub advise: fn(&Target) -> Option<String>,
}

impl FaceSpec {
    /// Whether `path` is one this face answers itself.
    pub fn reserves(&self, path: &str) -> bool {
        self.reserved.iter().any(|r| under(path, r))
    }

    fn serves_words(&self) -> String {
        format!(
            "the {} face serves targets of kind {}",
            self.title,
            self.serves.join(" or ")
        )
    }
}

/// Every face, each cloud's in its glue, in the order `keyfed check` lists their keys. A new
/// cloud's faces are one more entry here.
static FACES: [&[FaceSpec]; 3] = [&aws::FACES, &gcp::FACES, &azure::FACES];

/// Every face the endpoint has.
pub fn faces() -> impl Iterator<Item = &'static FaceSpec> {
    FACES.iter().copied().flatten()
}

/// The face named `name`.
pub fn face(name: &str) -> Option<&'static FaceSpec> {
    faces().find(|f| f.name == name)
}

/// Paths the endpoint answers whatever its faces: liveness, readiness, metrics.
pub const HEALTH_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Every path prefix the endpoint answers itself: the faces' and [`HEALTH_PATHS`].
fn reserved() -> Vec<&'static str> {
    faces()
        .flat_map(|f| f.reserved.iter().copied())
        .chain(HEALTH_PATHS)
        .collect()
}

/// `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A target's paths on the faces that give targets paths: `(face, path)`. The keys are the
/// target's own (`container_path`); which face reads each is the face's declaration.
pub fn paths_of(target: &Target) -> impl Iterator<Item = (&'static FaceSpec, &str)> {
    let keys = [("container_path", target.container_path.as_deref())];
    keys.into_iter().filter_map(|(key, path)| {
        let face = faces().find(|f| f.path_key == Some(key))?;
        Some((face, path?))
    })
}

/// `[endpoint]` as written: its own keys, and each face's target key (`imds_target`).
pub type RawEndpoint = With<RawEndpointKeys, FaceTargets>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpointKeys {
    pub listen: Option<Vec<RawListen>>,
    pub allow_remote: Option<bool>,
    pub imds_v1: Option<bool>,
    pub health_listen: Option<String>,
    pub container_token_file: Option<String>,
    pub container_token_group: Option<String>,
    pub identity_header_file: Option<String>,
    pub identity_header_group: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub allowed_hosts: Option<Vec<String>>,
    pub request_timeout: Option<HumanDuration>,
}

/// The faces' target keys present in a table: key (`imds_target`) → target name.
#[derive(Debug, Default)]
pub struct FaceTargets(BTreeMap<&'static str, String>);

impl FaceTargets {
    fn get(&self, face: &FaceSpec) -> Option<&String> {
        face.target_key.and_then(|key| self.0.get(key))
    }
}

impl Keys for FaceTargets {
    fn find(key: &str) -> Option<&'static str> {
        faces().filter_map(|f| f.target_key).find(|k| *k == key)
    }

    /// Each key once: faces may share one (Azure's two managed-identity faces read
    /// `azure_target`).
    fn names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for key in faces().filter_map(|f| f.target_key) {
            if !names.contains(&key) {
                names.push(key);
            }
        }
        names
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        self.0.insert(key, String::deserialize(value)?);
        Ok(())
    }
}

/// `"127.0.0.1:9911"`, or `{ address = "…", imds_target = "…" }` to serve another target on
/// that address's face.
#[derive(Debug)]
pub struct RawListen {
    pub address: String,
    targets: FaceTargets,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenTable {
    address: String,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let keys: Vec<&str> = ["address"]
                    .into_iter()
                    .chain(FaceTargets::names())
                    .collect();
                write!(f, "an address string or a table {{ {} }}", keys.join(", "))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawListen {
                    address: v.to_owned(),
                    targets: FaceTargets::default(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let t = With::<RawListenTable, FaceTargets>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RawListen {
                    address: t.table.address,
                    targets: t.keys,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

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
    /// The file holding the App Service face's `X-IDENTITY-HEADER` secret.
    pub identity_header_file: PathBuf,
    pub identity_header_group: Option<u32>,
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

/// One listen address and the target each face with a target key serves there (a face with
/// none there is off on that address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub address: SocketAddr,
    /// Face name (`imds`) → target.
    pub targets: BTreeMap<&'static str, String>,
}

impl Listen {
    /// The target the face named `face` serves on this address.
    pub fn target(&self, face: &str) -> Option<&str> {
        self.targets.get(face).map(String::as_str)
    }
}

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

/// `name` is a target `face` can serve.
fn check_served(
    ctx: &Ctx<'_>,
    key: &str,
    face: &FaceSpec,
    name: &str,
    targets: &BTreeMap<String, Target>,
) -> Result<(), ConfigError> {
    match targets.get(name).map(|t| t.exchange.kind()) {
        Some(kind) if face.serves.contains(&kind) => Ok(()),
        Some(kind) => Err(ctx.err(
            key,
            format!(
                "target \"{name}\" is of kind {kind}; {}",
                face.serves_words()
            ),
        )),
        None => Err(ctx.err(key, format!("no target named \"{name}\""))),
    }
}

/// Each face's target on a listen address: the entry's own, else `[endpoint]`'s. `at` is the
/// entry's key path (`endpoint.listen[1]`).
fn listen_targets(
    ctx: &Ctx<'_>,
    at: &str,
    own: &FaceTargets,
    all: &FaceTargets,
    targets: &BTreeMap<String, Target>,
) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let mut chosen = BTreeMap::new();
    for face in faces() {
        if let (Some(key), Some(name)) = (face.target_key, own.get(face)) {
            check_served(ctx, &format!("{at}.{key}"), face, name, targets)?;
        }
        if let Some(name) = own.get(face).or_else(|| all.get(face)) {
            chosen.insert(face.name, name.clone());
        }
    }
    Ok(chosen)
}

/// Every target's paths on the faces that give targets paths: a path the face may serve,
/// none of the endpoint's own, none used twice.
fn check_paths(ctx: &Ctx<'_>, targets: &BTreeMap<String, Target>) -> Result<(), ConfigError> {
    let reserved = reserved();
    let mut seen: Vec<&str> = Vec::new();
    for t in targets.values() {
        for (face, path) in paths_of(t) {
            let key = format!("targets.{}.{}", t.name, face.path_key.unwrap_or_default());
            if !face.serves.contains(&t.exchange.kind()) {
                return Err(ctx.err(&key, face.serves_words()));
            }
            if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', ' ']) {
                return Err(ctx.err(
                    &key,
                    format!(
                        "expected a path such as \"/{}/{}\", found \"{path}\"",
                        t.exchange.kind(),
                        t.name
                    ),
                ));
            }
            if reserved.iter().any(|r| under(path, r)) {
                return Err(ctx.err(
                    &key,
                    format!(
                        "\"{path}\" is one of the endpoint's own paths ({})",
                        reserved.join(", ")
                    ),
                ));
            }
            if seen.contains(&path) {
                return Err(ctx.err(&key, format!("\"{path}\" is used by another target too")));
            }
            seen.push(path);
        }
    }
    Ok(())
}

pub(super) fn resolve(
    ctx: &mut Ctx<'_>,
    raw: Option<&RawEndpoint>,
    targets: &BTreeMap<String, Target>,
    socket: &std::path::Path,
) -> Result<Option<EndpointSettings>, ConfigError> {
    let Some(raw) = raw else {
        let pathed = targets
            .values()
            .find_map(|t| paths_of(t).next().map(|(face, _)| (t, face)));
        if let Some((t, face)) = pathed {
            return Err(ctx.err(
                &format!("targets.{}.{}", t.name, face.path_key.unwrap_or_default()),
                "needs an [endpoint] section to be served",
            ));
        }
        return Ok(None);
    };
    let allow_remote = raw.allow_remote.unwrap_or(false);
    let defaults = ["127.0.0.1:9911", "[::1]:9911"].map(|a| RawListen {
        address: a.to_owned(),
        targets: FaceTargets::default(),
    });
    let entries = raw.listen.as_deref().unwrap_or(&defaults);
    if entries.is_empty() {
        return Err(ctx.err("endpoint.listen", "expected at least one address"));
    }
    for face in faces() {
        if let (Some(key), Some(name)) = (face.target_key, raw.keys.get(face)) {
            check_served(ctx, &format!("endpoint.{key}"), face, name, targets)?;
        }
    }
    let mut listen: Vec<Listen> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("endpoint.listen[{i}]");
        let addr = address(ctx, &key, &entry.address, allow_remote)?;
        if listen.iter().any(|l| l.address == addr) {
            return Err(ctx.err(&key, format!("{addr} is listed twice")));
        }
        listen.push(Listen {
            address: addr,
            targets: listen_targets(ctx, &key, &entry.targets, &raw.keys, targets)?,
        });
    }
    let health_listen = raw
        .health_listen
        .as_deref()
        .map(|a| address(ctx, "endpoint.health_listen", a, allow_remote))
        .transpose()?;
    check_paths(ctx, targets)?;
    let mut advised = std::collections::BTreeSet::new();
    for l in &listen {
        for (face_name, target) in &l.targets {
            let (Some(face), Some(t)) = (face(face_name), targets.get(target)) else {
                continue;
            };
            if advised.insert((face.name, target.clone())) {
                ctx.warnings.extend((face.advise)(t));
            }
        }
    }
    let container_token_file = match &raw.container_token_file {
        Some(p) => ctx.path("endpoint.container_token_file", p)?,
        None => socket
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("container-token"),
    };
    let identity_header_file = match &raw.identity_header_file {
        Some(p) => ctx.path("endpoint.identity_header_file", p)?,
        None => socket
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("identity-header"),
    };
    // Each face's secret file is its own: one written over another locks the other's clients out.
    for (key, path) in [
        ("endpoint.identity_header_file", &identity_header_file),
        ("endpoint.container_token_file", &container_token_file),
    ] {
        if path == socket {
            return Err(ctx.err(key, "is the control socket's path"));
        }
    }
    if identity_header_file == container_token_file {
        return Err(ctx.err(
            "endpoint.identity_header_file",
            format!(
                "{} is also endpoint.container_token_file",
                identity_header_file.display()
            ),
        ));
    }
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
        identity_header_file,
        identity_header_group: raw
            .identity_header_group
            .as_deref()
            .map(|g| perm::group(ctx, "endpoint.identity_header_group", g))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Host, load};

    const BASE: &str = "[issuers.corp]\nurl = \"https://sso.example.com/realms/r\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"\n\
        [targets.aws]\nissuer = \"corp\"\ncontainer_path = \"/aws/app\"\n[targets.aws.aws]\nrole_arn = \"arn:aws:iam::123456789012:role/app\"\nregion = \"eu-west-1\"\n\
        [targets.other]\nissuer = \"corp\"\n[targets.other.aws]\nrole_arn = \"arn:aws:iam::123456789012:role/other\"\nregion = \"eu-west-1\"\n\
        [targets.api]\nissuer = \"corp\"\naudience = \"api\"\n";

    /// `BASE` and `more` loaded as `keyfed.toml` beside a 0600 secret; the error as `keyfed
    /// check` prints it, the temporary folder written as `DIR`.
    fn load_text(more: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("keyfed.toml");
        std::fs::write(&file, format!("{BASE}{more}")).unwrap_or_else(|e| panic!("{e}"));
        let host = Host {
            hostname: "web-01".into(),
            is_root: true,
        };
        let shown = dir.path().display().to_string();
        load(&file, &|_| None, &host).map_err(|e| e.to_string().replace(&shown, "DIR"))
    }

    fn error_of(more: &str) -> String {
        load_text(more).err().unwrap_or_default()
    }

    /// issue 9: a face's target key is read wherever the face declares one — in `[endpoint]`
    /// and in a `listen` entry, which overrides it for its address — and each face's target
    /// is kept under the face's name.
    #[test]
    fn issue_9_face_targets_are_read_from_the_faces_keys() {
        let config = load_text(
            "[endpoint]\nimds_target = \"aws\"\nlisten = [\"127.0.0.1:9911\", { address = \"127.0.0.2:9911\", imds_target = \"other\" }]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let endpoint = config.endpoint.unwrap_or_else(|| panic!("no endpoint"));
        let targets: Vec<Option<&str>> = endpoint.listen.iter().map(|l| l.target("imds")).collect();
        assert_eq!(targets, [Some("aws"), Some("other")]);
        assert_eq!(endpoint.listen[0].target("container"), None);
        let config = load_text("[endpoint]\n").unwrap_or_else(|e| panic!("{e}"));
        let endpoint = config.endpoint.unwrap_or_else(|| panic!("no endpoint"));
        assert!(
            endpoint.listen.iter().all(|l| l.targets.is_empty()),
            "the IMDS face is off"
        );
    }

    /// issue 9: which kinds of target a face serves is the face's declaration, checked at the
    /// key that names the target, wherever that key is.
    #[test]
    fn issue_9_a_face_serves_only_the_kinds_it_declares() {
        for (more, says) in [
            (
                "[endpoint]\nimds_target = \"api\"\n",
                "DIR/keyfed.toml: endpoint.imds_target: target \"api\" is of kind token; the IMDS face serves targets of kind aws",
            ),
            (
                "[endpoint]\nlisten = [\"127.0.0.1:9911\", { address = \"127.0.0.2:9911\", imds_target = \"api\" }]\n",
                "DIR/keyfed.toml: endpoint.listen[1].imds_target: target \"api\" is of kind token; the IMDS face serves targets of kind aws",
            ),
            (
                "[endpoint]\nimds_target = \"nothing\"\n",
                "DIR/keyfed.toml: endpoint.imds_target: no target named \"nothing\"",
            ),
            (
                "container_path = \"/api\"\n[endpoint]\n",
                "DIR/keyfed.toml: targets.api.container_path: the container face serves targets of kind aws",
            ),
        ] {
            // `container_path` belongs to the last target, `api`.
            assert_eq!(error_of(more), says, "{more}");
        }
    }

    /// issue 9: only faces' target keys are accepted beside `[endpoint]`'s own, and an unknown
    /// one is named with every key that would do, the faces' included; a face's target key
    /// names a target of a kind the face serves.
    #[test]
    fn issue_9_unknown_face_keys_are_refused_with_the_known_ones() {
        let error = error_of("[endpoint]\noci_target = \"aws\"\n");
        assert!(
            error.contains(
                "endpoint.oci_target: unknown field `oci_target`, expected one of `listen`,"
            ) && error.ends_with("`request_timeout`, `imds_target`, `gce_target`, `azure_target`"),
            "{error}"
        );
        let error = error_of(
            "[endpoint]\nlisten = [{ address = \"127.0.0.1:9911\", oci_target = \"aws\" }]\n",
        );
        assert!(
            error.contains(
                "unknown field `oci_target`, expected one of `address`, `imds_target`, `gce_target`, `azure_target`"
            ),
            "{error}"
        );
        assert_eq!(
            error_of("[endpoint]\ngce_target = \"aws\"\n"),
            "DIR/keyfed.toml: endpoint.gce_target: target \"aws\" is of kind aws; the GCE metadata face serves targets of kind gcp"
        );
        // issue 10: the two Azure faces share their key; it is listed once, and checked.
        assert_eq!(
            error_of("[endpoint]\nazure_target = \"aws\"\n"),
            "DIR/keyfed.toml: endpoint.azure_target: target \"aws\" is of kind aws; the Azure IMDS face serves targets of kind azure"
        );
    }

    /// issue 10 (review): the App Service face's secret file written over the container face's
    /// token (or the socket) would lock that face's clients out.
    #[test]
    fn face_secret_files_are_each_their_own_issue_10() {
        assert_eq!(
            error_of(
                "[endpoint]\ncontainer_token_file = \"secret\"\nidentity_header_file = \"secret\"\n"
            ),
            "DIR/keyfed.toml: endpoint.identity_header_file: DIR/secret is also endpoint.container_token_file"
        );
        assert!(load_text("[endpoint]\nidentity_header_file = \"a\"\n").is_ok());
    }

    /// A target's path may be no path the endpoint answers itself, whichever face reserves it.
    #[test]
    fn paths_reserved_by_any_face_or_by_health_are_refused() {
        for path in [
            "/latest",
            "/latest/x",
            "/computeMetadata/v1",
            "/healthz",
            "/metrics/x",
            "/metadata/identity",
            "/msi",
        ] {
            let error = error_of(&format!(
                "[targets.more]\nissuer = \"corp\"\ncontainer_path = \"{path}\"\n\
                 [targets.more.aws]\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nregion = \"eu-west-1\"\n\
                 [endpoint]\n"
            ));
            assert!(
                error.ends_with(&format!(
                    "targets.more.container_path: \"{path}\" is one of the endpoint's own paths (/latest, /computeMetadata, /, /metadata, /msi, /healthz, /readyz, /metrics)"
                )),
                "{path}: {error}"
            );
        }
        assert!(load_text("[endpoint]\n").is_ok());
        assert!(under("/latest/x", "/latest") && under("/latest", "/latest"));
        assert!(!under("/latestx", "/latest"));
    }
}
